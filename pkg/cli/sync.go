package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
)

const syncAbout = `Sends SYNC messages for the rows of a master model that match --filter
(django-cqrs's cqrs_sync): replicas apply a SYNC whatever its revision. With
--queue the SYNCs go to that replica queue only (routing key cqrs.<queue>.<cqrs_id>),
otherwise to every replica. The messages are written to the outbox, --batch rows
per transaction, and then published with a relay on the configured transport
(--no-publish leaves them to a running cqrs relay).

As in django-cqrs, nothing is synced without --filter: -f '{}' syncs every row.
stdout gets django-cqrs's summary ("Done!\nN instance(s) synced.\nN instance(s)
processed.", or "No objects found for filter!"); a row that fails is reported on
stderr ("Sync record failed for pk=...") and the exit code is then 1.

` + filterHelp

func runSync(ctx context.Context, env Env, args []string) error {
	f := newDataFlags(env, "sync",
		"cqrs sync --cqrs-id ID -f JSON [--queue QUEUE] [--batch N] [--progress] [--no-publish] [--config FILE]", syncAbout)
	id := f.cqrsID("cid", "cqrs_id of the master model (required)")
	filter := f.stringFlag("filter", "f", "rows to sync, a JSON filter (see above); '{}' for every row")
	queue := f.stringFlag("queue", "q", "send the SYNCs to this replica queue only (default: broadcast)")
	batch := f.batchSize("rows synced per transaction")
	noPublish := noPublishFlag(f)
	de, err := f.load(args, func() error {
		if err := checkQueue(*queue, "--queue"); err != nil {
			return usagef("%v", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer de.Close()
	m, t, err := de.openMaster(ctx, *id, "--cqrs-id")
	if err != nil {
		return err
	}
	w, err := filterWhere(*filter, t, whereClause{sql: "1 = 0"}) // django-cqrs: no filter, no rows
	if err != nil {
		return err
	}
	s := &syncer{de: de, m: m, t: t, queue: *queue, batch: *batch, mode: f.progress(false)}
	mark, err := de.markOutbox(ctx)
	if err != nil {
		return err
	}
	runErr := s.syncWhere(ctx, w, env.Stdout)
	if *filter == "" {
		fmt.Fprintln(env.Stderr, "(no --filter: nothing synced; -f '{}' syncs every row)")
	}
	return s.finish(ctx, runErr, mark, *noPublish)
}

const diffSyncAbout = `Last stage of the revision diff, run on the master (django-cqrs's
cqrs_diff_sync). Reads a cqrs diff-replica stream on stdin and sends a SYNC for
every primary key it lists: to the replica queue named at the end of its first
line ("<cqrs_id>,<time>,<queue>"), or to every replica when that is "None". Per
input line stdout gets django-cqrs's summary ("Done!\nN instance(s) synced.\nN
instance(s) processed."). The messages are written to the outbox, --batch rows per
transaction, and then published with a relay (--no-publish leaves them to a
running cqrs relay).`

func runDiffSync(ctx context.Context, env Env, args []string) error {
	f := newDataFlags(env, "diff-sync", "cqrs diff-sync [--batch N] [--progress] [--no-publish] [--config FILE] < diff-replica-stream", diffSyncAbout)
	batch := f.batchSize("rows synced per transaction")
	noPublish := noPublishFlag(f)
	de, in, err := f.loadStream(args)
	if err != nil {
		return err
	}
	defer de.Close()
	id, parts := in.cqrsID(), in.fields
	if err := de.masterFor(id, "stdin line 1"); err != nil {
		return err
	}
	// The queue is the third field that cqrs diff-replica appends; a
	// diff-master stream (two fields) syncs to every replica.
	queue := ""
	if len(parts) >= 3 && parts[len(parts)-1] != "None" {
		queue = parts[len(parts)-1]
		if err := checkQueue(queue, "stdin line 1: queue"); err != nil {
			return err
		}
	}
	m, t, err := de.openMasterModel(ctx, id)
	if err != nil {
		return err
	}
	s := &syncer{de: de, m: m, t: t, queue: queue, batch: *batch, mode: f.progress(false)}
	mark, err := de.markOutbox(ctx)
	if err != nil {
		return err
	}
	return s.finish(ctx, s.syncStream(ctx, in.lr, env.Stdout), mark, *noPublish)
}

// noPublishFlag registers --no-publish.
func noPublishFlag(f *dataFlags) *bool {
	return f.fs.Bool("no-publish", false, "only write the messages to the outbox; a running cqrs relay publishes them")
}

// checkQueue rejects a queue name that cannot be part of a routing key.
func checkQueue(q, where string) error {
	if strings.ContainsAny(q, " \t\n#*,") {
		return fmt.Errorf("%s %q: a queue name has no spaces, commas, '#' or '*'", where, q)
	}
	return nil
}

// syncer writes SYNC messages of one master model.
type syncer struct {
	de      *dataEnv
	m       *master.Master
	t       *tableRef
	queue   string
	batch   int
	mode    progressMode
	written int // messages written to the outbox
	failed  int // rows that could not be synced
}

// syncWhere syncs the rows matching w, as one cqrs_sync run, and prints
// its summary to out.
func (s *syncer) syncWhere(ctx context.Context, w whereClause, out io.Writer) error {
	total, err := s.t.count(ctx, s.de.db, w)
	if err != nil {
		return err
	}
	if total == 0 {
		fmt.Fprintln(out, "No objects found for filter!")
		return nil
	}
	pr := newProgress(s.de.env.Stderr, s.mode, total)
	pr.Begin(total, s.batch)
	synced, processed := 0, 0
	interrupted := func() error { return interruptedAfter(int64(processed), total) }
	err = s.t.eachPage(ctx, s.de.db, w, s.batch, pr, interrupted, func(page []pkRev) error {
		pks := make([]pkVal, len(page))
		for i, r := range page {
			pks[i] = r.pk
		}
		n, err := s.syncPage(ctx, pks, pr)
		if err != nil {
			return err
		}
		synced += n
		processed += len(page)
		return nil
	})
	if err != nil {
		return err
	}
	pr.Finish()
	fmt.Fprintf(out, "Done!\n%d instance(s) synced.\n%d instance(s) processed.\n", synced, processed)
	return nil
}

// syncStream syncs the primary keys of each line of a diff-replica stream,
// one cqrs_sync run (and summary) per line, as cqrs_diff_sync does.
func (s *syncer) syncStream(ctx context.Context, lr *lineReader, out io.Writer) error {
	bw := bufio.NewWriter(out)
	defer bw.Flush()
	return lr.eachPKList(ctx, s.t, func(pks []pkVal) error {
		// Only the rows that exist are processed.
		existing, err := s.t.lookup(ctx, s.de.db, pks)
		if err != nil {
			return fmt.Errorf("%s: %w", lr.at(), err)
		}
		found := make([]pkVal, 0, len(existing))
		for _, pk := range pks {
			if r, ok := existing[pk.key]; ok {
				found = append(found, r.pk)
			}
		}
		if err := s.syncPKs(ctx, found, bw); err != nil {
			return fmt.Errorf("%s: %w", lr.at(), err)
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		return nil
	})
}

// syncPKs syncs the given rows, as one cqrs_sync run, and prints its
// summary to out.
func (s *syncer) syncPKs(ctx context.Context, pks []pkVal, out io.Writer) error {
	if len(pks) == 0 {
		fmt.Fprintln(out, "No objects found for filter!")
		return nil
	}
	pr := newProgress(s.de.env.Stderr, s.mode, int64(len(pks)))
	pr.Begin(int64(len(pks)), s.batch)
	synced := 0
	for start := 0; start < len(pks); start += s.batch {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted after %d of %d rows", start, len(pks))
		}
		page := pks[start:min(start+s.batch, len(pks))]
		n, err := s.syncPage(ctx, page, pr)
		if err != nil {
			return err
		}
		synced += n
		pr.Add(len(page))
	}
	pr.Finish()
	fmt.Fprintf(out, "Done!\n%d instance(s) synced.\n%d instance(s) processed.\n", synced, len(pks))
	return nil
}

// syncPage writes the SYNCs of one page of rows in one transaction. If
// that fails, each row is retried alone so that one bad row does not sink
// the page; rows that still fail are reported. It returns the rows synced.
func (s *syncer) syncPage(ctx context.Context, pks []pkVal, pr *progress) (int, error) {
	binds := make([]any, len(pks))
	for i, pk := range pks {
		binds[i] = pk.bind
	}
	n, err := s.syncTx(ctx, binds)
	if err == nil {
		s.written += n
		return len(pks), nil
	}
	if ctx.Err() != nil {
		return 0, fmt.Errorf("interrupted; the batch was rolled back: %v", err)
	}
	if len(pks) == 1 {
		s.failed++
		pr.Printf("Sync record failed for pk=%s: %v", pks[0].key, err)
		return 0, nil
	}
	synced := 0
	for _, pk := range pks {
		n, err := s.syncTx(ctx, []any{pk.bind})
		if err != nil {
			s.failed++
			pr.Printf("Sync record failed for pk=%s: %v", pk.key, err)
			continue
		}
		s.written += n
		synced++
	}
	return synced, nil
}

func (s *syncer) syncTx(ctx context.Context, pks []any) (int, error) {
	tx, err := s.de.db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	n, err := s.m.Sync(ctx, tx, s.t.cqrsID, pks, s.queue)
	if err != nil {
		_ = tx.Rollback()
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return n, nil
}

// finish publishes what was written (unless told not to) and turns row
// failures into the exit code.
func (s *syncer) finish(ctx context.Context, runErr error, mark *outboxRange, noPublish bool) error {
	var pubErr error
	switch {
	case s.written == 0:
	case noPublish || ctx.Err() != nil:
		fmt.Fprintf(s.de.env.Stderr, "%d message(s) written to the outbox; cqrs relay publishes them.\n", s.written)
	default:
		pubErr = s.de.publishOutbox(ctx, mark, s.written)
	}
	if err := errors.Join(runErr, pubErr); err != nil {
		return err
	}
	if s.failed > 0 {
		return fmt.Errorf("%d row(s) could not be synced (see above)", s.failed)
	}
	return nil
}
