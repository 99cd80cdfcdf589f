package integration

import (
	"context"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// The author table of the end-to-end tests, per dialect: every column kind
// gocqrs maps. The master table is "author", the replica table "author_ref".
var authorColumns = map[dialect.Name]string{
	dialect.Postgres: `(id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL, birth_date DATE NULL,
	  rating NUMERIC(6,2) NULL, active BOOLEAN NOT NULL DEFAULT TRUE, external_uuid UUID NULL, payload JSONB NULL,
	  created_at TIMESTAMPTZ NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NULL)`,
	dialect.MySQL: `(id INT PRIMARY KEY, name VARCHAR(200) NOT NULL, birth_date DATE NULL,
	  rating DECIMAL(6,2) NULL, active TINYINT(1) NOT NULL DEFAULT 1, external_uuid UUID NULL, payload JSON NULL,
	  created_at DATETIME(6) NULL, cqrs_revision INT NOT NULL DEFAULT 0, cqrs_updated DATETIME(6) NULL)`,
	dialect.SQLite: `(id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL, birth_date DATE NULL,
	  rating DECIMAL(6,2) NULL, active BOOL NOT NULL DEFAULT 1, external_uuid UUID NULL, payload JSON NULL,
	  created_at DATETIME NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME NULL)`,
}

func createTable(t *testing.T, db *testenv.DB, name string) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), "CREATE TABLE "+name+" "+authorColumns[db.Dialect.Name()]); err != nil {
		t.Fatalf("create %s on %s: %v", name, db.Dialect, err)
	}
}
