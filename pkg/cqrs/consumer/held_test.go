package consumer_test

// Failed messages held for their retry without blocking the subscription
// (detached from it), the delay queue bound, and shutdown with held messages.
// Assertions are about the order of events, not about durations: a hold
// that blocked the subscription would change the order deterministically.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// timeline records the applier's calls and the consumer's publishes in the
// order they happened.
type timeline struct {
	mu     sync.Mutex
	events []string
}

func (tl *timeline) add(format string, args ...any) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.events = append(tl.events, fmt.Sprintf(format, args...))
}

func (tl *timeline) all() []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return slices.Clone(tl.events)
}

// at returns the position of event e; the test fails when it is missing or
// happened more than once.
func (tl *timeline) at(t *testing.T, e string) int {
	t.Helper()
	events := tl.all()
	i := slices.Index(events, e)
	if i < 0 || slices.Index(events[i+1:], e) >= 0 {
		t.Fatalf("event %q is missing or happened twice in %q", e, events)
	}
	return i
}

// recordPublishes makes tr's publishes "publish <topic> pk=<pk> retries=<n>".
func recordPublishes(t *testing.T, tl *timeline) func(published) {
	return func(p published) {
		var body struct {
			PK      any `json:"instance_pk"`
			Retries int `json:"retries"`
		}
		if err := json.Unmarshal([]byte(p.Body), &body); err != nil {
			t.Errorf("published body %q: %v", p.Body, err)
		}
		tl.add("publish %s pk=%v retries=%d", p.Topic, body.PK, body.Retries)
	}
}

func pkOf(d replica.Delivery) string { return fmt.Sprint(d.Payload.InstancePK) }

// TestPoisonMessageDoesNotSlowOthers is the RabbitMQ issue's requirement:
// a message that always fails is retried and dead-lettered while the 200
// messages behind it on the same topic flow as if it were not there.
// Not parallel: the order of a 300 ms hold and 200 quick messages is
// asserted, and the test should not share the CPU with the conformance run.
func TestPoisonMessageDoesNotSlowOthers(t *testing.T) {
	mem := newMemory(t)
	tl := &timeline{}
	tr := &recorder{Transport: mem, onPublish: recordPublishes(t, tl)}
	ap := &testApplier{fn: func(_ context.Context, d replica.Delivery) (replica.Result, error) {
		if pkOf(d) == "0" {
			tl.add("fail pk=0 retries=%d", d.Payload.Retries)
			return replica.Result{}, errFixture
		}
		tl.add("apply pk=%s", pkOf(d))
		return replica.Result{Outcome: replica.OutcomeCreated}, nil
	}}
	c := newConsumer(t, tr, rawRegistry(t, "author"), ap, consumer.Options{
		Queue: "q", MaxRetries: new(3), RetryDelay: 300 * time.Millisecond, DeadMessageTTL: time.Hour,
	})
	start(t, c)

	const good = 200
	poison := payload(wire.SignalSave, "author", 0, 0)
	publish(t, tr, "author", encode(t, poison))
	for pk := 1; pk <= good; pk++ {
		publish(t, tr, "author", encode(t, payload(wire.SignalSave, "author", pk, 0)))
	}
	s := waitDone(t, c, good+1)
	if s.Applied != good || s.DeadLettered != 1 || s.Requeued != 3 || s.Failed != 4 || s.Received != good+4 || s.Nacked != 0 {
		t.Fatalf("stats %+v, want %d applied, 4 failures, 3 requeues, 1 dead letter", s, good)
	}

	// The good messages went through in publish order, before the poison
	// message's first retry copy was even published.
	firstCopy := tl.at(t, "publish cqrs.q.author pk=0 retries=1")
	prev := -1
	for pk := 1; pk <= good; pk++ {
		i := tl.at(t, "apply pk="+strconv.Itoa(pk))
		if i < prev {
			t.Fatalf("pk %d applied out of publish order: %q", pk, tl.all())
		}
		if i > firstCopy {
			t.Fatalf("pk %d was applied after the poison message's first requeue (held in the handler?): %q", pk, tl.all())
		}
		prev = i
	}
	// The poison message itself: 4 attempts, exactly 3 requeue copies with
	// retries 1, 2, 3, then the dead letter with retries 3.
	var poisonEvents []string
	for _, e := range tl.all() {
		if strings.Contains(e, "pk=0") {
			poisonEvents = append(poisonEvents, e)
		}
	}
	want := []string{
		"fail pk=0 retries=0", "publish cqrs.q.author pk=0 retries=1",
		"fail pk=0 retries=1", "publish cqrs.q.author pk=0 retries=2",
		"fail pk=0 retries=2", "publish cqrs.q.author pk=0 retries=3",
		"fail pk=0 retries=3", "publish cqrs.dead_letter_q.author pk=0 retries=3",
	}
	if !slices.Equal(poisonEvents, want) {
		t.Fatalf("poison message events %q, want %q", poisonEvents, want)
	}
	dl := mem.Peek("cqrs.dead_letter_q.author")
	wantDL := *poison
	wantDL.Retries = 3
	if len(dl) != 1 || string(dl[0].Payload) != string(encode(t, &wantDL)) {
		t.Fatalf("dead letters %v, want the poison message with retries 3", dl)
	}
	// Every held original was acked on the transport once its copy was out.
	testenv.WaitFor(t, wait, "replica topics empty", func() bool {
		return mem.Pending("author") == 0 && mem.Pending("cqrs.q.author") == 0
	})
}

// TestDelayQueueFullHeldInHandler: with DelayQueueMaxSize 1, the first
// failed message is detached and the second one is held in its handler,
// blocking the subscription until its copy is out; everything completes.
func TestDelayQueueFullHeldInHandler(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	tl := &timeline{}
	tr := &recorder{Transport: mem, onPublish: recordPublishes(t, tl)}
	var buf lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	ap := &testApplier{fn: func(_ context.Context, d replica.Delivery) (replica.Result, error) {
		pk := pkOf(d)
		if (pk == "1" || pk == "2") && d.Payload.Retries == 0 {
			tl.add("fail pk=%s", pk)
			return replica.Result{}, errFixture
		}
		tl.add("apply pk=%s retries=%d", pk, d.Payload.Retries)
		return replica.Result{Outcome: replica.OutcomeCreated}, nil
	}}
	c := newConsumer(t, tr, rawRegistry(t, "author"), ap, consumer.Options{
		Queue: "q", RetryDelay: 200 * time.Millisecond, DelayQueueMaxSize: 1, Logger: logger,
	})
	start(t, c)
	for pk := 1; pk <= 3; pk++ {
		publish(t, tr, "author", encode(t, payload(wire.SignalSave, "author", pk, 0)))
	}
	s := waitDone(t, c, 3)
	if s.Applied != 3 || s.Failed != 2 || s.Requeued != 2 || s.Nacked != 0 {
		t.Fatalf("stats %+v, want 2 failures, 2 requeues, 3 applied", s)
	}
	// pk 1 was detached: pk 2 was consumed while pk 1 waited for its retry.
	if tl.at(t, "fail pk=2") > tl.at(t, "publish cqrs.q.author pk=1 retries=1") {
		t.Fatalf("pk 2 was consumed only after pk 1's requeue: pk 1 was not detached: %q", tl.all())
	}
	// pk 2 found the delay queue full and was held in its handler: pk 3,
	// behind it on the same topic, came only after pk 2's copy was out.
	if tl.at(t, "apply pk=3 retries=0") < tl.at(t, "publish cqrs.q.author pk=2 retries=1") {
		t.Fatalf("pk 3 was applied while pk 2 was held: pk 2 did not block its subscription: %q", tl.all())
	}
	tl.at(t, "apply pk=1 retries=1")
	tl.at(t, "apply pk=2 retries=1")
	holds := map[string]string{}
	for _, l := range buf.lines() {
		if l["msg"] == "CQRS is delayed" {
			holds[fmt.Sprint(l["pk"])] = fmt.Sprint(l["hold"], " ", l["hold_reason"])
		}
	}
	if holds["1"] != "detached <nil>" || holds["2"] != "handler delay queue full" {
		t.Fatalf("delayed log lines say %v, want pk 1 detached and pk 2 held in the handler (delay queue full)", holds)
	}
	testenv.WaitFor(t, wait, "replica topics empty", func() bool {
		return mem.Pending("author") == 0 && mem.Pending("cqrs.q.author") == 0
	})
}

// TestShutdownHandsBackHeldMessages: on shutdown, detached messages and the
// one held in its handler all go back to the transport, Run returns once
// they have, and a later consumer gets every one of them.
func TestShutdownHandsBackHeldMessages(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	tr := &recorder{Transport: mem}
	failing := &testApplier{fn: func(context.Context, replica.Delivery) (replica.Result, error) {
		return replica.Result{}, errFixture
	}}
	c := newConsumer(t, tr, rawRegistry(t, "author"), failing, consumer.Options{
		Queue: "q", RetryDelay: time.Hour, DelayQueueMaxSize: 2,
	})
	r := start(t, c)
	for pk := 1; pk <= 4; pk++ {
		publish(t, tr, "author", encode(t, payload(wire.SignalSave, "author", pk, 0)))
	}
	// pk 1 and 2 are detached, pk 3 is held in its handler, pk 4 waits behind it.
	testenv.WaitFor(t, wait, "three failures", func() bool { return c.Stats().Failed == 3 })
	r.stop(t) // Run has returned: every held message was handed back
	s := c.Stats()
	if s.Nacked != 3 || s.Requeued != 0 || s.Received != 3 || s.Done() != 0 {
		t.Fatalf("stats %+v, want the 3 held messages handed back and nothing else done", s)
	}
	if len(tr.sent()) != 0 {
		t.Fatalf("published %+v during shutdown", tr.sent())
	}
	if got := mem.Pending("author"); got != 4 {
		t.Fatalf("Pending(author) = %d after shutdown, want all 4 messages kept", got)
	}

	// Nothing was lost: the next consumer of the queue applies all four.
	ok := &testApplier{}
	c2 := newConsumer(t, mem, rawRegistry(t, "author"), ok, consumer.Options{Queue: "q"})
	start(t, c2)
	waitDone(t, c2, 4)
	var pks []string
	for _, d := range ok.deliveries() {
		pks = append(pks, pkOf(d))
	}
	slices.Sort(pks)
	if !slices.Equal(pks, []string{"1", "2", "3", "4"}) {
		t.Fatalf("second consumer applied pks %q, want 1 2 3 4 once each", pks)
	}
	testenv.WaitFor(t, wait, "topic empty", func() bool { return mem.Pending("author") == 0 })
}

// noDetach is a transport whose subscriber cannot detach messages: it hides
// the memory transport's DetachFunc, as a subscriber without detach support
// would deliver them.
type noDetach struct{ transports.Transport }

func (n noDetach) Subscriber() message.Subscriber {
	return noDetachSubscriber{n.Transport.Subscriber()}
}

type noDetachSubscriber struct{ message.Subscriber }

func (s noDetachSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	in, err := s.Subscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for m := range in {
			m.SetContext(transports.WithDetach(m.Context(), nil))
			select {
			case out <- m:
			case <-ctx.Done():
				m.Nack()
			}
		}
	}()
	return out, nil
}

// TestWithoutDetachHoldsInHandler: a transport that cannot detach keeps the
// failed message in its handler, blocking the subscription for RetryDelay.
func TestWithoutDetachHoldsInHandler(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	tl := &timeline{}
	tr := &recorder{Transport: noDetach{mem}, onPublish: recordPublishes(t, tl)}
	var failed atomic.Bool
	ap := &testApplier{fn: func(_ context.Context, d replica.Delivery) (replica.Result, error) {
		if pkOf(d) == "1" && failed.CompareAndSwap(false, true) {
			tl.add("fail pk=1")
			return replica.Result{}, errFixture
		}
		tl.add("apply pk=%s retries=%d", pkOf(d), d.Payload.Retries)
		return replica.Result{Outcome: replica.OutcomeCreated}, nil
	}}
	c := newConsumer(t, tr, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q", RetryDelay: 50 * time.Millisecond})
	start(t, c)
	publish(t, tr, "author", encode(t, payload(wire.SignalSave, "author", 1, 0)))
	publish(t, tr, "author", encode(t, payload(wire.SignalSave, "author", 2, 0)))
	s := waitDone(t, c, 2)
	if s.Applied != 2 || s.Requeued != 1 {
		t.Fatalf("stats %+v, want one requeue and both applied", s)
	}
	if tl.at(t, "apply pk=2 retries=0") < tl.at(t, "publish cqrs.q.author pk=1 retries=1") {
		t.Fatalf("pk 2 was applied while pk 1 was held in its handler: %q", tl.all())
	}
	testenv.WaitFor(t, wait, "replica topics empty", func() bool {
		return mem.Pending("author") == 0 && mem.Pending("cqrs.q.author") == 0
	})
}
