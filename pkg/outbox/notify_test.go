package outbox

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// runRelay runs r.Run until the test ends and returns its listener once Run
// created it.
func runRelay(t *testing.T, r *Relay) *listener {
	t.Helper()
	t.Cleanup(startRun(t, r))
	testenv.WaitFor(t, 10*time.Second, "Run to start its listener", func() bool { return r.listening.Load() != nil })
	return r.listening.Load()
}

// currentSchema is the schema the test's PostgreSQL handle works in.
func currentSchema(t *testing.T, db *testenv.DB) string {
	t.Helper()
	var schema string
	if err := db.Get(&schema, "SELECT current_schema()"); err != nil {
		t.Fatal(err)
	}
	return schema
}

// A database at version 1 is upgraded to the latest: the trigger appears,
// and a commit on the outbox sends a notification on the channel
// NotifyChannel names while a session holds the relays' "waiting" lock.
func TestMigrateUpgradesToNotifyTrigger(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := context.Background()
	if err := migrate(ctx, db.DB, db.Dialect, buildConfig(nil), 1); err != nil {
		t.Fatalf("migrate to 1: %v", err)
	}
	insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1)})
	if err := Migrate(ctx, db.DB, db.Dialect); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	var versions []int
	if err := db.Select(&versions, "SELECT version FROM cqrs_outbox_migrations ORDER BY version"); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(versions) != "[1 2 3 4]" || LatestVersion(db.Dialect) != 4 {
		t.Fatalf("versions after upgrade = %v (latest %d), want [1 2 3 4]", versions, LatestVersion(db.Dialect))
	}
	var options []string
	if err := db.Select(&options, "SELECT unnest(reloptions) FROM pg_class WHERE oid = 'cqrs_outbox'::regclass"); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(options) != "[fillfactor=50]" {
		t.Fatalf("table options %v, want [fillfactor=50] (version 4)", options)
	}
	if c := rowCount(t, db); c != 1 {
		t.Fatalf("%d rows after the upgrade, want the 1 written before", c)
	}

	conn, err := pgx.Connect(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	channel := NotifyChannel(currentSchema(t, db), "cqrs_outbox")
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	holder, err := pgx.Connect(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_lock_shared($1, 'cqrs_outbox'::regclass::oid::int4)", lockClassWaiting); err != nil {
		t.Fatal(err)
	}
	insertCommitted(t, db.DB, db, []Message{msg("author", 2, 1), msg("author", 3, 1)})
	if n := nextNotification(t, conn); n.Channel != channel || n.Payload != "" {
		t.Fatalf("notification = %+v; want the trigger's on %s", n, channel)
	}
}

// nextNotification waits for conn's next notification.
func nextNotification(t *testing.T, conn *pgx.Conn) *pgconn.Notification {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(ctx)
	if err != nil {
		t.Fatalf("wait for a notification: %v", err)
	}
	return n
}

// Migrate refuses a database a newer gocqrs migrated, and applies nothing.
func TestMigrateRefusesUnknownVersion(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		ctx := context.Background()
		if err := migrate(ctx, db.DB, db.Dialect, buildConfig(nil), 1); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(db.Dialect.Rebind("INSERT INTO cqrs_outbox_migrations (version, name) VALUES (?, ?)"), 99, "099_future.sql"); err != nil {
			t.Fatal(err)
		}
		err := Migrate(ctx, db.DB, db.Dialect)
		if err == nil || !strings.Contains(err.Error(), "[99]") || !strings.Contains(err.Error(), "newer gocqrs") {
			t.Fatalf("Migrate over version 99 = %v, want a refusal naming it", err)
		}
		var n int
		if err := db.Get(&n, "SELECT COUNT(*) FROM cqrs_outbox_migrations"); err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Fatalf("%d versions recorded, want 2 (1 and 99): nothing applied", n)
		}
	})
}

// A relay whose polling waits are an hour publishes a committed row at once:
// the notification wakes it.
func TestRunWakesOnNotification(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	migrated(t, db)
	s := newSink(t, "author")
	r := newRelay(t, db.DB, db, s, RelayOptions{PollMin: time.Hour, PollMax: time.Hour})
	l := runRelay(t, r)
	// Once the relay waits holding its lock, only a notification can wake it.
	testenv.WaitFor(t, 10*time.Second, "the listener up and the relay waiting", func() bool {
		return l.healthy() && r.waiting.Load()
	})
	ids := insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1)})
	testenv.WaitFor(t, 10*time.Second, "the notified relay to publish", func() bool { return s.count() == 1 })
	if got := s.all()[0]; got.outboxID != ids[0] || l.notified.Load() < 1 {
		t.Fatalf("published %+v after %d notifications, want row %d after at least one", got, l.notified.Load(), ids[0])
	}
}

// The listener reconnects after its connection is killed and is woken by
// notifications again.
func TestListenerReconnects(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	migrated(t, db)
	s := newSink(t, "author")
	r := newRelay(t, db.DB, db, s, RelayOptions{PollMin: time.Hour, PollMax: time.Hour})
	l := runRelay(t, r)
	testenv.WaitFor(t, 10*time.Second, "the listener up", l.healthy)
	old := l.pid.Load()
	var killed bool
	if err := db.Get(&killed, "SELECT pg_terminate_backend($1)", int64(old)); err != nil || !killed {
		t.Fatalf("terminate listener backend %d: %v %v", old, killed, err)
	}
	// Writers notify only while the relay waits holding its lock.
	testenv.WaitFor(t, 10*time.Second, "the listener back on a new connection and the relay waiting", func() bool {
		return l.healthy() && l.pid.Load() != old && r.waiting.Load()
	})
	before := l.notified.Load()
	insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1)})
	testenv.WaitFor(t, 10*time.Second, "a notification on the new connection and the row published", func() bool {
		return l.notified.Load() > before && s.count() == 1
	})
}

// Without the trigger (a database at version 1) the relay does not listen
// and polls.
func TestRunWithoutTriggerPolls(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	if err := migrate(context.Background(), db.DB, db.Dialect, buildConfig(nil), 1); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, "author")
	r := newRelay(t, db.DB, db, s, RelayOptions{})
	l := runRelay(t, r)
	testenv.WaitFor(t, 10*time.Second, "the listener to give up", func() bool {
		select {
		case <-l.done:
			return true
		default:
			return false
		}
	})
	if l.healthy() {
		t.Fatal("listener healthy without a trigger")
	}
	insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1)})
	testenv.WaitFor(t, 10*time.Second, "the polling relay to publish", func() bool { return s.count() == 1 })
}

// Other dialects and DisableListen start no listener.
func TestNoListenerOffPostgres(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	migrated(t, db)
	r := newRelay(t, db.DB, db, noopPublisher{}, RelayOptions{})
	l := runRelay(t, r)
	select {
	case <-l.done:
	default:
		t.Fatal("listener running on SQLite")
	}
	if db.Dialect.Name() != dialect.SQLite || l.healthy() {
		t.Fatal("unexpected listener state")
	}
	pg := testenv.Postgres(t)
	migrated(t, pg)
	r = newRelay(t, pg.DB, pg, noopPublisher{}, RelayOptions{DisableListen: true})
	l = runRelay(t, r)
	select {
	case <-l.done:
	default:
		t.Fatal("listener running with DisableListen")
	}
}

func TestNotifyChannel(t *testing.T) {
	t.Parallel()
	a, b := NotifyChannel("a", "cqrs_outbox"), NotifyChannel("b", "cqrs_outbox")
	if a == b || !strings.HasPrefix(a, "gocqrs_") || len(a) != len("gocqrs_")+32 {
		t.Fatalf("channels %q and %q: want distinct gocqrs_<md5> names", a, b)
	}
}
