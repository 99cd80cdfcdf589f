package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gocqrs/gocqrs/internal/brokertest"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/metrics"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// serveMetrics serves mux on a free loopback port until the test ends and
// returns its base URL.
func serveMetrics(t *testing.T, mux http.Handler) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr, stop, err := metrics.Listen(ctx, "127.0.0.1:0", mux, quietLogger())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); stop() })
	return "http://" + addr.String()
}

// httpGet returns the status and body of GET url (status 0 when the request
// failed).
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

// scrapeValue returns the value of the series line (name with its labels,
// exactly as exposed) in a /metrics body, and whether it is there.
func scrapeValue(body, series string) (string, bool) {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v, true
		}
	}
	return "", false
}

// TestMetricsEndToEndOverRabbitMQ runs master → outbox → relay → RabbitMQ →
// consumer → replica with the metrics collectors in place, plus one expired
// message, and checks what a scrape of /metrics reports.
func TestMetricsEndToEndOverRabbitMQ(t *testing.T) {
	t.Parallel()
	node := brokertest.Shared(t)
	vhostURL, _ := node.Vhost(t)
	mdb, rdb := testenv.Postgres(t), testenv.Postgres(t)
	p := newPipeline(t, mdb, rdb, replica.Options{})
	p.tr = newRabbitTransport(t, vhostURL)

	reg := prometheus.NewRegistry()
	cm := metrics.NewConsumerMetrics()
	pub := metrics.InstrumentPublisher(p.tr.Publisher())
	relay, err := outbox.NewRelay(mdb.DB, mdb.Dialect, pub, outbox.RelayOptions{
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(cm, pub, metrics.NewRelayCollector(relay), metrics.NewOutboxCollector(mdb.DB, mdb.Dialect, quietLogger()))
	base := serveMetrics(t, metrics.NewMux(reg, metrics.DBCheck(rdb.DB.DB), metrics.TransportCheck(p.tr)))

	const queue = "metrics_e2e"
	startRabbitConsumer(t, p.tr, p.rreg, p.eng, consumer.Options{Queue: queue, RetryDelay: 10 * time.Millisecond, Observer: cm})

	// Rows written before the relay runs: the outbox depth shows them.
	const sent = 25
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < sent; i += 5 {
		tx, err := mdb.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for id := i + 1; id <= i+5; id++ {
			if _, err := p.master.Insert(ctx, tx, "author", authorValues(rng, id)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	_, body := httpGet(t, base+"/metrics")
	if v, _ := scrapeValue(body, "cqrs_outbox_depth"); v != fmt.Sprint(sent) {
		t.Fatalf("cqrs_outbox_depth before the relay runs = %q, want %d", v, sent)
	}
	p.run("relay", relay.Run)

	// One expired message, published as django-cqrs would: dead-lettered.
	expired := `{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"id":9999,"name":"late","active":true,` +
		`"cqrs_revision":0,"cqrs_updated":"2020-01-01T00:00:00+00:00"},"previous_data":null,"instance_pk":9999,` +
		`"correlation_id":null,"retries":0,"expires":"2020-01-01T00:00:00+00:00","meta":null}`
	brokertest.NewPublisher(t, vhostURL, rmqExchange).Publish(t, transports.DirectKey(queue, "author"), brokertest.DjangoPublishing([]byte(expired)))

	p.waitEqual(rmqWait)
	want := map[string]string{
		`cqrs_relay_published_total`:                          fmt.Sprint(sent),
		`cqrs_relay_confirmed_messages_total`:                 fmt.Sprint(sent),
		`cqrs_relay_rejected_total`:                           "0",
		`cqrs_outbox_depth`:                                   "0",
		`cqrs_consumer_received_total{cqrs_id="author"}`:      fmt.Sprint(sent + 1),
		`cqrs_consumer_applied_total{cqrs_id="author"}`:       fmt.Sprint(sent),
		`cqrs_consumer_dead_lettered_total{cqrs_id="author"}`: "1",
	}
	var last string
	testenv.WaitFor(t, rmqWait, "scraped counts", func() bool {
		_, last = httpGet(t, base+"/metrics")
		for series, v := range want {
			if got, _ := scrapeValue(last, series); got != v {
				return false
			}
		}
		return true
	})
	for series, v := range want {
		if got, ok := scrapeValue(last, series); got != v {
			t.Errorf("%s = %q (present %v), want %s", series, got, ok, v)
		}
	}
	for _, absent := range []string{`cqrs_consumer_failed_total{cqrs_id="author"}`, `cqrs_consumer_retried_total{cqrs_id="author"}`} {
		if v, ok := scrapeValue(last, absent); ok {
			t.Errorf("%s = %s, want no failures or retries", absent, v)
		}
	}
	if !strings.Contains(last, "cqrs_relay_publish_duration_seconds_count") ||
		!strings.Contains(last, `cqrs_consumer_apply_duration_seconds_count{cqrs_id="author"} `+fmt.Sprint(sent)) {
		t.Errorf("latency histograms missing or with the wrong count:\n%s", last)
	}
	// The broker holds exactly that one dead letter.
	if dl := brokertest.Drain(t, vhostURL, transports.DefaultDeadLetterQueue(queue)); len(dl) != 1 {
		t.Errorf("dead-letter queue holds %d messages, want 1", len(dl))
	}
	if code, body := httpGet(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d %q, want 200", code, body)
	}
}

// TestMetricsReadyzFollowsRabbitMQ stops the RabbitMQ application of a
// private node: /readyz turns 503 and back to 200 once it restarts, while
// /healthz stays 200.
func TestMetricsReadyzFollowsRabbitMQ(t *testing.T) {
	t.Parallel()
	node := brokertest.StartPrivate(t)
	tr := newRabbitTransport(t, node.URL)
	db := testenv.SQLite(t)
	base := serveMetrics(t, metrics.NewMux(prometheus.NewRegistry(), metrics.DBCheck(db.DB.DB), metrics.TransportCheck(tr)))

	healthy := func() {
		t.Helper()
		if code, body := httpGet(t, base+"/healthz"); code != http.StatusOK {
			t.Fatalf("/healthz = %d %q, want 200 throughout", code, body)
		}
	}
	if code, body := httpGet(t, base+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz with the broker up = %d %q", code, body)
	}
	healthy()

	node.StopApp(t)
	var body string
	testenv.WaitFor(t, rmqWait, "/readyz 503 while RabbitMQ is stopped", func() bool {
		healthy()
		var code int
		code, body = httpGet(t, base+"/readyz")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "broker (rabbitmq)") {
		t.Errorf("/readyz body %q does not name the broker", body)
	}
	healthy()

	node.StartApp(t)
	testenv.WaitFor(t, rmqWait, "/readyz 200 after RabbitMQ restarted", func() bool {
		healthy()
		code, _ := httpGet(t, base+"/readyz")
		return code == http.StatusOK
	})
	healthy()
}
