package replica

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// syncFields reads cqrs_revision and cqrs_updated from instance_data.
func syncFields(cqrsID string, pk any, data *wire.Fields) (rev int64, upd time.Time, err error) {
	rv, okR := data.Get(wire.RevisionKey)
	uv, okU := data.Get(wire.UpdatedKey)
	if !okR || !okU {
		return 0, time.Time{}, fmt.Errorf("replica: %w in data %s", ErrSyncFields, where(cqrsID, pk))
	}
	rev, ok := wire.AsInt64(rv)
	if !ok {
		return 0, time.Time{}, fmt.Errorf("replica: %w in data %s: cqrs_revision %s is not an integer",
			ErrSyncFields, where(cqrsID, pk), shortValue(rv))
	}
	s, ok := uv.(string)
	if !ok {
		return 0, time.Time{}, fmt.Errorf("replica: %w in data %s: cqrs_updated %s is not a datetime string",
			ErrSyncFields, where(cqrsID, pk), shortValue(uv))
	}
	upd, _, perr := wire.ParseDateTime(s)
	if perr != nil {
		return 0, time.Time{}, fmt.Errorf("replica: %w in data %s: cqrs_updated %q is not a datetime",
			ErrSyncFields, where(cqrsID, pk), s)
	}
	return rev, upd.UTC(), nil
}

// mapSave turns instance_data into the model's columns, as django-cqrs's
// ReplicaManager._map_save_data does: sync fields first, then the Mapping
// (every mapped key must be present) or the keys named like columns, extra
// keys dropped, the pk and every required column present.
func (cm *model) mapSave(p *wire.Payload) (*wire.Fields, error) {
	id := cm.m.CQRSID
	src := p.InstanceData
	rv, _ := src.Get(wire.RevisionKey)
	uv, _ := src.Get(wire.UpdatedKey)
	out := wire.NewFields()
	if len(cm.m.Mapping) > 0 {
		out.Set(cm.rev.name, rv)
		out.Set(cm.upd.name, uv)
		for _, mp := range cm.m.Mapping {
			v, ok := src.Get(mp.From)
			if !ok {
				return nil, fmt.Errorf("replica: %w for %s %s", ErrBadMapping, mp.From, where(id, p.InstancePK))
			}
			if _, known := cm.byName[mp.To]; known {
				out.Set(mp.To, v)
			}
		}
	} else {
		for _, k := range src.Keys() {
			v, _ := src.Get(k)
			switch k {
			case wire.RevisionKey:
				out.Set(cm.rev.name, v)
			case wire.UpdatedKey:
				out.Set(cm.upd.name, v)
			default:
				if c, known := cm.byName[k]; known && c != cm.rev && c != cm.upd {
					out.Set(k, v)
				}
			}
		}
	}
	if !out.Has(cm.pk.name) {
		return nil, fmt.Errorf("replica: %w in data %s: no %q", ErrNoPK, where(id, p.InstancePK), cm.pk.name)
	}
	var missing []string
	for _, c := range cm.cols {
		if c.required && c != cm.pk && !out.Has(c.name) {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		pk, _ := out.Get(cm.pk.name)
		return nil, fmt.Errorf("replica: %w in data %s: missing %q", ErrRequiredFields, where(id, pk), missing)
	}
	return out, nil
}

// mapRaw is mapSave for ApplyBatch: the same checks and errors, but the
// values land in raw by position in cm.all (set marks the present ones)
// instead of in a new Fields.
func (cm *model) mapRaw(p *wire.Payload, raw []any, set []bool) error {
	id := cm.m.CQRSID
	src := p.InstanceData
	put := func(name string, v any) {
		if j, ok := cm.pos[name]; ok {
			raw[j], set[j] = v, true
		}
	}
	if len(cm.m.Mapping) > 0 {
		rv, _ := src.Get(wire.RevisionKey)
		uv, _ := src.Get(wire.UpdatedKey)
		put(cm.rev.name, rv)
		put(cm.upd.name, uv)
		for _, mp := range cm.m.Mapping {
			v, ok := src.Get(mp.From)
			if !ok {
				return fmt.Errorf("replica: %w for %s %s", ErrBadMapping, mp.From, where(id, p.InstancePK))
			}
			put(mp.To, v)
		}
	} else {
		for _, k := range src.Keys() {
			v, _ := src.Get(k)
			switch k {
			case wire.RevisionKey:
				put(cm.rev.name, v)
			case wire.UpdatedKey:
				put(cm.upd.name, v)
			default:
				if c, known := cm.byName[k]; known && c != cm.rev && c != cm.upd {
					put(k, v)
				}
			}
		}
	}
	if !set[cm.pkPos] {
		return fmt.Errorf("replica: %w in data %s: no %q", ErrNoPK, where(id, p.InstancePK), cm.pk.name)
	}
	var missing []string
	for j, c := range cm.all {
		if c.required && c != cm.pk && c != cm.rev && c != cm.upd && !set[j] {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("replica: %w in data %s: missing %q", ErrRequiredFields, where(id, raw[cm.pkPos]), missing)
	}
	return nil
}

// existingRow is a replica row read before applying.
type existingRow struct {
	rev    int64
	fields *wire.Fields // column → scanned value, for hooks
}

// readRow reads the row with pk, locking it when lock is set and the
// dialect can; nil when there is none.
func (cm *model) readRow(ctx context.Context, tx *sqlx.Tx, pk any, lock bool) (*existingRow, error) {
	q := cm.selRow
	if lock {
		q = cm.selLock
	}
	rows, err := tx.QueryxContext(ctx, q, pk)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	vals, err := rows.SliceScan()
	if err != nil {
		return nil, err
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	row := &existingRow{fields: wire.NewFields()}
	for i, c := range cm.cols {
		row.fields.Set(c.name, scanned(vals[i]))
	}
	rv := vals[len(cm.cols)]
	row.fields.Set(cm.rev.name, scanned(rv))
	row.fields.Set(cm.upd.name, scanned(vals[len(cm.cols)+1]))
	rev, ok := asInt64(rv)
	if !ok {
		return nil, fmt.Errorf("column %q holds %v, not an integer revision", cm.rev.name, rv)
	}
	row.rev = rev
	return row, nil
}

func (e *Engine) applySave(ctx context.Context, tx *sqlx.Tx, cm *model, dl Delivery) (Result, error) {
	res := Result{StoredRevision: -1}
	p := dl.Payload
	id := cm.m.CQRSID
	sink := logSink{l: e.log}
	if e.indirect(sink, cm, dl) {
		res.Outcome = OutcomeSkippedIndirect
		return res, nil
	}
	rev, upd, err := syncFields(id, p.InstancePK, p.InstanceData)
	if err != nil {
		return res, err
	}
	ac := e.applyContext(tx, cm, p)
	data, err := cm.mapSave(p)
	if err != nil {
		return res, err
	}
	rawPK, _ := data.Get(cm.pk.name)
	pk, err := toSQL(e.d, cm.pk, rawPK)
	if err != nil {
		return res, fmt.Errorf("replica: %s: %w", where(id, rawPK), err)
	}
	at := where(id, pk)
	row, err := cm.readRow(ctx, tx, pk, cm.m.SelectForUpdate)
	if err != nil {
		return res, fmt.Errorf("replica: %s: read %s: %w", at, cm.m.Table, err)
	}
	log := e.saveLogger(sink, id, pk, rev)
	isSync := p.SignalType == wire.SignalSync

	if row == nil {
		var tomb *tombstone
		if e.tomb != nil {
			if tomb, err = e.tomb.get(ctx, tx, id, pkKey(pk)); err != nil {
				return res, fmt.Errorf("replica: %s: %w", at, err)
			}
			if tombstoneSkips(log, tomb, rev, upd) {
				res.Outcome = OutcomeSkippedTombstone
				return res, nil
			}
		}
		if cm.m.Hooks.Create != nil {
			err = cm.m.Hooks.Create(ctx, ac, data)
			if err != nil {
				err = fmt.Errorf("create hook: %w", err)
			}
		} else {
			err = cm.insert(ctx, tx, data)
		}
		if err != nil {
			return res, fmt.Errorf("replica: %s: %w", at, err)
		}
		if tomb != nil {
			if err := e.tomb.clear(ctx, tx, id, pkKey(pk)); err != nil {
				return res, fmt.Errorf("replica: %s: %w", at, err)
			}
		}
		res.Outcome = OutcomeCreated
		return res, nil
	}

	res, apply := judge(log, id, pk, rev, row.rev, isSync)
	if !apply {
		return res, nil
	}
	if cm.m.Hooks.Update != nil {
		err = cm.m.Hooks.Update(ctx, ac, row.fields, data)
		if err != nil {
			err = fmt.Errorf("update hook: %w", err)
		}
	} else {
		err = cm.update(ctx, tx, pk, data)
	}
	if err != nil {
		return res, fmt.Errorf("replica: %s: %w", at, err)
	}
	res.Outcome = OutcomeUpdated
	return res, nil
}

// args converts the columns present in data, in the model's column order.
func (cm *model) args(data *wire.Fields, skip *column) (cols []*column, vals []any, err error) {
	for _, c := range cm.all {
		if c == skip {
			continue
		}
		v, ok := data.Get(c.name)
		if !ok {
			continue
		}
		a, err := toSQL(cm.d, c, v)
		if err != nil {
			return nil, nil, err
		}
		cols = append(cols, c)
		vals = append(vals, a)
	}
	return cols, vals, nil
}

// insert is the default create: INSERT of the columns present in data.
func (cm *model) insert(ctx context.Context, tx *sqlx.Tx, data *wire.Fields) error {
	cols, vals, err := cm.args(data, nil)
	if err != nil {
		return err
	}
	q := "INSERT INTO " + cm.table + " ("
	for i, c := range cols {
		if i > 0 {
			q += ", "
		}
		q += c.quoted
	}
	q += ") VALUES (" + dialect.Placeholders(len(cols)) + ")"
	if _, err := tx.ExecContext(ctx, cm.d.Rebind(q), vals...); err != nil {
		return fmt.Errorf("insert into %s: %w", cm.m.Table, err)
	}
	return nil
}

// update is the default update: the columns present in data (django-cqrs
// sets only the keys it got), matched by pk.
func (cm *model) update(ctx context.Context, tx *sqlx.Tx, pk any, data *wire.Fields) error {
	cols, vals, err := cm.args(data, cm.pk)
	if err != nil {
		return err
	}
	q := "UPDATE " + cm.table + " SET "
	for i, c := range cols {
		if i > 0 {
			q += ", "
		}
		q += c.quoted + " = ?"
	}
	q += " WHERE " + cm.pk.quoted + " = ?"
	if _, err := tx.ExecContext(ctx, cm.d.Rebind(q), append(vals, pk)...); err != nil {
		return fmt.Errorf("update %s: %w", cm.m.Table, err)
	}
	return nil
}
