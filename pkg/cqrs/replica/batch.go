package replica

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/jmoiron/sqlx"
)

// errOneByOne makes a batch group fall back to applying its messages one by
// one: the batched path cannot tell what the database will do (pk values the
// database compares differently from the engine, a row changed by another
// transaction between the read and the write).
var errOneByOne = errors.New("replica: batch: apply one by one")

// ApplyBatch applies dls in one replica transaction, as [Engine.Apply]
// would apply them one after the other in that order: the same Results
// (Outcome, Gap, Downgrade, StoredRevision: a later message of an entity
// sees what the earlier ones did), the same errors, the same final rows and
// tombstones.
//
// Messages are grouped by model. A table model without hooks and without
// SelectForUpdate is applied with a few statements per group: a read of
// the stored revisions and the tombstones of all its pks (one statement on
// PostgreSQL with pgx, two elsewhere), then, in memory, the revision rules
// message by message, then multi-row writes:
// DELETEs and revision-guarded upserts (the n-th write of every pk in the
// n-th round of statements, so that every message's values reach the
// database and one that it rejects fails as it would alone; the last
// message of a pk wins; on PostgreSQL with pgx from one array per column,
// see batch_unnest.go), then the tombstones as the batch leaves them.
// Models with hooks or SelectForUpdate are applied message by message
// inside the same transaction, each in a savepoint, each hook called once.
// Raw replicas' handlers run after the commit, in delivery order.
//
// errs[i] is delivery i's error (nil when applied or skipped), with the
// meaning it has for Apply: that message was not applied and should be
// retried later (or dropped, for [ErrUnknownModel]). A failing message does
// not fail the others. Bad messages are found before anything is written;
// when the database rejects a write, the batch is redone with a savepoint
// per group, and a failing group is rolled back to its savepoint and split
// in halves until the failing message is alone, which is then applied by
// the one-message path and gets exactly the error Apply gives it.
//
// A non-nil err means the batch as a whole failed (begin, savepoint or
// commit): nothing was applied, results and errs are nil, and every message
// should be retried.
func (e *Engine) ApplyBatch(ctx context.Context, dls []Delivery) (results []Result, errs []error, err error) {
	results = make([]Result, len(dls))
	errs = make([]error, len(dls))
	for i := range results {
		results[i].StoredRevision = -1
	}
	var groups []*batchGroup
	byModel := map[*model]*batchGroup{}
	var raw []int
	for i, dl := range dls {
		cm, err := e.route(dl)
		if err != nil {
			errs[i] = err
			continue
		}
		if cm.m.IsRaw() {
			raw = append(raw, i)
			continue
		}
		g := byModel[cm]
		if g == nil {
			g = &batchGroup{cm: cm}
			byModel[cm] = g
			groups = append(groups, g)
		}
		g.idx = append(g.idx, i)
	}
	// The multi-row groups go first: until a one-by-one group has run
	// (hooks must run once per message), the transaction can be redone.
	sort.SliceStable(groups, func(i, j int) bool { return groups[i].cm.batchable() && !groups[j].cm.batchable() })
	if len(groups) > 0 {
		// First without savepoints; when a multi-row group fails, the
		// transaction is rolled back and redone with a savepoint per group,
		// splitting the failing ones.
		for careful := false; ; careful = true {
			b := &batchRun{e: e, dls: dls, res: results, errs: errs, careful: careful}
			err := b.run(ctx, groups)
			if err == errRedo && !careful {
				for _, g := range groups {
					for _, i := range g.idx {
						results[i], errs[i] = Result{StoredRevision: -1}, nil
					}
				}
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			for _, l := range b.logs {
				flushLogs(l)
			}
			break
		}
	}
	for _, i := range raw {
		cm := e.models[dls[i].Payload.CQRSID]
		results[i], errs[i] = e.applyRaw(ctx, cm, dls[i])
	}
	return results, errs, nil
}

// batchable reports whether the model's messages can be applied with
// multi-row statements: a table whose primary key is the model's pk, no
// hooks (they must run once per message) and no row locks.
func (cm *model) batchable() bool {
	h := cm.m.Hooks
	return cm.table != "" && cm.soleKey && h.Create == nil && h.Update == nil && h.Delete == nil && !cm.m.SelectForUpdate
}

// errRedo asks for a batch to be redone with savepoints.
var errRedo = errors.New("replica: batch: redo with savepoints")

// batchGroup is one model's messages of a batch, by position.
type batchGroup struct {
	cm  *model
	idx []int
}

// batchRun is one ApplyBatch transaction.
type batchRun struct {
	e       *Engine
	tx      *sqlx.Tx
	dls     []Delivery
	res     []Result
	errs    []error
	careful bool         // savepoints around multi-row groups (else a failure redoes the batch)
	sp      int          // savepoints taken
	logs    [][]logEntry // decisions of committed groups, logged after the commit
}

// run applies the groups in one transaction and commits it. Without
// careful, a failing multi-row group rolls everything back and returns
// errRedo.
func (b *batchRun) run(ctx context.Context, groups []*batchGroup) error {
	tx, err := b.e.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("replica: batch of %d: begin: %w", len(b.dls), err)
	}
	b.tx = tx
	for _, g := range groups {
		switch {
		case !g.cm.batchable():
			err = b.each(ctx, g.cm, g.idx)
		case b.careful:
			err = b.bulk(ctx, g.cm, g.idx)
		default:
			err = b.bulkOnce(ctx, g.cm, g.idx)
		}
		if err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("replica: batch of %d: commit: %w", len(b.dls), err)
	}
	return nil
}

// bulkOnce applies one model's messages with multi-row statements, without
// a savepoint: any failure means errRedo.
func (b *batchRun) bulkOnce(ctx context.Context, cm *model, idx []int) error {
	var logs []logEntry
	pl, err := b.plan(ctx, cm, idx, &logs)
	defer pl.release()
	if err == nil {
		err = b.write(ctx, cm, pl)
	}
	if err != nil {
		b.e.log.Debug("CQRS batch redone with savepoints", "cqrs_id", cm.m.CQRSID, "messages", len(idx),
			"queue", b.e.opts.Queue, "error", err.Error())
		return errRedo
	}
	for _, o := range pl.out {
		b.res[o.i], b.errs[o.i] = o.res, o.err
	}
	b.logs = append(b.logs, logs)
	return nil
}

func (b *batchRun) savepoint(ctx context.Context) (string, error) {
	b.sp++
	name := "cqrs_batch_" + strconv.Itoa(b.sp)
	if _, err := b.tx.ExecContext(ctx, "SAVEPOINT "+name); err != nil {
		return "", fmt.Errorf("replica: batch: savepoint: %w", err)
	}
	return name, nil
}

func (b *batchRun) release(ctx context.Context, name string) error {
	if _, err := b.tx.ExecContext(ctx, "RELEASE SAVEPOINT "+name); err != nil {
		return fmt.Errorf("replica: batch: release savepoint: %w", err)
	}
	return nil
}

// rollbackTo undoes everything since savepoint name and releases it. An
// error here means the transaction itself is lost (MySQL rolls a whole
// transaction back on a deadlock, say).
func (b *batchRun) rollbackTo(ctx context.Context, name string, cause error) error {
	if _, err := b.tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT "+name); err != nil {
		return fmt.Errorf("replica: batch: rollback to savepoint after %v: %w", cause, err)
	}
	return b.release(ctx, name)
}

// each applies messages one by one, as ApplyTx, each in a savepoint so that
// a failing one leaves the transaction usable and the others applied.
func (b *batchRun) each(ctx context.Context, cm *model, idx []int) error {
	for _, i := range idx {
		sp, err := b.savepoint(ctx)
		if err != nil {
			return err
		}
		res, err := b.e.apply(ctx, b.tx, cm, b.dls[i])
		b.res[i], b.errs[i] = res, err
		if err != nil {
			if rerr := b.rollbackTo(ctx, sp, err); rerr != nil {
				return rerr
			}
			continue
		}
		if err := b.release(ctx, sp); err != nil {
			return err
		}
	}
	return nil
}

// bulk applies one model's messages (in delivery order) with multi-row
// statements inside a savepoint. When the statements fail, the savepoint is
// rolled back and the messages are applied again in two halves, down to one
// message, which is then applied by the one-message path so that it gets
// exactly the error Apply would give it.
func (b *batchRun) bulk(ctx context.Context, cm *model, idx []int) error {
	sp, err := b.savepoint(ctx)
	if err != nil {
		return err
	}
	var logs []logEntry
	pl, err := b.plan(ctx, cm, idx, &logs)
	if err == nil {
		err = b.write(ctx, cm, pl)
	}
	if err == nil {
		for _, o := range pl.out {
			b.res[o.i], b.errs[o.i] = o.res, o.err
		}
	}
	pl.release()
	if err == nil {
		if err := b.release(ctx, sp); err != nil {
			return err
		}
		b.logs = append(b.logs, logs)
		return nil
	}
	if rerr := b.rollbackTo(ctx, sp, err); rerr != nil {
		return rerr
	}
	if errors.Is(err, errOneByOne) || len(idx) == 1 {
		b.e.log.Debug("CQRS batch applied one by one", "cqrs_id", cm.m.CQRSID, "messages", len(idx),
			"queue", b.e.opts.Queue, "reason", err.Error())
		return b.each(ctx, cm, idx)
	}
	b.e.log.Debug("CQRS batch split after a failure", "cqrs_id", cm.m.CQRSID, "messages", len(idx),
		"queue", b.e.opts.Queue, "error", err.Error())
	half := len(idx) / 2
	if err := b.bulk(ctx, cm, idx[:half]); err != nil {
		return err
	}
	return b.bulk(ctx, cm, idx[half:])
}
