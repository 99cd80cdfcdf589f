package master_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// authorDDL is one author table per dialect with every column kind.
var authorDDL = map[dialect.Name]string{
	dialect.Postgres: `CREATE TABLE author (id SERIAL PRIMARY KEY, name VARCHAR(200) NOT NULL, birth_date DATE NULL,
	  rating NUMERIC(6,2) NULL, active BOOLEAN NOT NULL DEFAULT TRUE, external_uuid UUID NULL, payload JSONB NULL,
	  created_at TIMESTAMPTZ NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NULL)`,
	dialect.MySQL: `CREATE TABLE author (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) NOT NULL, birth_date DATE NULL,
	  rating DECIMAL(6,2) NULL, active TINYINT(1) NOT NULL DEFAULT 1, external_uuid UUID NULL, payload JSON NULL,
	  created_at DATETIME(6) NULL, cqrs_revision INT NOT NULL DEFAULT 0, cqrs_updated DATETIME(6) NULL)`,
	dialect.SQLite: fixtures.MasterDDL[0],
}

func setupAuthor(t *testing.T, db *testenv.DB, opts ...master.Option) *master.Master {
	t.Helper()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, authorDDL[db.Dialect.Name()]); err != nil {
		t.Fatal(err)
	}
	must(t, outbox.Migrate(ctx, db.DB, db.Dialect))
	reg := registry.New()
	must(t, reg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author", TrackedFields: []string{"name", "rating"}}))
	m, err := master.New(ctx, db.DB, reg, opts...)
	must(t, err)
	return m
}

func outboxBodies(t *testing.T, db *sqlx.DB) []string {
	t.Helper()
	var bodies []string
	must(t, db.Select(&bodies, "SELECT body FROM cqrs_outbox ORDER BY id"))
	return bodies
}

// TestSameBodiesOnEveryDialect runs one script of changes on PostgreSQL,
// MariaDB and SQLite: every dialect must put the same messages in its outbox
// (cqrs_updated and expires aside), and rolled-back work none.
func TestSameBodiesOnEveryDialect(t *testing.T) {
	results := map[dialect.Name][]string{}
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		ctx := context.Background()
		m := setupAuthor(t, db, master.WithMeta(func(context.Context, registry.Event, *wire.Fields) any {
			return map[string]any{"source": "go"}
		}))
		run := func(fn func(tx *sqlx.Tx) error, commit bool) {
			t.Helper()
			tx := db.MustBeginTx(ctx, nil)
			if err := fn(tx); err != nil {
				_ = tx.Rollback()
				t.Fatal(err)
			}
			if commit {
				must(t, tx.Commit())
			} else {
				must(t, tx.Rollback())
			}
		}
		created := time.Date(2024, 1, 2, 3, 4, 5, 678901000, time.UTC)
		run(func(tx *sqlx.Tx) error {
			_, err := m.Insert(ctx, tx, "author", map[string]any{
				"name": "Ann ✓ \"q\" a/b", "birth_date": "1815-12-10", "rating": "1234.56", "active": false,
				"external_uuid": "6F1C2A4E-9B7D-4C3A-8E21-0A5B4C3D2E1F", "created_at": created,
				"payload": wire.FieldsOf("k", "v", "n", 7, "list", []any{1, "two"}),
			})
			return err
		}, true)
		// Rolled back: no row, no message.
		run(func(tx *sqlx.Tx) error {
			_, err := m.Insert(ctx, tx, "author", map[string]any{"name": "ghost"})
			return err
		}, false)
		// Two updates in one transaction: one message, one revision bump,
		// previous_data relative to the state before the transaction.
		run(func(tx *sqlx.Tx) error {
			if err := m.Update(ctx, tx, "author", 1, map[string]any{"name": "Ann 2", "rating": "2.675"}); err != nil {
				return err
			}
			return m.Update(ctx, tx, "author", 1, map[string]any{"name": "Ann 3"})
		}, true)
		// Insert then delete in one transaction: one DELETE, at the revision
		// the transaction gave the row (0: it was created in it).
		run(func(tx *sqlx.Tx) error {
			id, err := m.Insert(ctx, tx, "author", map[string]any{"id": 50, "name": "brief"})
			if err != nil {
				return err
			}
			return m.Delete(ctx, tx, "author", id)
		}, true)
		run(func(tx *sqlx.Tx) error { _, err := m.Sync(ctx, tx, "author", nil, "replica_q"); return err }, true)
		run(func(tx *sqlx.Tx) error { return m.Delete(ctx, tx, "author", 1) }, true)

		var n int
		must(t, db.Get(&n, "SELECT COUNT(*) FROM author WHERE name = 'ghost'"))
		if n != 0 {
			t.Fatal("rolled-back row exists")
		}
		bodies := outboxBodies(t, db.DB)
		var canon []string
		for _, b := range bodies {
			canon = append(canon, canonical(t, b))
		}
		want := []string{`"cqrs_revision":0`, `"cqrs_revision":1`, `"signal_type":"DELETE"`, `"signal_type":"SYNC"`, `"signal_type":"DELETE"`}
		if len(canon) != len(want) {
			t.Fatalf("%d messages, want %d:\n%s", len(canon), len(want), strings.Join(canon, "\n"))
		}
		for i, w := range want {
			if !strings.Contains(canon[i], w) {
				t.Errorf("message %d lacks %s: %s", i+1, w, canon[i])
			}
		}
		first := canon[0]
		for _, frag := range []string{
			`"name":"Ann \u2713 \"q\" a\/b"`, `"birth_date":"1815-12-10"`, `"rating":1234.56`, `"active":false`,
			`"external_uuid":"6f1c2a4e-9b7d-4c3a-8e21-0a5b4c3d2e1f"`, `"created_at":"2024-01-02 03:04:05.678901+00:00"`,
			`"previous_data":{"name":null,"rating":null}`, `"meta":{"source":"go"}`,
		} {
			if !strings.Contains(first, frag) {
				t.Errorf("create message lacks %s: %s", frag, first)
			}
		}
		if !strings.Contains(canon[1], `"name":"Ann 3"`) || !strings.Contains(canon[1], `"rating":2.68`) ||
			!strings.Contains(canon[1], `"previous_data":{"name":"Ann \u2713 \"q\" a\/b","rating":1234.56}`) {
			t.Errorf("double update message: %s", canon[1])
		}
		if !strings.Contains(canon[2], `"instance_data":{"id":50,"cqrs_revision":0,`) {
			t.Errorf("insert+delete message: %s", canon[2])
		}
		if !strings.Contains(canon[4], `"instance_data":{"id":1,"cqrs_revision":2,`) {
			t.Errorf("delete message: %s", canon[4])
		}
		// payload key order differs by database (jsonb sorts keys); blank it
		// for the cross-dialect comparison.
		for i := range canon {
			if j := strings.Index(canon[i], `"payload":`); j >= 0 {
				k := strings.Index(canon[i][j:], `,"created_at"`)
				canon[i] = canon[i][:j] + `"payload":<json>` + canon[i][j+k:]
			}
		}
		results[db.Dialect.Name()] = canon
	})
	var ref []string
	var refName dialect.Name
	for name, c := range results {
		if ref == nil {
			ref, refName = c, name
			continue
		}
		for i := range c {
			if i < len(ref) && c[i] != ref[i] {
				t.Errorf("message %d differs between %s and %s:\n %s\n %s", i+1, refName, name, ref[i], c[i])
			}
		}
	}
}

func TestErrorsNameWhatIsWrong(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	m := setupAuthor(t, db)
	tx := db.MustBeginTx(ctx, nil)
	defer tx.Rollback()
	_, err := m.Insert(ctx, tx, "author", map[string]any{"nmae": "x"})
	if err == nil || !strings.Contains(err.Error(), `"nmae"`) || !strings.Contains(err.Error(), "fields:") {
		t.Errorf("unknown field: %v", err)
	}
	if err := m.Update(ctx, tx, "ghost", 1, nil); err == nil || !strings.Contains(err.Error(), `"ghost"`) {
		t.Errorf("unknown cqrs_id: %v", err)
	}
	if err := m.Delete(ctx, tx, "author", 999); !errors.Is(err, master.ErrNotFound) {
		t.Errorf("missing row: %v", err)
	}
	if err := m.Save(ctx, tx, "author", 999); !errors.Is(err, master.ErrNotFound) {
		t.Errorf("missing row: %v", err)
	}
	if _, err := m.Sync(ctx, tx, "author", nil, "bad queue#"); err == nil {
		t.Error("bad queue name accepted")
	}
	reg := registry.New()
	must(t, reg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author", Fields: []registry.Field{{Name: "id"}, {Name: "nope"}}}))
	if _, err := master.New(ctx, db.DB, reg); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown column at bind: %v", err)
	}
}

func TestProduceOffBumpsWithoutMessage(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	m := setupAuthor(t, db, master.WithProduceOff())
	tx := db.MustBeginTx(ctx, nil)
	id, err := m.Insert(ctx, tx, "author", map[string]any{"name": "quiet"})
	must(t, err)
	must(t, tx.Commit())
	tx = db.MustBeginTx(ctx, nil)
	must(t, m.Update(ctx, tx, "author", id, map[string]any{"name": "quieter"}))
	must(t, tx.Commit())
	var rev int
	must(t, db.Get(&rev, "SELECT cqrs_revision FROM author"))
	if rev != 1 {
		t.Errorf("revision %d, want 1", rev)
	}
	if b := outboxBodies(t, db.DB); len(b) != 0 {
		t.Errorf("produce off wrote %d messages", len(b))
	}
}

func TestSaveAfterCallerWrites(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	m := setupAuthor(t, db, master.WithMessageTTL(0))
	tx := db.MustBeginTx(ctx, nil)
	_, err := tx.ExecContext(ctx, "INSERT INTO author (id, name, rating) VALUES (7, 'raw', 1.5)")
	must(t, err)
	must(t, m.Save(ctx, tx, "author", 7)) // cqrs_updated NULL: a create
	must(t, tx.Commit())
	tx = db.MustBeginTx(ctx, nil)
	_, err = tx.ExecContext(ctx, "UPDATE author SET name = 'raw 2' WHERE id = 7")
	must(t, err)
	must(t, m.Save(ctx, tx, "author", 7, master.Previous(map[string]any{"name": "raw", "rating": 1.5})))
	must(t, tx.Commit())
	b := outboxBodies(t, db.DB)
	if len(b) != 2 {
		t.Fatalf("%d messages", len(b))
	}
	if !strings.Contains(b[0], `"cqrs_revision":0`) || !strings.Contains(b[0], `"previous_data":{"name":null,"rating":null}`) || !strings.Contains(b[0], `"expires":null`) {
		t.Errorf("create: %s", b[0])
	}
	if !strings.Contains(b[1], `"cqrs_revision":1`) || !strings.Contains(b[1], `"previous_data":{"name":"raw"}`) {
		t.Errorf("update: %s", b[1])
	}
}
