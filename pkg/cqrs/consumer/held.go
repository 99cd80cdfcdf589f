package consumer

import (
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// holdDetached detaches msg, a failed message to requeue, from its
// subscription and holds it for RetryDelay in a goroutine of its own, so that
// the handler returns at once and the subscription goes on with the next
// message. It returns false, with msg still attached, when the delay queue
// already holds DelayQueueMaxSize messages, when Run is ending, or when the
// transport cannot detach msg: the caller then holds msg itself.
func (c *Consumer) holdDetached(msg *message.Message, p *wire.Payload, attrs logAttrs) bool {
	select {
	case c.slots <- struct{}{}:
	default:
		c.log.Info("CQRS is delayed", attrs.args("delay", c.retryDelay.String(), "hold", "handler",
			"hold_reason", "delay queue full", "delay_queue_max_size", cap(c.slots))...)
		return false
	}
	c.heldMu.Lock()
	if c.heldClosed {
		c.heldMu.Unlock()
		<-c.slots
		c.log.Info("CQRS is delayed", attrs.args("delay", c.retryDelay.String(), "hold", "handler",
			"hold_reason", "shutting down")...)
		return false
	}
	c.held.Add(1)
	c.heldMu.Unlock()

	settle, ok, err := transports.Detach(msg)
	if !ok {
		c.held.Done()
		<-c.slots
		reason := "transport cannot detach"
		if err != nil {
			reason = "detach failed: " + err.Error()
		}
		c.log.Info("CQRS is delayed", attrs.args("delay", c.retryDelay.String(), "hold", "handler",
			"hold_reason", reason)...)
		return false
	}
	c.log.Info("CQRS is delayed", attrs.args("delay", c.retryDelay.String(), "hold", "detached")...)
	go c.holdForRetry(settle, p, attrs)
	return true
}

// holdForRetry waits RetryDelay, publishes the retries+1 copy and acks the
// detached original on the broker. When Run ends (once its router stopped),
// or when the copy cannot be published, the original is handed back to the
// broker instead.
func (c *Consumer) holdForRetry(settle transports.Settle, p *wire.Payload, attrs logAttrs) {
	defer c.held.Done()
	defer func() { <-c.slots }()
	if err := hold(c.holdCtx, c.retryDelay); err != nil {
		c.stats.nacked.Add(1)
		c.log.Info("CQRS is handed back: shutting down during the retry delay", attrs.args()...)
		c.settle(settle, false, attrs)
		return
	}
	if err := c.publishRequeue(p, attrs); err != nil {
		c.stats.nacked.Add(1)
		c.log.Error("CQRS is handed back to the broker", attrs.args("error", err.Error())...)
		c.settle(settle, false, attrs)
		return
	}
	c.settle(settle, true, attrs)
}

// settle acks (ack) or hands back a detached message on the broker. A
// failure is logged: the broker then still holds the message unacknowledged
// and redelivers it when the subscription ends, a duplicate the revision
// check absorbs.
func (c *Consumer) settle(settle transports.Settle, ack bool, attrs logAttrs) {
	if err := settle(ack); err != nil {
		c.log.Error("CQRS could not be settled on the broker", attrs.args("ack", ack, "error", err.Error())...)
	}
}

// waitHeld stops holding new messages outside their handler and waits until
// every held one was settled. Run calls it once holdCtx is cancelled.
func (c *Consumer) waitHeld() {
	c.heldMu.Lock()
	c.heldClosed = true
	c.heldMu.Unlock()
	c.held.Wait()
}
