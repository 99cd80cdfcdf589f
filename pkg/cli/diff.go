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
	fs := newDataFlags(env, "diff-master",
		"cqrs diff-master --cqrs-id ID [-f JSON] [--batch N] [--progress] [--config FILE] > diff", diffMasterAbout)
	var c commonFlags
	c.register(fs)
	id := fs.String("cqrs-id", "", "cqrs_id of the master model (required)")
	fs.StringVar(id, "cid", "", "same as --cqrs-id")
	filter := fs.String("filter", "", "only rows matching this JSON filter (see above)")
	fs.StringVar(filter, "f", "", "same as --filter")
	batch := batchFlag(fs, "rows per output line")
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
	m, t, err := de.openMaster(ctx, *id, "--cqrs-id")
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
	mm, _ := de.reg.Master(*id)
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
		keep := map[string]bool(nil)
		if mm.IsSyncInstance != nil {
			pks := make([]any, len(page))
			for i, r := range page {
				pks[i] = r.pk.bind
			}
			rows, err := m.Rows(ctx, de.db, *id, pks)
			if err != nil {
				return err
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
		line, err := jsonList(pkg)
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
	fs := newDataFlags(env, "diff-replica", "cqrs diff-replica [--progress] [--config FILE] < diff-master-stream", diffReplicaAbout)
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
	t, err := de.openReplicaTable(ctx, id, "stdin line 1")
	if err != nil {
		return err
	}
	queue := de.cfg.Queue
	if queue == "" {
		queue = "None" // Python's str(None), as django-cqrs writes it
	}
	out := bufio.NewWriter(env.Stdout)
	if err := writeLine(out, header+","+queue); err != nil {
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
		pks, revs, err := revisionPairs(v, t, lr)
		if err != nil {
			return err
		}
		stored, err := t.lookup(ctx, de.db, pks)
		if err != nil {
			return fmt.Errorf("%s: %w", lr.at(), err)
		}
		var diff []any
		for i, pk := range pks {
			if r, ok := stored[pk.key]; !ok || r.rev != revs[i] {
				diff = append(diff, pk.wire)
			}
		}
		if len(diff) > 0 {
			s, err := jsonList(diff)
			if err != nil {
				return err
			}
			if err := writeLine(out, s); err != nil {
				return err
			}
			pr.Printf("PK to resync: %s", pyCollection("{", "}", diff))
		}
		pr.Add(len(pks))
	}
	pr.Finish()
	return nil
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
