package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// rowColumns are the columns a claim reads, in claimedRow's scan order.
const rowColumns = "id, cqrs_id, entity_key, topic, body, headers, attempts"

// claimedRow is an outbox row held by this relay.
type claimedRow struct {
	id        int64
	cqrsID    string
	entityKey string
	topic     string
	body      string
	headers   sql.NullString
	attempts  int64
}

func scanRows(rs *sql.Rows) ([]claimedRow, error) {
	defer rs.Close()
	var out []claimedRow
	for rs.Next() {
		var r claimedRow
		if err := rs.Scan(&r.id, &r.cqrsID, &r.entityKey, &r.topic, &r.body, &r.headers, &r.attempts); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rs.Err()
}

// relaySQL holds the fixed statements of a relay for one dialect and table.
type relaySQL struct {
	// claim: PostgreSQL and SQLite, one UPDATE ... RETURNING.
	claim string
	// claimSelect and claimUpdate: MySQL, SELECT ... FOR UPDATE SKIP LOCKED
	// then UPDATE in one short transaction (claimUpdate lacks its IN list).
	claimSelect string
	claimUpdate string
	pending     string
}

func buildRelaySQL(d dialect.Dialect, n names) relaySQL {
	t := n.table
	switch d.Name() {
	case dialect.Postgres:
		return relaySQL{
			// ARRAY(subquery) is evaluated once, so the LIMIT and the row
			// locks apply to exactly the rows updated.
			claim: "UPDATE " + t + " SET claimed_by = $1, claimed_until = clock_timestamp() + make_interval(secs => $2)" +
				" WHERE id = ANY(ARRAY(SELECT id FROM " + t +
				" WHERE claimed_until IS NULL OR claimed_until < clock_timestamp()" +
				" ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED))" +
				" RETURNING " + rowColumns,
			pending: "SELECT COUNT(*), COALESCE((EXTRACT(EPOCH FROM MIN(created_at)) * 1000000)::BIGINT, 0) FROM " + t,
		}
	case dialect.MySQL:
		return relaySQL{
			claimSelect: "SELECT " + rowColumns + " FROM " + t +
				" WHERE claimed_until IS NULL OR claimed_until < UTC_TIMESTAMP(6)" +
				" ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED",
			claimUpdate: "UPDATE " + t + " SET claimed_by = ?, claimed_until = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND WHERE id IN ",
			pending:     "SELECT COUNT(*), COALESCE(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', MIN(created_at)), 0) FROM " + t,
		}
	default:
		const now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
		return relaySQL{
			// SQLite serialises writers: one statement is atomic.
			claim: "UPDATE " + t + " SET claimed_by = ?, claimed_until = strftime('%Y-%m-%d %H:%M:%f', 'now', ?)" +
				" WHERE id IN (SELECT id FROM " + t +
				" WHERE claimed_until IS NULL OR claimed_until < " + now +
				" ORDER BY id LIMIT ?)" +
				" RETURNING " + rowColumns,
			pending: "SELECT COUNT(*), COALESCE(CAST(ROUND((julianday(MIN(created_at)) - 2440587.5) * 86400000000.0) AS INTEGER), 0) FROM " + t,
		}
	}
}

// inList returns "(?, ?, ...)" and the ids as arguments.
func inList(ids []int64) (string, []any) {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return "(" + dialect.Placeholders(len(ids)) + ")", args
}

// claim leases up to BatchSize of the lowest-id rows that are unclaimed or
// whose lease expired, and returns them (in any order).
func (r *Relay) claim(ctx context.Context) ([]claimedRow, error) {
	ttl := r.opts.ClaimTTL
	switch r.d.Name() {
	case dialect.Postgres:
		var rows []claimedRow
		err := r.retryDeadlock(ctx, func() error {
			rs, err := r.db.QueryContext(ctx, r.sql.claim, r.opts.OwnerID, ttl.Seconds(), r.opts.BatchSize)
			if err != nil {
				return err
			}
			rows, err = scanRows(rs)
			return err
		})
		return rows, err
	case dialect.SQLite:
		rs, err := r.db.QueryContext(ctx, r.sql.claim, r.opts.OwnerID, fmt.Sprintf("%+.3f seconds", ttl.Seconds()), r.opts.BatchSize)
		if err != nil {
			return nil, err
		}
		return scanRows(rs)
	default:
		var rows []claimedRow
		err := r.retryDeadlock(ctx, func() (err error) {
			rows, err = r.claimMySQL(ctx)
			return err
		})
		return rows, err
	}
}

// deadlockRetries is how many times a statement (or MySQL's claim
// transaction) that the database rolled back as a deadlock victim is run
// again. Relays sharing an outbox lock rows in their claims, deletes and
// releases in orders that can deadlock (InnoDB in particular); the victim
// changed nothing, so running it again is safe.
const deadlockRetries = 3

// retryDeadlock runs fn, and again up to deadlockRetries times while it
// fails as a deadlock victim.
func (r *Relay) retryDeadlock(ctx context.Context, fn func() error) error {
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || !isDeadlock(err) || attempt == deadlockRetries || ctx.Err() != nil {
			return err
		}
		r.log.Debug("outbox: the database chose this statement as a deadlock victim; running it again",
			"attempt", attempt+1, "error", err)
	}
}

// isDeadlock reports whether err is a deadlock the database resolved by
// rolling back this statement: MySQL's ER_LOCK_DEADLOCK (1213) or
// PostgreSQL's deadlock_detected (40P01).
func isDeadlock(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1213
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "40P01"
}

func (r *Relay) claimMySQL(ctx context.Context) ([]claimedRow, error) {
	// READ COMMITTED: no gap locks, so the claim never blocks inserts.
	tx, err := r.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	rs, err := tx.QueryContext(ctx, r.sql.claimSelect, r.opts.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("select: %w", err)
	}
	rows, err := scanRows(rs)
	if err != nil {
		return nil, fmt.Errorf("select: %w", err)
	}
	if len(rows) == 0 {
		return nil, tx.Commit()
	}
	ids := make([]int64, len(rows))
	for i, row := range rows {
		ids[i] = row.id
	}
	list, args := inList(ids)
	args = append([]any{r.opts.OwnerID, r.opts.ClaimTTL.Microseconds()}, args...)
	if _, err := tx.ExecContext(ctx, r.sql.claimUpdate+list, args...); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return rows, nil
}

// lowerRows returns, for the given entity keys, the ids and keys of every row
// with an id below maxID, claimed by this relay or not.
func (r *Relay) lowerRows(ctx context.Context, keys []string, maxID int64) (map[string][]int64, error) {
	var (
		q    string
		args []any
	)
	if r.d.Name() == dialect.Postgres {
		q, args = "SELECT id, entity_key FROM "+r.n.table+" WHERE entity_key = ANY($1) AND id < $2", []any{keys, maxID}
	} else {
		args = make([]any, 0, len(keys)+1)
		for _, k := range keys {
			args = append(args, k)
		}
		args = append(args, maxID)
		q = r.d.Rebind("SELECT id, entity_key FROM " + r.n.table +
			" WHERE entity_key IN (" + dialect.Placeholders(len(keys)) + ") AND id < ?")
	}
	rs, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := map[string][]int64{}
	for rs.Next() {
		var id int64
		var key string
		if err := rs.Scan(&id, &key); err != nil {
			return nil, err
		}
		out[key] = append(out[key], id)
	}
	return out, rs.Err()
}

// idChunk bounds the ids bound into one IN list (MySQL, SQLite); PostgreSQL
// binds one array instead.
const idChunk = 1000

// execIDs runs "<head> AND id IN (...)" (PostgreSQL: "AND id = ANY($n)")
// with args before the ids, in chunks of idChunk ids.
func (r *Relay) execIDs(ctx context.Context, head string, args []any, ids []int64) error {
	if r.d.Name() == dialect.Postgres {
		q, all := r.d.Rebind(head+" AND id = ANY(?)"), append(args, ids)
		return r.retryDeadlock(ctx, func() error {
			_, err := r.db.ExecContext(ctx, q, all...)
			return err
		})
	}
	for start := 0; start < len(ids); start += idChunk {
		list, idArgs := inList(ids[start:min(start+idChunk, len(ids))])
		all := append(append(make([]any, 0, len(args)+len(idArgs)), args...), idArgs...)
		q := r.d.Rebind(head + " AND id IN " + list)
		if err := r.retryDeadlock(ctx, func() error {
			_, err := r.db.ExecContext(ctx, q, all...)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// deleteRows deletes published rows still claimed by this relay.
func (r *Relay) deleteRows(ctx context.Context, ids []int64) error {
	return r.execIDs(ctx, "DELETE FROM "+r.n.table+" WHERE claimed_by = ?", []any{r.opts.OwnerID}, ids)
}

// releaseRows hands claimed rows back unpublished.
func (r *Relay) releaseRows(ctx context.Context, ids []int64) error {
	return r.execIDs(ctx, "UPDATE "+r.n.table+" SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?",
		[]any{r.opts.OwnerID}, ids)
}

// maxLastErrorLen bounds last_error (bytes, cut at a rune boundary).
const maxLastErrorLen = 2000

// markFailed releases rows whose publish failed, counting the attempt and
// recording text as last_error. With a positive setAside the rows are not
// claimed again before that long (messages the broker refused); otherwise
// they may be claimed at once.
func (r *Relay) markFailed(ctx context.Context, ids []int64, text string, setAside time.Duration) error {
	if len(text) > maxLastErrorLen {
		cut := maxLastErrorLen
		for cut > 0 && !isRuneStart(text[cut]) {
			cut--
		}
		text = text[:cut]
	}
	text = strings.ToValidUTF8(text, "?")
	until, arg := "NULL", any(nil)
	if setAside > 0 {
		until, arg = r.untilExpr(setAside)
	}
	args := []any{text, r.opts.OwnerID}
	if arg != nil {
		args = append([]any{arg}, args...)
	}
	return r.execIDs(ctx, "UPDATE "+r.n.table+
		" SET claimed_until = "+until+", claimed_by = NULL, attempts = attempts + 1, last_error = ? WHERE claimed_by = ?",
		args, ids)
}

// untilExpr returns the dialect's SQL for "the database's now plus d", with
// its one bind argument.
func (r *Relay) untilExpr(d time.Duration) (string, any) {
	switch r.d.Name() {
	case dialect.Postgres:
		return "clock_timestamp() + make_interval(secs => ?)", d.Seconds()
	case dialect.MySQL:
		return "UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND", d.Microseconds()
	default:
		return "strftime('%Y-%m-%d %H:%M:%f', 'now', ?)", fmt.Sprintf("%+.3f seconds", d.Seconds())
	}
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
