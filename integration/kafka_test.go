package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// TestKafkaEndToEnd replicates a PostgreSQL master to a PostgreSQL replica
// through Kafka (8 partitions, 4 workers), one message per replica
// transaction and in batches (detached messages): the replica ends equal to
// the master, and every entity's revisions reached the replica engine in
// order.
func TestKafkaEndToEnd(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 50} {
		t.Run(fmt.Sprintf("batch %d", batch), func(t *testing.T) {
			t.Parallel()
			e := newKafkaE2E(t, transports.KafkaConfig{Partitions: 8, Workers: 4})
			rec := &batchRecordingApplier{recordingApplier: newRecordingApplier(e.eng)}
			var ap consumer.Applier = rec.recordingApplier
			if batch > 1 {
				ap = rec
			}
			c := e.startKafkaConsumer(e.tr, ap, consumer.Options{BatchSize: batch})
			e.startRelay(fmt.Sprintf("kafka-e2e-relay-%d", batch))
			committed, _ := e.workload(3, 120, 11)
			if committed == 0 {
				t.Fatal("the workload committed nothing")
			}
			e.waitEqual(60 * time.Second)
			if msg := rec.outOfOrder(); msg != "" {
				t.Fatal(msg)
			}
			entities, calls := rec.entities()
			if entities < 50 || calls < entities {
				t.Fatalf("only %d entities in %d deliveries", entities, calls)
			}
			st := c.Stats()
			t.Logf("%d entities, %d deliveries, largest batch %d; consumer stats %+v", entities, calls, rec.largestBatch(), st)
			if n := st.Outcomes[replica.OutcomeSkippedStale]; n != 0 {
				t.Fatalf("%d stale (out of order) messages; stats %+v", n, st)
			}
			if st.Requeued != 0 || st.DeadLettered != 0 || st.Nacked != 0 {
				t.Fatalf("healthy run requeued, dead-lettered or nacked: %+v", st)
			}
			if batch > 1 && rec.largestBatch() < 2 {
				t.Fatalf("batch size %d: no batch held more than one message (messages not detached?)", batch)
			}
		})
	}
}

// TestKafkaConsumerRestartResumes stops the consumer mid-stream, lets the
// master write more while none runs, and starts another one (a new process:
// its own transport, same group): it resumes from the committed offsets,
// loses nothing, and does not read the topics again from the start. The
// first consumer applies batches (its messages are detached), the second
// one message at a time.
func TestKafkaConsumerRestartResumes(t *testing.T) {
	t.Parallel()
	e := newKafkaE2E(t, transports.KafkaConfig{Partitions: 8, Workers: 4})
	relay := e.startRelay("kafka-restart-relay")
	c1 := e.startKafkaConsumer(e.tr, e.eng, consumer.Options{BatchSize: 20})

	e.workload(3, 60, 21)
	testenv.WaitFor(t, 60*time.Second, "first consumer finished 100 messages", func() bool { return c1.Stats().Done() >= 100 })
	c1.stop(t)
	done1 := c1.Stats().Done()
	// Written while no consumer runs: at least 80 more messages.
	e.writeMore(40, 9_000_000)
	testenv.WaitFor(t, 60*time.Second, "outbox drained", func() bool {
		n, _, err := outbox.Pending(context.Background(), e.mdb.DB, e.mdb.Dialect)
		return err == nil && n == 0
	})
	if d := c1.Stats().Done(); d != done1 {
		t.Fatalf("the stopped consumer went on: %d then %d", done1, d)
	}

	t2 := e.transport()
	t.Cleanup(func() { _ = t2.Close() }) // after the consumer's stop, registered later
	c2 := e.startKafkaConsumer(t2, e.eng, consumer.Options{})
	e.waitEqual(60 * time.Second)
	total := relay.Stats().Published
	st2 := c2.Stats()
	t.Logf("published %d; first consumer finished %d, second received %d and finished %d", total, done1, st2.Received, st2.Done())
	if st2.Received < 80 || st2.Received >= total {
		t.Fatalf("the second consumer received %d of %d messages; want the 80+ written while it was down and not all (resumed from committed offsets)", st2.Received, total)
	}
	if done1+st2.Done() < total {
		t.Fatalf("consumers finished %d + %d messages of %d published", done1, st2.Done(), total)
	}
}

// TestKafkaPoisonMessage: a message the replica cannot apply is retried
// max_retries times, then lands on the dead-letter topic with its reason,
// and so does an expired one; the messages behind them in their partition
// (one partition here) are applied meanwhile.
func TestKafkaPoisonMessage(t *testing.T) {
	t.Parallel()
	e := newKafkaE2E(t, transports.KafkaConfig{Partitions: 1})
	logs := &logBuffer{}
	c := e.startKafkaConsumer(e.tr, e.eng, consumer.Options{MaxRetries: new(2), Logger: logs.logger()})

	// name is VARCHAR(200) in the replica: this SAVE can never be applied.
	poison := fmt.Sprintf(`{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"id":999,"name":%q,"active":true,`+
		`"cqrs_revision":0,"cqrs_updated":"2026-01-02 03:04:05.000006+00:00"},"previous_data":null,"instance_pk":999,`+
		`"correlation_id":null,"retries":0,"expires":null,"meta":null}`, strings.Repeat("x", 300))
	expired := `{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"id":998,"name":"late","active":true,` +
		`"cqrs_revision":0,"cqrs_updated":"2026-01-02 03:04:05.000006+00:00"},"previous_data":null,"instance_pk":998,` +
		`"correlation_id":null,"retries":0,"expires":"2001-01-01T00:00:00+00:00","meta":null}`
	for _, body := range []string{poison, expired} {
		if err := e.tr.Publisher().Publish("author", message.NewMessage(watermill.NewUUID(), []byte(body))); err != nil {
			t.Fatal(err)
		}
	}
	e.startRelay("kafka-poison-relay")
	e.workload(2, 40, 31)
	e.waitEqual(60 * time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dl, err := e.tr.Subscriber().Subscribe(ctx, transports.DeadLetterKey("dead_letter_e2e", "author"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*wire.Payload{}
	for len(got) < 2 {
		select {
		case m := <-dl:
			p, err := wire.Decode(m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			key := m.Metadata.Get(transports.MetaEntityKey)
			got[key] = p
			if m.Metadata.Get(transports.MetaExpiration) == "" {
				t.Errorf("dead letter %s has no expiration", key)
			}
			if rk := m.Metadata.Get(transports.MetaRoutingKey); rk != "cqrs.dead_letter_e2e.author" {
				t.Errorf("dead letter routing key %q", rk)
			}
			m.Ack()
		case <-time.After(30 * time.Second):
			t.Fatalf("dead letters after 30 s: %v", got)
		}
	}
	if p := got["author:999"]; p == nil || p.Retries != 2 {
		t.Fatalf("poison dead letter %+v, want retries 2 (max_retries)", p)
	}
	if p := got["author:998"]; p == nil || p.Retries != 0 || p.Expires == nil {
		t.Fatalf("expired dead letter %+v, want retries 0 and its expires", p)
	}
	out := logs.String()
	for _, want := range []string{"reason=\"retries exhausted\"", "reason=expired"} {
		if !strings.Contains(out, want) {
			t.Errorf("consumer log lacks %s", want)
		}
	}
	// Delivery is at least once: a rebalance of the consumer group (its
	// subscriptions to the queue's topic and to the requeue topic join it
	// one after the other, later on a loaded machine) can deliver a message
	// again. Each delivery of the poison message is requeued twice, then
	// dead-lettered; each of the expired one, dead-lettered.
	poisonDeliveries := strings.Count(out, `msg="CQRS is failed" queue=e2e cqrs_id=author signal_type=SAVE pk=999 revision=0 correlation_id=None retries=0 routing_key=author `)
	expiredDeliveries := strings.Count(out, "reason=expired")
	st := c.Stats()
	if poisonDeliveries < 1 || expiredDeliveries < 1 ||
		st.Requeued != int64(2*poisonDeliveries) || st.DeadLettered != int64(poisonDeliveries+expiredDeliveries) {
		t.Fatalf("stats %+v after %d deliveries of the poison message and %d of the expired one, want 2 requeues and a dead letter for each poison delivery, a dead letter for each expired one; the consumer's warnings and errors:\n%s",
			st, poisonDeliveries, expiredDeliveries, warnings(out))
	}
	if poisonDeliveries > 1 || expiredDeliveries > 1 {
		t.Logf("delivered again (at least once): the poison message %d times, the expired one %d times", poisonDeliveries, expiredDeliveries)
	}
}

// warnings returns the lines of a text log at level WARN or ERROR.
func warnings(log string) string {
	var b strings.Builder
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
