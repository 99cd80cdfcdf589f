package metrics

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/gocqrs/gocqrs/pkg/transports"
)

// DBCheck is a readiness check that pings db.
func DBCheck(db *sql.DB) Check {
	return func(ctx context.Context) error {
		if err := db.PingContext(ctx); err != nil {
			return fmt.Errorf("database: %w", err)
		}
		return nil
	}
}

// readier is a transport that can tell whether it reaches its broker
// (*transports.RabbitMQ).
type readier interface {
	Ready() error
}

// TransportCheck is a readiness check of tr's broker connection: a
// transport with a Ready() error method (RabbitMQ) is asked; others
// (memory, and Kafka, whose client reconnects per request) are always
// ready.
func TransportCheck(tr transports.Transport) Check {
	return func(context.Context) error {
		r, ok := tr.(readier)
		if !ok {
			return nil
		}
		if err := r.Ready(); err != nil {
			return fmt.Errorf("broker (%s): %w", tr.Name(), err)
		}
		return nil
	}
}
