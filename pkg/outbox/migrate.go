package outbox

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

//go:embed migrations
var migrationFS embed.FS

// migration is one versioned schema step of one dialect.
type migration struct {
	version int
	name    string
	sql     string
}

// migrationsFor lists the embedded migrations of a dialect in version order.
func migrationsFor(d dialect.Dialect) ([]migration, error) {
	dir := path.Join("migrations", string(d.Name()))
	entries, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, fmt.Errorf("outbox: migrations for %s: %w", d, err)
	}
	var out []migration
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("outbox: migration file %s/%s: name must start with a positive version number and '_'", dir, e.Name())
		}
		b, err := migrationFS.ReadFile(path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("outbox: migration file %s/%s: %w", dir, e.Name(), err)
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("outbox: migrations %s and %s of %s share version %d", out[i-1].name, out[i].name, d, out[i].version)
		}
	}
	return out, nil
}

// statements splits a migration script into statements: a statement ends
// with a line ending in a semicolon, except inside a dollar-quoted body
// ($$ ... $$, which may span lines; "$$" appears nowhere else in the
// scripts). The scripts hold no semicolons at a line's end inside literals.
func statements(script string) []string {
	var (
		out      []string
		cur      strings.Builder
		inDollar bool
	)
	flush := func() {
		part := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
		if hasSQL(part) {
			out = append(out, part)
		}
		cur.Reset()
	}
	for _, line := range strings.SplitAfter(script, "\n") {
		cur.WriteString(line)
		if strings.Count(line, "$$")%2 == 1 {
			inDollar = !inDollar
		}
		if !inDollar && strings.HasSuffix(strings.TrimRight(line, "\r\n"), ";") && strings.HasSuffix(line, "\n") {
			flush()
		}
	}
	flush()
	return out
}

// hasSQL reports whether s holds anything besides blank lines and -- comments.
func hasSQL(s string) bool {
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "--") {
			return true
		}
	}
	return false
}

// migrationsTableSQL creates the table that records applied versions.
func migrationsTableSQL(d dialect.Dialect, n names) string {
	switch d.Name() {
	case dialect.Postgres:
		return "CREATE TABLE IF NOT EXISTS " + n.migrations +
			" (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
	case dialect.MySQL:
		return "CREATE TABLE IF NOT EXISTS " + n.migrations +
			" (version INT NOT NULL PRIMARY KEY, name VARCHAR(255) NOT NULL, applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))" +
			" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
	default:
		return "CREATE TABLE IF NOT EXISTS " + n.migrations +
			" (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))"
	}
}

// recordVersionSQL inserts a version row, doing nothing if it is there already.
func recordVersionSQL(d dialect.Dialect, n names) string {
	switch d.Name() {
	case dialect.MySQL:
		return "INSERT IGNORE INTO " + n.migrations + " (version, name) VALUES (?, ?)"
	default:
		return d.Rebind("INSERT INTO " + n.migrations + " (version, name) VALUES (?, ?) ON CONFLICT (version) DO NOTHING")
	}
}

// Migrate creates or upgrades the outbox table (default "cqrs_outbox") and
// records the applied versions in "<table>_migrations". It applies, in
// order, every embedded migration of the dialect whose version is not
// recorded yet, each in its own transaction with its version row, so a
// database at version 1 is brought to the latest (see [LatestVersion]). It
// is idempotent: running it again applies nothing. It refuses, applying
// nothing, a database that records a version this gocqrs does not know (a
// newer gocqrs migrated it). Concurrent Migrate calls on PostgreSQL and
// MySQL are serialised with an advisory lock; every step is written to be
// safe to repeat.
//
// Versions: 1 creates the table and its (entity_key, id) index; 2
// (PostgreSQL only) adds the trigger that NOTIFYs relays of new rows; 3
// (PostgreSQL only) makes it notify only while a relay waits idle (see
// notify_wait.go); 4 (PostgreSQL only) fills the table's pages to half, so
// that claims are HOT updates.
func Migrate(ctx context.Context, db *sqlx.DB, d dialect.Dialect, opts ...Option) error {
	return migrate(ctx, db, d, buildConfig(opts), 0)
}

// LatestVersion returns the highest migration version gocqrs has for the
// dialect (0 for an invalid dialect).
func LatestVersion(d dialect.Dialect) int {
	steps, err := migrationsFor(d)
	if err != nil || len(steps) == 0 {
		return 0
	}
	return steps[len(steps)-1].version
}

// migrate applies the missing migrations up to version upTo (0: all).
func migrate(ctx context.Context, db *sqlx.DB, d dialect.Dialect, cfg config, upTo int) error {
	if db == nil {
		return fmt.Errorf("outbox: migrate: nil database handle")
	}
	n, err := resolveNames(d, cfg.table)
	if err != nil {
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	steps, err := migrationsFor(d)
	if err != nil {
		return err
	}
	conn, err := db.Connx(ctx)
	if err != nil {
		return fmt.Errorf("outbox: migrate %s: connect: %w", n.raw, err)
	}
	defer conn.Close()

	unlock, err := migrationLock(ctx, conn, d, n)
	if err != nil {
		return fmt.Errorf("outbox: migrate %s: %w", n.raw, err)
	}
	defer unlock()

	if _, err := conn.ExecContext(ctx, migrationsTableSQL(d, n)); err != nil {
		return fmt.Errorf("outbox: migrate %s: create %s: %w", n.raw, n.migrations, err)
	}
	var versions []int
	if err := sqlx.SelectContext(ctx, conn, &versions, "SELECT version FROM "+n.migrations+" ORDER BY version"); err != nil {
		return fmt.Errorf("outbox: migrate %s: read applied versions: %w", n.raw, err)
	}
	known := map[int]bool{}
	for _, m := range steps {
		known[m.version] = true
	}
	applied := map[int]bool{}
	var unknown []int
	for _, v := range versions {
		applied[v] = true
		if !known[v] {
			unknown = append(unknown, v)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("outbox: migrate %s: %s records version(s) %v, which this gocqrs does not know (latest %d): a newer gocqrs migrated it; nothing applied",
			n.raw, n.migrations, unknown, LatestVersion(d))
	}
	rep := n.replacer()
	for _, m := range steps {
		if applied[m.version] || (upTo > 0 && m.version > upTo) {
			continue
		}
		if err := applyMigration(ctx, conn, d, n, m, rep); err != nil {
			return fmt.Errorf("outbox: migrate %s: %s: %w", n.raw, m.name, err)
		}
	}
	return nil
}

// applyMigration runs one migration and records its version in one
// transaction (MySQL commits DDL implicitly; the steps are idempotent).
func applyMigration(ctx context.Context, conn *sqlx.Conn, d dialect.Dialect, n names, m migration, rep *strings.Replacer) error {
	tx, err := conn.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	for i, stmt := range statements(rep.Replace(m.sql)) {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("statement %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, recordVersionSQL(d, n), m.version, m.name); err != nil {
		return fmt.Errorf("record version %d: %w", m.version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// migrationLock takes a session advisory lock that serialises migrations of
// one table (PostgreSQL, MySQL). SQLite serialises writers by itself.
func migrationLock(ctx context.Context, conn *sqlx.Conn, d dialect.Dialect, n names) (func(), error) {
	switch d.Name() {
	case dialect.Postgres:
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", n.lockKey); err != nil {
			return nil, fmt.Errorf("advisory lock: %w", err)
		}
		return func() {
			_, _ = conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", n.lockKey)
		}, nil
	case dialect.MySQL:
		name := fmt.Sprintf("gocqrs_outbox_%016x", uint64(n.lockKey))
		var got *int64
		if err := conn.QueryRowxContext(ctx, "SELECT GET_LOCK(?, 60)", name).Scan(&got); err != nil {
			return nil, fmt.Errorf("GET_LOCK %s: %w", name, err)
		}
		if got == nil || *got != 1 {
			return nil, fmt.Errorf("GET_LOCK %s: not granted within 60 s (another migration running?)", name)
		}
		return func() {
			_, _ = conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(?)", name)
		}, nil
	default:
		return func() {}, nil
	}
}
