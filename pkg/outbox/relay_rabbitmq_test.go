package outbox

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// rabbitScratch is a test's own exchange and queue on the test broker,
// deleted at the end.
func rabbitScratch(t *testing.T, args amqp.Table, keys ...string) (tr *transports.RabbitMQ, ch *amqp.Channel, queue string) {
	t.Helper()
	u := testenv.Need(t, testenv.EnvAMQP, "RabbitMQ")
	conn, err := amqp.Dial(u)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	exchange, queue := testenv.Name("gocqrs_ex"), testenv.Name("gocqrs_q")
	t.Cleanup(func() {
		if c, err := conn.Channel(); err == nil {
			_, _ = c.QueueDelete(queue, false, false, false)
			_ = c.ExchangeDelete(exchange, false, false)
		}
		_ = conn.Close()
	})
	if ch, err = conn.Channel(); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := ch.QueueBind(queue, k, exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	tr, err = transports.NewRabbitMQ(context.Background(), transports.Config{
		Transport: transports.RabbitMQName, URL: u, Exchange: exchange,
	}, quiet)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr, ch, queue
}

// Through the real broker: a queue that holds three messages makes RabbitMQ
// nack the rest of a pipelined call, and unroutable messages come back; the
// relay deletes exactly the confirmed rows, sets the others aside, and once
// there is room publishes them, each entity in order.
func TestRelayRabbitMQPerMessageOutcomes(t *testing.T) {
	t.Parallel()
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		tr, ch, queue := rabbitScratch(t, amqp.Table{"x-max-length": int32(3), "x-overflow": "reject-publish"}, "author")
		migrated(t, db)
		ctx := context.Background()
		ghost := Message{CQRSID: "ghost", EntityKey: "ghost:1", Topic: "ghost", Body: []byte(`{"ghost":1}`)}
		ids := insertCommitted(t, db.DB, db, []Message{
			msg("author", 1, 1), msg("author", 2, 1), ghost, msg("author", 3, 1), msg("author", 1, 2), msg("author", 4, 1),
		})
		r := newRelay(t, db.DB, db, tr, RelayOptions{ErrorBackoff: time.Hour, ErrorBackoffMax: time.Hour})
		n, err := r.RunOnce(ctx)
		if n != 3 || err != nil {
			t.Fatalf("RunOnce = %d, %v; want the 3 rows the queue took and no error", n, err)
		}
		rows := rowsOf(t, db)
		wantLeft := []int64{ids[2], ids[4], ids[5]}
		if len(rows) != 3 {
			t.Fatalf("rows left = %+v, want ids %v", rows, wantLeft)
		}
		for i, row := range rows {
			if row.ID != wantLeft[i] || row.Attempts != 1 || row.LastError == nil || row.ClaimedBy != nil {
				t.Fatalf("row %+v: want id %d set aside with attempts 1 and last_error", row, wantLeft[i])
			}
		}
		if st := r.Stats(); st.Rejected != 3 || st.Published != 3 {
			t.Fatalf("stats = %+v, want 3 rejected and 3 published", st)
		}

		// Make room and end the set-aside: the author rows go out, the ghost
		// row is still unroutable.
		if _, err := ch.QueuePurge(queue, false); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec("UPDATE cqrs_outbox SET claimed_until = NULL"); err != nil {
			t.Fatal(err)
		}
		n, err = r.RunOnce(ctx)
		if n != 2 || err != nil {
			t.Fatalf("RunOnce after making room = %d, %v; want the 2 author rows (ghost still unroutable)", n, err)
		}
		var got []string
		for {
			d, ok, err := ch.Get(queue, true)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			got = append(got, string(d.Body))
		}
		want := []string{string(msg("author", 1, 2).Body), string(msg("author", 4, 1).Body)}
		if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Fatalf("queue holds %q, want %q", got, want)
		}
		if rows := rowsOf(t, db); len(rows) != 1 || rows[0].ID != ids[2] || rows[0].Attempts != 2 {
			t.Fatalf("rows left = %+v, want the unroutable ghost row, refused twice", rows)
		}
	})
}
