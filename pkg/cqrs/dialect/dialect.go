// Package dialect holds what differs between the SQL databases gocqrs runs on:
// identifier quoting and validation, bind-variable style, column introspection
// and the names of the database/sql drivers.
//
// Three dialects exist: PostgreSQL (driver "pgx"), MySQL/MariaDB (driver
// "mysql") and SQLite (driver "sqlite", modernc.org/sqlite). Every identifier
// that comes from configuration or registration passes through [Dialect.Quote],
// which refuses anything that is not a plain identifier; values are always
// bound parameters.
package dialect

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/jmoiron/sqlx"
)

// Name identifies a dialect.
type Name string

// The supported dialects.
const (
	Postgres Name = "postgres"
	MySQL    Name = "mysql"
	SQLite   Name = "sqlite"
)

// Dialect describes one SQL database family. The zero value is not usable; get
// one from [For], [ForDriver] or [Of].
type Dialect struct {
	name Name
}

// For returns the dialect with the given name ("postgres", "mysql" or
// "sqlite"; "postgresql", "pgx", "mariadb" and "sqlite3" are accepted too).
func For(name string) (Dialect, error) {
	switch strings.ToLower(name) {
	case "postgres", "postgresql", "pgx", "pg":
		return Dialect{Postgres}, nil
	case "mysql", "mariadb":
		return Dialect{MySQL}, nil
	case "sqlite", "sqlite3":
		return Dialect{SQLite}, nil
	}
	return Dialect{}, fmt.Errorf("dialect: unknown database %q (want postgres, mysql or sqlite)", name)
}

// ForDriver returns the dialect of a database/sql driver name as given to
// sqlx.Open ("pgx", "postgres", "mysql", "sqlite", "sqlite3").
func ForDriver(driver string) (Dialect, error) {
	d, err := For(driver)
	if err != nil {
		return Dialect{}, fmt.Errorf("dialect: unknown database/sql driver %q (want pgx, mysql or sqlite)", driver)
	}
	return d, nil
}

// Of returns the dialect of an open sqlx handle, from its driver name.
func Of(db interface{ DriverName() string }) (Dialect, error) {
	return ForDriver(db.DriverName())
}

// Name returns the dialect's name.
func (d Dialect) Name() Name { return d.name }

// String returns the dialect's name.
func (d Dialect) String() string { return string(d.name) }

// Valid reports whether d is one of the supported dialects.
func (d Dialect) Valid() bool { return d.name == Postgres || d.name == MySQL || d.name == SQLite }

// BindType returns the sqlx bind type of the dialect.
func (d Dialect) BindType() int {
	if d.name == Postgres {
		return sqlx.DOLLAR
	}
	return sqlx.QUESTION
}

// Rebind rewrites a query written with '?' placeholders into the dialect's
// placeholder style.
func (d Dialect) Rebind(query string) string { return sqlx.Rebind(d.BindType(), query) }

// SupportsSkipLocked reports whether SELECT ... FOR UPDATE SKIP LOCKED is
// available (PostgreSQL, MariaDB ≥ 10.6, MySQL ≥ 8).
func (d Dialect) SupportsSkipLocked() bool { return d.name == Postgres || d.name == MySQL }

// SupportsForUpdate reports whether SELECT ... FOR UPDATE is available.
// SQLite has no row locks: its write transactions are serialized.
func (d Dialect) SupportsForUpdate() bool { return d.name != SQLite }

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// ValidIdent reports an error unless name is a plain SQL identifier
// (letters, digits and underscores, not starting with a digit, at most 63
// characters), optionally qualified once with a schema ("schema.table").
func ValidIdent(name string) error {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return fmt.Errorf("identifier %q: at most one dot (schema.table) is allowed", name)
	}
	for _, p := range parts {
		if !identRe.MatchString(p) {
			return fmt.Errorf("identifier %q: want letters, digits and underscores, not starting with a digit, 1-63 characters", name)
		}
	}
	return nil
}

// Quote validates name with [ValidIdent] and quotes it for the dialect
// ("name" on PostgreSQL and SQLite, `name` on MySQL). A schema-qualified
// name is quoted part by part.
func (d Dialect) Quote(name string) (string, error) {
	if err := ValidIdent(name); err != nil {
		return "", err
	}
	parts := strings.Split(name, ".")
	q := `"`
	if d.name == MySQL {
		q = "`"
	}
	for i, p := range parts {
		parts[i] = q + p + q
	}
	return strings.Join(parts, "."), nil
}

// QuoteAll quotes every name in names, stopping at the first invalid one.
func (d Dialect) QuoteAll(names []string) ([]string, error) {
	out := make([]string, len(names))
	for i, n := range names {
		q, err := d.Quote(n)
		if err != nil {
			return nil, err
		}
		out[i] = q
	}
	return out, nil
}

// Placeholders returns "?, ?, ..." with n placeholders, in '?' style (pass the
// whole query through [Dialect.Rebind]).
func Placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?, ", n-1) + "?"
}
