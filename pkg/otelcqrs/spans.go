package otelcqrs

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/gocqrs/gocqrs/pkg/tracectx"
)

// StartWrite starts the "cqrs.outbox.write" span of one outbox message,
// child of the span in ctx (or, when ctx has none, of the trace context
// package tracectx carries). The returned context carries it: store
// [Traceparent] of that context in the row. End the span once the message
// is written.
func StartWrite(ctx context.Context, cqrsID, pk, signal string) (context.Context, trace.Span) {
	if !Enabled() {
		return ctx, noSpan
	}
	parent := ctx
	if !trace.SpanContextFromContext(ctx).IsValid() {
		parent = withRemoteParent(ctx, tracectx.Traceparent(ctx), tracectx.Tracestate(ctx))
	}
	ctx, span := Tracer().Start(parent, SpanOutboxWrite, trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String(AttrCQRSID, cqrsID),
			attribute.String(AttrPK, pk),
			attribute.String(AttrSignal, signal),
		)
	}
	return ctx, span
}

// StartPublish starts the "cqrs.relay.publish" span of one message, child
// of the traceparent (and tracestate) get returns for the message's
// headers. It returns nil when no TracerProvider records the span, so that
// a relay without OpenTelemetry does no more work; [EndPublish] takes nil.
func StartPublish(ctx context.Context, get func(string) string, cqrsID, routingKey, outboxID string) trace.Span {
	if !Enabled() {
		return nil
	}
	tp := get(tracectx.HeaderTraceparent)
	ts := ""
	if tp != "" {
		ts = get(tracectx.HeaderTracestate)
	}
	_, span := Tracer().Start(withRemoteParent(ctx, tp, ts), SpanRelayPublish, trace.WithSpanKind(trace.SpanKindProducer))
	if !span.IsRecording() {
		span.End()
		return nil
	}
	span.SetAttributes(
		attribute.String(AttrCQRSID, cqrsID),
		attribute.String(AttrRoutingKey, routingKey),
		attribute.String(AttrOutboxID, outboxID),
	)
	return span
}

// EndPublish ends a span of [StartPublish], with an error status when err
// is not nil. A nil span is ignored.
func EndPublish(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// StartApply starts the "cqrs.replica.apply" span of one delivered
// message, child of the trace context ctx carries (package tracectx, set
// from the message headers; without one, of the span in ctx). revision < 0
// means the message has none. The returned context carries the span, for
// the replica's hooks.
func StartApply(ctx context.Context, cqrsID, pk string, revision int64) (context.Context, trace.Span) {
	if !Enabled() {
		return ctx, noSpan
	}
	ctx, span := Tracer().Start(withRemoteParent(ctx, tracectx.Traceparent(ctx), tracectx.Tracestate(ctx)), SpanReplicaApply, trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(attribute.String(AttrCQRSID, cqrsID), attribute.String(AttrPK, pk))
		if revision >= 0 {
			span.SetAttributes(attribute.Int64(AttrRevision, revision))
		}
	}
	return ctx, span
}

// EndApply ends a span of [StartApply] with the apply's outcome, or with an
// error status when err is not nil.
func EndApply(span trace.Span, outcome string, err error) {
	if span.IsRecording() {
		if outcome != "" {
			span.SetAttributes(attribute.String(AttrOutcome, outcome))
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}
