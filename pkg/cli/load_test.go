package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

// Loading django-cqrs's dump into an empty replica gives the rows
// django-cqrs's cqrs_bulk_load gave (situation.json), with its summary.
func TestLoadDjangoDump(t *testing.T) {
	eachDB(t, func(t *testing.T, _, r *side) {
		res := r.run("", "bulk-load", "-i", fixturePath(t, "cqrs_bulk_dump_author.stdout"))
		if res.code != ExitOK {
			t.Fatalf("bulk-load: %+v", res)
		}
		if want := fixture(t, "cqrs_bulk_load_author.stderr"); res.stderr != want || res.stdout != "" {
			t.Errorf("stderr = %q (stdout %q), want %q", res.stderr, res.stdout, want)
		}
		equalLines(t, "replica rows", r.rows("author_ref"), situationRows(t, "replica_rows_after_bulk_load"))

		// Loading it again changes nothing; every line counts as loaded,
		// as in django-cqrs (same revision: the row is left as it is).
		r.exec("UPDATE author_ref SET name = ? WHERE id = ?", "changed locally", 1)
		res = r.run(fixture(t, "cqrs_bulk_dump_author.stdout"), "bulk-load", "-i", "-", "-b", "2")
		if res.code != ExitOK || res.stderr != "Done!\n5 instance(s) loaded.\n" {
			t.Errorf("reload: %+v", res)
		}
		if rows := r.rows("author_ref"); !strings.Contains(rows[0], "changed locally") {
			t.Errorf("a duplicate revision overwrote row 1: %s", rows[0])
		}
	})
}

// A line that fails is rolled back alone and reported with its number; the
// rest of its batch is kept. PostgreSQL aborts a transaction on an error, so
// this needs the savepoints on every database.
func TestLoadBadLines(t *testing.T) {
	eachDB(t, func(t *testing.T, _, r *side) {
		dump := strings.Join([]string{
			"author",
			`{"cqrs_revision":0,"cqrs_updated":"2026-11-27 09:45:35+00:00","id":1,"name":"One","active":true}`,
			`{"cqrs_revision":0,"cqrs_updated":`,                           // line 3: not JSON
			`{"cqrs_revision":0,"id":3,"name":"No updated","active":true}`, // line 4: no cqrs_updated
			"", // blank: skipped
			`{"cqrs_revision":0,"cqrs_updated":"2026-11-27 09:45:35+00:00","id":5,"name":"Bad date","birth_date":"1990-02-31","active":true}`, // line 6
			`{"cqrs_revision":0,"cqrs_updated":"2026-11-27 09:45:35+00:00","id":7,"name":"` + strings.Repeat("x", 300) + `","active":true}`,   // line 7: too long for VARCHAR(200) on PG/MySQL
			`{"cqrs_revision":0,"cqrs_updated":"2026-11-27 09:45:35+00:00","id":8,"name":"Eight","active":false}`,
		}, "\n")
		res := r.run(dump, "bulk-load", "-i", "-")
		if res.code != ExitFailure {
			t.Fatalf("want exit 1: %+v", res)
		}
		for _, want := range []string{
			"Dump file can't be parsed: line 3!",
			"Instance can't be saved: line 4!",
			"Instance can't be saved: line 6!",
			"CQRS sync fields are not provided",
		} {
			if !strings.Contains(res.stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, res.stderr)
			}
		}
		loaded := "2"
		if r.db.Dialect.Name() == "sqlite" { // SQLite does not enforce VARCHAR lengths
			loaded = "3"
		} else if !strings.Contains(res.stderr, "Instance can't be saved: line 7!") {
			t.Errorf("stderr lacks line 7:\n%s", res.stderr)
		}
		if !strings.Contains(res.stderr, "Done!\n"+loaded+" instance(s) loaded.\n") {
			t.Errorf("summary: %s", res.stderr)
		}
		rows := strings.Join(r.rows("author_ref"), "\n")
		if !strings.Contains(rows, `"name":"One"`) || !strings.Contains(rows, `"name":"Eight"`) || strings.Contains(rows, "Bad date") {
			t.Errorf("rows after load:\n%s", rows)
		}
	})
}

func TestLoadClearAndTombstone(t *testing.T) {
	r := newReplicaSide(t, testenv.SQLite(t))
	if res := r.run("author\n"+frankLine, "bulk-load", "-i", "-"); res.code != ExitOK {
		t.Fatal(res)
	}
	// --clear empties the table first.
	res := r.run("", "bulk-load", "-i", fixturePath(t, "cqrs_bulk_dump_author.stdout"), "--clear")
	if res.code != ExitOK {
		t.Fatalf("--clear: %+v", res)
	}
	if rows := r.rows("author_ref"); len(rows) != 5 || strings.Contains(strings.Join(rows, ""), "Frank") {
		t.Errorf("after --clear: %v", rows)
	}
	// Row 5 deleted through deleted-sync-replica leaves a tombstone: loading
	// the same state again does not bring it back.
	if res := r.run("author,2026-11-27 09:45:46.077434+00:00\n[5]\n", "deleted-sync-replica"); res.code != ExitOK {
		t.Fatalf("deleted-sync-replica: %+v", res)
	}
	res = r.run(fixture(t, "cqrs_bulk_dump_author.stdout"), "bulk-load", "-i", "-")
	if res.code != ExitOK || !strings.Contains(res.stderr, "Instance not loaded, deleted later (tombstone): line 6!") ||
		!strings.Contains(res.stderr, "Done!\n4 instance(s) loaded.\n") {
		t.Errorf("load over a tombstone: %+v", res)
	}
	if rows := r.rows("author_ref"); len(rows) != 4 {
		t.Errorf("row 5 came back: %v", rows)
	}
}

func TestLoadErrors(t *testing.T) {
	r := newReplicaSide(t, testenv.SQLite(t))
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.dump")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  []string
	}{
		{"no input", "", []string{"bulk-load"}, ExitUsage, []string{"--input is required"}},
		{"missing file", "", []string{"bulk-load", "-i", filepath.Join(dir, "nope.dump")}, ExitFailure, []string{"nope.dump", "doesn't exist"}},
		{"empty file", "", []string{"bulk-load", "-i", empty}, ExitFailure, []string{"empty.dump line 1", "empty"}},
		{"unknown cqrs_id", "book\n{}", []string{"bulk-load", "-i", "-"}, ExitFailure, []string{"stdin line 1", `"book"`, "known: author"}},
		{"clear with a value", "", []string{"bulk-load", "-i", "-", "-c", "True"}, ExitUsage, []string{`"True"`, "--clear takes no value"}},
		{"bad batch", "", []string{"bulk-load", "-i", "-", "--batch", "-1"}, ExitUsage, []string{"--batch -1"}},
	} {
		res := r.run(c.stdin, c.args...)
		if res.code != c.code {
			t.Errorf("%s: exit %d, want %d: %+v", c.name, res.code, c.code, res)
		}
		for _, w := range c.want {
			if !strings.Contains(res.stderr, w) {
				t.Errorf("%s: stderr lacks %q: %s", c.name, w, res.stderr)
			}
		}
	}
}
