package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/brokertest"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// streamWriter commits master changes in the background, one transaction
// every tick: new authors, and updates of authors it created.
type streamWriter struct {
	commits atomic.Int64
	cancel  context.CancelFunc
	done    chan struct{}
	once    sync.Once

	mu  sync.Mutex
	err error // the first failed write
}

func startStreamWriter(t *testing.T, p *pipeline, every time.Duration) *streamWriter {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &streamWriter{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		rng := rand.New(rand.NewPCG(5, 8))
		tick := time.NewTicker(every)
		defer tick.Stop()
		next := 1
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := w.write(ctx, p, rng, &next); err != nil {
				if ctx.Err() != nil {
					// Cut short by stop. Its error need not wrap
					// context.Canceled: a statement the cancelled context
					// stopped before it was sent fails as "driver: bad
					// connection" (pgx's stdlib reports it retryable, and a
					// transaction cannot retry).
					return
				}
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
				return
			}
			w.commits.Add(1)
		}
	}()
	t.Cleanup(w.stop)
	return w
}

// write commits one transaction: a new author, or an update of one.
func (w *streamWriter) write(ctx context.Context, p *pipeline, rng *rand.Rand, next *int) error {
	tx, err := p.mdb.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if *next == 1 || rng.IntN(2) == 0 {
		_, err = p.master.Insert(ctx, tx, "author", authorValues(rng, *next))
		*next++
	} else {
		id := 1 + rng.IntN(*next-1)
		v := authorValues(rng, id)
		delete(v, "id")
		err = p.master.Update(ctx, tx, "author", id, v)
	}
	if err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("write: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// stop ends the writer and waits for it; later calls do nothing.
func (w *streamWriter) stop() {
	w.once.Do(func() {
		w.cancel()
		<-w.done
	})
}

// failure returns the first failed write, nil when none failed (a write
// cut short by stop does not count).
func (w *streamWriter) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if errors.Is(w.err, context.Canceled) {
		return nil
	}
	return w.err
}

// TestRabbitMQBrokerRestart stops the broker's RabbitMQ application for
// several seconds in the middle of a stream of master writes and starts it
// again. The broker is a private node of this test, so the other tests'
// broker is not disturbed. Master writes never fail meanwhile; the relay
// (its publishes fail while the broker is down) and the consumer reconnect
// by themselves, and the replica ends equal to the master.
func TestRabbitMQBrokerRestart(t *testing.T) {
	t.Parallel()
	node := brokertest.StartPrivate(t)
	p := newPipeline(t, testenv.Postgres(t), testenv.Postgres(t), replica.Options{Queue: "e2e"})
	if err := p.tr.Close(); err != nil { // the memory transport newPipeline made
		t.Fatal(err)
	}
	// The relay and the consumer are separate clients, as separate processes.
	relayTr := newRabbitTransport(t, node.URL)
	p.tr = newRabbitTransport(t, node.URL)
	c := startRabbitConsumer(t, p.tr, p.rreg, p.eng, consumer.Options{Queue: "e2e", RetryDelay: 10 * time.Millisecond})
	relay, err := outbox.NewRelay(p.mdb.DB, p.mdb.Dialect, relayTr.Publisher(), outbox.RelayOptions{
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond,
		ErrorBackoff: 50 * time.Millisecond, ErrorBackoffMax: 500 * time.Millisecond,
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "relay", relay.Run)
	w := startStreamWriter(t, p, 10*time.Millisecond)

	testenv.WaitFor(t, rmqWait, "50 messages replicated before the outage", func() bool { return c.Stats().Done() >= 50 })
	errsBefore, commitsAtStop := relay.Stats().Errors, w.commits.Load()
	node.StopApp(t)
	stoppedAt := time.Now()
	testenv.WaitFor(t, rmqWait, "3 s of outage with the relay failing and 100 more master writes", func() bool {
		return relay.Stats().Errors > errsBefore && w.commits.Load() >= commitsAtStop+100 && time.Since(stoppedAt) >= 3*time.Second
	})
	doneAtRestart, commitsAtRestart := c.Stats().Done(), w.commits.Load()
	node.StartApp(t)
	t.Logf("broker down for %s; %d master writes meanwhile; relay %+v", time.Since(stoppedAt).Round(time.Millisecond),
		commitsAtRestart-commitsAtStop, relay.Stats())

	testenv.WaitFor(t, rmqWait, "100 master writes after the restart", func() bool {
		return w.commits.Load() >= commitsAtRestart+100
	})
	w.stop()
	if err := w.failure(); err != nil {
		t.Fatalf("a master write failed: %v", err)
	}
	p.waitEqual(40 * time.Second)
	st := c.Stats()
	t.Logf("%d master writes; relay %+v; consumer %+v", w.commits.Load(), relay.Stats(), st)
	if st.Done() <= doneAtRestart {
		t.Errorf("the consumer finished nothing after the restart (%d before, %d after)", doneAtRestart, st.Done())
	}
	if st.DeadLettered != 0 || st.Unparseable != 0 || st.MissingKey != 0 || st.NoModel != 0 {
		t.Errorf("consumer stats %+v: nothing may be dropped or dead-lettered", st)
	}
}
