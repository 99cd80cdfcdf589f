package integration

// One change followed through OpenTelemetry: with a TracerProvider set, a
// master write inside a service span, the relay's publish and the
// replica's apply are spans of the service span's trace. The message
// carries the write span's context, so the publish and apply spans are
// both children of the write span. Without a provider, nothing changes:
// the row carries a traceparent only when package tracectx gives one.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/otelcqrs"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/tracectx"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// otelPipeline is a master and a replica on SQLite with a relay and a
// consumer on the memory transport. hookCtx holds the span context each
// replica create hook ran with, and delivered the traceparent the message
// carried, by pk; the create of a row named "fail" fails once.
type otelPipeline struct {
	mdb       *testenv.DB
	master    *master.Master
	mu        sync.Mutex
	hookCtx   map[string]trace.SpanContext
	delivered map[string]string
	failed    atomic.Bool
}

func newOTelPipeline(t *testing.T) *otelPipeline {
	t.Helper()
	ctx := context.Background()
	p := &otelPipeline{hookCtx: map[string]trace.SpanContext{}, delivered: map[string]string{}}
	mdb, rdb := testenv.SQLite(t), testenv.SQLite(t)
	p.mdb = mdb
	createTable(t, mdb, "author")
	createTable(t, rdb, "author_ref")
	if err := outbox.Migrate(ctx, mdb.DB, mdb.Dialect); err != nil {
		t.Fatal(err)
	}
	if err := replica.Migrate(ctx, rdb.DB, rdb.Dialect, replica.Options{}); err != nil {
		t.Fatal(err)
	}
	mreg := registry.New()
	if err := mreg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author"}); err != nil {
		t.Fatal(err)
	}
	m, err := master.New(ctx, mdb.DB, mreg)
	if err != nil {
		t.Fatal(err)
	}
	p.master = m
	rreg := registry.New()
	if err := rreg.RegisterReplica(registry.ReplicaModel{CQRSID: "author", Table: "author_ref", Hooks: registry.ReplicaHooks{
		Create: func(ctx context.Context, _ *registry.ApplyContext, f *wire.Fields) error {
			name, _ := f.Get("name")
			if name == "fail" && p.failed.CompareAndSwap(false, true) {
				return errors.New("hook fails once")
			}
			id, _ := f.Get("id")
			p.mu.Lock()
			defer p.mu.Unlock()
			p.hookCtx[fmt.Sprint(id)] = trace.SpanContextFromContext(ctx)
			p.delivered[fmt.Sprint(id)] = tracectx.Traceparent(ctx)
			return nil
		},
	}}); err != nil {
		t.Fatal(err)
	}
	eng, err := replica.NewEngine(ctx, rdb.DB, rdb.Dialect, rreg, replica.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := transports.New(ctx, transports.Config{Transport: "memory"}.WithDefaults(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	c, err := consumer.New(tr, rreg, eng, consumer.Options{Queue: testenv.Name("otel"), Logger: quietLogger(), RetryDelay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "consumer", c.Run)
	select {
	case <-c.Running():
	case <-time.After(30 * time.Second):
		t.Fatal("consumer did not start")
	}
	relay, err := outbox.NewRelay(mdb.DB, mdb.Dialect, tr.Publisher(), outbox.RelayOptions{
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "relay", relay.Run)
	return p
}

// insert writes one author row with ctx and commits.
func (p *otelPipeline) insert(t *testing.T, ctx context.Context, id int, name string) {
	t.Helper()
	tx, err := p.mdb.BeginTxx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.master.Insert(ctx, tx, "author", map[string]any{"id": id, "name": name}); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// applied reports the span context the create hook of pk ran with.
func (p *otelPipeline) applied(pk string) (trace.SpanContext, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sc, ok := p.hookCtx[pk]
	return sc, ok
}

// rowTraceparent returns the traceparent the message of pk carried to
// the replica ("" if none).
func (p *otelPipeline) rowTraceparent(pk string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delivered[pk]
}

func attrsOf(s sdktrace.ReadOnlySpan) map[string]string {
	out := map[string]string{}
	for _, kv := range s.Attributes() {
		out[string(kv.Key)] = kv.Value.Emit()
	}
	return out
}

func spansNamed(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func checkAttrs(t *testing.T, what string, s sdktrace.ReadOnlySpan, want map[string]string) {
	t.Helper()
	got := attrsOf(s)
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: attribute %s = %q, want %q (all: %v)", what, k, got[k], w, got)
		}
	}
}

// TestOTelSpansOfOneTrace is not parallel: it sets the global
// TracerProvider (and puts a no-op one back at the end).
func TestOTelSpansOfOneTrace(t *testing.T) {
	otel.SetTracerProvider(noop.NewTracerProvider())
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()) })
	p := newOTelPipeline(t)
	ctx := context.Background()

	// Without a provider: no traceparent unless tracectx gives one.
	p.insert(t, ctx, 1, "plain")
	p.insert(t, tracectx.WithTraceparent(ctx, logTraceparent), 2, "tracectx")
	testenv.WaitFor(t, 30*time.Second, "rows 1 and 2 applied", func() bool {
		_, ok1 := p.applied("1")
		_, ok2 := p.applied("2")
		return ok1 && ok2
	})
	if tp := p.rowTraceparent("1"); tp != "" {
		t.Errorf("without a provider or tracectx, row 1 carries traceparent %q", tp)
	}
	if tp := p.rowTraceparent("2"); tp != logTraceparent {
		t.Errorf("without a provider, row 2 carries traceparent %q, want tracectx's %q", tp, logTraceparent)
	}
	if sc, _ := p.applied("1"); sc.IsValid() {
		t.Errorf("without a provider, the hook of row 1 ran in span %v", sc)
	}

	// With a provider: service span → write → publish, apply.
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	otel.SetTracerProvider(tp)

	sctx, service := tp.Tracer("test").Start(ctx, "service")
	p.insert(t, sctx, 3, "traced")
	p.insert(t, sctx, 4, "fail") // applied at the second try
	service.End()
	testenv.WaitFor(t, 30*time.Second, "rows 3 and 4 applied", func() bool {
		_, ok3 := p.applied("3")
		_, ok4 := p.applied("4")
		return ok3 && ok4 && len(spansNamed(rec, otelcqrs.SpanReplicaApply)) == 3 && len(spansNamed(rec, otelcqrs.SpanRelayPublish)) == 2
	})
	ssc := service.SpanContext()

	writes := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spansNamed(rec, otelcqrs.SpanOutboxWrite) {
		writes[attrsOf(s)[otelcqrs.AttrPK]] = s
	}
	if len(writes) != 2 || writes["3"] == nil || writes["4"] == nil {
		t.Fatalf("write spans by pk: %v, want pks 3 and 4", writes)
	}
	for pk, w := range writes {
		if w.SpanContext().TraceID() != ssc.TraceID() || w.Parent().SpanID() != ssc.SpanID() {
			t.Errorf("write span of pk %s: parent %v, want the service span %v", pk, w.Parent(), ssc)
		}
		checkAttrs(t, "write span of pk "+pk, w, map[string]string{otelcqrs.AttrCQRSID: "author", otelcqrs.AttrSignal: "SAVE"})
		want := fmt.Sprintf("00-%s-%s-01", w.SpanContext().TraceID(), w.SpanContext().SpanID())
		if got := p.rowTraceparent(pk); got != want {
			t.Errorf("row of pk %s carries traceparent %q, want the write span's %q", pk, got, want)
		}
	}
	published := map[trace.SpanID]bool{}
	for _, s := range spansNamed(rec, otelcqrs.SpanRelayPublish) {
		a := attrsOf(s)
		published[s.Parent().SpanID()] = true
		if s.SpanContext().TraceID() != ssc.TraceID() || !s.Parent().IsRemote() {
			t.Errorf("publish span %v: trace %v, parent %v; want the service span's trace and a remote parent", a, s.SpanContext().TraceID(), s.Parent())
		}
		checkAttrs(t, "publish span", s, map[string]string{otelcqrs.AttrCQRSID: "author", otelcqrs.AttrRoutingKey: transports.BroadcastKey("author")})
		if a[otelcqrs.AttrOutboxID] == "" {
			t.Errorf("publish span %v: no outbox_id", a)
		}
		if s.Status().Code == codes.Error {
			t.Errorf("publish span %v has an error status: %v", a, s.Status())
		}
	}
	for pk, w := range writes {
		if !published[w.SpanContext().SpanID()] {
			t.Errorf("no publish span is a child of the write span of pk %s (publish parents %v)", pk, published)
		}
	}
	var failedApplies int
	for _, s := range spansNamed(rec, otelcqrs.SpanReplicaApply) {
		a := attrsOf(s)
		pk := a[otelcqrs.AttrPK]
		w := writes[pk]
		if w == nil {
			t.Errorf("apply span %v: no write span for pk %q", a, pk)
			continue
		}
		if s.Parent().SpanID() != w.SpanContext().SpanID() || s.SpanContext().TraceID() != ssc.TraceID() {
			t.Errorf("apply span of pk %s: parent %v, want the write span %v", pk, s.Parent(), w.SpanContext())
		}
		checkAttrs(t, "apply span of pk "+pk, s, map[string]string{otelcqrs.AttrCQRSID: "author", otelcqrs.AttrRevision: "0"})
		if s.Status().Code == codes.Error {
			failedApplies++
			if pk != "4" || a[otelcqrs.AttrOutcome] != "" {
				t.Errorf("apply span of pk %s failed: %v, attributes %v", pk, s.Status(), a)
			}
			continue
		}
		if a[otelcqrs.AttrOutcome] != string(replica.OutcomeCreated) {
			t.Errorf("apply span of pk %s: outcome %q, want %q", pk, a[otelcqrs.AttrOutcome], replica.OutcomeCreated)
		}
		if sc, _ := p.applied(pk); sc.SpanID() != s.SpanContext().SpanID() {
			t.Errorf("the hook of pk %s ran in span %v, want the apply span %v", pk, sc, s.SpanContext())
		}
	}
	if failedApplies != 1 {
		t.Errorf("%d apply spans with an error status, want 1 (pk 4's first try)", failedApplies)
	}
}
