package replica_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
)

func TestRevisionRulesResultsAndLogs(t *testing.T) {
	db := freshDB(t, testenv.SQLite(t))
	logs := &logBuffer{}
	eng := authorEngine(t, db, replica.Options{Queue: "q1", Logger: slog.New(slog.NewTextHandler(logs, nil))}, nil)
	const u = "2026-01-01 10:00:00+00:00"

	steps := []struct {
		signal, data string
		outcome      replica.Outcome
		stored, gap  int64
		downgrade    bool
		name, log    string
	}{
		{"SAVE", author(1, 0, u, "Ann"), replica.OutcomeCreated, -1, 0, false, "Ann", ""},
		{"SAVE", author(1, 0, u, "dup0"), replica.OutcomeSkippedDuplicate, 0, 0, false, "Ann", "CQRS potential creation race condition: pk = 1 (author)."},
		{"SAVE", author(1, 1, u, "Ann v1"), replica.OutcomeUpdated, 0, 0, false, "Ann v1", ""},
		{"SAVE", author(1, 1, u, "dup1"), replica.OutcomeSkippedDuplicate, 1, 0, false, "Ann v1", "Received duplicate CQRS data: pk = 1, cqrs_revision = 1 (author)."},
		{"SAVE", author(1, 5, u, "Ann v5"), replica.OutcomeUpdated, 1, 3, false, "Ann v5", "Lost or filtered out 3 CQRS packages: pk = 1, cqrs_revision = 5 (author)"},
		{"SAVE", author(1, 2, u, "stale"), replica.OutcomeSkippedStale, 5, 0, false, "Ann v5", "Wrong CQRS sync order: pk = 1, cqrs_revision = new 2 / existing 5 (author)."},
		{"SYNC", author(1, 2, u, "sync v2"), replica.OutcomeUpdated, 5, 0, true, "sync v2", "CQRS revision downgrade on sync: pk = 1, cqrs_revision = new 2 / existing 5 (author)."},
		{"SYNC", author(1, 2, u, "sync same"), replica.OutcomeUpdated, 2, 0, false, "sync same", ""},
		{"SYNC", author(2, 3, u, "via sync"), replica.OutcomeCreated, -1, 0, false, "", ""},
	}
	for i, s := range steps {
		res := apply(t, eng, msg(t, s.signal, "author", s.data), false)
		if res.Outcome != s.outcome || res.StoredRevision != s.stored || res.Gap != s.gap || res.Downgrade != s.downgrade {
			t.Errorf("step %d (%s): %+v, want outcome %s stored %d gap %d downgrade %v", i+1, s.signal, res, s.outcome, s.stored, s.gap, s.downgrade)
		}
		if s.name != "" {
			if n := nameOf(t, db, 1); n != s.name {
				t.Errorf("step %d: name %q, want %q", i+1, n, s.name)
			}
		}
		if s.log != "" && !strings.Contains(logs.String(), s.log) {
			t.Errorf("step %d: log lacks %q:\n%s", i+1, s.log, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "queue=q1") {
		t.Errorf("logs do not name the queue:\n%s", logs.String())
	}
}

func TestUpdateSetsOnlyTheKeysItGot(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		freshDB(t, db)
		eng := authorEngine(t, db, replica.Options{}, nil)
		apply(t, eng, msg(t, "SAVE", "author", `{"cqrs_revision":0,"cqrs_updated":"2026-01-01 10:00:00+00:00","id":1,"name":"Ann","active":true,"birth_date":"1990-05-06","rating":"7.5"}`), false)
		// django-cqrs sets only the mapped keys on update: birth_date and rating stay.
		apply(t, eng, msg(t, "SAVE", "author", `{"cqrs_revision":1,"cqrs_updated":"2026-01-01 10:00:01+00:00","id":1,"name":"Ann v1","active":false}`), false)
		var got struct {
			Name   string  `db:"name"`
			Rating float64 `db:"rating"`
			Active bool    `db:"active"`
		}
		if err := db.GetContext(context.Background(), &got, "SELECT name, rating, active FROM author_ref"); err != nil {
			t.Fatal(err)
		}
		if got.Name != "Ann v1" || got.Rating != 7.5 || got.Active {
			t.Errorf("row after partial update: %+v", got)
		}
		if n := count(t, db, "SELECT COUNT(*) FROM author_ref WHERE birth_date IS NOT NULL"); n != 1 {
			t.Errorf("birth_date was cleared by an update that did not carry it")
		}
	})
}

func TestOnlyDirectSyncs(t *testing.T) {
	db := freshDB(t, testenv.SQLite(t))
	eng := authorEngine(t, db, replica.Options{}, func(m *registry.ReplicaModel) { m.OnlyDirectSyncs = true })
	const u = "2026-01-01 10:00:00+00:00"

	res := apply(t, eng, msg(t, "SYNC", "author", author(1, 0, u, "broadcast")), false)
	wantOutcome(t, "broadcast SYNC", res, replica.OutcomeSkippedIndirect)
	if n := nameOf(t, db, 1); n != "" {
		t.Fatalf("broadcast SYNC applied: %q", n)
	}
	res = apply(t, eng, msg(t, "SYNC", "author", author(1, 0, u, "direct")), true)
	wantOutcome(t, "direct SYNC", res, replica.OutcomeCreated)
	res = apply(t, eng, msg(t, "SAVE", "author", author(1, 1, u, "save")), false)
	wantOutcome(t, "broadcast SAVE", res, replica.OutcomeUpdated)
	if n := nameOf(t, db, 1); n != "save" {
		t.Errorf("name %q, want save", n)
	}
	// The book model takes broadcast SYNCs.
	res = apply(t, eng, msg(t, "SYNC", "book", `{"cqrs_revision":0,"cqrs_updated":"2026-01-01 10:00:00+00:00","id":1,"title":"T","author":1}`), false)
	wantOutcome(t, "broadcast SYNC of another model", res, replica.OutcomeCreated)
}

func TestSelectForUpdateLocksTheRow(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		freshDB(t, db)
		ctx := context.Background()
		for _, lock := range []bool{true, false} {
			eng := authorEngine(t, db, replica.Options{}, func(m *registry.ReplicaModel) { m.SelectForUpdate = lock })
			if _, err := db.ExecContext(ctx, "DELETE FROM author_ref"); err != nil {
				t.Fatal(err)
			}
			apply(t, eng, msg(t, "SAVE", "author", author(1, 3, "2026-01-01 10:00:03+00:00", "Ann v3")), false)

			tx, err := db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			// A stale SAVE writes nothing: any lock it holds comes from the
			// SELECT ... FOR UPDATE.
			res, err := eng.ApplyTx(ctx, tx, replica.Delivery{Payload: msg(t, "SAVE", "author", author(1, 2, "2026-01-01 10:00:02+00:00", "stale"))})
			if err != nil {
				t.Fatal(err)
			}
			wantOutcome(t, "stale SAVE in caller's tx", res, replica.OutcomeSkippedStale)
			if db.Dialect.SupportsForUpdate() {
				other, err := db.BeginTxx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, lockErr := other.ExecContext(ctx, db.Rebind("SELECT id FROM author_ref WHERE id = ? FOR UPDATE NOWAIT"), 1)
				_ = other.Rollback()
				if lock && lockErr == nil {
					t.Errorf("SelectForUpdate: the row was not locked by the engine's transaction")
				}
				if !lock && lockErr != nil {
					t.Errorf("without SelectForUpdate the row is locked: %v", lockErr)
				}
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
