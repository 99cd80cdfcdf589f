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
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/brokertest"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
)

const (
	rmqFixtureQueue = "fixture_replica"
	rmqFixtureDLQ   = "dead_letter_fixture_replica"
)

type rmqQueueState struct {
	Ready     int `json:"ready"`
	Consumers int `json:"consumers"`
}

type rmqStep struct {
	Step    int `json:"step"`
	Publish struct {
		RoutingKey string `json:"routing_key"`
		Body       string `json:"body"`
	} `json:"publish"`
	Bound       bool                     `json:"replica_queue_has_matching_binding"`
	Outcome     string                   `json:"outcome"`
	Published   []rmqWireMessage         `json:"published_by_replica"`
	QueuesAfter map[string]rmqQueueState `json:"queues_after"`
	RowsAfter   rmqRows                  `json:"rows_after"`
}

type rmqCase struct {
	Case        string           `json:"case"`
	Steps       []rmqStep        `json:"steps"`
	FinalRows   rmqRows          `json:"final_rows"`
	DeadLetters []rmqWireMessage `json:"dead_letter_queue_contents_after_case"`
}

func loadReplicaCases(t *testing.T) []rmqCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testenv.FixturesDir(t), "replica_cases", "[0-9]*.json"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	var cases []rmqCase
	for _, f := range files {
		var c rmqCase
		readFixtureJSON(t, filepath.Join("replica_cases", filepath.Base(f)), &c)
		cases = append(cases, c)
	}
	if len(cases) != 37 {
		t.Fatalf("found %d replica cases, want 37", len(cases))
	}
	return cases
}

// rmqDeviation is where gocqrs deliberately differs from the recording (the
// differences named in the core issue).
type rmqDeviation struct {
	step    int
	outcome string
	rows    rmqRows // after the step and at the end of the case
	queues  map[string]rmqQueueState
	why     string
}

func rmqDeviations(djangoCompat bool, byName map[string]rmqCase) map[string]rmqDeviation {
	empty := rmqRows{"author_ref": {}, "book_ref": {}}
	d := map[string]rmqDeviation{
		// django-cqrs's worker dies on a body without expires and leaves the
		// message unacked in the queue with no consumer left; gocqrs reads
		// it as "never expires" and applies it (the body is case 01's).
		"37_missing_expires_kills_worker": {step: 1, outcome: "acked_applied",
			rows: byName["01_save_create_rev0"].FinalRows,
			queues: map[string]rmqQueueState{
				rmqFixtureQueue: {Ready: 0, Consumers: 1}, rmqFixtureDLQ: {Ready: 0, Consumers: 0},
			},
			why: "no worker crash: a body without expires is applied"},
	}
	if !djangoCompat {
		// DELETE rev 2 leaves a tombstone; the late SAVE rev 1 is older and
		// skipped. With DjangoCompat it recreates the row as recorded.
		d["12_delete_then_late_save_recreates"] = rmqDeviation{step: 4, outcome: "acked_skipped_tombstone",
			rows: empty, why: "tombstones: a SAVE older than the DELETE does not recreate the row"}
	}
	return d
}

// rmqOutcome names what the consumer did with one published message in the
// fixture's vocabulary, from the change in its counters.
func rmqOutcome(before, after consumer.Stats) string {
	requeues := after.Requeued - before.Requeued
	switch {
	case after.Unparseable > before.Unparseable:
		return "rejected_unparseable"
	case after.MissingKey > before.MissingKey:
		return "rejected_missing_required_key"
	case after.NoModel > before.NoModel:
		return "nacked_dropped_no_replica_model"
	case after.DeadLettered > before.DeadLettered:
		if requeues > 0 {
			return fmt.Sprintf("dead_lettered_after_%d_requeues", requeues)
		}
		return "dead_lettered"
	case after.Skipped > before.Skipped:
		for o, name := range map[replica.Outcome]string{
			replica.OutcomeSkippedStale:     "acked_skipped_stale_revision",
			replica.OutcomeSkippedDuplicate: "acked_skipped_duplicate_revision",
			replica.OutcomeSkippedTombstone: "acked_skipped_tombstone",
		} {
			if after.Outcomes[o] > before.Outcomes[o] {
				return name
			}
		}
		return "acked_skipped_other"
	case after.Applied > before.Applied:
		if requeues > 0 {
			return fmt.Sprintf("acked_applied_after_%d_requeues", requeues)
		}
		return "acked_applied"
	}
	return fmt.Sprintf("unknown (stats before %+v, after %+v)", before, after)
}

// rmqReplica is one Go replica on RabbitMQ: its vhost, sniffer, database and
// running consumer.
type rmqReplica struct {
	node     *brokertest.Node
	url      string
	vhost    string
	sniffer  *brokertest.Sniffer
	pub      *brokertest.Publisher
	inspect  func(queue string) rmqQueueState
	db       *testenv.DB
	schema   map[string][]rmqColumn
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
	r.inspect = func(queue string) rmqQueueState {
		ready, consumers := brokertest.QueueState(t, conn, queue)
		return rmqQueueState{Ready: ready, Consumers: consumers}
	}

	r.db = testenv.Postgres(t)
	r.schema = createFixtureReplicaTables(t, r.db)
	ctx := context.Background()
	reg := fixtureReplicaRegistry(t)
	eng, err := replica.NewEngine(ctx, r.db.DB, r.db.Dialect, reg,
		replica.Options{Queue: rmqFixtureQueue, DjangoCompat: djangoCompat, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	tr := newRabbitTransport(t, u)
	r.c = startRabbitConsumer(t, tr, reg, eng, consumer.Options{
		Queue: rmqFixtureQueue, MaxRetries: new(2), RetryDelay: 50 * time.Millisecond,
	})
	return r
}

func TestRabbitMQReplicaCases(t *testing.T) {
	t.Parallel()
	cases := loadReplicaCases(t)
	byName := map[string]rmqCase{}
	for _, c := range cases {
		byName[c.Case] = c
	}
	for _, mode := range []string{"tombstones", "django_compat"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			djangoCompat := mode == "django_compat"
			r := newRMQReplica(t, djangoCompat)
			devs := rmqDeviations(djangoCompat, byName)
			for _, fc := range cases {
				t.Run(fc.Case, func(t *testing.T) { r.runCase(t, fc, devs[fc.Case]) })
			}
			// Nothing is left on the replica queue, not even unacknowledged.
			ready, unacked, consumers := r.node.QueueCounts(t, r.vhost, rmqFixtureQueue)
			if ready != 0 || unacked != 0 || consumers != 1 {
				t.Errorf("%s after all cases: ready %d, unacked %d, consumers %d; want 0, 0, 1", rmqFixtureQueue, ready, unacked, consumers)
			}
		})
	}
}

func (r *rmqReplica) runCase(t *testing.T, fc rmqCase, dev rmqDeviation) {
	ctx := context.Background()
	// The capture truncated the replica tables (and emptied the dead-letter
	// queue, done after each case below) before each case.
	for _, table := range append(append([]string(nil), rmqReplicaTables...), replica.DefaultTombstoneTable) {
		if _, err := r.db.ExecContext(ctx, "DELETE FROM "+table); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range fc.Steps {
		wantOutcome, wantRows, wantQueues := s.Outcome, s.RowsAfter, s.QueuesAfter
		if dev.step == s.Step {
			t.Logf("step %d: deliberate difference: %s (django-cqrs: %s)", s.Step, dev.why, s.Outcome)
			wantOutcome, wantRows = dev.outcome, dev.rows
			if dev.queues != nil {
				wantQueues = dev.queues
			}
		}
		r.runStep(t, s, wantOutcome, wantRows, wantQueues)
	}
	wantFinal := fc.FinalRows
	if dev.rows != nil {
		wantFinal = dev.rows
	}
	if g, w := showRows(r.schema, readFixtureRows(t, r.db, r.schema)), showRows(r.schema, wantFinal); g != w {
		t.Errorf("final rows\n got %s\nwant %s", g, w)
	}
	dlq := brokertest.Drain(t, r.url, rmqFixtureDLQ)
	if len(dlq) != len(fc.DeadLetters) {
		t.Errorf("dead-letter queue holds %d messages, want %d", len(dlq), len(fc.DeadLetters))
	}
	for i := range min(len(dlq), len(fc.DeadLetters)) {
		compareWire(t, fmt.Sprintf("dead-letter queue message %d", i), dlq[i], fc.DeadLetters[i])
	}
}

func (r *rmqReplica) runStep(t *testing.T, s rmqStep, wantOutcome string, wantRows rmqRows, wantQueues map[string]rmqQueueState) {
	t.Helper()
	before := r.c.Stats()
	from := r.sniffer.Len()
	r.pub.Publish(t, s.Publish.RoutingKey, brokertest.DjangoPublishing([]byte(s.Publish.Body)))

	wantPublished := s.Published
	if s.Bound {
		testenv.WaitFor(t, rmqWait, fmt.Sprintf("step %d's final outcome", s.Step), func() bool {
			return r.c.Stats().Done() > before.Done()
		})
		after := r.c.Stats()
		if got := rmqOutcome(before, after); got != wantOutcome {
			t.Errorf("step %d: outcome %s, want %s", s.Step, got, wantOutcome)
		}
		if after.Done() != before.Done()+1 {
			t.Errorf("step %d: %d final outcomes for one message", s.Step, after.Done()-before.Done())
		}
		// The message and its requeue copies, and nothing else: a message
		// of an earlier unbound step would have come first.
		r.received++
		for _, p := range wantPublished {
			if strings.HasPrefix(p.RoutingKey, "cqrs."+rmqFixtureQueue+".") {
				r.received++
			}
		}
		if after.Received != r.received {
			t.Errorf("step %d: the consumer has received %d deliveries, want %d (unbound routing keys must not reach %s)",
				s.Step, after.Received, r.received, rmqFixtureQueue)
		}
	} else if wantOutcome != "not_delivered_no_matching_binding_on_replica_queue" {
		t.Fatalf("step %d: unbound step with outcome %s", s.Step, wantOutcome)
	}

	// The sniffer saw our publish, then the replica's copies, in order.
	seen := r.sniffer.Wait(t, from+1+len(wantPublished), from, rmqWait)
	compareWire(t, fmt.Sprintf("step %d: sniffed publish", s.Step), seen[0], rmqWireMessage{
		RoutingKey: s.Publish.RoutingKey, Properties: djangoProps(nil), Body: s.Publish.Body,
	})
	for i, w := range wantPublished {
		compareWire(t, fmt.Sprintf("step %d: replica publish %d", s.Step, i+1), seen[1+i], w)
	}
	if extra := len(seen) - 1 - len(wantPublished); extra > 0 {
		t.Errorf("step %d: %d unexpected message(s) on the exchange, first %q %s", s.Step, extra,
			seen[1+len(wantPublished)].RoutingKey, seen[1+len(wantPublished)].Body)
	}

	for _, q := range []string{rmqFixtureQueue, rmqFixtureDLQ} {
		if got := r.inspect(q); got != wantQueues[q] {
			t.Errorf("step %d: queue %s: %+v, want %+v", s.Step, q, got, wantQueues[q])
		}
	}
	if g, w := showRows(r.schema, readFixtureRows(t, r.db, r.schema)), showRows(r.schema, wantRows); g != w {
		t.Errorf("step %d: rows\n got %s\nwant %s", s.Step, g, w)
	}
}
