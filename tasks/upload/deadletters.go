package upload

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/store"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/dashboard"
)

// DeadLetters lists the refused operations kept in the deployment's
// dead-letter collection (UPLOAD_REFUSED_COLLECTION), newest first, for the
// dashboard. It opens the database on first use, through the process's
// shared store.
func DeadLetters(s *runtime.Setup) dashboard.Refused { return deadLetterList{s} }

type deadLetterList struct{ s *runtime.Setup }

func (l deadLetterList) Refused(ctx context.Context, limit int) ([]dashboard.RefusedOp, error) {
	db, err := store.Database(l.s)
	if err != nil {
		return nil, err
	}
	coll := DefaultRefusedCol
	if v := l.s.Deployment.Get(VarRefusedColl); v != "" {
		coll = v
	}
	cur, err := db.Collection(coll).Find(ctx, bson.D{},
		options.Find().SetSort(bson.D{{Key: "last_seen", Value: -1}}).SetLimit(int64(limit)))
	if err != nil {
		return nil, err
	}
	var docs []struct {
		Op        string    `bson:"op"`
		Table     string    `bson:"table"`
		ID        string    `bson:"id"`
		Reason    string    `bson:"reason"`
		User      string    `bson:"user"`
		RequestID string    `bson:"request_id"`
		Raw       string    `bson:"raw"`
		Attempts  int       `bson:"attempts"`
		LastSeen  time.Time `bson:"last_seen"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	out := make([]dashboard.RefusedOp, len(docs))
	for i, d := range docs {
		out[i] = dashboard.RefusedOp{Time: d.LastSeen, Op: d.Op, Table: d.Table, ID: d.ID, Reason: d.Reason,
			User: d.User, RequestID: d.RequestID, Raw: d.Raw, Attempts: d.Attempts}
	}
	return out, nil
}
