package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

const deletedDiffReplicaAbout = `First stage of the deleted-rows diff, run on the replica (django-cqrs's
cqrs_deleted_diff_replica). Writes to stdout the line "<cqrs_id>,<now>" and then,
per batch of replica rows in primary key order, a JSON list of their primary keys:
  author,2026-11-27 09:45:46.077434+00:00
  [1,3,4,5,6]
When no row matches, stdout stays empty and stderr says "No objects found for filter!".
Pipe it to cqrs deleted-diff-master (or django-cqrs's cqrs_deleted_diff_master):
  cqrs deleted-diff-replica --cqrs-id author | cqrs deleted-diff-master | cqrs deleted-sync-replica

` + filterHelp

func runDeletedDiffReplica(ctx context.Context, env Env, args []string) error {
	fs := newDataFlags(env, "deleted-diff-replica",
		"cqrs deleted-diff-replica --cqrs-id ID [-f JSON] [--batch N] [--progress] [--config FILE] > pks", deletedDiffReplicaAbout)
	var c commonFlags
	c.register(fs)
	id := fs.String("cqrs-id", "", "cqrs_id of the replica model (required)")
	fs.StringVar(id, "cid", "", "same as --cqrs-id")
	filter := fs.String("filter", "", "only replica rows matching this JSON filter (see above)")
	fs.StringVar(filter, "f", "", "same as --filter")
	batch := batchFlag(fs, "primary keys per output line")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *id == "" {
		return usagef("--cqrs-id is required")
	}
	if err := checkBatch(*batch); err != nil {
		return err
	}
	de, err := loadDataEnv(env, c.config)
	if err != nil {
		return err
	}
	defer de.Close()
	t, err := de.openReplicaTable(ctx, *id, "--cqrs-id")
	if err != nil {
		return err
	}
	var w whereClause
	if *filter != "" {
		if w, err = parseFilter(*filter, t); err != nil {
			return err
		}
	}
	total, err := t.count(ctx, de.db, w)
	if err != nil {
		return err
	}
	if total == 0 {
		fmt.Fprintln(env.Stderr, "No objects found for filter!")
		return nil
	}
	out := bufio.NewWriter(env.Stdout)
	if err := writeLine(out, *id+","+wire.FormatPyDateTime(time.Now().UTC())); err != nil {
		return err
	}
	pr := newProgress(env.Stderr, chooseProgress(env, c.progress, true), total)
	var after *pkVal
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted after %d of %d rows", pr.done, total)
		}
		page, err := t.page(ctx, de.db, w, after, *batch)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		pks := make([]any, len(page))
		for i, r := range page {
			pks[i] = r.pk.wire
		}
		line, err := jsonList(pks)
		if err != nil {
			return err
		}
		if err := writeLine(out, line); err != nil {
			return err
		}
		pr.Add(len(page))
		after = &page[len(page)-1].pk
		if len(page) < *batch {
			break
		}
	}
	pr.Finish()
	return nil
}

const deletedDiffMasterAbout = `Second stage of the deleted-rows diff, run on the master (django-cqrs's
cqrs_deleted_diff_master). Reads a cqrs deleted-diff-replica stream on stdin and
writes to stdout its first line, then, per input line, the JSON list of the
primary keys the master no longer has (lines without any are left out):
  author,2026-11-27 09:45:46.077434+00:00
  [6]
stderr gets "PK to delete: [6]" for each such line. Pipe it to
cqrs deleted-sync-replica (or django-cqrs's cqrs_deleted_sync_replica).`

func runDeletedDiffMaster(ctx context.Context, env Env, args []string) error {
	fs := newDataFlags(env, "deleted-diff-master", "cqrs deleted-diff-master [--progress] [--config FILE] < replica-pks", deletedDiffMasterAbout)
	var c commonFlags
	c.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	de, err := loadDataEnv(env, c.config)
	if err != nil {
		return err
	}
	defer de.Close()
	lr := newLineReader(env.Stdin, "stdin")
	header, parts, err := lr.header()
	if err != nil {
		return err
	}
	id := parts[0]
	_, t, err := de.openMaster(ctx, id, "stdin line 1")
	if err != nil {
		return err
	}
	out := bufio.NewWriter(env.Stdout)
	if err := writeLine(out, header); err != nil {
		return err
	}
	pr := newProgress(env.Stderr, chooseProgress(env, c.progress, true), -1)
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted at %s", lr.at())
		}
		line, ok, err := lr.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		v, ok, err := lr.jsonLine(line)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		pks, err := pkList(v, t, lr)
		if err != nil {
			return err
		}
		existing, err := t.lookup(ctx, de.db, pks)
		if err != nil {
			return fmt.Errorf("%s: %w", lr.at(), err)
		}
		var gone []any
		for _, pk := range pks {
			if _, ok := existing[pk.key]; !ok {
				gone = append(gone, pk.wire)
			}
		}
		if len(gone) > 0 {
			s, err := jsonList(gone)
			if err != nil {
				return err
			}
			if err := writeLine(out, s); err != nil {
				return err
			}
			pr.Printf("PK to delete: %s", pyCollection("[", "]", gone))
		}
		pr.Add(len(pks))
	}
	pr.Finish()
	return nil
}

// pkList reads a package of primary keys (a JSON list), dropping repeats.
func pkList(v any, t *tableRef, lr *lineReader) ([]pkVal, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s: want a JSON list of primary keys, got %s", lr.at(), showJSON(v))
	}
	seen := map[string]bool{}
	pks := make([]pkVal, 0, len(list))
	for i, item := range list {
		pk, err := pkFromStream(t.pkKind, item)
		if err != nil {
			return nil, fmt.Errorf("%s: item %d: %v", lr.at(), i, err)
		}
		if seen[pk.key] {
			continue
		}
		seen[pk.key] = true
		pks = append(pks, pk)
	}
	return pks, nil
}

const deletedSyncReplicaAbout = `Last stage of the deleted-rows diff, run on the replica (django-cqrs's
cqrs_deleted_sync_replica). Reads a cqrs deleted-diff-master stream on stdin and
deletes the listed rows from the replica, one transaction per input line. Each
row is deleted as a DELETE message at its stored revision would delete it, so
the replica model's delete hook runs and a tombstone is kept (unless
replica.django_compat is set). Writes nothing to stdout; a line that fails is
reported on stderr with its line number and the exit code is 1.`

func runDeletedSyncReplica(ctx context.Context, env Env, args []string) error {
	fs := newDataFlags(env, "deleted-sync-replica", "cqrs deleted-sync-replica [--progress] [--config FILE] < pks-to-delete", deletedSyncReplicaAbout)
	var c commonFlags
	c.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	de, err := loadDataEnv(env, c.config)
	if err != nil {
		return err
	}
	defer de.Close()
	lr := newLineReader(env.Stdin, "stdin")
	_, parts, err := lr.header()
	if err != nil {
		return err
	}
	id := parts[0]
	if err := de.replicaFor(id, "stdin line 1"); err != nil {
		return err
	}
	if err := de.open(ctx); err != nil {
		return err
	}
	eng, err := de.newEngine(ctx)
	if err != nil {
		return err
	}
	t, err := de.replicaTable(id)
	if err != nil {
		return err
	}
	pr := newProgress(env.Stderr, chooseProgress(env, c.progress, false), -1)
	failed := 0
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted at %s", lr.at())
		}
		line, ok, err := lr.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		v, ok, err := lr.jsonLine(line)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		pks, err := pkList(v, t, lr)
		if err != nil {
			return err
		}
		if err := deleteReplicaRows(ctx, de, eng, t, pks); err != nil {
			failed++
			pr.Printf("%s: %v", lr.at(), err)
		}
		pr.Add(len(pks))
	}
	pr.Finish()
	if failed > 0 {
		return fmt.Errorf("%d line(s) could not be applied (see above)", failed)
	}
	return nil
}

// deleteReplicaRows deletes the rows among pks that the replica has, in one
// transaction, through the engine: a DELETE at the stored revision and
// cqrs_updated, so hooks and tombstones behave as for a real DELETE.
func deleteReplicaRows(ctx context.Context, de *dataEnv, eng *replica.Engine, t *tableRef, pks []pkVal) error {
	tx, err := de.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	stored, err := t.lookup(ctx, tx, pks)
	if err != nil {
		return err
	}
	for _, pk := range pks {
		row, ok := stored[pk.key]
		if !ok {
			continue
		}
		data := wire.NewFields()
		data.Set("id", row.pk.wire)
		data.Set(wire.RevisionKey, json.Number(strconv.FormatInt(row.rev, 10)))
		data.Set(wire.UpdatedKey, wire.FormatPyDateTime(updatedOf(row.upd)))
		p := &wire.Payload{SignalType: wire.SignalDelete, CQRSID: t.cqrsID, InstanceData: data, InstancePK: row.pk.wire}
		if _, err := eng.ApplyTx(ctx, tx, replica.Delivery{Payload: p, Direct: true}); err != nil {
			return fmt.Errorf("delete pk %s: %w", row.pk.key, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// updatedOf reads a stored cqrs_updated; now when it is null or unreadable.
func updatedOf(v any) time.Time {
	switch x := v.(type) {
	case time.Time:
		return x.UTC()
	case string:
		if t, _, err := wire.ParseDateTime(x); err == nil {
			return t.UTC()
		}
	}
	return time.Now().UTC()
}
