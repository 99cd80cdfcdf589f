package transports_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// wireMessage is one file of the fixtures' messages/ directory.
type wireMessage struct {
	file       string
	RoutingKey string         `json:"routing_key"`
	Properties map[string]any `json:"properties"`
	Body       string         `json:"body"`
}

func readWireMessages(t *testing.T) []wireMessage {
	t.Helper()
	dir := filepath.Join(testenv.FixturesDir(t), "messages")
	files, err := filepath.Glob(filepath.Join(dir, "[0-9]*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixture messages in %s: %v", dir, err)
	}
	sort.Strings(files)
	out := make([]wireMessage, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m := wireMessage{file: filepath.Base(f)}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(m.Properties) != 14 || m.RoutingKey == "" {
			t.Fatalf("%s: unexpected shape", f)
		}
		out = append(out, m)
	}
	return out
}

// pikaProperties renders a delivery's properties as the fixtures list
// them (pika's BasicProperties; null when the property flag is not set).
func pikaProperties(d amqp.Delivery) map[string]any {
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
		return float64(n)
	}
	p := map[string]any{
		"content_type":     str(d.ContentType),
		"content_encoding": str(d.ContentEncoding),
		"headers":          nil,
		"delivery_mode":    num(d.DeliveryMode),
		"priority":         num(d.Priority),
		"correlation_id":   str(d.CorrelationId),
		"reply_to":         str(d.ReplyTo),
		"expiration":       str(d.Expiration),
		"message_id":       str(d.MessageId),
		"timestamp":        nil,
		"type":             str(d.Type),
		"user_id":          str(d.UserId),
		"app_id":           str(d.AppId),
		"cluster_id":       nil, // amqp091 does not expose it; gocqrs never sets it
	}
	if d.Headers != nil {
		p["headers"] = map[string]any(d.Headers)
	}
	if !d.Timestamp.IsZero() {
		p["timestamp"] = d.Timestamp.Unix()
	}
	return p
}

// Every message django-cqrs put on the wire, published through the
// transport, arrives with exactly django-cqrs's properties, routing key and
// body, even when the Watermill message carries metadata of its own.
func TestRabbitMQPublishFixtureProperties(t *testing.T) {
	t.Parallel()
	fixtures := readWireMessages(t)
	s := newScratch(t)
	q := s.queue(t, nil, "#")
	r := s.transport(t)
	for _, fx := range fixtures {
		m := msg(fx.Body)
		m.Metadata.Set("cqrs_id", "author") // as the relay sets: must not become a header
		m.Metadata.Set("outbox_id", "7")
		if exp, ok := fx.Properties["expiration"].(string); ok {
			m.Metadata.Set(transports.MetaExpiration, exp)
		}
		if err := r.Publish(fx.RoutingKey, m); err != nil {
			t.Fatalf("%s: %v", fx.file, err)
		}
	}
	ch := rawChannel(t, s.url)
	for _, fx := range fixtures {
		d, ok, err := ch.Get(q, true)
		if err != nil || !ok {
			t.Fatalf("%s: basic.get: ok=%v err=%v", fx.file, ok, err)
		}
		if d.RoutingKey != fx.RoutingKey || d.Exchange != s.exchange {
			t.Errorf("%s: routed %q via %q, want %q via %q", fx.file, d.RoutingKey, d.Exchange, fx.RoutingKey, s.exchange)
		}
		if string(d.Body) != fx.Body {
			t.Errorf("%s: body differs:\n got %s\nwant %s", fx.file, d.Body, fx.Body)
		}
		if got := pikaProperties(d); !reflect.DeepEqual(got, fx.Properties) {
			t.Errorf("%s: properties\n got %v\nwant %v", fx.file, got, fx.Properties)
		}
	}
	if _, ok, _ := ch.Get(q, true); ok {
		t.Fatal("more messages than published")
	}
}

// An unroutable publish fails with ErrUnroutable naming the key, and a
// return never leaks into the result of a later call.
func TestRabbitMQPublishUnroutable(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	q := s.queue(t, nil, "somebody")
	r := s.transport(t)
	for round := range 3 {
		err := r.Publish("nobody.home", msg("a"), msg("b"), msg("c"))
		if !errors.Is(err, transports.ErrUnroutable) || errors.Is(err, transports.ErrNacked) {
			t.Fatalf("round %d: unroutable publish: err = %v, want ErrUnroutable only", round, err)
		}
		if !strings.Contains(err.Error(), `"nobody.home"`) || !strings.Contains(err.Error(), "3 of 3") {
			t.Fatalf("round %d: error %q does not name the key and the count", round, err)
		}
		if err := r.Publish("somebody", msg("ok"+strconv.Itoa(round))); err != nil {
			t.Fatalf("round %d: routable publish after an unroutable one: %v", round, err)
		}
	}
	if n := s.depth(t, q); n != 3 {
		t.Fatalf("queue holds %d messages, want 3", n)
	}
}

// A queue that rejects publishes makes the broker nack: ErrNacked.
func TestRabbitMQPublishNacked(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	s.queue(t, amqp.Table{"x-max-length": int32(0), "x-overflow": "reject-publish"}, "full")
	r := s.transport(t)
	err := r.Publish("full", msg("x"), msg("y"))
	if !errors.Is(err, transports.ErrNacked) || errors.Is(err, transports.ErrUnroutable) {
		t.Fatalf("publish to a full queue: err = %v, want ErrNacked", err)
	}
	if !strings.Contains(err.Error(), `"full"`) {
		t.Fatalf("error %q does not name the routing key", err)
	}
}

// 5000 messages in one call are pipelined and all confirmed; concurrent
// calls are safe.
func TestRabbitMQPublishPipelinedAndConcurrent(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	bulk := s.queue(t, nil, "bulk")
	many := s.queue(t, nil, "many")
	r := s.transport(t)
	const n = 5000
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = msg(`{"i":` + strconv.Itoa(i) + `}`)
	}
	if err := r.Publish("bulk", msgs...); err != nil {
		t.Fatal(err)
	}
	if got := s.depth(t, bulk); got != n {
		t.Fatalf("queue holds %d messages after a confirmed publish of %d", got, n)
	}

	const workers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := r.Publish("many", msg(strconv.Itoa(w*each+i))); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := s.depth(t, many); got != workers*each {
		t.Fatalf("queue holds %d messages after %d concurrent confirmed publishes", got, workers*each)
	}
}

func TestRabbitMQPublishRejectsBadInput(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	q := s.queue(t, nil, "k")
	r := s.transport(t)
	bad := msg("x")
	bad.Metadata.Set(transports.MetaExpiration, "10s")
	err := r.Publish("k", msg("good"), bad)
	if err == nil || !strings.Contains(err.Error(), `"expiration"`) {
		t.Fatalf("bad expiration: err = %v, want one naming the metadata key", err)
	}
	if err := r.Publish("", msg("x")); err == nil {
		t.Fatal("empty routing key accepted")
	}
	if err := r.Publish(strings.Repeat("k", 256), msg("x")); err == nil {
		t.Fatal("256-byte routing key accepted")
	}
	if err := r.Publish("k"); err != nil {
		t.Fatalf("publishing nothing: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := msg("cancelled")
	c.SetContext(ctx)
	if err := r.Publish("k", c); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: err = %v", err)
	}
	if n := s.depth(t, q); n != 0 {
		t.Fatalf("a rejected call published %d message(s)", n)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Publish("k", msg("late")); !errors.Is(err, transports.ErrRabbitMQClosed) {
		t.Fatalf("publish after Close: err = %v, want ErrRabbitMQClosed", err)
	}
	if _, err := r.Subscribe(context.Background(), q); !errors.Is(err, transports.ErrRabbitMQClosed) {
		t.Fatalf("subscribe after Close: err = %v, want ErrRabbitMQClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// A queue that takes two messages and rejects the rest: in one pipelined
// call of five, the broker confirms the first two and nacks the others, and
// Publish says so message by message.
func TestRabbitMQPublishPartialNackPerMessage(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	q := s.queue(t, amqp.Table{"x-max-length": int32(2), "x-overflow": "reject-publish"}, "two")
	r := s.transport(t)
	msgs := []*message.Message{msg("m0"), msg("m1"), msg("m2"), msg("m3"), msg("m4")}
	err := r.Publish("two", msgs...)
	var pe *transports.PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("publish to a queue of two: err = %v, want a *PublishError", err)
	}
	if !errors.Is(err, transports.ErrNacked) || !errors.Is(err, transports.ErrRejected) || errors.Is(err, transports.ErrUnroutable) {
		t.Fatalf("err = %v, want it to wrap ErrNacked (and so ErrRejected) only", err)
	}
	if pe.Total != 5 || len(pe.Failed) != 3 {
		t.Fatalf("PublishError = %+v, want 3 of 5 failed", pe)
	}
	for i := 2; i < 5; i++ {
		if !errors.Is(pe.Failed[i], transports.ErrNacked) {
			t.Fatalf("message %d: cause %v, want ErrNacked", i, pe.Failed[i])
		}
	}
	if !strings.Contains(err.Error(), "3 of 5") || !strings.Contains(err.Error(), "messages 2, 3, 4") {
		t.Fatalf("error %q does not summarise the failed messages", err)
	}
	got := transports.PublishFailures(err, 5)
	if len(got) != 3 || got[0] != nil || got[2] == nil {
		t.Fatalf("PublishFailures = %v, want indexes 2..4", got)
	}
	ch := rawChannel(t, s.url)
	for _, want := range []string{"m0", "m1"} {
		d, ok, err := ch.Get(q, true)
		if err != nil || !ok || string(d.Body) != want {
			t.Fatalf("basic.get = %q ok=%v err=%v, want %s", d.Body, ok, err, want)
		}
	}
	// The channel stays usable: the next call to a drained queue goes through.
	if err := r.Publish("two", msg("again")); err != nil {
		t.Fatalf("publish after a partial nack: %v", err)
	}
}

// Every message of an unroutable call is named, duplicates included: a
// return is matched to a message by its body.
func TestRabbitMQPublishUnroutablePerMessage(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	s.queue(t, nil, "bound")
	r := s.transport(t)
	err := r.Publish("unbound", msg("same"), msg("other"), msg("same"))
	var pe *transports.PublishError
	if !errors.As(err, &pe) || pe.Total != 3 || len(pe.Failed) != 3 {
		t.Fatalf("unroutable call: err = %v, want a PublishError with 3 of 3 failed", err)
	}
	for i := range 3 {
		if !errors.Is(pe.Failed[i], transports.ErrUnroutable) {
			t.Fatalf("message %d: cause %v, want ErrUnroutable", i, pe.Failed[i])
		}
	}
	if err := r.Publish("bound", msg("x"), msg("y")); err != nil {
		t.Fatalf("routable call after an unroutable one: %v", err)
	}
}
