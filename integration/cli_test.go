package integration

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cli"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// cliSide is one service's database and its cqrs configuration file.
type cliSide struct {
	t   *testing.T
	db  *testenv.DB
	cfg string
}

type cliRun struct {
	code           int
	stdout, stderr string
}

func newCLISide(t *testing.T, db *testenv.DB, table, models string) *cliSide {
	t.Helper()
	createTable(t, db, table)
	s := &cliSide{t: t, db: db}
	s.cfg = s.config(models)
	if r := s.run("", "migrate"); r.code != cli.ExitOK {
		t.Fatalf("migrate: %+v", r)
	}
	return s
}

// config writes a configuration for this database with the given models.
func (s *cliSide) config(extra string) string {
	s.t.Helper()
	body := "database: {driver: " + string(s.db.Dialect.Name()) + ", dsn: '" + s.db.DSN + "'}\nlog: {level: error}\n" + extra
	p := filepath.Join(s.t.TempDir(), "cqrs.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

func (s *cliSide) run(stdin string, args ...string) cliRun {
	s.t.Helper()
	return s.runWith(s.cfg, stdin, args...)
}

func (s *cliSide) runWith(cfg, stdin string, args ...string) cliRun {
	s.t.Helper()
	var out, errb bytes.Buffer
	env := cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(stdin), Getenv: func(string) string { return "" }}
	code := cli.Cqrs(context.Background(), env, append(append([]string{}, args...), "--config", cfg))
	return cliRun{code, out.String(), errb.String()}
}

func (s *cliSide) exec(query string, args ...any) {
	s.t.Helper()
	if _, err := s.db.ExecContext(context.Background(), s.db.Dialect.Rebind(query), args...); err != nil {
		s.t.Fatalf("%s: %v", query, err)
	}
}

// wireRows reads a table in the wire format, one JSON object per row.
func (s *cliSide) wireRows(table string) []string {
	s.t.Helper()
	ctx := context.Background()
	reg := registry.New()
	if err := reg.RegisterMaster(registry.MasterModel{CQRSID: "reader", Table: table}); err != nil {
		s.t.Fatal(err)
	}
	m, err := master.New(ctx, s.db.DB, reg, master.WithLogger(quietLogger()))
	if err != nil {
		s.t.Fatal(err)
	}
	rows, err := m.Rows(ctx, s.db, "reader", nil)
	if err != nil {
		s.t.Fatal(err)
	}
	out := make([]string, len(rows))
	for i, r := range rows {
		b, err := r.MarshalJSON()
		if err != nil {
			s.t.Fatal(err)
		}
		out[i] = string(b)
	}
	return out
}

// dumpFixture returns a file of the wire fixtures' dumps directory.
func dumpFixture(t *testing.T, name string) string {
	t.Helper()
	return fixtures.ReadFile(t, filepath.Join("dumps", name))
}

var cliStamp = regexp.MustCompile(`^(\w+),[0-9][0-9 :.+-]+`)

func unstamped(s string) string { return cliStamp.ReplaceAllString(s, "$1,<now>") }

// The fixture's situation between a master and a replica of different
// databases (the fixture's master was SQLite, its replica PostgreSQL):
// both repair pipelines, with every stage run by the cqrs tool on the
// stream of its django-cqrs counterpart (and on the Go stages' own
// streams), bring the replica back to the master. The SYNCs go through the
// outbox, a relay, the memory transport and a consumer.
func TestCLIRepairPipelines(t *testing.T) {
	for _, rname := range testenv.Dialects {
		t.Run("replica_"+string(rname), func(t *testing.T) {
			t.Parallel()
			mdb, rdb := testenv.SQLite(t), testenv.Open(t, rname)
			m := newCLISide(t, mdb, "author", "models:\n  - {cqrs_id: author, role: master, table: author}\n")
			r := newCLISide(t, rdb, "author_ref", "queue: fixture_replica\nmodels:\n  - {cqrs_id: author, role: replica, table: author_ref}\n")
			dumpPath := fixtures.Path(t, "dumps", "cqrs_bulk_dump_author.stdout")
			dump := strings.Split(dumpFixture(t, "cqrs_bulk_dump_author.stdout"), "\n")[1:]

			// The situation: the master holds the dump's rows (loaded through a
			// replica model over the master table); the replica misses row 2,
			// has row 3 at revision 0 and still has row 6.
			loader := m.config("models:\n  - {cqrs_id: author, role: replica, table: author}\n")
			if res := m.runWith(loader, "", "bulk-load", "-i", dumpPath); res.code != cli.ExitOK {
				t.Fatalf("load master: %+v", res)
			}
			if res := r.run("", "bulk-load", "-i", dumpPath); res.code != cli.ExitOK {
				t.Fatalf("load replica: %+v", res)
			}
			frank := `{"cqrs_revision":0,"cqrs_updated":"2026-11-27 09:45:35.113892+00:00","id":6,"name":"Frank (deleted on master later)","birth_date":null,"rating":null,"active":true,"external_uuid":null,"payload":null,"created_at":null}`
			if res := r.run("author\n"+frank, "bulk-load", "-i", "-"); res.code != cli.ExitOK {
				t.Fatalf("load row 6: %+v", res)
			}
			r.exec("DELETE FROM author_ref WHERE id = ?", 2)
			r.exec("UPDATE author_ref SET name = ?, cqrs_revision = ? WHERE id = ?", "Carol", 0, 3)
			if got := m.wireRows("author"); strings.Join(got, "\n") != strings.Join(dump, "\n") {
				t.Fatalf("master rows:\n%s", strings.Join(got, "\n"))
			}

			// Revision diff. Go's diff-master equals django-cqrs's (but for the time).
			dm := m.run("", "diff-master", "--cqrs-id", "author")
			if unstamped(dm.stdout) != unstamped(dumpFixture(t, "cqrs_diff_master_author.stdout")) {
				t.Errorf("diff-master: %+v", dm)
			}
			// diff-replica on django-cqrs's and on Go's diff-master stream.
			dr := r.run(dumpFixture(t, "cqrs_diff_master_author.stdout"), "diff-replica")
			if dr.code != cli.ExitOK || dr.stdout != dumpFixture(t, "cqrs_diff_replica.stdout") {
				t.Errorf("diff-replica < django: %+v", dr)
			}
			if own := r.run(dm.stdout, "diff-replica"); unstamped(own.stdout) != unstamped(dr.stdout) {
				t.Errorf("diff-replica < go: %+v", own)
			}
			// diff-sync on django-cqrs's diff-replica stream; the relay publishes.
			ds := m.run(dumpFixture(t, "cqrs_diff_replica.stdout"), "diff-sync", "--no-publish")
			if ds.code != cli.ExitOK || ds.stdout != dumpFixture(t, "cqrs_diff_sync.stdout") {
				t.Fatalf("diff-sync: %+v", ds)
			}
			var topics []string
			if err := mdb.SelectContext(context.Background(), &topics, "SELECT topic FROM cqrs_outbox ORDER BY id"); err != nil {
				t.Fatal(err)
			}
			if strings.Join(topics, ",") != "cqrs.fixture_replica.author,cqrs.fixture_replica.author" {
				t.Errorf("outbox topics after diff-sync: %v", topics)
			}
			runRelayAndConsumer(t, mdb, rdb)
			testenv.WaitFor(t, 30*time.Second, "rows 2 and 3 resynced", func() bool {
				rows := r.wireRows("author_ref") // 1-6: row 6 is still there
				return len(rows) == 6 && rows[1] == dump[1] && rows[2] == dump[2]
			})

			// Deleted-rows diff (django-cqrs ran it before the resync, when
			// the replica still lacked row 2).
			ddr := r.run("", "deleted-diff-replica", "--cqrs-id", "author")
			if unstamped(ddr.stdout) != "author,<now>\n[1,2,3,4,5,6]\n" {
				t.Errorf("deleted-diff-replica: %+v", ddr)
			}
			ddm := m.run(dumpFixture(t, "cqrs_deleted_diff_replica_author.stdout"), "deleted-diff-master")
			if ddm.stdout != dumpFixture(t, "cqrs_deleted_diff_master.stdout") || ddm.stderr != dumpFixture(t, "cqrs_deleted_diff_master.stderr") {
				t.Errorf("deleted-diff-master < django: %+v", ddm)
			}
			if own := m.run(ddr.stdout, "deleted-diff-master"); unstamped(own.stdout) != unstamped(ddm.stdout) {
				t.Errorf("deleted-diff-master < go: %+v", own)
			}
			if res := r.run(dumpFixture(t, "cqrs_deleted_diff_master.stdout"), "deleted-sync-replica"); res.code != cli.ExitOK || res.stdout != "" || res.stderr != "" {
				t.Fatalf("deleted-sync-replica: %+v", res)
			}

			if got := r.wireRows("author_ref"); strings.Join(got, "\n") != strings.Join(dump, "\n") {
				t.Errorf("replica after both pipelines:\n got  %s\n want %s", strings.Join(got, "\n      "), strings.Join(dump, "\n      "))
			}
			// A bulk dump of the replica now reads like the master's.
			if rd := r.runWith(r.config("models:\n  - {cqrs_id: author, role: master, table: author_ref}\n"), "", "bulk-dump", "--cqrs-id", "author", "-o", "-"); rd.stdout != dumpFixture(t, "cqrs_bulk_dump_author.stdout") {
				t.Errorf("dump of the repaired replica: %+v", rd)
			}
		})
	}
}

// runRelayAndConsumer publishes the master's outbox through the memory
// transport to a consumer on the replica queue fixture_replica, until the
// test ends.
func runRelayAndConsumer(t *testing.T, mdb, rdb *testenv.DB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr, err := transports.New(ctx, transports.Config{Transport: "memory"}.WithDefaults(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	if err := reg.RegisterReplica(registry.ReplicaModel{CQRSID: "author", Table: "author_ref"}); err != nil {
		t.Fatal(err)
	}
	eng, err := replica.NewEngine(ctx, rdb.DB, rdb.Dialect, reg, replica.Options{Queue: "fixture_replica", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := consumer.New(tr, reg, eng, consumer.Options{Queue: "fixture_replica", RetryDelay: 10 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := outbox.NewRelay(mdb.DB, mustSQLite(t, mdb), tr.Publisher(), outbox.RelayOptions{
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { _ = c.Run(ctx); done <- struct{}{} }()
	select {
	case <-c.Running():
	case <-time.After(30 * time.Second):
		t.Fatal("consumer did not start")
	}
	go func() { _ = relay.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		for i := 0; i < 2; i++ {
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("relay or consumer did not stop")
			}
		}
		tr.Close()
	})
}

func mustSQLite(t *testing.T, db *testenv.DB) dialect.Dialect {
	t.Helper()
	if db.Dialect.Name() != dialect.SQLite {
		t.Fatalf("master is %s, want sqlite", db.Dialect)
	}
	return db.Dialect
}
