package outbox

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

func TestRollbackLeavesNothing(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		ctx := context.Background()
		tx := db.MustBeginTx(ctx, nil)
		ids, err := Insert(ctx, tx, db.Dialect, []Message{msg("author", 1, 1), msg("author", 2, 1)})
		if err != nil || len(ids) != 2 {
			t.Fatalf("insert: %v %v", ids, err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if n := rowCount(t, db); n != 0 {
			t.Fatalf("%d rows after rollback, want 0", n)
		}
		s := newSink(t, "author")
		r := newRelay(t, db.DB, db, s, RelayOptions{})
		n, err := r.RunOnce(ctx)
		if err != nil || n != 0 {
			t.Fatalf("RunOnce after rollback = %d, %v; want 0, nil", n, err)
		}
		if c := s.count(); c != 0 {
			t.Fatalf("%d messages after rollback, want 0", c)
		}
	})
}

func TestInsertThenReplaceSendsLastState(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		ctx := context.Background()
		tx := db.MustBeginTx(ctx, nil)
		first := msg("author", 7, 1)
		first.Headers = map[string]string{"h": "first"}
		ids, err := Insert(ctx, tx, db.Dialect, []Message{first})
		if err != nil {
			t.Fatal(err)
		}
		second := msg("author", 7, 2)
		second.Headers = map[string]string{"h": "second"}
		if err := Replace(ctx, tx, db.Dialect, ids[0], second); err != nil {
			t.Fatalf("replace: %v", err)
		}
		// Replacing with identical values is not "gone" (MySQL reports 0 changed rows).
		if err := Replace(ctx, tx, db.Dialect, ids[0], second); err != nil {
			t.Fatalf("replace with same values: %v", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		s := newSink(t, "author")
		r := newRelay(t, db.DB, db, s, RelayOptions{Headers: map[string]string{"source": "test", "h": "relay"}})
		if n := drain(t, r, db); n != 1 {
			t.Fatalf("published %d, want 1", n)
		}
		got := s.all()
		if len(got) != 1 || got[0].body != string(second.Body) {
			t.Fatalf("messages = %+v, want one with body %s", got, second.Body)
		}
		md := got[0].metadata
		if md.Get("h") != "second" || md.Get("source") != "test" || got[0].cqrsID != "author" ||
			got[0].entityKey != "author:7" || got[0].outboxID != ids[0] {
			t.Fatalf("metadata = %v", md)
		}

		// The row is gone now: Replace says so.
		tx = db.MustBeginTx(ctx, nil)
		defer tx.Rollback() //nolint:errcheck
		err = Replace(ctx, tx, db.Dialect, ids[0], second)
		if !errors.Is(err, ErrGone) {
			t.Fatalf("replace of published row = %v, want ErrGone", err)
		}
	})
}

func TestReplaceOfClaimedRowIsGone(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		ctx := context.Background()
		ids := insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1)})
		r := newRelay(t, db.DB, db, noopPublisher{}, RelayOptions{OwnerID: "holder"})
		if rows, err := r.claim(ctx); err != nil || len(rows) != 1 {
			t.Fatalf("claim: %v %v", rows, err)
		}
		tx := db.MustBeginTx(ctx, nil)
		defer tx.Rollback() //nolint:errcheck
		err := Replace(ctx, tx, db.Dialect, ids[0], msg("author", 1, 2))
		if !errors.Is(err, ErrGone) || !strings.Contains(err.Error(), "holder") {
			t.Fatalf("replace of claimed row = %v, want ErrGone naming the holder", err)
		}
	})
}

func TestInsertManyChunksKeepsOrder(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		msgs := make([]Message, 2*insertChunkRows+37)
		for i := range msgs {
			msgs[i] = msg("book", i%13, i)
		}
		ids := insertCommitted(t, db.DB, db, msgs)
		if db.Dialect.Name() == dialect.MySQL && mysqlNoReturning.Load() {
			t.Errorf("MariaDB rejected INSERT ... RETURNING; inserts fell back to one row at a time")
		}
		if len(ids) != len(msgs) {
			t.Fatalf("%d ids for %d messages", len(ids), len(msgs))
		}
		for i := 1; i < len(ids); i++ {
			if ids[i] <= ids[i-1] {
				t.Fatalf("ids not ascending at %d: %d then %d", i, ids[i-1], ids[i])
			}
		}
		rows := rowsOf(t, db)
		if len(rows) != len(msgs) {
			t.Fatalf("%d rows, want %d", len(rows), len(msgs))
		}
		for i, row := range rows {
			if row.ID != ids[i] || row.Body != string(msgs[i].Body) {
				t.Fatalf("row %d = id %d body %s, want id %d body %s", i, row.ID, row.Body, ids[i], msgs[i].Body)
			}
		}
	})
}

func TestInsertOneByOneOnMySQLWithoutReturning(t *testing.T) {
	// Not parallel: it flips the package's MySQL fallback switch.
	db := testenv.MySQL(t)
	migrated(t, db)
	mysqlNoReturning.Store(true)
	defer mysqlNoReturning.Store(false)
	msgs := []Message{msg("a", 1, 1), msg("a", 2, 1), msg("a", 1, 2)}
	ids := insertCommitted(t, db.DB, db, msgs)
	rows := rowsOf(t, db)
	if len(ids) != 3 || len(rows) != 3 {
		t.Fatalf("ids %v, rows %d", ids, len(rows))
	}
	for i := range rows {
		if rows[i].ID != ids[i] || rows[i].Body != string(msgs[i].Body) {
			t.Fatalf("row %d: id %d body %s, want id %d body %s", i, rows[i].ID, rows[i].Body, ids[i], msgs[i].Body)
		}
	}
}

func TestInsertRejectsBadMessages(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	migrated(t, db)
	ctx := context.Background()
	good := msg("author", 1, 1)
	cases := map[string]func(m *Message){
		"empty CQRSID":    func(m *Message) { m.CQRSID = "" },
		"empty EntityKey": func(m *Message) { m.EntityKey = "" },
		"empty Topic":     func(m *Message) { m.Topic = "" },
		"Topic longer":    func(m *Message) { m.Topic = strings.Repeat("t", MaxTopicLen+1) },
		"not valid UTF-8": func(m *Message) { m.Body = []byte{0xff, 0xfe} },
	}
	for want, mutate := range cases {
		bad := good
		mutate(&bad)
		tx := db.MustBeginTx(ctx, nil)
		_, err := Insert(ctx, tx, db.Dialect, []Message{good, bad})
		_ = tx.Rollback()
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "message 1") {
			t.Errorf("%s: err = %v, want one naming message 1 and %q", want, err, want)
		}
	}
	if _, err := Insert(ctx, nil, db.Dialect, []Message{good}); err == nil {
		t.Error("Insert with nil tx succeeded")
	}
	tx := db.MustBeginTx(ctx, nil)
	defer tx.Rollback() //nolint:errcheck
	if _, err := Insert(ctx, tx, dialect.Dialect{}, []Message{good}); err == nil {
		t.Error("Insert with zero dialect succeeded")
	}
	if ids, err := Insert(ctx, tx, db.Dialect, nil); err != nil || len(ids) != 0 {
		t.Errorf("Insert of nothing = %v, %v; want no ids, nil", ids, err)
	}
}
