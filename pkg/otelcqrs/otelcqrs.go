// Package otelcqrs makes the outbox write of a master, the relay's publish
// and a replica's apply spans of one OpenTelemetry trace.
//
// It uses the global TracerProvider (otel.GetTracerProvider): until the
// service sets one with otel.SetTracerProvider, every span is a no-op and
// nothing changes. The chain is: the caller's span → "cqrs.outbox.write"
// (started by the master from the context it writes with; its span context
// is stored as the row's traceparent) → "cqrs.relay.publish" (child of the
// row's traceparent) and "cqrs.replica.apply" (child of the delivered
// traceparent). The relay does not rewrite the traceparent a message
// carries, so publish and apply are both children of the write span.
package otelcqrs

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/gocqrs/gocqrs/pkg/tracectx"
)

// ScopeName is the instrumentation scope of gocqrs's tracer.
const ScopeName = "github.com/gocqrs/gocqrs"

// Span names.
const (
	SpanOutboxWrite  = "cqrs.outbox.write"
	SpanRelayPublish = "cqrs.relay.publish"
	SpanReplicaApply = "cqrs.replica.apply"
)

// Attribute keys set on the spans.
const (
	AttrCQRSID     = "cqrs_id"
	AttrPK         = "pk"
	AttrSignal     = "signal"
	AttrRoutingKey = "routing_key"
	AttrOutboxID   = "outbox_id"
	AttrRevision   = "revision"
	AttrOutcome    = "outcome"
)

// defaultProvider is the global TracerProvider before the service sets
// one: a delegating no-op.
var defaultProvider = otel.GetTracerProvider()

// noSpan is the no-op span the Start functions return while no provider
// is set.
var noSpan = trace.SpanFromContext(context.Background())

// Enabled reports whether the service set a TracerProvider. Until it does,
// every span would be a no-op: the Start functions then create none, so
// that a service without OpenTelemetry pays nothing per message.
func Enabled() bool { return otel.GetTracerProvider() != defaultProvider }

// Tracer returns gocqrs's tracer from the global TracerProvider; it is a
// no-op until the service sets a provider.
func Tracer() trace.Tracer {
	return otel.GetTracerProvider().Tracer(ScopeName)
}

// Traceparent returns the W3C trace context to store for ctx: the
// OpenTelemetry span context of ctx when it is valid, otherwise what
// package tracectx carries ("" when neither has one). When the span
// context is the one tracectx carries (no provider is set), tracectx's
// values are returned as they are, tracestate included.
func Traceparent(ctx context.Context) (traceparent, tracestate string) {
	tp, ts := tracectx.Traceparent(ctx), tracectx.Tracestate(ctx)
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		c := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, c)
		if otp := c.Get(tracectx.HeaderTraceparent); otp != "" && otp != tp {
			return otp, c.Get(tracectx.HeaderTracestate)
		}
	}
	return tp, ts
}

// withRemoteParent returns ctx with the W3C trace context of traceparent
// and tracestate as its remote parent span context. ctx is returned as is
// when traceparent is empty or invalid.
func withRemoteParent(ctx context.Context, traceparent, tracestate string) context.Context {
	if traceparent == "" {
		return ctx
	}
	c := propagation.MapCarrier{tracectx.HeaderTraceparent: traceparent}
	if tracestate != "" {
		c[tracectx.HeaderTracestate] = tracestate
	}
	return propagation.TraceContext{}.Extract(ctx, c)
}
