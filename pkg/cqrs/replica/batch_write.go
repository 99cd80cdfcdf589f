package replica

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// upsertGroup is the row writes of one round with one upsert shape.
type upsertGroup struct {
	sig     string
	pos     []int
	guarded bool
	ops     []*rowOp
}

// write runs the plan's writes: the row writes round by round (the i-th
// write of every pk in round i: DELETEs, then upserts by shape), then the
// tombstones as the batch leaves them (clears, then puts).
func (b *batchRun) write(ctx context.Context, cm *model, pl *plan) error {
	e := b.e
	id := cm.m.CQRSID
	per := rowsPer(e.d, 1)
	for round := 0; ; round++ {
		var dels []any
		var groups []*upsertGroup
		byShape := map[string]*upsertGroup{}
		for _, st := range pl.states {
			if round >= len(st.ops) {
				continue
			}
			op := &st.ops[round]
			if op.del {
				dels = append(dels, st.pk)
				continue
			}
			sig := make([]byte, len(op.set))
			for j, ok := range op.set {
				sig[j] = '0'
				if ok {
					sig[j] = '1'
				}
			}
			shape := strconv.FormatBool(!op.sync) + string(sig)
			g := byShape[shape]
			if g == nil {
				g = &upsertGroup{sig: string(sig), guarded: !op.sync}
				for j, ok := range op.set {
					if ok {
						g.pos = append(g.pos, j)
					}
				}
				byShape[shape] = g
				groups = append(groups, g)
			}
			g.ops = append(g.ops, op)
		}
		if len(dels) == 0 && len(groups) == 0 {
			break
		}
		for start := 0; start < len(dels); start += per {
			chunk := dels[start:min(start+per, len(dels))]
			if _, err := b.tx.ExecContext(ctx, cm.delManySQL(len(chunk)), chunk...); err != nil {
				return fmt.Errorf("replica: batch %s: delete from %s: %w", id, cm.m.Table, err)
			}
		}
		for _, g := range groups {
			if err := b.upsert(ctx, cm, g); err != nil {
				return err
			}
		}
	}
	if e.tomb == nil {
		return nil
	}
	var tombDel []any
	var tombPut []*pkState
	for _, st := range pl.states {
		if st.tombInit != nil && st.tombCleared {
			tombDel = append(tombDel, st.key)
		}
		if st.tomb != nil && st.tombPut {
			tombPut = append(tombPut, st)
		}
	}
	for start := 0; start < len(tombDel); start += per {
		chunk := tombDel[start:min(start+per, len(tombDel))]
		args := append([]any{id}, chunk...)
		if _, err := b.tx.ExecContext(ctx, e.tomb.clrManySQL(len(chunk)), args...); err != nil {
			return fmt.Errorf("replica: batch %s: clear tombstones in %s: %w", id, e.tomb.table, err)
		}
	}
	per = rowsPer(e.d, 5)
	now := timeArg(e.d, time.Now())
	for start := 0; start < len(tombPut); start += per {
		chunk := tombPut[start:min(start+per, len(tombPut))]
		args := make([]any, 0, 5*len(chunk))
		for _, st := range chunk {
			args = append(args, id, st.key, st.tomb.revision, timeArg(e.d, st.tomb.updated), now)
		}
		if _, err := b.tx.ExecContext(ctx, e.tomb.putManySQL(len(chunk)), args...); err != nil {
			return fmt.Errorf("replica: batch %s: write tombstones to %s: %w", id, e.tomb.table, err)
		}
	}
	return nil
}

// upsert writes one shape's rows. A guarded statement must write every row:
// fewer means another transaction wrote a newer revision between the read
// and the write, and the group is applied again one by one.
func (b *batchRun) upsert(ctx context.Context, cm *model, g *upsertGroup) error {
	per := rowsPer(b.e.d, len(g.pos))
	for start := 0; start < len(g.ops); start += per {
		chunk := g.ops[start:min(start+per, len(g.ops))]
		var want int64
		for _, op := range chunk {
			// MySQL counts an inserted row once and an updated one twice.
			if b.e.d.Name() == dialect.MySQL && !op.insert {
				want += 2
			} else {
				want++
			}
		}
		binds, args, ok := cm.unnestArgs(g.pos, chunk)
		var q string
		if ok {
			q = cm.unnestSQL(g.sig, g.pos, binds, g.guarded)
		} else {
			args = make([]any, 0, len(chunk)*len(g.pos))
			for _, op := range chunk {
				for _, p := range g.pos {
					args = append(args, op.vals[p])
				}
			}
			q = cm.upsertSQL(g.sig, g.pos, len(chunk), g.guarded)
		}
		r, err := b.tx.ExecContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("replica: batch %s: upsert into %s: %w", cm.m.CQRSID, cm.m.Table, err)
		}
		if !g.guarded {
			continue
		}
		n, err := r.RowsAffected()
		if err != nil {
			return fmt.Errorf("replica: batch %s: upsert into %s: %w", cm.m.CQRSID, cm.m.Table, err)
		}
		if n != want {
			return fmt.Errorf("%w: upsert into %s wrote %d rows of %d (a concurrent writer?)", errOneByOne, cm.m.Table, n, want)
		}
	}
	return nil
}
