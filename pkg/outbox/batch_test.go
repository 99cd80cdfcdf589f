package outbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// planRows builds n claimed rows (ids 1..n) over entities; an entity's row
// goes to its direct topic with probability direct.
func planRows(n, entities int, direct float64, rng *rand.Rand) []claimedRow {
	rows := make([]claimedRow, n)
	for i := range rows {
		pk := rng.IntN(entities)
		topic := "author"
		if rng.Float64() < direct {
			topic = "cqrs.q.author"
		}
		rows[i] = claimedRow{id: int64(i + 1), cqrsID: "author", entityKey: fmt.Sprintf("author:%d", pk), topic: topic}
	}
	return rows
}

// The plan puts every row in exactly one call; a call holds one topic in id
// order; an entity stays in one lane; an entity's waves follow its rows'
// order and change exactly when its topic does.
func TestPlanLanesKeepsEntityOrder(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		rows, entities int
		direct         float64
		maxLanes       int
	}{
		{3, 3, 0, 4}, {500, 50, 0, 4}, {500, 50, 0.2, 4}, {2000, 7, 0.5, 8}, {5000, 400, 0.1, 4}, {100, 100, 0.1, 1}, {1, 1, 0, 4},
	} {
		rows := planRows(tc.rows, tc.entities, tc.direct, rng)
		lanes := planLanes(rows, tc.maxLanes)
		wantLanes := min(tc.maxLanes, max(1, tc.rows/minLaneRows))
		if len(lanes) != wantLanes {
			t.Fatalf("%+v: %d lanes, want %d", tc, len(lanes), wantLanes)
		}
		seen := make([]int, len(rows))
		laneOfEntity := map[string]int{}
		type pos struct{ wave, row int }
		last := map[string]pos{}
		for l, lane := range lanes {
			for w, wv := range lane {
				topics := map[string]bool{}
				for _, c := range wv {
					if topics[c.topic] {
						t.Fatalf("%+v: lane %d wave %d has two calls on %q", tc, l, w, c.topic)
					}
					topics[c.topic] = true
					for k, i := range c.rows {
						row := rows[i]
						seen[i]++
						if row.topic != c.topic || (k > 0 && row.id <= rows[c.rows[k-1]].id) {
							t.Fatalf("%+v: call on %q holds row %+v out of place", tc, c.topic, row)
						}
						if ll, ok := laneOfEntity[row.entityKey]; ok && ll != l {
							t.Fatalf("%+v: entity %s in lanes %d and %d", tc, row.entityKey, ll, l)
						}
						laneOfEntity[row.entityKey] = l
					}
				}
			}
			// Walk the lane's rows in id order: each entity's wave is
			// non-decreasing and grows by one exactly at a topic change.
			waveOf := map[int]int{}
			for w, wv := range lane {
				for _, c := range wv {
					for _, i := range c.rows {
						waveOf[i] = w
					}
				}
			}
			for i, row := range rows {
				w, ok := waveOf[i]
				if !ok {
					continue
				}
				if p, ok := last[row.entityKey]; ok {
					prev := rows[p.row]
					want := p.wave
					if prev.topic != row.topic {
						want++
					}
					if w != want {
						t.Fatalf("%+v: entity %s row %d in wave %d after row %d in wave %d, want wave %d", tc, row.entityKey, row.id, w, prev.id, p.wave, want)
					}
				}
				last[row.entityKey] = pos{w, i}
			}
		}
		for i, n := range seen {
			if n != 1 {
				t.Fatalf("%+v: row %d planned %d times", tc, rows[i].id, n)
			}
		}
	}
	// A handful of rows of one topic is one call.
	rows := planRows(3, 3, 0, rng)
	if lanes := planLanes(rows, 4); len(lanes) != 1 || len(lanes[0]) != 1 || len(lanes[0][0]) != 1 || len(lanes[0][0][0].rows) != 3 {
		t.Fatalf("3 rows of one topic planned as %v, want one call", lanes)
	}
}

// callCounter counts Publish calls and their messages.
type callCounter struct {
	next  message.Publisher
	calls atomic.Int64
}

func (p *callCounter) Publish(topic string, msgs ...*message.Message) error {
	p.calls.Add(1)
	return p.next.Publish(topic, msgs...)
}

func (p *callCounter) Close() error { return nil }

// Many entities, hot ones among them, with broadcast and direct topics
// mixed: every row is delivered once, each entity's rows in id order, with
// far fewer Publish calls than rows.
func TestBatchesKeepEntityOrderWithFewCalls(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		rng := rand.New(rand.NewPCG(3, 4))
		const n = 2000
		msgs := make([]Message, n)
		for i := range msgs {
			pk := rng.IntN(100)
			if i%3 == 0 {
				pk = rng.IntN(3) // hot entities
			}
			msgs[i] = msg("author", pk, i)
			if rng.IntN(10) == 0 {
				msgs[i].Topic = "cqrs.q.author"
			}
		}
		ids := insertCommitted(t, db.DB, db, msgs)
		s := newSink(t, "author", "cqrs.q.author")
		pub := &callCounter{next: s}
		r := newRelay(t, db.DB, db, pub, RelayOptions{BatchSize: 1000})
		if got := drain(t, r, db); got != n {
			t.Fatalf("published %d, want %d", got, n)
		}
		checkOnceInOrder(t, s.all(), ids)
		if c := pub.calls.Load(); c > n/5 {
			t.Fatalf("%d Publish calls for %d rows, want far fewer", c, n)
		}
		t.Logf("%d rows in %d Publish calls", n, pub.calls.Load())
	})
}

// checkOnceInOrder asserts that got holds every id once and each entity's
// messages in id order.
func checkOnceInOrder(t *testing.T, got []received, ids []int64) {
	t.Helper()
	seen := map[int64]int{}
	last := map[string]int64{}
	for _, m := range got {
		seen[m.outboxID]++
		if m.outboxID <= last[m.entityKey] {
			t.Fatalf("entity %s: row %d delivered after %d", m.entityKey, m.outboxID, last[m.entityKey])
		}
		last[m.entityKey] = m.outboxID
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("row %d delivered %d times, want once", id, seen[id])
		}
	}
	if len(got) != len(ids) {
		t.Fatalf("%d deliveries for %d rows", len(got), len(ids))
	}
}

// A large batch has MaxInFlight calls in flight at once.
func TestBatchCallsRunConcurrently(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	migrated(t, db)
	const n = 4 * minLaneRows
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = msg("author", i, 1)
	}
	insertCommitted(t, db.DB, db, msgs)
	gate := &gatedPublisher{next: noopPublisher{}, gate: make(chan struct{})}
	r := newRelay(t, db.DB, db, gate, RelayOptions{BatchSize: n, MaxInFlight: 4})
	got := make(chan int, 1)
	go func() {
		published, err := r.RunOnce(context.Background())
		if err != nil {
			t.Errorf("RunOnce: %v", err)
		}
		got <- published
	}()
	testenv.WaitFor(t, 10*time.Second, "4 calls in flight at once", func() bool { return gate.entered.Load() == 4 })
	close(gate.gate)
	if published := <-got; published != n {
		t.Fatalf("published %d, want %d", published, n)
	}
}

// partialPublisher stands in for a broker that refuses one message of a call
// and takes the rest (a real broker does so only by timing, e.g. a queue
// that frees space mid-call): it refuses the messages whose body is in
// refuse, delivers the others to next and reports a PublishError.
type partialPublisher struct {
	next   message.Publisher
	mu     sync.Mutex
	refuse map[string]bool
}

func (p *partialPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	failed := map[int]error{}
	for i, m := range msgs {
		if p.refuse[string(m.Payload)] {
			failed[i] = fmt.Errorf("refused (injected): %w", transports.ErrNacked)
			continue
		}
		if err := p.next.Publish(topic, m); err != nil {
			failed[i] = err
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("publish: %w", &transports.PublishError{Total: len(msgs), Failed: failed})
}

func (p *partialPublisher) Close() error { return nil }

// Per-message results: the confirmed rows are deleted, the refused row is
// set aside, and its entity's later rows are released even though the broker
// took them in the same call, so that they go out again after it.
func TestPartialPublishSettlesRowByRow(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		ctx := context.Background()
		e1, f1, e2, e3 := msg("author", 1, 1), msg("author", 2, 1), msg("author", 1, 2), msg("author", 1, 3)
		ids := insertCommitted(t, db.DB, db, []Message{e1, f1, e2, e3})
		s := newSink(t, "author")
		pub := &partialPublisher{next: s, refuse: map[string]bool{string(e1.Body): true}}
		r := newRelay(t, db.DB, db, pub, RelayOptions{ErrorBackoff: time.Hour, ErrorBackoffMax: time.Hour})
		n, err := r.RunOnce(ctx)
		if n != 1 || err != nil {
			t.Fatalf("RunOnce = %d, %v; want 1 (f1) and no error", n, err)
		}
		rows := rowsOf(t, db)
		if len(rows) != 3 || rows[0].ID != ids[0] || rows[1].ID != ids[2] || rows[2].ID != ids[3] {
			t.Fatalf("rows left = %+v, want e1, e2, e3", rows)
		}
		if rows[0].Attempts != 1 || rows[0].LastError == nil || rows[1].Attempts != 0 || rows[2].Attempts != 0 || rows[1].ClaimedBy != nil {
			t.Fatalf("rows = %+v: want e1 set aside (attempts 1), e2 and e3 released untouched", rows)
		}
		if st := r.Stats(); st.Rejected != 1 || st.Published != 1 || st.Errors != 1 {
			t.Fatalf("stats = %+v, want 1 rejected, 1 published, the rejection recorded", st)
		}
		// The broker takes e1 now; the set-aside ends early (as time would).
		pub.mu.Lock()
		pub.refuse = nil
		pub.mu.Unlock()
		if _, err := db.Exec("UPDATE cqrs_outbox SET claimed_until = NULL"); err != nil {
			t.Fatal(err)
		}
		if n := drain(t, r, db); n != 3 {
			t.Fatalf("published %d after the broker took e1, want 3", n)
		}
		var order []int64
		for _, m := range s.all() {
			if m.entityKey == "author:1" {
				order = append(order, m.outboxID)
			}
		}
		want := []int64{ids[2], ids[3], ids[0], ids[2], ids[3]}
		if fmt.Sprint(order) != fmt.Sprint(want) {
			t.Fatalf("author:1 delivered %v, want %v: e2, e3 again after e1", order, want)
		}
	})
}

// Run claims the next batch while one is published. A refused row's entity
// keeps its later rows back, in the batch claimed ahead too; other entities
// flow.
func TestRunHoldsBackEntityOfRefusedRowAcrossBatches(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		ids := insertCommitted(t, db.DB, db, []Message{
			ghostMsg(1), msg("author", 1, 1), ghostMsg(2), msg("author", 2, 1), ghostMsg(3), msg("author", 3, 1), msg("author", 4, 1),
		})
		s := newSink(t, "author", "ghost")
		pub := &rejectingPublisher{next: s, topic: "ghost"}
		pub.reject.Store(true)
		// Batch one is g1 a1 g2 a2; the batch claimed ahead meanwhile is
		// g3 a3 a4, whose g3 must wait for g1 (refused).
		r := newRelay(t, db.DB, db, pub, RelayOptions{BatchSize: 4, ErrorBackoff: time.Hour, ErrorBackoffMax: time.Hour})
		stop := startRun(t, r)
		waitPublishedUnclaimed(t, db, s, 4)
		stop()
		rows := rowsOf(t, db)
		if len(rows) != 3 || rows[0].ID != ids[0] || rows[1].ID != ids[2] || rows[2].ID != ids[4] {
			t.Fatalf("rows left = %+v, want the three ghost rows", rows)
		}
		if rows[0].Attempts != 1 || rows[1].Attempts != 0 || rows[2].Attempts != 0 {
			t.Fatalf("ghost rows = %+v: want the first refused once, the later ones never tried", rows)
		}
		for _, m := range s.all() {
			if m.topic == "ghost" {
				t.Fatalf("a ghost message was delivered: %+v", m)
			}
		}
	})
}

// When the transport fails, Run hands back the rows of the batch it claimed
// ahead that wait for the failed batch, unpublished, and backs off.
func TestRunReleasesBatchAheadOnTransportFailure(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		// The author call comes first in the wave, so it starts before the
		// book call fails (no call starts after a failure). The batch ahead
		// holds the same two entities: it waits for this one.
		ids := insertCommitted(t, db.DB, db, []Message{
			msg("author", 1, 1), msg("book", 1, 1), msg("author", 1, 2), msg("book", 1, 2),
		})
		s := newSink(t, "author", "book")
		pub := &downTopicPublisher{next: s, topic: "book"}
		pub.down.Store(true)
		r := newRelay(t, db.DB, db, pub, RelayOptions{BatchSize: 2, ErrorBackoff: time.Hour, ErrorBackoffMax: time.Hour})
		stop := startRun(t, r)
		testenv.WaitFor(t, 20*time.Second, "the failed cycle recorded and every row unclaimed", func() bool {
			if r.Stats().Errors < 1 {
				return false
			}
			for _, row := range rowsOf(t, db) {
				if row.ClaimedBy != nil {
					return false
				}
			}
			return true
		})
		stop()
		if st := r.Stats(); !errors.Is(st.LastError, errBrokerDown) {
			t.Fatalf("last error %v, want the broker failure", st.LastError)
		}
		rows := rowsOf(t, db)
		if len(rows) != 3 || rows[0].ID != ids[1] || rows[1].ID != ids[2] || rows[2].ID != ids[3] {
			t.Fatalf("rows left = %+v, want the failed book row and the two rows claimed ahead", rows)
		}
		if rows[0].Attempts != 1 || rows[1].Attempts != 0 || rows[2].Attempts != 0 {
			t.Fatalf("rows = %+v: want the failed row counted, the rows ahead untouched", rows)
		}
		if got := s.all(); len(got) != 1 || got[0].outboxID != ids[0] {
			t.Fatalf("delivered %+v, want only the author row of the failed batch", got)
		}
	})
}

// topicGate holds every call on one topic (every call when topic is
// empty) until gate is closed and passes the others through at once: a slow
// broker queue next to a fast one.
type topicGate struct {
	next  message.Publisher
	topic string
	gate  chan struct{}
}

func (p *topicGate) Publish(topic string, msgs ...*message.Message) error {
	if p.topic == "" || topic == p.topic {
		<-p.gate
	}
	return p.next.Publish(topic, msgs...)
}

func (p *topicGate) Close() error { return nil }

// While a batch waits for its confirms, Run already publishes the rows of
// the next batch whose entities it does not hold; the others wait for it.
func TestRunPublishesNextBatchEarly(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		ids := insertCommitted(t, db.DB, db, []Message{
			msg("slow", 1, 1), msg("slow", 2, 1), msg("fast", 1, 1), msg("slow", 1, 2),
		})
		s := newSink(t, "slow", "fast")
		pub := &topicGate{next: s, topic: "slow", gate: make(chan struct{})}
		r := newRelay(t, db.DB, db, pub, RelayOptions{BatchSize: 2})
		stop := startRun(t, r)
		testenv.WaitFor(t, 20*time.Second, "the fast row of the next batch published while the first waits", func() bool {
			return s.count() == 1
		})
		if got := s.all()[0]; got.outboxID != ids[2] {
			t.Fatalf("delivered %+v first, want the fast row %d", got, ids[2])
		}
		close(pub.gate)
		testenv.WaitFor(t, 20*time.Second, "everything published", func() bool { return rowCount(t, db) == 0 })
		stop()
		checkOnceInOrder(t, s.all(), ids)
	})
}

// A publisher that refuses a call as a whole (the memory transport with a
// full topic: all or nothing) gets the call's messages one at a time: what
// fits goes out, the rest is set aside.
func TestWholeCallRefusalFallsBackToSingleMessages(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	migrated(t, db)
	mem, err := transports.NewMemory(transports.MemoryConfig{MaxPending: 3}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mem.Close() })
	ids := insertCommitted(t, db.DB, db, []Message{
		msg("author", 1, 1), msg("author", 2, 1), msg("author", 3, 1), msg("author", 4, 1), msg("author", 4, 2),
	})
	pub := &callCounter{next: mem.Publisher()}
	r := newRelay(t, db.DB, db, pub, RelayOptions{ErrorBackoff: time.Hour, ErrorBackoffMax: time.Hour})
	n, err := r.RunOnce(context.Background())
	if n != 3 || err != nil {
		t.Fatalf("RunOnce = %d, %v; want the 3 messages the topic takes", n, err)
	}
	rows := rowsOf(t, db)
	if len(rows) != 2 || rows[0].ID != ids[3] || rows[0].Attempts != 1 || rows[1].ID != ids[4] || rows[1].Attempts != 0 {
		t.Fatalf("rows left = %+v, want author:4's first row set aside and its second released untried", rows)
	}
	// One whole call, then one call per message up to author:4's refusal.
	if c := pub.calls.Load(); c != 5 {
		t.Fatalf("%d Publish calls, want 5 (1 refused whole, 4 single)", c)
	}
}

// While two batches wait for their confirms, Run has claimed and checked a
// third, which goes out once the first settles; its rows of an entity the
// first batch did not get confirmed stay back.
func TestRunClaimsThirdBatchWhileTwoAwaitConfirms(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		// Batches of two: g1 a1 | a2 a3 | g2 a4 | a5. g1 is refused, so g2,
		// claimed while the first two batches waited, must not go out.
		ids := insertCommitted(t, db.DB, db, []Message{
			ghostMsg(1), msg("author", 1, 1), msg("author", 2, 1), msg("author", 3, 1), ghostMsg(2), msg("author", 4, 1), msg("author", 5, 1),
		})
		s := newSink(t, "author", "ghost")
		rej := &rejectingPublisher{next: s, topic: "ghost"}
		rej.reject.Store(true)
		pub := &topicGate{next: rej, gate: make(chan struct{})} // every call waits
		r := newRelay(t, db.DB, db, pub, RelayOptions{BatchSize: 2, ErrorBackoff: time.Hour, ErrorBackoffMax: time.Hour})
		stop := startRun(t, r)
		testenv.WaitFor(t, 20*time.Second, "three batches claimed while nothing is confirmed", func() bool {
			return claimedRows(t, db) == 6
		})
		if n := s.count(); n != 0 {
			t.Fatalf("%d messages delivered before the gate opened", n)
		}
		close(pub.gate)
		waitPublishedUnclaimed(t, db, s, 5)
		stop()
		rows := rowsOf(t, db)
		if len(rows) != 2 || rows[0].ID != ids[0] || rows[1].ID != ids[4] {
			t.Fatalf("rows left = %+v, want the two ghost rows", rows)
		}
		if rows[0].Attempts != 1 || rows[1].Attempts != 0 {
			t.Fatalf("ghost rows = %+v: want the first refused once, the second never tried", rows)
		}
		checkOnceInOrder(t, s.all(), []int64{ids[1], ids[2], ids[3], ids[5], ids[6]})
	})
}

// ghostMsg is row n of the entity ghost:1, on topic "ghost".
func ghostMsg(n int) Message {
	return Message{CQRSID: "ghost", EntityKey: "ghost:1", Topic: "ghost", Body: []byte(fmt.Sprintf(`{"n":%d}`, n))}
}

// startRun starts r.Run; stop cancels it, waits for it and fails the test
// if Run returned an error.
func startRun(t *testing.T, r *Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}
}

// claimedRows counts the outbox rows some relay holds.
func claimedRows(t *testing.T, db *testenv.DB) int {
	t.Helper()
	n := 0
	for _, row := range rowsOf(t, db) {
		if row.ClaimedBy != nil {
			n++
		}
	}
	return n
}

// waitPublishedUnclaimed waits until s received at least n messages and no
// outbox row is claimed.
func waitPublishedUnclaimed(t *testing.T, db *testenv.DB, s *sink, n int) {
	t.Helper()
	testenv.WaitFor(t, 20*time.Second, fmt.Sprintf("%d messages published and no row claimed", n), func() bool {
		return s.count() >= n && claimedRows(t, db) == 0
	})
}
