package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// Pending returns the number of rows in the outbox (claimed or not) and the
// creation time of the oldest, zero when the outbox is empty.
func Pending(ctx context.Context, db *sqlx.DB, d dialect.Dialect, opts ...Option) (count int64, oldest time.Time, err error) {
	if db == nil {
		return 0, time.Time{}, fmt.Errorf("outbox: pending: nil database handle")
	}
	n, err := resolveNames(d, buildConfig(opts).table)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("outbox: pending: %w", err)
	}
	var micros int64
	if err := db.QueryRowContext(ctx, buildRelaySQL(d, n).pending).Scan(&count, &micros); err != nil {
		return 0, time.Time{}, fmt.Errorf("outbox: pending rows of %s: %w", n.raw, err)
	}
	if count == 0 {
		return 0, time.Time{}, nil
	}
	return count, time.UnixMicro(micros).UTC(), nil
}
