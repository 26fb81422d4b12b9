package upload

import "context"

// Customise is the upload task's customisation point, like CloudCode's
// updateBatch: edit it to change how the client's mutations are written.
//
// It is called once for each operation of a batch, in batch order, after
// the whole batch has been validated and the deployment's write rules
// (the upload: section) have accepted the operation and converted its
// typed fields, and before anything is written. The write is then made
// under the rule of the collection op finally names (its owner condition,
// its immutable fields). It may change op (its Data, even its Kind,
// Collection or ID), and return:
//
//   - nil: write op as it now is;
//   - Refuse("reason"): op is not written; the client gets a 200 listing
//     it, and it is stored in the dead-letter collection (UPLOAD_REFUSED=
//     strict: the whole batch fails with 422 and nothing is written);
//   - a *runtime.Error (runtime.BadRequest, runtime.Errorf(403, ...)): the
//     whole batch fails with that status and nothing is written;
//   - any other error: the batch fails with a 500, logged.
//
// It must be fast and must not write to the database itself: it runs
// before the batch is written, and the client retries whole batches.
//
// Slow work that follows a write (a notification, a total) is a job:
// req.Env.Enqueue(ctx, runtime.Job{Task: "notify", Params: ..., Key:
// string(op.Kind) + "/" + op.Collection + "/" + op.ID, Queue: "notify"}).
// It may run even when the batch then fails (and the client sends it
// again, which the Key makes one job): let it read what was written.
//
// Example: store dates as dates, and refuse changes to a list's owner.
//
//	func Customise(ctx context.Context, req *Request, op *Op) error {
//		if v, ok := op.Get("created_at"); ok {
//			if s, ok := v.(string); ok {
//				if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
//					op.Set("created_at", t)
//				}
//			}
//		}
//		if op.Collection == "lists" && op.Kind == Patch && op.Has("owner_id") {
//			return Refuse("owner_id of a list cannot change")
//		}
//		return nil
//	}
func Customise(ctx context.Context, req *Request, op *Op) error {
	return nil
}
