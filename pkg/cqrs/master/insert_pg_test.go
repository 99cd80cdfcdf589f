package master

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

var pgClock = time.Date(2026, 11, 27, 10, 0, 0, 123456000, time.UTC)

// pgMaster creates table (the author columns, plus extra SQL run after
// it), the outbox named table+"_outbox" and a master for cqrs_id "author"
// on them.
func pgMaster(t *testing.T, db *testenv.DB, table string, extra ...string) *Master {
	t.Helper()
	ctx := context.Background()
	stmts := append([]string{`CREATE TABLE ` + table + ` (id BIGINT PRIMARY KEY, name TEXT NOT NULL, rating NUMERIC(6,2) NULL,
		active BOOLEAN NOT NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NULL)`}, extra...)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := outbox.Migrate(ctx, db.DB, db.Dialect, outbox.WithTable(table+"_outbox")); err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	if err := reg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: table, TrackedFields: []string{"name"}}); err != nil {
		t.Fatal(err)
	}
	m, err := New(ctx, db.DB, reg, WithClock(func() time.Time { return pgClock }), WithOutboxTable(table+"_outbox"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// outboxRow is one outbox row as the relay would publish it.
type outboxRow struct {
	EntityKey string  `db:"entity_key"`
	Topic     string  `db:"topic"`
	Body      string  `db:"body"`
	Headers   *string `db:"headers"`
}

func outboxRows(t *testing.T, db *testenv.DB, table string) []outboxRow {
	t.Helper()
	var rows []outboxRow
	if err := db.Select(&rows, "SELECT entity_key, topic, body, headers FROM "+table+"_outbox ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	return rows
}

// inTx runs fn in a transaction and commits it.
func inTx(t *testing.T, db *testenv.DB, fn func(tx *sqlx.Tx) error) {
	t.Helper()
	tx, err := db.BeginTxx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func (m *Master) stats(cqrsID string) *predictStats {
	s, _ := m.predict.LoadOrStore(cqrsID, &predictStats{})
	return s.(*predictStats)
}

// On PostgreSQL an Insert of every field writes the row and its message in
// one statement; the message is the one the two statements write.
func TestInsertOneStatementSameMessage(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := context.Background()
	one := pgMaster(t, db, "one")
	two := pgMaster(t, db, "two")
	two.stats("author").misses.Store(1 << 30) // never predicts: two statements
	values := map[string]any{"id": 7, "name": "Ann", "rating": "4.5", "active": true}
	for _, m := range []*Master{one, two} {
		inTx(t, db, func(tx *sqlx.Tx) error {
			pk, err := m.Insert(ctx, tx, "author", values)
			if err == nil && pk != int64(7) {
				t.Errorf("pk = %v (%T), want int64 7", pk, pk)
			}
			return err
		})
	}
	if s := one.stats("author"); s.tries.Load() != 1 || s.misses.Load() != 0 {
		t.Fatalf("one statement: %d tries, %d misses; want 1, 0", s.tries.Load(), s.misses.Load())
	}
	if s := two.stats("author"); s.tries.Load() != 0 {
		t.Fatalf("two statements: %d tries, want 0", s.tries.Load())
	}
	a, b := outboxRows(t, db, "one"), outboxRows(t, db, "two")
	if len(a) != 1 || len(b) != 1 || a[0].Body != b[0].Body || *a[0].Headers != *b[0].Headers ||
		a[0].EntityKey != b[0].EntityKey || a[0].Topic != b[0].Topic {
		t.Fatalf("one statement wrote %+v, two statements %+v; want the same single message", a, b)
	}
	t.Logf("message: %s", a[0].Body)
}

// When the database stores another row than the values predict (here a
// trigger), the message is rewritten from the stored row; when even the
// primary key differs, the predicted outbox row is replaced by one of the
// real entity. After repeated mispredictions the model goes back to two
// statements.
func TestInsertOneStatementMispredicted(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := context.Background()
	m := pgMaster(t, db, "trig",
		`CREATE FUNCTION trig_upper() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN
			NEW.name := upper(NEW.name);
			IF NEW.id >= 100 THEN NEW.id := NEW.id + 1000; END IF;
			RETURN NEW;
		END$$`,
		`CREATE TRIGGER trig_upper BEFORE INSERT ON trig FOR EACH ROW EXECUTE FUNCTION trig_upper()`)
	var pk any
	inTx(t, db, func(tx *sqlx.Tx) (err error) {
		pk, err = m.Insert(ctx, tx, "author", map[string]any{"id": 1, "name": "ann", "rating": nil, "active": true})
		return err
	})
	rows := outboxRows(t, db, "trig")
	if pk != int64(1) || len(rows) != 1 || rows[0].EntityKey != "author:1" || !contains(rows[0].Body, `"name":"ANN"`) {
		t.Fatalf("pk %v, outbox %+v; want one message of author:1 with the stored name ANN", pk, rows)
	}
	inTx(t, db, func(tx *sqlx.Tx) (err error) {
		pk, err = m.Insert(ctx, tx, "author", map[string]any{"id": 100, "name": "bob", "rating": "1", "active": false})
		return err
	})
	rows = outboxRows(t, db, "trig")
	if pk != int64(1100) || len(rows) != 2 || rows[1].EntityKey != "author:1100" ||
		!contains(rows[1].Body, `"id":1100`) || !contains(rows[1].Body, `"name":"BOB"`) {
		t.Fatalf("pk %v, outbox %+v; want a second message, of author:1100 as stored", pk, rows)
	}
	if s := m.stats("author"); s.tries.Load() != 2 || s.misses.Load() != 2 {
		t.Fatalf("%d tries, %d misses; want 2, 2", s.tries.Load(), s.misses.Load())
	}
	for i := 2; i <= 6; i++ {
		inTx(t, db, func(tx *sqlx.Tx) error {
			_, err := m.Insert(ctx, tx, "author", map[string]any{"id": i, "name": "x", "rating": nil, "active": true})
			return err
		})
	}
	if s := m.stats("author"); s.tries.Load() != 5 || s.misses.Load() != 5 {
		t.Fatalf("%d tries, %d misses; want 5 and 5: after 5 misses, two statements", s.tries.Load(), s.misses.Load())
	}
	if rows := outboxRows(t, db, "trig"); len(rows) != 7 || !contains(rows[6].Body, `"name":"X"`) {
		t.Fatalf("outbox %+v; want 7 messages, the last with X", rows)
	}
}

// Within one transaction, a one-statement Insert is followed by the
// transaction's other changes as the two statements are: an Update of the
// row rewrites its message (one message, the final state); a row deleted
// and inserted again keeps its DELETE and gets a SAVE; a rollback leaves
// nothing.
func TestInsertOneStatementInTransaction(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := context.Background()
	m := pgMaster(t, db, "tx")
	inTx(t, db, func(tx *sqlx.Tx) error {
		if _, err := m.Insert(ctx, tx, "author", map[string]any{"id": 1, "name": "a", "rating": "2.25", "active": true}); err != nil {
			return err
		}
		return m.Update(ctx, tx, "author", 1, map[string]any{"name": "b"})
	})
	rows := outboxRows(t, db, "tx")
	if len(rows) != 1 || !contains(rows[0].Body, `"name":"b"`) || !contains(rows[0].Body, `"cqrs_revision":0`) {
		t.Fatalf("outbox %+v; want one message with the final name b at revision 0", rows)
	}
	inTx(t, db, func(tx *sqlx.Tx) error {
		if err := m.Delete(ctx, tx, "author", 1); err != nil {
			return err
		}
		_, err := m.Insert(ctx, tx, "author", map[string]any{"id": 1, "name": "c", "rating": nil, "active": false})
		return err
	})
	rows = outboxRows(t, db, "tx")
	if len(rows) != 3 || !contains(rows[1].Body, `"signal_type":"DELETE"`) || !contains(rows[2].Body, `"name":"c"`) {
		t.Fatalf("outbox %+v; want the DELETE then the SAVE of c", rows)
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Insert(ctx, tx, "author", map[string]any{"id": 2, "name": "d", "rating": nil, "active": true}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if rows := outboxRows(t, db, "tx"); len(rows) != 3 {
		t.Fatalf("%d outbox rows after a rolled-back insert, want 3", len(rows))
	}
	if s := m.stats("author"); s.tries.Load() != 3 || s.misses.Load() != 0 {
		t.Fatalf("%d tries, %d misses; want 3 one-statement inserts, no miss", s.tries.Load(), s.misses.Load())
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
