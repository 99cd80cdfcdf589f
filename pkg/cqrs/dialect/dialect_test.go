package dialect_test

import (
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

func mustFor(t *testing.T, name string) dialect.Dialect {
	t.Helper()
	d, err := dialect.For(name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestForNames(t *testing.T) {
	for in, want := range map[string]dialect.Name{
		"postgres": dialect.Postgres, "postgresql": dialect.Postgres, "pgx": dialect.Postgres, "PG": dialect.Postgres,
		"mysql": dialect.MySQL, "MariaDB": dialect.MySQL,
		"sqlite": dialect.SQLite, "sqlite3": dialect.SQLite,
	} {
		d, err := dialect.For(in)
		if err != nil {
			t.Errorf("For(%q): %v", in, err)
			continue
		}
		if d.Name() != want || d.String() != string(want) || !d.Valid() {
			t.Errorf("For(%q) = %v (valid %v), want %v", in, d, d.Valid(), want)
		}
	}
	for _, bad := range []string{"", "oracle", "mssql", "postgres ", "sqlite4"} {
		_, err := dialect.For(bad)
		if err == nil {
			t.Errorf("For(%q): no error", bad)
			continue
		}
		if !strings.Contains(err.Error(), `"`+bad+`"`) || !strings.Contains(err.Error(), "want postgres, mysql or sqlite") {
			t.Errorf("For(%q) error %q does not name the input and the choices", bad, err)
		}
	}
	if (dialect.Dialect{}).Valid() {
		t.Error("zero Dialect reports Valid")
	}
}

func TestForDriver(t *testing.T) {
	for in, want := range map[string]dialect.Name{"pgx": dialect.Postgres, "postgres": dialect.Postgres, "mysql": dialect.MySQL, "sqlite": dialect.SQLite, "sqlite3": dialect.SQLite} {
		d, err := dialect.ForDriver(in)
		if err != nil || d.Name() != want {
			t.Errorf("ForDriver(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
	_, err := dialect.ForDriver("sqlserver")
	if err == nil || !strings.Contains(err.Error(), `driver "sqlserver"`) {
		t.Errorf("ForDriver(sqlserver) error = %v, want one naming the driver", err)
	}
	d, err := dialect.Of(driverName("sqlite"))
	if err != nil || d.Name() != dialect.SQLite {
		t.Errorf("Of(sqlite handle) = %v, %v", d, err)
	}
	if _, err := dialect.Of(driverName("odbc")); err == nil {
		t.Error("Of(odbc handle): no error")
	}
}

type driverName string

func (n driverName) DriverName() string { return string(n) }

func TestValidIdent(t *testing.T) {
	max := strings.Repeat("a", 63)
	for _, ok := range []string{"a", "_", "author", "Author_Ref", "t1", "_x9", max, "s.t", "public.author_ref", max + "." + max} {
		if err := dialect.ValidIdent(ok); err != nil {
			t.Errorf("ValidIdent(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{
		"", "1a", "a b", "a-b", "a;b", `a"b`, "a`b", "a'b", `a"; DROP TABLE x; --`, "x; DROP TABLE y",
		"a.b.c", ".t", "s.", "s..t", "a\x00", "é", "naïve", " a", "a ", "a\n", "a/*c*/", "a()",
		strings.Repeat("a", 64), "s." + strings.Repeat("a", 64),
	} {
		err := dialect.ValidIdent(bad)
		if err == nil {
			t.Errorf("ValidIdent(%q): accepted", bad)
			continue
		}
		if !strings.Contains(err.Error(), "identifier") {
			t.Errorf("ValidIdent(%q) error %q does not say it is about an identifier", bad, err)
		}
	}
}

func TestQuote(t *testing.T) {
	cases := []struct {
		name            string
		pg, mysql, lite string
	}{
		{"author", `"author"`, "`author`", `"author"`},
		{"Author_Ref", `"Author_Ref"`, "`Author_Ref`", `"Author_Ref"`},
		{"s.t", `"s"."t"`, "`s`.`t`", `"s"."t"`},
		{"select", `"select"`, "`select`", `"select"`}, // keywords are fine once quoted
	}
	pg, my, lite := mustFor(t, "postgres"), mustFor(t, "mysql"), mustFor(t, "sqlite")
	for _, c := range cases {
		for _, x := range []struct {
			d    dialect.Dialect
			want string
		}{{pg, c.pg}, {my, c.mysql}, {lite, c.lite}} {
			got, err := x.d.Quote(c.name)
			if err != nil || got != x.want {
				t.Errorf("%s.Quote(%q) = %q, %v; want %q", x.d, c.name, got, err, x.want)
			}
		}
	}
	for _, bad := range []string{`a"; DROP TABLE x; --`, "a`; DROP TABLE x; --", "a b", "1a", strings.Repeat("b", 64), "a.b.c", ""} {
		for _, d := range []dialect.Dialect{pg, my, lite} {
			got, err := d.Quote(bad)
			if err == nil || got != "" {
				t.Errorf("%s.Quote(%q) = %q, %v; want an error and no output", d, bad, got, err)
			}
		}
	}
	all, err := my.QuoteAll([]string{"a", "s.b"})
	if err != nil || strings.Join(all, ",") != "`a`,`s`.`b`" {
		t.Errorf("QuoteAll = %q, %v", all, err)
	}
	if all, err := pg.QuoteAll([]string{"a", "b c", "d"}); err == nil || all != nil || !strings.Contains(err.Error(), `"b c"`) {
		t.Errorf("QuoteAll with a bad name = %q, %v; want an error naming it", all, err)
	}
}

func TestRebindAndPlaceholders(t *testing.T) {
	q := "INSERT INTO t (a, b, c) VALUES (" + dialect.Placeholders(3) + ") WHERE d = ?"
	if got, want := mustFor(t, "postgres").Rebind(q), "INSERT INTO t (a, b, c) VALUES ($1, $2, $3) WHERE d = $4"; got != want {
		t.Errorf("postgres Rebind = %q, want %q", got, want)
	}
	for _, n := range []string{"mysql", "sqlite"} {
		if got := mustFor(t, n).Rebind(q); got != q {
			t.Errorf("%s Rebind changed the query: %q", n, got)
		}
	}
	if got := dialect.Placeholders(1); got != "?" {
		t.Errorf("Placeholders(1) = %q", got)
	}
	if got := dialect.Placeholders(0); got != "" {
		t.Errorf("Placeholders(0) = %q", got)
	}
	if got := dialect.Placeholders(-1); got != "" {
		t.Errorf("Placeholders(-1) = %q", got)
	}
}

func TestCapabilities(t *testing.T) {
	for _, c := range []struct {
		name                  string
		skipLocked, forUpdate bool
	}{{"postgres", true, true}, {"mysql", true, true}, {"sqlite", false, false}} {
		d := mustFor(t, c.name)
		if d.SupportsSkipLocked() != c.skipLocked || d.SupportsForUpdate() != c.forUpdate {
			t.Errorf("%s: SupportsSkipLocked %v SupportsForUpdate %v, want %v %v", c.name, d.SupportsSkipLocked(), d.SupportsForUpdate(), c.skipLocked, c.forUpdate)
		}
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]dialect.Kind{
		"": dialect.KindAuto, "int": dialect.KindInt, " INTEGER ": dialect.KindInt, "bigint": dialect.KindInt,
		"float": dialect.KindFloat, "decimal": dialect.KindDecimal, "numeric": dialect.KindDecimal,
		"string": dialect.KindString, "text": dialect.KindString, "varchar": dialect.KindString,
		"bool": dialect.KindBool, "boolean": dialect.KindBool, "date": dialect.KindDate,
		"datetime": dialect.KindDateTime, "timestamp": dialect.KindDateTime, "timestamptz": dialect.KindDateTime,
		"uuid": dialect.KindUUID, "json": dialect.KindJSON, "bytes": dialect.KindBytes,
	} {
		got, err := dialect.ParseKind(in)
		if err != nil || got != want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := dialect.ParseKind("money")
	if err == nil || !strings.Contains(err.Error(), `"money"`) {
		t.Errorf("ParseKind(money) error = %v, want one naming the type", err)
	}
}
