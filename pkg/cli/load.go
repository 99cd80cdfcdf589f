package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

const bulkLoadAbout = `Loads a dump in django-cqrs's cqrs_bulk_dump format (the first line the cqrs_id,
then one instance_data object per line) into a replica model: written by
cqrs bulk-dump or by django-cqrs's manage.py cqrs_bulk_dump.

Each line is applied as django-cqrs's cqrs_bulk_load does (ReplicaMixin.cqrs_save,
a SAVE): a row the replica lacks is created, a row with an older revision is
updated, a row with the same or a newer revision is left as it is (and still
counts as loaded); mappings, hooks and tombstones of the replica model apply.
--batch lines share one transaction; a line that fails is rolled back alone
(a savepoint) and reported on stderr with its line number:
  Dump file can't be parsed: line N! <why>
  Instance can't be saved: line N! <why>
A line older than a DELETE the replica has seen (a tombstone) is not loaded:
  Instance not loaded, deleted later (tombstone): line N!
Blank lines are skipped. At the end stderr gets django-cqrs's summary
"Done!\nN instance(s) loaded."; the exit code is 1 if any line failed.

--clear deletes every row of the replica table first (django-cqrs's -c).`

func runBulkLoad(ctx context.Context, env Env, args []string) error {
	f := newDataFlags(env, "bulk-load",
		"cqrs bulk-load -i FILE|- [--clear] [--batch N] [--progress] [--config FILE]", bulkLoadAbout)
	in := f.stringFlag("input", "i", "dump file to load, - for stdin (required)")
	clear := f.boolFlag("clear", "c", "delete every row of the replica table before loading")
	batch := f.batchSize("lines applied per transaction")
	if err := parse(f.fs, args); err != nil {
		return err
	}
	if f.fs.NArg() > 0 {
		if *clear {
			return usagef("unexpected argument %q (--clear takes no value: write -c or --clear)", f.fs.Arg(0))
		}
		return usagef("unexpected argument %q", f.fs.Arg(0))
	}
	if *in == "" {
		return usagef("--input is required: a dump file, or - for stdin")
	}
	if err := checkBatch(*batch); err != nil {
		return err
	}
	de, err := f.loadEnv()
	if err != nil {
		return err
	}
	defer de.Close()

	var src io.Reader = env.Stdin
	name, total := "stdin", int64(-1)
	if *in != "-" {
		file, err := os.Open(*in)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("--input %s: the file doesn't exist", *in)
			}
			return fmt.Errorf("--input %s: %w", *in, err)
		}
		defer file.Close()
		src, name = file, *in
		if f.progress(false) != progressOff {
			if total, err = countLines(file); err != nil {
				return fmt.Errorf("--input %s: %w", *in, err)
			}
		}
	}
	lr := newLineReader(src, name)
	first, ok, err := lr.next()
	if err != nil {
		return err
	}
	id := strings.TrimSpace(first)
	if !ok || id == "" {
		return fmt.Errorf("%s line 1: the dump is empty: want the cqrs_id on the first line", name)
	}
	eng, err := de.openEngine(ctx, id, name+" line 1")
	if err != nil {
		return err
	}
	if *clear {
		if err := clearReplica(ctx, de, id); err != nil {
			return err
		}
	}
	pr := newProgress(env.Stderr, f.progress(false), total)
	if total >= 0 {
		pr.Begin(total, *batch)
	}
	l := &loader{de: de, eng: eng, id: id, lr: lr, pr: pr}
	for {
		more, err := l.batch(ctx, *batch)
		if err != nil {
			pr.Finish()
			fmt.Fprintf(env.Stderr, "%d instance(s) loaded before the failure.\n", l.loaded)
			return err
		}
		if !more {
			break
		}
	}
	pr.Finish()
	fmt.Fprintf(env.Stderr, "Done!\n%d instance(s) loaded.\n", l.loaded)
	if l.failed > 0 {
		return fmt.Errorf("%d line(s) of %s could not be loaded (see above)", l.failed, name)
	}
	return nil
}

// countLines counts the data lines of a dump file (all but the first) for
// the progress display, then rewinds it.
func countLines(f *os.File) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	var last byte = '\n'
	for {
		k, err := f.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if k > 0 {
			last = buf[k-1]
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if last != '\n' {
		n++ // the last line has no newline, as in django-cqrs's dumps
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	return max(n-1, 0), nil
}

// clearReplica deletes every row of a replica model's table in one
// transaction, as cqrs_bulk_load --clear does.
func clearReplica(ctx context.Context, de *dataEnv, id string) error {
	rm, _ := de.reg.Replica(id)
	if rm.IsRaw() {
		return usagef("--clear: replica model %q has no table (raw handlers)", id)
	}
	qt, err := de.d.Quote(rm.Table)
	if err != nil {
		return fmt.Errorf("--clear: %w", err)
	}
	tx, err := de.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("--clear: begin: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM "+qt); err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("--clear: delete the rows of %s: %w", rm.Table, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("--clear: commit: %w", err)
	}
	return nil
}

// loader applies the lines of a dump.
type loader struct {
	de             *dataEnv
	eng            *replica.Engine
	id             string
	lr             *lineReader
	pr             *progress
	loaded, failed int
}

// savepoint names the per-line savepoint.
const savepoint = "cqrs_bulk_load_line"

// batch applies up to n lines in one transaction; more is false at the end
// of the input.
func (l *loader) batch(ctx context.Context, n int) (more bool, err error) {
	if ctx.Err() != nil {
		return false, fmt.Errorf("interrupted at %s", l.lr.at())
	}
	tx, err := l.de.db.BeginTxx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("begin a transaction at %s: %w", l.lr.at(), err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	done, loaded, failed := 0, 0, 0
	more = true
	for done < n {
		line, ok, err := l.lr.next()
		if err != nil {
			return false, err
		}
		if !ok {
			more = false
			break
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		done++
		res, err := l.line(ctx, tx, line)
		if err != nil {
			return false, err
		}
		switch res {
		case lineLoaded:
			loaded++
		case lineFailed:
			failed++
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("commit the lines up to %s: %w", l.lr.at(), err)
	}
	l.loaded += loaded
	l.failed += failed
	if done > 0 {
		l.pr.Add(done)
	}
	return more, nil
}

// lineResult is what became of one dump line.
type lineResult int

const (
	lineLoaded  lineResult = iota // applied, or already as new on the replica (as django-cqrs counts it)
	lineFailed                    // could not be parsed or saved
	lineSkipped                   // older than a DELETE the replica has applied (tombstone)
)

// line applies one dump line in a savepoint. A returned error is fatal
// (the transaction is unusable).
func (l *loader) line(ctx context.Context, tx *sqlx.Tx, line string) (lineResult, error) {
	at := l.lr.n
	data, derr := wire.DecodeFields([]byte(strings.TrimSpace(line)))
	if derr != nil {
		l.pr.Printf("Dump file can't be parsed: line %d! %v", at, derr)
		return lineFailed, nil
	}
	p := &wire.Payload{SignalType: wire.SignalSave, CQRSID: l.id, InstanceData: data}
	p.InstancePK, _ = data.Get("id")
	if _, err := tx.ExecContext(ctx, "SAVEPOINT "+savepoint); err != nil {
		return lineFailed, fmt.Errorf("line %d: savepoint: %w", at, err)
	}
	res, aerr := l.eng.ApplyTx(ctx, tx, replica.Delivery{Payload: p})
	if aerr != nil {
		if _, err := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); err != nil {
			return lineFailed, fmt.Errorf("line %d: roll back to savepoint after %v: %w", at, aerr, err)
		}
		l.pr.Printf("Instance can't be saved: line %d! %v", at, aerr)
		return lineFailed, nil
	}
	if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT "+savepoint); err != nil {
		return lineFailed, fmt.Errorf("line %d: release savepoint: %w", at, err)
	}
	if res.Outcome == replica.OutcomeSkippedTombstone {
		l.pr.Printf("Instance not loaded, deleted later (tombstone): line %d!", at)
		return lineSkipped, nil
	}
	return lineLoaded, nil
}
