package consumer_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/otelcqrs"
	"github.com/gocqrs/gocqrs/pkg/tracectx"
)

// TestBatchApplySpans: in batch mode each message gets its own
// "cqrs.replica.apply" span, child of the traceparent it carries, ended
// once its batch returned. Not parallel: it sets the global TracerProvider.
func TestBatchApplySpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		_ = tp.Shutdown(context.Background())
	})
	mem := newMemory(t)
	ap := &batchApplier{during: func(dls []replica.Delivery) {
		// Spans end only after the batch: none has ended yet for these.
		for _, s := range rec.Ended() {
			for _, d := range dls {
				if s.Name() == otelcqrs.SpanReplicaApply && fmt.Sprint(d.Payload.InstancePK) == attrValue(s, otelcqrs.AttrPK) {
					t.Errorf("apply span of pk %v ended before its batch returned", d.Payload.InstancePK)
				}
			}
		}
	}}
	c := newConsumer(t, mem, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q", BatchSize: 8})
	start(t, c)
	const n = 5
	parents := map[string]string{}
	for pk := 1; pk <= n; pk++ {
		tp := fmt.Sprintf("00-%032x-%016x-01", pk, pk)
		parents[fmt.Sprint(pk)] = tp
		m := message.NewMessage(watermill.NewUUID(), encode(t, payload(wire.SignalSave, "author", pk, 3)))
		m.Metadata.Set(tracectx.HeaderTraceparent, tp)
		if err := mem.Publisher().Publish("author", m); err != nil {
			t.Fatal(err)
		}
	}
	waitDone(t, c, n)
	testenv.WaitFor(t, wait, "apply spans ended", func() bool { return len(rec.Ended()) >= n })
	seen := map[string]bool{}
	for _, s := range rec.Ended() {
		pk := attrValue(s, otelcqrs.AttrPK)
		want := parents[pk]
		got := fmt.Sprintf("00-%s-%s-01", s.SpanContext().TraceID(), s.Parent().SpanID())
		if s.Name() != otelcqrs.SpanReplicaApply || got != want {
			t.Errorf("span %s of pk %q: trace and parent %s, want %s", s.Name(), pk, got, want)
		}
		if r := attrValue(s, otelcqrs.AttrRevision); r != "3" {
			t.Errorf("span of pk %s: revision %q, want 3", pk, r)
		}
		if o := attrValue(s, otelcqrs.AttrOutcome); o == "" {
			t.Errorf("span of pk %s: no outcome", pk)
		}
		seen[pk] = true
	}
	if len(seen) != n {
		t.Errorf("apply spans for pks %v, want one per message (%d)", seen, n)
	}
	if len(ap.allBatches()) == 0 {
		t.Error("no batch applied: batch mode was not exercised")
	}
}

func attrValue(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}
