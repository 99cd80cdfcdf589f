package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/brokertest"
	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// applyEvent is one Apply call: the entity, the message's retries and
// whether it was applied.
type applyEvent struct {
	pk      string
	retries int
	ok      bool
}

// orderApplier applies through the replica engine and records every call
// in order.
type orderApplier struct {
	inner consumer.Applier
	mu    sync.Mutex
	log   []applyEvent
}

// Apply applies d, then records the call and its result.
func (a *orderApplier) Apply(ctx context.Context, d replica.Delivery) (replica.Result, error) {
	res, err := a.inner.Apply(ctx, d)
	a.mu.Lock()
	a.log = append(a.log, applyEvent{pk: fmt.Sprint(d.Payload.InstancePK), retries: d.Payload.Retries, ok: err == nil})
	a.mu.Unlock()
	return res, err
}

func (a *orderApplier) events() []applyEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]applyEvent(nil), a.log...)
}

// fixtureSave is a SAVE body of the fixture replica's author model, as the
// replica cases write them.
func fixtureSave(cqrsID string, pk int, name string) string {
	return fmt.Sprintf(`{"signal_type":"SAVE","cqrs_id":%q,"instance_data":{"cqrs_revision":0,`+
		`"cqrs_updated":"2026-01-01 10:00:00.100000+00:00","id":%d,"name":%q,"birth_date":null,"rating":null,`+
		`"active":true,"external_uuid":null,"payload":null,"created_at":null},"previous_data":null,"instance_pk":%d,`+
		`"correlation_id":null,"retries":0,"expires":"2099-01-01T00:00:00+00:00","meta":{}}`, cqrsID, pk, name, pk)
}

// TestRabbitMQPoisonMessages: three poison messages (a replica create hook
// that always fails, published first; a body that is not JSON; an unknown
// cqrs_id) among 300 good SAVEs on one queue. With retry delay 500 ms and
// max retries 3, every good message is applied before the failing one is
// dead-lettered, the failing one is requeued exactly 3 times (retries 1, 2,
// 3 on the replica's own key) and then dead-lettered with retries 3, the
// other two are dropped, and nothing is left in the queue.
func TestRabbitMQPoisonMessages(t *testing.T) {
	t.Parallel()
	const (
		queue = "poison"
		good  = 300
		bad   = 1000 // pk of the message whose create always fails
	)
	node := brokertest.Shared(t)
	u, vhost := node.Vhost(t)
	sniffer := brokertest.Sniff(t, u, rmqExchange, "poison_sniff")
	db := testenv.Postgres(t)
	createFixtureReplicaTables(t, db)
	reg := fixtures.ReplicaRegistry(t)
	eng, err := replica.NewEngine(context.Background(), db.DB, db.Dialect, reg, replica.Options{Queue: queue, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	rec := &orderApplier{inner: eng}
	tr := newRabbitTransport(t, u)
	c := startRabbitConsumer(t, tr, reg, rec, consumer.Options{
		Queue: queue, MaxRetries: new(3), RetryDelay: 500 * time.Millisecond,
	})

	pubs := []amqp.Publishing{brokertest.DjangoPublishing([]byte(fixtureSave("author", bad, "fail-always")))}
	for pk := 1; pk <= good; pk++ {
		pubs = append(pubs, brokertest.DjangoPublishing([]byte(fixtureSave("author", pk, fmt.Sprintf("good %d", pk)))))
		switch pk {
		case 100:
			pubs = append(pubs, brokertest.DjangoPublishing([]byte(`{"signal_type":"SAVE","cqrs_id":"author",`)))
		case 200:
			pubs = append(pubs, brokertest.DjangoPublishing([]byte(fixtureSave("ghost", 2000, "no replica model"))))
		}
	}
	brokertest.NewPublisher(t, u, rmqExchange).PublishMany(t, "author", pubs...)

	testenv.WaitFor(t, rmqWait, "a final outcome for all 303 messages", func() bool { return c.Stats().Done() >= good+3 })
	st := c.Stats()
	if st.Done() != good+3 || st.Applied != good || st.Requeued != 3 || st.DeadLettered != 1 ||
		st.Unparseable != 1 || st.NoModel != 1 || st.Failed != 4 || st.Nacked != 0 {
		t.Errorf("stats %+v: want %d applied, 3 requeued, 1 dead-lettered, 1 unparseable, 1 without model, 4 failures, none nacked", st, good)
	}

	// Order of the Apply calls: the failing message came first, every good
	// one was applied before its last attempt (the one dead-lettered).
	events := rec.events()
	firstGood, lastGood, firstBad, lastBad := -1, -1, -1, -1
	var badRetries []int
	for i, e := range events {
		if e.pk == fmt.Sprint(bad) {
			if e.ok {
				t.Fatalf("the failing message was applied: %+v", e)
			}
			badRetries = append(badRetries, e.retries)
			if firstBad < 0 {
				firstBad = i
			}
			lastBad = i
			continue
		}
		if !e.ok {
			t.Errorf("good message %s failed (retries %d)", e.pk, e.retries)
		}
		if firstGood < 0 {
			firstGood = i
		}
		lastGood = i
	}
	if fmt.Sprint(badRetries) != "[0 1 2 3]" {
		t.Errorf("the failing message was tried with retries %v, want [0 1 2 3]", badRetries)
	}
	if !(firstBad < firstGood && lastGood < lastBad) {
		t.Errorf("apply order: failing message first at %d and last at %d, good messages from %d to %d; want the good ones between",
			firstBad, lastBad, firstGood, lastGood)
	}

	// On the wire: 3 requeue copies, then the dead letter, each the original
	// body with its retries.
	original := fixtureSave("author", bad, "fail-always")
	var copies []brokertest.Message
	testenv.WaitFor(t, rmqWait, "the requeue copies and the dead letter on the sniffer", func() bool {
		copies = copies[:0]
		for _, m := range sniffer.Messages(0) {
			if m.RoutingKey != "author" {
				copies = append(copies, m)
			}
		}
		return len(copies) >= 4
	})
	want := []fixtures.Message{
		{RoutingKey: "cqrs.poison.author", Properties: djangoProps(nil), Body: strings.Replace(original, `"retries":0`, `"retries":1`, 1)},
		{RoutingKey: "cqrs.poison.author", Properties: djangoProps(nil), Body: strings.Replace(original, `"retries":0`, `"retries":2`, 1)},
		{RoutingKey: "cqrs.poison.author", Properties: djangoProps(nil), Body: strings.Replace(original, `"retries":0`, `"retries":3`, 1)},
		{RoutingKey: "cqrs.dead_letter_poison.author", Properties: djangoProps("864000000"), Body: strings.Replace(original, `"retries":0`, `"retries":3`, 1)},
	}
	if len(copies) != len(want) {
		t.Errorf("the replica published %d messages, want %d", len(copies), len(want))
	}
	for i := range min(len(copies), len(want)) {
		compareWire(t, fmt.Sprintf("replica publish %d", i+1), copies[i], want[i])
	}
	if n := sniffer.Len() - len(copies); n != len(pubs) {
		t.Errorf("the sniffer saw %d messages on key author, want the %d published", n, len(pubs))
	}

	dlq := brokertest.Drain(t, u, "dead_letter_"+queue)
	if len(dlq) != 1 {
		t.Fatalf("dead-letter queue holds %d messages, want 1", len(dlq))
	}
	compareWire(t, "dead-letter queue message", dlq[0], want[3])
	if ready, unacked, consumers := node.QueueCounts(t, vhost, queue); ready != 0 || unacked != 0 || consumers != 1 {
		t.Errorf("queue %s: ready %d, unacked %d, consumers %d; want 0, 0, 1", queue, ready, unacked, consumers)
	}
	var n int
	if err := db.GetContext(context.Background(), &n, "SELECT count(*) FROM author_ref WHERE name LIKE 'good %'"); err != nil {
		t.Fatal(err)
	}
	var all int
	if err := db.GetContext(context.Background(), &all, "SELECT count(*) FROM author_ref"); err != nil {
		t.Fatal(err)
	}
	if n != good || all != good {
		t.Errorf("replica holds %d good authors and %d in all, want %d and %d", n, all, good, good)
	}
	if _, err := wire.Decode(dlq[0].Body); err != nil {
		t.Errorf("dead letter does not decode: %v", err)
	}
}
