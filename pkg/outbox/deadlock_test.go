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

	"github.com/gocqrs/gocqrs/internal/testenv"
)

func TestIsDeadlock(t *testing.T) {
	deadlock := &mysql.MySQLError{Number: 1213, Message: "Deadlock found when trying to get lock"}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{deadlock, true},
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

// TestMySQLDeadlockVictimRunsAgain: a relay's delete that InnoDB picks as
// the victim of a deadlock (against a heavier transaction that holds one of
// its rows and then asks for another) is run again and deletes its rows; it
// is not reported as a failure.
func TestMySQLDeadlockVictimRunsAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.MySQL(t)
	migrated(t, db)
	ids := insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1), msg("author", 2, 1)})
	logs := &testenv.SyncBuffer{}
	r := newRelay(t, db.DB, db, noopPublisher{}, RelayOptions{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if _, err := db.Exec("UPDATE cqrs_outbox SET claimed_by = ?", r.OwnerID()); err != nil {
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
		if _, err := other.Exec("INSERT INTO cqrs_outbox (cqrs_id, entity_key, topic, body) VALUES ('x', ?, 'x', '{}')",
			fmt.Sprintf("x:%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := other.Exec("UPDATE cqrs_outbox SET attempts = attempts + 1 WHERE id = ?", ids[1]); err != nil {
		t.Fatal(err)
	}

	// The relay's delete locks the first row and waits for the second.
	done := make(chan error, 1)
	go func() { done <- r.deleteRows(ctx, ids) }()
	// InnoDB's lock-wait tables do not list it here (MariaDB 10.11); the
	// process list shows the statement blocked.
	testenv.WaitFor(t, 20*time.Second, "the relay's delete blocked for 200 ms", func() bool {
		select {
		case err := <-done:
			t.Fatalf("the relay's delete did not wait for the locked row: %v", err)
		default:
		}
		var n int
		err := db.Get(&n, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE info LIKE 'DELETE FROM `cqrs_outbox`%' AND time_ms > 200")
		return err == nil && n > 0
	})
	// Now the other transaction asks for the first row: a deadlock, whose
	// victim is the lighter transaction, the relay's delete.
	if _, err := other.Exec("UPDATE cqrs_outbox SET attempts = attempts + 1 WHERE id = ?", ids[0]); err != nil {
		t.Fatalf("the heavier transaction was the victim (%v); the test needs the relay's delete to be", err)
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
	if err := db.Get(&left, "SELECT COUNT(*) FROM cqrs_outbox WHERE id IN (?, ?)", ids[0], ids[1]); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d of the relay's rows left after its delete", left)
	}
	if !strings.Contains(logs.String(), "deadlock victim") {
		t.Fatalf("no retry logged; the deadlock did not happen?\n%s", logs.String())
	}
}
