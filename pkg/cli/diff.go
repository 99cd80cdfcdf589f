package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

const diffMasterAbout = `First stage of the revision diff, run on the master (django-cqrs's
cqrs_diff_master). Writes to stdout the line "<cqrs_id>,<now>" and then, per batch
of rows in primary key order, a JSON list of [pk, cqrs_revision] pairs, e.g.
  author,2026-11-27 09:45:41.265058+00:00
  [[1,0],[2,0],[3,1],[4,0],[5,0]]
Rows the model's IsSyncInstance rejects are left out. When no row matches,
stdout stays empty and stderr says "No objects found for filter!".
Pipe it to cqrs diff-replica (or django-cqrs's cqrs_diff_replica) on the replica:
  cqrs diff-master --cqrs-id author | cqrs diff-replica | cqrs diff-sync

` + filterHelp

func runDiffMaster(ctx context.Context, env Env, args []string) error {
	f := newDataFlags(env, "diff-master",
		"cqrs diff-master --cqrs-id ID [-f JSON] [--batch N] [--progress] [--config FILE] > diff", diffMasterAbout)
	id := f.cqrsID("cid", "cqrs_id of the master model (required)")
	filter := f.stringFlag("filter", "f", "only rows matching this JSON filter (see above)")
	batch := f.batchSize("rows per output line")
	de, err := f.load(args)
	if err != nil {
		return err
	}
	defer de.Close()
	m, t, err := de.openMaster(ctx, *id, "--cqrs-id")
	if err != nil {
		return err
	}
	mm, _ := de.reg.Master(*id)
	return de.writeFirstStage(ctx, t, *filter, *batch, f.progress(true), func(page []pkRev) ([]any, error) {
		keep := map[string]bool(nil)
		if mm.IsSyncInstance != nil {
			pks := make([]any, len(page))
			for i, r := range page {
				pks[i] = r.pk.bind
			}
			rows, err := m.Rows(ctx, de.db, *id, pks)
			if err != nil {
				return nil, err
			}
			keep = map[string]bool{}
			for _, row := range rows {
				if mm.IsSyncInstance(row) {
					pk, _ := row.Get(mm.PK)
					keep[keyOf(pk)] = true
				}
			}
		}
		pkg := make([]any, 0, len(page))
		for _, r := range page {
			if keep == nil || keep[r.pk.key] {
				pkg = append(pkg, []any{r.pk.wire, json.Number(strconv.FormatInt(r.rev, 10))})
			}
		}
		return pkg, nil
	})
}

const diffReplicaAbout = `Second stage of the revision diff, run on the replica (django-cqrs's
cqrs_diff_replica). Reads a cqrs diff-master stream on stdin and writes to stdout
its first line with ",<queue>" appended (the configured replica queue, "None"
without one), then, per input line with differences, a JSON list of the primary
keys whose replica revision differs from the master's or that the replica lacks:
  author,2026-11-27 09:45:41.265058+00:00,fixture_replica
  [2,3]
stderr gets "PK to resync: {2, 3}" for each such line. Pipe it to cqrs diff-sync
(or django-cqrs's cqrs_diff_sync) on the master.`

func runDiffReplica(ctx context.Context, env Env, args []string) error {
	f := newDataFlags(env, "diff-replica", "cqrs diff-replica [--progress] [--config FILE] < diff-master-stream", diffReplicaAbout)
	de, in, err := f.loadStream(args)
	if err != nil {
		return err
	}
	defer de.Close()
	t, err := de.openReplicaTable(ctx, in.cqrsID(), "stdin line 1")
	if err != nil {
		return err
	}
	queue := de.cfg.Queue
	if queue == "" {
		queue = "None" // Python's str(None), as django-cqrs writes it
	}
	report := func(diff []any) string { return "PK to resync: " + pyCollection("{", "}", diff) }
	return de.writeSecondStage(ctx, in.lr, t, in.header+","+queue, f.progress(true), report, func(v any) (diffPackage, error) {
		pks, revs, err := revisionPairs(v, t, in.lr)
		differs := func(i int, row syncRow, found bool) bool { return !found || row.rev != revs[i] }
		return diffPackage{pks: pks, keep: differs}, err
	})
}

// revisionPairs reads a diff-master package, a list of [pk, cqrs_revision]
// pairs. As in django-cqrs (a dict), a pk listed twice keeps its last
// revision and its first place.
func revisionPairs(v any, t *tableRef, lr *lineReader) ([]pkVal, []int64, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, nil, fmt.Errorf("%s: want a JSON list of [pk, cqrs_revision] pairs (a diff-master stream), got %s", lr.at(), showJSON(v))
	}
	var pks []pkVal
	var revs []int64
	index := map[string]int{}
	for i, item := range list {
		pair, ok := item.([]any)
		if !ok || len(pair) != 2 {
			return nil, nil, fmt.Errorf("%s: item %d: want a [pk, cqrs_revision] pair, got %s", lr.at(), i, showJSON(item))
		}
		pk, err := pkFromStream(t.pkKind, pair[0])
		if err != nil {
			return nil, nil, fmt.Errorf("%s: item %d: %v", lr.at(), i, err)
		}
		rev, ok := wire.AsInt64(pair[1])
		if !ok {
			return nil, nil, fmt.Errorf("%s: item %d: cqrs_revision %s is not an integer", lr.at(), i, showJSON(pair[1]))
		}
		if j, dup := index[pk.key]; dup {
			revs[j] = rev
			continue
		}
		index[pk.key] = len(pks)
		pks = append(pks, pk)
		revs = append(revs, rev)
	}
	return pks, revs, nil
}

// writeFirstStage writes the first stage of a diff stream, run on the side
// that has every row (cqrs_diff_master, cqrs_deleted_diff_replica): the line
// "<cqrs_id>,<now>" and then, per batch of t's rows matching filter (every
// row without one) in primary key order, the JSON list that pkg makes of
// them. When no row matches, stdout stays empty and stderr says so.
func (de *dataEnv) writeFirstStage(ctx context.Context, t *tableRef, filter string, batch int, mode progressMode, pkg func(page []pkRev) ([]any, error)) error {
	w, err := filterWhere(filter, t, whereClause{})
	if err != nil {
		return err
	}
	total, err := t.count(ctx, de.db, w)
	if err != nil {
		return err
	}
	if total == 0 {
		fmt.Fprintln(de.env.Stderr, "No objects found for filter!")
		return nil
	}
	out := bufio.NewWriter(de.env.Stdout)
	if err := writeLine(out, t.cqrsID+","+wire.FormatPyDateTime(time.Now().UTC())); err != nil {
		return err
	}
	pr := newProgress(de.env.Stderr, mode, total)
	interrupted := func() error { return interruptedAfter(pr.done, total) }
	err = t.eachPage(ctx, de.db, w, batch, pr, interrupted, func(page []pkRev) error {
		items, err := pkg(page)
		if err != nil {
			return err
		}
		line, err := jsonList(items)
		if err != nil {
			return err
		}
		return writeLine(out, line)
	})
	if err != nil {
		return err
	}
	pr.Finish()
	return nil
}

// diffPackage is one package line read by a second stage of a diff: its
// primary keys, and which of them go to the output, given the table's row
// for each (found false: the table lacks it).
type diffPackage struct {
	pks  []pkVal
	keep func(i int, row syncRow, found bool) bool
}

// writeSecondStage writes the second stage of a diff stream, run on the
// other side (cqrs_diff_replica, cqrs_deleted_diff_master): header as the
// first line and then, per package line of lr that read decodes, the JSON
// list of the primary keys it keeps, unless there are none. Each such list
// is also reported on stderr as report renders it.
func (de *dataEnv) writeSecondStage(ctx context.Context, lr *lineReader, t *tableRef, header string, mode progressMode, report func(pks []any) string, read func(v any) (diffPackage, error)) error {
	out := bufio.NewWriter(de.env.Stdout)
	if err := writeLine(out, header); err != nil {
		return err
	}
	pr := newProgress(de.env.Stderr, mode, -1)
	err := lr.eachJSON(ctx, func(v any) error {
		p, err := read(v)
		if err != nil {
			return err
		}
		stored, err := t.lookup(ctx, de.db, p.pks)
		if err != nil {
			return fmt.Errorf("%s: %w", lr.at(), err)
		}
		var kept []any
		for i, pk := range p.pks {
			row, found := stored[pk.key]
			if p.keep(i, row, found) {
				kept = append(kept, pk.wire)
			}
		}
		if len(kept) > 0 {
			s, err := jsonList(kept)
			if err != nil {
				return err
			}
			if err := writeLine(out, s); err != nil {
				return err
			}
			pr.Printf("%s", report(kept))
		}
		pr.Add(len(p.pks))
		return nil
	})
	if err != nil {
		return err
	}
	pr.Finish()
	return nil
}
