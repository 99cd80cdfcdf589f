package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/trace"

	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/otelcqrs"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// BatchApplier applies several messages in one replica transaction;
// *replica.Engine is one. errs[i] is delivery i's error, with Apply's
// meaning; a non-nil err fails the whole batch (nothing applied).
type BatchApplier interface {
	ApplyBatch(ctx context.Context, dls []replica.Delivery) (results []replica.Result, errs []error, err error)
}

// DefaultBatchMaxInFlight is Options.BatchMaxInFlight when it is 0: room
// for the batch being settled, the one being applied and the one being
// collected.
func DefaultBatchMaxInFlight(batchSize int) int { return 3 * batchSize }

// DefaultBatchWait is how long a batch waits for more messages when
// Options.BatchWait is 0.
const DefaultBatchWait = 20 * time.Millisecond

// batchItem is one detached message waiting in the collector.
type batchItem struct {
	dl     replica.Delivery
	attrs  logAttrs
	settle transports.Settle
	at     time.Time // when it was collected
}

// batcher collects detached messages and applies them in batches: up to
// size messages, or whatever arrived within wait of the oldest. At most
// cap(inflight) messages are detached and not settled yet; handlers wait
// for room. Batches are applied one after the other by a single goroutine
// (the collector), so a later batch never overtakes an earlier one; a
// second goroutine (the concluder) settles, logs and counts each applied
// batch's messages, in order, while the collector applies the next one.
type batcher struct {
	c        *Consumer
	ap       BatchApplier
	size     int
	wait     time.Duration
	inflight chan struct{}

	mu     sync.Mutex
	queue  []*batchItem
	closed bool // draining: collect nothing more

	wake     chan struct{} // capacity 1: the queue changed
	applied  chan *appliedBatch
	stopping chan struct{} // closed when draining starts
	released chan struct{} // closed once the router was told to stop
	done     chan struct{} // closed when everything collected was concluded
}

// appliedBatch is a batch the collector applied, waiting for the concluder.
type appliedBatch struct {
	items []*batchItem
	res   []replica.Result
	errs  []error
	err   error // the whole batch failed
	took  time.Duration
	spans []trace.Span
}

func newBatcher(c *Consumer, ap BatchApplier, size int, wait time.Duration, maxInFlight int) *batcher {
	return &batcher{
		c: c, ap: ap, size: size, wait: wait,
		inflight: make(chan struct{}, maxInFlight),
		wake:     make(chan struct{}, 1),
		applied:  make(chan *appliedBatch, 1),
		stopping: make(chan struct{}),
		released: make(chan struct{}),
		done:     make(chan struct{}),
	}
}

func (b *batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// submit detaches msg and queues it for the next batch; ok is false when the
// transport cannot detach msg: the caller then applies it alone. When the
// consumer is stopping, msg is handed back to the broker (errNack) once the
// router is told to stop.
func (b *batcher) submit(msg *message.Message, dl replica.Delivery, attrs logAttrs) (ok bool, err error) {
	refuse := func() (bool, error) {
		select {
		case <-b.released:
		case <-msg.Context().Done():
		}
		b.c.stats.nacked.Add(1)
		b.c.log.Info("CQRS is handed back: shutting down", attrs.args()...)
		return true, errNack
	}
	select {
	case b.inflight <- struct{}{}:
	case <-b.stopping:
		return refuse()
	case <-msg.Context().Done():
		return refuse()
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.inflight
		return refuse()
	}
	// Detached and queued under the lock: the subscription delivers its next
	// message as soon as this one is detached, and that one must queue
	// behind it.
	settle, detached, derr := transports.Detach(msg)
	if !detached {
		b.mu.Unlock()
		<-b.inflight
		if derr != nil {
			b.c.log.Warn("CQRS is applied alone: detach failed", attrs.args("error", derr.Error())...)
		}
		return false, nil
	}
	b.queue = append(b.queue, &batchItem{dl: dl, attrs: attrs, settle: settle, at: time.Now()})
	b.mu.Unlock()
	b.signal()
	return true, nil
}

// run starts the concluder and runs the collector: it applies the queue in
// batches until drain was called and the queue is empty, then waits for the
// concluder to finish.
func (b *batcher) run() {
	concluded := make(chan struct{})
	go func() {
		defer close(concluded)
		for ab := range b.applied {
			b.conclude(ab)
		}
	}()
	b.collect()
	close(b.applied)
	<-concluded
	close(b.done)
}

// collect is the collector loop.
func (b *batcher) collect() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		b.mu.Lock()
		n, closed := len(b.queue), b.closed
		var oldest time.Time
		if n > 0 {
			oldest = b.queue[0].at
		}
		b.mu.Unlock()
		if n == 0 {
			if closed {
				return
			}
			<-b.wake
			continue
		}
		if n < b.size && !closed {
			if d := time.Until(oldest.Add(b.wait)); d > 0 {
				timer.Reset(d)
				select {
				case <-b.wake:
					timer.Stop()
					continue
				case <-timer.C:
				}
			}
		}
		b.mu.Lock()
		k := min(len(b.queue), b.size)
		items := make([]*batchItem, k)
		copy(items, b.queue)
		rest := copy(b.queue, b.queue[k:])
		clear(b.queue[rest:])
		b.queue = b.queue[:rest]
		b.mu.Unlock()
		b.apply(items)
	}
}

// drain stops collecting, waits until everything collected was applied and
// settled (or handed back), then lets refused handlers hand theirs back.
// stopRouter is called in between: the subscriptions stay up while the
// last batches are acked.
func (b *batcher) drain(stopRouter func()) {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	close(b.stopping)
	b.signal()
	<-b.done
	stopRouter()
	close(b.released)
}

// apply applies one batch and hands it to the concluder.
func (b *batcher) apply(items []*batchItem) {
	dls := make([]replica.Delivery, len(items))
	for i, it := range items {
		dls[i] = it.dl
	}
	// A batch being applied is finished even when shutdown starts.
	spans := startBatchSpans(items)
	start := time.Now()
	res, errs, err := b.ap.ApplyBatch(context.Background(), dls)
	took := time.Since(start)
	if err == nil && (len(res) != len(items) || len(errs) != len(items)) {
		err = fmt.Errorf("consumer: batch applier returned %d results and %d errors for %d messages", len(res), len(errs), len(items))
	}
	b.applied <- &appliedBatch{items: items, res: res, errs: errs, err: err, took: took, spans: spans}
}

// conclude settles each message of an applied batch as process would.
func (b *batcher) conclude(ab *appliedBatch) {
	if ab.err != nil {
		b.c.log.Warn("CQRS batch failed", "messages", len(ab.items), "error", ab.err.Error())
	}
	for i, it := range ab.items {
		r, e := replica.Result{StoredRevision: -1}, ab.err
		if ab.err == nil {
			r, e = ab.res[i], ab.errs[i]
		}
		otelcqrs.EndApply(ab.spans[i], string(r.Outcome), e)
		b.c.concludeDetached(b, it, r, e, ab.took)
		<-b.inflight
	}
}

// concludeDetached does with a detached message's result what process does
// with an attached one: ack it, or retry or dead-letter it.
func (c *Consumer) concludeDetached(b *batcher, it *batchItem, res replica.Result, err error, took time.Duration) {
	p, attrs := it.dl.Payload, it.attrs
	switch {
	case err == nil:
		c.applied(p.CQRSID, res, took, attrs)
		c.settle(it.settle, true, attrs)
	case errors.Is(err, replica.ErrUnknownModel):
		c.stats.noModel.Add(1)
		c.log.Error(fmt.Sprintf("Model for cqrs_id %s is not found", p.CQRSID), attrs.args("error", err.Error())...)
		c.settle(it.settle, true, attrs)
	default:
		c.stats.failed.Add(1)
		c.observe(Event{Kind: EventFailed, CQRSID: p.CQRSID, Duration: took})
		c.log.Warn("CQRS is failed", attrs.args("error", err.Error())...)
		if p.Retries >= c.maxRetries {
			c.deadLetterDetached(it, "retries exhausted")
			return
		}
		c.requeueDetached(b, it)
	}
}

// deadLetterDetached publishes the dead letter of a detached message and
// acks it; when the copy cannot be published the message is handed back
// after RetryDelay.
func (c *Consumer) deadLetterDetached(it *batchItem, reason string) {
	p, attrs := it.dl.Payload, it.attrs
	body, err := wire.Encode(p)
	if err == nil {
		err = c.sendDeadLetter(p.CQRSID, body, attrs, reason)
	} else {
		err = fmt.Errorf("encode dead letter: %w", err)
	}
	if err == nil {
		c.settle(it.settle, true, attrs)
		return
	}
	c.stats.nacked.Add(1)
	c.log.Error("CQRS is handed back to the broker", attrs.args("error", err.Error())...)
	c.heldMu.Lock()
	if c.heldClosed {
		c.heldMu.Unlock()
		c.settle(it.settle, false, attrs)
		return
	}
	c.held.Add(1)
	c.heldMu.Unlock()
	go func() {
		defer c.held.Done()
		_ = hold(c.holdCtx, c.retryDelay)
		c.settle(it.settle, false, attrs)
	}()
}

// requeueDetached holds a failed detached message for its retry, as
// holdDetached does. When the delay queue is full, the concluder waits for
// room (the collector then applies at most one more batch, as a handler
// holding a message stops its subscription); on shutdown the message is
// handed back instead.
func (c *Consumer) requeueDetached(b *batcher, it *batchItem) {
	attrs := it.attrs
	select {
	case c.slots <- struct{}{}:
	default:
		c.log.Info("CQRS is delayed", attrs.args("delay", c.retryDelay.String(), "hold", "collector",
			"hold_reason", "delay queue full", "delay_queue_max_size", cap(c.slots))...)
		select {
		case c.slots <- struct{}{}:
		case <-b.stopping:
			c.stats.nacked.Add(1)
			c.log.Info("CQRS is handed back: shutting down during the retry delay", attrs.args()...)
			c.settle(it.settle, false, attrs)
			return
		}
	}
	c.heldMu.Lock()
	if c.heldClosed {
		c.heldMu.Unlock()
		<-c.slots
		c.stats.nacked.Add(1)
		c.log.Info("CQRS is handed back: shutting down during the retry delay", attrs.args()...)
		c.settle(it.settle, false, attrs)
		return
	}
	c.held.Add(1)
	c.heldMu.Unlock()
	c.log.Info("CQRS is delayed", attrs.args("delay", c.retryDelay.String(), "hold", "detached")...)
	go c.holdForRetry(it.settle, it.dl.Payload, attrs)
}
