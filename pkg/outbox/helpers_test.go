package outbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

// quiet is the logger tests give relays.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// received is one message a subscriber got.
type received struct {
	topic     string
	body      string
	outboxID  int64
	entityKey string
	cqrsID    string
	metadata  message.Metadata
}

// sink is a real Watermill GoChannel with subscribers on the given topics
// that record every message in arrival order. Publish blocks until the
// subscriber has recorded and acked the message, so the arrival order is the
// publish order.
type sink struct {
	*gochannel.GoChannel
	mu   sync.Mutex
	msgs []received
}

func newSink(t *testing.T, topics ...string) *sink {
	t.Helper()
	s := &sink{GoChannel: gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		_ = s.Close()
		wg.Wait()
	})
	for _, topic := range topics {
		ch, err := s.Subscribe(ctx, topic)
		if err != nil {
			t.Fatalf("subscribe %s: %v", topic, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range ch {
				id, _ := strconv.ParseInt(m.Metadata.Get(MetadataOutboxID), 10, 64)
				s.mu.Lock()
				s.msgs = append(s.msgs, received{
					topic: topic, body: string(m.Payload), outboxID: id,
					entityKey: m.Metadata.Get(MetadataEntityKey), cqrsID: m.Metadata.Get(MetadataCQRSID),
					metadata: m.Metadata,
				})
				s.mu.Unlock()
				m.Ack()
			}
		}()
	}
	return s
}

func (s *sink) all() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.msgs...)
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

var errBrokerDown = errors.New("broker down (injected)")

// downTopicPublisher injects a transport failure a real broker cannot show
// on demand for one topic only: while down is set, every call on topic fails
// with errBrokerDown (outcome unknown); everything else goes to next.
type downTopicPublisher struct {
	next  message.Publisher
	topic string
	down  atomic.Bool
}

func (p *downTopicPublisher) Publish(topic string, msgs ...*message.Message) error {
	if topic == p.topic && p.down.Load() {
		return errBrokerDown
	}
	return p.next.Publish(topic, msgs...)
}

func (p *downTopicPublisher) Close() error { return nil }

// gatedPublisher holds every Publish until the gate is opened, standing in
// for a slow broker; it then delegates to next.
type gatedPublisher struct {
	next    message.Publisher
	gate    chan struct{}
	entered atomic.Int64
}

func (p *gatedPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.entered.Add(1)
	<-p.gate
	return p.next.Publish(topic, msgs...)
}

func (p *gatedPublisher) Close() error { return nil }

// noopPublisher accepts everything (benchmarks only).
type noopPublisher struct{}

func (noopPublisher) Publish(string, ...*message.Message) error { return nil }
func (noopPublisher) Close() error                              { return nil }

// migrated returns a test database with the outbox table created.
func migrated(t testing.TB, db *testenv.DB, opts ...Option) {
	t.Helper()
	if err := Migrate(context.Background(), db.DB, db.Dialect, opts...); err != nil {
		t.Fatalf("migrate: %v", err)
	}
}

// msg builds a message for entity pk of cqrs_id with a body naming both and n.
func msg(cqrsID string, pk, n int) Message {
	key := fmt.Sprintf("%s:%d", cqrsID, pk)
	return Message{
		CQRSID:    cqrsID,
		EntityKey: key,
		Topic:     cqrsID,
		Body:      []byte(fmt.Sprintf(`{"cqrs_id":%q,"pk":%d,"n":%d}`, cqrsID, pk, n)),
	}
}

// insertCommitted writes msgs in one committed transaction and returns their ids.
func insertCommitted(t testing.TB, db *sqlx.DB, d *testenv.DB, msgs []Message, opts ...Option) []int64 {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	ids, err := Insert(ctx, tx, d.Dialect, msgs, opts...)
	if err != nil {
		_ = tx.Rollback()
		t.Fatalf("insert: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}
	return ids
}

// rowCount counts rows of the outbox table.
func rowCount(t testing.TB, db *testenv.DB, opts ...Option) int64 {
	t.Helper()
	n, _, err := Pending(context.Background(), db.DB, db.Dialect, opts...)
	if err != nil {
		t.Fatalf("pending: %v", err)
	}
	return n
}

// newRelay builds a relay with fast polling and a quiet logger.
func newRelay(t testing.TB, db *sqlx.DB, d *testenv.DB, pub message.Publisher, o RelayOptions) *Relay {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quiet
	}
	if o.PollMin == 0 {
		o.PollMin = time.Millisecond
	}
	if o.PollMax == 0 {
		o.PollMax = 20 * time.Millisecond
	}
	r, err := NewRelay(db, d.Dialect, pub, o)
	if err != nil {
		t.Fatalf("new relay: %v", err)
	}
	return r
}

// drain runs RunOnce until the outbox is empty.
func drain(t testing.TB, r *Relay, db *testenv.DB) int {
	t.Helper()
	total := 0
	testenv.WaitFor(t, 30*time.Second, "outbox to drain", func() bool {
		n, err := r.RunOnce(context.Background())
		if err != nil {
			t.Fatalf("run once: %v", err)
		}
		total += n
		return rowCount(t, db) == 0
	})
	return total
}

// rowState is the bookkeeping of one outbox row.
type rowState struct {
	ID        int64   `db:"id"`
	Body      string  `db:"body"`
	Topic     string  `db:"topic"`
	ClaimedBy *string `db:"claimed_by"`
	Attempts  int64   `db:"attempts"`
	LastError *string `db:"last_error"`
}

func rowsOf(t testing.TB, db *testenv.DB) []rowState {
	t.Helper()
	var out []rowState
	if err := db.Select(&out, "SELECT id, body, topic, claimed_by, attempts, last_error FROM cqrs_outbox ORDER BY id"); err != nil {
		t.Fatalf("read outbox rows: %v", err)
	}
	return out
}
