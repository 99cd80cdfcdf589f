package registry_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
)

// schema creates the tables the Bind tests use. The sync columns sit in the
// middle of author to show that they are left out without disturbing the
// order of the others.
func schema(t *testing.T, db *testenv.DB) {
	t.Helper()
	var ddl []string
	switch db.Dialect.Name() {
	case dialect.Postgres:
		ddl = []string{
			`CREATE TABLE author (id serial PRIMARY KEY, name varchar(200) NOT NULL,
  cqrs_revision integer NOT NULL DEFAULT 0, cqrs_updated timestamptz NOT NULL,
  birth_date date, rating numeric(6,2), active boolean NOT NULL DEFAULT true,
  external_uuid uuid, payload jsonb, created_at timestamptz, photo bytea)`,
			`CREATE TABLE book (id integer PRIMARY KEY, title varchar(200) NOT NULL, author_id integer NOT NULL,
  cqrs_revision integer NOT NULL, cqrs_updated timestamptz NOT NULL)`,
			`CREATE TABLE no_updated (id integer PRIMARY KEY, cqrs_revision integer NOT NULL)`,
			`CREATE TABLE custom_sync (code varchar(50) PRIMARY KEY, name text, rev bigint NOT NULL, changed timestamptz NOT NULL)`,
		}
	case dialect.MySQL:
		ddl = []string{
			`CREATE TABLE author (id int AUTO_INCREMENT PRIMARY KEY, name varchar(200) NOT NULL,
  cqrs_revision int NOT NULL DEFAULT 0, cqrs_updated datetime(6) NOT NULL,
  birth_date date, rating decimal(6,2), active boolean NOT NULL DEFAULT true,
  external_uuid uuid, payload json, created_at datetime(6), photo longblob)`,
			`CREATE TABLE book (id int PRIMARY KEY, title varchar(200) NOT NULL, author_id int NOT NULL,
  cqrs_revision int NOT NULL, cqrs_updated datetime(6) NOT NULL)`,
			`CREATE TABLE no_updated (id int PRIMARY KEY, cqrs_revision int NOT NULL)`,
			`CREATE TABLE custom_sync (code varchar(50) PRIMARY KEY, name text, rev bigint NOT NULL, changed datetime(6) NOT NULL)`,
		}
	case dialect.SQLite:
		ddl = []string{
			`CREATE TABLE author (id integer NOT NULL PRIMARY KEY, name varchar(200) NOT NULL,
  cqrs_revision integer NOT NULL DEFAULT 0, cqrs_updated datetime NOT NULL,
  birth_date date, rating decimal(6,2), active bool NOT NULL DEFAULT 1,
  external_uuid uuid, payload json, created_at datetime, photo blob)`,
			// "int", not "integer": not a rowid alias, so no implied default, as on the others.
			`CREATE TABLE book (id int NOT NULL PRIMARY KEY, title varchar(200) NOT NULL, author_id integer NOT NULL,
  cqrs_revision integer NOT NULL, cqrs_updated datetime NOT NULL)`,
			`CREATE TABLE no_updated (id integer PRIMARY KEY, cqrs_revision integer NOT NULL)`,
			`CREATE TABLE custom_sync (code varchar(50) NOT NULL PRIMARY KEY, name text, rev bigint NOT NULL, changed datetime NOT NULL)`,
		}
	}
	for _, s := range ddl {
		if _, err := db.ExecContext(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// authorFields is what Bind fills in for author on every database.
var authorFields = []registry.Field{
	{Name: "id", Kind: dialect.KindInt, Nullable: false, HasDefault: true, Scale: -1},
	{Name: "name", Kind: dialect.KindString, Nullable: false, HasDefault: false, Scale: -1},
	{Name: "birth_date", Kind: dialect.KindDate, Nullable: true, Scale: -1},
	{Name: "rating", Kind: dialect.KindDecimal, Nullable: true, Scale: 2},
	{Name: "active", Kind: dialect.KindBool, Nullable: false, HasDefault: true, Scale: -1},
	{Name: "external_uuid", Kind: dialect.KindUUID, Nullable: true, Scale: -1},
	{Name: "payload", Kind: dialect.KindJSON, Nullable: true, Scale: -1},
	{Name: "created_at", Kind: dialect.KindDateTime, Nullable: true, Scale: -1},
	{Name: "photo", Kind: dialect.KindBytes, Nullable: true, Scale: -1},
}

func checkFields(t *testing.T, got, want []registry.Field) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d fields %+v, want %d %+v", len(got), got, len(want), want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func bind(t *testing.T, db *testenv.DB, r *registry.Registry, masters bool) error {
	t.Helper()
	return r.Bind(context.Background(), db, db.Dialect, masters)
}

func mustRegister(t *testing.T, r *registry.Registry, models ...any) {
	t.Helper()
	for _, m := range models {
		var err error
		switch m := m.(type) {
		case registry.MasterModel:
			err = r.RegisterMaster(m)
		case registry.ReplicaModel:
			err = r.RegisterReplica(m)
		default:
			err = fmt.Errorf("not a model: %T", m)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestBindFillsAllColumns(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		schema(t, db)
		r := registry.New()
		mustRegister(t, r,
			registry.MasterModel{CQRSID: "author", Table: "author", TrackedFields: []string{"name", "rating"}},
			registry.ReplicaModel{CQRSID: "author", Table: "author"},
			registry.MasterModel{CQRSID: "label", Table: "custom_sync", PK: "code", RevisionColumn: "rev", UpdatedColumn: "changed"},
		)
		if err := bind(t, db, r, true); err != nil {
			t.Fatal(err)
		}
		m, _ := r.Master("author")
		checkFields(t, m.Fields, authorFields)
		label, _ := r.Master("label")
		checkFields(t, label.Fields, []registry.Field{
			{Name: "code", Kind: dialect.KindString, Scale: -1},
			{Name: "name", Kind: dialect.KindString, Nullable: true, Scale: -1},
		})
		// Binding masters leaves replicas alone.
		if rm, _ := r.Replica("author"); rm.Fields != nil {
			t.Errorf("Bind(masters) filled replica fields: %+v", rm.Fields)
		}
		if err := bind(t, db, r, false); err != nil {
			t.Fatal(err)
		}
		rm, _ := r.Replica("author")
		checkFields(t, rm.Fields, authorFields)

		// Binding again is a no-op.
		if err := bind(t, db, r, true); err != nil {
			t.Fatal(err)
		}
		checkFields(t, m.Fields, authorFields)
	})
}

func TestBindDeclaredFields(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		schema(t, db)
		r := registry.New()
		mustRegister(t, r,
			// Django's foreign key: key "author", column "author_id".
			registry.MasterModel{CQRSID: "book", Table: "book", Fields: []registry.Field{
				{Name: "id"}, {Name: "title"}, {Name: "author", Column: "author_id"},
			}},
			// A declared kind wins over the table's; declared order is kept.
			registry.MasterModel{CQRSID: "author", Table: "author", Fields: []registry.Field{
				{Name: "rating", Kind: dialect.KindFloat}, {Name: "id"}, {Name: "created_at", Kind: dialect.KindString},
			}},
			registry.ReplicaModel{CQRSID: "book", Table: "book", Fields: []registry.Field{{Name: "id"}, {Name: "author_id"}},
				Mapping: []registry.Mapping{{From: "id", To: "id"}, {From: "author", To: "author_id"}, {From: "rev", To: "cqrs_revision"}}},
		)
		if err := bind(t, db, r, true); err != nil {
			t.Fatal(err)
		}
		book, _ := r.Master("book")
		checkFields(t, book.Fields, []registry.Field{
			{Name: "id", Kind: dialect.KindInt, Scale: -1},
			{Name: "title", Kind: dialect.KindString, Scale: -1},
			{Name: "author", Column: "author_id", Kind: dialect.KindInt, Scale: -1},
		})
		author, _ := r.Master("author")
		checkFields(t, author.Fields, []registry.Field{
			{Name: "rating", Kind: dialect.KindFloat, Nullable: true, Scale: 2},
			{Name: "id", Kind: dialect.KindInt, HasDefault: true, Scale: -1},
			{Name: "created_at", Kind: dialect.KindString, Nullable: true, Scale: -1},
		})
		if err := bind(t, db, r, false); err != nil {
			t.Fatal(err)
		}
		rb, _ := r.Replica("book")
		checkFields(t, rb.Fields, []registry.Field{
			{Name: "id", Kind: dialect.KindInt, Scale: -1},
			{Name: "author_id", Kind: dialect.KindInt, Scale: -1},
		})
	})
}

func TestBindErrors(t *testing.T) {
	t.Parallel()
	raw := registry.RawHandlers{Save: func(context.Context, *registry.ApplyContext) error { return nil }}
	cases := []struct {
		name    string
		model   any
		masters bool
		want    []string
	}{
		{"missing table", registry.MasterModel{CQRSID: "ghost", Table: "ghost"}, true,
			[]string{`master model "ghost"`, `table "ghost" not found`}},
		{"missing replica table", registry.ReplicaModel{CQRSID: "ghost", Table: "ghost_ref"}, false,
			[]string{`replica model "ghost"`, `table "ghost_ref" not found`}},
		{"declared column missing", registry.MasterModel{CQRSID: "author", Table: "author", Fields: []registry.Field{{Name: "id"}, {Name: "nickname"}}}, true,
			[]string{`master model "author"`, `field "nickname"`, `table "author" has no column "nickname"`}},
		{"renamed column missing", registry.MasterModel{CQRSID: "book", Table: "book", Fields: []registry.Field{{Name: "id"}, {Name: "author", Column: "writer_id"}}}, true,
			[]string{`master model "book"`, `field "author"`, `no column "writer_id"`}},
		{"replica column missing", registry.ReplicaModel{CQRSID: "book", Table: "book", Fields: []registry.Field{{Name: "id"}, {Name: "name"}}}, false,
			[]string{`replica model "book"`, `field "name"`, `no column "name"`}},
		{"master pk not a column", registry.MasterModel{CQRSID: "author", Table: "author", PK: "code"}, true,
			[]string{`master model "author"`, `primary key "code" is not a column of table "author"`}},
		{"replica pk not a column", registry.ReplicaModel{CQRSID: "author", Table: "author", PK: "uuid"}, false,
			[]string{`replica model "author"`, `primary key "uuid" is not a column of table "author"`}},
		{"tracked field not a column", registry.MasterModel{CQRSID: "author", Table: "author", TrackedFields: []string{"name", "nickname"}}, true,
			[]string{`master model "author"`, `tracked field "nickname" is not a column of table "author"`}},
		{"missing updated column", registry.MasterModel{CQRSID: "x", Table: "no_updated"}, true,
			[]string{`master model "x"`, `table "no_updated" has no sync column "cqrs_updated"`}},
		{"missing revision column", registry.ReplicaModel{CQRSID: "label", Table: "custom_sync", PK: "code"}, false,
			[]string{`replica model "label"`, `table "custom_sync" has no sync column "cqrs_revision"`}},
		{"mapping target not a column", registry.ReplicaModel{CQRSID: "book", Table: "book", Mapping: []registry.Mapping{{From: "title", To: "name"}}}, false,
			[]string{`replica model "book"`, `mapping "title"→"name"`, `no such column in table "book"`}},
		{"raw replicas are not bound", registry.ReplicaModel{CQRSID: "raw", Raw: raw}, false, nil},
	}
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		schema(t, db)
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := registry.New()
				mustRegister(t, r, c.model)
				err := bind(t, db, r, c.masters)
				if c.want == nil {
					if err != nil {
						t.Fatal(err)
					}
					return
				}
				wantErr(t, err, append([]string{"registry: "}, c.want...)...)
				// The other side is not checked.
				if err := bind(t, db, r, !c.masters); err != nil {
					t.Errorf("Bind of the other side: %v", err)
				}
			})
		}
	})
}

// FieldsOf and Bind together: the struct's kinds stay, the table adds
// nullability, defaults and the decimal scale.
func TestBindFieldsOf(t *testing.T) {
	t.Parallel()
	type Author struct {
		ID       int64          `db:"id"`
		Name     string         `db:"name"`
		Revision int            `db:"cqrs_revision"`
		Rating   *float64       `db:"rating" cqrs:"decimal"`
		Birth    *string        `db:"birth_date" cqrs:"date"`
		Active   bool           `db:"active"`
		Payload  map[string]any `db:"payload"`
		Created  sql.NullTime   `db:"created_at"`
	}
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		schema(t, db)
		fs, err := registry.FieldsOf(Author{})
		if err != nil {
			t.Fatal(err)
		}
		r := registry.New()
		mustRegister(t, r, registry.MasterModel{CQRSID: "author", Table: "author", Fields: fs})
		if err := bind(t, db, r, true); err != nil {
			t.Fatal(err)
		}
		m, _ := r.Master("author")
		checkFields(t, m.Fields, []registry.Field{
			{Name: "id", Kind: dialect.KindInt, HasDefault: true, Scale: -1},
			{Name: "name", Kind: dialect.KindString, Scale: -1},
			{Name: "rating", Kind: dialect.KindDecimal, Nullable: true, Scale: 2},
			{Name: "birth_date", Kind: dialect.KindDate, Nullable: true, Scale: -1},
			{Name: "active", Kind: dialect.KindBool, HasDefault: true, Scale: -1},
			{Name: "payload", Kind: dialect.KindJSON, Nullable: true, Scale: -1},
			{Name: "created_at", Kind: dialect.KindDateTime, Nullable: true, Scale: -1},
		})
	})
}
