package replica

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
)

// model is a replica model compiled for one dialect: quoted identifiers,
// column kinds and the fixed statements.
type model struct {
	m       *registry.ReplicaModel
	d       dialect.Dialect
	table   string // quoted; empty for raw models
	cols    []*column
	byName  map[string]*column // model columns plus the two sync columns
	pk      *column
	all     []*column      // cols, then rev and upd: the order values are converted and written in
	pkPos   int            // pk's position in all
	pos     map[string]int // column name -> position in all
	rev     *column
	upd     *column
	selRow  string // SELECT <cols>, rev, upd FROM t WHERE pk = ?
	selLock string // the same with FOR UPDATE where the dialect has it
	selRev  string // SELECT rev FROM t WHERE pk = ? [FOR UPDATE]
	del     string // DELETE FROM t WHERE pk = ?
	// soleKey is true when pk is the table's whole primary key, which the
	// batched upserts (ON CONFLICT (pk)) need.
	soleKey bool
	pkType  string // the pk column's database type (information_schema data_type on PostgreSQL)
	// pkArray is the PostgreSQL array type ApplyBatch binds the pks of a
	// group as (one parameter, pgx only), "" to read by IN list.
	pkArray string
	// pgTypes are the columns' PostgreSQL types by position in all, for
	// the upserts from arrays (pgx only; nil otherwise).
	pgTypes []pgColType
	batch   batchSQL // statement texts of ApplyBatch, built on demand
}

// compiled caches models compiled by NewEngine so that DefaultCreate,
// DefaultUpdate and DefaultDelete, called from hooks with only an
// ApplyContext, find them. Keyed by *registry.ReplicaModel and dialect.
var compiled sync.Map // compiledKey -> *model

type compiledKey struct {
	m *registry.ReplicaModel
	d dialect.Name
}

// compile builds the model for a bound replica model. It introspects the
// table once more to learn the sync columns' kinds and the declared types
// (for SQLite's fixed-point emulation).
func compile(ctx context.Context, q sqlx.QueryerContext, d dialect.Dialect, m *registry.ReplicaModel) (*model, error) {
	cm := &model{m: m, d: d, byName: map[string]*column{}}
	if m.IsRaw() {
		return cm, nil
	}
	where := fmt.Sprintf("replica model %q (table %q)", m.CQRSID, m.Table)
	dbCols, err := d.Columns(ctx, q, m.Table)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	byDB := map[string]dialect.Column{}
	for _, c := range dbCols {
		byDB[c.Name] = c
	}
	if cm.table, err = d.Quote(m.Table); err != nil {
		return nil, fmt.Errorf("%s: table: %w", where, err)
	}
	mk := func(name string, kind dialect.Kind, nullable, hasDefault bool) (*column, error) {
		q, err := d.Quote(name)
		if err != nil {
			return nil, fmt.Errorf("%s: column %q: %w", where, name, err)
		}
		dc, ok := byDB[name]
		if !ok {
			return nil, fmt.Errorf("%s: table has no column %q", where, name)
		}
		if kind == dialect.KindAuto {
			kind = dc.Kind
		}
		c := &column{name: name, quoted: q, kind: kind, nullable: nullable, required: !nullable && !hasDefault, precision: -1, scale: -1}
		if kind == dialect.KindDecimal && d.Name() == dialect.SQLite {
			c.precision, c.scale = fixedPoint(dc.DBType)
		}
		if d.Name() == dialect.Postgres && dc.DBType == "array" {
			c.pgArray = dc.ArrayElem
		}
		return c, nil
	}
	for _, f := range m.Fields {
		c, err := mk(f.ColumnName(), f.Kind, f.Nullable, f.HasDefault)
		if err != nil {
			return nil, err
		}
		cm.cols = append(cm.cols, c)
		cm.byName[c.name] = c
	}
	// The sync columns always hold an integer and a datetime, whatever the
	// table calls their types (SQLite may declare them as anything).
	syncCol := func(name string, kind dialect.Kind) (*column, error) {
		dc, ok := byDB[name]
		if !ok {
			return nil, fmt.Errorf("%s: table has no sync column %q", where, name)
		}
		c, err := mk(name, kind, dc.Nullable, dc.HasDefault)
		if err != nil {
			return nil, err
		}
		cm.byName[name] = c
		return c, nil
	}
	if cm.rev, err = syncCol(m.RevisionColumn, dialect.KindInt); err != nil {
		return nil, err
	}
	if cm.upd, err = syncCol(m.UpdatedColumn, dialect.KindDateTime); err != nil {
		return nil, err
	}
	pk, ok := cm.byName[m.PK]
	if !ok || pk == cm.rev || pk == cm.upd {
		return nil, fmt.Errorf("%s: primary key %q is not among the model's columns", where, m.PK)
	}
	cm.pk = pk
	keys := 0
	for _, c := range dbCols {
		if c.PrimaryKey {
			keys++
		}
	}
	cm.soleKey = keys == 1 && byDB[m.PK].PrimaryKey
	cm.pkType = byDB[m.PK].DBType
	cm.all = append(append([]*column{}, cm.cols...), cm.rev, cm.upd)
	cm.pos = make(map[string]int, len(cm.all))
	for i, c := range cm.all {
		if c == pk {
			cm.pkPos = i
		}
		cm.pos[c.name] = i
	}

	names := make([]string, 0, len(cm.cols)+2)
	for _, c := range cm.cols {
		names = append(names, c.quoted)
	}
	names = append(names, cm.rev.quoted, cm.upd.quoted)
	cond := " WHERE " + pk.quoted + " = ?"
	lock := ""
	if d.SupportsForUpdate() {
		lock = " FOR UPDATE"
	}
	cm.selRow = d.Rebind("SELECT " + strings.Join(names, ", ") + " FROM " + cm.table + cond)
	cm.selLock = d.Rebind("SELECT " + strings.Join(names, ", ") + " FROM " + cm.table + cond + lock)
	cm.selRev = d.Rebind("SELECT " + cm.rev.quoted + " FROM " + cm.table + cond + lock)
	cm.del = d.Rebind("DELETE FROM " + cm.table + cond)
	return cm, nil
}

// modelFor finds the compiled model of an ApplyContext, compiling it through
// the context's transaction when NewEngine has not.
func modelFor(ctx context.Context, ac *registry.ApplyContext) (*model, error) {
	if ac == nil || ac.Model == nil {
		return nil, fmt.Errorf("replica: ApplyContext without a model")
	}
	key := compiledKey{ac.Model, ac.Dialect.Name()}
	if v, ok := compiled.Load(key); ok {
		return v.(*model), nil
	}
	if ac.Tx == nil {
		return nil, fmt.Errorf("replica: model %q: no transaction in ApplyContext", ac.Model.CQRSID)
	}
	cm, err := compile(ctx, ac.Tx, ac.Dialect, ac.Model)
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	compiled.Store(key, cm)
	return cm, nil
}
