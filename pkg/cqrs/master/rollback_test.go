package master_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// insertAnn inserts the author Ann through m in a transaction of its own
// and returns her primary key.
func insertAnn(t *testing.T, db *testenv.DB, m *master.Master) any {
	t.Helper()
	ctx := context.Background()
	tx := db.MustBeginTx(ctx, nil)
	defer tx.Rollback()
	id, err := m.Insert(ctx, tx, "author", map[string]any{"name": "Ann"})
	must(t, err)
	must(t, tx.Commit())
	return id
}

// TestFailedCallRollsBack cancels the caller's context while a call is
// building its message, after the call changed the row (or, for Save, after
// the caller did): the message cannot be written, so the call must roll the
// transaction back, or a caller committing after the error would commit the
// change without its message and the replicas would never see it. Errors
// found before anything is changed leave the transaction usable.
func TestFailedCallRollsBack(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		// fail is called when the failAt-th message of a case is built.
		var fail func()
		var calls, failAt int
		m := setupAuthor(t, db, master.WithMeta(func(context.Context, registry.Event, *wire.Fields) any {
			if calls++; fail != nil && calls == failAt {
				fail()
			}
			return nil
		}))
		bg := context.Background()
		id := insertAnn(t, db, m)
		seeded := len(outboxBodies(t, db.DB))

		// Every field given: on PostgreSQL the row and its message are
		// written by one statement, after the first message was built; the
		// rating is rounded by the column, so the message is built again
		// from the stored row, and that one fails.
		everyField := 1
		if db.Dialect.Name() == dialect.Postgres {
			everyField = 2
		}
		for _, tc := range []struct {
			name   string
			failAt int
			op     func(ctx context.Context, tx *sqlx.Tx) error
		}{
			{"update", 1, func(ctx context.Context, tx *sqlx.Tx) error {
				return m.Update(ctx, tx, "author", id, map[string]any{"name": "changed"})
			}},
			{"update many", 1, func(ctx context.Context, tx *sqlx.Tx) error {
				return m.UpdateMany(ctx, tx, "author", []any{id}, map[string]any{"active": false})
			}},
			{"delete", 1, func(ctx context.Context, tx *sqlx.Tx) error { return m.Delete(ctx, tx, "author", id) }},
			{"insert, some fields", 1, func(ctx context.Context, tx *sqlx.Tx) error {
				_, err := m.Insert(ctx, tx, "author", map[string]any{"name": "Bob"})
				return err
			}},
			{"insert, every field (one statement on PostgreSQL)", everyField, func(ctx context.Context, tx *sqlx.Tx) error {
				_, err := m.Insert(ctx, tx, "author", map[string]any{"id": 50, "name": "Bob", "birth_date": nil, "rating": "1.005",
					"active": true, "external_uuid": nil, "payload": nil, "created_at": nil})
				return err
			}},
			{"save after the caller's own change", 1, func(ctx context.Context, tx *sqlx.Tx) error {
				if _, err := tx.ExecContext(ctx, db.Dialect.Rebind("UPDATE author SET name = 'caller' WHERE id = ?"), id); err != nil {
					return err
				}
				return m.Save(ctx, tx, "author", id)
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := context.WithCancel(bg)
				defer cancel()
				fail, calls, failAt = cancel, 0, tc.failAt
				defer func() { fail = nil }()
				tx := db.MustBeginTx(bg, nil)
				defer tx.Rollback()
				err := tc.op(ctx, tx)
				if !errors.Is(err, context.Canceled) || !errors.Is(err, master.ErrRolledBack) {
					t.Fatalf("error %v: want the cancellation, and the transaction rolled back", err)
				}
				if err := tx.Commit(); !errors.Is(err, sql.ErrTxDone) {
					t.Fatalf("commit after the failed call: %v, want sql.ErrTxDone", err)
				}
			})
		}
		var rows []struct {
			Name string `db:"name"`
			Rev  int    `db:"cqrs_revision"`
		}
		must(t, db.Select(&rows, "SELECT name, cqrs_revision FROM author"))
		if len(rows) != 1 || rows[0].Name != "Ann" || rows[0].Rev != 0 {
			t.Errorf("author table after the failed calls: %+v, want only Ann at revision 0", rows)
		}
		if n := len(outboxBodies(t, db.DB)); n != seeded {
			t.Errorf("%d outbox rows after the failed calls, want %d", n, seeded)
		}

		// Refused before anything was changed: the transaction goes on. A
		// row the database refuses (a duplicate key; on PostgreSQL the
		// transaction then needs the savepoint) is left to the caller.
		tx := db.MustBeginTx(bg, nil)
		defer tx.Rollback()
		duplicate := func() error {
			_, err := tx.ExecContext(bg, "SAVEPOINT before_insert")
			must(t, err)
			_, err = m.Insert(bg, tx, "author", map[string]any{"id": id, "name": "again", "birth_date": nil, "rating": nil,
				"active": true, "external_uuid": nil, "payload": nil, "created_at": nil})
			if !errors.Is(err, master.ErrRolledBack) {
				_, rbErr := tx.ExecContext(bg, "ROLLBACK TO SAVEPOINT before_insert")
				must(t, rbErr)
			}
			return err
		}
		for _, err := range []error{
			m.Update(bg, tx, "author", id, map[string]any{"nope": 1}),
			m.Update(bg, tx, "author", 999, map[string]any{"name": "x"}),
			m.Save(bg, tx, "author", 999),
			m.Delete(bg, tx, "author", 999),
			duplicate(),
		} {
			if err == nil || errors.Is(err, master.ErrRolledBack) {
				t.Fatalf("error %v: want a refusal that leaves the transaction alone", err)
			}
		}
		must(t, m.Update(bg, tx, "author", id, map[string]any{"name": "after"}))
		must(t, tx.Commit())
		must(t, db.Select(&rows, "SELECT name, cqrs_revision FROM author"))
		if len(rows) != 1 || rows[0].Name != "after" || rows[0].Rev != 1 {
			t.Errorf("author table after the refusals and an update: %+v, want after at revision 1", rows)
		}
		if n := len(outboxBodies(t, db.DB)); n != seeded+1 {
			t.Errorf("%d outbox rows after the update, want %d", n, seeded+1)
		}
	})
}
