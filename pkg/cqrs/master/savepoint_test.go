package master_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// TestSavepointRollbackForgetsUndoneWrites rolls back to a savepoint taken
// before a master call and calls the master again for the same row in the
// same transaction: the undone call's bookkeeping (revision bumped, outbox
// row written) must be forgotten, so that the committed message carries the
// row as committed at a revision one above the last one sent, or replicas
// would skip it as a duplicate.
func TestSavepointRollbackForgetsUndoneWrites(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		m := setupAuthor(t, db)
		bg := context.Background()
		id := insertAnn(t, db, m)
		seen := len(readOutbox(t, db, db.Dialect))
		exec := func(tx *sqlx.Tx, q string) {
			t.Helper()
			_, err := tx.ExecContext(bg, q)
			must(t, err)
		}
		update := func(tx *sqlx.Tx, name string) {
			t.Helper()
			must(t, m.Update(bg, tx, "author", id, map[string]any{"name": name}))
		}
		// step runs fn in a transaction, commits it and returns the
		// messages it wrote, as "signal instance_data previous_data".
		step := func(fn func(tx *sqlx.Tx)) []string {
			t.Helper()
			tx := db.MustBeginTx(bg, nil)
			defer tx.Rollback()
			fn(tx)
			must(t, tx.Commit())
			all := readOutbox(t, db, db.Dialect)
			var got []string
			for _, o := range all[seen:] {
				got = append(got, fmt.Sprintf("%s rev=%s name=%s prev=%s", o.p.SignalType, o.data(t, wire.RevisionKey),
					o.data(t, "name"), jsonText(t, o.p.PreviousData)))
			}
			seen = len(all)
			return got
		}
		for _, tc := range []struct {
			name string
			fn   func(tx *sqlx.Tx)
			want []string
		}{
			{"update undone, update again", func(tx *sqlx.Tx) {
				exec(tx, "SAVEPOINT a")
				update(tx, "x")
				exec(tx, "ROLLBACK TO SAVEPOINT a")
				update(tx, "y")
			}, []string{`SAVE rev=1 name="y" prev={"name":"Ann"}`}},
			{"second update undone", func(tx *sqlx.Tx) {
				update(tx, "z")
				exec(tx, "SAVEPOINT b")
				update(tx, "q")
				exec(tx, "ROLLBACK TO SAVEPOINT b")
				update(tx, "w")
			}, []string{`SAVE rev=2 name="w" prev={"name":"y"}`}},
			{"delete undone, then update", func(tx *sqlx.Tx) {
				exec(tx, "SAVEPOINT c")
				must(t, m.Delete(bg, tx, "author", id))
				exec(tx, "ROLLBACK TO SAVEPOINT c")
				update(tx, "v")
			}, []string{`SAVE rev=3 name="v" prev={"name":"w"}`}},
			{"save of the caller's change undone, then delete", func(tx *sqlx.Tx) {
				exec(tx, "SAVEPOINT d")
				exec(tx, "UPDATE author SET name = 'u'")
				must(t, m.Save(bg, tx, "author", id))
				exec(tx, "ROLLBACK TO SAVEPOINT d")
				must(t, m.Delete(bg, tx, "author", id))
			}, []string{`DELETE rev=4 name=<missing> prev=null`}},
			{"insert undone, insert again", func(tx *sqlx.Tx) {
				exec(tx, "SAVEPOINT e")
				_, err := m.Insert(bg, tx, "author", map[string]any{"id": 60, "name": "n1"})
				must(t, err)
				exec(tx, "ROLLBACK TO SAVEPOINT e")
				_, err = m.Insert(bg, tx, "author", map[string]any{"id": 60, "name": "n2"})
				must(t, err)
			}, []string{`SAVE rev=0 name="n2" prev={"name":null}`}},
		} {
			got := step(tc.fn)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("%s: messages\n%q\nwant\n%q", tc.name, got, tc.want)
			}
		}
		var rows []struct {
			ID   int    `db:"id"`
			Name string `db:"name"`
			Rev  int    `db:"cqrs_revision"`
		}
		must(t, db.Select(&rows, "SELECT id, name, cqrs_revision FROM author ORDER BY id"))
		if len(rows) != 1 || rows[0].ID != 60 || rows[0].Name != "n2" || rows[0].Rev != 0 {
			t.Errorf("author table: %+v, want only 60 n2 at revision 0", rows)
		}
	})
}

// TestSavepointRollbackProduceOff is the same with a master that writes no
// messages: the undone bump is told by the row's revision alone.
func TestSavepointRollbackProduceOff(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		m := setupAuthor(t, db, master.WithProduceOff())
		bg := context.Background()
		id := insertAnn(t, db, m)
		tx := db.MustBeginTx(bg, nil)
		defer tx.Rollback()
		for _, q := range []string{"SAVEPOINT a", "", "ROLLBACK TO SAVEPOINT a", ""} {
			if q == "" {
				must(t, m.Update(bg, tx, "author", id, map[string]any{"name": "x"}))
				continue
			}
			_, err := tx.ExecContext(bg, q)
			must(t, err)
		}
		must(t, tx.Commit())
		var rev int
		must(t, db.Get(&rev, "SELECT cqrs_revision FROM author"))
		if rev != 1 {
			t.Errorf("revision %d after an undone update and an update, want 1", rev)
		}
		if n := len(readOutbox(t, db, db.Dialect)); n != 0 {
			t.Errorf("%d outbox rows with produce off", n)
		}
	})
}
