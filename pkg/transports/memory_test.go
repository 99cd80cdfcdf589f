package transports_test

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

const wait = 20 * time.Second

func newMemory(t *testing.T, maxPending int) *transports.Memory {
	t.Helper()
	m, err := transports.NewMemory(transports.MemoryConfig{MaxPending: maxPending}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func msg(body string) *message.Message {
	return message.NewMessage(watermill.NewUUID(), []byte(body))
}

// collector acks every message of a subscription and records the bodies.
type collector struct {
	mu     sync.Mutex
	bodies []string
	done   chan struct{}
}

func collect(t *testing.T, ch <-chan *message.Message) *collector {
	t.Helper()
	c := &collector{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for m := range ch {
			c.mu.Lock()
			c.bodies = append(c.bodies, string(m.Payload))
			c.mu.Unlock()
			m.Ack()
		}
	}()
	return c
}

func (c *collector) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.bodies...)
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.bodies)
}

func TestMemoryOrderPreserved(t *testing.T) {
	t.Parallel()
	m := newMemory(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 10_000
	// Half published before the subscriber exists, half while it consumes.
	for i := range n / 2 {
		if err := m.Publish("author", msg(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := m.Subscribe(ctx, "author")
	if err != nil {
		t.Fatal(err)
	}
	c := collect(t, ch)
	for i := n / 2; i < n; i++ {
		if err := m.Publish("author", msg(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, wait, "10k messages", func() bool { return c.len() == n })
	for i, b := range c.got() {
		if b != strconv.Itoa(i) {
			t.Fatalf("message %d has body %q: order not preserved", i, b)
		}
	}
	testenv.WaitFor(t, wait, "queue emptied", func() bool { return m.Pending("author") == 0 })
}

func TestMemoryPublishFromHandlerToOwnTopic(t *testing.T) {
	t.Parallel()
	m := newMemory(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const topic = "cqrs.q.author"
	ch, err := m.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	go func() {
		for in := range ch {
			body := string(in.Payload)
			mu.Lock()
			seen = append(seen, body)
			mu.Unlock()
			if body == "first" {
				// Publish to the topic being consumed before acking, as a requeue does.
				if err := m.Publish(topic, msg("requeued")); err != nil {
					t.Error(err)
				}
			}
			in.Ack()
		}
	}()
	if err := m.Publish(topic, msg("first")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, wait, "the requeued copy", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	if seen[0] != "first" || seen[1] != "requeued" {
		t.Fatalf("got %q, want [first requeued]", seen)
	}
}

func TestMemoryKeepsMessagesUntilSubscribed(t *testing.T) {
	t.Parallel()
	m := newMemory(t, 0)
	for _, b := range []string{"a", "b", "c"} {
		if err := m.Publish("book", msg(b)); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Pending("book"); got != 3 {
		t.Fatalf("Pending = %d before any subscriber, want 3", got)
	}
	peek := m.Peek("book")
	if len(peek) != 3 || string(peek[0].Payload) != "a" || peek[2].Metadata.Get(transports.MetaRoutingKey) != "book" {
		t.Fatalf("Peek = %v, want a,b,c with routing_key book", peek)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := m.Subscribe(ctx, "book")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	var bodies []string
	for len(bodies) < 3 {
		select {
		case in := <-ch:
			bodies = append(bodies, string(in.Payload))
			keys = append(keys, in.Metadata.Get(transports.MetaRoutingKey))
			in.Ack()
		case <-time.After(wait):
			t.Fatalf("only got %q", bodies)
		}
	}
	if bodies[0] != "a" || bodies[1] != "b" || bodies[2] != "c" {
		t.Fatalf("bodies %q, want a b c", bodies)
	}
	for _, k := range keys {
		if k != "book" {
			t.Fatalf("routing_key metadata %q, want book", k)
		}
	}
	testenv.WaitFor(t, wait, "acked messages removed", func() bool { return m.Pending("book") == 0 })
}

func TestMemoryFullTopicRejectsPublish(t *testing.T) {
	t.Parallel()
	m := newMemory(t, 3)
	if err := m.Publish("t", msg("1"), msg("2")); err != nil {
		t.Fatal(err)
	}
	// Two more would exceed 3: nothing of the call is enqueued.
	err := m.Publish("t", msg("3"), msg("4"))
	if !errors.Is(err, transports.ErrTopicFull) {
		t.Fatalf("Publish over the limit: err = %v, want ErrTopicFull", err)
	}
	if got := m.Pending("t"); got != 2 {
		t.Fatalf("Pending = %d after a rejected publish, want 2", got)
	}
	if err := m.Publish("t", msg("3")); err != nil {
		t.Fatalf("third message fits: %v", err)
	}
	if err := m.Publish("t", msg("4")); !errors.Is(err, transports.ErrTopicFull) {
		t.Fatalf("fourth message: err = %v, want ErrTopicFull", err)
	}
	// Other topics have their own limit.
	if err := m.Publish("other", msg("x")); err != nil {
		t.Fatal(err)
	}
	// Consuming makes room again.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := m.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	c := collect(t, ch)
	testenv.WaitFor(t, wait, "queue drained", func() bool { return c.len() == 3 && m.Pending("t") == 0 })
	if err := m.Publish("t", msg("4")); err != nil {
		t.Fatalf("after draining: %v", err)
	}
}

func TestMemoryFanOut(t *testing.T) {
	t.Parallel()
	m := newMemory(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch1, err := m.Subscribe(ctx, "author")
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := m.Subscribe(ctx, "author")
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := collect(t, ch1), collect(t, ch2)
	const n = 200
	for i := range n {
		if err := m.Publish("author", msg(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, wait, "both subscribers got everything", func() bool { return c1.len() == n && c2.len() == n })
	for _, c := range []*collector{c1, c2} {
		for i, b := range c.got() {
			if b != strconv.Itoa(i) {
				t.Fatalf("subscriber got %q at %d", b, i)
			}
		}
	}
}

func TestMemoryNackRedeliversAndUnackedSurvivesSubscriber(t *testing.T) {
	t.Parallel()
	m := newMemory(t, 0)
	if err := m.Publish("t", msg("only")); err != nil {
		t.Fatal(err)
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	ch, err := m.Subscribe(ctx1, "t")
	if err != nil {
		t.Fatal(err)
	}
	first := <-ch
	first.Nack()
	second := <-ch
	if string(second.Payload) != "only" {
		t.Fatalf("redelivery body %q", second.Payload)
	}
	// The subscriber goes away without acking: the message stays queued.
	cancel1()
	second.Nack()
	for range ch {
		t.Fatal("no message may arrive on a cancelled subscription")
	}
	if got := m.Pending("t"); got != 1 {
		t.Fatalf("Pending = %d after the subscriber left without ack, want 1", got)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	ch2, err := m.Subscribe(ctx2, "t")
	if err != nil {
		t.Fatal(err)
	}
	c := collect(t, ch2)
	testenv.WaitFor(t, wait, "delivery to the next subscriber", func() bool { return c.len() == 1 && m.Pending("t") == 0 })
	if got := c.got()[0]; got != "only" {
		t.Fatalf("body %q", got)
	}
}

func TestMemoryReplicaSubscriptions(t *testing.T) {
	t.Parallel()
	m := newMemory(t, 0)
	subs, err := m.ReplicaSubscriptions("q", "dead_letter_q", []string{"author", "book"})
	if err != nil {
		t.Fatal(err)
	}
	want := []transports.Subscription{
		{Topic: "author", CQRSID: "author"},
		{Topic: "cqrs.q.author", CQRSID: "author", Direct: true},
		{Topic: "book", CQRSID: "book"},
		{Topic: "cqrs.q.book", CQRSID: "book", Direct: true},
	}
	if len(subs) != len(want) {
		t.Fatalf("got %+v, want %+v", subs, want)
	}
	for i := range want {
		if subs[i] != want[i] {
			t.Fatalf("subscription %d = %+v, want %+v", i, subs[i], want[i])
		}
	}
	for _, bad := range []struct {
		q, dlq string
		ids    []string
	}{{"", "d", []string{"a"}}, {"q", "", []string{"a"}}, {"q", "d", nil}, {"q", "d", []string{""}}} {
		if _, err := m.ReplicaSubscriptions(bad.q, bad.dlq, bad.ids); err == nil {
			t.Errorf("ReplicaSubscriptions(%q, %q, %q) accepted", bad.q, bad.dlq, bad.ids)
		}
	}
}

func TestMemoryPublisherSubscriberCloseDoesNotCloseTransport(t *testing.T) {
	t.Parallel()
	m := newMemory(t, 0)
	if err := m.Publisher().Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Subscriber().Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Publisher().Publish("t", msg("x")); err != nil {
		t.Fatalf("publish after closing the Publisher view: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Publish("t", msg("y")); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("publish after Close: err = %v, want ErrClosed", err)
	}
	if _, err := m.Subscribe(context.Background(), "t"); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("subscribe after Close: err = %v, want ErrClosed", err)
	}
}

// Not parallel: it counts goroutines.
func TestMemoryCloseIsClean(t *testing.T) {
	before := runtime.NumGoroutine()
	m, err := transports.NewMemory(transports.MemoryConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var collectors []*collector
	for _, topic := range []string{"a", "b", "c"} {
		ch, err := m.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		collectors = append(collectors, collect(t, ch))
		for i := range 10 {
			if err := m.Publish(topic, msg(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// One topic with messages and no subscriber, one subscriber cancelled early.
	if err := m.Publish("idle", msg("x")); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	ch, err := m.Subscribe(ctx2, "d")
	if err != nil {
		t.Fatal(err)
	}
	cancel2()
	for range ch {
	}
	testenv.WaitFor(t, wait, "all delivered", func() bool {
		for _, c := range collectors {
			if c.len() != 10 {
				return false
			}
		}
		return true
	})
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range collectors {
		select {
		case <-c.done:
		case <-time.After(wait):
			t.Fatal("a subscriber channel stayed open after Close")
		}
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	testenv.WaitFor(t, wait, "goroutines back to the count before the transport", func() bool {
		return runtime.NumGoroutine() <= before
	})
}
