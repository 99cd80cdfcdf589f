package outbox

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

// BenchmarkMasterWriteNotify measures what the NOTIFY trigger costs a
// master: one op is one transaction inserting a domain row and its outbox
// row, committed, by 1 or 8 concurrent writers, with the trigger dropped
// ("off"), notifying from every transaction ("always"), as migration 2 had
// it: only the holder of a try-lock token notifies ("token"), and as
// migration 3 has it, with no relay waiting ("idle": no transaction
// notifies) and with a relay waiting the whole time ("waiting": every
// transaction notifies). A relay-style listener is connected when the
// trigger is there. It reports tx/s; compare with "off" of the same writer
// count.
//
//	CQRS_TEST_POSTGRES=... go test -run '^$' -bench MasterWriteNotify -benchtime 5000x ./pkg/outbox/
func BenchmarkMasterWriteNotify(b *testing.B) {
	for _, writers := range []int{1, 8} {
		for _, trigger := range []string{"off", "always", "token", "idle", "waiting"} {
			b.Run(fmt.Sprintf("writers=%d/trigger=%s", writers, trigger), func(b *testing.B) {
				db := testenv.Postgres(b)
				migrated(b, db)
				if _, err := db.Exec(`CREATE TABLE author (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL,
					cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
					b.Fatal(err)
				}
				switch trigger {
				case "off":
					if _, err := db.Exec("DROP TRIGGER cqrs_outbox_notify ON cqrs_outbox"); err != nil {
						b.Fatal(err)
					}
				case "always":
					// Every transaction notifies.
					if _, err := db.Exec(`CREATE OR REPLACE FUNCTION cqrs_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS
						$$BEGIN PERFORM pg_notify('gocqrs_' || md5(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME), ''); RETURN NULL; END$$`); err != nil {
						b.Fatal(err)
					}
					listenForBench(b, db)
				case "token":
					// Migration 2's function.
					if _, err := db.Exec(`CREATE OR REPLACE FUNCTION cqrs_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS
						$$BEGIN IF pg_try_advisory_xact_lock(1734570354, TG_RELID::int4) THEN PERFORM pg_notify('gocqrs_' || md5(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME), ''); END IF; RETURN NULL; END$$`); err != nil {
						b.Fatal(err)
					}
					listenForBench(b, db)
				case "idle":
					listenForBench(b, db)
				case "waiting":
					listenForBench(b, db)
					holdWaitingForBench(b, db)
				}
				db.SetMaxOpenConns(writers + 2)
				ctx := context.Background()
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := int(next.Add(1)); i <= b.N; i = int(next.Add(1)) {
							tx, err := db.BeginTxx(ctx, nil)
							if err != nil {
								b.Error(err)
								return
							}
							var id int64
							if err := tx.QueryRowxContext(ctx, "INSERT INTO author (name) VALUES ($1) RETURNING id", "author "+strconv.Itoa(i)).Scan(&id); err != nil {
								b.Error(err)
								_ = tx.Rollback()
								return
							}
							m := Message{CQRSID: "author", EntityKey: "author:" + strconv.FormatInt(id, 10), Topic: "author",
								Body: []byte(benchBody(int(id), 0))}
							if _, err := Insert(ctx, tx, db.Dialect, []Message{m}); err != nil {
								b.Error(err)
								_ = tx.Rollback()
								return
							}
							if err := tx.Commit(); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tx/s")
			})
		}
	}
}

// listenForBench keeps a connection LISTENing on the outbox's channel (and
// reading its notifications) for the rest of the benchmark, as a relay does.
func listenForBench(b *testing.B, db *testenv.DB) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, err := NewRelay(db.DB, db.Dialect, noopPublisher{}, RelayOptions{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	l := r.startListener(ctx)
	b.Cleanup(func() {
		cancel()
		l.stop()
	})
	testenv.WaitFor(b, 10*time.Second, "the listener to LISTEN", l.healthy)
}

// holdWaitingForBench holds the relays' "waiting" lock (migration 3) for
// the rest of the benchmark, as a relay waiting idle does: every
// transaction that writes to the outbox notifies.
func holdWaitingForBench(b *testing.B, db *testenv.DB) {
	b.Helper()
	conn, err := db.Conn(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	if _, err := conn.ExecContext(context.Background(), "SELECT pg_advisory_lock_shared($1, 'cqrs_outbox'::regclass::oid::int4)", lockClassWaiting); err != nil {
		b.Fatal(err)
	}
}
