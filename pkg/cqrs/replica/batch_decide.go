package replica

import (
	"fmt"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// checkBufs are the backing arrays of a group's checked messages.
type checkBufs struct {
	raw  []any  // one message's unconverted values, reused
	vals []any  // converted values, len(cm.all) per message
	set  []bool // presence, len(cm.all) per message
}

// check does what Apply does before it reads anything (the route checks
// are done): the signal's fields, the mapping, the pk and the values. A nil
// bmsg means the message is finished: skipped or failed. m, when not nil,
// is filled in and returned.
func (e *Engine) check(sink logSink, cm *model, dl Delivery, m *bmsg, bufs *checkBufs) (*bmsg, Result, error) {
	res := Result{StoredRevision: -1}
	p := dl.Payload
	id := cm.m.CQRSID
	if p.SignalType == wire.SignalDelete {
		rawPK, ok := p.InstanceData.Get(deleteKey)
		if !ok {
			return nil, res, fmt.Errorf("replica: %w in data %s: DELETE without %q", ErrNoPK, where(id, p.InstancePK), deleteKey)
		}
		rev, upd, err := syncFields(id, rawPK, p.InstanceData)
		if err != nil {
			return nil, res, err
		}
		pk, err := toSQL(e.d, cm.pk, rawPK)
		if err != nil {
			return nil, res, fmt.Errorf("replica: %s: %w", where(id, rawPK), err)
		}
		*m = bmsg{del: true, pk: pk, key: pkKey(pk), rev: rev, upd: upd}
		return m, res, nil
	}
	if e.indirect(sink, cm, dl) {
		res.Outcome = OutcomeSkippedIndirect
		return nil, res, nil
	}
	rev, upd, err := syncFields(id, p.InstancePK, p.InstanceData)
	if err != nil {
		return nil, res, err
	}
	n := len(cm.all)
	raw, set := bufs.raw[:n], bufs.set[:n]
	clear(raw)
	if err := cm.mapRaw(p, raw, set); err != nil {
		clear(set)
		return nil, res, err
	}
	pk, err := toSQL(e.d, cm.pk, raw[cm.pkPos])
	if err != nil {
		clear(set)
		return nil, res, fmt.Errorf("replica: %s: %w", where(id, raw[cm.pkPos]), err)
	}
	*m = bmsg{sync: p.SignalType == wire.SignalSync, pk: pk, key: pkKey(pk), rev: rev, upd: upd,
		vals: bufs.vals[:n:n], set: set[:n:n]}
	bufs.vals, bufs.set = bufs.vals[n:], bufs.set[n:]
	// The same conversions, in the same column order, as insert and update.
	for j, c := range cm.all {
		if !m.set[j] {
			continue
		}
		switch c {
		case cm.pk:
			m.vals[j] = pk
			continue
		case cm.upd:
			if _, ok := raw[j].(string); ok {
				m.vals[j] = timeArg(e.d, upd) // parsed by syncFields already
				continue
			}
		}
		a, err := toSQL(e.d, c, raw[j])
		if err != nil {
			m.convErr = err
			break
		}
		m.vals[j] = a
	}
	return m, res, nil
}

// decide applies one message to its pk's state and returns its outcome.
func (e *Engine) decide(sink logSink, cm *model, st *pkState, m *bmsg) outcome {
	o := outcome{i: m.i, res: Result{StoredRevision: -1}}
	log := e.saveLogger(sink, cm.m.CQRSID, m.pk, m.rev)
	if m.del {
		found := st.exists
		if found {
			o.res.StoredRevision = st.rev
			o.res.Outcome = OutcomeDeleted
			st.exists = false
			st.ops = append(st.ops, rowOp{del: true})
		} else {
			o.res.Outcome = OutcomeDeleteMissing
		}
		if e.tomb != nil {
			trev := m.rev
			if found && o.res.StoredRevision > trev {
				trev = o.res.StoredRevision
			}
			upd := dbTime(m.upd)
			if st.tomb == nil {
				st.tomb = &tombstone{revision: trev, updated: upd}
			} else {
				t := *st.tomb
				t.revision = max(t.revision, trev)
				if upd.After(t.updated) {
					t.updated = upd
				}
				st.tomb = &t
			}
			st.tombPut = true
		}
		return o
	}
	if !st.exists {
		if st.tomb != nil && tombstoneSkips(log, st.tomb, m.rev, m.upd) {
			o.res.Outcome = OutcomeSkippedTombstone
			return o
		}
		if m.convErr != nil {
			o.err = fmt.Errorf("replica: %s: %w", where(cm.m.CQRSID, m.pk), m.convErr)
			return o
		}
		st.exists, st.rev = true, m.rev
		st.ops = append(st.ops, rowOp{insert: true, sync: m.sync, vals: m.vals, set: m.set})
		if st.tomb != nil {
			st.tomb, st.tombCleared, st.tombPut = nil, true, false
		}
		o.res.Outcome = OutcomeCreated
		return o
	}
	res, apply := judge(log, cm.m.CQRSID, m.pk, m.rev, st.rev, m.sync)
	o.res = res
	if !apply {
		return o
	}
	if m.convErr != nil {
		o.err = fmt.Errorf("replica: %s: %w", where(cm.m.CQRSID, m.pk), m.convErr)
		return o
	}
	st.rev = m.rev
	st.ops = append(st.ops, rowOp{sync: m.sync, vals: m.vals, set: m.set})
	o.res.Outcome = OutcomeUpdated
	return o
}
