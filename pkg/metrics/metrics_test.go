package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

func TestConsumerMetricsCountPerCQRSID(t *testing.T) {
	m := NewConsumerMetrics()
	for _, e := range []consumer.Event{
		{Kind: consumer.EventReceived, CQRSID: "a"},
		{Kind: consumer.EventApplied, CQRSID: "a", Outcome: replica.OutcomeCreated, Duration: time.Millisecond},
		{Kind: consumer.EventReceived, CQRSID: "a"},
		{Kind: consumer.EventApplied, CQRSID: "a", Outcome: replica.OutcomeUpdated, Gap: 2, Duration: time.Millisecond},
		{Kind: consumer.EventReceived, CQRSID: "a"},
		{Kind: consumer.EventSkipped, CQRSID: "a", Outcome: replica.OutcomeSkippedStale},
		{Kind: consumer.EventReceived, CQRSID: "b"},
		{Kind: consumer.EventSkipped, CQRSID: "b", Outcome: replica.OutcomeSkippedDuplicate},
		{Kind: consumer.EventReceived, CQRSID: "b"},
		{Kind: consumer.EventFailed, CQRSID: "b", Duration: time.Millisecond},
		{Kind: consumer.EventRequeued, CQRSID: "b"},
		{Kind: consumer.EventFailed, CQRSID: "b"},
		{Kind: consumer.EventDeadLettered, CQRSID: "b"},
	} {
		m.Observe(e)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	want := `
# HELP cqrs_consumer_applied_total Messages applied to the replica (created, updated, deleted, delete of a missing row, raw).
# TYPE cqrs_consumer_applied_total counter
cqrs_consumer_applied_total{cqrs_id="a"} 2
# HELP cqrs_consumer_dead_lettered_total Messages published to the dead-letter queue (expired, out of retries, undecodable values).
# TYPE cqrs_consumer_dead_lettered_total counter
cqrs_consumer_dead_lettered_total{cqrs_id="b"} 1
# HELP cqrs_consumer_failed_total Failed apply attempts.
# TYPE cqrs_consumer_failed_total counter
cqrs_consumer_failed_total{cqrs_id="b"} 2
# HELP cqrs_consumer_received_total Messages received whose cqrs_id this consumer applies (copies included).
# TYPE cqrs_consumer_received_total counter
cqrs_consumer_received_total{cqrs_id="a"} 3
cqrs_consumer_received_total{cqrs_id="b"} 2
# HELP cqrs_consumer_retried_total Retry copies published (retries+1) after a failure.
# TYPE cqrs_consumer_retried_total counter
cqrs_consumer_retried_total{cqrs_id="b"} 1
# HELP cqrs_consumer_revision_gaps_total Applied messages whose revision was more than one above the stored one (lost packages).
# TYPE cqrs_consumer_revision_gaps_total counter
cqrs_consumer_revision_gaps_total{cqrs_id="a"} 1
# HELP cqrs_consumer_skipped_total Messages acknowledged without a change, by reason (stale, duplicate, tombstone, indirect, ...).
# TYPE cqrs_consumer_skipped_total counter
cqrs_consumer_skipped_total{cqrs_id="a",reason="stale"} 1
cqrs_consumer_skipped_total{cqrs_id="b",reason="duplicate"} 1
`
	names := []string{"cqrs_consumer_applied_total", "cqrs_consumer_dead_lettered_total", "cqrs_consumer_failed_total",
		"cqrs_consumer_received_total", "cqrs_consumer_retried_total", "cqrs_consumer_revision_gaps_total", "cqrs_consumer_skipped_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// Applied, skipped and the failed attempt with a duration are timed.
	if got := testutil.CollectAndCount(m.apply); got != 2 {
		t.Fatalf("apply duration series = %d, want 2 (a and b)", got)
	}
	if n := histogramCount(t, reg, "cqrs_consumer_apply_duration_seconds", "a"); n != 3 {
		t.Fatalf("apply duration samples of a = %d, want 3", n)
	}
	if n := histogramCount(t, reg, "cqrs_consumer_apply_duration_seconds", "b"); n != 2 {
		t.Fatalf("apply duration samples of b = %d, want 2", n)
	}
}

// histogramCount returns the sample count of name's series whose first
// label has value label ("" for a histogram without labels: its sum over
// series).
func histogramCount(t *testing.T, g prometheus.Gatherer, name, label string) uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || (len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label) {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

func TestRelayOutboxAndPublisherMetrics(t *testing.T) {
	ctx := context.Background()
	db := testenv.SQLite(t)
	if err := outbox.Migrate(ctx, db.DB, db.Dialect); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []outbox.Message
	for _, k := range []string{"1", "2", "3"} {
		msgs = append(msgs, outbox.Message{CQRSID: "author", EntityKey: "author:" + k, Topic: "author", Body: []byte(`{}`)})
	}
	if _, err := outbox.Insert(ctx, tx, db.Dialect, msgs); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	mem, err := transports.NewMemory(transports.MemoryConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := InstrumentPublisher(mem.Publisher())
	r, err := outbox.NewRelay(db.DB, db.Dialect, pub, outbox.RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	now := time.Now()
	oc := NewOutboxCollector(db.DB, db.Dialect, nil).(*outboxCollector)
	oc.now = func() time.Time { return now.Add(time.Hour) }
	reg.MustRegister(pub, NewRelayCollector(r), oc)

	if got := gauge(t, reg, "cqrs_outbox_depth"); got != 3 {
		t.Fatalf("outbox depth before the relay = %v, want 3", got)
	}
	if age := gauge(t, reg, "cqrs_outbox_oldest_age_seconds"); age < 3500 || age > 3700 {
		t.Fatalf("oldest age = %v s, want about 3600 (clock an hour ahead)", age)
	}
	n, err := r.RunOnce(ctx)
	if err != nil || n != 3 {
		t.Fatalf("RunOnce = %d, %v; want 3 published", n, err)
	}
	for name, want := range map[string]float64{
		"cqrs_outbox_depth": 0, "cqrs_outbox_oldest_age_seconds": 0,
		"cqrs_relay_published_total": 3, "cqrs_relay_sent_messages_total": 3, "cqrs_relay_confirmed_messages_total": 3,
		"cqrs_relay_cycles_total": 1, "cqrs_relay_rejected_total": 0, "cqrs_relay_publish_failures_total": 0,
	} {
		if got := gauge(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if c := histogramCount(t, reg, "cqrs_relay_publish_duration_seconds", "ok"); c < 1 {
		t.Errorf("publish latency samples (ok) = %d, want at least 1", c)
	}

	// A publisher that fails: counted as sent, not confirmed, timed as error.
	if err := mem.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("author", message.NewMessage("x", []byte(`{}`))); err == nil {
		t.Fatal("Publish on a closed memory transport succeeded")
	}
	if got := gauge(t, reg, "cqrs_relay_sent_messages_total"); got != 4 {
		t.Errorf("sent after a failed publish = %v, want 4", got)
	}
	if got := gauge(t, reg, "cqrs_relay_confirmed_messages_total"); got != 3 {
		t.Errorf("confirmed after a failed publish = %v, want 3", got)
	}
	if c := histogramCount(t, reg, "cqrs_relay_publish_duration_seconds", "error"); c != 1 {
		t.Errorf("publish latency samples (error) = %d, want 1", c)
	}

	// A database the collector cannot query: the outbox metrics are left out.
	db.Close()
	if _, ok := find(t, reg, "cqrs_outbox_depth"); ok {
		t.Error("cqrs_outbox_depth reported while the database is closed")
	}
}

// find returns the value of the single, unlabelled series of name.
func find(t *testing.T, g prometheus.Gatherer, name string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func gauge(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	v, ok := find(t, g, name)
	if !ok {
		t.Fatalf("metric %s not gathered", name)
	}
	return v
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestHealthAndReady(t *testing.T) {
	db := testenv.SQLite(t)
	mem, err := transports.NewMemory(transports.MemoryConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	mux := NewMux(prometheus.NewRegistry(), DBCheck(db.DB.DB), TransportCheck(mem))
	if code, body := get(t, mux, "/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, mux, "/readyz"); code != http.StatusOK || strings.TrimSpace(body) != "ready" {
		t.Fatalf("/readyz with a live database = %d %q", code, body)
	}
	db.Close()
	code, body := get(t, mux, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "database:") {
		t.Fatalf("/readyz with a closed database = %d %q, want 503 naming the database", code, body)
	}
	if code, _ := get(t, mux, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz with a closed database = %d, want 200", code)
	}
}

func TestListenServesUntilStopped(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	m := NewConsumerMetrics()
	reg.MustRegister(m)
	m.Observe(consumer.Event{Kind: consumer.EventReceived, CQRSID: "author"})
	addr, stop, err := Listen(ctx, "127.0.0.1:0", NewMux(reg), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `cqrs_consumer_received_total{cqrs_id="author"} 1`) {
		t.Fatalf("/metrics lacks the received count:\n%s", body)
	}
	if _, _, err := Listen(ctx, addr.String(), NewMux(reg), nil); err == nil {
		t.Fatal("a second Listen on a bound address succeeded")
	}
	cancel()
	stop()
	if _, err := http.Get("http://" + addr.String() + "/healthz"); err == nil {
		t.Fatal("/healthz still answers after the server stopped")
	}
	if _, _, err := Listen(context.Background(), "", nil, nil); err == nil {
		t.Fatal("Listen with an empty address succeeded")
	}
}
