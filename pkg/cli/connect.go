package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// Backoff between attempts to reach the broker at start.
const (
	connectRetryMin = 200 * time.Millisecond
	connectRetryMax = 10 * time.Second
)

// connectTransport opens the configured transport for a long-running
// command (relay, consume). While the broker cannot be reached (the error
// wraps transports.ErrNotConnected) it tries again with backoff, logging
// each failure, until it connects or ctx ends (a SIGTERM while waiting exits
// cleanly). Other errors (bad configuration, refused credentials) return at
// once.
func connectTransport(ctx context.Context, cfg *cqrs.Config, logger *slog.Logger) (cqrs.Transport, error) {
	delay := connectRetryMin
	for attempt := 1; ; attempt++ {
		tr, err := cqrs.NewTransport(ctx, cfg, logger)
		if err == nil {
			if attempt > 1 {
				logger.Info("broker reached", "transport", cfg.Transport, "attempts", attempt)
			}
			return tr, nil
		}
		if !errors.Is(err, transports.ErrNotConnected) {
			return nil, err
		}
		logger.Warn("broker unreachable; retrying", "transport", cfg.Transport, "attempt", attempt,
			"retry_in", delay.String(), "error", err.Error())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("waiting for the broker: %w", ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, connectRetryMax)
	}
}
