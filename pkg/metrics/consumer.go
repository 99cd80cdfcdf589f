package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
)

// ConsumerMetrics counts a replica consumer's messages per cqrs_id. It is a
// [consumer.Observer]: set it as consumer.Options.Observer (one value may
// serve any number of consumers, e.g. cqrs-consume's workers) and register
// it on a prometheus.Registerer.
type ConsumerMetrics struct {
	received, applied, skipped, failed *prometheus.CounterVec
	retried, deadLettered, gaps        *prometheus.CounterVec
	apply                              *prometheus.HistogramVec
}

// Label names of the consumer metrics.
const (
	LabelCQRSID = "cqrs_id"
	LabelReason = "reason"
)

// NewConsumerMetrics returns consumer metrics with no counts yet.
func NewConsumerMetrics() *ConsumerMetrics {
	vec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, append([]string{LabelCQRSID}, labels...))
	}
	return &ConsumerMetrics{
		received:     vec("cqrs_consumer_received_total", "Messages received whose cqrs_id this consumer applies (copies included)."),
		applied:      vec("cqrs_consumer_applied_total", "Messages applied to the replica (created, updated, deleted, delete of a missing row, raw)."),
		skipped:      vec("cqrs_consumer_skipped_total", "Messages acknowledged without a change, by reason (stale, duplicate, tombstone, indirect, ...).", LabelReason),
		failed:       vec("cqrs_consumer_failed_total", "Failed apply attempts."),
		retried:      vec("cqrs_consumer_retried_total", "Retry copies published (retries+1) after a failure."),
		deadLettered: vec("cqrs_consumer_dead_lettered_total", "Messages published to the dead-letter queue (expired, out of retries, undecodable values)."),
		gaps:         vec("cqrs_consumer_revision_gaps_total", "Applied messages whose revision was more than one above the stored one (lost packages)."),
		apply: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cqrs_consumer_apply_duration_seconds",
			Help:    "Time spent applying a message (for a batch: its whole transaction).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{LabelCQRSID}),
	}
}

// Observe implements [consumer.Observer].
func (m *ConsumerMetrics) Observe(e consumer.Event) {
	switch e.Kind {
	case consumer.EventReceived:
		m.received.WithLabelValues(e.CQRSID).Inc()
	case consumer.EventApplied:
		m.applied.WithLabelValues(e.CQRSID).Inc()
		m.apply.WithLabelValues(e.CQRSID).Observe(e.Duration.Seconds())
		if e.Gap > 0 {
			m.gaps.WithLabelValues(e.CQRSID).Inc()
		}
	case consumer.EventSkipped:
		m.skipped.WithLabelValues(e.CQRSID, strings.TrimPrefix(string(e.Outcome), "skipped_")).Inc()
		m.apply.WithLabelValues(e.CQRSID).Observe(e.Duration.Seconds())
	case consumer.EventFailed:
		m.failed.WithLabelValues(e.CQRSID).Inc()
		if e.Duration > 0 {
			m.apply.WithLabelValues(e.CQRSID).Observe(e.Duration.Seconds())
		}
	case consumer.EventRequeued:
		m.retried.WithLabelValues(e.CQRSID).Inc()
	case consumer.EventDeadLettered:
		m.deadLettered.WithLabelValues(e.CQRSID).Inc()
	}
}

func (m *ConsumerMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.received, m.applied, m.skipped, m.failed, m.retried, m.deadLettered, m.gaps, m.apply}
}

// Describe implements prometheus.Collector.
func (m *ConsumerMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *ConsumerMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

var _ consumer.Observer = (*ConsumerMetrics)(nil)
