package outbox

import (
	"context"
	"errors"
	"time"
)

// Run publishes outbox rows until ctx is done, polling adaptively: at once
// after a full batch, PollMin after a partial one, and an idle wait doubling
// from PollMin to PollMax when there is nothing to publish (cut short by
// [Relay.Wake]). On PostgreSQL it also LISTENs for the outbox table's
// notifications (see [Migrate] and notify.go) and wakes itself when rows
// are committed: an idle relay publishes at once instead of after up to
// PollMax. Before each wait it takes the lock that makes writers notify
// (migration 3) and claims once more; it releases it when it has rows to
// publish (see notify_wait.go). The adaptive polling stays as the fallback
// (a listener or lock connection that is down). Failed cycles
// are logged, counted in [Relay.Stats] and retried after ErrorBackoff
// (doubling up to ErrorBackoffMax).
//
// While the outbox holds a backlog, Run overlaps the database work with
// publishing: while one batch is being published, the batch before it is
// deleted and the next one is claimed and checked, and the next batch's
// rows of entities the current one does not hold are published at once, so
// that the broker never runs dry between batches. The next batch's rows of
// an entity still in flight wait for that entity's outcome: they are
// published only if its rows in flight were all confirmed, and released
// otherwise. Meanwhile a third batch is claimed and checked, not published:
// it goes out as soon as the current batch has settled, beside the next
// one, so that the broker gets new messages the moment it confirms the
// ones it has (RabbitMQ confirms a queue's persistent messages in bulk,
// once it has caught up with them, so the two batches in flight tend to
// settle together; without a third batch ready, the broker would wait for
// a delete and a claim). A relay holds up to three batches then; so that
// relays sharing hot entities do not hold each other's rows back more, a
// batch that had to hand rows back behind another relay's
// (RelayStats.Released) is not followed by a claim ahead.
//
// When ctx is cancelled, Run finishes the batch in flight (publish, delete,
// release; bounded by ClaimTTL), settles the part of the batch claimed
// ahead that already went out, releases the rest (and the batch claimed
// after it) and returns nil. It returns an error only if Run is already running on this
// relay.
func (r *Relay) Run(ctx context.Context) error {
	if !r.runMu.TryLock() {
		return errors.New("outbox: relay: Run is already running on this relay")
	}
	defer r.runMu.Unlock()
	r.log.Debug("outbox relay started")
	defer r.log.Debug("outbox relay stopped")

	listening := r.startListener(ctx)
	defer listening.stop()
	// Before waiting for a notification, the relay takes the "waiting" lock
	// and claims once more (see notify_wait.go); it releases the lock when
	// it has rows to publish.
	wl := &waitLock{r: r, off: listening.cancel == nil}
	defer wl.drop()

	var (
		idle     = r.opts.PollMin
		errWait  time.Duration
		next     *prepared     // claimed ahead while the batch before was published
		spare    *prepared     // claimed after next, not published yet
		behind   *settled      // published, not finished yet
		recheck  bool          // this cycle's claim is the one after taking the lock (R3)
		lastWait time.Duration // the wait decided before that claim
	)
	// finishBehind finishes the batch behind; it reports the error only.
	finishBehind := func() error {
		if behind == nil {
			return nil
		}
		s := *behind
		behind = nil
		r.logConfirmed(ctx, s.sent)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
		defer cancel()
		return r.conclude(s, nil, r.finish(fctx, s))
	}
	// abandonAhead ends the batches claimed ahead, in claim order.
	abandonAhead := func() {
		for _, p := range []**prepared{&next, &spare} {
			if *p != nil {
				r.abandon(ctx, *p)
				*p = nil
			}
		}
	}
	defer func() {
		_ = finishBehind()
		abandonAhead()
	}()

	for {
		if ctx.Err() != nil {
			return nil
		}
		cur, err := next, error(nil)
		next = nil
		safe := false // the claim below starts while the relay holds "waiting" since R2
		if cur == nil {
			if err = finishBehind(); err == nil {
				safe = wl.safe()
				cur, err = r.prepareUncancelled(ctx, nil)
			}
		}
		if wl.held && (err != nil || (!cur.empty() && len(cur.keep) > 0)) {
			wl.unlock(ctx) // R4: busy (or failing): writers need not notify
			safe = false
		}
		published := 0
		if err == nil && !cur.empty() {
			published, err = r.runBatch(ctx, cur, &next, &spare, &behind)
		}
		r.cycles.Add(1)

		var wait time.Duration
		wakeable := true
		switch {
		case err != nil:
			if errWait == 0 {
				errWait = r.opts.ErrorBackoff
			} else {
				errWait = min(2*errWait, r.opts.ErrorBackoffMax)
			}
			wait, wakeable = errWait, false
			idle = r.opts.PollMin
		case published > 0 && cur.full(r.opts.BatchSize):
			errWait, idle = 0, r.opts.PollMin
		case published > 0:
			errWait, idle = 0, r.opts.PollMin
			wait = r.opts.PollMin
		case recheck:
			// The claim after taking the lock found nothing either: wait
			// as decided before it.
			errWait = 0
			wait = lastWait
		default:
			// Nothing published: an empty outbox, or rows that must wait
			// (held by another relay, set aside).
			errWait = 0
			wait = idle
			idle = min(2*idle, r.opts.PollMax)
		}
		recheck = false
		if wait <= 0 {
			continue
		}
		// Nothing is held while waiting.
		_ = finishBehind() // recorded and logged; the wait is decided already
		abandonAhead()
		if wakeable && listening.healthy() {
			if !safe && wait >= armMinWait {
				switch wl.arm(ctx) {
				case armDone:
					// R3: claim once more, under the lock, before waiting.
					recheck, lastWait = true, wait
					continue
				case armOpen:
					// A transaction that wrote is still open and will not
					// notify: claim again soon.
					wait = min(wait, waitLockRetry)
				}
			}
		} else if wl.held {
			wl.unlock(ctx) // no notification would wake it
		}
		r.waiting.Store(safe && wl.safe())
		woken, ok := r.sleep(ctx, wait, wakeable)
		r.waiting.Store(false)
		if !ok {
			return nil
		}
		if woken {
			idle = r.opts.PollMin
		} else {
			wl.check(ctx) // no wake-up: is the lock still held?
		}
	}
}

// runBatch publishes cur and returns how many of its rows were published.
// Meanwhile it finishes the batch behind (its log lines included) and, when
// cur was a full batch with rows to publish and not contended, makes sure a
// batch claimed ahead of cur is being published: *spare, claimed while the
// batch behind was in flight, launched now (less its rows of entities the
// batch behind did not fully confirm), or else a batch claimed now. Of that
// batch, the rows of entities cur does not hold go out at once; it is stored
// in *next, its rows of entities cur did not fully confirm held back. When
// that batch is full and not contended either, the one after it is claimed
// too and stored in *spare, not published yet. cur's settlement becomes
// the batch behind. The error is cur's publish failure, or a failure of the
// work done meanwhile.
func (r *Relay) runBatch(ctx context.Context, cur *prepared, next, spare **prepared, behind **settled) (int, error) {
	// The batch is not cut off by ctx: it ends with its lease.
	cctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), cur.claimedAt.Add(r.opts.ClaimTTL))
	defer cancel()

	var (
		aheadErr error
		ahead    *prepared // published beside cur
		after    *prepared // claimed after ahead, for the next call
		done     = make(chan struct{})
	)
	prev := *behind
	*behind = nil
	if sp := *spare; sp != nil {
		*spare = nil
		if ctx.Err() != nil {
			r.abandon(ctx, sp)
		} else {
			// Claimed while prev was in flight: prev has settled now.
			if prev != nil {
				sp.hold(prev.blocked)
			}
			ahead = sp
			r.launchEarly(ctx, ahead, cur.keep)
		}
	}
	go func() {
		defer close(done)
		if prev != nil {
			r.logConfirmed(ctx, prev.sent)
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
			aheadErr = r.conclude(*prev, nil, r.finish(fctx, *prev))
			cancel()
		}
		if aheadErr != nil || ctx.Err() != nil {
			return
		}
		if ahead == nil && cur.full(r.opts.BatchSize) && len(cur.keep) > 0 && !cur.contended {
			if ahead, aheadErr = r.prepareUncancelled(ctx, cur.keep); ahead == nil {
				return
			}
			r.launchEarly(ctx, ahead, cur.keep)
		}
		if aheadErr == nil && ahead.full(r.opts.BatchSize) && len(ahead.keep) > 0 && !ahead.contended && ctx.Err() == nil {
			held := make([]claimedRow, 0, len(cur.keep)+len(ahead.keep))
			after, aheadErr = r.prepareUncancelled(ctx, append(append(held, cur.keep...), ahead.keep...))
		}
	}()
	s, pubErr := r.publishPrepared(cctx, cur, true)
	<-done

	if pubErr != nil {
		// The transport failed: the batches ahead publish nothing more.
		for _, p := range []*prepared{ahead, after} {
			if p != nil {
				r.abandon(ctx, p)
			}
		}
		r.logConfirmed(ctx, s.sent)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
		defer cancel()
		return len(s.done), r.conclude(s, pubErr, r.finish(fctx, s))
	}
	if ahead != nil {
		ahead.hold(s.blocked)
		*next = ahead
	}
	*spare = after
	*behind = &s
	return len(s.done), aheadErr
}

// launchEarly starts publishing the rows of p whose entities have no row in
// before (the batch being published): their order does not depend on how
// before ends. p's other rows wait for before to settle (Relay.runBatch
// holds back those of entities before did not fully confirm).
func (r *Relay) launchEarly(ctx context.Context, p *prepared, before []claimedRow) {
	busy := make(map[string]bool, len(before))
	for _, row := range before {
		busy[row.entityKey] = true
	}
	early := map[int64]bool{}
	var rows []claimedRow
	for _, row := range p.keep {
		if !busy[row.entityKey] {
			early[row.id] = true
			rows = append(rows, row)
		}
	}
	if len(rows) == 0 {
		return
	}
	p.early, p.earlyRows, p.earlyDone = early, rows, make(chan struct{})
	go func() {
		defer close(p.earlyDone)
		// Like every batch, it is not cut off by ctx: it ends with its lease.
		cctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), p.claimedAt.Add(r.opts.ClaimTTL))
		defer cancel()
		p.earlyOut = r.publishBatch(cctx, rows)
	}()
}

// abandon ends a batch claimed ahead without publishing more of it: the
// part that went early is awaited and settled, the rest is released.
func (r *Relay) abandon(ctx context.Context, p *prepared) {
	s, err := r.publishPrepared(context.WithoutCancel(ctx), p, false)
	r.logConfirmed(ctx, s.sent)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	_ = r.conclude(s, err, r.finish(fctx, s)) // recorded and logged
}

// prepareUncancelled prepares a batch without letting ctx cut the claim
// short (a claim cut off after it committed would leave rows leased to no
// one until the lease ends); ClaimTTL bounds it.
func (r *Relay) prepareUncancelled(ctx context.Context, ahead []claimedRow) (*prepared, error) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.ClaimTTL)
	defer cancel()
	return r.prepare(pctx, ahead)
}

// sleep waits d, or until ctx is done (ok false), or until Wake when wakeable.
func (r *Relay) sleep(ctx context.Context, d time.Duration, wakeable bool) (woken, ok bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	var wake <-chan struct{}
	if wakeable {
		wake = r.wake
	}
	select {
	case <-ctx.Done():
		return false, false
	case <-t.C:
		return false, true
	case <-wake:
		return true, true
	}
}
