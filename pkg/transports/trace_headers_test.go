package transports

import (
	"reflect"
	"testing"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/pkg/tracectx"
)

const testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// The RabbitMQ publisher sends the trace context headers only, and only
// valid ones; a message without them has no headers (as django-cqrs).
func TestRabbitPublishingTraceHeaders(t *testing.T) {
	cases := []struct {
		name string
		md   map[string]string
		want amqp.Table
	}{
		{"no trace context", map[string]string{"correlation_id": "c1", "pk": "1", "revision": "3", "cqrs_id": "author"}, nil},
		{"traceparent", map[string]string{"traceparent": testTraceparent, "pk": "1"}, amqp.Table{"traceparent": testTraceparent}},
		{"traceparent and tracestate", map[string]string{"traceparent": testTraceparent, "tracestate": "k=v"},
			amqp.Table{"traceparent": testTraceparent, "tracestate": "k=v"}},
		{"invalid traceparent", map[string]string{"traceparent": "00-zz", "tracestate": "k=v"}, nil},
		{"unsafe tracestate", map[string]string{"traceparent": testTraceparent, "tracestate": "k=v\nx"},
			amqp.Table{"traceparent": testTraceparent}},
		{"tracestate alone", map[string]string{"tracestate": "k=v"}, nil},
	}
	for _, c := range cases {
		msg := message.NewMessage("id", []byte("{}"))
		for k, v := range c.md {
			msg.Metadata.Set(k, v)
		}
		p, err := publishing(msg)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !reflect.DeepEqual(p.Headers, c.want) {
			t.Errorf("%s: headers %v, want %v", c.name, p.Headers, c.want)
		}
	}
}

// Kafka carries metadata as record headers: the trace context survives a
// round trip.
func TestKafkaTraceHeadersRoundTrip(t *testing.T) {
	m := kafkaMarshaler{prefix: "cqrs."}
	msg := message.NewMessage("id-1", []byte("{}"))
	msg.Metadata.Set(tracectx.HeaderTraceparent, testTraceparent)
	msg.Metadata.Set(tracectx.HeaderTracestate, "k=v")
	rec, err := m.Marshal("cqrs.author", msg)
	if err != nil {
		t.Fatal(err)
	}
	cm := &sarama.ConsumerMessage{Topic: "cqrs.author"}
	for i := range rec.Headers {
		cm.Headers = append(cm.Headers, &rec.Headers[i])
	}
	got, err := m.Unmarshal(cm)
	if err != nil {
		t.Fatal(err)
	}
	if got.Metadata.Get(tracectx.HeaderTraceparent) != testTraceparent || got.Metadata.Get(tracectx.HeaderTracestate) != "k=v" {
		t.Errorf("trace context after a Kafka round trip: %v", got.Metadata)
	}
}
