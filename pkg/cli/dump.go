package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

const bulkDumpAbout = `Dumps every row of a master model in django-cqrs's cqrs_bulk_dump format: the
first line is the cqrs_id, then one compact JSON instance_data object per row
(as a SAVE or SYNC would carry it: cqrs_revision, cqrs_updated, then the fields,
through the model's serializer if it has one), in primary key order, with no
newline after the last row. The dump loads into gocqrs (cqrs bulk-load) and into
django-cqrs (manage.py cqrs_bulk_load) alike.

Without -o the dump goes to <cqrs_id>.dump, which must not exist unless --force
is given; -o - writes to stdout. At the end stderr gets django-cqrs's summary:
  Done!
  N instance(s) saved.
  N instance(s) processed.`

func runBulkDump(ctx context.Context, env Env, args []string) error {
	f := newDataFlags(env, "bulk-dump",
		"cqrs bulk-dump --cqrs-id ID [-o FILE | -o -] [--force] [--batch N] [--progress] [--config FILE]", bulkDumpAbout)
	id := f.cqrsID("c", "cqrs_id of the master model to dump (required)")
	out := f.stringFlag("output", "o", "output file, - for stdout (default <cqrs_id>.dump)")
	force := f.boolFlag("force", "f", "overwrite the output file if it exists")
	batch := f.batchSize("rows read per query")
	de, err := f.load(args)
	if err != nil {
		return err
	}
	defer de.Close()
	if err := de.masterFor(*id, "--cqrs-id"); err != nil {
		return err
	}
	name := *out
	if name == "" {
		name = *id + ".dump"
	}
	if name != "-" && !*force {
		if _, err := os.Stat(name); err == nil {
			return fmt.Errorf("--output %s: the file exists (--force overwrites it)", name)
		}
	}
	m, t, err := de.openMasterModel(ctx, *id)
	if err != nil {
		return err
	}
	mode := f.progress(name == "-")
	if name == "-" {
		return dumpTo(ctx, de, m, t, env.Stdout, *batch, mode)
	}
	return dumpToFile(ctx, de, m, t, name, *force, *batch, mode)
}

// dumpToFile writes the dump to a temporary file next to name and renames
// it into place at the end, so a failed dump leaves no partial file.
func dumpToFile(ctx context.Context, de *dataEnv, m *master.Master, t *tableRef, name string, force bool, batch int, mode progressMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*.tmp")
	if err != nil {
		return fmt.Errorf("--output %s: %w", name, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	err = dumpTo(ctx, de, m, t, f, batch, mode)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("--output %s: %w", name, cerr)
	}
	if err != nil {
		return err
	}
	if !force {
		if _, err := os.Stat(name); err == nil {
			return fmt.Errorf("--output %s: the file appeared while dumping (--force overwrites it)", name)
		}
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("--output %s: %w", name, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("--output %s: %w", name, err)
	}
	return nil
}

func dumpTo(ctx context.Context, de *dataEnv, m *master.Master, t *tableRef, out io.Writer, batch int, mode progressMode) error {
	mm, _ := de.reg.Master(t.cqrsID)
	total, err := t.count(ctx, de.db, whereClause{})
	if err != nil {
		return err
	}
	pr := newProgress(de.env.Stderr, mode, total)
	pr.Begin(total, batch)
	w := bufio.NewWriterSize(out, 256<<10)
	if _, err := w.WriteString(t.cqrsID); err != nil {
		return fmt.Errorf("write dump: %w", err)
	}
	saved, processed := 0, 0
	interrupted := func() error { return interruptedAfter(int64(processed), total) }
	err = t.eachPage(ctx, de.db, whereClause{}, batch, pr, interrupted, func(page []pkRev) error {
		pks := make([]any, len(page))
		for i, r := range page {
			pks[i] = r.pk.bind
		}
		rows, err := dumpRows(ctx, de, m, mm, pks)
		if err != nil {
			return err
		}
		for _, r := range rows {
			processed++
			if r.err != nil {
				pr.Printf("Dump record failed for pk=%s: %v", keyOf(r.pk), r.err)
				continue
			}
			if err := w.WriteByte('\n'); err != nil {
				return fmt.Errorf("write dump: %w", err)
			}
			if _, err := w.Write(r.line); err != nil {
				return fmt.Errorf("write dump: %w", err)
			}
			saved++
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write dump: %w", err)
	}
	pr.Finish()
	fmt.Fprintf(de.env.Stderr, "Done!\n%d instance(s) saved.\n%d instance(s) processed.\n", saved, processed)
	return nil
}

// dumpedRow is one row's dump line, or why it could not be dumped.
type dumpedRow struct {
	pk   any
	line []byte
	err  error
}

// dumpRows reads rows by primary key in the wire format and serialises
// them, through the model's serializer when it has one (in a transaction,
// which the serializer may query).
func dumpRows(ctx context.Context, de *dataEnv, m *master.Master, mm *registry.MasterModel, pks []any) ([]dumpedRow, error) {
	var q sqlx.QueryerContext = de.db
	var tx *sqlx.Tx
	if mm.Serialize != nil {
		var err error
		if tx, err = de.db.BeginTxx(ctx, nil); err != nil {
			return nil, fmt.Errorf("dump %s: begin: %w", mm.CQRSID, err)
		}
		defer tx.Rollback() //nolint:errcheck // read only
		q = tx
	}
	rows, err := m.Rows(ctx, q, mm.CQRSID, pks)
	if err != nil {
		return nil, err
	}
	out := make([]dumpedRow, 0, len(rows))
	for _, row := range rows {
		pk, _ := row.Get(mm.PK)
		data := row
		if mm.Serialize != nil {
			if data, err = serialize(ctx, tx, mm, row); err != nil {
				out = append(out, dumpedRow{pk: pk, err: err})
				continue
			}
		}
		line, err := data.MarshalJSON()
		out = append(out, dumpedRow{pk: pk, line: line, err: err})
	}
	return out, nil
}

// serialize applies the model's serializer as a message would: its output
// with the row's cqrs_revision and cqrs_updated.
func serialize(ctx context.Context, tx *sqlx.Tx, mm *registry.MasterModel, row *wire.Fields) (data *wire.Fields, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errors.New(fmt.Sprint("serializer panicked: ", r))
		}
	}()
	data, err = mm.Serialize(ctx, tx, row.Clone())
	if err != nil {
		return nil, fmt.Errorf("serializer: %w", err)
	}
	if data == nil {
		data = wire.NewFields()
	}
	rev, _ := row.Get(wire.RevisionKey)
	upd, _ := row.Get(wire.UpdatedKey)
	data.Set(wire.RevisionKey, rev)
	data.Set(wire.UpdatedKey, upd)
	return data, nil
}
