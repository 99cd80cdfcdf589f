package replica_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

func itemData(pk, rev int, name string) string {
	return fmt.Sprintf(`{"cqrs_revision":%d,"cqrs_updated":"2026-01-01 10:00:%02d+00:00","id":%d,"name":%q}`, rev, rev, pk, name)
}

// TestBatchSplitsOnSQLFailure: one message of 50 violates a CHECK
// constraint, which only the database sees. The batch is split until that
// message is alone: the 49 others are committed, the bad one gets the error
// Apply gives it, and nothing of it is written.
func TestBatchSplitsOnSQLFailure(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, checkTable[db.Dialect.Name()]); err != nil {
			t.Fatal(err)
		}
		if err := replica.Migrate(ctx, db.DB, db.Dialect, replica.Options{}); err != nil {
			t.Fatal(err)
		}
		reg := registry.New()
		if err := reg.RegisterReplica(registry.ReplicaModel{CQRSID: "item", Table: "item", PK: "id"}); err != nil {
			t.Fatal(err)
		}
		logs := &logBuffer{}
		eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, replica.Options{
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		if err != nil {
			t.Fatal(err)
		}
		run := func(what string, rev, bad int, dls []replica.Delivery) {
			t.Helper()
			res, errs, err := eng.ApplyBatch(ctx, dls)
			if err != nil {
				t.Fatalf("%s: batch failed as a whole: %v", what, err)
			}
			for i := range dls {
				if i == bad {
					if errs[i] == nil || res[i].Outcome != "" {
						t.Errorf("%s: bad message %d: %+v, %v; want an error", what, i, res[i], errs[i])
					}
					continue
				}
				if errs[i] != nil || !res[i].Outcome.Applied() {
					t.Errorf("%s: message %d: %+v, %v; want it applied", what, i, res[i], errs[i])
				}
			}
			// The error is the one Apply gives the message alone.
			_, alone := eng.Apply(ctx, dls[bad])
			if alone == nil || errs[bad] == nil || errs[bad].Error() != alone.Error() {
				t.Errorf("%s: batch error %v, Apply's %v", what, errs[bad], alone)
			}
			if n := count(t, db, "SELECT COUNT(*) FROM item WHERE cqrs_revision = ?", rev); n != 49 {
				t.Errorf("%s: %d rows at revision %d, want 49", what, n, rev)
			}
		}
		var creates, updates []replica.Delivery
		for pk := 1; pk <= 50; pk++ {
			name, upd := fmt.Sprint("item ", pk), fmt.Sprint("item v1 ", pk)
			if pk == 38 {
				name = "bad"
			}
			if pk == 12 {
				upd = "bad"
			}
			creates = append(creates, replica.Delivery{Payload: msg(t, "SAVE", "item", itemData(pk, 0, name))})
			updates = append(updates, replica.Delivery{Payload: msg(t, "SAVE", "item", itemData(pk, 1, upd))})
		}
		run("creates", 0, 37, creates)
		if n := count(t, db, "SELECT COUNT(*) FROM item WHERE id = 38"); n != 0 {
			t.Errorf("the bad create left a row")
		}
		if !strings.Contains(logs.String(), "CQRS batch split after a failure") {
			t.Errorf("no split was logged:\n%s", logs.String())
		}
		run("updates", 1, 11, updates)
		if n := count(t, db, "SELECT COUNT(*) FROM item WHERE id = 12 AND cqrs_revision = 0"); n != 1 {
			t.Errorf("the bad update changed its row")
		}

		// A bad write superseded by a later message of the same pk in the
		// same batch still fails, as it does one at a time; the later
		// message then applies on top of the row as it was.
		res, errs, err := eng.ApplyBatch(ctx, []replica.Delivery{
			{Payload: msg(t, "SAVE", "item", itemData(1, 2, "v2"))},
			{Payload: msg(t, "SAVE", "item", itemData(1, 3, "bad"))},
			{Payload: msg(t, "SAVE", "item", itemData(1, 4, "v4"))},
		})
		if err != nil {
			t.Fatal(err)
		}
		if errs[0] != nil || errs[1] == nil || errs[2] != nil {
			t.Fatalf("errors %v, want only the second message to fail", errs)
		}
		if res[2].Outcome != replica.OutcomeUpdated || res[2].StoredRevision != 2 || res[2].Gap != 1 {
			t.Errorf("message after the failed one: %+v, want updated from revision 2 with a gap of 1", res[2])
		}
		var name string
		if err := db.GetContext(ctx, &name, "SELECT name FROM item WHERE id = 1"); err != nil || name != "v4" {
			t.Errorf("name %q, %v; want v4", name, err)
		}
	})
}

// TestBatchHooksAndRaw: a model with hooks is applied message by message
// inside the batch (each hook called once, a failing one rolled back
// alone), a plain model in bulk, a raw model after the commit, and routing
// errors are per message.
func TestBatchHooksAndRaw(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		freshDB(t, db)
		ctx := context.Background()
		var calls []string
		boom := errors.New("hook boom")
		reg := registry.New()
		err := reg.RegisterReplica(registry.ReplicaModel{
			CQRSID: "author", Table: "author_ref", PK: "id",
			Hooks: registry.ReplicaHooks{
				Create: func(ctx context.Context, ac *registry.ApplyContext, data *wire.Fields) error {
					pk, _ := data.Get("id")
					calls = append(calls, fmt.Sprint("create ", pk))
					if err := replica.DefaultCreate(ctx, ac, data); err != nil {
						return err
					}
					if name, _ := data.Get("name"); name == "fail" {
						return boom // after the insert: it must be rolled back
					}
					return nil
				},
				Update: func(ctx context.Context, ac *registry.ApplyContext, existing, data *wire.Fields) error {
					pk, _ := data.Get("id")
					calls = append(calls, fmt.Sprint("update ", pk))
					return replica.DefaultUpdate(ctx, ac, data)
				},
				Delete: func(ctx context.Context, ac *registry.ApplyContext, pk any) error {
					calls = append(calls, fmt.Sprint("delete ", pk))
					return replica.DefaultDelete(ctx, ac, pk)
				},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.RegisterReplica(fixtures.BookRefModel()); err != nil {
			t.Fatal(err)
		}
		var rawSeen []string
		if err := reg.RegisterReplica(registry.ReplicaModel{CQRSID: "event", Raw: registry.RawHandlers{
			Save: func(ctx context.Context, ac *registry.ApplyContext) error {
				// Runs after the commit: the batch's rows are visible.
				var n int
				if err := db.GetContext(ctx, &n, "SELECT COUNT(*) FROM book_ref"); err != nil {
					return err
				}
				rawSeen = append(rawSeen, fmt.Sprint("books ", n))
				return nil
			},
		}}); err != nil {
			t.Fatal(err)
		}
		eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, replica.Options{})
		if err != nil {
			t.Fatal(err)
		}
		const u = "2026-01-01 10:00:00+00:00"
		book := func(pk, rev int, title string) string {
			return fmt.Sprintf(`{"cqrs_revision":%d,"cqrs_updated":%q,"id":%d,"title":%q,"author":1}`, rev, u, pk, title)
		}
		ghost := msg(t, "SAVE", "author", author(9, 0, u, "x"))
		ghost.CQRSID = "ghost"
		badSignal := msg(t, "SAVE", "author", author(9, 0, u, "x"))
		badSignal.SignalType = "UPSERT"
		dls := []replica.Delivery{
			{Payload: msg(t, "SAVE", "author", author(1, 0, u, "Ann"))},
			{Payload: msg(t, "SAVE", "book", book(10, 0, "T10"))},
			{Payload: msg(t, "SAVE", "event", `{"id":1}`)},
			{Payload: msg(t, "SAVE", "author", author(2, 0, u, "fail"))},
			{Payload: ghost},
			{Payload: msg(t, "SAVE", "book", book(11, 0, "T11"))},
			{Payload: msg(t, "SAVE", "author", author(1, 1, u, "Ann v1"))},
			{Payload: badSignal},
			{Payload: msg(t, "SAVE", "book", book(10, 1, "T10 v1"))},
			{Payload: msg(t, "DELETE", "author", del(1, 2, u))},
		}
		res, errs, err := eng.ApplyBatch(ctx, dls)
		if err != nil {
			t.Fatal(err)
		}
		want := []replica.Outcome{replica.OutcomeCreated, replica.OutcomeCreated, replica.OutcomeRaw, "", "",
			replica.OutcomeCreated, replica.OutcomeUpdated, "", replica.OutcomeUpdated, replica.OutcomeDeleted}
		for i := range dls {
			if res[i].Outcome != want[i] {
				t.Errorf("message %d: outcome %q, want %q (err %v)", i, res[i].Outcome, want[i], errs[i])
			}
		}
		if !errors.Is(errs[3], boom) || !errors.Is(errs[4], replica.ErrUnknownModel) || !errors.Is(errs[7], replica.ErrBadSignal) {
			t.Errorf("errors %v: want the hook's at 3, unknown model at 4, bad signal at 7", errs)
		}
		for i, e := range errs {
			if e != nil && i != 3 && i != 4 && i != 7 {
				t.Errorf("message %d: unexpected error %v", i, e)
			}
		}
		if got := strings.Join(calls, ", "); got != "create 1, create 2, update 1, delete 1" {
			t.Errorf("hook calls %q: each hook must run once per message, in order", got)
		}
		if n := count(t, db, "SELECT COUNT(*) FROM author_ref"); n != 0 {
			t.Errorf("author_ref has %d rows: the failed create was not rolled back, or the delete not applied", n)
		}
		if n := count(t, db, "SELECT COUNT(*) FROM cqrs_tombstones WHERE cqrs_id = 'author' AND pk = '1'"); n != 1 {
			t.Errorf("no tombstone for the deleted author")
		}
		var name string
		if err := db.GetContext(ctx, &name, "SELECT name FROM book_ref WHERE id = 10"); err != nil || name != "T10 v1" {
			t.Errorf("book 10 name %q, %v", name, err)
		}
		if strings.Join(rawSeen, ",") != "books 2" {
			t.Errorf("raw handler saw %q, want to run once after the commit (books 2)", rawSeen)
		}

		// A batch that cannot start fails as a whole.
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		res, errs, err = eng.ApplyBatch(cancelled, dls[:2])
		if err == nil || res != nil || errs != nil {
			t.Errorf("cancelled batch: %v, %v, %v; want a batch error and no results", res, errs, err)
		}
	})
}

// TestBatchGuardMissAppliesOneByOne: when a guarded upsert writes fewer rows
// than decided (as when another transaction wrote a newer revision between
// the batch's read and its write; here a trigger drops one update), the
// group is applied again message by message, with Apply's results.
func TestBatchGuardMissAppliesOneByOne(t *testing.T) {
	ignore := map[dialect.Name][]string{
		dialect.Postgres: {
			`CREATE FUNCTION skip_ignored() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN IF NEW.name = 'ignored' THEN RETURN NULL; END IF; RETURN NEW; END $$`,
			`CREATE TRIGGER item_skip BEFORE UPDATE ON item FOR EACH ROW EXECUTE FUNCTION skip_ignored()`,
		},
		dialect.SQLite: {`CREATE TRIGGER item_skip BEFORE UPDATE ON item WHEN NEW.name = 'ignored' BEGIN SELECT RAISE(IGNORE); END`},
	}
	for _, name := range []dialect.Name{dialect.Postgres, dialect.SQLite} {
		t.Run(string(name), func(t *testing.T) {
			db := testenv.Open(t, name)
			ctx := context.Background()
			for _, s := range append([]string{checkTable[name]}, ignore[name]...) {
				if _, err := db.ExecContext(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			reg := registry.New()
			if err := reg.RegisterReplica(registry.ReplicaModel{CQRSID: "item", Table: "item", PK: "id"}); err != nil {
				t.Fatal(err)
			}
			logs := &logBuffer{}
			eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, replica.Options{DjangoCompat: true,
				Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatal(err)
			}
			var creates, updates []replica.Delivery
			for pk := 1; pk <= 5; pk++ {
				name := "v1"
				if pk == 3 {
					name = "ignored"
				}
				creates = append(creates, replica.Delivery{Payload: msg(t, "SAVE", "item", itemData(pk, 0, "v0"))})
				updates = append(updates, replica.Delivery{Payload: msg(t, "SAVE", "item", itemData(pk, 1, name))})
			}
			if _, _, err := eng.ApplyBatch(ctx, creates); err != nil {
				t.Fatal(err)
			}
			res, errs, err := eng.ApplyBatch(ctx, updates)
			if err != nil {
				t.Fatal(err)
			}
			for i := range updates {
				if errs[i] != nil || res[i] != (replica.Result{Outcome: replica.OutcomeUpdated, StoredRevision: 0}) {
					t.Errorf("message %d: %+v %v, want updated from revision 0 (as Apply reports it)", i, res[i], errs[i])
				}
			}
			if !strings.Contains(logs.String(), "CQRS batch applied one by one") {
				t.Errorf("the guard miss did not make the batch apply one by one:\n%s", logs.String())
			}
			if n := count(t, db, "SELECT COUNT(*) FROM item WHERE cqrs_revision = 1"); n != 4 {
				t.Errorf("%d rows at revision 1, want 4 (the trigger kept pk 3)", n)
			}
		})
	}
}

// keyTables have a UUID and a text primary key.
var keyTables = map[dialect.Name][]string{
	dialect.Postgres: {
		`CREATE TABLE tag (id uuid PRIMARY KEY, name text NOT NULL, cqrs_revision integer NOT NULL, cqrs_updated timestamptz NOT NULL)`,
		`CREATE TABLE label (code varchar(50) PRIMARY KEY, name text NOT NULL, cqrs_revision integer NOT NULL, cqrs_updated timestamptz NOT NULL)`,
	},
	dialect.MySQL: {
		"CREATE TABLE tag (id UUID PRIMARY KEY, name TEXT NOT NULL, cqrs_revision INT NOT NULL, cqrs_updated DATETIME(6) NOT NULL)",
		"CREATE TABLE label (code VARCHAR(50) PRIMARY KEY, name TEXT NOT NULL, cqrs_revision INT NOT NULL, cqrs_updated DATETIME(6) NOT NULL)",
	},
	dialect.SQLite: {
		`CREATE TABLE tag (id uuid PRIMARY KEY, name text NOT NULL, cqrs_revision integer NOT NULL, cqrs_updated datetime NOT NULL)`,
		`CREATE TABLE label (code varchar(50) PRIMARY KEY, name text NOT NULL, cqrs_revision integer NOT NULL, cqrs_updated datetime NOT NULL)`,
	},
}

// TestBatchUUIDAndTextKeys: models keyed by a UUID and by a text column are
// applied by the multi-row path (no fallback) with Apply's results.
func TestBatchUUIDAndTextKeys(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, one *testenv.DB) {
		ctx := context.Background()
		batched := testenv.Open(t, one.Dialect.Name())
		engines := map[*testenv.DB]*replica.Engine{}
		logs := &logBuffer{}
		for _, db := range []*testenv.DB{one, batched} {
			for _, s := range keyTables[db.Dialect.Name()] {
				if _, err := db.ExecContext(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			if err := replica.Migrate(ctx, db.DB, db.Dialect, replica.Options{}); err != nil {
				t.Fatal(err)
			}
			reg := registry.New()
			for _, m := range []registry.ReplicaModel{{CQRSID: "tag", Table: "tag", PK: "id"}, {CQRSID: "label", Table: "label", PK: "code"}} {
				if err := reg.RegisterReplica(m); err != nil {
					t.Fatal(err)
				}
			}
			eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, replica.Options{
				Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatal(err)
			}
			engines[db] = eng
		}
		var dls []replica.Delivery
		for rev := 0; rev < 3; rev++ {
			for i := 1; i <= 4; i++ {
				u := fmt.Sprintf("2026-01-01 10:00:%02d+00:00", rev)
				uuid := fmt.Sprintf("0000000%d-AAAA-4BBB-8CCC-00000000000%d", i, i) // upper case: normalized
				dls = append(dls,
					replica.Delivery{Payload: msg(t, "SAVE", "tag", fmt.Sprintf(`{"cqrs_revision":%d,"cqrs_updated":%q,"id":%q,"name":"t%d"}`, rev, u, uuid, rev))},
					replica.Delivery{Payload: msg(t, "SAVE", "label", fmt.Sprintf(`{"cqrs_revision":%d,"cqrs_updated":%q,"code":"L-%d","name":"l%d"}`, rev, u, i, rev))})
			}
		}
		dls = append(dls,
			replica.Delivery{Payload: msg(t, "DELETE", "tag", `{"id":"00000001-aaaa-4bbb-8ccc-000000000001","cqrs_revision":3,"cqrs_updated":"2026-01-01 10:00:03+00:00"}`)},
			replica.Delivery{Payload: msg(t, "DELETE", "label", `{"id":"L-2","cqrs_revision":3,"cqrs_updated":"2026-01-01 10:00:03+00:00"}`)},
			replica.Delivery{Payload: msg(t, "SAVE", "label", `{"cqrs_revision":1,"cqrs_updated":"2026-01-01 10:00:01+00:00","code":"L-2","name":"late"}`)})
		var want []replica.Result
		for _, dl := range dls {
			res, err := engines[one].Apply(ctx, dl)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, res)
		}
		for lo := 0; lo < len(dls); lo += 9 {
			hi := min(lo+9, len(dls))
			got, errs, err := engines[batched].ApplyBatch(ctx, dls[lo:hi])
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if errs[i] != nil || got[i] != want[lo+i] {
					t.Errorf("message %d: batched %+v %v, one at a time %+v", lo+i, got[i], errs[i], want[lo+i])
				}
			}
		}
		for _, q := range []string{"SELECT id, name, cqrs_revision FROM tag ORDER BY id", "SELECT code, name, cqrs_revision FROM label ORDER BY code", tombDump} {
			if w, g := dump(t, one, q), dump(t, batched, q); !reflect.DeepEqual(w, g) || len(w) == 0 {
				t.Errorf("%s:\n batched      %q\n one at a time %q", q, g, w)
			}
		}
		if strings.Contains(logs.String(), "CQRS batch") {
			t.Errorf("the batches did not all take the multi-row path:\n%s", logs.String())
		}
	})
}
