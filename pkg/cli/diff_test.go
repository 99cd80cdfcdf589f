package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// Each stage of the revision diff reads its django-cqrs counterpart's
// fixture stream and writes the stream django-cqrs wrote.
func TestDiffStagesMatchDjango(t *testing.T) {
	eachDB(t, func(t *testing.T, m, r *side) {
		situation(t, m, r)

		res := m.run("", "diff-master", "--cqrs-id", "author")
		if res.code != ExitOK || res.stderr != "" {
			t.Fatalf("diff-master: %+v", res)
		}
		if want := fixture(t, "cqrs_diff_master_author.stdout"); unstamp(res.stdout) != unstamp(want) {
			t.Errorf("diff-master:\n got  %q\n want %q", res.stdout, want)
		}
		res = m.run("", "diff-master", "-cid", "author", "--batch=2")
		if want := fixture(t, "cqrs_diff_master_author_batch2.stdout"); res.code != ExitOK || unstamp(res.stdout) != unstamp(want) {
			t.Errorf("diff-master --batch=2: %+v\n want %q", res, want)
		}
		res = m.run("", "diff-master", "--cqrs-id=author", `-f={"id": 999}`)
		if res.code != ExitOK || res.stdout != "" || res.stderr != fixture(t, "cqrs_diff_master_author_nomatch.stderr") {
			t.Errorf("diff-master -f no match: %+v", res)
		}

		// diff-replica copies the input's time, so the output is exact.
		for _, c := range []struct{ in, out string }{
			{"cqrs_diff_master_author.stdout", "cqrs_diff_replica"},
			{"cqrs_diff_master_author_batch2.stdout", "cqrs_diff_replica_batch2"},
		} {
			res = r.run(fixture(t, c.in), "diff-replica")
			if res.code != ExitOK || res.stdout != fixture(t, c.out+".stdout") || res.stderr != fixture(t, c.out+".stderr") {
				t.Errorf("diff-replica < %s: %+v\n want %q / %q", c.in, res, fixture(t, c.out+".stdout"), fixture(t, c.out+".stderr"))
			}
		}
	})
}

// The Go stages chained, revision diff then deleted-rows diff, repair the
// replica of the situation until it equals the master.
func TestDiffPipelinesRepairReplica(t *testing.T) {
	eachDB(t, func(t *testing.T, m, r *side) {
		situation(t, m, r)
		ctx, mem := memoryTransport(t)

		dm := m.run("", "diff-master", "--cqrs-id", "author", "-b", "3")
		dr := r.run(dm.stdout, "diff-replica")
		if dr.code != ExitOK || !strings.HasSuffix(dr.stdout, ",fixture_replica\n[2,3]\n") {
			t.Fatalf("diff-replica: %+v", dr)
		}
		ds := m.runCtx(ctx, dr.stdout, "diff-sync")
		if ds.code != ExitOK || ds.stdout != "Done!\n2 instance(s) synced.\n2 instance(s) processed.\n" {
			t.Fatalf("diff-sync: %+v", ds)
		}
		if n := m.outboxCount(); n != 0 {
			t.Errorf("outbox holds %d rows after diff-sync", n)
		}
		applyPublished(t, r, mem, "cqrs.fixture_replica.author", 2)

		ddr := r.run("", "deleted-diff-replica", "--cqrs-id", "author")
		ddm := m.run(ddr.stdout, "deleted-diff-master")
		if ddm.code != ExitOK || !strings.HasSuffix(ddm.stdout, "\n[6]\n") || ddm.stderr != "PK to delete: [6]\n" {
			t.Fatalf("deleted-diff-master: %+v", ddm)
		}
		if res := r.run(ddm.stdout, "deleted-sync-replica"); res.code != ExitOK || res.stdout != "" || res.stderr != "" {
			t.Fatalf("deleted-sync-replica: %+v", res)
		}
		equalLines(t, "replica after repair", r.rows("author_ref"), m.rows("author"))
		equalLines(t, "replica after repair vs django-cqrs", r.rows("author_ref"), situationRows(t, "replica_rows_after_diff_sync_and_deleted_sync"))

		// A second round finds nothing.
		dr = r.run(m.run("", "diff-master", "--cqrs-id", "author").stdout, "diff-replica")
		if lines := strings.Split(strings.TrimSpace(dr.stdout), "\n"); len(lines) != 1 || dr.stderr != "" {
			t.Errorf("second diff-replica: %+v", dr)
		}
	})
}

// applyPublished applies the messages published on topic to the replica,
// as its consumer would, and checks there were want of them.
func applyPublished(t *testing.T, r *side, mem *transports.Memory, topic string, want int) {
	t.Helper()
	msgs := mem.Peek(topic)
	if len(msgs) != want {
		t.Fatalf("%d message(s) on %s, want %d", len(msgs), topic, want)
	}
	de, err := loadDataEnv(Env{Stderr: &strings.Builder{}, Getenv: func(string) string { return "" }}, r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer de.Close()
	ctx := context.Background()
	if err := de.open(ctx); err != nil {
		t.Fatal(err)
	}
	eng, err := de.newEngine(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range msgs {
		p, err := wire.Decode(msg.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.Apply(ctx, replica.Delivery{Payload: p, Direct: strings.HasPrefix(topic, "cqrs.")}); err != nil {
			t.Fatalf("apply %s: %v", msg.Payload, err)
		}
	}
}

func TestDiffMasterSkipsNonSyncInstances(t *testing.T) {
	db := testenv.SQLite(t)
	reg := registry.New()
	if err := reg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author",
		IsSyncInstance: func(row *wire.Fields) bool { v, _ := row.Get("active"); return v == true }}); err != nil {
		t.Fatal(err)
	}
	m := newSide(t, db, "author", "")
	loadMasterFixture(t, m)
	var out, errb strings.Builder
	env := Env{Registry: reg, Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
	if code := Cqrs(context.Background(), env, []string{"diff-master", "--cqrs-id", "author", "--config", m.cfg}); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	// Row 2 (Bob) is inactive.
	if got := unstamp(out.String()); got != "author,<now>\n[[1,0],[3,1],[4,0],[5,0]]\n" {
		t.Errorf("diff-master = %q", got)
	}
}

func TestDiffStreamErrors(t *testing.T) {
	m := newMasterSide(t, testenv.SQLite(t))
	r := newReplicaSide(t, testenv.SQLite(t))
	loadMasterFixture(t, m)
	for _, c := range []struct {
		name  string
		s     *side
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"diff-replica empty input", r, "", []string{"diff-replica"}, ExitFailure, "stdin line 1: empty input"},
		{"diff-replica unknown model", r, "book,2026-01-01 00:00:00+00:00\n", []string{"diff-replica"}, ExitFailure, `stdin line 1: no replica model with cqrs_id "book"`},
		{"diff-replica bad json", r, "author,x\n[[1,0]\n", []string{"diff-replica"}, ExitFailure, "stdin line 2"},
		{"diff-replica not pairs", r, "author,x\n[1,2]\n", []string{"diff-replica"}, ExitFailure, "stdin line 2: item 0: want a [pk, cqrs_revision] pair"},
		{"diff-replica bad pk", r, "author,x\n[[1,0]]\n[[\"a\",0]]\n", []string{"diff-replica"}, ExitFailure, "stdin line 3: item 0: primary key \"a\" is not an integer"},
		{"diff-replica argument", r, "", []string{"diff-replica", "extra"}, ExitUsage, `unexpected argument "extra"`},
		{"diff-master no id", m, "", []string{"diff-master"}, ExitUsage, "--cqrs-id is required"},
		{"diff-master bad filter", m, "", []string{"diff-master", "--cqrs-id", "author", "-f", `{"nmae": 1}`}, ExitUsage, `--filter: key "nmae"`},
		{"diff-sync bad queue", m, "author,x,bad queue\n[1]\n", []string{"diff-sync"}, ExitFailure, `stdin line 1: queue "bad queue"`},
		{"diff-sync master unknown", m, "book,x,q\n[1]\n", []string{"diff-sync"}, ExitFailure, `no master model with cqrs_id "book"`},
	} {
		res := c.s.run(c.stdin, c.args...)
		if res.code != c.code || !strings.Contains(res.stderr, c.want) {
			t.Errorf("%s: exit %d (want %d), stderr %q lacks %q", c.name, res.code, c.code, res.stderr, c.want)
		}
	}
}
