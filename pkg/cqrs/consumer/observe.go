package consumer

import (
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
)

// EventKind names what happened to a message, for an [Observer].
type EventKind string

// Event kinds. Every message whose body decoded and whose cqrs_id this
// consumer applies is reported as EventReceived, then as EventApplied or
// EventSkipped once applied; each failed Apply attempt as EventFailed,
// followed by EventRequeued (a retry copy was published) or
// EventDeadLettered.
const (
	EventReceived     EventKind = "received"
	EventApplied      EventKind = "applied"
	EventSkipped      EventKind = "skipped"
	EventFailed       EventKind = "failed"
	EventRequeued     EventKind = "requeued"
	EventDeadLettered EventKind = "dead_lettered"
)

// Event is one thing that happened to a message of one cqrs_id.
type Event struct {
	// Kind is what happened.
	Kind EventKind
	// CQRSID is the message's cqrs_id.
	CQRSID string
	// Outcome is the applier's result (EventApplied and EventSkipped only).
	Outcome replica.Outcome
	// Gap is the number of revisions missing before this one (EventApplied
	// only; 0 when none).
	Gap int64
	// Duration is how long the Apply call took (EventApplied, EventSkipped
	// and EventFailed; for a batch, the whole batch's transaction).
	Duration time.Duration
}

// Observer receives the consumer's per-message events, e.g. to count them
// per cqrs_id (package metrics has one). Observe is called synchronously
// from the consumer's goroutines, possibly concurrently: it must be fast
// and safe for concurrent use.
type Observer interface {
	Observe(Event)
}

// observe reports e to Options.Observer, if any.
func (c *Consumer) observe(e Event) {
	if c.observer != nil {
		c.observer.Observe(e)
	}
}
