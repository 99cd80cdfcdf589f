package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// RelayStatser is what [NewRelayCollector] reads; *outbox.Relay is one.
type RelayStatser interface {
	Stats() outbox.RelayStats
}

// relayCollector turns a relay's counters into metrics at scrape time.
type relayCollector struct {
	r                                                   RelayStatser
	cycles, published, failed, errs, released, rejected *prometheus.Desc
}

// NewRelayCollector returns a collector of r's counters (outbox.RelayStats),
// read at each scrape: the relay's hot path is untouched.
func NewRelayCollector(r RelayStatser) prometheus.Collector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &relayCollector{
		r:         r,
		cycles:    d("cqrs_relay_cycles_total", "Finished claim, publish, delete cycles of the relay (empty ones included)."),
		published: d("cqrs_relay_published_total", "Messages the publisher accepted (RabbitMQ: confirmed by the broker)."),
		failed:    d("cqrs_relay_publish_failures_total", "Publish calls that returned an error."),
		errs:      d("cqrs_relay_errors_total", "Relay cycles that failed (publish or database errors)."),
		released:  d("cqrs_relay_released_total", "Claimed rows handed back unpublished to keep an entity's rows in order."),
		rejected:  d("cqrs_relay_rejected_total", "Messages the broker refused (returned as unroutable or nacked); their rows are retried later."),
	}
}

// Describe implements prometheus.Collector.
func (c *relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.cycles, c.published, c.failed, c.errs, c.released, c.rejected} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *relayCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.r.Stats()
	for _, m := range []struct {
		d *prometheus.Desc
		v int64
	}{{c.cycles, s.Cycles}, {c.published, s.Published}, {c.failed, s.Failed}, {c.errs, s.Errors}, {c.released, s.Released}, {c.rejected, s.Rejected}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v))
	}
}

// OutboxQueryTimeout bounds the query an outbox collector runs per scrape.
const OutboxQueryTimeout = 5 * time.Second

// outboxCollector reports the outbox's depth and the age of its oldest row.
type outboxCollector struct {
	db        *sqlx.DB
	d         dialect.Dialect
	opts      []outbox.Option
	log       *slog.Logger
	now       func() time.Time
	depth, ag *prometheus.Desc
}

// NewOutboxCollector returns a collector that counts the outbox's rows
// (outbox.Pending) at each scrape; opts name the table as for the outbox
// package. A failed query is logged to logger (nil: slog.Default()) and
// the two metrics are left out of that scrape.
func NewOutboxCollector(db *sqlx.DB, d dialect.Dialect, logger *slog.Logger, opts ...outbox.Option) prometheus.Collector {
	if logger == nil {
		logger = slog.Default()
	}
	return &outboxCollector{
		db: db, d: d, opts: opts, log: logger, now: time.Now,
		depth: prometheus.NewDesc("cqrs_outbox_depth", "Rows in the outbox (claimed or not), not yet published.", nil, nil),
		ag:    prometheus.NewDesc("cqrs_outbox_oldest_age_seconds", "Age of the oldest outbox row; 0 when the outbox is empty.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.ag
}

// Collect implements prometheus.Collector.
func (c *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), OutboxQueryTimeout)
	defer cancel()
	n, oldest, err := outbox.Pending(ctx, c.db, c.d, c.opts...)
	if err != nil {
		c.log.Warn("metrics: outbox depth", "error", err.Error())
		return
	}
	age := 0.0
	if n > 0 {
		age = max(c.now().Sub(oldest).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(c.ag, prometheus.GaugeValue, age)
}
