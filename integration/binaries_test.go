package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// The tests in this file run the built `cqrs` and `cqrs-consume` binaries
// as an operator does (see binaries_helpers_test.go).

// stopTimeout is how long a SIGTERM may take: cqrs-consume runs with
// --shutdown-timeout 10s and must be done before this.
const stopTimeout = 20 * time.Second

// migrated creates the author table of a side and runs `cqrs migrate`.
func (s *binSide) migrated(table string) *binSide {
	s.t.Helper()
	createTable(s.t, s.db, table)
	r := s.mustCqrs("", "migrate")
	if want := fmt.Sprintf("migrated %s database: outbox and tombstone tables are up to date\n", s.db.Dialect); r.stdout != want {
		s.t.Errorf("cqrs migrate: stdout %q, want %q", r.stdout, want)
	}
	return s
}

// fixtureLines returns the dump fixture's data lines (without the cqrs_id line).
func fixtureLines(t *testing.T) []string {
	return strings.Split(dumpFixture(t, "cqrs_bulk_dump_author.stdout"), "\n")[1:]
}

// checkWireRows compares a table, read in the wire format, with want.
func checkWireRows(t *testing.T, db *testenv.DB, table string, want []string) {
	t.Helper()
	got := (&cliSide{t: t, db: db}).wireRows(table)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s on %s:\n got  %s\n want %s", table, db.Dialect, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}
}

// checkSituationRows compares a PostgreSQL replica with rows recorded in
// situation.json (psql's text form, UTC).
func checkSituationRows(t *testing.T, db *testenv.DB, what string, want []map[string]*string) {
	t.Helper()
	if db.Dialect.Name() != dialect.Postgres {
		return // situation.json records a PostgreSQL replica
	}
	if got := pgTextRows(t, db, "author_ref"); !reflect.DeepEqual(got, want) {
		t.Errorf("replica rows differ from situation.json's %s:\n got %s\n want %s", what, showTextRows(got), showTextRows(want))
	}
}

// authorWriter writes a stream of transactions through the Go master API,
// as the master service does: creates, updates (some twice in one
// transaction), deletes, and rolled-back transactions.
type authorWriter struct {
	m         *master.Master
	db        *testenv.DB
	rng       *rand.Rand
	next      int
	live      []int
	committed atomic.Int64
}

func newAuthorWriter(t *testing.T, db *testenv.DB, seed uint64) *authorWriter {
	t.Helper()
	reg := registry.New()
	if err := reg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author", TrackedFields: []string{"name"}}); err != nil {
		t.Fatal(err)
	}
	m, err := master.New(context.Background(), db.DB, reg, master.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	return &authorWriter{m: m, db: db, rng: rand.New(rand.NewPCG(seed, 1)), next: 1}
}

// step runs one transaction of one to three changes; one in eight is
// rolled back.
func (w *authorWriter) step(ctx context.Context) error {
	tx, err := w.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	var created []int
	deleted := map[int]bool{}
	for k := 0; k < 1+w.rng.IntN(3); k++ {
		switch op := w.rng.IntN(10); {
		case op < 5 || len(w.live) == 0:
			id := w.next
			w.next++
			if _, err := w.m.Insert(ctx, tx, "author", authorValues(w.rng, id)); err != nil {
				_ = tx.Rollback()
				return fmt.Errorf("insert %d: %w", id, err)
			}
			created = append(created, id)
		case op < 8:
			id := w.live[w.rng.IntN(len(w.live))]
			if deleted[id] {
				continue
			}
			v := authorValues(w.rng, id)
			delete(v, "id")
			if err := w.m.Update(ctx, tx, "author", id, v); err != nil {
				_ = tx.Rollback()
				return fmt.Errorf("update %d: %w", id, err)
			}
		default:
			id := w.live[w.rng.IntN(len(w.live))]
			if deleted[id] {
				continue
			}
			if err := w.m.Delete(ctx, tx, "author", id); err != nil {
				_ = tx.Rollback()
				return fmt.Errorf("delete %d: %w", id, err)
			}
			deleted[id] = true
		}
	}
	if w.rng.IntN(8) == 0 {
		return tx.Rollback()
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	w.committed.Add(1)
	for _, id := range w.live {
		if !deleted[id] {
			created = append(created, id)
		}
	}
	w.live = created
	return nil
}

// write runs n transactions.
func (w *authorWriter) write(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := w.step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// A master written through the Go API is dumped with `cqrs bulk-dump` and
// loaded into an empty replica of the other database with `cqrs bulk-load`
// (through an OS pipe, or a file): the replica then equals the master row
// by row. django-cqrs's dump loads into an empty replica as the rows
// situation.json recorded after django-cqrs's own cqrs_bulk_load.
func TestBinariesBulkDumpLoad(t *testing.T) {
	t.Parallel()
	dumped := func(t *testing.T, mdb, rdb *testenv.DB) (m, r *binSide, rows int) {
		m = newBinSide(t, mdb, "master.yaml", nil).migrated("author")
		r = newBinSide(t, rdb, "replica.yaml", nil).migrated("author_ref")
		w := newAuthorWriter(t, mdb, 11)
		w.write(t, 120)
		if err := mdb.GetContext(context.Background(), &rows, "SELECT COUNT(*) FROM author"); err != nil {
			t.Fatal(err)
		}
		if rows < 50 {
			t.Fatalf("the master has only %d rows", rows)
		}
		return m, r, rows
	}
	summaries := func(t *testing.T, dump, load binResult, rows int) {
		t.Helper()
		if dump.code != 0 || load.code != 0 {
			t.Fatalf("bulk-dump:\n%s\nbulk-load:\n%s", dump, load)
		}
		if want := fmt.Sprintf("Done!\n%d instance(s) saved.\n%d instance(s) processed.\n", rows, rows); dump.stderr != want {
			t.Errorf("bulk-dump stderr %q, want %q", dump.stderr, want)
		}
		if want := fmt.Sprintf("Done!\n%d instance(s) loaded.\n", rows); load.stderr != want || load.stdout != "" {
			t.Errorf("bulk-load: %s\nwant stderr %q and no stdout", load, want)
		}
	}

	t.Run("postgres_to_sqlite_through_a_pipe", func(t *testing.T) {
		t.Parallel()
		mdb, rdb := testenv.Postgres(t), testenv.SQLite(t)
		m, r, rows := dumped(t, mdb, rdb)
		res := runPipe(t,
			binStage{m, []string{"bulk-dump", "--cqrs-id", "author", "-o", "-"}},
			binStage{r, []string{"bulk-load", "-i", "-"}})
		summaries(t, res[0], res[1], rows)
		if lines := strings.Split(res[0].stdout, "\n"); lines[0] != "author" || len(lines) != rows+1 {
			t.Errorf("the dump has %d lines starting with %q; want the cqrs_id line and %d rows", len(lines), lines[0], rows)
		}
		if d := replicaDiff(t, mdb, rdb); d != "" {
			t.Error(d)
		}
	})

	t.Run("sqlite_to_postgres_through_a_file", func(t *testing.T) {
		t.Parallel()
		mdb, rdb := testenv.SQLite(t), testenv.Postgres(t)
		m, r, rows := dumped(t, mdb, rdb)
		file := filepath.Join(t.TempDir(), "author.dump")
		dump := m.cqrs("", "bulk-dump", "--cqrs-id", "author", "-o", file)
		load := r.cqrs("", "bulk-load", "-i", file)
		summaries(t, dump, load, rows)
		if d := replicaDiff(t, mdb, rdb); d != "" {
			t.Error(d)
		}
		// An existing dump file is not overwritten without --force.
		again := m.cqrs("", "bulk-dump", "--cqrs-id", "author", "-o", file)
		if again.code != 1 || !strings.Contains(again.stderr, "the file exists") {
			t.Errorf("bulk-dump over an existing file: %s", again)
		}
	})

	for _, name := range []dialect.Name{dialect.Postgres, dialect.SQLite} {
		t.Run("django_dump_into_"+string(name), func(t *testing.T) {
			t.Parallel()
			rdb := testenv.Open(t, name)
			r := newBinSide(t, rdb, "replica.yaml", nil).migrated("author_ref")
			load := r.cqrs("", "bulk-load", "-i", filepath.Join(testenv.FixturesDir(t), "dumps", "cqrs_bulk_dump_author.stdout"))
			if load.code != 0 || load.stdout != dumpFixture(t, "cqrs_bulk_load_author.stdout") || load.stderr != dumpFixture(t, "cqrs_bulk_load_author.stderr") {
				t.Fatalf("bulk-load of django-cqrs's dump: %s", load)
			}
			checkSituationRows(t, rdb, "replica_rows_after_bulk_load", loadSituation(t).ReplicaAfterBulkLoad)
			checkWireRows(t, rdb, "author_ref", fixtureLines(t))
		})
	}
}

// repairSetup recreates situation.json between a master and a replica: the
// master holds rows 1-5 of the dump (row 6 deleted on the master without a
// message), the replica misses row 2, has row 3 at revision 0 with the old
// name, and still has row 6. Every step runs the binaries but the two SQL
// statements that break the replica.
func repairSetup(t *testing.T, mdb, rdb *testenv.DB, amqpURL string) (m, r *binSide) {
	t.Helper()
	m = newBinSide(t, mdb, "master.yaml", nil)
	r = newBinSide(t, rdb, "replica.yaml", nil)
	m.env["CQRS_URL"], r.env["CQRS_URL"] = amqpURL, amqpURL
	r.env["CQRS_QUEUE"] = "fixture_replica" // the queue django-cqrs's diff-replica stream names
	m.migrated("author")
	r.migrated("author_ref")

	dumpPath := filepath.Join(testenv.FixturesDir(t), "dumps", "cqrs_bulk_dump_author.stdout")
	// The master's rows: the dump, loaded through a replica model over the
	// master table (a configuration derived from the replica example).
	loader := newBinSide(t, mdb, "replica.yaml", func(s string) string {
		return strings.Replace(s, "table: author_ref", "table: author", 1)
	})
	loader.mustCqrs("", "bulk-load", "-i", dumpPath)
	r.mustCqrs("", "bulk-load", "-i", dumpPath)
	frank := `{"cqrs_revision":0,"cqrs_updated":"2026-11-27 09:45:35.113892+00:00","id":6,"name":"Frank (deleted on master later)","birth_date":null,"rating":null,"active":true,"external_uuid":null,"payload":null,"created_at":null}`
	r.mustCqrs("author\n"+frank, "bulk-load", "-i", "-")
	ctx := context.Background()
	for _, q := range []string{"DELETE FROM author_ref WHERE id = 2", "UPDATE author_ref SET name = 'Carol', cqrs_revision = 0 WHERE id = 3"} {
		if _, err := rdb.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	checkWireRows(t, mdb, "author", fixtureLines(t))
	checkSituationRows(t, rdb, "replica_rows_after_situation", loadSituation(t).ReplicaAfterSituation)
	return m, r
}

// The situation of situation.json (a missing row, a stale row, a row
// deleted on the master) is repaired by the two pipelines, run as the
// binaries with the SYNCs going over RabbitMQ to a running cqrs-consume:
// once with every stage reading the recorded stream of its django-cqrs
// counterpart, once with the Go stages piped into each other. Every
// stage's output is django-cqrs's (but for the time stamps).
func TestBinariesRepairPipelines(t *testing.T) {
	t.Parallel()
	dbs := []struct{ master, replica dialect.Name }{
		{dialect.SQLite, dialect.Postgres}, // as the fixture was recorded
		{dialect.Postgres, dialect.SQLite},
	}
	for _, piped := range []bool{false, true} {
		for _, d := range dbs {
			name := fmt.Sprintf("%s_master_%s_replica", d.master, d.replica)
			if piped {
				name = "piped/" + name
			} else {
				name = "django_streams/" + name
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				amqpURL, amqpPassword := rabbitVhost(t)
				mdb, rdb := testenv.Open(t, d.master), testenv.Open(t, d.replica)
				m, r := repairSetup(t, mdb, rdb, amqpURL)
				consume := r.start("cqrs-consume", "-w", "2", "--shutdown-timeout", "10s")
				waitConsumers(t, amqpURL, "fixture_replica", 2, consume)
				var outputs []binResult
				if piped {
					outputs = repairPiped(t, m, r)
				} else {
					outputs = repairWithDjangoStreams(t, m, r)
				}

				last := ""
				defer func() {
					if last != "" {
						t.Log("last difference: " + last)
					}
				}()
				testenv.WaitFor(t, 30*time.Second, "the replica to equal the master", func() bool {
					last = replicaDiff(t, mdb, rdb)
					return last == ""
				})
				checkWireRows(t, rdb, "author_ref", fixtureLines(t))
				checkSituationRows(t, rdb, "replica_rows_after_diff_sync_and_deleted_sync", loadSituation(t).ReplicaAfterRepair)
				// Nothing is left to repair.
				again := runPipe(t,
					binStage{m, []string{"diff-master", "--cqrs-id", "author"}},
					binStage{r, []string{"diff-replica"}})
				if again[1].code != 0 || strings.Count(again[1].stdout, "\n") != 1 || again[1].stderr != "" {
					t.Errorf("diff-replica after the repair: %s", again[1])
				}

				if code := consume.stop(syscall.SIGTERM, stopTimeout); code != 0 {
					t.Errorf("cqrs-consume exited with %d after SIGTERM:\n%s", code, consume.stderr)
				}
				logs := consume.stderr.String()
				for _, pk := range []string{"2", "3"} {
					if !strings.Contains(logs, `msg="CQRS is applied" queue=fixture_replica cqrs_id=author signal_type=SYNC pk=`+pk+" ") {
						t.Errorf("cqrs-consume did not log applying the SYNC of pk %s:\n%s", pk, logs)
					}
				}
				noSecrets(t, "cqrs-consume", logs, amqpPassword, dbPassword)
				noErrors(t, "cqrs-consume", logs)
				for _, o := range outputs {
					noSecrets(t, "a pipeline stage", o.stdout+o.stderr, amqpPassword, dbPassword)
				}
			})
		}
	}
}

// unstampedFixture is a fixture stream with its time stamp masked.
func unstampedFixture(t *testing.T, name string) string { return unstamped(dumpFixture(t, name)) }

// repairWithDjangoStreams runs every stage on the stream django-cqrs's
// counterpart of the stage before it recorded.
func repairWithDjangoStreams(t *testing.T, m, r *binSide) []binResult {
	t.Helper()
	type stage struct {
		side               *binSide
		stdin              string // fixture file read on stdin
		args               []string
		stdout, stderr     string // fixture files the output must equal
		stamped, publishes bool   // stdout has a time stamp; the stage publishes (stderr says how many)
	}
	stages := []stage{
		{side: m, args: []string{"diff-master", "--cqrs-id", "author"}, stdout: "cqrs_diff_master_author.stdout", stderr: "cqrs_diff_master_author.stderr", stamped: true},
		{side: r, stdin: "cqrs_diff_master_author.stdout", args: []string{"diff-replica"}, stdout: "cqrs_diff_replica.stdout", stderr: "cqrs_diff_replica.stderr"},
		{side: r, args: []string{"deleted-diff-replica", "--cqrs-id", "author"}, stdout: "cqrs_deleted_diff_replica_author.stdout", stderr: "cqrs_deleted_diff_replica_author.stderr", stamped: true},
		{side: m, stdin: "cqrs_deleted_diff_replica_author.stdout", args: []string{"deleted-diff-master"}, stdout: "cqrs_deleted_diff_master.stdout", stderr: "cqrs_deleted_diff_master.stderr"},
		{side: r, stdin: "cqrs_deleted_diff_master.stdout", args: []string{"deleted-sync-replica"}, stdout: "cqrs_deleted_sync_replica.stdout", stderr: "cqrs_deleted_sync_replica.stderr"},
		// django-cqrs logs each publish; gocqrs says how many it published.
		{side: m, stdin: "cqrs_diff_replica.stdout", args: []string{"diff-sync"}, stdout: "cqrs_diff_sync.stdout", publishes: true},
	}
	var outs []binResult
	for _, s := range stages {
		in := ""
		if s.stdin != "" {
			in = dumpFixture(t, s.stdin)
		}
		res := s.side.cqrs(in, s.args...)
		outs = append(outs, res)
		what := "cqrs " + strings.Join(s.args, " ")
		if s.stdin != "" {
			what += " < " + s.stdin
		}
		stdout := res.stdout
		want := dumpFixture(t, s.stdout)
		if s.stamped {
			stdout, want = unstamped(stdout), unstamped(want)
		}
		switch {
		case res.code != 0:
			t.Errorf("%s: %s", what, res)
		case stdout != want:
			t.Errorf("%s: stdout %q, want django-cqrs's %q", what, res.stdout, want)
		case s.publishes && !strings.Contains(res.stderr, "2 message(s) published.\n"):
			t.Errorf("%s: stderr does not report 2 published messages:\n%s", what, res.stderr)
		case !s.publishes && res.stderr != dumpFixture(t, s.stderr):
			t.Errorf("%s: stderr %q, want django-cqrs's %q", what, res.stderr, dumpFixture(t, s.stderr))
		}
	}
	return outs
}

// djangoHeader is the first line of a diff stream as django-cqrs writes it.
var djangoHeader = regexp.MustCompile(`^author,\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?\+00:00\n`)

// repairPiped runs the two pipelines as an operator types them:
//
//	cqrs deleted-diff-replica --cqrs-id author | cqrs deleted-diff-master | cqrs deleted-sync-replica
//	cqrs diff-master --cqrs-id author | cqrs diff-replica | cqrs diff-sync
//
// (deleted rows first, so that the streams are the ones django-cqrs
// recorded, whose deleted-rows diff ran before the resync).
func repairPiped(t *testing.T, m, r *binSide) []binResult {
	t.Helper()
	del := runPipe(t,
		binStage{r, []string{"deleted-diff-replica", "--cqrs-id", "author"}},
		binStage{m, []string{"deleted-diff-master"}},
		binStage{r, []string{"deleted-sync-replica"}})
	rev := runPipe(t,
		binStage{m, []string{"diff-master", "--cqrs-id", "author"}},
		binStage{r, []string{"diff-replica"}},
		binStage{m, []string{"diff-sync"}})
	all := append(append([]binResult{}, del...), rev...)
	for i, res := range all {
		if res.code != 0 {
			t.Errorf("stage %d: %s", i+1, res)
		}
	}
	checks := []struct {
		got, want, what string
	}{
		{unstamped(del[0].stdout), unstampedFixture(t, "cqrs_deleted_diff_replica_author.stdout"), "deleted-diff-replica stdout"},
		{unstamped(del[1].stdout), unstampedFixture(t, "cqrs_deleted_diff_master.stdout"), "deleted-diff-master stdout"},
		{del[1].stderr, dumpFixture(t, "cqrs_deleted_diff_master.stderr"), "deleted-diff-master stderr"},
		{del[2].stdout + del[2].stderr, "", "deleted-sync-replica output"},
		{unstamped(rev[0].stdout), unstampedFixture(t, "cqrs_diff_master_author.stdout"), "diff-master stdout"},
		{unstamped(rev[1].stdout), unstampedFixture(t, "cqrs_diff_replica.stdout"), "diff-replica stdout"},
		{rev[1].stderr, dumpFixture(t, "cqrs_diff_replica.stderr"), "diff-replica stderr"},
		{rev[2].stdout, dumpFixture(t, "cqrs_diff_sync.stdout"), "diff-sync stdout"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.what, c.got, c.want)
		}
	}
	// The first stages stamp their streams as django-cqrs does (str() of
	// an aware UTC datetime).
	for _, out := range []string{del[0].stdout, rev[0].stdout} {
		if !djangoHeader.MatchString(out) {
			t.Errorf("stream header is not django-cqrs's <cqrs_id>,<UTC time>: %q", out)
		}
	}
	// Each stage read the stream the stage before wrote.
	if del[1].stdout == "" || !strings.HasPrefix(del[1].stdout, strings.SplitN(del[0].stdout, "\n", 2)[0]+"\n") {
		t.Errorf("deleted-diff-master did not pass on deleted-diff-replica's header: %q then %q", del[0].stdout, del[1].stdout)
	}
	if !strings.HasPrefix(rev[1].stdout, strings.SplitN(rev[0].stdout, "\n", 2)[0]+",fixture_replica\n") {
		t.Errorf("diff-replica did not pass on diff-master's header: %q then %q", rev[0].stdout, rev[1].stdout)
	}
	if !strings.Contains(rev[2].stderr, "2 message(s) published.\n") {
		t.Errorf("diff-sync stderr does not report 2 published messages:\n%s", rev[2].stderr)
	}
	return all
}

// `cqrs-consume -w 2 --config replica.yaml` replicates the example's
// author table over RabbitMQ while `cqrs relay --config master.yaml`
// publishes the outbox that the Go master API fills. cqrs-consume gets
// SIGTERM in the middle of the stream, exits 0, and is started again while
// the writes go on: nothing is lost, the replica ends equal to the master
// row by row, and neither process shows a credential.
func TestBinariesConsumeOverRabbitMQ(t *testing.T) {
	t.Parallel()
	amqpURL, amqpPassword := rabbitVhost(t)
	mdb, rdb := testenv.Postgres(t), testenv.SQLite(t)
	m := newBinSide(t, mdb, "master.yaml", nil)
	r := newBinSide(t, rdb, "replica.yaml", nil)
	m.env["CQRS_URL"], r.env["CQRS_URL"] = amqpURL, amqpURL
	m.migrated("author")
	r.migrated("author_ref")
	const queue = "author_replica" // examples/config/replica.yaml's

	consume := r.start("cqrs-consume", "-w", "2", "--shutdown-timeout", "10s")
	waitConsumers(t, amqpURL, queue, 2, consume)
	relay := m.start("cqrs", "relay")

	w := newAuthorWriter(t, mdb, 5)
	const maxTx = 3000
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		for i := 0; i < maxTx; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			if err := w.step(context.Background()); err != nil {
				writerDone <- err
				return
			}
		}
		writerDone <- nil
	}()
	committedAtLeast := func(n int64) func() bool {
		return func() bool {
			select {
			case err := <-writerDone:
				t.Fatalf("the writer stopped early (err %v) after %d transactions", err, w.committed.Load())
			default:
			}
			return w.committed.Load() >= n
		}
	}
	replicaRows := func() int {
		var n int
		if err := rdb.GetContext(context.Background(), &n, "SELECT COUNT(*) FROM author_ref"); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Mid-stream: the replica has applied some of it and the writes go on.
	testenv.WaitFor(t, 30*time.Second, "the replica to apply the first rows", func() bool { return replicaRows() >= 20 })
	atStop := w.committed.Load()
	if code := consume.stop(syscall.SIGTERM, stopTimeout); code != 0 {
		t.Fatalf("cqrs-consume exited with %d after SIGTERM:\n%s", code, consume.stderr)
	}
	first := consume.stderr.String()
	if !strings.Contains(first, "cqrs-consume stopped") {
		t.Errorf("cqrs-consume did not log its clean stop:\n%s", first)
	}
	// While it is down, the relay goes on publishing into the durable queue.
	testenv.WaitFor(t, 30*time.Second, "writes and queued messages while cqrs-consume is down", func() bool {
		msgs, _, _ := queueState(t, amqpURL, queue)
		return committedAtLeast(atStop+50)() && msgs > 0
	})
	consume = r.start("cqrs-consume", "-w", "2", "--shutdown-timeout", "10s")
	waitConsumers(t, amqpURL, queue, 2, consume)
	testenv.WaitFor(t, 30*time.Second, "more writes after the restart", committedAtLeast(w.committed.Load()+50))
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d transactions committed; cqrs-consume stopped after %d", w.committed.Load(), atStop)

	last := ""
	defer func() {
		if last != "" {
			t.Log("last difference: " + last)
		}
	}()
	testenv.WaitFor(t, 45*time.Second, "an empty outbox and the replica equal to the master", func() bool {
		n, _, err := outbox.Pending(context.Background(), mdb.DB, mdb.Dialect)
		if err != nil || n > 0 {
			last = fmt.Sprintf("outbox has %d rows (err %v)", n, err)
			return false
		}
		last = replicaDiff(t, mdb, rdb)
		return last == ""
	})

	for _, p := range []*binProc{consume, relay} {
		if code := p.stop(syscall.SIGTERM, stopTimeout); code != 0 {
			t.Errorf("%s exited with %d after SIGTERM:\n%s", p.name, code, p.stderr)
		}
	}
	if !strings.Contains(relay.stderr.String(), "relay stopped") {
		t.Errorf("the relay did not log its stop:\n%s", relay.stderr)
	}
	for what, logs := range map[string]string{
		"cqrs-consume (first run)":  first,
		"cqrs-consume (second run)": consume.stderr.String(),
		"cqrs relay":                relay.stderr.String(),
	} {
		noSecrets(t, what, logs, amqpPassword, dbPassword)
		noErrors(t, what, logs)
	}
}

// Mistakes end with the documented exit codes (2 for usage, 1 for
// failures) and messages that name the problem without the credentials
// of the configuration.
func TestBinariesFailures(t *testing.T) {
	t.Parallel()
	base, err := url.Parse(testenv.Need(t, testenv.EnvAMQP, "RabbitMQ"))
	if err != nil {
		t.Fatal(err)
	}
	const amqpWrong, pgWrong = "Wrong-Amqp-Secret-41d9", "Wrong-Pg-Secret-77ab"
	base.User = url.UserPassword(testenv.Name("gocqrs_nobody"), amqpWrong)
	r := newBinSide(t, testenv.SQLite(t), "replica.yaml", nil).migrated("author_ref")
	r.env["CQRS_URL"] = base.String()

	pg, err := url.Parse(testenv.Need(t, testenv.EnvPostgres, "PostgreSQL"))
	if err != nil {
		t.Fatal(err)
	}
	pg.User = url.UserPassword("postgres", pgWrong)
	pg.Path = "/" + testenv.Name("gocqrs_no_such_db")
	m := newBinSide(t, testenv.SQLite(t), "master.yaml", nil)
	m.env["CQRS_DATABASE_DRIVER"], m.env["CQRS_DATABASE_DSN"] = "postgres", pg.String()

	cases := []struct {
		side     *binSide
		bin      string
		args     []string
		code     int
		contains string
	}{
		{r, "cqrs-consume", []string{"-w", "0"}, 2, "-w 0: want at least 1 worker"},
		{r, "cqrs", []string{"no-such-command"}, 2, `unknown command "no-such-command"`},
		{r, "cqrs-consume", []string{"-w", "2"}, 1, "username or password not allowed"},
		{m, "cqrs", []string{"relay"}, 1, "does not exist"},
	}
	for _, c := range cases {
		res := c.side.run(c.bin, "", c.args...)
		what := c.bin + " " + strings.Join(c.args, " ")
		if res.code != c.code || !strings.Contains(res.stderr, c.contains) {
			t.Errorf("%s: want exit %d and %q on stderr; got %s", what, c.code, c.contains, res)
		}
		noSecrets(t, what, res.stdout+res.stderr, amqpWrong, pgWrong)
	}
}
