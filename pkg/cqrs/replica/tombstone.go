package replica

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// tombstone is what a DELETE left for one (cqrs_id, pk).
type tombstone struct {
	revision int64
	updated  time.Time
}

// tombstones reads and writes the tombstone table.
type tombstones struct {
	d     dialect.Dialect
	table string // as configured, for messages
	qt    string // quoted
	get1  string
	put1  string
	clr1  string
	prune string

	putHead, putTail string // of put1 and of ApplyBatch's multi-row put
}

func newTombstones(ctx context.Context, q sqlx.QueryerContext, d dialect.Dialect, table string) (*tombstones, error) {
	qt, err := d.Quote(table)
	if err != nil {
		return nil, fmt.Errorf("replica: tombstone table: %w", err)
	}
	cols, err := d.Columns(ctx, q, table)
	if err != nil {
		return nil, fmt.Errorf("replica: tombstone table %q is missing (run replica.Migrate, or set DjangoCompat): %w", table, err)
	}
	have := map[string]bool{}
	for _, c := range cols {
		have[c.Name] = true
	}
	for _, c := range []string{"cqrs_id", "pk", "revision", "updated", "deleted_at"} {
		if !have[c] {
			return nil, fmt.Errorf("replica: tombstone table %q has no column %q (run replica.Migrate)", table, c)
		}
	}
	t := &tombstones{d: d, table: table, qt: qt}
	t.get1 = d.Rebind("SELECT revision, updated FROM " + qt + " WHERE cqrs_id = ? AND pk = ?")
	t.clr1 = d.Rebind("DELETE FROM " + qt + " WHERE cqrs_id = ? AND pk = ?")
	t.prune = d.Rebind("DELETE FROM " + qt + " WHERE deleted_at < ?")
	// put1 and the multi-row put of ApplyBatch share head and tail:
	// head + "(?, ?, ?, ?, ?)[, ...]" + tail.
	switch d.Name() {
	case dialect.Postgres:
		t.putHead = "INSERT INTO " + qt + " AS tb (cqrs_id, pk, revision, updated, deleted_at) VALUES "
		t.putTail = " ON CONFLICT (cqrs_id, pk) DO UPDATE SET revision = GREATEST(tb.revision, EXCLUDED.revision)," +
			" updated = GREATEST(tb.updated, EXCLUDED.updated), deleted_at = EXCLUDED.deleted_at"
	case dialect.MySQL:
		t.putHead = "INSERT INTO " + qt + " (cqrs_id, pk, revision, updated, deleted_at) VALUES "
		t.putTail = " ON DUPLICATE KEY UPDATE revision = GREATEST(revision, VALUES(revision))," +
			" updated = GREATEST(updated, VALUES(updated)), deleted_at = VALUES(deleted_at)"
	default:
		// SQLite: fixed-width UTC text, so max() on strings is max() on times.
		t.putHead = "INSERT INTO " + qt + " (cqrs_id, pk, revision, updated, deleted_at) VALUES "
		t.putTail = " ON CONFLICT (cqrs_id, pk) DO UPDATE SET revision = max(revision, excluded.revision)," +
			" updated = max(updated, excluded.updated), deleted_at = excluded.deleted_at"
	}
	t.put1 = t.putHead + "(?, ?, ?, ?, ?)" + t.putTail
	t.put1 = d.Rebind(t.put1)
	return t, nil
}

func (t *tombstones) get(ctx context.Context, tx *sqlx.Tx, cqrsID, pk string) (*tombstone, error) {
	var rv, uv any
	err := tx.QueryRowxContext(ctx, t.get1, cqrsID, pk).Scan(&rv, &uv)
	if err != nil {
		if isNoRows(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read tombstone from %s: %w", t.table, err)
	}
	return t.parse(rv, uv)
}

// parse reads a scanned revision and updated time.
func (t *tombstones) parse(rv, uv any) (*tombstone, error) {
	rev, ok := asInt64(rv)
	if !ok {
		return nil, fmt.Errorf("tombstone table %s: revision %v is not an integer", t.table, rv)
	}
	upd, ok := asTime(uv)
	if !ok {
		return nil, fmt.Errorf("tombstone table %s: updated %v is not a timestamp", t.table, uv)
	}
	return &tombstone{revision: rev, updated: upd}, nil
}

func (t *tombstones) put(ctx context.Context, tx *sqlx.Tx, cqrsID, pk string, rev int64, upd time.Time) error {
	_, err := tx.ExecContext(ctx, t.put1, cqrsID, pk, rev, timeArg(t.d, upd), timeArg(t.d, time.Now()))
	if err != nil {
		return fmt.Errorf("write tombstone to %s: %w", t.table, err)
	}
	return nil
}

func (t *tombstones) clear(ctx context.Context, tx *sqlx.Tx, cqrsID, pk string) error {
	if _, err := tx.ExecContext(ctx, t.clr1, cqrsID, pk); err != nil {
		return fmt.Errorf("clear tombstone in %s: %w", t.table, err)
	}
	return nil
}

// PruneTombstones deletes tombstones written more than olderThan ago and
// returns how many it removed. A message older than the pruned tombstone
// could then recreate its row, so keep tombstones longer than messages can
// be delayed (retries, dead-letter replays). With DjangoCompat it does
// nothing.
func (e *Engine) PruneTombstones(ctx context.Context, olderThan time.Duration) (int64, error) {
	if e.tomb == nil {
		return 0, nil
	}
	if olderThan < 0 {
		return 0, fmt.Errorf("replica: prune tombstones: negative age %s", olderThan)
	}
	res, err := e.db.ExecContext(ctx, e.tomb.prune, timeArg(e.d, time.Now().Add(-olderThan)))
	if err != nil {
		return 0, fmt.Errorf("replica: prune tombstones in %s: %w", e.tomb.table, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("replica: prune tombstones in %s: %w", e.tomb.table, err)
	}
	return n, nil
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
