// Package metrics exposes gocqrs's relay and consumer as Prometheus metrics
// and serves /metrics, /healthz and /readyz.
//
// Nothing is collected or served unless asked: a service registers the
// collectors it wants ([NewConsumerMetrics], [NewRelayCollector],
// [NewOutboxCollector], [InstrumentPublisher]) on a prometheus.Registerer and
// mounts [Handler], [Health] and [Ready] on its own mux, or builds one with
// [NewMux] and serves it with [Listen]. cqrs-consume and cqrs relay do so when
// metrics.address (or --metrics-address) is set.
//
// The metric names, types, labels and meanings are listed in the README's
// "Metrics" section.
package metrics
