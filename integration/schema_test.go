package integration

import (
	"context"
	"fmt"
	"testing"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// createTable creates the fixture's Author table (fixtures.AuthorColumns)
// named name: "author" for a master, "author_ref" for a replica.
func createTable(t *testing.T, db *testenv.DB, name string) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), "CREATE TABLE "+name+" "+fixtures.AuthorColumns[db.Dialect.Name()]); err != nil {
		t.Fatalf("create %s on %s: %v", name, db.Dialect, err)
	}
}

// orphanMaster returns a SQLite master database with the tables and master
// models "author" and "orphan" and its outbox, and a function that commits
// the insert of row id of a model in a transaction of its own.
func orphanMaster(t *testing.T) (*testenv.DB, func(cqrsID string, id int)) {
	t.Helper()
	ctx := context.Background()
	db := testenv.SQLite(t)
	createTable(t, db, "author")
	if _, err := db.ExecContext(ctx, `CREATE TABLE orphan (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL,
		cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Migrate(ctx, db.DB, db.Dialect); err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	for _, m := range []registry.MasterModel{{CQRSID: "author", Table: "author"}, {CQRSID: "orphan", Table: "orphan"}} {
		if err := reg.RegisterMaster(m); err != nil {
			t.Fatal(err)
		}
	}
	m, err := master.New(ctx, db.DB, reg)
	if err != nil {
		t.Fatal(err)
	}
	insert := func(cqrsID string, id int) {
		t.Helper()
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Insert(ctx, tx, cqrsID, map[string]any{"id": id, "name": fmt.Sprintf("%s %d", cqrsID, id)}); err != nil {
			_ = tx.Rollback()
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	return db, insert
}
