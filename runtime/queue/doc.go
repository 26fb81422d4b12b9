// Package queue runs tasks later, at least once, on any instance of a
// deployment: CloudCode's scheduleTask.
//
// A task enqueues a job (Env.Enqueue, `runtime enqueue`): a task with a
// Run, JSON params, a due time, an optional named queue, an optional
// idempotency key and a number of attempts. Jobs live in the deployment's
// database behind Store (internal/mongostore), so that every instance sees
// them. Each instance of `runtime deploy` runs a Queue: one dispatcher
// claims due jobs while a worker is free (woken at once by a job enqueued
// in the process, else every poll interval), each claim holding a lease
// sized from the task's timeout (LeaseFor) and renewed while the run goes
// on. Each attempt is a run through the executor (trigger queue, job id,
// attempt). A run that fails is retried with exponential backoff and
// jitter while attempts remain, then the job is dead with its last error;
// a job whose worker died is run again once its lease expires.
//
// A named queue runs one job at a time across all instances, in enqueue
// order; a job waiting for its retry holds its queue back, a dead or
// cancelled one does not. Jobs without a queue run in parallel.
//
// On Stop (SIGTERM) an instance stops claiming, lets running jobs finish
// within the grace period, then gives the leases of the others back so
// that another instance takes them at once. Finished jobs are removed
// after a retention period by a query, not a TTL index.
package queue
