package outbox

import (
	"context"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// BenchmarkRelay measures the relay's claim → publish → delete throughput
// with a publisher that accepts everything: one op is one row. PostgreSQL and
// MySQL run when configured (see internal/testenv).
//
//	go test -run '^$' -bench Relay ./pkg/outbox/
func BenchmarkRelay(b *testing.B) {
	for _, name := range []dialect.Name{dialect.SQLite, dialect.Postgres, dialect.MySQL} {
		b.Run(string(name), func(b *testing.B) {
			db := testenv.Open(b, name)
			migrated(b, db)
			ctx := context.Background()
			const chunk = 5000
			for done := 0; done < b.N; done += chunk {
				msgs := make([]Message, min(chunk, b.N-done))
				for i := range msgs {
					msgs[i] = msg("author", (done+i)%1000, done+i)
				}
				insertCommitted(b, db.DB, db, msgs)
			}
			r := newRelay(b, db.DB, db, noopPublisher{}, RelayOptions{})
			b.ResetTimer()
			start := time.Now()
			total := 0
			for total < b.N {
				n, err := r.RunOnce(ctx)
				if err != nil {
					b.Fatalf("run once: %v", err)
				}
				if n == 0 {
					b.Fatalf("relay published nothing with %d of %d rows left", b.N-total, b.N)
				}
				total += n
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(total)/elapsed.Seconds(), "rows/s")
		})
	}
}
