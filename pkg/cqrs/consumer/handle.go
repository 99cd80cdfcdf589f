package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/otelcqrs"
	"github.com/gocqrs/gocqrs/pkg/tracectx"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// errNack makes the router nack a message without logging an error: it
// wraps context.Canceled, which the router treats as a quiet failure.
var errNack = fmt.Errorf("consumer: message handed back to the broker: %w", context.Canceled)

// handler returns the router handler of one subscription. A nil return acks
// the message, an error nacks it.
func (c *Consumer) handler(sub transports.Subscription) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		return c.process(msg.Context(), sub, msg)
	}
}

func (c *Consumer) process(ctx context.Context, sub transports.Subscription, msg *message.Message) error {
	c.stats.received.Add(1)
	routingKey := msg.Metadata.Get(transports.MetaRoutingKey)
	p, err := wire.Decode(msg.Payload)
	if err != nil {
		return c.undecodable(ctx, msg, routingKey, err)
	}
	attrs := payloadAttrs(p, routingKey)
	// The master's W3C trace context, when the message carries one, is in
	// the log lines and in the context the replica's hooks run with.
	ctx = tracectx.FromHeaders(ctx, msg.Metadata.Get)
	if tp := tracectx.Traceparent(ctx); tp != "" {
		attrs = append(attrs, slog.String(tracectx.HeaderTraceparent, tp))
		if ts := tracectx.Tracestate(ctx); ts != "" {
			attrs = append(attrs, slog.String(tracectx.HeaderTracestate, ts))
		}
	}
	if c.log.Enabled(ctx, slog.LevelDebug) {
		c.log.LogAttrs(ctx, slog.LevelDebug, "CQRS is received", attrs...)
	}

	if !c.consumed[p.CQRSID] {
		c.stats.noModel.Add(1)
		c.log.Error(fmt.Sprintf("Model for cqrs_id %s is not found", p.CQRSID), attrs.args()...)
		return nil
	}
	c.observe(Event{Kind: EventReceived, CQRSID: p.CQRSID})
	if p.Expires != nil && !c.now().Before(*p.Expires) {
		return c.deadLetter(ctx, p, attrs, "expired")
	}

	direct := sub.Direct || (sub.CQRSID == "" && routingKey == transports.DirectKey(c.queue, p.CQRSID))
	dl := replica.Delivery{Payload: p, Direct: direct}
	if c.batch != nil {
		if ok, err := c.batch.submit(msg, dl, attrs); ok {
			return err // detached: the router's ack no longer reaches the broker
		}
	}
	// A message being applied is finished even when shutdown starts.
	start := time.Now()
	actx, span := startApplySpan(context.WithoutCancel(ctx), p)
	res, err := c.ap.Apply(actx, dl)
	took := time.Since(start)
	otelcqrs.EndApply(span, string(res.Outcome), err)
	if err == nil {
		c.applied(p.CQRSID, res, took, attrs)
		return nil
	}
	if errors.Is(err, replica.ErrUnknownModel) {
		c.stats.noModel.Add(1)
		c.log.Error(fmt.Sprintf("Model for cqrs_id %s is not found", p.CQRSID), attrs.args("error", err.Error())...)
		return nil
	}
	c.stats.failed.Add(1)
	c.observe(Event{Kind: EventFailed, CQRSID: p.CQRSID, Duration: took})
	c.log.Warn("CQRS is failed", attrs.args("error", err.Error())...)
	if p.Retries >= c.maxRetries {
		return c.deadLetter(ctx, p, attrs, "retries exhausted")
	}
	return c.requeue(ctx, msg, p, attrs)
}

// undecodable handles a body wire.Decode rejected.
func (c *Consumer) undecodable(ctx context.Context, msg *message.Message, routingKey string, err error) error {
	var de *wire.DecodeError
	if !errors.As(err, &de) {
		de = &wire.DecodeError{Reason: wire.ReasonInvalidJSON, Err: err}
	}
	body := string(msg.Payload)
	switch de.Reason {
	case wire.ReasonMissingKey:
		c.stats.missingKey.Add(1)
		c.log.Error(fmt.Sprintf("CQRS couldn't proceed, %s isn't found in body", de.Key),
			"routing_key", routingKey, "body", body)
		return nil
	case wire.ReasonBadValue:
		// django-cqrs would accept the body and fail later; it cannot be
		// requeued with a new retries count, so it is dead-lettered as is.
		id := bodyCQRSID(msg.Payload)
		if !c.consumed[id] {
			c.stats.noModel.Add(1)
			c.log.Error(fmt.Sprintf("Model for cqrs_id %s is not found", id),
				"routing_key", routingKey, "error", de.Error(), "body", body)
			return nil
		}
		c.stats.failed.Add(1)
		c.observe(Event{Kind: EventFailed, CQRSID: id})
		attrs := logAttrs{slog.String("cqrs_id", id), slog.String("routing_key", routingKey), slog.String("error", de.Error())}
		c.log.Warn("CQRS is failed", attrs.args("body", body)...)
		return c.publishDeadLetter(ctx, id, msg.Payload, attrs, "undecodable value")
	default:
		c.stats.unparseable.Add(1)
		c.log.Error("CQRS couldn't be parsed", "routing_key", routingKey, "error", de.Error(), "body", body)
		return nil
	}
}

// bodyCQRSID returns the body's cqrs_id when it is a string, "" otherwise.
func bodyCQRSID(body []byte) string {
	var probe struct {
		CQRSID any `json:"cqrs_id"`
	}
	if json.Unmarshal(body, &probe) != nil {
		return ""
	}
	id, _ := probe.CQRSID.(string)
	return id
}

// skipReasons are the log messages of the outcomes that acknowledge a
// message without changing the replica.
var skipReasons = map[replica.Outcome]string{
	replica.OutcomeSkippedStale:     "CQRS is skipped: Wrong CQRS sync order",
	replica.OutcomeSkippedDuplicate: "CQRS is skipped: Received duplicate CQRS data",
	replica.OutcomeSkippedTombstone: "CQRS is skipped: row deleted by a newer DELETE (tombstone)",
	replica.OutcomeSkippedIndirect:  "CQRS is skipped: broadcast SYNC on a model that takes only direct syncs",
}

// applied logs and counts a successful Apply. A DELETE of a missing row is
// "applied", as django-cqrs acks it; any outcome that did not change the
// replica is "skipped".
func (c *Consumer) applied(cqrsID string, res replica.Result, took time.Duration, attrs logAttrs) {
	c.stats.outcome(res.Outcome)
	ctx := context.Background()
	if res.Outcome.Applied() || res.Outcome == replica.OutcomeDeleteMissing {
		c.stats.applied.Add(1)
		c.observe(Event{Kind: EventApplied, CQRSID: cqrsID, Outcome: res.Outcome, Gap: res.Gap, Duration: took})
		if !c.log.Enabled(ctx, slog.LevelInfo) {
			return
		}
		// The line's attributes are put together on the stack: attrs is
		// the message's own and stays as it is.
		var line [16]slog.Attr
		attrs = append(append(line[:0], attrs...), slog.String("outcome", string(res.Outcome)))
		if res.Gap > 0 {
			attrs = append(attrs, slog.Int64("lost_packages", res.Gap))
		}
		if res.Downgrade {
			attrs = append(attrs, slog.Bool("downgrade", true))
		}
		c.log.LogAttrs(ctx, slog.LevelInfo, "CQRS is applied", attrs...)
		return
	}
	c.stats.skipped.Add(1)
	c.observe(Event{Kind: EventSkipped, CQRSID: cqrsID, Outcome: res.Outcome, Duration: took})
	if !c.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	msg, ok := skipReasons[res.Outcome]
	if !ok {
		msg = "CQRS is skipped"
	}
	var line [16]slog.Attr
	attrs = append(append(line[:0], attrs...), slog.String("outcome", string(res.Outcome)))
	if res.Outcome == replica.OutcomeSkippedStale {
		attrs = append(attrs, slog.Int64("stored_revision", res.StoredRevision))
	}
	c.log.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
}

// requeue holds msg (decoded as p) for RetryDelay, then publishes a copy with
// retries+1 on the replica's own key; the original is acked once the copy is
// out. The hold is detached from the subscription when possible (held.go);
// otherwise it happens here, blocking the subscription.
func (c *Consumer) requeue(ctx context.Context, msg *message.Message, p *wire.Payload, attrs logAttrs) error {
	if c.holdDetached(msg, p, attrs) {
		return nil // the router's ack no longer reaches the broker
	}
	if err := hold(ctx, c.retryDelay); err != nil {
		c.stats.nacked.Add(1)
		c.log.Info("CQRS is handed back: shutting down during the retry delay", attrs.args()...)
		return errNack
	}
	if err := c.publishRequeue(p, attrs); err != nil {
		return c.nackAfterDelay(ctx, err, attrs)
	}
	return nil
}

// publishRequeue publishes p's copy with retries+1 on the replica's own key
// and counts it as requeued.
func (c *Consumer) publishRequeue(p *wire.Payload, attrs logAttrs) error {
	cp := *p
	cp.Retries = p.Retries + 1
	body, err := wire.Encode(&cp)
	if err != nil {
		// Decode's output always encodes; this is a bug, not a bad message.
		return fmt.Errorf("encode requeue copy: %w", err)
	}
	key := transports.DirectKey(c.queue, p.CQRSID)
	// Counted before publishing: the copy may be consumed before Publish returns.
	c.stats.requeued.Add(1)
	m := message.NewMessage(watermill.NewUUID(), body)
	traceOnto(m, attrs)
	if err := c.pub.Publish(key, m); err != nil {
		c.stats.requeued.Add(-1)
		return fmt.Errorf("publish requeue copy on %q: %w", key, err)
	}
	c.observe(Event{Kind: EventRequeued, CQRSID: p.CQRSID})
	c.log.Warn("CQRS is requeued", attrs.args("requeue_routing_key", key, "requeue_retries", cp.Retries)...)
	return nil
}

// deadLetter publishes p, re-encoded with its retries unchanged, to the
// dead-letter key.
func (c *Consumer) deadLetter(ctx context.Context, p *wire.Payload, attrs logAttrs, reason string) error {
	body, err := wire.Encode(p)
	if err != nil {
		return c.nackAfterDelay(ctx, fmt.Errorf("encode dead letter: %w", err), attrs)
	}
	return c.publishDeadLetter(ctx, p.CQRSID, body, attrs, reason)
}

func (c *Consumer) publishDeadLetter(ctx context.Context, cqrsID string, body []byte, attrs logAttrs, reason string) error {
	if err := c.sendDeadLetter(cqrsID, body, attrs, reason); err != nil {
		return c.nackAfterDelay(ctx, err, attrs)
	}
	return nil
}

// sendDeadLetter publishes body to the dead-letter key of cqrsID, with the
// dead-letter expiration, and counts it.
func (c *Consumer) sendDeadLetter(cqrsID string, body []byte, attrs logAttrs, reason string) error {
	key := transports.DeadLetterKey(c.dlq, cqrsID)
	m := message.NewMessage(watermill.NewUUID(), body)
	m.Metadata.Set(transports.MetaDeadLetterReason, reason)
	traceOnto(m, attrs)
	if c.ttl > 0 {
		ms := c.ttl.Milliseconds()
		if ms < 1 {
			ms = 1
		}
		m.Metadata.Set(transports.MetaExpiration, strconv.FormatInt(ms, 10))
	}
	if err := c.pub.Publish(key, m); err != nil {
		return fmt.Errorf("publish dead letter on %q: %w", key, err)
	}
	c.stats.deadLettered.Add(1)
	c.observe(Event{Kind: EventDeadLettered, CQRSID: cqrsID})
	c.log.Warn("CQRS is added to dead letter queue", attrs.args("reason", reason, "dead_letter_key", key)...)
	return nil
}

// nackAfterDelay logs a copy that could not be published and hands the
// original back to the broker after RetryDelay, so that a broker that
// redelivers at once is not hammered.
func (c *Consumer) nackAfterDelay(ctx context.Context, err error, attrs logAttrs) error {
	c.stats.nacked.Add(1)
	c.log.Error("CQRS is handed back to the broker", attrs.args("error", err.Error())...)
	_ = hold(ctx, c.retryDelay)
	return errNack
}

// hold waits d, or returns ctx's error when it ends first.
func hold(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// logAttrs are a message's log attributes.
type logAttrs []slog.Attr

// args returns the attributes followed by extra key-value pairs, for the
// slog calls of the rare paths (failures, retries, shutdown).
func (a logAttrs) args(extra ...any) []any {
	out := make([]any, 0, len(a)+len(extra))
	for _, at := range a {
		out = append(out, at)
	}
	return append(out, extra...)
}

// traceparent returns the traceparent among the attributes, "" if none.
func (a logAttrs) traceparent() string { return a.get(tracectx.HeaderTraceparent) }

// tracestate returns the tracestate among the attributes, "" if none.
func (a logAttrs) tracestate() string { return a.get(tracectx.HeaderTracestate) }

// get returns the string value of the attribute key, "" if none.
func (a logAttrs) get(key string) string {
	for _, at := range a {
		if at.Key == key {
			return at.Value.String()
		}
	}
	return ""
}

// payloadAttrs are the log attributes of a message, django-cqrs's
// "pk = X (cqrs_id), correlation_id = Y" plus revision and retries. Room is
// left for the attributes added later (traceparent, outcome, ...).
func payloadAttrs(p *wire.Payload, routingKey string) logAttrs {
	attrs := make(logAttrs, 0, 11)
	attrs = append(attrs,
		slog.String("cqrs_id", p.CQRSID),
		slog.String("signal_type", string(p.SignalType)),
		slog.String("pk", valueText(p.InstancePK)),
	)
	if rev, ok := p.Revision(); ok {
		attrs = append(attrs, slog.Int64("revision", rev))
	}
	return append(attrs,
		slog.String("correlation_id", valueText(p.CorrelationID)),
		slog.Int("retries", p.Retries),
		slog.String("routing_key", routingKey),
	)
}

// valueText renders a decoded JSON value for logs: strings as they are,
// null as "None" (as django-cqrs logs it), anything else as JSON.
func valueText(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case string:
		return x
	case json.Number:
		return x.String()
	}
	b, err := wire.MarshalValue(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
