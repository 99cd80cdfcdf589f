package replica_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// fixtureDDL creates the replica tables of the wire fixtures
// (replica_schema.json). PostgreSQL has the exact types Django created.
// MariaDB and SQLite get the closest faithful translation: the same
// nullability, decimal(6,2), a boolean (TINYINT(1) / bool), a native UUID
// (MariaDB) or a "uuid" declared type (SQLite), JSON (MariaDB's JSON is
// LONGTEXT with a JSON_VALID check; SQLite declares "json"), DATETIME(6) /
// datetime for timestamptz.
var fixtureDDL = map[dialect.Name][]string{
	dialect.Postgres: {
		`CREATE TABLE author_ref (
			cqrs_revision integer NOT NULL,
			cqrs_updated timestamp with time zone NOT NULL,
			id integer NOT NULL PRIMARY KEY,
			name varchar(200) NOT NULL,
			birth_date date NULL,
			rating numeric(6,2) NULL,
			active boolean NOT NULL,
			external_uuid uuid NULL,
			payload jsonb NULL,
			created_at timestamp with time zone NULL)`,
		`CREATE TABLE book_ref (
			cqrs_revision integer NOT NULL,
			cqrs_updated timestamp with time zone NOT NULL,
			id integer NOT NULL PRIMARY KEY,
			name varchar(200) NOT NULL,
			author_id integer NOT NULL)`,
	},
	dialect.MySQL: {
		"CREATE TABLE author_ref (" +
			"cqrs_revision INT NOT NULL, cqrs_updated DATETIME(6) NOT NULL, id INT NOT NULL PRIMARY KEY," +
			" name VARCHAR(200) NOT NULL, birth_date DATE NULL, rating DECIMAL(6,2) NULL, active TINYINT(1) NOT NULL," +
			" external_uuid UUID NULL, payload JSON NULL, created_at DATETIME(6) NULL)",
		"CREATE TABLE book_ref (" +
			"cqrs_revision INT NOT NULL, cqrs_updated DATETIME(6) NOT NULL, id INT NOT NULL PRIMARY KEY," +
			" name VARCHAR(200) NOT NULL, author_id INT NOT NULL)",
	},
	dialect.SQLite: {
		`CREATE TABLE "author_ref" ("cqrs_revision" integer NOT NULL, "cqrs_updated" datetime NOT NULL,
			"id" integer NOT NULL PRIMARY KEY, "name" varchar(200) NOT NULL, "birth_date" date NULL,
			"rating" decimal(6,2) NULL, "active" bool NOT NULL, "external_uuid" uuid NULL, "payload" json NULL,
			"created_at" datetime NULL)`,
		`CREATE TABLE "book_ref" ("cqrs_revision" integer NOT NULL, "cqrs_updated" datetime NOT NULL,
			"id" integer NOT NULL PRIMARY KEY, "name" varchar(200) NOT NULL, "author_id" integer NOT NULL)`,
	},
}

func createFixtureTables(t *testing.T, db *testenv.DB) {
	t.Helper()
	for _, s := range fixtureDDL[db.Dialect.Name()] {
		if _, err := db.ExecContext(context.Background(), s); err != nil {
			t.Fatalf("create fixture table: %v", err)
		}
	}
}

// failHook is the fixture replica's cqrs_create override: "fail-always"
// always raises, "fail-once" raises the first time its pk is seen by this
// engine ("worker process"); every other row gets the default create.
type failHook struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (h *failHook) create(ctx context.Context, ac *registry.ApplyContext, data *wire.Fields) error {
	name, _ := data.Get("name")
	pk, _ := data.Get("id")
	switch name {
	case "fail-always":
		return errors.New("fixture replica: fail-always")
	case "fail-once":
		h.mu.Lock()
		first := !h.seen[pkKeyOf(pk)]
		h.seen[pkKeyOf(pk)] = true
		h.mu.Unlock()
		if first {
			return errors.New("fixture replica: fail-once (first attempt)")
		}
	}
	return replica.DefaultCreate(ctx, ac, data)
}

func pkKeyOf(v any) string {
	b, _ := wire.MarshalValue(v)
	return string(b)
}

// fixtureRegistry registers the models as the fixture README §1 "Replica"
// declares them: author with every column and a create override, book with
// CQRS_MAPPING {"id": "id", "title": "name", "author": "author_id"}.
func fixtureRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	reg := registry.New()
	h := &failHook{seen: map[string]bool{}}
	if err := reg.RegisterReplica(registry.ReplicaModel{
		CQRSID: "author", Table: "author_ref", PK: "id",
		Hooks: registry.ReplicaHooks{Create: h.create},
	}); err != nil {
		t.Fatal(err)
	}
	if err := reg.RegisterReplica(registry.ReplicaModel{
		CQRSID: "book", Table: "book_ref", PK: "id",
		Mapping: []registry.Mapping{{From: "id", To: "id"}, {From: "title", To: "name"}, {From: "author", To: "author_id"}},
	}); err != nil {
		t.Fatal(err)
	}
	return reg
}

// plainFixtureRegistry is fixtureRegistry without the author create hook:
// the author model is then applied by ApplyBatch's multi-row path.
func plainFixtureRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	reg := registry.New()
	if err := reg.RegisterReplica(registry.ReplicaModel{CQRSID: "author", Table: "author_ref", PK: "id"}); err != nil {
		t.Fatal(err)
	}
	if err := reg.RegisterReplica(registry.ReplicaModel{
		CQRSID: "book", Table: "book_ref", PK: "id",
		Mapping: []registry.Mapping{{From: "id", To: "id"}, {From: "title", To: "name"}, {From: "author", To: "author_id"}},
	}); err != nil {
		t.Fatal(err)
	}
	return reg
}
