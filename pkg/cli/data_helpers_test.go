package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// side is one service's database with a config file for the cqrs tool.
type side struct {
	t   *testing.T
	db  *testenv.DB
	cfg string             // config file path
	reg *registry.Registry // Go-declared models, if any
}

func dbConfig(db *testenv.DB) string {
	return "database: {driver: " + string(db.Dialect.Name()) + ", dsn: '" + db.DSN + "'}\nlog: {level: error}\n"
}

// newSide creates table on db, writes a config with extra (models, queue)
// and runs cqrs migrate.
func newSide(t *testing.T, db *testenv.DB, table, extra string) *side {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), "CREATE TABLE "+table+" "+fixtures.AuthorColumns[db.Dialect.Name()]); err != nil {
		t.Fatalf("create %s on %s: %v", table, db.Dialect, err)
	}
	s := &side{t: t, db: db, cfg: writeConfig(t, dbConfig(db)+extra)}
	if r := s.run("", "migrate"); r.code != ExitOK {
		t.Fatalf("migrate: %+v", r)
	}
	return s
}

// newMasterSide is a master service: table author, master model author.
func newMasterSide(t *testing.T, db *testenv.DB) *side {
	return newSide(t, db, "author", "transport: memory\nmodels:\n  - {cqrs_id: author, role: master, table: author}\n")
}

// newReplicaSide is a replica service: table author_ref, queue fixture_replica.
func newReplicaSide(t *testing.T, db *testenv.DB) *side {
	return newSide(t, db, "author_ref", "queue: fixture_replica\nmodels:\n  - {cqrs_id: author, role: replica, table: author_ref}\n")
}

// run runs `cqrs <args> --config <cfg>` with stdin.
func (s *side) run(stdin string, args ...string) run {
	s.t.Helper()
	return s.runCtx(context.Background(), stdin, args...)
}

func (s *side) runCtx(ctx context.Context, stdin string, args ...string) run {
	s.t.Helper()
	var out, errb bytes.Buffer
	env := Env{Registry: s.reg, Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(stdin), Getenv: func(string) string { return "" }}
	full := append(append([]string{}, args...), "--config", s.cfg)
	code := Cqrs(ctx, env, full)
	return run{code, out.String(), errb.String()}
}

// exec runs SQL written with '?' placeholders.
func (s *side) exec(query string, args ...any) {
	s.t.Helper()
	if _, err := s.db.ExecContext(context.Background(), s.db.Dialect.Rebind(query), args...); err != nil {
		s.t.Fatalf("%s: %v", query, err)
	}
}

// rows reads a table in the wire format (instance_data of each row, in pk order).
func (s *side) rows(table string) []string {
	s.t.Helper()
	ctx := context.Background()
	reg := registry.New()
	if err := reg.RegisterMaster(registry.MasterModel{CQRSID: "reader", Table: table}); err != nil {
		s.t.Fatal(err)
	}
	m, err := master.New(ctx, s.db.DB, reg, master.WithLogger(quiet()))
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

// outboxCount is the number of rows in the outbox.
func (s *side) outboxCount() int64 {
	s.t.Helper()
	n, _, err := outbox.Pending(context.Background(), s.db.DB, s.db.Dialect)
	if err != nil {
		s.t.Fatal(err)
	}
	return n
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fixture reads a file of the wire fixtures' dumps directory.
func fixture(t *testing.T, name string) string {
	t.Helper()
	return fixtures.ReadFile(t, filepath.Join("dumps", name))
}

// fixturePath is the path of a file of the wire fixtures' dumps directory.
func fixturePath(t *testing.T, name string) string {
	return fixtures.Path(t, "dumps", name)
}

// loadMasterFixture fills the master table with the rows of the fixture's
// dump (ids 1-5, the master after the situation), through a replica model
// declared over the master table.
func loadMasterFixture(t *testing.T, m *side) {
	t.Helper()
	loader := &side{t: t, db: m.db, cfg: writeConfig(t, dbConfig(m.db)+"models:\n  - {cqrs_id: author, role: replica, table: author}\n")}
	if r := loader.run("", "bulk-load", "-i", fixturePath(t, "cqrs_bulk_dump_author.stdout")); r.code != ExitOK {
		t.Fatalf("load master fixture: %+v", r)
	}
}

// frankLine is replica row 6 of the situation, deleted on the master later.
const frankLine = `{"cqrs_revision":0,"cqrs_updated":"2026-11-27 09:45:35.113892+00:00","id":6,"name":"Frank (deleted on master later)","birth_date":null,"rating":null,"active":true,"external_uuid":null,"payload":null,"created_at":null}`

// situation recreates the fixture's situation: the master holds rows 1-5
// (row 3 at revision 1, row 6 deleted), the replica misses row 2, has row 3
// stale (revision 0, "Carol") and still has row 6.
func situation(t *testing.T, m, r *side) {
	t.Helper()
	loadMasterFixture(t, m)
	if res := r.run("", "bulk-load", "-i", fixturePath(t, "cqrs_bulk_dump_author.stdout")); res.code != ExitOK {
		t.Fatalf("load replica: %+v", res)
	}
	if res := r.run("author\n"+frankLine, "bulk-load", "-i", "-"); res.code != ExitOK {
		t.Fatalf("load row 6: %+v", res)
	}
	r.exec("DELETE FROM author_ref WHERE id = ?", 2)
	r.exec("UPDATE author_ref SET name = ?, cqrs_revision = ? WHERE id = ?", "Carol", 0, 3)
}

var stampRe = regexp.MustCompile(`^(\w+),\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?\+00:00`)

// unstamp replaces the time of a diff stream's first line.
func unstamp(s string) string { return stampRe.ReplaceAllString(s, "$1,<now>") }

// situationRows returns situation.json's replica rows under key in the
// wire format, for comparison with side.rows.
func situationRows(t *testing.T, key string) []string {
	t.Helper()
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(fixture(t, "situation.json")), &doc); err != nil {
		t.Fatal(err)
	}
	var rows []map[string]*string
	if err := json.Unmarshal(doc[key], &rows); err != nil {
		t.Fatalf("situation.json %s: %v", key, err)
	}
	var out []string
	for _, r := range rows {
		f := wire.NewFields()
		str := func(k string) any {
			if r[k] == nil {
				return nil
			}
			return *r[k]
		}
		num := func(k string) any {
			if r[k] == nil {
				return nil
			}
			return json.Number(*r[k])
		}
		dt := func(k string) any {
			if r[k] == nil {
				return nil
			}
			tm, _, err := wire.ParseDateTime(*r[k])
			if err != nil {
				t.Fatal(err)
			}
			return wire.FormatPyDateTime(tm.UTC())
		}
		f.Set("cqrs_revision", num("cqrs_revision"))
		f.Set("cqrs_updated", dt("cqrs_updated"))
		f.Set("id", num("id"))
		f.Set("name", str("name"))
		f.Set("birth_date", str("birth_date"))
		if r["rating"] != nil { // numeric(6,2) text → the float the wire carries
			var fl float64
			if err := json.Unmarshal([]byte(*r["rating"]), &fl); err != nil {
				t.Fatal(err)
			}
			s, _ := wire.FormatPyFloat(fl)
			f.Set("rating", json.Number(s))
		} else {
			f.Set("rating", nil)
		}
		f.Set("active", *r["active"] == "true")
		f.Set("external_uuid", str("external_uuid"))
		if r["payload"] != nil {
			v, err := wire.DecodeValue([]byte(*r["payload"]))
			if err != nil {
				t.Fatal(err)
			}
			f.Set("payload", v)
		} else {
			f.Set("payload", nil)
		}
		f.Set("created_at", dt("created_at"))
		b, err := f.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// eachDB runs fn on SQLite, PostgreSQL and MariaDB (master and replica on
// two databases of the same kind).
func eachDB(t *testing.T, fn func(t *testing.T, m, r *side)) {
	t.Helper()
	for _, name := range testenv.Dialects {
		t.Run(string(name), func(t *testing.T) {
			t.Parallel()
			fn(t, newMasterSide(t, testenv.Open(t, name)), newReplicaSide(t, testenv.Open(t, name)))
		})
	}
}

// memoryTransport returns a context carrying a fresh memory transport for
// the sync commands, and the transport to read back what they published.
func memoryTransport(t *testing.T) (context.Context, *transports.Memory) {
	t.Helper()
	mem, err := transports.NewMemory(transports.MemoryConfig{}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	return withTransport(context.Background(), mem), mem
}

func equalLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n got  %s\n want %s", what, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}
}
