package metrics

import (
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
)

// Publisher wraps a Watermill publisher and measures its Publish calls:
// messages sent and confirmed (the call returned nil; with RabbitMQ, the
// broker confirmed them) and each call's latency. It is a
// prometheus.Collector; register it, and give it to the relay in place of
// the publisher it wraps.
type Publisher struct {
	next      message.Publisher
	sent      prometheus.Counter
	confirmed prometheus.Counter
	latency   *prometheus.HistogramVec
}

// InstrumentPublisher wraps next (see [Publisher]).
func InstrumentPublisher(next message.Publisher) *Publisher {
	return &Publisher{
		next: next,
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cqrs_relay_sent_messages_total", Help: "Messages handed to the publisher (retries included).",
		}),
		confirmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cqrs_relay_confirmed_messages_total", Help: "Messages of publish calls that succeeded (RabbitMQ: confirmed by the broker).",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cqrs_relay_publish_duration_seconds",
			Help:    "Duration of publish calls (one call carries many messages), by result (ok or error).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"result"}),
	}
}

// Publish implements message.Publisher.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.sent.Add(float64(len(msgs)))
	start := time.Now()
	err := p.next.Publish(topic, msgs...)
	result := "ok"
	if err != nil {
		result = "error"
	} else {
		p.confirmed.Add(float64(len(msgs)))
	}
	p.latency.WithLabelValues(result).Observe(time.Since(start).Seconds())
	return err
}

// Close implements message.Publisher: it closes the wrapped publisher.
func (p *Publisher) Close() error { return p.next.Close() }

// Describe implements prometheus.Collector.
func (p *Publisher) Describe(ch chan<- *prometheus.Desc) {
	p.sent.Describe(ch)
	p.confirmed.Describe(ch)
	p.latency.Describe(ch)
}

// Collect implements prometheus.Collector.
func (p *Publisher) Collect(ch chan<- prometheus.Metric) {
	p.sent.Collect(ch)
	p.confirmed.Collect(ch)
	p.latency.Collect(ch)
}
