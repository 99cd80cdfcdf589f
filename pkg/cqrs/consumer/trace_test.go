package consumer_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/tracectx"
)

// A delivered traceparent and tracestate reach the applier's context, and
// the requeue copy and the dead letter carry them on.
func TestTraceparentFollowsRetries(t *testing.T) {
	t.Parallel()
	const (
		tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		ts = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
	)
	mem := newMemory(t)
	tr := &recorder{Transport: mem}
	var (
		mu   sync.Mutex
		seen []string
	)
	ap := &testApplier{fn: func(ctx context.Context, _ replica.Delivery) (replica.Result, error) {
		mu.Lock()
		seen = append(seen, tracectx.Traceparent(ctx)+" "+tracectx.Tracestate(ctx))
		mu.Unlock()
		return replica.Result{}, errFixture
	}}
	c := newConsumer(t, tr, rawRegistry(t, "author"), ap,
		consumer.Options{Queue: "q", MaxRetries: new(1), RetryDelay: time.Millisecond})
	start(t, c)
	m := message.NewMessage(watermill.NewUUID(), encode(t, payload(wire.SignalSave, "author", 60, 0)))
	m.Metadata.Set(tracectx.HeaderTraceparent, tp)
	m.Metadata.Set(tracectx.HeaderTracestate, ts)
	if err := tr.Publisher().Publish("author", m); err != nil {
		t.Fatal(err)
	}
	s := waitDone(t, c, 1)
	if s.Requeued != 1 || s.DeadLettered != 1 {
		t.Fatalf("stats %+v, want one requeue and one dead letter", s)
	}
	sent := tr.sent()
	if len(sent) != 3 { // the test's own publish, the copy, the dead letter
		t.Fatalf("published %d messages, want 3: %+v", len(sent), sent)
	}
	for _, p := range sent[1:] {
		if p.Metadata[tracectx.HeaderTraceparent] != tp || p.Metadata[tracectx.HeaderTracestate] != ts {
			t.Errorf("%s: metadata %v, want traceparent %s and tracestate %s", p.Topic, p.Metadata, tp, ts)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := tp + " " + ts; len(seen) != 2 || seen[0] != want || seen[1] != want {
		t.Errorf("applier contexts carried %q, want the trace context twice", seen)
	}
}
