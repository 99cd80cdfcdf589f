package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// inChunk bounds the bound parameters of one "pk IN (...)" statement.
const inChunk = 1000

// tableField is one filterable field of a model.
type tableField struct {
	key    string // the name in instance_data and in --filter
	column string // the column (quoted by newTableRef)
	kind   dialect.Kind
}

// tableRef holds the quoted SQL names of one bound model's table and runs
// the few queries the data commands need. Identifiers are quoted with
// dialect.Quote; values are always bound.
type tableRef struct {
	d              dialect.Dialect
	cqrsID         string
	table          string // quoted
	pk, rev, upd   string // quoted columns
	pkName         string // the pk's field key
	pkKind         dialect.Kind
	fields         []tableField
	revKey, updKey string // the sync columns' names
}

func newTableRef(d dialect.Dialect, cqrsID, table, pk, revCol, updCol string, fields []tableField) (*tableRef, error) {
	t := &tableRef{d: d, cqrsID: cqrsID, pkName: pk, revKey: revCol, updKey: updCol}
	var err error
	q := func(name string) string {
		if err != nil {
			return ""
		}
		var s string
		s, err = d.Quote(name)
		return s
	}
	t.table, t.rev, t.upd = q(table), q(revCol), q(updCol)
	for _, f := range fields {
		qc := q(f.column)
		if f.key == pk {
			t.pk, t.pkKind = qc, f.kind
		}
		t.fields = append(t.fields, tableField{key: f.key, column: qc, kind: f.kind})
	}
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", cqrsID, err)
	}
	if t.pk == "" {
		return nil, fmt.Errorf("model %q: primary key %q is not among its fields", cqrsID, pk)
	}
	// The sync columns are filterable under their wire names, as in Django.
	t.fields = append(t.fields,
		tableField{key: wire.RevisionKey, column: t.rev, kind: dialect.KindInt},
		tableField{key: wire.UpdatedKey, column: t.upd, kind: dialect.KindDateTime})
	if revCol != wire.RevisionKey {
		t.fields = append(t.fields, tableField{key: revCol, column: t.rev, kind: dialect.KindInt})
	}
	if updCol != wire.UpdatedKey {
		t.fields = append(t.fields, tableField{key: updCol, column: t.upd, kind: dialect.KindDateTime})
	}
	return t, nil
}

// count returns the number of rows matching w.
func (t *tableRef) count(ctx context.Context, q sqlx.QueryerContext, w whereClause) (int64, error) {
	query := "SELECT COUNT(*) FROM " + t.table
	if w.sql != "" {
		query += " WHERE " + w.sql
	}
	var n int64
	if err := q.QueryRowxContext(ctx, t.d.Rebind(query), w.args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s rows: %w", t.cqrsID, err)
	}
	return n, nil
}

// pkRev is one row's primary key and revision.
type pkRev struct {
	pk  pkVal
	rev int64
}

// page returns up to limit rows matching w whose pk is above after (all
// from the start when after is nil), in pk order: keyset pagination, so
// rows added or removed meanwhile neither repeat nor shift a page.
func (t *tableRef) page(ctx context.Context, q sqlx.QueryerContext, w whereClause, after *pkVal, limit int) ([]pkRev, error) {
	var conds []string
	var args []any
	if w.sql != "" {
		conds = append(conds, "("+w.sql+")")
		args = append(args, w.args...)
	}
	if after != nil {
		conds = append(conds, t.pk+" > ?")
		args = append(args, after.bind)
	}
	query := "SELECT " + t.pk + ", " + t.rev + " FROM " + t.table
	if len(conds) > 0 {
		query += " WHERE " + strings.Join(conds, " AND ")
	}
	query += " ORDER BY " + t.pk + " LIMIT " + strconv.Itoa(limit)
	rows, err := q.QueryxContext(ctx, t.d.Rebind(query), args...)
	if err != nil {
		return nil, fmt.Errorf("read %s rows: %w", t.cqrsID, err)
	}
	defer rows.Close()
	var out []pkRev
	for rows.Next() {
		var rawPK, rawRev any
		if err := rows.Scan(&rawPK, &rawRev); err != nil {
			return nil, fmt.Errorf("read %s rows: %w", t.cqrsID, err)
		}
		pk, err := pkFromDB(t.pkKind, rawPK)
		if err != nil {
			return nil, fmt.Errorf("read %s rows: %w", t.cqrsID, err)
		}
		rev, ok := master.ScannedInt(rawRev)
		if !ok {
			return nil, fmt.Errorf("read %s rows: pk %s: revision %v is not an integer", t.cqrsID, pk.key, rawRev)
		}
		out = append(out, pkRev{pk, rev})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s rows: %w", t.cqrsID, err)
	}
	return out, nil
}

// eachPage calls fn with the rows matching w, batch rows a page in pk
// order (see page), and then counts the page on pr. It stops after a page
// shorter than batch; when ctx is done, it stops before reading the next
// page and returns what interrupted returns.
func (t *tableRef) eachPage(ctx context.Context, q sqlx.QueryerContext, w whereClause, batch int, pr *progress, interrupted func() error, fn func(page []pkRev) error) error {
	var after *pkVal
	for {
		if ctx.Err() != nil {
			return interrupted()
		}
		page, err := t.page(ctx, q, w, after, batch)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		if err := fn(page); err != nil {
			return err
		}
		pr.Add(len(page))
		after = &page[len(page)-1].pk
		if len(page) < batch {
			return nil
		}
	}
}

// interruptedAfter is the error of a command stopped after done of total
// rows.
func interruptedAfter(done, total int64) error {
	return fmt.Errorf("interrupted after %d of %d rows", done, total)
}

// syncRow is a stored row's primary key and sync columns.
type syncRow struct {
	pk  pkVal
	rev int64
	upd any // as scanned
}

// lookup reads the pk and sync columns of the rows among pks, keyed by
// pkVal.key; pks that have no row are absent.
func (t *tableRef) lookup(ctx context.Context, q sqlx.QueryerContext, pks []pkVal) (map[string]syncRow, error) {
	out := make(map[string]syncRow, len(pks))
	for start := 0; start < len(pks); start += inChunk {
		chunk := pks[start:min(start+inChunk, len(pks))]
		args := make([]any, len(chunk))
		for i, p := range chunk {
			args[i] = p.bind
		}
		query := "SELECT " + t.pk + ", " + t.rev + ", " + t.upd + " FROM " + t.table +
			" WHERE " + t.pk + " IN (" + dialect.Placeholders(len(chunk)) + ")"
		rows, err := q.QueryxContext(ctx, t.d.Rebind(query), args...)
		if err != nil {
			return nil, fmt.Errorf("read %s rows: %w", t.cqrsID, err)
		}
		for rows.Next() {
			var rawPK, rawRev, upd any
			if err := rows.Scan(&rawPK, &rawRev, &upd); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read %s rows: %w", t.cqrsID, err)
			}
			pk, err := pkFromDB(t.pkKind, rawPK)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("read %s rows: %w", t.cqrsID, err)
			}
			rev, ok := master.ScannedInt(rawRev)
			if !ok {
				rows.Close()
				return nil, fmt.Errorf("read %s rows: pk %s: revision %v is not an integer", t.cqrsID, pk.key, rawRev)
			}
			if b, isBytes := upd.([]byte); isBytes {
				upd = string(b)
			}
			out[pk.key] = syncRow{pk: pk, rev: rev, upd: upd}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s rows: %w", t.cqrsID, err)
		}
	}
	return out, nil
}

// pkVal is one primary key in its three forms.
type pkVal struct {
	wire any    // as in a stream: json.Number or string
	bind any    // as bound to SQL
	key  string // canonical text, for comparisons
}

// pkFromDB converts a scanned primary key.
func pkFromDB(kind dialect.Kind, raw any) (pkVal, error) {
	switch v := raw.(type) {
	case nil:
		return pkVal{}, fmt.Errorf("null primary key")
	case []byte:
		raw = string(v)
	case [16]byte:
		u, err := wire.NormalizeUUID(fmt.Sprintf("%x", v[:]))
		if err != nil {
			return pkVal{}, err
		}
		raw = u
	}
	p := pkVal{bind: raw}
	switch kind {
	case dialect.KindInt:
		i, ok := master.ScannedInt(raw)
		if !ok {
			return pkVal{}, fmt.Errorf("primary key %v (%T) is not an integer", raw, raw)
		}
		p.wire = json.Number(strconv.FormatInt(i, 10))
	case dialect.KindUUID:
		s, ok := raw.(string)
		if !ok {
			return pkVal{}, fmt.Errorf("primary key %v (%T) is not a UUID", raw, raw)
		}
		u, err := wire.NormalizeUUID(s)
		if err != nil {
			return pkVal{}, fmt.Errorf("primary key: %w", err)
		}
		p.wire = u
	default:
		switch v := raw.(type) {
		case string:
			p.wire = v
		case int64:
			p.wire = json.Number(strconv.FormatInt(v, 10))
		default:
			p.wire = fmt.Sprint(v)
		}
	}
	p.key = keyOf(p.wire)
	return p, nil
}

// pkFromStream converts a primary key read from a stream (a JSON value)
// for a pk column of the given kind.
func pkFromStream(kind dialect.Kind, v any) (pkVal, error) {
	switch kind {
	case dialect.KindInt:
		var i int64
		var ok bool
		switch x := v.(type) {
		case json.Number:
			i, ok = wire.AsInt64(x)
		case string:
			n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
			i, ok = n, err == nil
		}
		if !ok {
			return pkVal{}, fmt.Errorf("primary key %s is not an integer", showJSON(v))
		}
		return pkVal{wire: v, bind: i, key: strconv.FormatInt(i, 10)}, nil
	case dialect.KindUUID:
		s, ok := v.(string)
		if !ok {
			return pkVal{}, fmt.Errorf("primary key %s is not a UUID string", showJSON(v))
		}
		u, err := wire.NormalizeUUID(s)
		if err != nil {
			return pkVal{}, fmt.Errorf("primary key %s is not a UUID", showJSON(v))
		}
		return pkVal{wire: v, bind: u, key: u}, nil
	}
	switch x := v.(type) {
	case string:
		return pkVal{wire: v, bind: x, key: x}, nil
	case json.Number:
		return pkVal{wire: v, bind: x.String(), key: keyOf(x)}, nil
	}
	return pkVal{}, fmt.Errorf("primary key %s is not a number or a string", showJSON(v))
}

// keyOf is the canonical text of a wire primary key: integers in decimal,
// strings as they are.
func keyOf(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return strconv.FormatInt(i, 10)
		}
		return x.String()
	}
	return showJSON(v)
}

// showJSON renders a value for messages.
func showJSON(v any) string {
	b, err := wire.MarshalValue(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
