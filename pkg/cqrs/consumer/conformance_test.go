package consumer_test

// Conformance with django-cqrs's recorded replica behaviour: every case of
// wire-fixtures/replica_cases is replayed through the memory transport, the
// consumer and the real replica engine on SQLite, and the outcome of each
// step, the requeue and dead-letter copies, the rows after each step and the
// dead-letter queue after the case are compared with what the real
// django-cqrs replica did.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/fixtures/outcome"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// replicaEnv is one case's replica: SQLite tables, engine, memory transport
// and a running consumer.
type replicaEnv struct {
	db  *testenv.DB
	mem *transports.Memory
	rec *recorder
	c   *consumer.Consumer
}

func newReplicaEnv(t *testing.T, djangoCompat bool, batchSize int) *replicaEnv {
	t.Helper()
	ctx := context.Background()
	db := testenv.SQLite(t)
	fixtures.CreateReplicaTables(t, db)
	reg := fixtures.ReplicaRegistry(t)
	ropts := replica.Options{Queue: fixtures.Queue, DjangoCompat: djangoCompat, Logger: quietLogger()}
	if err := replica.Migrate(ctx, db.DB, db.Dialect, ropts); err != nil {
		t.Fatal(err)
	}
	eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, ropts)
	if err != nil {
		t.Fatal(err)
	}
	mem := newMemory(t)
	rec := &recorder{Transport: mem}
	c := newConsumer(t, rec, reg, eng, consumer.Options{
		Queue: fixtures.Queue, MaxRetries: new(fixtures.MaxRetries), RetryDelay: 3 * time.Millisecond,
		BatchSize: batchSize, BatchWait: 5 * time.Millisecond,
	})
	start(t, c)
	return &replicaEnv{db: db, mem: mem, rec: rec, c: c}
}

// TestConformanceReplicaCases runs every case one message at a time
// ("batch1") and with batches of up to 16 ("batch16": each step is then a
// batch of its own, applied by Engine.ApplyBatch, and settled by the
// collector).
func TestConformanceReplicaCases(t *testing.T) {
	t.Parallel()
	cases, schema := fixtures.LoadReplicaCases(t), fixtures.LoadSchema(t)
	byName := fixtures.ByName(cases)
	for _, batchSize := range []int{1, 16} {
		for _, mode := range []string{"gocqrs", "django_compat"} {
			devs := fixtures.Deviations(mode == "django_compat", byName)
			t.Run(fmt.Sprintf("batch%d/%s", batchSize, mode), func(t *testing.T) {
				t.Parallel()
				for _, fc := range cases {
					t.Run(fc.Case, func(t *testing.T) {
						t.Parallel()
						runCase(t, schema, fc, mode == "django_compat", batchSize, devs)
					})
				}
			})
		}
	}
}

func runCase(t *testing.T, schema fixtures.Schema, fc fixtures.Case, djangoCompat bool, batchSize int, devs map[string]fixtures.Deviation) {
	env := newReplicaEnv(t, djangoCompat, batchSize)
	unbound := map[string]int{}
	var received int64
	for _, s := range fc.Steps {
		exp := fixtures.Expect(devs, fc, s)
		if exp.Why != "" {
			t.Logf("step %d: deliberate difference: %s (django-cqrs: %s)", s.Step, exp.Why, s.Outcome)
		}
		received += s.Deliveries()
		before, sentBefore := env.c.Stats(), len(env.rec.sent())
		publish(t, env.mem, s.Publish.RoutingKey, []byte(s.Publish.Body))

		if !s.Bound {
			// No binding on the replica queue: nobody subscribes to the key,
			// so the message stays where it was published.
			unbound[s.Publish.RoutingKey]++
			if got := env.mem.Pending(s.Publish.RoutingKey); got != unbound[s.Publish.RoutingKey] {
				t.Fatalf("step %d: Pending(%q) = %d, want %d", s.Step, s.Publish.RoutingKey, got, unbound[s.Publish.RoutingKey])
			}
			continue
		}
		outcome.Await(t, wait, s.Step, env.c.Stats, before, exp.Outcome)
		comparePublished(t, s.Step, env.rec.sent()[sentBefore:], s.Published)
		// fixture_replica ready 0 after every step: nothing left on the
		// replica's keys once the message is acked.
		testenv.WaitFor(t, wait, fmt.Sprintf("step %d acked", s.Step), func() bool {
			n := 0
			for _, id := range []string{"author", "book"} {
				n += env.mem.Pending(transports.BroadcastKey(id)) + env.mem.Pending(transports.DirectKey(fixtures.Queue, id))
			}
			return n == 0
		})
		fixtures.CompareRows(t, fmt.Sprintf("step %d", s.Step), env.db, schema, exp.Rows, exp.Why)
	}
	if after := env.c.Stats(); after.Received != received {
		t.Errorf("consumer received %d messages, want %d (bound messages and their requeue copies; unbound keys must not be delivered)", after.Received, received)
	}
	fixtures.CompareRows(t, "final", env.db, schema, fixtures.ExpectFinal(devs, fc), "")

	var dlq []fixtures.Message
	for _, id := range []string{"author", "book"} {
		key := transports.DeadLetterKey(fixtures.DeadLetterQueue, id)
		for _, m := range env.mem.Peek(key) {
			dlq = append(dlq, fxMessage(key, string(m.Payload), m.Metadata))
		}
	}
	if len(dlq) != len(fc.DeadLetters) {
		t.Fatalf("dead-letter queue holds %d messages, want %d", len(dlq), len(fc.DeadLetters))
	}
	for i := range dlq {
		compareMessage(t, fmt.Sprintf("dead-letter queue message %d", i), dlq[i], fc.DeadLetters[i])
	}
}

// fxMessage is a message the consumer published or dead-lettered, in the
// fixtures' form: routing key, AMQP expiration (from the transport
// metadata) and body.
func fxMessage(topic, body string, meta map[string]string) fixtures.Message {
	m := fixtures.Message{RoutingKey: topic, Body: body, Properties: map[string]any{}}
	if exp, ok := meta[transports.MetaExpiration]; ok {
		m.Properties["expiration"] = exp
	}
	return m
}

func comparePublished(t *testing.T, step int, got []published, want []fixtures.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("step %d: the consumer published %d messages, django-cqrs %d:\n got %+v\nwant %+v", step, len(got), len(want), got, want)
		return
	}
	for i := range got {
		g := fxMessage(got[i].Topic, got[i].Body, got[i].Metadata)
		compareMessage(t, fmt.Sprintf("step %d: published message %d", step, i), g, want[i])
	}
}

// compareMessage compares routing key, AMQP expiration and the exact body.
func compareMessage(t *testing.T, what string, got, want fixtures.Message) {
	t.Helper()
	if got.RoutingKey != want.RoutingKey {
		t.Errorf("%s: routing key %q, want %q", what, got.RoutingKey, want.RoutingKey)
	}
	if g, w := fixtures.ShowValue(got.Expiration()), fixtures.ShowValue(want.Expiration()); g != w {
		t.Errorf("%s: expiration %s, want %s", what, g, w)
	}
	if got.Body != want.Body {
		t.Errorf("%s: body\n got %s\nwant %s", what, got.Body, want.Body)
	}
}
