package outbox

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// finishTimeout bounds the statements that end a cycle (delete, release),
// which run even when the cycle's context is cancelled.
const finishTimeout = 15 * time.Second

// RunOnce runs one cycle: claim a batch, publish it (see "How a batch is
// published" in batch.go: per-entity order kept, many calls in flight),
// delete what the broker confirmed and release the rest. It returns the
// number of messages published and deleted.
//
// A message the broker refuses (the publish error wraps
// transports.ErrRejected: unroutable, nacked, or as RelayOptions.Rejected
// says) is set aside: its row gets attempts+1 and last_error, is not claimed
// again for ErrorBackoff (doubling per attempt up to ErrorBackoffMax), and
// its entity's later rows wait behind it (released unpublished); the other
// entities go on. Any other publish failure (the transport is down) leaves
// the message's outcome unknown and stops the batch: no further call
// starts, the unconfirmed rows get attempts+1 and last_error and are
// released, as are the rows not tried, and the error is returned.
//
// A row of an entity whose earlier row in the batch was not confirmed is
// released even if the broker confirmed it (it went out in the same call):
// it is published again after the earlier row, so the entity's latest
// message is the last one on the wire; the revision check absorbs the
// duplicate.
//
// When ctx is cancelled mid-batch, the calls in flight finish, the rows
// already confirmed are deleted and the rest released.
func (r *Relay) RunOnce(ctx context.Context) (published int, err error) {
	defer r.cycles.Add(1)
	p, err := r.prepare(ctx, nil)
	if err != nil {
		return 0, err
	}
	if p.empty() {
		return 0, nil
	}
	s, pubErr := r.publishPrepared(ctx, p, true)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	// The log lines are written while the rows are deleted.
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		r.logConfirmed(ctx, s.sent)
	}()
	finErr := r.finish(fctx, s)
	<-logged
	return len(s.done), r.conclude(s, pubErr, finErr)
}

// prepared is a claimed batch, checked for entity order, ready to publish.
type prepared struct {
	claimed   int          // rows claimed
	keep      []claimedRow // to publish, in id order
	release   []int64      // to hand back unpublished
	claimedAt time.Time
	contended bool // rows were handed back behind another relay's

	// Set by Relay.launchEarly: the rows published before the batch ahead
	// of this one settled (entities it does not hold) and their outcomes,
	// valid once earlyDone is closed (nil when none went early).
	early     map[int64]bool
	earlyRows []claimedRow
	earlyOut  []outcome
	earlyDone chan struct{}
}

// empty reports whether the claim found nothing.
func (p *prepared) empty() bool { return p == nil || p.claimed == 0 }

// full reports whether the claim took a whole batch (more may be waiting).
func (p *prepared) full(batchSize int) bool { return p != nil && p.claimed >= batchSize }

// hold moves the rows of the blocked entities to the release list.
func (p *prepared) hold(blocked map[string]bool) {
	if len(blocked) == 0 {
		return
	}
	keep := p.keep[:0]
	for _, row := range p.keep {
		if blocked[row.entityKey] {
			p.release = append(p.release, row.id)
			continue
		}
		keep = append(keep, row)
	}
	p.keep = keep
}

// prepare claims a batch and checks it for entity order. ahead holds the
// rows this relay is publishing in the batch before this one: they count as
// held by this batch (the caller holds back this batch's rows of any entity
// whose row ahead is not confirmed). An error is recorded and logged; the
// batch's rows are released.
func (r *Relay) prepare(ctx context.Context, ahead []claimedRow) (*prepared, error) {
	claimedAt := time.Now()
	rows, err := r.claim(ctx)
	if err != nil {
		err = fmt.Errorf("outbox: claim batch from %s: %w", r.n.raw, err)
		r.fail(err)
		return nil, err
	}
	p := &prepared{claimed: len(rows), claimedAt: claimedAt}
	if len(rows) == 0 {
		return p, nil
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].id < rows[j].id })
	keep, drop, err := r.inEntityOrder(ctx, rows, ahead)
	if err != nil {
		err = fmt.Errorf("outbox: check entity order in %s: %w", r.n.raw, err)
		r.fail(err)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
		defer cancel()
		_ = r.finish(fctx, settled{release: ids(rows)}) // logged there
		return nil, err
	}
	if len(drop) > 0 {
		r.released.Add(int64(len(drop)))
		r.log.Debug("outbox: released rows behind another relay's lower row of the same entity", "rows", len(drop))
	}
	p.keep, p.release, p.contended = keep, drop, len(drop) > 0
	return p, nil
}

// publishPrepared publishes a prepared batch and sorts its rows by what
// becomes of them. The error is the batch's publish failure or stop, nil
// when every row was settled by the broker (refusals included).
//
// When part of the batch went out early (see Relay.launchEarly), only the
// other rows are published here, if later is set (otherwise they count as
// not tried and are released), and the early part's outcomes are awaited.
func (r *Relay) publishPrepared(ctx context.Context, p *prepared, later bool) (settled, error) {
	var out []outcome
	if p.earlyDone == nil {
		if later {
			out = r.publishBatch(ctx, p.keep)
		} else {
			out = make([]outcome, len(p.keep))
		}
	} else {
		out = make([]outcome, len(p.keep))
		var rest []claimedRow
		var restAt []int
		for i, row := range p.keep {
			if !p.early[row.id] {
				rest, restAt = append(rest, row), append(restAt, i)
			}
		}
		if later && len(rest) > 0 {
			for j, o := range r.publishBatch(ctx, rest) {
				out[restAt[j]] = o
			}
		}
		<-p.earlyDone
		byID := make(map[int64]outcome, len(p.earlyRows))
		for j, row := range p.earlyRows {
			byID[row.id] = p.earlyOut[j]
		}
		for i, row := range p.keep {
			if p.early[row.id] {
				out[i] = byID[row.id]
			}
		}
	}
	s := r.settle(p.keep, out)
	s.release = append(s.release, p.release...)
	r.published.Add(int64(len(s.done)))
	r.rejected.Add(int64(len(s.refused)))

	switch {
	case s.firstUnknown != nil:
		row := s.firstUnknown
		err := fmt.Errorf("outbox: publish row %d (cqrs_id %q, topic %q): %w", row.id, row.cqrsID, row.topic, s.unknownCause)
		if n := len(s.unknown); n > 1 {
			err = fmt.Errorf("%w (%d rows unconfirmed)", err, n)
		}
		return s, err
	case s.notTried > 0 && ctx.Err() != nil:
		err := ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			r.log.Warn("outbox: batch outlived its lease; the rest is released (lower BatchSize or raise ClaimTTL)",
				"published", len(s.done), "released", s.notTried)
		}
		return s, fmt.Errorf("outbox: batch stopped after %d of %d rows: %w", len(p.keep)-s.notTried, len(p.keep), err)
	}
	return s, nil
}

// conclude records a finished batch's outcome and returns its error: the
// publish failure first, else the finishing failure.
func (r *Relay) conclude(s settled, pubErr, finErr error) error {
	switch {
	case pubErr != nil:
		// A publish failure was logged with its call; a stop was the caller's.
		r.recordError(pubErr)
		return pubErr
	case finErr != nil:
		r.recordError(finErr) // finish logged it
		return finErr
	case len(s.refused) > 0:
		r.recordError(s.refused[0].err)
	}
	return nil
}

// settled is what a cycle does with its rows once published.
type settled struct {
	done         []int64     // confirmed: delete
	release      []int64     // hand back untouched
	refused      []rejection // set aside
	unknown      []rejection // outcome unknown: attempts+1, last_error, released at once
	unknownCause error       // the first unknown row's cause
	firstUnknown *claimedRow
	notTried     int
	blocked      map[string]bool // entities with a row not confirmed
	sent         []sentMessage   // every message the broker confirmed, for the log lines
}

// settle sorts the published batch's rows (id order) by what becomes of
// them, keeping each entity's rows in order: once one of an entity's rows is
// not confirmed, its later rows are released.
func (r *Relay) settle(rows []claimedRow, out []outcome) settled {
	s := settled{blocked: map[string]bool{}}
	blocked := s.blocked
	for i := range out {
		if out[i].state == confirmed && out[i].msg != nil {
			if s.sent == nil {
				s.sent = make([]sentMessage, 0, len(out))
			}
			s.sent = append(s.sent, sentMessage{topic: rows[i].topic, msg: out[i].msg})
		}
	}
	for i := range rows {
		row, o := &rows[i], out[i]
		if blocked[row.entityKey] {
			s.release = append(s.release, row.id)
			if o.state == notTried {
				s.notTried++
			}
			continue
		}
		switch o.state {
		case confirmed:
			s.done = append(s.done, row.id)
			continue
		case refused:
			wait := r.setAsideFor(int(row.attempts) + 1)
			s.refused = append(s.refused, rejection{
				id:   row.id,
				err:  fmt.Errorf("outbox: publish row %d (cqrs_id %q, topic %q): %w", row.id, row.cqrsID, row.topic, o.cause),
				text: fmt.Sprintf("publish to topic %q refused: %v", row.topic, o.cause),
				wait: wait,
			})
			r.log.Debug("outbox: broker refused a message; the row is set aside and its entity's later rows wait behind it",
				"outbox_id", row.id, "cqrs_id", row.cqrsID, "entity_key", row.entityKey, "topic", row.topic,
				"attempts", row.attempts+1, "retry_in", wait, "error", o.cause)
		case unknown:
			if s.firstUnknown == nil {
				s.firstUnknown, s.unknownCause = row, o.cause
			}
			s.unknown = append(s.unknown, rejection{
				id:   row.id,
				text: fmt.Sprintf("publish to topic %q not confirmed: %v", row.topic, o.cause),
			})
		default:
			s.release = append(s.release, row.id)
			s.notTried++
		}
		blocked[row.entityKey] = true
	}
	return s
}

// fail records a cycle's error, except a cancellation (the caller's stop).
func (r *Relay) fail(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	r.recordError(err)
	r.log.Warn("outbox: relay cycle failed", "error", err)
}

// finish deletes the confirmed rows, sets the refused ones aside, marks the
// unconfirmed ones and releases the rest, a few statements per batch. Errors
// are logged and returned (the rows' leases expire anyway).
func (r *Relay) finish(ctx context.Context, s settled) error {
	var errs []error
	if len(s.done) > 0 {
		if err := r.deleteRows(ctx, s.done); err != nil {
			errs = append(errs, fmt.Errorf("outbox: delete %d published rows from %s (they will be published again): %w", len(s.done), r.n.raw, err))
		}
	}
	// Failed rows sharing a wait and a cause are marked together.
	type group struct {
		wait time.Duration
		text string
	}
	groups := map[group][]int64{}
	var order []group
	for _, rj := range append(append([]rejection(nil), s.unknown...), s.refused...) {
		g := group{rj.wait, rj.text}
		if groups[g] == nil {
			order = append(order, g)
		}
		groups[g] = append(groups[g], rj.id)
	}
	for _, g := range order {
		if err := r.markFailed(ctx, groups[g], g.text, g.wait); err != nil {
			errs = append(errs, fmt.Errorf("outbox: record the failure of %d row(s) in %s: %w", len(groups[g]), r.n.raw, err))
		}
	}
	if len(s.release) > 0 {
		if err := r.releaseRows(ctx, s.release); err != nil {
			errs = append(errs, fmt.Errorf("outbox: release %d rows in %s: %w", len(s.release), r.n.raw, err))
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		r.log.Error("outbox: finishing batch", "error", err)
	}
	return err
}

// inEntityOrder splits the claimed rows (sorted by id) into those that may be
// published now and those to release: for each entity, only the claimed rows
// below the entity's lowest row that neither this claim nor ahead holds (held
// by another relay, or claimed by no one since) may go.
func (r *Relay) inEntityOrder(ctx context.Context, rows, ahead []claimedRow) (keep []claimedRow, drop []int64, err error) {
	mine := make(map[int64]bool, len(rows)+len(ahead))
	for _, row := range ahead {
		mine[row.id] = true
	}
	var keys []string
	seen := map[string]bool{}
	for _, row := range rows {
		mine[row.id] = true
		if !seen[row.entityKey] {
			seen[row.entityKey] = true
			keys = append(keys, row.entityKey)
		}
	}
	lower, err := r.lowerRows(ctx, keys, rows[len(rows)-1].id)
	if err != nil {
		return nil, nil, err
	}
	blocker := make(map[string]int64, len(lower))
	for key, list := range lower {
		for _, id := range list {
			if !mine[id] && (blocker[key] == 0 || id < blocker[key]) {
				blocker[key] = id
			}
		}
	}
	for _, row := range rows {
		if b := blocker[row.entityKey]; b != 0 && b < row.id {
			drop = append(drop, row.id)
			continue
		}
		keep = append(keep, row)
	}
	return keep, drop, nil
}

// rejection is a row whose publish failed: refused by the broker (set
// aside for wait) or unconfirmed (wait 0: claimable at once).
type rejection struct {
	id   int64
	err  error  // for the relay's stats (refused rows)
	text string // for last_error (shared by the rows of one failure)
	wait time.Duration
}

// setAsideFor is how long a row rejected for the attempts-th time waits
// before it is claimed again: ErrorBackoff doubling per attempt, capped at
// ErrorBackoffMax.
func (r *Relay) setAsideFor(attempts int) time.Duration {
	d := r.opts.ErrorBackoff
	for i := 1; i < attempts && d < r.opts.ErrorBackoffMax; i++ {
		d *= 2
	}
	return min(d, r.opts.ErrorBackoffMax)
}

func ids(rows []claimedRow) []int64 {
	out := make([]int64, len(rows))
	for i, row := range rows {
		out[i] = row.id
	}
	return out
}
