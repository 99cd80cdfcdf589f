package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness check: nil when the dependency is reachable. The
// error should say which dependency failed.
type Check func(ctx context.Context) error

// ReadyTimeout bounds the checks of one /readyz request.
const ReadyTimeout = 3 * time.Second

// Handler serves the metrics gathered by g in the Prometheus text format;
// nil means prometheus.DefaultGatherer.
func Handler(g prometheus.Gatherer) http.Handler {
	if g == nil {
		g = prometheus.DefaultGatherer
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// Health serves /healthz: 200 "ok" while the process is alive and serving.
func Health() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
}

// Ready serves /readyz: it runs every check (within ReadyTimeout) and
// answers 200 "ready" when all pass, 503 with one line per failure
// otherwise.
func Ready(checks ...Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
		defer cancel()
		var failed []string
		for _, c := range checks {
			if err := c(ctx); err != nil {
				failed = append(failed, err.Error())
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if len(failed) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready:\n%s\n", strings.Join(failed, "\n"))
			return
		}
		_, _ = fmt.Fprintln(w, "ready")
	})
}

// NewMux returns a mux serving /metrics (Handler(g)), /healthz (Health) and
// /readyz (Ready(checks...)).
func NewMux(g prometheus.Gatherer, checks ...Check) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(g))
	mux.Handle("/healthz", Health())
	mux.Handle("/readyz", Ready(checks...))
	return mux
}

// ShutdownTimeout bounds how long a server started by Listen waits for requests in progress once
// its context is done.
const ShutdownTimeout = 5 * time.Second

// Listen binds addr (host:port) and serves h on it in the background until
// ctx is done; the returned stop waits for the server to shut down. The
// listener's address is returned (useful with port 0). Failures after the
// bind are logged to logger (nil: slog.Default()).
func Listen(ctx context.Context, addr string, h http.Handler, logger *slog.Logger) (bound net.Addr, stop func(), err error) {
	if logger == nil {
		logger = slog.Default()
	}
	if addr == "" {
		return nil, nil, errors.New("metrics: listen: empty address")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: listen on %q: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics: server stopped", "address", ln.Addr().String(), "error", err.Error())
		}
	}()
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() { close(stopped) })
		<-done
	}
	logger.Info("metrics: serving /metrics, /healthz, /readyz", "address", ln.Addr().String())
	return ln.Addr(), stop, nil
}
