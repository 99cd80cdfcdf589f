package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/brokertest"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// TestRabbitMQRelayUnroutable: a cqrs_id no queue is bound to ("orphan"),
// written between routable ones, does not stop the relay. The broker
// returns its message (mandatory publish); the relay sets the row aside
// (attempts and last_error recorded, the row kept) and publishes every
// routable row, those written after the rejection included, in order.
func TestRabbitMQRelayUnroutable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	node := brokertest.Shared(t)
	u, _ := node.Vhost(t)

	// Only "author" is routable: one queue bound with that key.
	ch := brokertest.Channel(t, u)
	if err := ch.ExchangeDeclare(rmqExchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("authors", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("authors", "author", rmqExchange, false, nil); err != nil {
		t.Fatal(err)
	}
	conn := brokertest.Dial(t, u)

	db, insert := orphanMaster(t)
	// author 1, orphan 1, author 2: committed before the relay starts, so
	// they are claimed in one batch with the orphan in the middle.
	insert("author", 1)
	insert("orphan", 1)
	insert("author", 2)

	tr := newRabbitTransport(t, u)
	relay, err := outbox.NewRelay(db.DB, db.Dialect, tr.Publisher(), outbox.RelayOptions{
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond,
		ErrorBackoff: 20 * time.Millisecond, ErrorBackoffMax: 200 * time.Millisecond,
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "relay", relay.Run)
	testenv.WaitFor(t, rmqWait, "the broker's rejection of the orphan", func() bool { return relay.Stats().Rejected >= 1 })

	// Written after the rejection: published as well.
	for id := 3; id <= 10; id++ {
		insert("author", id)
	}
	testenv.WaitFor(t, rmqWait, "10 author messages in queue authors", func() bool {
		ready, _ := brokertest.QueueState(t, conn, "authors")
		return ready >= 10
	})
	var pks []string
	for _, msg := range brokertest.Drain(t, u, "authors") {
		p, err := wire.Decode(msg.Body)
		if err != nil {
			t.Fatal(err)
		}
		pks = append(pks, fmt.Sprint(p.InstancePK))
	}
	if got := strings.Join(pks, ","); got != "1,2,3,4,5,6,7,8,9,10" {
		t.Errorf("authors published %s, want 1..10 in order", got)
	}

	type row struct {
		CQRSID    string  `db:"cqrs_id"`
		Attempts  int     `db:"attempts"`
		LastError *string `db:"last_error"`
	}
	var rows []row
	testenv.WaitFor(t, rmqWait, "the outbox holding only the orphan's row", func() bool {
		rows = nil
		if err := db.SelectContext(ctx, &rows, "SELECT cqrs_id, attempts, last_error FROM cqrs_outbox"); err != nil {
			t.Fatal(err)
		}
		return len(rows) == 1
	})
	r := rows[0]
	if r.CQRSID != "orphan" || r.Attempts < 1 || r.LastError == nil || !strings.Contains(*r.LastError, "unroutable") {
		t.Errorf("outbox row %+v (last_error %v), want the orphan with attempts >= 1 and an unroutable last_error", r, deref(r.LastError))
	}
	if st := relay.Stats(); st.Published != 10 || st.Rejected < 1 {
		t.Errorf("relay stats %+v, want 10 published and the orphan rejected", st)
	}
}

func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}
