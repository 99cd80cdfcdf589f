package cli

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gocqrs/gocqrs/pkg/metrics"
)

// metricsAddress is --metrics-address when given, else metrics.address of
// the configuration.
func metricsAddress(flag, configured string) string {
	if flag != "" {
		return flag
	}
	return configured
}

// serveMetrics serves /metrics (cs plus the Go runtime and process
// collectors), /healthz and /readyz on addr until ctx is done or the
// returned stop is called. An empty addr serves nothing.
func serveMetrics(ctx context.Context, addr string, logger *slog.Logger, checks []metrics.Check, cs ...prometheus.Collector) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	_, stop, err = metrics.Listen(ctx, addr, metrics.NewMux(reg, checks...), logger)
	if err != nil {
		return nil, err
	}
	return stop, nil
}
