package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// ErrGone is wrapped by [Replace] when the row no longer exists (it was
// published and deleted) or is being published by a relay right now.
var ErrGone = errors.New("outbox: row gone")

// Limits on message fields, the same on every dialect (MySQL columns are
// VARCHAR of these lengths).
const (
	MaxCQRSIDLen    = 255
	MaxTopicLen     = 255
	MaxEntityKeyLen = 512
)

// Insert chunking: rows per INSERT statement and body bytes per statement
// (MariaDB's default max_allowed_packet is 16 MiB).
const (
	insertChunkRows  = 200
	insertChunkBytes = 4 << 20
)

// Message is one outbox row to write.
type Message struct {
	// CQRSID is the entity type, e.g. "author".
	CQRSID string
	// EntityKey identifies the entity: CQRSID + ":" + primary key as text.
	// The relay keeps rows of one EntityKey in id order.
	EntityKey string
	// Topic is the Watermill topic (the routing key) the row is published to.
	Topic string
	// Body is the message payload, valid UTF-8 (gocqrs writes ASCII JSON).
	Body []byte
	// Headers become Watermill metadata; nil or empty stores NULL.
	Headers map[string]string
}

// encoded is a validated Message in the form bound to SQL.
type encoded struct {
	cqrsID, entityKey, topic, body string
	headers                        sql.NullString
}

func encode(m Message) (encoded, error) {
	switch {
	case m.CQRSID == "":
		return encoded{}, errors.New("empty CQRSID")
	case utf8.RuneCountInString(m.CQRSID) > MaxCQRSIDLen:
		return encoded{}, fmt.Errorf("CQRSID %.40q...: longer than %d characters", m.CQRSID, MaxCQRSIDLen)
	case m.EntityKey == "":
		return encoded{}, fmt.Errorf("cqrs_id %q: empty EntityKey", m.CQRSID)
	case utf8.RuneCountInString(m.EntityKey) > MaxEntityKeyLen:
		return encoded{}, fmt.Errorf("cqrs_id %q: EntityKey longer than %d characters", m.CQRSID, MaxEntityKeyLen)
	case m.Topic == "":
		return encoded{}, fmt.Errorf("entity %q: empty Topic", m.EntityKey)
	case utf8.RuneCountInString(m.Topic) > MaxTopicLen:
		return encoded{}, fmt.Errorf("entity %q: Topic longer than %d characters", m.EntityKey, MaxTopicLen)
	case !utf8.Valid(m.Body):
		return encoded{}, fmt.Errorf("entity %q: Body is not valid UTF-8", m.EntityKey)
	case !utf8.ValidString(m.CQRSID) || !utf8.ValidString(m.EntityKey) || !utf8.ValidString(m.Topic):
		return encoded{}, fmt.Errorf("entity %q: CQRSID, EntityKey and Topic must be valid UTF-8", m.EntityKey)
	}
	e := encoded{cqrsID: m.CQRSID, entityKey: m.EntityKey, topic: m.Topic, body: string(m.Body)}
	if len(m.Headers) > 0 {
		h, ok := flatHeaders(m.Headers)
		if !ok {
			b, err := json.Marshal(m.Headers)
			if err != nil {
				return encoded{}, fmt.Errorf("entity %q: headers: %w", m.EntityKey, err)
			}
			h = string(b)
		}
		e.headers = sql.NullString{String: h, Valid: true}
	}
	return e, nil
}

// flatHeaders writes h as json.Marshal does when every key and value is
// printable ASCII that JSON does not escape (json.Marshal escapes <, > and
// & too); ok is false otherwise, and for more than 8 headers. It saves
// json.Marshal's reflection and sorting on every outbox row.
func flatHeaders(h map[string]string) (s string, ok bool) {
	if len(h) > 8 {
		return "", false
	}
	var buf [8]string
	keys := buf[:0]
	size := 2
	for k, v := range h {
		if !flatJSON(k) || !flatJSON(v) {
			return "", false
		}
		keys = append(keys, k)
		size += len(k) + len(v) + 6
	}
	slices.Sort(keys)
	b := make([]byte, 0, size)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, '"', ':', '"')
		b = append(b, h[k]...)
		b = append(b, '"')
	}
	b = append(b, '}')
	return string(b), true
}

// flatJSON reports whether s is printable ASCII that json.Marshal writes
// as it is inside a string.
func flatJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// Insert writes msgs to the outbox inside the caller's transaction tx and
// returns their ids in the order of msgs. Rows of one call get ascending ids
// in that order. Nothing is published before tx commits; a rollback leaves no
// row. Rows are written with multi-row INSERTs in chunks.
//
// On PostgreSQL a failed Insert aborts tx (as any failed statement does).
func Insert(ctx context.Context, tx sqlx.ExtContext, d dialect.Dialect, msgs []Message, opts ...Option) ([]int64, error) {
	if tx == nil {
		return nil, errors.New("outbox: insert: nil transaction")
	}
	n, err := cachedNames(d, buildConfig(opts).table)
	if err != nil {
		return nil, fmt.Errorf("outbox: insert: %w", err)
	}
	rows := make([]encoded, len(msgs))
	for i, m := range msgs {
		if rows[i], err = encode(m); err != nil {
			return nil, fmt.Errorf("outbox: insert: message %d: %w", i, err)
		}
	}
	ids := make([]int64, 0, len(rows))
	for start := 0; start < len(rows); {
		end, size := start, 0
		for end < len(rows) && end-start < insertChunkRows && (end == start || size+len(rows[end].body) <= insertChunkBytes) {
			size += len(rows[end].body)
			end++
		}
		got, err := insertChunk(ctx, tx, d, n, rows[start:end])
		if err != nil {
			return nil, fmt.Errorf("outbox: insert into %s: messages %d..%d: %w", n.raw, start, end-1, err)
		}
		ids = append(ids, got...)
		start = end
	}
	return ids, nil
}

// InsertStatement returns the statement that writes m to the outbox as
// [Insert] does, returning the row's id, with its bind parameters numbered
// from $first, and its arguments. It is for a caller that writes its own
// row and the message in one statement, one round trip (PostgreSQL: "WITH
// r AS (INSERT ... RETURNING ...), o AS (<this>) SELECT ..."); it is
// PostgreSQL only.
func InsertStatement(d dialect.Dialect, m Message, first int, opts ...Option) (query string, args []any, err error) {
	if d.Name() != dialect.Postgres {
		return "", nil, fmt.Errorf("outbox: insert statement: %s: PostgreSQL only", d)
	}
	if first < 1 {
		return "", nil, fmt.Errorf("outbox: insert statement: first parameter $%d: want $1 or later", first)
	}
	n, err := cachedNames(d, buildConfig(opts).table)
	if err != nil {
		return "", nil, fmt.Errorf("outbox: insert statement: %w", err)
	}
	e, err := encode(m)
	if err != nil {
		return "", nil, fmt.Errorf("outbox: insert statement: %w", err)
	}
	key := statementKey{n.table, first}
	if q, ok := insertStatements.Load(key); ok {
		query = q.(string)
	} else {
		query = fmt.Sprintf("INSERT INTO %s (cqrs_id, entity_key, topic, body, headers) VALUES ($%d, $%d, $%d, $%d, $%d) RETURNING id",
			n.table, first, first+1, first+2, first+3, first+4)
		insertStatements.Store(key, query)
	}
	return query, []any{e.cqrsID, e.entityKey, e.topic, e.body, e.headers}, nil
}

// insertStatements holds InsertStatement's query texts, built once per outbox
// table and first parameter: a master builds one in every one-statement
// insert, and one string each time lets it keep what it builds around the
// text (see package master).
var insertStatements sync.Map // statementKey → string

type statementKey struct {
	table string // quoted
	first int
}

// Present reports which of ids are rows of the outbox table as tx sees
// them (a row written in tx and undone by a rollback to a savepoint is
// not).
func Present(ctx context.Context, tx sqlx.QueryerContext, d dialect.Dialect, ids []int64, opts ...Option) (map[int64]bool, error) {
	if tx == nil {
		return nil, errors.New("outbox: present: nil transaction")
	}
	n, err := cachedNames(d, buildConfig(opts).table)
	if err != nil {
		return nil, fmt.Errorf("outbox: present: %w", err)
	}
	found := make(map[int64]bool, len(ids))
	if len(ids) == 0 {
		return found, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := tx.QueryxContext(ctx, d.Rebind("SELECT id FROM "+n.table+" WHERE id IN ("+dialect.Placeholders(len(ids))+")"), args...)
	if err != nil {
		return nil, fmt.Errorf("outbox: look up %d rows of %s: %w", len(ids), n.raw, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("outbox: look up rows of %s: %w", n.raw, err)
		}
		found[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: look up rows of %s: %w", n.raw, err)
	}
	return found, nil
}

// Delete removes the outbox row id inside the caller's transaction tx: a
// row the transaction wrote and no longer wants (it writes another in its
// place). It returns an error wrapping [ErrGone] when there is no such row
// unclaimed.
func Delete(ctx context.Context, tx sqlx.ExtContext, d dialect.Dialect, id int64, opts ...Option) error {
	if tx == nil {
		return errors.New("outbox: delete: nil transaction")
	}
	n, err := cachedNames(d, buildConfig(opts).table)
	if err != nil {
		return fmt.Errorf("outbox: delete: %w", err)
	}
	res, err := tx.ExecContext(ctx, d.Rebind("DELETE FROM "+n.table+" WHERE id = ? AND claimed_by IS NULL"), id)
	if err != nil {
		return fmt.Errorf("outbox: delete row %d from %s: %w", id, n.raw, err)
	}
	if k, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("outbox: delete row %d from %s: rows affected: %w", id, n.raw, err)
	} else if k == 0 {
		return fmt.Errorf("outbox: delete row %d from %s: no such unclaimed row: %w", id, n.raw, ErrGone)
	}
	return nil
}

// mysqlNoReturning is set once a MySQL server rejected INSERT ... RETURNING
// (MySQL has none; MariaDB ≥ 10.5 has it): later inserts go row by row.
var mysqlNoReturning atomic.Bool

func insertChunk(ctx context.Context, tx sqlx.ExtContext, d dialect.Dialect, n names, rows []encoded) ([]int64, error) {
	if d.Name() == dialect.MySQL && mysqlNoReturning.Load() {
		return insertOneByOne(ctx, tx, n, rows)
	}
	var sb strings.Builder
	sb.WriteString("INSERT INTO " + n.table + " (cqrs_id, entity_key, topic, body, headers")
	tuple := "(?, ?, ?, ?, ?)"
	if d.Name() == dialect.MySQL {
		sb.WriteString(", created_at")
		tuple = "(?, ?, ?, ?, ?, UTC_TIMESTAMP(6))"
	}
	sb.WriteString(") VALUES ")
	args := make([]any, 0, 5*len(rows))
	for i, r := range rows {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(tuple)
		args = append(args, r.cqrsID, r.entityKey, r.topic, r.body, r.headers)
	}
	sb.WriteString(" RETURNING id")
	ids, err := queryIDs(ctx, tx, d.Rebind(sb.String()), args)
	if err != nil {
		var me *mysql.MySQLError
		if d.Name() == dialect.MySQL && errors.As(err, &me) && me.Number == 1064 {
			// Syntax error: a MySQL server without RETURNING. MySQL keeps the
			// transaction usable after a failed statement.
			mysqlNoReturning.Store(true)
			return insertOneByOne(ctx, tx, n, rows)
		}
		return nil, err
	}
	if len(ids) != len(rows) {
		return nil, fmt.Errorf("RETURNING gave %d ids for %d rows", len(ids), len(rows))
	}
	// RETURNING order is unspecified; ids are assigned in VALUES order.
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

func queryIDs(ctx context.Context, q sqlx.QueryerContext, query string, args []any) ([]int64, error) {
	rs, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var ids []int64
	for rs.Next() {
		var id int64
		if err := rs.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rs.Err()
}

// insertOneByOne writes rows one INSERT each and reads LAST_INSERT_ID(), which
// is exact for a single-row insert whatever innodb_autoinc_lock_mode and
// auto_increment_increment are (MySQL without RETURNING).
func insertOneByOne(ctx context.Context, tx sqlx.ExtContext, n names, rows []encoded) ([]int64, error) {
	q := "INSERT INTO " + n.table + " (cqrs_id, entity_key, topic, body, headers, created_at) VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6))"
	ids := make([]int64, 0, len(rows))
	for _, r := range rows {
		res, err := tx.ExecContext(ctx, q, r.cqrsID, r.entityKey, r.topic, r.body, r.headers)
		if err != nil {
			return nil, err
		}
		id, err := res.LastInsertId()
		if err != nil {
			return nil, fmt.Errorf("last insert id: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// Replace overwrites the topic, body and headers of the outbox row id inside
// the caller's transaction tx: one transaction that saves an entity twice
// sends one message with the last state. m.CQRSID and m.EntityKey must be set
// and are checked like [Insert]'s, but the row keeps its own. It returns an
// error wrapping [ErrGone] when the row does not exist (already published) or
// is claimed by a relay; the caller then inserts a new row instead.
func Replace(ctx context.Context, tx sqlx.ExtContext, d dialect.Dialect, id int64, m Message, opts ...Option) error {
	if tx == nil {
		return errors.New("outbox: replace: nil transaction")
	}
	n, err := cachedNames(d, buildConfig(opts).table)
	if err != nil {
		return fmt.Errorf("outbox: replace: %w", err)
	}
	e, err := encode(m)
	if err != nil {
		return fmt.Errorf("outbox: replace row %d: %w", id, err)
	}
	res, err := tx.ExecContext(ctx,
		d.Rebind("UPDATE "+n.table+" SET topic = ?, body = ?, headers = ? WHERE id = ? AND claimed_by IS NULL"),
		e.topic, e.body, e.headers, id)
	if err != nil {
		return fmt.Errorf("outbox: replace row %d in %s: %w", id, n.raw, err)
	}
	affected, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("outbox: replace row %d in %s: rows affected: %w", id, n.raw, err)
	}
	if affected > 0 {
		return nil
	}
	// Nothing changed: the row is gone, claimed, or (MySQL counts changed
	// rows only) already held exactly these values.
	var claimedBy sql.NullString
	err = tx.QueryRowxContext(ctx, d.Rebind("SELECT claimed_by FROM "+n.table+" WHERE id = ?"), id).Scan(&claimedBy)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("outbox: replace row %d in %s: no such row (already published?): %w", id, n.raw, ErrGone)
	case err != nil:
		return fmt.Errorf("outbox: replace row %d in %s: check row: %w", id, n.raw, err)
	case claimedBy.Valid:
		return fmt.Errorf("outbox: replace row %d in %s: claimed by relay %q: %w", id, n.raw, claimedBy.String, ErrGone)
	}
	return nil
}
