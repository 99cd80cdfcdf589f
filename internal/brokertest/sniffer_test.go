package brokertest_test

import (
	"encoding/json"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/brokertest"
	"github.com/gocqrs/gocqrs/internal/testenv"
)

// The sniffer sees every message routed through its exchange, in order,
// and reports exactly the properties each one carries: the other tests'
// "no headers, no other property" checks rest on that.
func TestSnifferProperties(t *testing.T) {
	t.Parallel()
	u := testenv.Need(t, testenv.EnvAMQP, "RabbitMQ")
	exchange := testenv.Name("gocqrs_sniff_ex")
	t.Cleanup(func() {
		conn, err := amqp.Dial(u)
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			_ = ch.ExchangeDelete(exchange, false, false)
		}
	})
	s := brokertest.Sniff(t, u, exchange, "")
	p := brokertest.NewPublisher(t, u, exchange)
	p.Publish(t, "author", brokertest.DjangoPublishing([]byte("plain")))
	p.PublishMany(t, "cqrs.q.author", amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Transient, Expiration: "60000",
		MessageId: "m-1", Headers: amqp.Table{"x": "y"}, Body: []byte("rich"),
	})
	got := s.Wait(t, 2, 0, 30*time.Second)
	want := []struct{ key, body, props string }{
		{"author", "plain", `{"app_id":null,"cluster_id":null,"content_encoding":null,"content_type":"text/plain","correlation_id":null,"delivery_mode":2,"expiration":null,"headers":null,"message_id":null,"priority":null,"reply_to":null,"timestamp":null,"type":null,"user_id":null}`},
		{"cqrs.q.author", "rich", `{"app_id":null,"cluster_id":null,"content_encoding":null,"content_type":"application/json","correlation_id":null,"delivery_mode":1,"expiration":"60000","headers":{"x":"y"},"message_id":"m-1","priority":null,"reply_to":null,"timestamp":null,"type":null,"user_id":null}`},
	}
	if len(got) != len(want) {
		t.Fatalf("sniffed %d messages, want %d", len(got), len(want))
	}
	for i, w := range want {
		props, err := json.Marshal(got[i].Properties)
		if err != nil {
			t.Fatal(err)
		}
		if got[i].RoutingKey != w.key || string(got[i].Body) != w.body || string(props) != w.props {
			t.Errorf("message %d: %q %q %s\nwant %q %q %s", i, got[i].RoutingKey, got[i].Body, props, w.key, w.body, w.props)
		}
	}
}
