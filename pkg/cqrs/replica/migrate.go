package replica

import (
	"context"
	"embed"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates the tombstone table (Options.TombstoneTable, default
// "cqrs_tombstones") and its index if they do not exist. It is idempotent
// and safe to run at every start. With Options.DjangoCompat it does nothing.
func Migrate(ctx context.Context, db *sqlx.DB, d dialect.Dialect, opts Options) error {
	if opts.DjangoCompat {
		return nil
	}
	stmts, err := migrationSQL(d, opts.tombstoneTable())
	if err != nil {
		return err
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("replica: migrate tombstone table %q: %w", opts.tombstoneTable(), err)
		}
	}
	return nil
}

// migrationSQL returns the dialect's statements with the names filled in.
func migrationSQL(d dialect.Dialect, table string) ([]string, error) {
	qt, err := d.Quote(table)
	if err != nil {
		return nil, fmt.Errorf("replica: migrate: tombstone table: %w", err)
	}
	base := table[strings.LastIndexByte(table, '.')+1:]
	idx := base + "_deleted_at_idx"
	if len(idx) > 63 {
		idx = base[:63-len("_deleted_at_idx")] + "_deleted_at_idx"
	}
	qi, err := d.Quote(idx)
	if err != nil {
		return nil, fmt.Errorf("replica: migrate: index name: %w", err)
	}
	name := map[dialect.Name]string{dialect.Postgres: "postgres", dialect.MySQL: "mysql", dialect.SQLite: "sqlite"}[d.Name()]
	if name == "" {
		return nil, fmt.Errorf("replica: migrate: invalid dialect")
	}
	raw, err := migrations.ReadFile("migrations/" + name + ".sql")
	if err != nil {
		return nil, fmt.Errorf("replica: migrate: %w", err)
	}
	text := strings.NewReplacer("{{table}}", qt, "{{index}}", qi).Replace(string(raw))
	var out []string
	for _, s := range strings.Split(text, ";") {
		var lines []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "--") {
				lines = append(lines, l)
			}
		}
		if stmt := strings.TrimSpace(strings.Join(lines, "\n")); stmt != "" {
			out = append(out, stmt)
		}
	}
	return out, nil
}
