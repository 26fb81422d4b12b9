// Package schedule runs tasks on cron schedules, once per fire time across
// every instance of a deployment, with no leader.
//
// A schedule is declared on a task (runtime.Task.Schedule) or in the
// deployment file's schedules: section, which changes or adds schedules
// (Resolve). Its Spec is five cron fields or a descriptor, read in a time
// zone; fire times are instants, computed alike by every instance.
//
// Each instance runs a Scheduler: one loop per schedule sleeps until the
// next fire time, then claims it in the Store (the deployment's database).
// The claim succeeds for one instance; the others see it taken. The
// claimer runs the task through the runtime's Executor with a run id
// derived from the schedule and the fire time, so the run store holds at
// most one record of a fire time. While the run goes, its claim's lease is
// renewed; an instance that dies leaves a lease that ends, and another
// instance records that run as abandoned.
//
// Fire times every instance missed are skipped (catchup: skip), or the
// latest one runs once at start (catchup: latest); a fire time that comes
// while the schedule's previous run still runs is skipped (overlap: skip)
// or runs alongside (overlap: allow). Skips are logged and counted. Stop
// stops claiming and lets runs finish within a grace period. Time comes
// from an injectable clock (clockwork), so tests move it by hand.
package schedule
