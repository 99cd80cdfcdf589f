package dialect_test

import (
	"context"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// col is the expected introspection of one column.
type col struct {
	name       string
	kind       dialect.Kind
	nullable   bool
	hasDefault bool
	pk         bool
	scale      int
}

// kindsTable is a table with every common column type of a dialect and what
// Columns must report for it, in table order.
type kindsTable struct {
	ddl  []string
	want []col
}

var kindsTables = map[dialect.Name]kindsTable{
	dialect.Postgres: {
		ddl: []string{`CREATE TABLE kinds (
  id bigserial PRIMARY KEY,
  i integer NOT NULL,
  si smallint,
  bi bigint NOT NULL DEFAULT 7,
  ident integer GENERATED ALWAYS AS IDENTITY,
  price numeric(6,2),
  num numeric,
  r real,
  dp double precision,
  vc varchar(20),
  ch char(3),
  tx text NOT NULL,
  b boolean NOT NULL DEFAULT true,
  d date,
  ts timestamp,
  tstz timestamptz NOT NULL DEFAULT now(),
  u uuid,
  j json,
  jb jsonb,
  bin bytea,
  arr integer[],
  tm time,
  iv interval
)`},
		want: []col{
			{"id", dialect.KindInt, false, true, true, -1},
			{"i", dialect.KindInt, false, false, false, -1},
			{"si", dialect.KindInt, true, false, false, -1},
			{"bi", dialect.KindInt, false, true, false, -1},
			{"ident", dialect.KindInt, false, true, false, -1},
			{"price", dialect.KindDecimal, true, false, false, 2},
			{"num", dialect.KindDecimal, true, false, false, -1},
			{"r", dialect.KindFloat, true, false, false, -1},
			{"dp", dialect.KindFloat, true, false, false, -1},
			{"vc", dialect.KindString, true, false, false, -1},
			{"ch", dialect.KindString, true, false, false, -1},
			{"tx", dialect.KindString, false, false, false, -1},
			{"b", dialect.KindBool, false, true, false, -1},
			{"d", dialect.KindDate, true, false, false, -1},
			{"ts", dialect.KindDateTime, true, false, false, -1},
			{"tstz", dialect.KindDateTime, false, true, false, -1},
			{"u", dialect.KindUUID, true, false, false, -1},
			{"j", dialect.KindJSON, true, false, false, -1},
			{"jb", dialect.KindJSON, true, false, false, -1},
			{"bin", dialect.KindBytes, true, false, false, -1},
			{"arr", dialect.KindJSON, true, false, false, -1},
			{"tm", dialect.KindString, true, false, false, -1},
			{"iv", dialect.KindString, true, false, false, -1},
		},
	},
	dialect.MySQL: {
		ddl: []string{`CREATE TABLE kinds (
  id bigint AUTO_INCREMENT PRIMARY KEY,
  i int NOT NULL,
  si smallint,
  bi bigint NOT NULL DEFAULT 7,
  ti tinyint,
  price decimal(6,2),
  num decimal(10,0),
  r float,
  dp double,
  vc varchar(20),
  tx text NOT NULL,
  lt longtext,
  b boolean NOT NULL DEFAULT true,
  b1 tinyint(1),
  d date,
  ts timestamp NULL,
  dt datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  u uuid,
  j json,
  jn json NOT NULL,
  bin blob,
  vb varbinary(16),
  checked text,
  CONSTRAINT other_check CHECK (length(checked) > 1)
)`},
		want: []col{
			{"id", dialect.KindInt, false, true, true, -1},
			{"i", dialect.KindInt, false, false, false, -1},
			{"si", dialect.KindInt, true, false, false, -1},
			{"bi", dialect.KindInt, false, true, false, -1},
			{"ti", dialect.KindInt, true, false, false, -1},
			{"price", dialect.KindDecimal, true, false, false, 2},
			{"num", dialect.KindDecimal, true, false, false, 0},
			{"r", dialect.KindFloat, true, false, false, -1},
			{"dp", dialect.KindFloat, true, false, false, -1},
			{"vc", dialect.KindString, true, false, false, -1},
			{"tx", dialect.KindString, false, false, false, -1},
			{"lt", dialect.KindString, true, false, false, -1},
			{"b", dialect.KindBool, false, true, false, -1},
			{"b1", dialect.KindBool, true, false, false, -1},
			{"d", dialect.KindDate, true, false, false, -1},
			{"ts", dialect.KindDateTime, true, false, false, -1},
			{"dt", dialect.KindDateTime, false, true, false, -1},
			{"u", dialect.KindUUID, true, false, false, -1},
			{"j", dialect.KindJSON, true, false, false, -1},
			{"jn", dialect.KindJSON, false, false, false, -1},
			{"bin", dialect.KindBytes, true, false, false, -1},
			{"vb", dialect.KindBytes, true, false, false, -1},
			{"checked", dialect.KindString, true, false, false, -1},
		},
	},
	dialect.SQLite: {
		ddl: []string{`CREATE TABLE kinds (
  id integer PRIMARY KEY,
  i int NOT NULL,
  si smallint,
  bi bigint NOT NULL DEFAULT 7,
  price decimal(6,2),
  num numeric,
  r real,
  dp double precision,
  f float,
  vc varchar(20),
  tx text NOT NULL,
  b boolean NOT NULL DEFAULT 1,
  b2 bool,
  d date,
  dt datetime,
  ts timestamp,
  u uuid,
  j json,
  jb jsonb,
  bin blob,
  untyped
)`},
		want: []col{
			{"id", dialect.KindInt, true, true, true, -1}, // SQLite does not imply NOT NULL for an INTEGER PRIMARY KEY
			{"i", dialect.KindInt, false, false, false, -1},
			{"si", dialect.KindInt, true, false, false, -1},
			{"bi", dialect.KindInt, false, true, false, -1},
			{"price", dialect.KindDecimal, true, false, false, 2},
			{"num", dialect.KindDecimal, true, false, false, -1},
			{"r", dialect.KindFloat, true, false, false, -1},
			{"dp", dialect.KindFloat, true, false, false, -1},
			{"f", dialect.KindFloat, true, false, false, -1},
			{"vc", dialect.KindString, true, false, false, -1},
			{"tx", dialect.KindString, false, false, false, -1},
			{"b", dialect.KindBool, false, true, false, -1},
			{"b2", dialect.KindBool, true, false, false, -1},
			{"d", dialect.KindDate, true, false, false, -1},
			{"dt", dialect.KindDateTime, true, false, false, -1},
			{"ts", dialect.KindDateTime, true, false, false, -1},
			{"u", dialect.KindUUID, true, false, false, -1},
			{"j", dialect.KindJSON, true, false, false, -1},
			{"jb", dialect.KindJSON, true, false, false, -1},
			{"bin", dialect.KindBytes, true, false, false, -1},
			{"untyped", dialect.KindString, true, false, false, -1},
		},
	},
}

func exec(t *testing.T, db *testenv.DB, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := db.ExecContext(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func checkColumns(t *testing.T, got []dialect.Column, want []col) {
	t.Helper()
	if len(got) != len(want) {
		names := make([]string, len(got))
		for i, c := range got {
			names[i] = c.Name
		}
		t.Fatalf("got %d columns %v, want %d", len(got), names, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Kind != w.kind || g.Nullable != w.nullable || g.HasDefault != w.hasDefault || g.PrimaryKey != w.pk || g.Scale != w.scale {
			t.Errorf("column %d: got {%s %s(%s) nullable=%v default=%v pk=%v scale=%d}, want {%s %s nullable=%v default=%v pk=%v scale=%d}",
				i, g.Name, g.Kind, g.DBType, g.Nullable, g.HasDefault, g.PrimaryKey, g.Scale,
				w.name, w.kind, w.nullable, w.hasDefault, w.pk, w.scale)
		}
		if g.DBType == "" && w.name != "untyped" {
			t.Errorf("column %s: empty DBType", g.Name)
		}
	}
}

func TestColumnsKinds(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		kt := kindsTables[db.Dialect.Name()]
		exec(t, db, kt.ddl...)
		cols, err := db.Dialect.Columns(context.Background(), db, "kinds")
		if err != nil {
			t.Fatal(err)
		}
		checkColumns(t, cols, kt.want)
	})
}

func TestColumnsQualifiedAndMissing(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		ctx := context.Background()
		exec(t, db, "CREATE TABLE q (id int PRIMARY KEY, name varchar(10) NOT NULL)")
		var schema string
		switch db.Dialect.Name() {
		case dialect.Postgres:
			schema = scalar(t, db, "SELECT current_schema()")
		case dialect.MySQL:
			schema = scalar(t, db, "SELECT DATABASE()")
		case dialect.SQLite:
			schema = "main"
		}
		want := []col{{"id", dialect.KindInt, false, false, true, -1}, {"name", dialect.KindString, false, false, false, -1}}
		if db.Dialect.Name() == dialect.SQLite {
			want[0].nullable = true // only INTEGER PRIMARY KEY is NOT NULL in SQLite, and not even declared so
		}
		cols, err := db.Dialect.Columns(ctx, db, schema+".q")
		if err != nil {
			t.Fatalf("Columns(%s.q): %v", schema, err)
		}
		checkColumns(t, cols, want)

		for _, missing := range []string{"nope", schema + ".nope", "nosuchschema.q"} {
			_, err := db.Dialect.Columns(ctx, db, missing)
			if err == nil {
				t.Errorf("Columns(%q): no error", missing)
				continue
			}
			if !strings.Contains(err.Error(), `"`+missing+`"`) {
				t.Errorf("Columns(%q) error %q does not name the table", missing, err)
			}
		}
		_, err = db.Dialect.Columns(ctx, db, `q"; DROP TABLE q; --`)
		if err == nil || !strings.Contains(err.Error(), "identifier") {
			t.Errorf("Columns(injection) error = %v, want an identifier error", err)
		}
		if _, err := db.Dialect.Columns(ctx, db, "q"); err != nil {
			t.Errorf("table q is gone after the injection attempt: %v", err)
		}
	})
}

func scalar(t *testing.T, db *testenv.DB, q string) string {
	t.Helper()
	var s string
	if err := db.GetContext(context.Background(), &s, q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

// The first schema on PostgreSQL's search path that has the table wins, and
// a table of the same name in a later schema does not add columns.
func TestColumnsPostgresSearchPath(t *testing.T) {
	t.Parallel()
	a := testenv.Postgres(t)
	b := testenv.Postgres(t)
	ctx := context.Background()
	sa, sb := scalar(t, a, "SELECT current_schema()"), scalar(t, b, "SELECT current_schema()")
	exec(t, a, "CREATE TABLE t (id int PRIMARY KEY, only_a text)")
	exec(t, b, "CREATE TABLE t (x_b text, id int PRIMARY KEY, only_b text)")
	conn, err := a.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, c := range []struct {
		path string
		want []string
	}{{sa + "," + sb, []string{"id", "only_a"}}, {sb + "," + sa, []string{"x_b", "id", "only_b"}}} {
		if _, err := conn.ExecContext(ctx, "SET search_path TO "+c.path); err != nil {
			t.Fatal(err)
		}
		cols, err := a.Dialect.Columns(ctx, conn, "t")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, col := range cols {
			names = append(names, col.Name)
		}
		if strings.Join(names, ",") != strings.Join(c.want, ",") {
			t.Errorf("search_path %s: columns %v, want %v", c.path, names, c.want)
		}
	}
}

// SQLite: only a single INTEGER PRIMARY KEY is a rowid alias with an implied
// default; the integer column of a composite key has none.
func TestColumnsSQLiteRowid(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	exec(t, db, "CREATE TABLE comp (a integer, b text, c integer NOT NULL, PRIMARY KEY (a, b))")
	cols, err := db.Dialect.Columns(context.Background(), db, "comp")
	if err != nil {
		t.Fatal(err)
	}
	checkColumns(t, cols, []col{
		{"a", dialect.KindInt, true, false, true, -1},
		{"b", dialect.KindString, true, false, true, -1},
		{"c", dialect.KindInt, false, false, false, -1},
	})
}
