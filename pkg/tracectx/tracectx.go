// Package tracectx carries a W3C trace context (the traceparent and
// tracestate header values) in a context.Context without depending on
// OpenTelemetry.
//
// A master stores the traceparent of the context it writes a change with in
// the outbox row; the relay publishes it as the AMQP (or Kafka) header
// "traceparent"; a replica puts the delivered one back into the context its
// hooks run with. OpenTelemetry users set it from their span context:
//
//	sc := trace.SpanContextFromContext(ctx)
//	tp := fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
//	ctx = tracectx.WithTraceparent(ctx, tp)
package tracectx

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Header (and Watermill metadata) names of the W3C trace context.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// maxTracestateLen bounds a tracestate value (the W3C limit is 32 members
// of at most 256 bytes; 512 bytes is what vendors are asked to propagate).
const maxTracestateLen = 512

type ctxKey struct{}

type traceContext struct {
	parent, state string
}

// Validate reports whether traceparent is a W3C traceparent of version 00:
// "00-" + 32 lowercase hex digits (trace id, not all zero) + "-" + 16
// lowercase hex digits (parent span id, not all zero) + "-" + 2 lowercase
// hex digits (flags).
func Validate(traceparent string) error {
	if len(traceparent) != 55 {
		return fmt.Errorf("tracectx: traceparent %q: want 55 characters (00-<32 hex>-<16 hex>-<2 hex>), got %d", traceparent, len(traceparent))
	}
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || len(parts[0]) != 2 || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return fmt.Errorf("tracectx: traceparent %q: want 00-<32 hex>-<16 hex>-<2 hex>", traceparent)
	}
	names := []string{"version", "trace id", "span id", "flags"}
	for i, p := range parts {
		if !lowerHex(p) {
			return fmt.Errorf("tracectx: traceparent %q: %s %q is not lowercase hex", traceparent, names[i], p)
		}
	}
	if parts[0] != "00" {
		return fmt.Errorf("tracectx: traceparent %q: version %q is not supported (want 00)", traceparent, parts[0])
	}
	if allZero(parts[1]) {
		return fmt.Errorf("tracectx: traceparent %q: trace id is all zero", traceparent)
	}
	if allZero(parts[2]) {
		return fmt.Errorf("tracectx: traceparent %q: span id is all zero", traceparent)
	}
	return nil
}

// ValidateTracestate reports whether tracestate is safe to carry as a
// header value: printable ASCII of at most 512 bytes.
func ValidateTracestate(tracestate string) error {
	if len(tracestate) > maxTracestateLen {
		return fmt.Errorf("tracectx: tracestate is %d bytes, more than %d", len(tracestate), maxTracestateLen)
	}
	for i := 0; i < len(tracestate); i++ {
		if c := tracestate[i]; c < 0x20 || c > 0x7e {
			return errors.New("tracectx: tracestate holds a character that is not printable ASCII")
		}
	}
	return nil
}

// WithTraceparent returns a copy of ctx carrying traceparent (and no
// tracestate). An invalid traceparent (see [Validate]) is not stored: ctx is
// returned unchanged, so a bad value never travels.
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	if Validate(traceparent) != nil {
		return ctx
	}
	return context.WithValue(ctx, ctxKey{}, traceContext{parent: traceparent})
}

// WithTraceContext is [WithTraceparent] with a tracestate too. The
// tracestate is dropped when it is not printable ASCII of at most 512
// bytes; nothing is stored when traceparent is invalid.
func WithTraceContext(ctx context.Context, traceparent, tracestate string) context.Context {
	if Validate(traceparent) != nil {
		return ctx
	}
	if ValidateTracestate(tracestate) != nil {
		tracestate = ""
	}
	return context.WithValue(ctx, ctxKey{}, traceContext{parent: traceparent, state: tracestate})
}

// Traceparent returns the traceparent ctx carries, "" if none.
func Traceparent(ctx context.Context) string {
	tc, _ := ctx.Value(ctxKey{}).(traceContext)
	return tc.parent
}

// Tracestate returns the tracestate ctx carries, "" if none.
func Tracestate(ctx context.Context) string {
	tc, _ := ctx.Value(ctxKey{}).(traceContext)
	return tc.state
}

// FromHeaders returns ctx carrying the trace context of message headers
// (e.g. Watermill metadata): get returns a header's value. Invalid values
// are ignored.
func FromHeaders(ctx context.Context, get func(string) string) context.Context {
	tp := get(HeaderTraceparent)
	if tp == "" {
		return ctx
	}
	return WithTraceContext(ctx, tp, get(HeaderTracestate))
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	return strings.Trim(s, "0") == ""
}
