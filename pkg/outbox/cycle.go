package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// finishTimeout bounds the statements that end a cycle (delete, release),
// which run even when the cycle's context is cancelled.
const finishTimeout = 15 * time.Second

// RunOnce runs one cycle: claim a batch, publish it in id order, delete what
// was published and release the rest. It returns the number of messages
// published. A message the broker rejects (the publish error wraps
// transports.ErrRejected: unroutable, nacked, or as RelayOptions.Rejected
// says) is set aside: its row gets attempts+1 and last_error, is not claimed
// again for ErrorBackoff (doubling per attempt up to ErrorBackoffMax), and
// its entity's later rows wait behind it; the other entities go on. Any other
// publish error (the transport is down) stops the batch: the failed row gets
// attempts+1 and last_error, the rows after it are released, and the error
// is returned.
// When ctx is cancelled mid-batch, the rows already published are still
// deleted and the rest released.
func (r *Relay) RunOnce(ctx context.Context) (published int, err error) {
	return r.cycle(ctx)
}

func (r *Relay) cycle(ctx context.Context) (int, error) {
	defer r.cycles.Add(1)
	rows, err := r.claim(ctx)
	if err != nil {
		err = fmt.Errorf("outbox: claim batch from %s: %w", r.n.raw, err)
		r.fail(err)
		return 0, err
	}
	if len(rows) == 0 {
		return 0, nil
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].id < rows[j].id })

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()

	keep, drop, err := r.inEntityOrder(ctx, rows)
	if err != nil {
		err = fmt.Errorf("outbox: check entity order in %s: %w", r.n.raw, err)
		r.fail(err)
		_ = r.finish(fctx, nil, ids(rows), 0, nil) // logged there
		return 0, err
	}
	if len(drop) > 0 {
		r.released.Add(int64(len(drop)))
		r.log.Debug("outbox: released rows behind another relay's lower row of the same entity", "rows", len(drop))
	}

	var (
		done     []int64
		failed   int64
		pubErr   error
		pending  = drop
		rejected []rejection
		blocked  map[string]bool // entities with a rejected row in this batch
	)
	for i, row := range keep {
		if blocked[row.entityKey] {
			pending = append(pending, row.id) // stays behind its entity's rejected row
			continue
		}
		if err := ctx.Err(); err != nil {
			pending = append(pending, ids(keep[i:])...)
			pubErr = fmt.Errorf("outbox: batch stopped after %d of %d rows: %w", i, len(keep), err)
			if errors.Is(err, context.DeadlineExceeded) {
				r.log.Warn("outbox: batch outlived its lease; the rest is released (lower BatchSize or raise ClaimTTL)",
					"published", i, "released", len(keep)-i)
			}
			break
		}
		if err := r.publish(ctx, row); err != nil {
			r.failed.Add(1)
			if r.opts.Rejected(err) {
				// The broker refused this message only: set it aside and go
				// on with the other entities.
				if blocked == nil {
					blocked = map[string]bool{}
				}
				blocked[row.entityKey] = true
				wait := r.setAsideFor(int(row.attempts) + 1)
				rejected = append(rejected, rejection{row.id, fmt.Errorf("outbox: publish row %d (cqrs_id %q, topic %q): %w", row.id, row.cqrsID, row.topic, err), wait})
				r.rejected.Add(1)
				r.log.Error("outbox: broker rejected a message; the row stays, set aside, and its entity's later rows wait behind it",
					"outbox_id", row.id, "cqrs_id", row.cqrsID, "entity_key", row.entityKey, "topic", row.topic,
					"attempts", row.attempts+1, "retry_in", wait, "error", err)
				continue
			}
			failed = row.id
			pending = append(pending, ids(keep[i+1:])...)
			pubErr = fmt.Errorf("outbox: publish row %d (cqrs_id %q, topic %q): %w", row.id, row.cqrsID, row.topic, err)
			r.log.Error("outbox: publish failed; the row stays and is retried",
				"outbox_id", row.id, "cqrs_id", row.cqrsID, "entity_key", row.entityKey, "topic", row.topic,
				"attempts", row.attempts+1, "error", err)
			break
		}
		done = append(done, row.id)
	}
	r.published.Add(int64(len(done)))
	finErr := r.finish(fctx, done, pending, failed, pubErr)
	for _, rj := range rejected {
		if err := r.markFailed(fctx, rj.id, rj.err, rj.wait); err != nil {
			finErr = errors.Join(finErr, fmt.Errorf("outbox: record rejection of row %d in %s: %w", rj.id, r.n.raw, err))
		}
		r.recordError(rj.err)
	}
	switch {
	case pubErr != nil:
		// A publish failure was logged with its row; a stop was the caller's.
		r.recordError(pubErr)
		return len(done), pubErr
	case finErr != nil:
		r.recordError(finErr) // finish logged it
		return len(done), finErr
	}
	return len(done), nil
}

// fail records a cycle's error.
func (r *Relay) fail(err error) {
	r.recordError(err)
	if !errors.Is(err, context.Canceled) {
		r.log.Warn("outbox: relay cycle failed", "error", err)
	}
}

// finish deletes the published rows, marks the failed one and releases the
// rest. Errors are logged and returned (the rows' leases expire anyway).
func (r *Relay) finish(ctx context.Context, done, release []int64, failed int64, cause error) error {
	var errs []error
	if len(done) > 0 {
		if err := r.deleteRows(ctx, done); err != nil {
			errs = append(errs, fmt.Errorf("outbox: delete %d published rows from %s (they will be published again): %w", len(done), r.n.raw, err))
		}
	}
	if failed != 0 {
		if err := r.markFailed(ctx, failed, cause, 0); err != nil {
			errs = append(errs, fmt.Errorf("outbox: record failure of row %d in %s: %w", failed, r.n.raw, err))
		}
	}
	if len(release) > 0 {
		if err := r.releaseRows(ctx, release); err != nil {
			errs = append(errs, fmt.Errorf("outbox: release %d rows in %s: %w", len(release), r.n.raw, err))
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
// below the entity's lowest row that this claim does not hold (held by
// another relay, or claimed by no one since) may go.
func (r *Relay) inEntityOrder(ctx context.Context, rows []claimedRow) (keep []claimedRow, drop []int64, err error) {
	mine := make(map[int64]bool, len(rows))
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

// publish sends one row as a Watermill message on its topic.
func (r *Relay) publish(ctx context.Context, row claimedRow) error {
	msg := message.NewMessage(watermill.NewUUID(), message.Payload(row.body))
	for k, v := range r.opts.Headers {
		msg.Metadata.Set(k, v)
	}
	if row.headers.Valid && row.headers.String != "" {
		var h map[string]string
		if err := json.Unmarshal([]byte(row.headers.String), &h); err != nil {
			return fmt.Errorf("headers column is not a JSON object of strings: %w", err)
		}
		for k, v := range h {
			msg.Metadata.Set(k, v)
		}
	}
	msg.Metadata.Set(MetadataCQRSID, row.cqrsID)
	msg.Metadata.Set(MetadataEntityKey, row.entityKey)
	msg.Metadata.Set(MetadataOutboxID, strconv.FormatInt(row.id, 10))
	msg.SetContext(ctx)
	return r.pub.Publish(row.topic, msg)
}

// rejection is a row the broker refused, to set aside for wait.
type rejection struct {
	id   int64
	err  error
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
