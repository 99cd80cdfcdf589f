package replica

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// read reads the stored revisions of the group's pks, and the tombstones
// the rules may need: those of pks without a row or with a DELETE (on
// PostgreSQL with pgx, all of them, in the same round trip).
func (b *batchRun) read(ctx context.Context, cm *model, states []*pkState, byKey map[string]*pkState) error {
	if cm.pkArray != "" {
		done, err := b.readArrays(ctx, cm, states, byKey)
		if done || err != nil {
			return err
		}
	}
	if err := b.readRevisions(ctx, cm, states, byKey); err != nil {
		return err
	}
	if b.e.tomb == nil {
		return nil
	}
	var need []*pkState
	for _, st := range states {
		if !st.initExists || st.hasDelete {
			need = append(need, st)
		}
	}
	return b.readTombstones(ctx, cm.m.CQRSID, need, byKey)
}

// readArrays reads the stored revisions and the tombstones of every pk of
// the group with readArraySQL. done is false (nothing read) when a pk
// cannot be bound in the array (an integer beyond int64).
func (b *batchRun) readArrays(ctx context.Context, cm *model, states []*pkState, byKey map[string]*pkState) (done bool, err error) {
	var pks any
	if pgIntArrays[cm.pkArray] {
		ints := make([]int64, len(states))
		for i, st := range states {
			v, ok := st.pk.(int64)
			if !ok {
				return false, nil
			}
			ints[i] = v
		}
		pks = ints
	} else {
		strs := make([]string, len(states))
		for i, st := range states {
			v, ok := st.pk.(string)
			if !ok {
				return false, nil
			}
			strs[i] = v
		}
		pks = strs
	}
	keys := make([]string, len(states))
	for i, st := range states {
		keys[i] = st.key
	}
	tomb := b.e.tomb
	// An unnamed statement, planned for its parameters every time: a
	// generic plan cached while the table was small would scan it for
	// ever after.
	args := []any{pgx.QueryExecModeCacheDescribe, pks, keys}
	if tomb != nil {
		args = append(args, cm.m.CQRSID)
	}
	fail := func(err error) error {
		return fmt.Errorf("replica: batch %s: read %s: %w", cm.m.CQRSID, cm.m.Table, err)
	}
	rows, err := b.tx.QueryContext(ctx, cm.readArraySQL(tomb), args...)
	if err != nil {
		return false, fail(err)
	}
	defer rows.Close()
	var key string
	var rev, trev sql.NullInt64
	var tupd any
	dest := []any{&key, &rev}
	if tomb != nil {
		dest = append(dest, &trev, &tupd)
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return false, fail(err)
		}
		st := byKey[key]
		if st == nil {
			return false, fail(fmt.Errorf("read returned unknown pk %q", key))
		}
		if trev.Valid {
			tb, err := tomb.parse(trev.Int64, tupd)
			if err != nil {
				return false, fail(err)
			}
			st.tombInit, st.tomb = tb, tb
		}
		if rev.Valid {
			st.initExists, st.exists, st.rev = true, true, rev.Int64
		}
	}
	if err := rows.Err(); err != nil {
		return false, fail(err)
	}
	if err := rows.Close(); err != nil {
		return false, fail(err)
	}
	return true, nil
}

// readRevisions reads the stored revision of every pk of the group.
func (b *batchRun) readRevisions(ctx context.Context, cm *model, states []*pkState, byKey map[string]*pkState) error {
	per := rowsPer(b.e.d, 1)
	fail := func(err error) error {
		return fmt.Errorf("replica: batch %s: read %s: %w", cm.m.CQRSID, cm.m.Table, err)
	}
	for start := 0; start < len(states); start += per {
		chunk := states[start:min(start+per, len(states))]
		args := make([]any, len(chunk))
		for i, st := range chunk {
			args[i] = st.pk
		}
		rows, err := b.tx.QueryxContext(ctx, cm.selRevsSQL(len(chunk)), args...)
		if err != nil {
			return fail(err)
		}
		for rows.Next() {
			var pk, rv any
			if err := rows.Scan(&pk, &rv); err != nil {
				rows.Close()
				return fail(err)
			}
			st := byKey[pkKey(scanned(pk))]
			if st == nil || st.initExists {
				rows.Close()
				return fmt.Errorf("%w: stored pk %v does not match one pk of the batch as sent", errOneByOne, scanned(pk))
			}
			rev, ok := asInt64(rv)
			if !ok {
				rows.Close()
				return fail(fmt.Errorf("column %q holds %v, not an integer revision", cm.rev.name, rv))
			}
			st.initExists, st.exists, st.rev = true, true, rev
		}
		if err := rows.Close(); err != nil {
			return fail(err)
		}
		if err := rows.Err(); err != nil {
			return fail(err)
		}
	}
	return nil
}

// readTombstones reads the tombstones of the given pks.
func (b *batchRun) readTombstones(ctx context.Context, cqrsID string, states []*pkState, byKey map[string]*pkState) error {
	t := b.e.tomb
	per := rowsPer(b.e.d, 1)
	fail := func(err error) error {
		return fmt.Errorf("replica: batch %s: read tombstones from %s: %w", cqrsID, t.table, err)
	}
	for start := 0; start < len(states); start += per {
		chunk := states[start:min(start+per, len(states))]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, cqrsID)
		for _, st := range chunk {
			args = append(args, st.key)
		}
		rows, err := b.tx.QueryxContext(ctx, t.getManySQL(len(chunk)), args...)
		if err != nil {
			return fail(err)
		}
		for rows.Next() {
			var pk, rv, uv any
			if err := rows.Scan(&pk, &rv, &uv); err != nil {
				rows.Close()
				return fail(err)
			}
			st := byKey[pkString(scanned(pk))]
			if st == nil {
				continue
			}
			tb, err := t.parse(rv, uv)
			if err != nil {
				rows.Close()
				return fail(err)
			}
			st.tombInit, st.tomb = tb, tb
		}
		if err := rows.Close(); err != nil {
			return fail(err)
		}
		if err := rows.Err(); err != nil {
			return fail(err)
		}
	}
	return nil
}
