package consumer

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
)

// Stats counts what the consumer did since it was created. Every received
// message ends in exactly one of Applied, Skipped, DeadLettered, Requeued
// (its copy is then counted again when it arrives), Unparseable, MissingKey,
// NoModel or Nacked.
type Stats struct {
	// Received counts deliveries handed to the consumer, copies included.
	Received int64
	// Applied counts messages acknowledged as applied: created, updated,
	// deleted, a DELETE of a missing row (django-cqrs acks it as applied),
	// or handled by a raw replica.
	Applied int64
	// Skipped counts messages acknowledged without a change: stale or
	// duplicate SAVEs, SAVEs older than a tombstone, broadcast SYNCs on an
	// only-direct model, and any other outcome that is not applied.
	Skipped int64
	// Failed counts Apply errors (one per attempt).
	Failed int64
	// Requeued counts copies published with retries+1.
	Requeued int64
	// DeadLettered counts copies published to the dead-letter key (expired,
	// out of retries, or undecodable values).
	DeadLettered int64
	// Unparseable counts bodies that are not a JSON object: dropped.
	Unparseable int64
	// MissingKey counts bodies without a required key: dropped.
	MissingKey int64
	// NoModel counts messages whose cqrs_id this consumer does not apply:
	// dropped.
	NoModel int64
	// Nacked counts messages handed back to the broker: shutdown during a
	// retry hold, or a requeue / dead-letter copy that could not be
	// published.
	Nacked int64
	// Outcomes counts the applier's results by outcome.
	Outcomes map[replica.Outcome]int64
}

// Done returns how many messages reached a final outcome: applied, skipped,
// dead-lettered or dropped.
func (s Stats) Done() int64 {
	return s.Applied + s.Skipped + s.DeadLettered + s.Unparseable + s.MissingKey + s.NoModel
}

type counters struct {
	received, applied, skipped, failed, requeued, deadLettered atomic.Int64
	unparseable, missingKey, noModel, nacked                   atomic.Int64

	mu       sync.Mutex
	outcomes map[replica.Outcome]int64
}

func (c *counters) outcome(o replica.Outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.outcomes == nil {
		c.outcomes = map[replica.Outcome]int64{}
	}
	c.outcomes[o]++
}

// Stats returns a snapshot of the counters.
func (c *Consumer) Stats() Stats {
	s := &c.stats
	s.mu.Lock()
	outcomes := maps.Clone(s.outcomes)
	s.mu.Unlock()
	if outcomes == nil {
		outcomes = map[replica.Outcome]int64{}
	}
	return Stats{
		Received:     s.received.Load(),
		Applied:      s.applied.Load(),
		Skipped:      s.skipped.Load(),
		Failed:       s.failed.Load(),
		Requeued:     s.requeued.Load(),
		DeadLettered: s.deadLettered.Load(),
		Unparseable:  s.unparseable.Load(),
		MissingKey:   s.missingKey.Load(),
		NoModel:      s.noModel.Load(),
		Nacked:       s.nacked.Load(),
		Outcomes:     outcomes,
	}
}
