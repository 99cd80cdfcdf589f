package outbox

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// rejectingPublisher stands in for a broker that refuses the messages of one
// topic (as RabbitMQ returns unroutable messages) while reject is set, and
// passes everything else to next.
type rejectingPublisher struct {
	next   message.Publisher
	topic  string
	reject atomic.Bool
}

func (p *rejectingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if topic == p.topic && p.reject.Load() {
		return fmt.Errorf("routing key %q: %w", topic, transports.ErrRejected)
	}
	return p.next.Publish(topic, msgs...)
}

func (p *rejectingPublisher) Close() error { return nil }

// TestRejectedRowIsSetAside: a message the broker refuses keeps its row (set
// aside with a growing delay) and holds back only its own entity's later
// rows; every other entity flows; once the broker takes it, the entity's rows
// go out in order.
func TestRejectedRowIsSetAside(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		migrated(t, db)
		ctx := context.Background()
		ghost1 := Message{CQRSID: "ghost", EntityKey: "ghost:1", Topic: "ghost", Body: []byte(`{"n":1}`)}
		ghost2 := Message{CQRSID: "ghost", EntityKey: "ghost:1", Topic: "ghost", Body: []byte(`{"n":2}`)}
		other := Message{CQRSID: "ghost", EntityKey: "ghost:2", Topic: "ghost-ok", Body: []byte(`{"n":3}`)}
		ids := insertCommitted(t, db.DB, db, []Message{msg("author", 1, 1), ghost1, msg("author", 2, 1), ghost2, other, msg("author", 1, 2)})
		s := newSink(t, "author", "ghost", "ghost-ok")
		pub := &rejectingPublisher{next: s, topic: "ghost"}
		pub.reject.Store(true)
		r := newRelay(t, db.DB, db, pub, RelayOptions{ErrorBackoff: 300 * time.Millisecond, ErrorBackoffMax: time.Second})

		n, err := r.RunOnce(ctx)
		if err != nil || n != 4 {
			t.Fatalf("RunOnce = %d, %v; want the 4 rows of other entities published and no error", n, err)
		}
		rows := rowsOf(t, db)
		if len(rows) != 2 || rows[0].ID != ids[1] || rows[1].ID != ids[3] {
			t.Fatalf("rows left = %+v, want the rejected row %d and its entity's later row %d", rows, ids[1], ids[3])
		}
		if rows[0].Attempts != 1 || rows[0].LastError == nil || rows[1].Attempts != 0 {
			t.Fatalf("rejected row %+v / later row %+v: want attempts 1 with last_error, and 0", rows[0], rows[1])
		}
		// Set aside: an immediate cycle claims neither row.
		if n, err := r.RunOnce(ctx); n != 0 || err != nil {
			t.Fatalf("cycle during the set-aside = %d, %v; want nothing", n, err)
		}
		if st := r.Stats(); st.Rejected != 1 || st.Published != 4 {
			t.Fatalf("stats = %+v", st)
		}
		pub.reject.Store(false)
		testenv.WaitFor(t, 10*time.Second, "the set-aside rows to be published", func() bool {
			if _, err := r.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			return rowCount(t, db) == 0
		})
		var ghost []string
		for _, m := range s.all() {
			if m.topic == "ghost" {
				ghost = append(ghost, m.body)
			}
		}
		if fmt.Sprint(ghost) != `[{"n":1} {"n":2}]` {
			t.Fatalf("ghost:1 delivered %v, want n=1 then n=2", ghost)
		}
	})
}
