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

// recv returns the next message of ch, failing the test after wait.
func recv(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription channel closed")
		}
		return m
	case <-time.After(wait):
		t.Fatal("no message delivered")
	}
	return nil
}

func detach(t *testing.T, m *message.Message) transports.Settle {
	t.Helper()
	settle, ok, err := transports.Detach(m)
	if err != nil || !ok {
		t.Fatalf("Detach(%s) = ok %v, err %v; want a detached message", m.Payload, ok, err)
	}
	return settle
}

func TestMemoryDetachDeliversNextAndSettles(t *testing.T) {
	t.Parallel()
	m := newMemory(t, 0)
	if _, ok, err := transports.Detach(msg("not delivered")); ok || err != nil {
		t.Fatalf("Detach of a message no subscriber delivered: ok %v, err %v; want unsupported", ok, err)
	}
	for _, b := range []string{"a", "b", "c"} {
		if err := m.Publish("t", msg(b)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := m.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	a := recv(t, ch)
	settleA := detach(t, a)
	a.Ack() // what a router does when the handler returns: no effect now
	if _, _, err := transports.Detach(a); err == nil {
		t.Fatal("a second Detach of the same delivery was accepted")
	}

	// The next message comes while a is detached; a stays pending.
	b := recv(t, ch)
	if string(b.Payload) != "b" {
		t.Fatalf("got %q while a was detached, want b", b.Payload)
	}
	if got := m.Pending("t"); got != 3 {
		t.Fatalf("Pending = %d with a detached, b in flight and c queued, want 3", got)
	}
	if p := m.Peek("t"); len(p) != 3 || string(p[0].Payload) != "a" {
		t.Fatalf("Peek = %v, want a (detached) first", p)
	}
	b.Ack()
	if _, _, err := transports.Detach(b); err == nil {
		t.Fatal("Detach after Ack was accepted")
	}
	testenv.WaitFor(t, wait, "b acked", func() bool { return m.Pending("t") == 2 })

	// Settle(false) puts a back at the head: it comes right after c.
	c := recv(t, ch)
	if err := settleA(false); err != nil {
		t.Fatal(err)
	}
	if got := m.Pending("t"); got != 2 {
		t.Fatalf("Pending = %d after a was handed back with c in flight, want 2", got)
	}
	c.Ack()
	a2 := recv(t, ch)
	if string(a2.Payload) != "a" || a2.Metadata.Get(transports.MetaRoutingKey) != "t" {
		t.Fatalf("after handing a back got %q (routing key %q), want a again", a2.Payload, a2.Metadata.Get(transports.MetaRoutingKey))
	}
	if err := settleA(true); err != nil {
		t.Fatalf("second Settle: %v, want nil", err)
	}
	if got := m.Pending("t"); got != 1 {
		t.Fatalf("Pending = %d: the second Settle of a delivery must do nothing, want 1", got)
	}
	// Settle(true) removes it.
	settleA2 := detach(t, a2)
	if err := settleA2(true); err != nil {
		t.Fatal(err)
	}
	if got := m.Pending("t"); got != 0 {
		t.Fatalf("Pending = %d after Settle(true), want 0", got)
	}
	// Nothing else arrives, and the topic works on.
	if err := m.Publish("t", msg("d")); err != nil {
		t.Fatal(err)
	}
	if d := recv(t, ch); string(d.Payload) != "d" {
		t.Fatalf("got %q, want d", d.Payload)
	} else {
		d.Ack()
	}
	testenv.WaitFor(t, wait, "topic empty", func() bool { return m.Pending("t") == 0 })
}

func TestMemoryDetachedCountsTowardsMaxPending(t *testing.T) {
	t.Parallel()
	m := newMemory(t, 2)
	for _, b := range []string{"a", "b"} {
		if err := m.Publish("t", msg(b)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := m.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	settleA := detach(t, recv(t, ch))
	b := recv(t, ch)
	if err := m.Publish("t", msg("c")); !errors.Is(err, transports.ErrTopicFull) {
		t.Fatalf("Publish with a detached and b in flight (limit 2): err = %v, want ErrTopicFull", err)
	}
	if err := settleA(true); err != nil {
		t.Fatal(err)
	}
	if err := m.Publish("t", msg("c")); err != nil {
		t.Fatalf("Publish after a was settled: %v", err)
	}
	b.Ack()
	if c := recv(t, ch); string(c.Payload) != "c" {
		t.Fatalf("got %q, want c", c.Payload)
	} else {
		c.Ack()
	}
	testenv.WaitFor(t, wait, "topic empty", func() bool { return m.Pending("t") == 0 })
}

// A message counts as delivered once one subscriber acked it, even if
// another one detached it and hands it back.
func TestMemoryDetachFanOut(t *testing.T) {
	t.Parallel()
	m := newMemory(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch1, err := m.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := m.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Publish("t", msg("x")); err != nil {
		t.Fatal(err)
	}
	settle1 := detach(t, recv(t, ch1))
	recv(t, ch2).Ack()
	testenv.WaitFor(t, wait, "x delivered", func() bool { return m.Pending("t") == 0 })
	if err := settle1(false); err != nil {
		t.Fatal(err)
	}
	if got := m.Pending("t"); got != 0 {
		t.Fatalf("Pending = %d: handing back a message another subscriber acked must not bring it back", got)
	}
	if err := m.Publish("t", msg("y")); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan *message.Message{ch1, ch2} {
		if got := recv(t, ch); string(got.Payload) != "y" {
			t.Fatalf("got %q, want y (x must not come back)", got.Payload)
		} else {
			got.Ack()
		}
	}
}

// Not parallel: it counts goroutines.
func TestMemoryCloseWithDetachedMessages(t *testing.T) {
	before := runtime.NumGoroutine()
	m, err := transports.NewMemory(transports.MemoryConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := m.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"a", "b", "c"} {
		if err := m.Publish("t", msg(b)); err != nil {
			t.Fatal(err)
		}
	}
	settleA := detach(t, recv(t, ch))
	settleB := detach(t, recv(t, ch))
	c := recv(t, ch) // in hand, neither acked nor detached
	if got := m.Pending("t"); got != 3 {
		t.Fatalf("Pending = %d, want 3", got)
	}
	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("Close did not return with detached messages outstanding")
	}
	if err := settleA(true); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("Settle after Close: err = %v, want ErrClosed", err)
	}
	if err := settleB(false); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("Settle after Close: err = %v, want ErrClosed", err)
	}
	if err := settleA(false); err != nil {
		t.Fatalf("second Settle after Close: %v, want nil", err)
	}
	if _, _, err := transports.Detach(c); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("Detach after Close: err = %v, want ErrClosed", err)
	}
	c.Ack()
	for range ch {
	}
	testenv.WaitFor(t, wait, "goroutines back to the count before the transport", func() bool {
		return runtime.NumGoroutine() <= before
	})
}
