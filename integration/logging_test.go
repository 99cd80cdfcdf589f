package integration

// One change followed through the logs: the master's correlation id and
// W3C trace context reach the relay's "CQRS is published" line and the
// replica's received/applied lines (and the replica hooks' context); on
// RabbitMQ the traceparent is the only AMQP header, and a message without
// one carries no header at all, as django-cqrs sends it.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/brokertest"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/tracectx"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

const (
	logTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	logTracestate  = "vendor=abc123"
)

// jsonLogger is a JSON slog logger writing into b at level.
func (b *logBuffer) jsonLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: level}))
}

// records returns the JSON log records whose msg is msg.
func (b *logBuffer) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// checkRecord fails the test unless rec has every attribute of want, each
// rendered as text.
func checkRecord(t *testing.T, what string, rec map[string]any, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if g := fmt.Sprint(rec[k]); g != w {
			t.Errorf("%s: %s = %q, want %q (record %v)", what, k, g, w, rec)
		}
	}
}

func logCorrelation(_ context.Context, ev registry.Event) any {
	return fmt.Sprintf("req-%s-%v", ev.Signal, ev.PK)
}

func TestCorrelationAndTraceInLogs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mdb, rdb := testenv.SQLite(t), testenv.SQLite(t)
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
	m, err := master.New(ctx, mdb.DB, mreg, master.WithCorrelation(logCorrelation))
	if err != nil {
		t.Fatal(err)
	}

	// The replica's create hook records the trace context it runs with.
	var (
		mu       sync.Mutex
		hookSeen []string
	)
	rreg := registry.New()
	if err := rreg.RegisterReplica(registry.ReplicaModel{CQRSID: "author", Table: "author_ref", Hooks: registry.ReplicaHooks{
		Create: func(ctx context.Context, _ *registry.ApplyContext, _ *wire.Fields) error {
			mu.Lock()
			defer mu.Unlock()
			hookSeen = append(hookSeen, tracectx.Traceparent(ctx)+"|"+tracectx.Tracestate(ctx))
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

	var relayLog, replicaLog logBuffer
	c, err := consumer.New(tr, rreg, eng, consumer.Options{Queue: "logs", Logger: replicaLog.jsonLogger(slog.LevelDebug)})
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
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond, Logger: relayLog.jsonLogger(slog.LevelInfo),
	})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "relay", relay.Run)

	// Row 1 is written with a trace context, row 2 without.
	for _, w := range []struct {
		id  int
		ctx context.Context
	}{
		{1, tracectx.WithTraceContext(ctx, logTraceparent, logTracestate)},
		{2, ctx},
	} {
		tx, err := mdb.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Insert(w.ctx, tx, "author", map[string]any{"id": w.id, "name": fmt.Sprintf("author %d", w.id)}); err != nil {
			_ = tx.Rollback()
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 30*time.Second, "both messages applied and logged", func() bool {
		return len(replicaLog.records(t, "CQRS is applied")) == 2 && len(relayLog.records(t, "CQRS is published")) == 2
	})

	byPK := func(recs []map[string]any) map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, r := range recs {
			out[fmt.Sprint(r["pk"])] = r
		}
		return out
	}
	published := byPK(relayLog.records(t, "CQRS is published"))
	received := byPK(replicaLog.records(t, "CQRS is received"))
	applied := byPK(replicaLog.records(t, "CQRS is applied"))
	for _, pk := range []string{"1", "2"} {
		want := map[string]string{
			"cqrs_id": "author", "pk": pk, "revision": "0",
			"correlation_id": "req-SAVE-" + pk,
		}
		if pk == "1" {
			want["traceparent"] = logTraceparent
		} else {
			want["traceparent"] = "<nil>" // no attribute at all
		}
		checkRecord(t, "relay published pk "+pk, published[pk], want)
		checkRecord(t, "replica received pk "+pk, received[pk], want)
		checkRecord(t, "replica applied pk "+pk, applied[pk], want)
		if id := fmt.Sprint(published[pk]["outbox_id"]); id == "" || id == "<nil>" {
			t.Errorf("relay published pk %s: no outbox_id: %v", pk, published[pk])
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(hookSeen) != 2 || hookSeen[0] != logTraceparent+"|"+logTracestate || hookSeen[1] != "|" {
		t.Errorf("replica hook contexts carried %q, want the trace context for row 1 only", hookSeen)
	}
}

// The master's trace context is the only AMQP header on RabbitMQ, and a
// message written without one has no header at all. The relay's and the
// transport's log lines never hold the broker password.
func TestRabbitMQTraceparentHeader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	node := brokertest.Shared(t)
	u, _ := node.Vhost(t)
	sniffer := brokertest.Sniff(t, u, rmqExchange, "trace_sniff")

	db := testenv.SQLite(t)
	createTable(t, db, "author")
	if err := outbox.Migrate(ctx, db.DB, db.Dialect); err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	if err := reg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author"}); err != nil {
		t.Fatal(err)
	}
	m, err := master.New(ctx, db.DB, reg, master.WithCorrelation(logCorrelation))
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	tr, err := transports.NewRabbitMQ(ctx, transports.Config{
		Transport: transports.RabbitMQName, URL: u, Exchange: rmqExchange,
	}, logs.jsonLogger(slog.LevelDebug))
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	relay, err := outbox.NewRelay(db.DB, db.Dialect, tr.Publisher(), outbox.RelayOptions{
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond, Logger: logs.jsonLogger(slog.LevelDebug),
	})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "relay", relay.Run)

	write := func(wctx context.Context, id int) {
		t.Helper()
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Insert(wctx, tx, "author", map[string]any{"id": id, "name": "traced"}); err != nil {
			_ = tx.Rollback()
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	write(tracectx.WithTraceContext(ctx, logTraceparent, logTracestate), 1)
	write(tracectx.WithTraceparent(ctx, logTraceparent), 2)
	write(ctx, 3)
	got := sniffer.Wait(t, 3, 0, rmqWait)
	want := []any{
		map[string]any{"traceparent": logTraceparent, "tracestate": logTracestate},
		map[string]any{"traceparent": logTraceparent},
		nil,
	}
	for i, g := range got {
		if gh, wh := fmt.Sprint(g.Properties["headers"]), fmt.Sprint(want[i]); gh != wh {
			t.Errorf("message %d: AMQP headers %s, want %s", i+1, gh, wh)
		}
		props := map[string]any{}
		for k, v := range g.Properties {
			props[k] = v
		}
		props["headers"] = nil
		if gp, wp := propsJSON(t, props), propsJSON(t, djangoProps(nil)); gp != wp {
			t.Errorf("message %d: other properties\n got %s\nwant %s", i+1, gp, wp)
		}
	}
	testenv.WaitFor(t, rmqWait, "three published lines", func() bool {
		return len(logs.records(t, "CQRS is published")) == 3
	})

	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	pw, ok := parsed.User.Password()
	if !ok || pw == "" {
		t.Fatalf("test broker URL %s has no password to look for", testenv.Redact(u))
	}
	out := logs.String()
	if !strings.Contains(out, transports.RedactURL(u)) {
		t.Errorf("the logs never name the broker (redacted URL %s); nothing was checked:\n%s", transports.RedactURL(u), out)
	}
	if strings.Contains(out, ":"+pw+"@") || strings.Contains(out, u) {
		t.Errorf("the broker password is in the logs:\n%s", out)
	}
}
