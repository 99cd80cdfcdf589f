package brokertest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

// Message is one message as a queue received it.
type Message struct {
	RoutingKey  string
	Body        []byte
	Redelivered bool
	// Properties are the AMQP basic properties under the names the wire
	// fixtures record them with (pika's BasicProperties): content_type,
	// content_encoding, headers, delivery_mode, priority, correlation_id,
	// reply_to, expiration, message_id, timestamp, type, user_id, app_id,
	// cluster_id. A property the message does not carry is nil. amqp091
	// cannot tell a property set to its zero value (priority 0, "") from an
	// absent one, and does not expose cluster_id (always nil).
	Properties map[string]any
}

// MessageOf converts a delivery.
func MessageOf(d amqp.Delivery) Message {
	str := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	num := func(n uint8) any {
		if n == 0 {
			return nil
		}
		return int(n)
	}
	var headers any
	if d.Headers != nil {
		h := map[string]any{}
		for k, v := range d.Headers {
			h[k] = v
		}
		headers = h
	}
	var ts any
	if !d.Timestamp.IsZero() {
		ts = d.Timestamp.Unix()
	}
	return Message{
		RoutingKey:  d.RoutingKey,
		Body:        d.Body,
		Redelivered: d.Redelivered,
		Properties: map[string]any{
			"content_type":     str(d.ContentType),
			"content_encoding": str(d.ContentEncoding),
			"headers":          headers,
			"delivery_mode":    num(d.DeliveryMode),
			"priority":         num(d.Priority),
			"correlation_id":   str(d.CorrelationId),
			"reply_to":         str(d.ReplyTo),
			"expiration":       str(d.Expiration),
			"message_id":       str(d.MessageId),
			"timestamp":        ts,
			"type":             str(d.Type),
			"user_id":          str(d.UserId),
			"app_id":           str(d.AppId),
			"cluster_id":       nil,
		},
	}
}

// Sniffer records every message published to an exchange from the moment
// it was bound, in the order the broker routed them.
type Sniffer struct {
	// Queue is the sniffer's queue.
	Queue string

	mu   sync.Mutex
	msgs []Message
}

// Sniff declares exchange with django-cqrs's flags (topic, durable) in the
// vhost of rawURL, declares queue (non-durable, exclusive: deleted with the
// connection at the end of the test) bound to it with "#", and records
// everything routed there until the test ends.
func Sniff(t testing.TB, rawURL, exchange, queue string) *Sniffer {
	t.Helper()
	ch := Channel(t, rawURL)
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		t.Fatalf("brokertest: sniffer: declare exchange %q: %v", exchange, err)
	}
	q, err := ch.QueueDeclare(queue, false, false, true, false, nil)
	if err != nil {
		t.Fatalf("brokertest: sniffer: declare queue %q: %v", queue, err)
	}
	if err := ch.QueueBind(q.Name, "#", exchange, false, nil); err != nil {
		t.Fatalf("brokertest: sniffer: bind queue %q with '#': %v", q.Name, err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatalf("brokertest: sniffer: consume %q: %v", q.Name, err)
	}
	s := &Sniffer{Queue: q.Name}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range deliveries {
			s.mu.Lock()
			s.msgs = append(s.msgs, MessageOf(d))
			s.mu.Unlock()
		}
	}()
	// Registered after Channel's cleanup, so it runs first: close the
	// channel, then wait for the recorder.
	t.Cleanup(func() {
		_ = ch.Close()
		<-done
	})
	return s
}

// Len returns how many messages the sniffer has received.
func (s *Sniffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// Messages returns the messages received so far, from index from on.
func (s *Sniffer) Messages(from int) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	if from >= len(s.msgs) {
		return nil
	}
	return append([]Message(nil), s.msgs[from:]...)
}

// Wait waits until the sniffer holds at least n messages and returns the
// messages from index from on.
func (s *Sniffer) Wait(t testing.TB, n, from int, timeout time.Duration) []Message {
	t.Helper()
	testenv.WaitFor(t, timeout, fmt.Sprintf("%d messages on sniffer queue %s", n, s.Queue), func() bool {
		return s.Len() >= n
	})
	return s.Messages(from)
}
