package consumer_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// eventLog is an Observer that keeps every event.
type eventLog struct {
	mu     sync.Mutex
	events []consumer.Event
}

func (l *eventLog) Observe(e consumer.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) count(k consumer.EventKind) (n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.Kind == k {
			n++
		}
	}
	return n
}

func (l *eventLog) first(k consumer.EventKind) consumer.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.Kind == k {
			return e
		}
	}
	return consumer.Event{}
}

func TestObserverSeesEveryStep(t *testing.T) {
	t.Parallel()
	answer := func(_ context.Context, d replica.Delivery) (replica.Result, error) {
		switch pkOf(d) {
		case "1":
			return replica.Result{Outcome: replica.OutcomeCreated, StoredRevision: -1, Gap: 2}, nil
		case "2":
			return replica.Result{Outcome: replica.OutcomeSkippedStale, StoredRevision: 5}, nil
		}
		return replica.Result{}, errFixture
	}
	for _, batch := range []bool{false, true} {
		t.Run(map[bool]string{false: "single", true: "batch"}[batch], func(t *testing.T) {
			t.Parallel()
			tr := newMemory(t)
			var ap consumer.Applier = &testApplier{fn: answer}
			opts := consumer.Options{Queue: "q", MaxRetries: new(1), RetryDelay: time.Millisecond}
			if batch {
				bap := &batchApplier{}
				bap.fn = answer
				ap, opts.BatchSize = bap, 8
			}
			log := &eventLog{}
			opts.Observer = log
			c := newConsumer(t, tr, rawRegistry(t, "author"), ap, opts)
			start(t, c)
			for pk := 1; pk <= 3; pk++ {
				publish(t, tr, "author", encode(t, payload(wire.SignalSave, "author", pk, 1)))
			}
			testenv.WaitFor(t, wait, "dead letter observed", func() bool { return log.count(consumer.EventDeadLettered) == 1 })
			want := map[consumer.EventKind]int{
				consumer.EventReceived: 4, // three messages and one retry copy
				consumer.EventApplied:  1, consumer.EventSkipped: 1, consumer.EventFailed: 2,
				consumer.EventRequeued: 1, consumer.EventDeadLettered: 1,
			}
			for k, n := range want {
				if got := log.count(k); got != n {
					t.Errorf("%s events = %d, want %d", k, got, n)
				}
			}
			if e := log.first(consumer.EventApplied); e.CQRSID != "author" || e.Gap != 2 || e.Outcome != replica.OutcomeCreated || e.Duration <= 0 {
				t.Errorf("applied event = %+v", e)
			}
			if e := log.first(consumer.EventSkipped); e.Outcome != replica.OutcomeSkippedStale {
				t.Errorf("skipped event = %+v", e)
			}
		})
	}
}
