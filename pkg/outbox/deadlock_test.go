package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

func TestIsDeadlock(t *testing.T) {
	deadlock := &mysql.MySQLError{Number: 1213, Message: "Deadlock found when trying to get lock"}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{deadlock, true},
		{&pgconn.PgError{Code: "40P01", Message: "deadlock detected"}, true},
		{&pgconn.PgError{Code: "40001", Message: "could not serialize access"}, false},
		{fmt.Errorf("outbox: claim batch: update: %w", deadlock), true},
		{&mysql.MySQLError{Number: 1205, Message: "Lock wait timeout exceeded"}, false},
		{errors.New("Error 1213: looks like one"), false},
		{nil, false},
	} {
		if got := isDeadlock(c.err); got != c.want {
			t.Errorf("isDeadlock(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestDeadlockVictimRunsAgain: a relay's delete that the database picks as
// the victim of a deadlock (against a transaction that holds one of its rows
// and then asks for another; on MySQL a heavier one, so that InnoDB picks
// the delete) is run again and deletes its rows; it is not reported as a
// failure.
func TestDeadlockVictimRunsAgain(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		open func(testing.TB) *testenv.DB
		// blocked counts the relay's delete blocked on a row lock of the
		// other transaction, whose backend or connection id otherID
		// returns (MySQL's process list does not name the blocker: the
		// statement of this test's database blocked for 200 ms; "? > 0"
		// takes the id).
		blocked string
		otherID string
	}{
		{"mysql", testenv.MySQL, "SELECT COUNT(*) FROM information_schema.PROCESSLIST" +
			" WHERE db = DATABASE() AND info LIKE 'DELETE FROM `cqrs_outbox`%' AND time_ms > 200 AND ? > 0",
			"SELECT CONNECTION_ID()"},
		{"postgres", testenv.Postgres, "SELECT COUNT(*) FROM pg_stat_activity" +
			" WHERE $1 = ANY(pg_blocking_pids(pid)) AND query LIKE 'DELETE FROM %'",
			"SELECT pg_backend_pid()"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			deadlockVictim(t, c.open(t), c.blocked, c.otherID)
		})
	}
}

func deadlockVictim(t *testing.T, db *testenv.DB, blocked, otherID string) {
	migrated(t, db)
	// The database picks the victim by timing: PostgreSQL's check runs once,
	// deadlock_timeout (1 s) after a statement starts waiting, so on a slow
	// machine the relay's delete may have checked before the cycle closed
	// and the other transaction becomes the victim. Then the scenario runs
	// again on fresh rows.
	const attempts = 3
	for a := 1; ; a++ {
		if deadlockAttempt(t, db, blocked, otherID) {
			return
		}
		if a == attempts {
			t.Fatalf("the other transaction was the victim %d times; the test needs the relay's delete to be", attempts)
		}
		t.Logf("attempt %d: the other transaction was the deadlock victim; running the scenario again", a)
	}
}

// deadlockAttempt runs the scenario once. It returns false when the other
// transaction, not the relay's delete, was the deadlock victim.
func deadlockAttempt(t *testing.T, db *testenv.DB, blocked, otherID string) bool {
	ctx := context.Background()
	ids := insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1), msg("author", 2, 1)})
	logs := &testenv.SyncBuffer{}
	r := newRelay(t, db.DB, db, noopPublisher{}, RelayOptions{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if _, err := db.Exec(db.Rebind("UPDATE cqrs_outbox SET claimed_by = ? WHERE id IN (?, ?)"), r.OwnerID(), ids[0], ids[1]); err != nil {
		t.Fatal(err)
	}

	// The other transaction: heavy (a hundred rows written), then it locks
	// the relay's second row.
	other, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback() //nolint:errcheck // after commit: no-op
	for i := range 100 {
		if _, err := other.Exec(db.Rebind("INSERT INTO cqrs_outbox (cqrs_id, entity_key, topic, body) VALUES ('x', ?, 'x', '{}')"),
			fmt.Sprintf("x:%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var otherPID int64
	if err := other.Get(&otherPID, otherID); err != nil {
		t.Fatal(err)
	}
	lock := db.Rebind("UPDATE cqrs_outbox SET attempts = attempts + 1 WHERE id = ?")
	if _, err := other.Exec(lock, ids[1]); err != nil {
		t.Fatal(err)
	}

	// The relay's delete locks the first row and waits for the second.
	done := make(chan error, 1)
	go func() { done <- r.deleteRows(ctx, ids) }()
	testenv.WaitFor(t, 20*time.Second, "the relay's delete blocked on the second row", func() bool {
		select {
		case err := <-done:
			t.Fatalf("the relay's delete did not wait for the locked row: %v", err)
		default:
		}
		var n int
		return db.Get(&n, blocked, otherPID) == nil && n > 0
	})
	// Now the other transaction asks for the first row: a deadlock, whose
	// victim should be the relay's delete.
	if _, err := other.Exec(lock, ids[0]); err != nil {
		if !isDeadlock(err) {
			t.Fatal(err)
		}
		_ = other.Rollback()
		if err := <-done; err != nil { // it goes on once the other is gone
			t.Fatalf("delete after the other transaction's deadlock: %v", err)
		}
		return false
	}
	if err := other.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("delete after a deadlock: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the relay's delete did not finish")
	}
	var left int
	if err := db.Get(&left, db.Rebind("SELECT COUNT(*) FROM cqrs_outbox WHERE id IN (?, ?)"), ids[0], ids[1]); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d of the relay's rows left after its delete", left)
	}
	if !strings.Contains(logs.String(), "deadlock victim") {
		t.Fatalf("no retry logged; the deadlock did not happen?\n%s", logs.String())
	}
	return true
}
