package replica_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// The conformance test replays every case of wire-fixtures/replica_cases
// (recorded from a real django-cqrs replica) through the engine, on
// PostgreSQL, MariaDB and SQLite, with tombstones (gocqrs's default) and
// with DjangoCompat, and compares the outcome class and the replica rows
// after every step.
//
// What the harness does in place of the consumer (those rules belong to the
// consumer, not the engine; the harness emulates them only so that every
// case can be followed step by step):
//   - steps whose routing key the replica queue does not bind are not
//     delivered;
//   - bodies wire.Decode rejects are rejected (rejected_unparseable /
//     rejected_missing_required_key) without reaching the engine;
//   - an expires in the past is dead-lettered without reaching the engine
//     (case 22);
//   - a failure is retried as django-cqrs does with CQRS_MAX_RETRIES=2
//     (should_retry: retries < max): republished with retries+1 on the
//     direct key, and dead-lettered once retries reach 2 — so a message that
//     arrives with retries 5 is dead-lettered at its first failure (case 36);
//   - ErrUnknownModel is nacked and dropped (case 20).
//
// Row comparison (fixtures.CompareRows): on PostgreSQL every column is read
// as col::text with the session TimeZone UTC, exactly as the fixtures were
// recorded, and compared byte for byte. On MariaDB and SQLite both the
// fixture text and the database value are normalized per PostgreSQL column
// type (fixtures.Normalize).
//
// Where gocqrs deliberately differs from django-cqrs, the expected values
// come from ourBehaviour below, with the reason.

// ourBehaviour returns the expectation for a step: the fixture's, except
// where gocqrs deliberately differs (fixtures.Deviations: tombstones skip a
// late SAVE; a body without expires is applied, where django-cqrs's
// replica-only worker crashes).
func ourBehaviour(mode string, c fixtures.Case, s fixtures.Step, byName map[string]fixtures.Case) fixtures.Expectation {
	return fixtures.Expect(fixtures.Deviations(mode == "django_compat", byName), c, s)
}

// applyFunc applies one delivery: Engine.Apply, or Engine.ApplyBatch with
// a batch of one.
type applyFunc func(ctx context.Context, dl replica.Delivery) (replica.Result, error)

// batchOfOne applies dl through ApplyBatch.
func batchOfOne(eng *replica.Engine) applyFunc {
	return func(ctx context.Context, dl replica.Delivery) (replica.Result, error) {
		res, errs, err := eng.ApplyBatch(ctx, []replica.Delivery{dl})
		if err != nil {
			return replica.Result{StoredRevision: -1}, err
		}
		return res[0], errs[0]
	}
}

// deliver runs one published message the way the consumer would and
// returns the fixture's outcome name, and the last engine error.
func deliver(ctx context.Context, apply applyFunc, s fixtures.Step) (string, error) {
	if !s.Bound {
		return "not_delivered_no_matching_binding_on_replica_queue", nil
	}
	p, err := wire.Decode([]byte(s.Publish.Body))
	if err != nil {
		var de *wire.DecodeError
		if errors.As(err, &de) && de.Reason == wire.ReasonMissingKey {
			return "rejected_missing_required_key", err
		}
		return "rejected_unparseable", err
	}
	if p.Expires != nil && p.Expires.Before(time.Now()) {
		return "dead_lettered", nil // consumer rule: expired messages never reach the engine
	}
	direct := s.Publish.RoutingKey == "cqrs."+fixtures.Queue+"."+p.CQRSID
	requeues := 0
	for {
		res, err := apply(ctx, replica.Delivery{Payload: p, Direct: direct})
		if err == nil {
			o := fixtures.OutcomeName(res.Outcome)
			if requeues > 0 {
				o = fmt.Sprintf("%s_after_%d_requeues", o, requeues)
			}
			return o, nil
		}
		if errors.Is(err, replica.ErrUnknownModel) {
			return "nacked_dropped_no_replica_model", err
		}
		if p.Retries >= fixtures.MaxRetries {
			if requeues > 0 {
				return fmt.Sprintf("dead_lettered_after_%d_requeues", requeues), err
			}
			return "dead_lettered", err
		}
		// Requeue: the copy differs only in retries+1 and comes back on
		// the replica's own routing key.
		cp := *p
		cp.Retries++
		p = &cp
		direct = true
		requeues++
	}
}

// djangoErrorPhrases are the django-cqrs log phrases our errors must repeat.
var djangoErrorPhrases = []string{
	"Bad signal type",
	"CQRS sync fields are not provided",
	"Not all required CQRS fields are provided",
	"Bad master-replica mapping for title",
	"numeric field overflow",
}

// wantErrorPhrases lists what the step's final error must contain, from the
// django-cqrs log of that step.
func wantErrorPhrases(d dialect.Name, logs []string) []string {
	var want []string
	for _, l := range logs {
		for _, p := range djangoErrorPhrases {
			if p == "numeric field overflow" && d == dialect.MySQL {
				continue // MariaDB words it "Out of range value"
			}
			if strings.Contains(l, p) && !contains(want, p) {
				want = append(want, p)
			}
		}
		if r, ok := strings.CutPrefix(l, "RuntimeError: "); ok && !contains(want, r) {
			want = append(want, strings.TrimSuffix(r, " (first attempt)"))
		}
	}
	return want
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// usesFailHook reports whether a case relies on the fixture's create hook
// (the fail-once / fail-always authors).
func usesFailHook(c fixtures.Case) bool {
	for _, s := range c.Steps {
		if strings.Contains(s.Publish.Body, `"fail-`) {
			return true
		}
	}
	return false
}

// TestConformanceReplicaCases replays the cases with Engine.Apply ("one")
// and with Engine.ApplyBatch, one message per batch ("batch"). In batch
// mode the cases that do not need the fixture's create hook use an author
// model without hooks, so that they go through the multi-row path.
func TestConformanceReplicaCases(t *testing.T) {
	cases, schema := fixtures.LoadReplicaCases(t), fixtures.LoadSchema(t)
	byName := fixtures.ByName(cases)
	for _, name := range testenv.Dialects {
		t.Run(string(name), func(t *testing.T) {
			t.Parallel()
			db := testenv.Open(t, name)
			fixtures.SetUpReplica(t, db)
			ctx := context.Background()
			for _, applyMode := range []string{"one", "batch"} {
				for _, mode := range []string{"tombstones", "django_compat"} {
					t.Run(applyMode+"/"+mode, func(t *testing.T) {
						opts := replica.Options{Queue: fixtures.Queue, DjangoCompat: mode == "django_compat"}
						eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, fixtures.ReplicaRegistry(t), opts)
						if err != nil {
							t.Fatal(err)
						}
						plain, err := replica.NewEngine(ctx, db.DB, db.Dialect, fixtures.PlainReplicaRegistry(t), opts)
						if err != nil {
							t.Fatal(err)
						}
						for _, c := range cases {
							t.Run(c.Case, func(t *testing.T) {
								apply := applyFunc(eng.Apply)
								if applyMode == "batch" {
									apply = batchOfOne(eng)
									if !usesFailHook(c) {
										apply = batchOfOne(plain)
									}
								}
								fixtures.ClearReplicaTables(t, db)
								for _, s := range c.Steps {
									exp := ourBehaviour(mode, c, s, byName)
									got, err := deliver(ctx, apply, s)
									if got != exp.Outcome {
										t.Errorf("step %d: outcome %s, want %s %s (last error: %v)", s.Step, got, exp.Outcome, exp.Why, err)
									}
									if strings.HasPrefix(got, "dead_lettered") && err != nil {
										for _, p := range wantErrorPhrases(name, s.ReplicaLog) {
											if !strings.Contains(err.Error(), p) {
												t.Errorf("step %d: error %q does not say %q as django-cqrs does", s.Step, err, p)
											}
										}
									}
									fixtures.CompareRows(t, fmt.Sprintf("step %d", s.Step), db, schema, exp.Rows, exp.Why)
								}
							})
						}
					})
				}
			}
		})
	}
}
