package replica_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
)

func TestTombstoneSkipsLateSaveButNotRecreation(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		freshDB(t, db)
		eng := authorEngine(t, db, replica.Options{}, nil)

		apply(t, eng, msg(t, "SAVE", "author", author(1, 0, "2026-01-01 10:00:00+00:00", "Ann")), false)
		apply(t, eng, msg(t, "SAVE", "author", author(1, 1, "2026-01-01 10:00:01+00:00", "Ann v1")), false)
		res := apply(t, eng, msg(t, "DELETE", "author", del(1, 2, "2026-01-01 10:00:02+00:00")), false)
		wantOutcome(t, "DELETE", res, replica.OutcomeDeleted)
		if res.StoredRevision != 1 {
			t.Errorf("DELETE: stored revision %d, want 1", res.StoredRevision)
		}

		// Late SAVE and late SYNC of the old life: skipped, no row.
		res = apply(t, eng, msg(t, "SAVE", "author", author(1, 1, "2026-01-01 10:00:01+00:00", "late")), false)
		wantOutcome(t, "late SAVE", res, replica.OutcomeSkippedTombstone)
		res = apply(t, eng, msg(t, "SYNC", "author", author(1, 2, "2026-01-01 10:00:02+00:00", "late sync")), true)
		wantOutcome(t, "late SYNC", res, replica.OutcomeSkippedTombstone)
		if n := nameOf(t, db, 1); n != "" {
			t.Fatalf("deleted row came back as %q", n)
		}

		// The master re-creates pk 1: revision restarts at 0, cqrs_updated is later.
		res = apply(t, eng, msg(t, "SAVE", "author", author(1, 0, "2026-01-01 11:00:00+00:00", "Ann again")), false)
		wantOutcome(t, "re-created SAVE", res, replica.OutcomeCreated)
		if n := nameOf(t, db, 1); n != "Ann again" {
			t.Errorf("re-created row name %q", n)
		}
		if n := count(t, db, "SELECT COUNT(*) FROM cqrs_tombstones WHERE cqrs_id = ? AND pk = ?", "author", "1"); n != 0 {
			t.Errorf("tombstone not cleared by the re-creation: %d left", n)
		}

		// A DELETE that overtakes its row's SAVE still leaves a tombstone.
		res = apply(t, eng, msg(t, "DELETE", "author", del(2, 3, "2026-01-01 10:00:03+00:00")), false)
		wantOutcome(t, "DELETE before SAVE", res, replica.OutcomeDeleteMissing)
		res = apply(t, eng, msg(t, "SAVE", "author", author(2, 2, "2026-01-01 10:00:02+00:00", "overtaken")), false)
		wantOutcome(t, "overtaken SAVE", res, replica.OutcomeSkippedTombstone)

		// The tombstone keeps the higher of the DELETE's and the row's revision
		// (a DELETE may carry an older revision: fixture case 14).
		apply(t, eng, msg(t, "SAVE", "author", author(3, 5, "2026-01-01 10:00:05+00:00", "five")), false)
		apply(t, eng, msg(t, "DELETE", "author", del(3, 1, "2026-01-01 10:00:06+00:00")), false)
		res = apply(t, eng, msg(t, "SAVE", "author", author(3, 5, "2026-01-01 10:00:05+00:00", "five again")), false)
		wantOutcome(t, "SAVE rev 5 after DELETE carrying rev 1", res, replica.OutcomeSkippedTombstone)
		var rev int64
		if err := db.GetContext(context.Background(), &rev, db.Rebind("SELECT revision FROM cqrs_tombstones WHERE cqrs_id = ? AND pk = ?"), "author", "3"); err != nil {
			t.Fatal(err)
		}
		if rev != 5 {
			t.Errorf("tombstone revision %d, want 5", rev)
		}

		// A second DELETE never lowers the tombstone.
		apply(t, eng, msg(t, "DELETE", "author", del(3, 2, "2026-01-01 10:00:04+00:00")), false)
		res = apply(t, eng, msg(t, "SAVE", "author", author(3, 5, "2026-01-01 10:00:05.5+00:00", "still dead")), false)
		wantOutcome(t, "SAVE after a second, older DELETE", res, replica.OutcomeSkippedTombstone)

		// Pruning: nothing is an hour old; everything is older than "now".
		n, err := eng.PruneTombstones(context.Background(), time.Hour)
		if err != nil || n != 0 {
			t.Errorf("prune 1h: %d, %v; want 0", n, err)
		}
		n, err = eng.PruneTombstones(context.Background(), 0)
		if err != nil || n != 2 {
			t.Errorf("prune 0: %d, %v; want 2 (pks 2 and 3)", n, err)
		}
		res = apply(t, eng, msg(t, "SAVE", "author", author(2, 2, "2026-01-01 10:00:02+00:00", "after prune")), false)
		wantOutcome(t, "SAVE after prune", res, replica.OutcomeCreated)
	})
}

func TestDjangoCompatRecreatesAndNeedsNoTable(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		fixtures.CreateReplicaTables(t, db) // no Migrate: DjangoCompat needs no tombstone table
		ctx := context.Background()
		_, err := replica.NewEngine(ctx, db.DB, db.Dialect, fixtures.ReplicaRegistry(t), replica.Options{})
		if err == nil || !strings.Contains(err.Error(), "cqrs_tombstones") || !strings.Contains(err.Error(), "Migrate") {
			t.Fatalf("NewEngine without the tombstone table: %v, want an error naming cqrs_tombstones and Migrate", err)
		}
		eng := authorEngine(t, db, replica.Options{DjangoCompat: true}, nil)
		apply(t, eng, msg(t, "SAVE", "author", author(1, 1, "2026-01-01 10:00:01+00:00", "Ann v1")), false)
		apply(t, eng, msg(t, "DELETE", "author", del(1, 2, "2026-01-01 10:00:02+00:00")), false)
		res := apply(t, eng, msg(t, "SAVE", "author", author(1, 1, "2026-01-01 10:00:01+00:00", "late")), false)
		wantOutcome(t, "late SAVE under DjangoCompat", res, replica.OutcomeCreated)
		if n := nameOf(t, db, 1); n != "late" {
			t.Errorf("row name %q, want the late SAVE's", n)
		}
		if n, err := eng.PruneTombstones(ctx, 0); n != 0 || err != nil {
			t.Errorf("PruneTombstones under DjangoCompat: %d, %v", n, err)
		}
	})
}

func TestMigrateIsIdempotentAndNamesTheTable(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		ctx := context.Background()
		opts := replica.Options{TombstoneTable: "my_tombs"}
		for i := 0; i < 2; i++ {
			if err := replica.Migrate(ctx, db.DB, db.Dialect, opts); err != nil {
				t.Fatalf("migrate #%d: %v", i+1, err)
			}
		}
		if n := count(t, db, "SELECT COUNT(*) FROM my_tombs"); n != 0 {
			t.Errorf("new table has %d rows", n)
		}
		fixtures.CreateReplicaTables(t, db)
		eng := authorEngine(t, db, opts, nil)
		apply(t, eng, msg(t, "DELETE", "author", del(7, 1, "2026-01-01 10:00:01+00:00")), false)
		if n := count(t, db, "SELECT COUNT(*) FROM my_tombs WHERE pk = ?", "7"); n != 1 {
			t.Errorf("tombstone rows in my_tombs: %d, want 1", n)
		}
		if err := replica.Migrate(ctx, db.DB, db.Dialect, replica.Options{TombstoneTable: "bad name"}); err == nil || !strings.Contains(err.Error(), "bad name") {
			t.Errorf("migrate with a bad table name: %v", err)
		}
	})
}
