package brokertest

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

// Dial opens an AMQP connection closed when the test ends; an unreachable
// broker skips the test (fails under CQRS_REQUIRE_SERVICES=1).
func Dial(t testing.TB, rawURL string) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(rawURL)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ at "+testenv.Redact(rawURL), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Channel opens a channel on a new connection closed when the test ends.
func Channel(t testing.TB, rawURL string) *amqp.Channel {
	t.Helper()
	ch, err := Dial(t, rawURL).Channel()
	if err != nil {
		t.Fatalf("brokertest: open channel: %v", err)
	}
	return ch
}

// Publisher publishes raw messages to an exchange as a foreign producer
// does, on a channel in confirm mode, one at a time.
type Publisher struct {
	exchange string
	ch       *amqp.Channel
	returns  chan amqp.Return
}

// NewPublisher returns a publisher to exchange in the vhost of rawURL. It
// does not declare the exchange.
func NewPublisher(t testing.TB, rawURL, exchange string) *Publisher {
	t.Helper()
	ch := Channel(t, rawURL)
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("brokertest: publisher confirms: %v", err)
	}
	return &Publisher{exchange: exchange, ch: ch, returns: ch.NotifyReturn(make(chan amqp.Return, 16))}
}

// DjangoPublishing is body with the properties django-cqrs's producer sets:
// content type text/plain, delivery mode 2 (persistent), nothing else.
func DjangoPublishing(body []byte) amqp.Publishing {
	return amqp.Publishing{ContentType: "text/plain", DeliveryMode: amqp.Persistent, Body: body}
}

// Publish publishes p with routing key key and the mandatory flag, and
// waits for the broker's confirm. The test fails when the broker nacks it
// or returns it as unroutable.
func (p *Publisher) Publish(t testing.TB, key string, pub amqp.Publishing) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, p.exchange, key, true, false, pub)
	if err != nil {
		t.Fatalf("brokertest: publish to %q with key %q: %v", p.exchange, key, err)
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil || !acked {
		t.Fatalf("brokertest: publish to %q with key %q: not confirmed (acked %v, err %v)", p.exchange, key, acked, err)
	}
	// A basic.return comes before the confirm of its message.
	select {
	case r := <-p.returns:
		t.Fatalf("brokertest: message with key %q returned as unroutable: %d %s", r.RoutingKey, r.ReplyCode, r.ReplyText)
	default:
	}
}

// PublishMany publishes pubs with routing key key and the mandatory flag
// without waiting between them (pipelined), then waits for every confirm.
// The broker routes them in this order. The test fails when the broker
// nacks or returns one.
func (p *Publisher) PublishMany(t testing.TB, key string, pubs ...amqp.Publishing) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	confirms := make([]*amqp.DeferredConfirmation, 0, len(pubs))
	for i, pub := range pubs {
		dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, p.exchange, key, true, false, pub)
		if err != nil {
			t.Fatalf("brokertest: publish message %d to %q with key %q: %v", i, p.exchange, key, err)
		}
		confirms = append(confirms, dc)
	}
	for i, dc := range confirms {
		acked, err := dc.WaitContext(ctx)
		if err != nil || !acked {
			t.Fatalf("brokertest: message %d to %q with key %q: not confirmed (acked %v, err %v)", i, p.exchange, key, acked, err)
		}
	}
	select {
	case r := <-p.returns:
		t.Fatalf("brokertest: message with key %q returned as unroutable: %d %s", r.RoutingKey, r.ReplyCode, r.ReplyText)
	default:
	}
}

// Drain takes every message ready in queue (basic.get, acked) and returns
// them in queue order.
func Drain(t testing.TB, rawURL, queue string) []Message {
	t.Helper()
	conn, err := amqp.Dial(rawURL)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ at "+testenv.Redact(rawURL), err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("brokertest: open channel: %v", err)
	}
	var out []Message
	for {
		d, ok, err := ch.Get(queue, false)
		if err != nil {
			t.Fatalf("brokertest: basic.get from %q: %v", queue, err)
		}
		if !ok {
			return out
		}
		out = append(out, MessageOf(d))
		if err := d.Ack(false); err != nil {
			t.Fatalf("brokertest: ack message from %q: %v", queue, err)
		}
	}
}

// QueueState returns the ready messages and the consumers of queue
// (a passive declare, so it fails the test when the queue does not exist).
// Messages delivered to a consumer and not acked yet are not counted; see
// [Node.QueueCounts] for those.
func QueueState(t testing.TB, conn *amqp.Connection, queue string) (ready, consumers int) {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("brokertest: open channel: %v", err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("brokertest: inspect queue %q: %v", queue, err)
	}
	return q.Messages, q.Consumers
}
