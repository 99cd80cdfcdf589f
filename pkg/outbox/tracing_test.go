package outbox

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/otelcqrs"
	"github.com/gocqrs/gocqrs/pkg/tracectx"
)

// TestPublishSpans: with a TracerProvider set, the relay opens one
// "cqrs.relay.publish" span per message, child of the row's traceparent
// (a root span for a row without one), with an error status while the
// broker fails the call. Not parallel: it sets the global TracerProvider.
func TestPublishSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		_ = tp.Shutdown(context.Background())
	})
	db := testenv.SQLite(t)
	migrated(t, db)
	var msgs []Message
	parents := map[string]string{} // outbox id → traceparent
	for pk := 1; pk <= 3; pk++ {
		m := msg("author", pk, 1)
		if pk < 3 {
			m.Headers = map[string]string{tracectx.HeaderTraceparent: fmt.Sprintf("00-%032x-%016x-01", pk, pk)}
		}
		msgs = append(msgs, m)
	}
	ids := insertCommitted(t, db.DB, db, msgs)
	for i, id := range ids {
		parents[strconv.FormatInt(id, 10)] = msgs[i].Headers[tracectx.HeaderTraceparent]
	}
	pub := &downTopicPublisher{next: newSink(t, "author"), topic: "author"}
	pub.down.Store(true)
	r := newRelay(t, db.DB, db, pub, RelayOptions{})
	if _, err := r.RunOnce(context.Background()); err == nil {
		t.Fatal("run once with the broker down: no error")
	}
	failed := rec.Ended()
	if len(failed) != 3 {
		t.Fatalf("%d spans after a failed publish, want 3", len(failed))
	}
	for _, s := range failed {
		if s.Status().Code != codes.Error {
			t.Errorf("span of a failed publish has status %v", s.Status())
		}
	}
	pub.down.Store(false)
	drain(t, r, db)
	spans := rec.Ended()[3:]
	if len(spans) != 3 {
		t.Fatalf("%d spans after the publish, want 3", len(spans))
	}
	for _, s := range spans {
		a := map[string]string{}
		for _, kv := range s.Attributes() {
			a[string(kv.Key)] = kv.Value.Emit()
		}
		if s.Name() != otelcqrs.SpanRelayPublish || a[otelcqrs.AttrCQRSID] != "author" || a[otelcqrs.AttrRoutingKey] != "author" || s.Status().Code == codes.Error {
			t.Errorf("span %s: attributes %v, status %v", s.Name(), a, s.Status())
		}
		want, ok := parents[a[otelcqrs.AttrOutboxID]]
		if !ok {
			t.Errorf("span with outbox_id %q: no such row", a[otelcqrs.AttrOutboxID])
			continue
		}
		if want == "" {
			if s.Parent().IsValid() {
				t.Errorf("row without traceparent: span has parent %v, want a root span", s.Parent())
			}
			continue
		}
		if got := fmt.Sprintf("00-%s-%s-01", s.SpanContext().TraceID(), s.Parent().SpanID()); got != want {
			t.Errorf("span of outbox row %s: trace and parent %s, want %s", a[otelcqrs.AttrOutboxID], got, want)
		}
	}
}
