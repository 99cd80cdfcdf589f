package outbox

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		ctx := context.Background()
		for i := 0; i < 2; i++ {
			if err := Migrate(ctx, db.DB, db.Dialect); err != nil {
				t.Fatalf("migrate #%d: %v", i+1, err)
			}
		}
		var versions []int
		if err := db.Select(&versions, "SELECT version FROM cqrs_outbox_migrations ORDER BY version"); err != nil {
			t.Fatalf("read versions: %v", err)
		}
		steps, err := migrationsFor(db.Dialect)
		if err != nil {
			t.Fatal(err)
		}
		if len(versions) != len(steps) || versions[0] != 1 {
			t.Fatalf("applied versions = %v, want one per migration (%d)", versions, len(steps))
		}
		cols, err := db.Dialect.Columns(ctx, db, "cqrs_outbox")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range cols {
			got = append(got, c.Name)
		}
		want := "id cqrs_id entity_key topic body headers created_at claimed_by claimed_until attempts last_error"
		if strings.Join(got, " ") != want {
			t.Fatalf("columns = %v, want %s", got, want)
		}
		nullable := map[string]bool{}
		for _, c := range cols {
			nullable[c.Name] = c.Nullable
		}
		for _, c := range []string{"headers", "claimed_by", "claimed_until", "last_error"} {
			if !nullable[c] {
				t.Errorf("column %s is NOT NULL, want nullable", c)
			}
		}
		if nullable["body"] || nullable["entity_key"] {
			t.Errorf("body/entity_key nullable, want NOT NULL")
		}
	})
}

func TestMigrateCustomTableAndConcurrent(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = Migrate(ctx, db.DB, db.Dialect, WithTable("shop_outbox"))
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("concurrent migrate #%d: %v", i, err)
			}
		}
		var n int
		if err := db.Get(&n, "SELECT COUNT(*) FROM shop_outbox_migrations"); err != nil {
			t.Fatal(err)
		}
		steps, err := migrationsFor(db.Dialect)
		if err != nil {
			t.Fatal(err)
		}
		if n != len(steps) {
			t.Fatalf("shop_outbox_migrations has %d rows, want %d (one per migration)", n, len(steps))
		}
		ids := insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1)}, WithTable("shop_outbox"))
		if len(ids) != 1 {
			t.Fatalf("ids = %v", ids)
		}
		if c := rowCount(t, db, WithTable("shop_outbox")); c != 1 {
			t.Fatalf("shop_outbox has %d rows, want 1", c)
		}
		// The default table was not created.
		if _, err := db.Dialect.Columns(ctx, db, "cqrs_outbox"); err == nil {
			t.Fatalf("cqrs_outbox exists, want only shop_outbox")
		}
	})
}

func TestBadTableNames(t *testing.T) {
	t.Parallel()
	d, _ := dialect.For("sqlite")
	db := testenv.SQLite(t)
	ctx := context.Background()
	for _, name := range []string{"", "1abc", "a;drop table x", "a.b.c", strings.Repeat("x", 53)} {
		err := Migrate(ctx, db.DB, d, WithTable(name))
		if err == nil || !strings.Contains(err.Error(), "table name") {
			t.Errorf("Migrate(WithTable(%q)) = %v, want a table name error", name, err)
		}
		if _, err := NewRelay(db.DB, d, noopPublisher{}, RelayOptions{Table: name}); name != "" && err == nil {
			t.Errorf("NewRelay(Table %q) succeeded, want error", name)
		}
	}
	if err := Migrate(ctx, db.DB, dialect.Dialect{}); err == nil || !strings.Contains(err.Error(), "invalid dialect") {
		t.Errorf("Migrate with zero dialect = %v, want invalid dialect error", err)
	}
}

func TestStatementsSplit(t *testing.T) {
	got := statements("-- head;\n-- only comment\nCREATE A (x);\n\n-- c\nCREATE B;\n-- tail\n")
	if len(got) != 2 || !strings.HasSuffix(got[0], "CREATE A (x)") || !strings.HasSuffix(got[1], "CREATE B") {
		t.Fatalf("statements = %q", got)
	}
}

// A dollar-quoted body spanning lines stays one statement, its inner
// semicolons at the end of lines included; one on a single line too.
func TestStatementsSplitDollarQuoted(t *testing.T) {
	script := "CREATE FUNCTION f() RETURNS trigger AS $$\nBEGIN\n    PERFORM 1;\n    RETURN NULL;\nEND\n$$;\n" +
		"CREATE FUNCTION g() AS $$BEGIN RETURN NULL; END$$;\nDROP X;"
	got := statements(script)
	if len(got) != 3 || !strings.Contains(got[0], "PERFORM 1;\n    RETURN NULL;\nEND\n$$") ||
		!strings.HasSuffix(got[1], "END$$") || got[2] != "DROP X" {
		t.Fatalf("statements = %q", got)
	}
}
