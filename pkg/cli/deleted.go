package cli

import (
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
	f := newDataFlags(env, "deleted-diff-replica",
		"cqrs deleted-diff-replica --cqrs-id ID [-f JSON] [--batch N] [--progress] [--config FILE] > pks", deletedDiffReplicaAbout)
	id := f.cqrsID("cid", "cqrs_id of the replica model (required)")
	filter := f.stringFlag("filter", "f", "only replica rows matching this JSON filter (see above)")
	batch := f.batchSize("primary keys per output line")
	de, err := f.load(args)
	if err != nil {
		return err
	}
	defer de.Close()
	t, err := de.openReplicaTable(ctx, *id, "--cqrs-id")
	if err != nil {
		return err
	}
	return de.writeFirstStage(ctx, t, *filter, *batch, f.progress(true), func(page []pkRev) ([]any, error) {
		pks := make([]any, len(page))
		for i, r := range page {
			pks[i] = r.pk.wire
		}
		return pks, nil
	})
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
	f := newDataFlags(env, "deleted-diff-master", "cqrs deleted-diff-master [--progress] [--config FILE] < replica-pks", deletedDiffMasterAbout)
	de, in, err := f.loadStream(args)
	if err != nil {
		return err
	}
	defer de.Close()
	_, t, err := de.openMaster(ctx, in.cqrsID(), "stdin line 1")
	if err != nil {
		return err
	}
	report := func(gone []any) string { return "PK to delete: " + pyCollection("[", "]", gone) }
	return de.writeSecondStage(ctx, in.lr, t, in.header, f.progress(true), report, func(v any) (diffPackage, error) {
		pks, err := pkList(v, t, in.lr)
		gone := func(_ int, _ syncRow, found bool) bool { return !found }
		return diffPackage{pks: pks, keep: gone}, err
	})
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
	f := newDataFlags(env, "deleted-sync-replica", "cqrs deleted-sync-replica [--progress] [--config FILE] < pks-to-delete", deletedSyncReplicaAbout)
	de, in, err := f.loadStream(args)
	if err != nil {
		return err
	}
	defer de.Close()
	id := in.cqrsID()
	eng, err := de.openEngine(ctx, id, "stdin line 1")
	if err != nil {
		return err
	}
	t, err := de.replicaTable(id)
	if err != nil {
		return err
	}
	pr := newProgress(env.Stderr, f.progress(false), -1)
	failed := 0
	err = in.lr.eachPKList(ctx, t, func(pks []pkVal) error {
		if err := deleteReplicaRows(ctx, de, eng, t, pks); err != nil {
			failed++
			pr.Printf("%s: %v", in.lr.at(), err)
		}
		pr.Add(len(pks))
		return nil
	})
	if err != nil {
		return err
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
