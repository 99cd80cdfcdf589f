package integration

// Conformance over a real RabbitMQ: every case of wire-fixtures/replica_cases
// is published raw, exactly as the capture published it, to exchange "cqrs"
// in a vhost of the test's own, where a Go replica (consumer + engine on
// PostgreSQL) consumes queue "fixture_replica" with django-cqrs's settings
// of the capture (max retries 2; a 50 ms retry delay instead of 1 s). A
// sniffer queue bound with "#" sees every publish, the replica's requeue and
// dead-letter copies included. Each step is compared with the recording:
// the outcome, the replica's publishes (routing key, every AMQP property,
// body bytes), the queue depths and consumers, and the rows (col::text,
// byte for byte); after each case, the dead-letter queue's contents.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/brokertest"
	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/fixtures/outcome"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
)

// rmqReplica is one Go replica on RabbitMQ: its vhost, sniffer, database and
// running consumer.
type rmqReplica struct {
	node     *brokertest.Node
	url      string
	vhost    string
	sniffer  *brokertest.Sniffer
	pub      *brokertest.Publisher
	inspect  func(queue string) fixtures.QueueState
	db       *testenv.DB
	schema   fixtures.Schema
	c        *runningConsumer
	received int64 // deliveries the consumer must have had so far
}

func newRMQReplica(t *testing.T, djangoCompat bool) *rmqReplica {
	t.Helper()
	node := brokertest.Shared(t)
	u, vhost := node.Vhost(t)
	r := &rmqReplica{node: node, url: u, vhost: vhost}
	// Bound before anything is published, as in the capture.
	r.sniffer = brokertest.Sniff(t, u, rmqExchange, "fixture_sniff")
	r.pub = brokertest.NewPublisher(t, u, rmqExchange)
	conn := brokertest.Dial(t, u)
	r.inspect = func(queue string) fixtures.QueueState {
		ready, consumers := brokertest.QueueState(t, conn, queue)
		return fixtures.QueueState{Ready: ready, Consumers: consumers}
	}

	r.db = testenv.Postgres(t)
	r.schema = createFixtureReplicaTables(t, r.db)
	ctx := context.Background()
	reg := fixtures.ReplicaRegistry(t)
	eng, err := replica.NewEngine(ctx, r.db.DB, r.db.Dialect, reg,
		replica.Options{Queue: fixtures.Queue, DjangoCompat: djangoCompat, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	tr := newRabbitTransport(t, u)
	r.c = startRabbitConsumer(t, tr, reg, eng, consumer.Options{
		Queue: fixtures.Queue, MaxRetries: new(fixtures.MaxRetries), RetryDelay: 50 * time.Millisecond,
	})
	return r
}

func TestRabbitMQReplicaCases(t *testing.T) {
	t.Parallel()
	cases := fixtures.LoadReplicaCases(t)
	byName := fixtures.ByName(cases)
	for _, mode := range []string{"tombstones", "django_compat"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			djangoCompat := mode == "django_compat"
			r := newRMQReplica(t, djangoCompat)
			devs := fixtures.Deviations(djangoCompat, byName)
			for _, fc := range cases {
				t.Run(fc.Case, func(t *testing.T) { r.runCase(t, fc, devs) })
			}
			// Nothing is left on the replica queue, not even unacknowledged.
			ready, unacked, consumers := r.node.QueueCounts(t, r.vhost, fixtures.Queue)
			if ready != 0 || unacked != 0 || consumers != 1 {
				t.Errorf("%s after all cases: ready %d, unacked %d, consumers %d; want 0, 0, 1", fixtures.Queue, ready, unacked, consumers)
			}
		})
	}
}

func (r *rmqReplica) runCase(t *testing.T, fc fixtures.Case, devs map[string]fixtures.Deviation) {
	// The capture truncated the replica tables (and emptied the dead-letter
	// queue, done after each case below) before each case.
	fixtures.ClearReplicaTables(t, r.db)
	for _, s := range fc.Steps {
		exp := fixtures.Expect(devs, fc, s)
		if exp.Why != "" {
			t.Logf("step %d: deliberate difference: %s (django-cqrs: %s)", s.Step, exp.Why, s.Outcome)
		}
		r.runStep(t, s, exp)
	}
	fixtures.CompareRows(t, "final", r.db, r.schema, fixtures.ExpectFinal(devs, fc), "")
	dlq := brokertest.Drain(t, r.url, fixtures.DeadLetterQueue)
	if len(dlq) != len(fc.DeadLetters) {
		t.Errorf("dead-letter queue holds %d messages, want %d", len(dlq), len(fc.DeadLetters))
	}
	for i := range min(len(dlq), len(fc.DeadLetters)) {
		compareWire(t, fmt.Sprintf("dead-letter queue message %d", i), dlq[i], fc.DeadLetters[i])
	}
}

func (r *rmqReplica) runStep(t *testing.T, s fixtures.Step, exp fixtures.Expectation) {
	t.Helper()
	before := r.c.Stats()
	from := r.sniffer.Len()
	r.pub.Publish(t, s.Publish.RoutingKey, brokertest.DjangoPublishing([]byte(s.Publish.Body)))

	wantPublished := s.Published
	if s.Bound {
		after := outcome.Await(t, rmqWait, s.Step, r.c.Stats, before, exp.Outcome)
		// The message and its requeue copies, and nothing else: a message
		// of an earlier unbound step would have come first.
		r.received += s.Deliveries()
		if after.Received != r.received {
			t.Errorf("step %d: the consumer has received %d deliveries, want %d (unbound routing keys must not reach %s)",
				s.Step, after.Received, r.received, fixtures.Queue)
		}
	} else if exp.Outcome != "not_delivered_no_matching_binding_on_replica_queue" {
		t.Fatalf("step %d: unbound step with outcome %s", s.Step, exp.Outcome)
	}

	// The sniffer saw our publish, then the replica's copies, in order.
	seen := r.sniffer.Wait(t, from+1+len(wantPublished), from, rmqWait)
	compareWire(t, fmt.Sprintf("step %d: sniffed publish", s.Step), seen[0], fixtures.Message{
		RoutingKey: s.Publish.RoutingKey, Properties: djangoProps(nil), Body: s.Publish.Body,
	})
	for i, w := range wantPublished {
		compareWire(t, fmt.Sprintf("step %d: replica publish %d", s.Step, i+1), seen[1+i], w)
	}
	if extra := len(seen) - 1 - len(wantPublished); extra > 0 {
		t.Errorf("step %d: %d unexpected message(s) on the exchange, first %q %s", s.Step, extra,
			seen[1+len(wantPublished)].RoutingKey, seen[1+len(wantPublished)].Body)
	}

	for _, q := range []string{fixtures.Queue, fixtures.DeadLetterQueue} {
		if got := r.inspect(q); got != exp.Queues[q] {
			t.Errorf("step %d: queue %s: %+v, want %+v", s.Step, q, got, exp.Queues[q])
		}
	}
	fixtures.CompareRows(t, fmt.Sprintf("step %d", s.Step), r.db, r.schema, exp.Rows, exp.Why)
}
