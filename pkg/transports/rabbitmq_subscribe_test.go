package transports_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// replica declares a replica queue (cqrs_id "author") on s's exchange
// through r and deletes its queues after the test.
func (s *scratch) replica(t *testing.T, r *transports.RabbitMQ) string {
	t.Helper()
	q := testenv.Name("gocqrs_q")
	dlq := transports.DefaultDeadLetterQueue(q)
	t.Cleanup(func() {
		deleteQueue(t, s.url, q)
		deleteQueue(t, s.url, dlq)
	})
	subs, err := r.ReplicaSubscriptions(q, dlq, []string{"author"})
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 1 || subs[0] != (transports.Subscription{Topic: q}) {
		t.Fatalf("subscriptions %+v", subs)
	}
	return q
}

// subscribe subscribes to q until the test ends; cancel ends it earlier.
func subscribe(t *testing.T, r *transports.RabbitMQ, q string) (<-chan *message.Message, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := r.Subscribe(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	return ch, cancel
}

// drain waits for a subscription channel to close; it must not deliver.
func drain(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				return
			}
			t.Fatalf("message %q delivered after the subscription ended", m.Payload)
		case <-deadline:
			t.Fatal("subscription channel not closed")
		}
	}
}

// Messages carry the routing key and body; foreign messages without
// headers or with headers of any AMQP type (ints, nested tables, arrays,
// decimals, bytes, timestamps) are delivered as they are.
func TestRabbitMQSubscribeMetadataAndForeignMessages(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	r := s.transport(t)
	q := s.replica(t, r)
	direct := transports.DirectKey(q, "author")
	s.publishRaw(t, "author", amqp.Publishing{Body: []byte("plain")})
	s.publishRaw(t, direct, amqp.Publishing{Body: []byte("ints"), Headers: amqp.Table{
		"x-int": int32(5), "x-long": int64(1) << 40, "x-bool": true,
	}})
	s.publishRaw(t, "author", amqp.Publishing{Body: []byte("nested"), MessageId: "abc-123", Headers: amqp.Table{
		"nested":  amqp.Table{"a": amqp.Table{"b": int64(1)}, "list": []any{int32(1), "x"}},
		"x-float": 1.5,
		"x-dec":   amqp.Decimal{Scale: 2, Value: 314},
		"x-bytes": []byte("raw"),
		"x-time":  time.Unix(1700000000, 0),
		"x-str":   "text",
	}})

	ch, cancel := subscribe(t, r, q)
	var uuids []string
	for _, want := range []struct{ body, key string }{{"plain", "author"}, {"ints", direct}, {"nested", "author"}} {
		m := receive(t, ch)
		if string(m.Payload) != want.body || m.Metadata.Get(transports.MetaRoutingKey) != want.key {
			t.Fatalf("got %q on %q, want %q on %q", m.Payload, m.Metadata.Get(transports.MetaRoutingKey), want.body, want.key)
		}
		switch want.body {
		case "ints":
			if m.Metadata.Get("x-int") != "5" || m.Metadata.Get("x-long") != "1099511627776" || m.Metadata.Get("x-bool") != "true" {
				t.Errorf("integer headers as metadata: %v", m.Metadata)
			}
		case "nested":
			if m.UUID != "abc-123" {
				t.Errorf("UUID %q, want the message_id", m.UUID)
			}
			if m.Metadata.Get("x-str") != "text" || m.Metadata.Get("x-bytes") != "raw" || m.Metadata.Get("nested") == "" {
				t.Errorf("headers as metadata: %v", m.Metadata)
			}
		}
		if m.UUID == "" || slices.Contains(uuids, m.UUID) {
			t.Errorf("UUID %q empty or repeated", m.UUID)
		}
		uuids = append(uuids, m.UUID)
		m.Ack()
	}
	cancel()
	drain(t, ch)
	if n := s.depth(t, q); n != 0 {
		t.Fatalf("%d message(s) back in the queue: the acks did not reach the broker", n)
	}
}

// A nacked message is requeued and delivered again.
func TestRabbitMQSubscribeNackRedelivers(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	r := s.transport(t)
	q := s.replica(t, r)
	if err := r.Publish("author", msg("again")); err != nil {
		t.Fatal(err)
	}
	ch, cancel := subscribe(t, r, q)
	first := receive(t, ch)
	first.Nack()
	second := receive(t, ch)
	if string(second.Payload) != "again" {
		t.Fatalf("redelivered %q", second.Payload)
	}
	second.Ack()
	cancel()
	drain(t, ch)
	if n := s.depth(t, q); n != 0 {
		t.Fatalf("queue holds %d message(s) after the ack", n)
	}
}

// A detached message stays unacknowledged on the broker while the next ones
// flow; its Settle acks it; the Watermill Ack after the detach does not.
func TestRabbitMQDetach(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	r := s.transport(t)
	q := s.replica(t, r)
	if err := r.Publish("author", msg("held"), msg("next"), msg("last")); err != nil {
		t.Fatal(err)
	}
	ch, _ := subscribe(t, r, q)
	held := receive(t, ch)
	settle, ok, err := transports.Detach(held)
	if err != nil || !ok {
		t.Fatalf("Detach: ok=%v err=%v", ok, err)
	}
	if _, _, err := transports.Detach(held); err == nil {
		t.Fatal("second Detach of one message succeeded")
	}
	held.Ack() // what the router does when the handler returns: must not reach the broker

	next := receive(t, ch) // delivered although "held" is not settled
	if string(held.Payload) != "held" || string(next.Payload) != "next" {
		t.Fatalf("got %q then %q", held.Payload, next.Payload)
	}
	next.Ack()
	if _, _, err := transports.Detach(next); err == nil {
		t.Fatal("Detach of an acked message succeeded")
	}
	last := receive(t, ch)
	last.Ack()
	testenv.WaitFor(t, wait, "only the detached message unacked", func() bool {
		ready, unacked := queueCounts(t, "/", q)
		return ready == 0 && unacked == 1
	})

	if err := settle(true); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, wait, "the detached message acked", func() bool {
		ready, unacked := queueCounts(t, "/", q)
		return ready == 0 && unacked == 0
	})
	if err := settle(false); err != nil {
		t.Fatalf("a second Settle must do nothing: %v", err)
	}
}

// On shutdown the message in hand is finished first, then the detached and
// prefetched messages go back to the queue; a later Settle(true) reports it.
func TestRabbitMQShutdownRequeuesUnsettled(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	r := s.transport(t)
	q := s.replica(t, r)
	if err := r.Publish("author", msg("detached"), msg("in hand"), msg("prefetched")); err != nil {
		t.Fatal(err)
	}
	ch, cancel := subscribe(t, r, q)
	first := receive(t, ch)
	settle, ok, err := transports.Detach(first)
	if err != nil || !ok {
		t.Fatalf("Detach: ok=%v err=%v", ok, err)
	}
	inHand := receive(t, ch)
	cancel()
	select {
	case <-inHand.Context().Done():
	case <-time.After(wait):
		t.Fatal("the message's context was not cancelled with its subscription")
	}
	inHand.Ack() // acked after the cancellation: still reaches the broker
	drain(t, ch)
	testenv.WaitFor(t, wait, "detached and prefetched messages requeued", func() bool {
		ready, unacked := queueCounts(t, "/", q)
		return ready == 2 && unacked == 0
	})
	if err := settle(true); !errors.Is(err, transports.ErrRequeued) {
		t.Fatalf("Settle(true) after shutdown: err = %v, want ErrRequeued", err)
	}

	ch2, _ := subscribe(t, r, q)
	var bodies []string
	for range 2 {
		m := receive(t, ch2)
		bodies = append(bodies, string(m.Payload))
		m.Ack()
	}
	slices.Sort(bodies)
	if !slices.Equal(bodies, []string{"detached", "prefetched"}) {
		t.Fatalf("redelivered %q, want the detached and the prefetched message", bodies)
	}
}

// Closing the transport ends its subscriptions at once; the message in hand
// goes back to the queue.
func TestRabbitMQCloseEndsSubscriptions(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	r, err := transports.NewRabbitMQ(context.Background(), transports.Config{URL: s.url, Exchange: s.exchange}, nil)
	if err != nil {
		t.Fatal(err)
	}
	q := s.replica(t, r)
	if err := r.Publish("author", msg("in hand")); err != nil {
		t.Fatal(err)
	}
	ch, err := r.Subscribe(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	drain(t, ch)
	m.Ack() // too late: the channel is gone
	testenv.WaitFor(t, wait, "the message in hand requeued", func() bool { return s.depth(t, q) == 1 })
}

func TestRabbitMQSubscribeMissingQueue(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	r := s.transport(t)
	missing := testenv.Name("gocqrs_missing")
	if _, err := r.Subscribe(context.Background(), missing); err == nil {
		t.Fatal("subscribing to a missing queue succeeded")
	}
	if _, err := r.Subscribe(context.Background(), ""); err == nil {
		t.Fatal("subscribing to an empty queue name succeeded")
	}
	// The transport still works afterwards.
	q := s.replica(t, r)
	if err := r.Publish("author", msg("ok")); err != nil {
		t.Fatal(err)
	}
	ch, _ := subscribe(t, r, q)
	receive(t, ch).Ack()
}

// closeConnection makes the broker close r's connection (as a broker-side
// failure would) and returns once it is gone; other clients are untouched.
func closeConnection(t *testing.T, r *transports.RabbitMQ) {
	t.Helper()
	local := transports.RabbitMQLocalAddr(r)
	if local == "" {
		t.Fatal("transport not connected")
	}
	host, port, err := net.SplitHostPort(local)
	if err != nil {
		t.Fatal(err)
	}
	var pid string
	testenv.WaitFor(t, wait, "the connection is listed", func() bool {
		out := rabbitmqctl(t, "list_connections", "pid", "peer_host", "peer_port", "-q", "--no-table-headers")
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[1] == host && f[2] == port {
				pid = f[0]
				return true
			}
		}
		return false
	})
	rabbitmqctl(t, "close_connection", pid, "gocqrs test: simulated connection loss")
	testenv.WaitFor(t, wait, "the transport notices", func() bool {
		return transports.RabbitMQLocalAddr(r) != local
	})
}

// When the broker drops the connection, the transport reconnects: publishing
// works again, the subscription consumes again (the message in hand is
// redelivered) and a detached message's Settle reports ErrRequeued.
func TestRabbitMQReconnectsAfterConnectionLoss(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	r := s.transport(t)
	q := s.replica(t, r)
	if err := r.Publish("author", msg("detached"), msg("in hand")); err != nil {
		t.Fatal(err)
	}
	ch, _ := subscribe(t, r, q)
	detached := receive(t, ch)
	settle, ok, err := transports.Detach(detached)
	if err != nil || !ok {
		t.Fatalf("Detach: ok=%v err=%v", ok, err)
	}
	inHand := receive(t, ch)

	closeConnection(t, r)
	inHand.Ack() // its channel is gone: the broker redelivers it
	if err := settle(true); !errors.Is(err, transports.ErrRequeued) {
		t.Fatalf("Settle(true) after the connection loss: err = %v, want ErrRequeued", err)
	}
	testenv.WaitFor(t, wait, "Publish works again", func() bool {
		return r.Publish("author", msg("after")) == nil
	})
	got := map[string]bool{}
	for len(got) < 3 {
		m := receive(t, ch)
		got[string(m.Payload)] = true
		m.Ack()
	}
	if !got["detached"] || !got["in hand"] || !got["after"] {
		t.Fatalf("consumed %v after reconnecting", got)
	}
}
