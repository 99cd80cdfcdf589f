package otelcqrs_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/gocqrs/gocqrs/pkg/otelcqrs"
	"github.com/gocqrs/gocqrs/pkg/tracectx"
)

const (
	testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	testTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	testSpanID      = "00f067aa0ba902b7"
)

// withRecorder sets a recording global TracerProvider for the test (the
// tests of this package are not parallel) and puts a no-op one back.
func withRecorder(t *testing.T) *tracetest.SpanRecorder {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		_ = tp.Shutdown(context.Background())
	})
	return rec
}

func withoutProvider(t *testing.T) {
	t.Helper()
	otel.SetTracerProvider(noop.NewTracerProvider())
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

func TestTraceparentPrefersTheOTelSpan(t *testing.T) {
	withRecorder(t)
	ctx := tracectx.WithTraceContext(context.Background(), testTraceparent, "v=1")
	if tp, ts := otelcqrs.Traceparent(ctx); tp != testTraceparent || ts != "v=1" {
		t.Errorf("tracectx only: got %q %q, want tracectx's values", tp, ts)
	}
	if tp, ts := otelcqrs.Traceparent(context.Background()); tp != "" || ts != "" {
		t.Errorf("empty context: got %q %q, want none", tp, ts)
	}
	sctx, span := otel.Tracer("test").Start(ctx, "service")
	defer span.End()
	sc := span.SpanContext()
	want := fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID())
	if tp, _ := otelcqrs.Traceparent(sctx); tp != want {
		t.Errorf("with an OTel span: got %q, want the span's %q", tp, want)
	}
}

func TestWriteSpanContinuesTracectx(t *testing.T) {
	rec := withRecorder(t)
	ctx := tracectx.WithTraceparent(context.Background(), testTraceparent)
	wctx, span := otelcqrs.StartWrite(ctx, "author", "7", "SAVE")
	span.End()
	got := rec.Ended()
	if len(got) != 1 {
		t.Fatalf("%d spans recorded, want 1", len(got))
	}
	s := got[0]
	if s.Name() != otelcqrs.SpanOutboxWrite || s.SpanContext().TraceID().String() != testTraceID || s.Parent().SpanID().String() != testSpanID {
		t.Errorf("span %s in trace %s with parent %s, want %s child of the tracectx traceparent", s.Name(), s.SpanContext().TraceID(), s.Parent().SpanID(), otelcqrs.SpanOutboxWrite)
	}
	for k, w := range map[string]string{otelcqrs.AttrCQRSID: "author", otelcqrs.AttrPK: "7", otelcqrs.AttrSignal: "SAVE"} {
		if g := attr(s, k); g != w {
			t.Errorf("attribute %s = %q, want %q", k, g, w)
		}
	}
	if tp, _ := otelcqrs.Traceparent(wctx); tp != fmt.Sprintf("00-%s-%s-01", testTraceID, s.SpanContext().SpanID()) {
		t.Errorf("the write context's traceparent is %q, want the write span's", tp)
	}
}

func TestPublishAndApplySpans(t *testing.T) {
	rec := withRecorder(t)
	md := map[string]string{tracectx.HeaderTraceparent: testTraceparent}
	span := otelcqrs.StartPublish(context.Background(), func(k string) string { return md[k] }, "author", "cqrs.author", "42")
	if span == nil {
		t.Fatal("StartPublish returned nil with a recording provider")
	}
	otelcqrs.EndPublish(span, errors.New("broker refused"))

	ctx := tracectx.WithTraceparent(context.Background(), testTraceparent)
	actx, aspan := otelcqrs.StartApply(ctx, "author", "7", 3)
	if trace.SpanContextFromContext(actx).SpanID() != aspan.SpanContext().SpanID() {
		t.Error("the apply context does not carry the apply span")
	}
	otelcqrs.EndApply(aspan, "created", nil)
	_, fspan := otelcqrs.StartApply(ctx, "author", "8", -1)
	otelcqrs.EndApply(fspan, "", errors.New("hook failed"))

	got := rec.Ended()
	if len(got) != 3 {
		t.Fatalf("%d spans recorded, want 3", len(got))
	}
	for _, s := range got {
		if s.SpanContext().TraceID().String() != testTraceID || s.Parent().SpanID().String() != testSpanID || !s.Parent().IsRemote() {
			t.Errorf("%s: trace %s parent %s, want a child of the delivered traceparent", s.Name(), s.SpanContext().TraceID(), s.Parent().SpanID())
		}
	}
	pub, ok, failed := got[0], got[1], got[2]
	if pub.Name() != otelcqrs.SpanRelayPublish || attr(pub, otelcqrs.AttrRoutingKey) != "cqrs.author" || attr(pub, otelcqrs.AttrOutboxID) != "42" || pub.Status().Code != codes.Error {
		t.Errorf("publish span %s: attributes %v, status %v", pub.Name(), pub.Attributes(), pub.Status())
	}
	if ok.Name() != otelcqrs.SpanReplicaApply || attr(ok, otelcqrs.AttrRevision) != "3" || attr(ok, otelcqrs.AttrOutcome) != "created" || ok.Status().Code == codes.Error {
		t.Errorf("apply span %s: attributes %v, status %v", ok.Name(), ok.Attributes(), ok.Status())
	}
	if attr(failed, otelcqrs.AttrRevision) != "" || failed.Status().Code != codes.Error || failed.Status().Description != "hook failed" {
		t.Errorf("failed apply span: attributes %v, status %v", failed.Attributes(), failed.Status())
	}
}

func TestNoProviderRecordsNothing(t *testing.T) {
	withoutProvider(t)
	get := func(k string) string {
		if k == tracectx.HeaderTraceparent {
			return testTraceparent
		}
		return ""
	}
	if span := otelcqrs.StartPublish(context.Background(), get, "author", "cqrs.author", "1"); span != nil {
		t.Errorf("StartPublish without a provider returned a span %v, want nil", span)
	}
	otelcqrs.EndPublish(nil, nil) // must not panic
	wctx, span := otelcqrs.StartWrite(context.Background(), "author", "1", "SAVE")
	if span.IsRecording() {
		t.Error("the write span records without a provider")
	}
	span.End()
	if tp, _ := otelcqrs.Traceparent(wctx); tp != "" {
		t.Errorf("without a provider or tracectx, the write context has traceparent %q", tp)
	}
}
