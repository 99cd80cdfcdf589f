package outbox

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

// listenOn connects to db and LISTENs on the outbox's channel, as a test
// observer (it holds no lock: it is not a relay), and on a private marker
// channel. It returns the connection and the marker channel.
func listenOn(t *testing.T, db *testenv.DB) (*pgx.Conn, string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	marker := fmt.Sprintf("marker_%d", rand.Uint32())
	for _, ch := range []string{NotifyChannel(currentSchema(t, db), "cqrs_outbox"), marker} {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			t.Fatal(err)
		}
	}
	return conn, marker
}

// noNotificationBefore asserts that the transactions committed so far sent
// no notification to conn: it commits a notification on the marker
// channel (which no relay listens to) and checks that it is the next one
// conn gets (PostgreSQL delivers notifications in commit order).
func noNotificationBefore(t *testing.T, db *testenv.DB, conn *pgx.Conn, marker, what string) {
	t.Helper()
	if _, err := db.Exec("SELECT pg_notify($1, '')", marker); err != nil {
		t.Fatal(err)
	}
	if n := nextNotification(t, conn); n.Channel != marker {
		t.Fatalf("%s: got a notification on %s before the marker, want none", what, n.Channel)
	}
}

// relayWaitingForWriter reports whether a relay waits for the "writing"
// lock of db's outbox (R2 in notify_wait.go).
func relayWaitingForWriter(t *testing.T, db *testenv.DB) bool {
	t.Helper()
	var waiters int
	if err := db.Get(&waiters, `SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
		AND classid = $1 AND objid = 'cqrs_outbox'::regclass::oid AND objsubid = 2`, lockClassWriting); err != nil {
		t.Fatal(err)
	}
	return waiters > 0
}

// relayHoldsWaiting reports whether a relay holds the "waiting" lock of
// db's outbox.
func relayHoldsWaiting(t *testing.T, db *testenv.DB) bool {
	t.Helper()
	var holders int
	if err := db.Get(&holders, `SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid = $1 AND objid = 'cqrs_outbox'::regclass::oid AND objsubid = 2`, lockClassWaiting); err != nil {
		t.Fatal(err)
	}
	return holders > 0
}

// valvePublisher passes calls to next while open and holds them while
// shut, standing in for a broker that is slow at times.
type valvePublisher struct {
	next    message.Publisher
	mu      sync.Mutex
	gate    chan struct{} // nil while open
	entered atomic.Int64
}

func (p *valvePublisher) Publish(topic string, msgs ...*message.Message) error {
	p.entered.Add(1)
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return p.next.Publish(topic, msgs...)
}

func (p *valvePublisher) Close() error { return nil }

func (p *valvePublisher) shut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
}

func (p *valvePublisher) open() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

// The trigger notifies only while a relay waits: not without a relay, not
// while the relay is busy publishing; a waiting relay is woken by a commit
// (its polls are an hour apart), and a relay going from busy back to idle
// misses no row committed meanwhile.
func TestNotifyOnlyWhileRelayWaits(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	migrated(t, db)
	obs, marker := listenOn(t, db)

	// No relay: a commit sends nothing.
	insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1)})
	noNotificationBefore(t, db, obs, marker, "commit without a relay")

	s := newSink(t, "author")
	pub := &valvePublisher{next: s}
	r := newRelay(t, db.DB, db, pub, RelayOptions{PollMin: time.Hour, PollMax: time.Hour})
	l := runRelay(t, r)
	t.Cleanup(pub.open) // before Run is stopped: it finishes its batch first
	testenv.WaitFor(t, 10*time.Second, "row 1 published and the relay waiting", func() bool {
		return s.count() == 1 && r.waiting.Load()
	})

	// Waiting: a commit notifies and wakes the relay, which finds row 2 and
	// blocks publishing it. Busy, it releases "waiting", and a commit then
	// sends nothing.
	pub.shut()
	before := l.notified.Load()
	ids := insertCommitted(t, db.DB, db, []Message{msg("author", 2, 1)})
	if n := nextNotification(t, obs); n.Channel == marker {
		t.Fatal("got the marker, want the trigger's notification")
	}
	testenv.WaitFor(t, 10*time.Second, "the woken relay publishing row 2, without its lock", func() bool {
		return pub.entered.Load() == 2 && !relayHoldsWaiting(t, db)
	})
	if l.notified.Load() <= before {
		t.Fatal("the relay publishes row 2 without having been notified")
	}
	insertCommitted(t, db.DB, db, []Message{msg("author", 3, 1)})
	noNotificationBefore(t, db, obs, marker, "commit while the relay is busy")

	// Let it publish: it claims row 3 under its lock before it waits (an
	// hour, so only that claim can find it).
	pub.open()
	testenv.WaitFor(t, 10*time.Second, "rows 2 and 3 published and the relay waiting", func() bool {
		return s.count() == 3 && r.waiting.Load()
	})
	if got := s.all()[1]; got.outboxID != ids[0] {
		t.Fatalf("published %+v second, want row %d", got, ids[0])
	}
	testenv.WaitFor(t, 10*time.Second, "the published rows deleted", func() bool { return rowCount(t, db) == 0 })
}

// A transaction that wrote to the outbox while the relay was busy, and
// commits only once the relay went idle, does not notify (no relay waited
// when it wrote); the relay, about to wait, waits for it to end before its
// last claim (R2, retried while it stays open), so its row is published
// although the relay's polls are an hour apart.
func TestRelayGoingIdleWaitsForOpenWriter(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	migrated(t, db)
	obs, marker := listenOn(t, db)
	s := newSink(t, "author")
	pub := &valvePublisher{next: s}
	pub.shut()
	insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1)})
	r := newRelay(t, db.DB, db, pub, RelayOptions{PollMin: time.Hour, PollMax: time.Hour})
	runRelay(t, r)
	t.Cleanup(pub.open) // before Run is stopped: it finishes its batch first
	testenv.WaitFor(t, 10*time.Second, "the relay publishing row 1", func() bool { return pub.entered.Load() == 1 })

	ctx := context.Background()
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // after commit: no-op
	ids, err := Insert(ctx, tx, db.Dialect, []Message{msg("author", 2, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pub.open()
	// The relay published row 1, found nothing committed and now waits for
	// the open transaction's "writing" lock (R2). While the transaction
	// stays open, R2 times out and the relay claims and tries again soon,
	// whatever its polling.
	testenv.WaitFor(t, 10*time.Second, "row 1 published and the relay waiting for the open transaction", func() bool {
		return s.count() == 1 && relayWaitingForWriter(t, db)
	})
	cycles := r.Stats().Cycles
	testenv.WaitFor(t, 10*time.Second, "the relay to claim again while the transaction is open", func() bool {
		return r.Stats().Cycles >= cycles+2
	})
	testenv.WaitFor(t, 10*time.Second, "the relay waiting for the open transaction again", func() bool {
		return relayWaitingForWriter(t, db)
	})
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	noNotificationBefore(t, db, obs, marker, "commit of a transaction that wrote while the relay was busy")
	testenv.WaitFor(t, 10*time.Second, "row 2 published", func() bool { return s.count() == 2 })
	if got := s.all()[1]; got.outboxID != ids[0] {
		t.Fatalf("published %+v, want row %d", got, ids[0])
	}
}

// jitterPublisher delays some calls, standing in for a broker whose pace
// varies, so that the relay alternates between busy and idle.
type jitterPublisher struct {
	next message.Publisher
	mu   sync.Mutex
	rng  *rand.Rand
}

func (p *jitterPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	d := time.Duration(p.rng.IntN(4)) * time.Millisecond
	p.mu.Unlock()
	time.Sleep(d)
	return p.next.Publish(topic, msgs...)
}

func (p *jitterPublisher) Close() error { return nil }

// Writers commit (and roll back) in bursts and pauses while the relay
// alternates between busy and waiting; with polls an hour apart, every
// committed row is published within the deadline: no commit is missed by
// a relay going to wait.
func TestNotifyStressNoMissedCommit(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	migrated(t, db)
	db.SetMaxOpenConns(12)
	s := newSink(t, "author")
	pub := &jitterPublisher{next: s, rng: rand.New(rand.NewPCG(1, 2))}
	r := newRelay(t, db.DB, db, pub, RelayOptions{PollMin: time.Hour, PollMax: time.Hour, BatchSize: 7})
	l := runRelay(t, r)
	testenv.WaitFor(t, 10*time.Second, "the relay waiting", r.waiting.Load)

	const writers, txs = 4, 150
	ctx := context.Background()
	var (
		mu        sync.Mutex
		committed int
		wg        sync.WaitGroup
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range txs {
				if i%25 == 0 {
					// A pause: the relay catches up and waits.
					time.Sleep(time.Duration(5+rng.IntN(20)) * time.Millisecond)
				}
				n := 1 + rng.IntN(3)
				msgs := make([]Message, n)
				for j := range msgs {
					msgs[j] = msg("author", w*100000+i*10+j, i)
				}
				tx, err := db.BeginTxx(ctx, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := Insert(ctx, tx, db.Dialect, msgs); err != nil {
					_ = tx.Rollback()
					t.Error(err)
					return
				}
				if rng.IntN(10) == 0 {
					_ = tx.Rollback() // its notification, if any, is never sent
					continue
				}
				if err := tx.Commit(); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				committed += n
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("all %d committed rows published", committed), func() bool {
		return s.count() == committed
	})
	testenv.WaitFor(t, 10*time.Second, "the published rows deleted", func() bool { return rowCount(t, db) == 0 })
	t.Logf("%d rows in %d relay cycles, %d notifications received", committed, r.Stats().Cycles, l.notified.Load())
}

// The relay's lock connection killed while it waits: after its wait ends
// it notices, takes the lock again on a new connection, and is then woken
// by commits again.
func TestWaitLockReconnects(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	migrated(t, db)
	s := newSink(t, "author")
	r := newRelay(t, db.DB, db, s, RelayOptions{PollMin: 50 * time.Millisecond, PollMax: 50 * time.Millisecond})
	l := runRelay(t, r)
	holder := func() int64 {
		var pid int64
		if err := db.Get(&pid, `SELECT COALESCE(MAX(pid), 0) FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND classid = $1 AND objid = 'cqrs_outbox'::regclass::oid AND objsubid = 2`, lockClassWaiting); err != nil {
			t.Fatal(err)
		}
		return pid
	}
	testenv.WaitFor(t, 10*time.Second, "the relay holding its waiting lock", func() bool { return holder() != 0 })
	old := holder()
	var killed bool
	if err := db.Get(&killed, "SELECT pg_terminate_backend($1)", old); err != nil || !killed {
		t.Fatalf("terminate the lock connection %d: %v %v", old, killed, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the waiting lock taken again on a new connection", func() bool {
		pid := holder()
		return pid != 0 && pid != old && r.waiting.Load()
	})
	before := l.notified.Load()
	insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1)})
	testenv.WaitFor(t, 10*time.Second, "a notification and the row published", func() bool {
		return l.notified.Load() > before && s.count() == 1
	})
}
