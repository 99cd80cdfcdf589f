package outbox

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

func TestLateCommitIsPublished(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		if db.Dialect.Name() == dialect.SQLite {
			// SQLite serialises writers: tx B cannot insert while tx A is open,
			// so a lower id can never commit after a higher one.
			t.Skip("SQLite serialises write transactions; no late commit is possible")
		}
		migrated(t, db)
		ctx := context.Background()
		txA := db.MustBeginTx(ctx, nil)
		defer txA.Rollback() //nolint:errcheck
		idsA, err := Insert(ctx, txA, db.Dialect, []Message{msg("author", 1, 1)})
		if err != nil {
			t.Fatal(err)
		}
		idsB := insertCommitted(t, db.DB, db, []Message{msg("author", 2, 1)})
		if idsA[0] >= idsB[0] {
			t.Fatalf("tx A got id %d, tx B %d: want A lower", idsA[0], idsB[0])
		}

		s := newSink(t, "author")
		r := newRelay(t, db.DB, db, s, RelayOptions{})
		n, err := r.RunOnce(ctx)
		if err != nil || n != 1 {
			t.Fatalf("RunOnce with A open = %d, %v; want 1 (B)", n, err)
		}
		if got := s.all(); len(got) != 1 || got[0].outboxID != idsB[0] {
			t.Fatalf("messages = %+v, want B (id %d)", got, idsB[0])
		}
		if err := txA.Commit(); err != nil {
			t.Fatal(err)
		}
		if n := drain(t, r, db); n != 1 {
			t.Fatalf("published %d after A committed, want 1", n)
		}
		got := s.all()
		if len(got) != 2 || got[1].outboxID != idsA[0] {
			t.Fatalf("messages = %+v, want B then A (id %d), each once", got, idsA[0])
		}
	})
}

func TestEntityOrderWithLowerRowHeldElsewhere(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		ctx := context.Background()
		// ids: X1 Y1 X2 Y2 X3
		ids := insertCommitted(t, db.DB, db, []Message{
			msg("x", 1, 1), msg("y", 1, 1), msg("x", 1, 2), msg("y", 1, 2), msg("x", 1, 3),
		})
		s := newSink(t, "x", "y")
		holder := newRelay(t, db.Open(t), db, s, RelayOptions{BatchSize: 1, OwnerID: "holder"})
		held, err := holder.claim(ctx)
		if err != nil || len(held) != 1 || held[0].id != ids[0] {
			t.Fatalf("holder claim = %v, %v; want X1", held, err)
		}

		r := newRelay(t, db.DB, db, s, RelayOptions{OwnerID: "main"})
		n, err := r.RunOnce(ctx)
		if err != nil || n != 2 {
			t.Fatalf("RunOnce = %d, %v; want 2 (the y rows)", n, err)
		}
		got := s.all()
		if len(got) != 2 || got[0].outboxID != ids[1] || got[1].outboxID != ids[3] {
			t.Fatalf("messages = %+v, want Y1 and Y2", got)
		}
		if st := r.Stats(); st.Released != 2 {
			t.Fatalf("released %d rows, want 2 (X2, X3)", st.Released)
		}
		for _, row := range rowsOf(t, db) {
			if row.ID != ids[0] && row.ClaimedBy != nil {
				t.Fatalf("row %d still claimed by %s after release", row.ID, *row.ClaimedBy)
			}
		}

		// The holder gives X1 back: X1, X2, X3 go out in order.
		if err := holder.releaseRows(ctx, []int64{ids[0]}); err != nil {
			t.Fatal(err)
		}
		if n := drain(t, r, db); n != 3 {
			t.Fatalf("published %d, want 3", n)
		}
		got = s.all()[2:]
		for i, want := range []int64{ids[0], ids[2], ids[4]} {
			if got[i].outboxID != want {
				t.Fatalf("x rows published as %+v, want ids %d %d %d", got, ids[0], ids[2], ids[4])
			}
		}

		// A gap: the holder keeps Z2 while Z1 and Z3 are free. Only Z1 may go.
		zs := insertCommitted(t, db.DB, db, []Message{msg("x", 9, 1), msg("x", 9, 2), msg("x", 9, 3)})
		two := newRelay(t, db.Open(t), db, s, RelayOptions{BatchSize: 2, OwnerID: "holder2"})
		if held, err := two.claim(ctx); err != nil || len(held) != 2 {
			t.Fatalf("holder2 claim = %v, %v", held, err)
		}
		if err := two.releaseRows(ctx, []int64{zs[0]}); err != nil {
			t.Fatal(err)
		}
		n, err = r.RunOnce(ctx)
		if err != nil || n != 1 {
			t.Fatalf("RunOnce with Z2 held = %d, %v; want 1 (Z1 only)", n, err)
		}
		if last := s.all()[s.count()-1]; last.outboxID != zs[0] {
			t.Fatalf("published %d, want Z1 %d", last.outboxID, zs[0])
		}
		if err := two.releaseRows(ctx, []int64{zs[1]}); err != nil {
			t.Fatal(err)
		}
		drain(t, r, db)
		got = s.all()
		if len(got) != 8 || got[6].outboxID != zs[1] || got[7].outboxID != zs[2] {
			t.Fatalf("messages = %+v, want ... Z1 Z2 Z3", got)
		}
	})
}

func TestTwoRelaysPublishEachRowOnceInEntityOrder(t *testing.T) {
	t.Parallel()
	const rows, entities = 3000, 50
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		topics := []string{"author", "book"}
		msgs := make([]Message, rows)
		for i := range msgs {
			pk := i % entities
			msgs[i] = msg(topics[pk%2], pk, i)
		}
		ids := insertCommitted(t, db.DB, db, msgs)

		s := newSink(t, topics...)
		relays := []*Relay{
			newRelay(t, db.Open(t), db, s, RelayOptions{BatchSize: 100, OwnerID: "relay-a"}),
			newRelay(t, db.Open(t), db, s, RelayOptions{BatchSize: 100, OwnerID: "relay-b"}),
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var wg sync.WaitGroup
		runErrs := make([]error, len(relays))
		for i, r := range relays {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runErrs[i] = r.Run(ctx)
			}()
		}
		testenv.WaitFor(t, 60*time.Second, "all rows published and deleted", func() bool {
			return s.count() >= rows && rowCount(t, db) == 0
		})
		cancel()
		wg.Wait()
		for i, err := range runErrs {
			if err != nil {
				t.Fatalf("relay %d Run = %v", i, err)
			}
		}

		got := s.all()
		seen := map[int64]int{}
		last := map[string]int64{}
		for _, m := range got {
			seen[m.outboxID]++
			if m.outboxID <= last[m.entityKey] {
				t.Fatalf("entity %s: id %d published after %d", m.entityKey, m.outboxID, last[m.entityKey])
			}
			last[m.entityKey] = m.outboxID
		}
		for _, id := range ids {
			if seen[id] != 1 {
				t.Fatalf("row %d published %d times, want 1", id, seen[id])
			}
		}
		if len(got) != rows {
			t.Fatalf("%d messages, want %d", len(got), rows)
		}
		var total int64
		for _, r := range relays {
			st := r.Stats()
			total += st.Published
			t.Logf("%s: published %d, released %d, errors %d (%v)", r.OwnerID(), st.Published, st.Released, st.Errors, st.LastError)
			if st.Errors != 0 {
				t.Errorf("%s: %d failed cycles, last %v", r.OwnerID(), st.Errors, st.LastError)
			}
		}
		if total != rows {
			t.Fatalf("relays published %d in total, want %d", total, rows)
		}
	})
}

// A transport failure (outcome unknown) on one call stops the batch: the
// calls in flight finish and their confirmed rows are deleted, the
// unconfirmed rows get attempts+1 and last_error, the entity's later rows and
// every row of a later wave are released untouched; nothing is lost and,
// once the broker is back, every row goes out once, in entity order.
func TestPublishFailureKeepsRows(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		ctx := context.Background()
		f1 := msg("author", 9, 1)
		f2 := f1
		f2.Topic, f2.Body = "cqrs.q.author", []byte(`{"direct":true}`) // f:1's second run: a later wave
		ids := insertCommitted(t, db.DB, db, []Message{
			msg("author", 1, 1), msg("book", 1, 1), msg("author", 1, 2), msg("book", 1, 2), msg("author", 2, 1), f1, f2,
		})
		s := newSink(t, "author", "book", "cqrs.q.author")
		bad := &downTopicPublisher{next: s, topic: "book"}
		bad.down.Store(true)
		r := newRelay(t, db.DB, db, bad, RelayOptions{})

		n, err := r.RunOnce(ctx)
		if n != 4 || !errors.Is(err, errBrokerDown) || !strings.Contains(err.Error(), `cqrs_id "book"`) {
			t.Fatalf("RunOnce = %d, %v; want the 4 wave-one author rows published and the broker error naming the cqrs_id", n, err)
		}
		if c := s.count(); c != 4 {
			t.Fatalf("%d messages delivered, want 4: no call starts after the failure (f:1's second wave waits)", c)
		}
		rows := rowsOf(t, db)
		if len(rows) != 3 || rows[0].ID != ids[1] || rows[1].ID != ids[3] || rows[2].ID != ids[6] {
			t.Fatalf("rows left = %+v, want ids %d, %d, %d", rows, ids[1], ids[3], ids[6])
		}
		if rows[0].Attempts != 1 || rows[0].LastError == nil || !strings.Contains(*rows[0].LastError, "broker down") || rows[0].ClaimedBy != nil {
			t.Fatalf("failed row = %+v, want attempts 1, last_error set, unclaimed", rows[0])
		}
		for _, row := range rows[1:] {
			if row.Attempts != 0 || row.ClaimedBy != nil {
				t.Fatalf("row %+v behind the failure: want untouched and unclaimed", row)
			}
		}
		st := r.Stats()
		if st.Published != 4 || st.Failed != 1 || !errors.Is(st.LastError, errBrokerDown) || st.LastErrorAt.IsZero() {
			t.Fatalf("stats = %+v", st)
		}

		bad.down.Store(false)
		if n := drain(t, r, db); n != 3 {
			t.Fatalf("working publisher published %d, want 3", n)
		}
		seen := map[int64]int{}
		last := map[string]int64{}
		for _, m := range s.all() {
			seen[m.outboxID]++
			if m.outboxID < last[m.entityKey] {
				t.Fatalf("entity %s: row %d after %d", m.entityKey, m.outboxID, last[m.entityKey])
			}
			last[m.entityKey] = m.outboxID
		}
		for _, id := range ids {
			if seen[id] != 1 {
				t.Fatalf("row %d delivered %d times, want once (delivered %v)", id, seen[id], seen)
			}
		}
	})
}

func TestExpiredLeaseIsPublishedAgain(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		ctx := context.Background()
		ids := insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1), msg("author", 1, 2)})
		s := newSink(t, "author")
		// A relay claims and publishes, then "crashes" before deleting.
		dead := newRelay(t, db.Open(t), db, s, RelayOptions{OwnerID: "dead", ClaimTTL: time.Hour})
		rows, err := dead.claim(ctx)
		if err != nil || len(rows) != 2 {
			t.Fatalf("claim = %v, %v", rows, err)
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i].id < rows[j].id })
		for _, row := range rows {
			m, err := dead.message(ctx, row)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Publish(row.topic, m); err != nil {
				t.Fatal(err)
			}
		}
		live := newRelay(t, db.DB, db, s, RelayOptions{OwnerID: "live"})
		if n, err := live.RunOnce(ctx); n != 0 || err != nil {
			t.Fatalf("RunOnce under a live lease = %d, %v; want 0", n, err)
		}
		// Time passes: the lease runs out (a literal every dialect compares as a past time).
		if _, err := db.Exec("UPDATE cqrs_outbox SET claimed_until = '2000-01-01 00:00:00' WHERE claimed_by = 'dead'"); err != nil {
			t.Fatal(err)
		}
		if n := drain(t, live, db); n != 2 {
			t.Fatalf("published %d after the lease expired, want 2", n)
		}
		var order []int64
		for _, m := range s.all() {
			order = append(order, m.outboxID)
		}
		want := []int64{ids[0], ids[1], ids[0], ids[1]}
		if fmt.Sprint(order) != fmt.Sprint(want) {
			t.Fatalf("delivered %v, want %v (duplicates after a crash, never a loss)", order, want)
		}
	})
}

func TestRunWakeAndCleanStop(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		s := newSink(t, "author")
		// Idle waits of an hour: only Wake can make it poll again.
		r := newRelay(t, db.DB, db, s, RelayOptions{PollMin: time.Hour, PollMax: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		testenv.WaitFor(t, 10*time.Second, "first (empty) cycle", func() bool { return r.Stats().Cycles >= 1 })
		if err := r.Run(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
			t.Fatalf("second Run = %v, want already running", err)
		}

		insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1), msg("author", 2, 1)})
		r.Wake()
		r.Wake() // coalesces, never blocks
		testenv.WaitFor(t, 10*time.Second, "woken relay to publish", func() bool { return s.count() == 2 })

		cancel()
		var err error
		testenv.WaitFor(t, 10*time.Second, "Run to return after cancel", func() bool {
			select {
			case err = <-done:
				return true
			default:
				return false
			}
		})
		if err != nil {
			t.Fatalf("Run = %v, want nil on cancel", err)
		}
	})
}

func TestRunFinishesInFlightBatchOnCancel(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1), msg("author", 2, 1), msg("author", 3, 1)})
		s := newSink(t, "author")
		slow := &gatedPublisher{next: s, gate: make(chan struct{})}
		r := newRelay(t, db.DB, db, slow, RelayOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		testenv.WaitFor(t, 10*time.Second, "first publish to start", func() bool { return slow.entered.Load() >= 1 })
		cancel()
		close(slow.gate)
		var err error
		testenv.WaitFor(t, 10*time.Second, "Run to return", func() bool {
			select {
			case err = <-done:
				return true
			default:
				return false
			}
		})
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if c, n := s.count(), rowCount(t, db); c != 3 || n != 0 {
			t.Fatalf("after stop: %d messages, %d rows left; want the whole batch published and deleted", c, n)
		}
	})
}

func TestPending(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		ctx := context.Background()
		n, oldest, err := Pending(ctx, db.DB, db.Dialect)
		if err != nil || n != 0 || !oldest.IsZero() {
			t.Fatalf("Pending on empty = %d, %v, %v", n, oldest, err)
		}
		insertCommitted(t, db.DB, db, []Message{msg("a", 1, 1), msg("a", 2, 1), msg("a", 3, 1)})
		n, oldest, err = Pending(ctx, db.DB, db.Dialect)
		if err != nil || n != 3 {
			t.Fatalf("Pending = %d, %v; want 3", n, err)
		}
		if age := time.Since(oldest); age < -time.Minute || age > time.Minute {
			t.Fatalf("oldest = %v (age %v), want about now", oldest, age)
		}
	})
}

func TestRelayOptionsRejected(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	cases := map[string]RelayOptions{
		"BatchSize":       {BatchSize: -1},
		"BatchSize 5001":  {BatchSize: MaxBatchSize + 1},
		"ClaimTTL":        {ClaimTTL: -time.Second},
		"PollMax":         {PollMin: time.Second, PollMax: time.Millisecond},
		"ErrorBackoffMax": {ErrorBackoff: time.Minute, ErrorBackoffMax: time.Second},
		"OwnerID":         {OwnerID: strings.Repeat("o", MaxOwnerIDLen+1)},
		"MaxInFlight":     {MaxInFlight: -1},
	}
	for want, o := range cases {
		if _, err := NewRelay(db.DB, db.Dialect, noopPublisher{}, o); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewRelay(%+v) = %v, want an error naming %s", o, err, want)
		}
	}
	if _, err := NewRelay(db.DB, db.Dialect, nil, RelayOptions{}); err == nil {
		t.Error("NewRelay with nil publisher succeeded")
	}
	r, err := NewRelay(db.DB, db.Dialect, noopPublisher{}, RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.OwnerID(), "relay-") || r.opts.BatchSize != DefaultBatchSize || r.opts.ClaimTTL != DefaultClaimTTL ||
		r.opts.MaxInFlight != DefaultMaxInFlight {
		t.Fatalf("defaults not applied: %+v", r.opts)
	}
}
