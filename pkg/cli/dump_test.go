package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

// Loading django-cqrs's dump into a master table and dumping it again gives
// django-cqrs's bytes back, on every database.
func TestDumpReproducesDjangoDump(t *testing.T) {
	eachDB(t, func(t *testing.T, m, _ *side) {
		loadMasterFixture(t, m)
		r := m.run("", "bulk-dump", "--cqrs-id", "author", "-o", "-")
		if r.code != ExitOK {
			t.Fatalf("bulk-dump: %+v", r)
		}
		if want := fixture(t, "cqrs_bulk_dump_author.stdout"); r.stdout != want {
			t.Errorf("dump differs from django-cqrs's:\n got  %q\n want %q", r.stdout, want)
		}
		if want := fixture(t, "cqrs_bulk_dump_author.stderr"); r.stderr != want {
			t.Errorf("stderr = %q, want %q", r.stderr, want)
		}
		// Batches do not change the stream.
		if r2 := m.run("", "bulk-dump", "-c", "author", "-o", "-", "-b", "2"); r2.stdout != r.stdout || r2.code != ExitOK {
			t.Errorf("--batch 2: %+v", r2)
		}
	})
}

// dump → load into an empty replica → the replica equals the master.
func TestDumpLoadRoundTrip(t *testing.T) {
	eachDB(t, func(t *testing.T, m, r *side) {
		loadMasterFixture(t, m)
		m.exec("UPDATE author SET cqrs_revision = ?, name = ? WHERE id = ?", 7, "Alice \u00e9", 1)
		file := filepath.Join(t.TempDir(), "author.dump")
		if res := m.run("", "bulk-dump", "--cqrs-id", "author", "--output", file, "--batch", "2"); res.code != ExitOK {
			t.Fatalf("bulk-dump: %+v", res)
		}
		res := r.run("", "bulk-load", "--input", file, "--batch", "2")
		if res.code != ExitOK || res.stderr != "Done!\n5 instance(s) loaded.\n" {
			t.Fatalf("bulk-load: %+v", res)
		}
		equalLines(t, "replica after load", r.rows("author_ref"), m.rows("author"))
	})
}

func TestDumpOutputFile(t *testing.T) {
	m := newMasterSide(t, testenv.SQLite(t))
	loadMasterFixture(t, m)
	file := filepath.Join(t.TempDir(), "out.dump")
	if err := os.WriteFile(file, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := m.run("", "bulk-dump", "--cqrs-id", "author", "-o", file)
	if r.code != ExitFailure || !strings.Contains(r.stderr, "--output "+file) || !strings.Contains(r.stderr, "--force") {
		t.Errorf("existing file: %+v", r)
	}
	if b, _ := os.ReadFile(file); string(b) != "old" {
		t.Errorf("existing file changed: %q", b)
	}
	r = m.run("", "bulk-dump", "--cqrs-id", "author", "-o", file, "--force")
	if r.code != ExitOK || r.stdout != "" {
		t.Fatalf("--force: %+v", r)
	}
	if b, _ := os.ReadFile(file); string(b) != fixture(t, "cqrs_bulk_dump_author.stdout") {
		t.Errorf("dump file: %q", b)
	}
	entries, _ := os.ReadDir(filepath.Dir(file))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestDumpEmptyTableAndErrors(t *testing.T) {
	m := newMasterSide(t, testenv.SQLite(t))
	r := m.run("", "bulk-dump", "--cqrs-id", "author", "-o", "-")
	if r.code != ExitOK || r.stdout != "author" || r.stderr != "Done!\n0 instance(s) saved.\n0 instance(s) processed.\n" {
		t.Errorf("empty table: %+v", r)
	}
	if r := m.run("", "bulk-dump", "-o", "-"); r.code != ExitUsage || !strings.Contains(r.stderr, "--cqrs-id is required") {
		t.Errorf("no --cqrs-id: %+v", r)
	}
	if r := m.run("", "bulk-dump", "--cqrs-id", "ghost", "-o", "-"); r.code != ExitUsage || !strings.Contains(r.stderr, `"ghost"`) || !strings.Contains(r.stderr, "known: author") {
		t.Errorf("unknown cqrs_id: %+v", r)
	}
	if r := m.run("", "bulk-dump", "--cqrs-id", "author", "-b", "0"); r.code != ExitUsage || !strings.Contains(r.stderr, "--batch 0") {
		t.Errorf("--batch 0: %+v", r)
	}
}
