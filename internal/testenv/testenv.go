// Package testenv gives tests real databases and brokers, each isolated in its
// own schema, database or file, and decides whether a test that needs a
// service skips or fails when the service is not configured.
//
// Services are enabled by environment variables:
//
//	CQRS_TEST_POSTGRES  PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable
//	CQRS_TEST_MYSQL     go-sql-driver DSN, e.g. root@tcp(127.0.0.1:3306)/test
//	CQRS_TEST_AMQP      RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672/
//
// SQLite needs nothing and always runs. With CQRS_REQUIRE_SERVICES=1 a missing
// variable or an unreachable service fails the test instead of skipping it.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// Environment variable names.
const (
	EnvPostgres = "CQRS_TEST_POSTGRES"
	EnvMySQL    = "CQRS_TEST_MYSQL"
	EnvAMQP     = "CQRS_TEST_AMQP"
	EnvRequire  = "CQRS_REQUIRE_SERVICES"
)

// Required reports whether missing services must fail tests.
func Required() bool { return os.Getenv(EnvRequire) == "1" }

// Need returns the value of env, or skips (fails under CQRS_REQUIRE_SERVICES=1)
// with a message naming the variable.
func Need(t testing.TB, env, what string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		msg := fmt.Sprintf("%s not configured: set %s to run this test", what, env)
		if Required() {
			t.Fatal(msg + " (" + EnvRequire + "=1)")
		}
		t.Skip(msg)
	}
	return v
}

// Unavailable skips or fails a test whose service is configured but does not answer.
func Unavailable(t testing.TB, what string, err error) {
	t.Helper()
	msg := fmt.Sprintf("%s unreachable: %v", what, err)
	if Required() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Name returns a fresh lower-case identifier "prefix_<random hex>" for schemas,
// databases, queues and exchanges that belong to one test.
func Name(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// DB is an isolated database handle for one test.
type DB struct {
	*sqlx.DB
	Dialect dialect.Dialect
	// DSN opens another handle on the same isolated database (with the same driver).
	DSN string
	// Driver is the database/sql driver name.
	Driver string
}

// Open opens another connection pool on the same isolated database; it is
// closed when the test ends.
func (d *DB) Open(t testing.TB) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open(d.Driver, d.DSN)
	if err != nil {
		t.Fatalf("testenv: open %s: %v", d.Dialect, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Postgres returns a handle whose search_path is a new schema, dropped when the test ends.
func Postgres(t testing.TB) *DB {
	t.Helper()
	base := Need(t, EnvPostgres, "PostgreSQL")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := sqlx.Open("pgx", base)
	if err != nil {
		t.Fatalf("testenv: open postgres: %v", err)
	}
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		Unavailable(t, "PostgreSQL", err)
	}
	schema := Name("t")
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatalf("testenv: create schema: %v", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("testenv: %s is not a URL: %v", EnvPostgres, err)
	}
	qv := u.Query()
	qv.Set("search_path", schema)
	u.RawQuery = qv.Encode()
	dsn := u.String()
	db, err := sqlx.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("testenv: open postgres schema: %v", err)
	}
	t.Cleanup(func() {
		db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE")
		admin.Close()
	})
	return &DB{DB: db, Dialect: mustDialect("postgres"), DSN: dsn, Driver: "pgx"}
}

// MySQL returns a handle on a new database, dropped when the test ends.
func MySQL(t testing.TB) *DB {
	t.Helper()
	base := Need(t, EnvMySQL, "MySQL/MariaDB")
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("testenv: %s: %v", EnvMySQL, err)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.MultiStatements = false
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'+00:00'"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := sqlx.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("testenv: open mysql: %v", err)
	}
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		Unavailable(t, "MySQL/MariaDB", err)
	}
	name := Name("t")
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		admin.Close()
		t.Fatalf("testenv: create database: %v", err)
	}
	cfg.DBName = name
	dsn := cfg.FormatDSN()
	db, err := sqlx.Open("mysql", dsn)
	if err != nil {
		t.Fatalf("testenv: open mysql database: %v", err)
	}
	t.Cleanup(func() {
		db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = admin.ExecContext(ctx, "DROP DATABASE "+name)
		admin.Close()
	})
	return &DB{DB: db, Dialect: mustDialect("mysql"), DSN: dsn, Driver: "mysql"}
}

// SQLiteDSN returns the DSN gocqrs recommends for a SQLite file: WAL journal,
// a busy timeout, foreign keys on.
func SQLiteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
}

// SQLite returns a handle on a new SQLite file in the test's temp directory.
func SQLite(t testing.TB) *DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.db")
	dsn := SQLiteDSN(path)
	db, err := sqlx.Open("sqlite", dsn)
	if err != nil {
		t.Fatalf("testenv: open sqlite: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return &DB{DB: db, Dialect: mustDialect("sqlite"), DSN: dsn, Driver: "sqlite"}
}

// Open returns an isolated database of the named dialect ("postgres", "mysql", "sqlite").
func Open(t testing.TB, name dialect.Name) *DB {
	t.Helper()
	switch name {
	case dialect.Postgres:
		return Postgres(t)
	case dialect.MySQL:
		return MySQL(t)
	case dialect.SQLite:
		return SQLite(t)
	}
	t.Fatalf("testenv: unknown dialect %q", name)
	return nil
}

// Dialects lists the dialects every database test runs on.
var Dialects = []dialect.Name{dialect.Postgres, dialect.MySQL, dialect.SQLite}

// EachDB runs fn as a subtest per dialect, each with its own isolated database.
func EachDB(t *testing.T, fn func(t *testing.T, db *DB)) {
	for _, name := range Dialects {
		t.Run(string(name), func(t *testing.T) {
			fn(t, Open(t, name))
		})
	}
}

// WaitFor polls cond until it returns true or the deadline passes, then fails
// the test with msg. It is the only way tests wait.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := time.Millisecond
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, msg)
		}
		time.Sleep(delay)
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// FixturesDir returns the path of ../shared/wire-fixtures relative to the
// repository root, or skips (fails under CQRS_REQUIRE_SERVICES=1) when absent.
// CQRS_WIRE_FIXTURES overrides the location.
func FixturesDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("CQRS_WIRE_FIXTURES"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testenv: go.mod not found above the test's directory")
		}
		dir = parent
	}
	fx := filepath.Join(filepath.Dir(dir), "shared", "wire-fixtures")
	if _, err := os.Stat(fx); err != nil {
		msg := "wire fixtures not found at " + fx + ": set CQRS_WIRE_FIXTURES"
		if Required() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return fx
}

func mustDialect(name string) dialect.Dialect {
	d, err := dialect.For(name)
	if err != nil {
		panic(err) // constant names above; cannot happen
	}
	return d
}

// Redact hides the password of a URL for messages.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return strings.SplitN(raw, "@", 2)[len(strings.SplitN(raw, "@", 2))-1]
	}
	return u.Redacted()
}
