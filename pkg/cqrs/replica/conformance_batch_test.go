package replica_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// caseDeliveries returns the messages of a case that reach the engine, in
// publish order (the consumer's rules of deliver).
func caseDeliveries(t *testing.T, c fixtures.Case) []replica.Delivery {
	t.Helper()
	var out []replica.Delivery
	for _, s := range c.Steps {
		if !s.Bound {
			continue
		}
		p, err := wire.Decode([]byte(s.Publish.Body))
		if err != nil || (p.Expires != nil && p.Expires.Before(time.Now())) {
			continue
		}
		out = append(out, replica.Delivery{Payload: p, Direct: s.Publish.RoutingKey == "cqrs."+fixtures.Queue+"."+p.CQRSID})
	}
	return out
}

// runSchedule applies dls with apply, then the retry copies of the failed
// ones (retries+1, direct) as later rounds, until every message is applied,
// dropped or dead-lettered. It returns every round's outcomes, and whether
// any message was retried.
func runSchedule(ctx context.Context, dls []replica.Delivery, apply func([]replica.Delivery) ([]replica.Result, []error, error)) ([]string, bool, error) {
	var log []string
	retried := false
	for round := 0; len(dls) > 0; round++ {
		res, errs, err := apply(dls)
		if err != nil {
			return nil, false, err
		}
		var next []replica.Delivery
		for i, dl := range dls {
			log = append(log, fmt.Sprintf("round %d: %s %+v %v", round, dl.Payload.SignalType, res[i], errs[i]))
			if errs[i] == nil || errors.Is(errs[i], replica.ErrUnknownModel) || dl.Payload.Retries >= fixtures.MaxRetries {
				continue
			}
			cp := *dl.Payload
			cp.Retries++
			next = append(next, replica.Delivery{Payload: &cp, Direct: true})
			retried = true
		}
		dls = next
	}
	return log, retried, nil
}

// TestConformanceCasesInOneBatch feeds all messages of each case to
// ApplyBatch at once (failures retried in later batches) and the same
// schedule to Apply one message at a time on another database: the
// outcomes, the final rows and the tombstones must be the same. Where no
// message had to be retried, the final rows must also be the fixture's.
func TestConformanceCasesInOneBatch(t *testing.T) {
	cases, schema := fixtures.LoadReplicaCases(t), fixtures.LoadSchema(t)
	byName := fixtures.ByName(cases)
	for _, name := range testenv.Dialects {
		t.Run(string(name), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			one, batched := testenv.Open(t, name), testenv.Open(t, name)
			for _, db := range []*testenv.DB{one, batched} {
				fixtures.SetUpReplica(t, db)
			}
			for _, mode := range []string{"tombstones", "django_compat"} {
				for _, c := range cases {
					t.Run(mode+"/"+c.Case, func(t *testing.T) {
						engines := map[*testenv.DB]*replica.Engine{}
						for _, db := range []*testenv.DB{one, batched} {
							fixtures.ClearReplicaTables(t, db)
							reg := fixtures.PlainReplicaRegistry(t)
							if usesFailHook(c) {
								reg = fixtures.ReplicaRegistry(t) // a fresh fail-once memory per engine
							}
							eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg,
								replica.Options{Queue: fixtures.Queue, DjangoCompat: mode == "django_compat"})
							if err != nil {
								t.Fatal(err)
							}
							engines[db] = eng
						}
						dls := caseDeliveries(t, c)
						wantLog, retried, err := runSchedule(ctx, dls, func(dls []replica.Delivery) ([]replica.Result, []error, error) {
							var res []replica.Result
							var errs []error
							for _, dl := range dls {
								r, err := engines[one].Apply(ctx, dl)
								res, errs = append(res, r), append(errs, err)
							}
							return res, errs, nil
						})
						if err != nil {
							t.Fatal(err)
						}
						gotLog, _, err := runSchedule(ctx, dls, func(dls []replica.Delivery) ([]replica.Result, []error, error) {
							return engines[batched].ApplyBatch(ctx, dls)
						})
						if err != nil {
							t.Fatal(err)
						}
						if !reflect.DeepEqual(gotLog, wantLog) {
							t.Errorf("outcomes:\n batched       %q\n one at a time %q", gotLog, wantLog)
						}
						last := c.Steps[len(c.Steps)-1]
						exp := ourBehaviour(mode, c, last, byName)
						for _, table := range fixtures.ReplicaTables {
							w, g := fixtures.ReadTable(t, one, schema[table], table), fixtures.ReadTable(t, batched, schema[table], table)
							if !reflect.DeepEqual(fixtures.ShowTable(g), fixtures.ShowTable(w)) {
								t.Errorf("%s: batched %s, one at a time %s", table, fixtures.ShowTable(g), fixtures.ShowTable(w))
							}
							if !retried {
								fixtures.CompareTable(t, fmt.Sprintf("step %d", last.Step), batched, schema[table], table, exp.Rows[table], exp.Why)
							}
						}
						if w, g := dump(t, one, tombDump), dump(t, batched, tombDump); !reflect.DeepEqual(w, g) {
							t.Errorf("tombstones: batched %q, one at a time %q", g, w)
						}
					})
				}
			}
		})
	}
}
