package replica

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// bmsg is one message of a batched group, checked and converted.
type bmsg struct {
	i       int
	del     bool
	sync    bool
	pk      any    // converted
	key     string // pkKey(pk)
	rev     int64
	upd     time.Time
	vals    []any // by model.all position; nil entries with set[j] false are absent
	set     []bool
	convErr error // a value that does not fit its column: an error only if the message writes
}

// pkState is what the batch knows about one pk: the row and tombstone as
// read, as the messages so far left them, and the row writes to run.
type pkState struct {
	pk  any
	key string

	initExists bool
	exists     bool
	rev        int64
	// ops are the row writes of the messages applied, in order. Every one
	// is sent to the database (a write that fails there fails its message,
	// as with Apply), the i-th op of every pk in the i-th round.
	ops []rowOp

	tombInit    *tombstone
	tomb        *tombstone
	tombCleared bool // a tombstone was removed by a create
	tombPut     bool // a DELETE wrote the tombstone after the last clear
	hasDelete   bool
}

// rowOp is one row write: a DELETE, or an upsert of the columns set (the
// pk always among them). insert is true for a create (the row is absent).
// A SYNC's upsert is unguarded: SYNCs apply whatever the revision.
type rowOp struct {
	del    bool
	insert bool
	sync   bool
	vals   []any
	set    []bool
}

// outcome is one message's result, reported when the group's writes succeed.
type outcome struct {
	i   int
	res Result
	err error
}

// plan is a group's decisions and the writes they need. Its memory is
// reused by later batches of the model (release).
type plan struct {
	out    []outcome
	states []*pkState // in order of first appearance

	msgs   []*bmsg // by position in the group; nil where the message is finished
	store  []bmsg
	pks    []pkState
	byKey  map[string]*pkState
	bufs   checkBufs
	vals   []any
	set    []bool
	pooled *sync.Pool
}

// newPlan returns a plan for n messages of cm, from cm's pool.
func (cm *model) newPlan(n int) *plan {
	pl, _ := cm.batch.plans.Get().(*plan)
	if pl == nil {
		pl = &plan{byKey: map[string]*pkState{}}
	}
	pl.pooled = &cm.batch.plans
	width := len(cm.all)
	pl.out = grow(pl.out, n)
	pl.msgs = grow(pl.msgs, n)
	pl.store = grow(pl.store, n)
	pl.vals = grow(pl.vals, n*width)
	pl.set = grow(pl.set, n*width)
	pl.bufs = checkBufs{raw: make([]any, width), vals: pl.vals, set: pl.set}
	if cap(pl.pks) < n {
		pl.pks = make([]pkState, 0, n)
	}
	pl.pks = pl.pks[:0]
	pl.states = pl.states[:0]
	return pl
}

// grow returns s with length n, zeroed.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// release gives the plan's memory back for later batches, dropping every
// reference to this batch's values.
func (pl *plan) release() {
	if pl == nil || pl.pooled == nil {
		return
	}
	clear(pl.out)
	clear(pl.msgs)
	clear(pl.store)
	clear(pl.vals)
	clear(pl.pks[:cap(pl.pks)])
	clear(pl.states)
	clear(pl.byKey)
	pl.bufs = checkBufs{}
	pool := pl.pooled
	pl.pooled = nil
	pool.Put(pl)
}

// plan checks and converts the group's messages, reads the stored
// revisions and tombstones of their pks and decides each message in order,
// with the rules of Apply. The caller releases the plan.
func (b *batchRun) plan(ctx context.Context, cm *model, idx []int, logs *[]logEntry) (*plan, error) {
	e := b.e
	sink := logSink{l: e.log, buf: logs}
	pl := cm.newPlan(len(idx))
	n := 0
	for k, i := range idx {
		m, res, err := e.check(sink, cm, b.dls[i], &pl.store[k], &pl.bufs)
		pl.out[k] = outcome{i: i, res: res, err: err}
		if m == nil {
			continue
		}
		m.i = i
		pl.msgs[k] = m
		n++
		st := pl.byKey[m.key]
		if st == nil {
			pl.pks = append(pl.pks, pkState{pk: m.pk, key: m.key})
			st = &pl.pks[len(pl.pks)-1]
			pl.byKey[m.key] = st
			pl.states = append(pl.states, st)
		}
		if m.del {
			st.hasDelete = true
		}
	}
	if n == 0 {
		return pl, nil
	}
	if cm.pk.kind != dialect.KindInt && foldCollision(pl.states) {
		return pl, fmt.Errorf("%w: pk values that differ only in case or trailing spaces", errOneByOne)
	}
	if err := b.read(ctx, cm, pl.states, pl.byKey); err != nil {
		return pl, err
	}
	for k, m := range pl.msgs {
		if m != nil {
			pl.out[k] = e.decide(sink, cm, pl.byKey[m.key], m)
		}
	}
	return pl, nil
}

// dbTime is t as the tombstone table keeps it: UTC, to the microsecond
// (every dialect's binding truncates there).
func dbTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// foldCollision reports two different pk values that a case-insensitive or
// PAD SPACE collation could take for the same key.
func foldCollision(states []*pkState) bool {
	seen := make(map[string]string, len(states))
	for _, st := range states {
		f := strings.ToLower(strings.TrimRight(st.key, " "))
		if k, ok := seen[f]; ok && k != st.key {
			return true
		}
		seen[f] = st.key
	}
	return false
}
