package integration

import (
	"context"
	"testing"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
)

// createTable creates the fixture's Author table (fixtures.AuthorColumns)
// named name: "author" for a master, "author_ref" for a replica.
func createTable(t *testing.T, db *testenv.DB, name string) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), "CREATE TABLE "+name+" "+fixtures.AuthorColumns[db.Dialect.Name()]); err != nil {
		t.Fatalf("create %s on %s: %v", name, db.Dialect, err)
	}
}
