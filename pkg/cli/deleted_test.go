package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

// Each stage of the deleted-rows diff reads its django-cqrs counterpart's
// fixture stream and writes the stream django-cqrs wrote.
func TestDeletedStagesMatchDjango(t *testing.T) {
	eachDB(t, func(t *testing.T, m, r *side) {
		situation(t, m, r)

		for _, c := range []struct {
			args []string
			out  string
		}{
			{[]string{"deleted-diff-replica", "--cqrs-id", "author"}, "cqrs_deleted_diff_replica_author"},
			{[]string{"deleted-diff-replica", "-cid=author", "--batch=2"}, "cqrs_deleted_diff_replica_author_batch2"},
		} {
			res := r.run("", c.args...)
			if res.code != ExitOK || unstamp(res.stdout) != unstamp(fixture(t, c.out+".stdout")) || res.stderr != fixture(t, c.out+".stderr") {
				t.Errorf("%v: %+v\n want %q", c.args, res, fixture(t, c.out+".stdout"))
			}
		}
		res := r.run("", "deleted-diff-replica", "--cqrs-id", "author", "-f", `{"id__gt": 100}`)
		if res.code != ExitOK || res.stdout != "" || res.stderr != "No objects found for filter!\n" {
			t.Errorf("deleted-diff-replica, no match: %+v", res)
		}

		// deleted-diff-master echoes the input's first line: exact output.
		for _, c := range []struct{ in, out string }{
			{"cqrs_deleted_diff_replica_author.stdout", "cqrs_deleted_diff_master"},
			{"cqrs_deleted_diff_replica_author_batch2.stdout", "cqrs_deleted_diff_master_batch2"},
		} {
			res := m.run(fixture(t, c.in), "deleted-diff-master")
			if res.code != ExitOK || res.stdout != fixture(t, c.out+".stdout") || res.stderr != fixture(t, c.out+".stderr") {
				t.Errorf("deleted-diff-master < %s: %+v", c.in, res)
			}
		}

		res = r.run(fixture(t, "cqrs_deleted_diff_master.stdout"), "deleted-sync-replica")
		if res.code != ExitOK || res.stdout != fixture(t, "cqrs_deleted_sync_replica.stdout") || res.stderr != fixture(t, "cqrs_deleted_sync_replica.stderr") {
			t.Errorf("deleted-sync-replica: %+v", res)
		}
		rows := r.rows("author_ref")
		if len(rows) != 4 || strings.Contains(strings.Join(rows, ""), `"id":6`) {
			t.Errorf("replica after deleted-sync-replica: %v", rows)
		}
		// The deletion left a tombstone: a late SAVE of row 6 stays out.
		res = r.run("author\n"+frankLine, "bulk-load", "-i", "-")
		if !strings.Contains(res.stderr, "tombstone") || len(r.rows("author_ref")) != 4 {
			t.Errorf("late row 6: %+v", res)
		}
	})
}

// With replica.django_compat there are no tombstones, as in django-cqrs.
func TestDeletedSyncReplicaDjangoCompat(t *testing.T) {
	db := testenv.SQLite(t)
	r := newSide(t, db, "author_ref", "queue: q\nreplica: {django_compat: true}\nmodels:\n  - {cqrs_id: author, role: replica, table: author_ref}\n")
	if res := r.run("author\n"+frankLine, "bulk-load", "-i", "-"); res.code != ExitOK {
		t.Fatal(res)
	}
	if res := r.run("author,x\n[6, 7]\n\n", "deleted-sync-replica"); res.code != ExitOK || res.stderr != "" {
		t.Fatalf("deleted-sync-replica: %+v", res)
	}
	if rows := r.rows("author_ref"); len(rows) != 0 {
		t.Errorf("rows: %v", rows)
	}
	var n int // migrate makes no tombstone table with django_compat
	if err := db.QueryRowxContext(context.Background(), "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE '%tombstone%'").Scan(&n); err != nil || n != 0 {
		t.Errorf("tombstone tables: %d (%v)", n, err)
	}
	if res := r.run("author\n"+frankLine, "bulk-load", "-i", "-"); res.code != ExitOK || len(r.rows("author_ref")) != 1 {
		t.Errorf("row 6 does not come back: %+v", res)
	}
}

func TestDeletedStreamErrors(t *testing.T) {
	m := newMasterSide(t, testenv.SQLite(t))
	r := newReplicaSide(t, testenv.SQLite(t))
	for _, c := range []struct {
		name  string
		s     *side
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"deleted-diff-master not a list", m, "author,x\n{\"id\": 1}\n", []string{"deleted-diff-master"}, ExitFailure, "stdin line 2: want a JSON list of primary keys"},
		{"deleted-diff-master unknown", m, "ghost,x\n[1]\n", []string{"deleted-diff-master"}, ExitFailure, `stdin line 1: no master model with cqrs_id "ghost"`},
		{"deleted-sync-replica bad pk", r, "author,x\n[1, true]\n", []string{"deleted-sync-replica"}, ExitFailure, "stdin line 2: item 1: primary key true is not an integer"},
		{"deleted-diff-replica no id", r, "", []string{"deleted-diff-replica"}, ExitUsage, "--cqrs-id is required"},
		{"deleted-diff-replica master id", r, "", []string{"deleted-diff-replica", "--cqrs-id", "book"}, ExitUsage, `--cqrs-id: no replica model with cqrs_id "book" (known: author)`},
		{"deleted-diff-replica bad lookup", r, "", []string{"deleted-diff-replica", "--cqrs-id", "author", "-f", `{"name__icontains": "a"}`}, ExitUsage, `--filter: key "name__icontains": lookup "icontains" is not supported`},
	} {
		res := c.s.run(c.stdin, c.args...)
		if res.code != c.code || !strings.Contains(res.stderr, c.want) {
			t.Errorf("%s: exit %d (want %d), stderr %q lacks %q", c.name, res.code, c.code, res.stderr, c.want)
		}
	}
}
