package master

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// Insert in one statement (PostgreSQL)
//
// Insert otherwise takes two statements, two round trips: the INSERT of the
// row, RETURNING it as stored (the message is built from what the
// transaction wrote), then the outbox INSERT. On PostgreSQL, when every
// field's value is given (no column default to learn) and the model has no
// Serialize or IsSyncInstance hook, Insert predicts the stored row from the
// values it binds (revision 0, the cqrs_updated it sets, each value
// converted as if read back), builds the message from it, and writes both
// rows in one statement (WITH ... INSERT ... RETURNING). It then compares
// the row the database returned with the prediction. When they differ (a
// trigger, a domain, rounding or normalisation the prediction does not
// know), it rewrites the outbox row with the message built from the
// returned row (or, if the primary key itself differs, deletes it and
// writes a new one), so the message is always the one the two statements
// would have written; the model's Correlation and Meta hooks are then
// called twice. A model whose rows differ from the prediction more than
// now and then goes back to two statements (predictStats).

// predictStats counts one model's one-statement inserts and mispredictions.
type predictStats struct{ tries, misses atomic.Int64 }

// worth reports whether predicting is still worth it: at most a few
// mispredictions, or at most one in ten.
func (s *predictStats) worth() bool {
	misses := s.misses.Load()
	return misses <= 4 || misses*10 <= s.tries.Load()
}

// insertOne is Insert's one-statement path (see above). done is false when
// it does not apply and nothing was written: the caller takes the
// two-statement path. A failure after the statement wrote the row rolls tx
// back (Master.abort); the statement's own failure does not. insert is the INSERT of the row (with ? marks) and
// args its arguments.
func (m *Master) insertOne(ctx context.Context, tx *sqlx.Tx, mm *registry.MasterModel, t *tableSQL,
	values map[string]any, insert string, args []any, now any) (pk any, done bool, err error) {
	if m.d.Name() != dialect.Postgres || len(values) != len(mm.Fields) || values[mm.PK] == nil ||
		!m.produces(mm) || mm.Serialize != nil || mm.IsSyncInstance != nil {
		return nil, false, nil
	}
	statsAny, _ := m.predict.LoadOrStore(mm.CQRSID, &predictStats{})
	stats := statsAny.(*predictStats)
	if !stats.worth() {
		return nil, false, nil
	}
	vals := make([]any, len(mm.Fields)+2)
	vals[0], vals[1] = int64(0), now
	for i, f := range mm.Fields {
		v, ok := values[f.Name]
		if !ok {
			return nil, false, nil
		}
		if vals[i+2], err = m.bindValue(f, v); err != nil {
			return nil, false, nil
		}
	}
	predicted, err := rowFields(mm, vals)
	if err != nil {
		return nil, false, nil
	}
	pk = rowPK(mm, predicted)

	st := m.state(tx)
	st.mu.Lock()
	defer st.mu.Unlock()
	key := entityKey(mm.CQRSID, pk)
	if p := st.entities[key]; p != nil && !p.deleted {
		return nil, false, nil // written in this transaction already: two statements
	}
	msg, ok, err := m.saveMessage(ctx, tx, mm, pk, &pending{created: true, bumped: true}, predicted)
	if err != nil || !ok {
		return nil, false, nil
	}
	oq, oargs, err := outbox.InsertStatement(m.d, msg, len(args)+1, outbox.WithTable(m.outboxTable))
	if err != nil {
		return nil, false, nil
	}
	scanned, id, err := queryRowAndID(ctx, tx, mm, t.oneStatement(m.d, insert, oq), append(args, oargs...))
	if err != nil {
		return nil, true, fmt.Errorf("master: insert %s: %w", mm.CQRSID, err)
	}
	stats.tries.Add(1)
	// The row read back is serialised only when its values are not plainly
	// those bound: equal values serialise alike.
	actual, same := predicted, sameScanned(mm, vals, scanned)
	if !same {
		if actual, err = rowFields(mm, scanned); err != nil {
			return nil, true, m.abort(tx, fmt.Errorf("master: insert %s: %w", mm.CQRSID, err))
		}
		same = sameRow(predicted, actual)
	}

	p := st.entities[key]
	if !same {
		stats.misses.Add(1)
		m.log.Debug("master: the stored row differs from the one predicted; the message is rewritten",
			"cqrs_id", mm.CQRSID, "pk", pkString(pk))
		realPK := rowPK(mm, actual)
		if realKey := entityKey(mm.CQRSID, realPK); realKey != key {
			// Another entity than the one written to the outbox row.
			if err := outbox.Delete(ctx, tx, m.d, id, outbox.WithTable(m.outboxTable)); err != nil {
				return nil, true, m.abort(tx, fmt.Errorf("master: insert %s: %w", mm.CQRSID, err))
			}
			p = st.entities[realKey]
			if p == nil {
				p = &pending{}
				st.entities[realKey] = p
			}
			if p.deleted {
				p.outboxID, p.oldTracked = 0, nil
			}
			p.created, p.bumped, p.deleted, p.rev = true, true, false, 0
			if err := m.emitSave(ctx, tx, mm, realPK, p, actual); err != nil {
				return realPK, true, m.abort(tx, err)
			}
			return realPK, true, nil
		}
		if msg, _, err = m.saveMessage(ctx, tx, mm, pk, &pending{created: true, bumped: true}, actual); err != nil {
			return nil, true, m.abort(tx, err)
		}
		if err := m.replace(ctx, tx, id, msg); err != nil {
			return nil, true, m.abort(tx, err)
		}
	}
	if p == nil {
		p = &pending{}
		st.entities[key] = p
	}
	p.oldTracked = nil // a DELETE earlier in this tx keeps its own row
	p.outboxID = id
	p.created, p.bumped, p.deleted, p.rev = true, true, false, 0
	return pk, true, nil
}

// oneStatement is a one-statement insert's SQL and what it was built from.
type oneStatement struct{ insert, outbox, sql string }

// oneStatement returns the statement that inserts the row (insert, with ?
// marks, RETURNING it) and its message (outbox, the outbox statement) in
// one. The one last built is kept: a model's inserts of every field build
// the same one each time.
func (t *tableSQL) oneStatement(d dialect.Dialect, insert, outbox string) string {
	if c := t.one.Load(); c != nil && c.insert == insert && c.outbox == outbox {
		return c.sql
	}
	c := &oneStatement{insert: insert, outbox: outbox,
		sql: "WITH gocqrs_row AS (" + d.Rebind(insert+" RETURNING "+t.selectList()) + "), gocqrs_message AS (" + outbox +
			") SELECT gocqrs_row.*, gocqrs_message.id FROM gocqrs_row, gocqrs_message"}
	t.one.Store(c)
	return c.sql
}

// rowPK is the primary key of a serialised row, as Insert returns it.
func rowPK(mm *registry.MasterModel, row *wire.Fields) any {
	pk, _ := row.Get(mm.PK)
	if n, ok := pk.(json.Number); ok {
		if i, err := n.Int64(); err == nil {
			return i
		}
	}
	if b, ok := pk.([]byte); ok {
		return string(b)
	}
	return pk
}

// queryRowAndID runs q, which returns one row in tableSQL.selectList order
// followed by an outbox id, and returns the row's values as scanned and the
// id.
func queryRowAndID(ctx context.Context, tx *sqlx.Tx, mm *registry.MasterModel, q string, args []any) ([]any, int64, error) {
	rs, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rs.Close()
	n := len(mm.Fields) + 2
	vals := make([]any, n)
	ptrs := make([]any, n+1)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var id int64
	ptrs[n] = &id
	if !rs.Next() {
		if err := rs.Err(); err != nil {
			return nil, 0, err
		}
		return nil, 0, fmt.Errorf("no row returned")
	}
	if err := rs.Scan(ptrs...); err != nil {
		return nil, 0, err
	}
	if rs.Next() {
		return nil, 0, fmt.Errorf("more than one row returned")
	}
	if err := rs.Err(); err != nil {
		return nil, 0, err
	}
	return vals, id, nil
}

// sameScanned reports whether the values scanned from a row (in
// tableSQL.selectList order) are plainly the values bound to write it
// (bound, in the same order), so that rowFields gives the same for both. It
// knows a few types only; false means "not known to be the same".
func sameScanned(mm *registry.MasterModel, bound, scanned []any) bool {
	if len(bound) != len(mm.Fields)+2 || len(scanned) != len(bound) {
		return false
	}
	for i, b := range bound {
		kind := dialect.KindInt // the revision
		switch {
		case i == 1:
			kind = dialect.KindDateTime // cqrs_updated
		case i > 1:
			kind = mm.Fields[i-2].Kind
		}
		if !sameScannedValue(kind, b, scanned[i]) {
			return false
		}
	}
	return true
}

// sameScannedValue reports whether toWire(kind, ...) is known to give the
// same for a and b without calling it.
func sameScannedValue(kind dialect.Kind, a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if kind == dialect.KindInt {
		x, okA := ScannedInt(a)
		y, okB := ScannedInt(b)
		return okA && okB && x == y
	}
	switch x := a.(type) {
	case string:
		return equalAs(x, b)
	case bool:
		return equalAs(x, b)
	case int64:
		return equalAs(x, b)
	case float64:
		return equalAs(x, b)
	case []byte:
		y, ok := b.([]byte)
		return ok && bytes.Equal(x, y)
	case time.Time:
		y, ok := b.(time.Time)
		if !ok || !x.Equal(y) {
			return false
		}
		// A datetime is serialised in UTC; anything else (a date) in its
		// own location.
		return kind == dialect.KindDateTime || x.Location() == y.Location()
	}
	return false
}

// equalAs reports whether b is a T equal to x.
func equalAs[T comparable](x T, b any) bool {
	y, ok := b.(T)
	return ok && x == y
}

// sameRow reports whether two serialised rows are the same on the wire.
func sameRow(a, b *wire.Fields) bool {
	ka, kb := a.Keys(), b.Keys()
	if strings.Join(ka, "\x00") != strings.Join(kb, "\x00") {
		return false
	}
	for _, k := range ka {
		va, _ := a.Get(k)
		vb, _ := b.Get(k)
		if !sameValue(va, vb) {
			return false
		}
	}
	return true
}
