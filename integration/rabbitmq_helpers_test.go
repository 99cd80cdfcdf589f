package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/brokertest"
	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// Every RabbitMQ test has a vhost (or a node) of its own, so it can use
// django-cqrs's real exchange and queue names.
const (
	rmqExchange = "cqrs"
	rmqWait     = 30 * time.Second
)

// newRabbitTransport connects a rabbitmq transport to rawURL (exchange
// "cqrs"), closed when the test ends.
func newRabbitTransport(t *testing.T, rawURL string) *transports.RabbitMQ {
	t.Helper()
	r, err := transports.NewRabbitMQ(context.Background(), transports.Config{
		Transport: transports.RabbitMQName, URL: rawURL, Exchange: rmqExchange,
	}, quietLogger())
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close rabbitmq transport: %v", err)
		}
	})
	return r
}

// startRabbitConsumer runs a consumer of tr until the test ends (or stop is
// called) and waits until it consumes.
func startRabbitConsumer(t *testing.T, tr transports.Transport, reg *registry.Registry, ap consumer.Applier, opts consumer.Options) *runningConsumer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	c, err := consumer.New(tr, reg, ap, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningConsumer{Consumer: c, cancel: cancel, done: make(chan error, 1)}
	go func() { rc.done <- c.Run(ctx) }()
	t.Cleanup(func() { rc.stop(t) })
	select {
	case <-c.Running():
	case err := <-rc.done:
		rc.done <- err
		t.Fatalf("consumer stopped while starting: %v", err)
	case <-time.After(rmqWait):
		t.Fatal("consumer did not start")
	}
	return rc
}

// runInBackground runs fn until the test ends and fails the test when fn
// returns an error other than on shutdown.
func runInBackground(t *testing.T, name string, fn func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(rmqWait):
			t.Errorf("%s did not stop within %s", name, rmqWait)
		}
	})
}

// createFixtureReplicaTables creates the fixture replica's tables on
// PostgreSQL exactly as replica_schema.json describes them (the types
// Django created; fixtures.ReplicaDDL), and the tombstone table, and
// returns the schema.
func createFixtureReplicaTables(t *testing.T, db *testenv.DB) fixtures.Schema {
	t.Helper()
	schema := fixtures.LoadSchema(t)
	fixtures.SetUpReplica(t, db)
	return schema
}

// propsJSON renders properties canonically (sorted keys, JSON numbers).
func propsJSON(t *testing.T, props map[string]any) string {
	t.Helper()
	b, err := json.Marshal(props)
	if err != nil {
		t.Fatalf("properties %v: %v", props, err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(v)
	return string(b)
}

// compareWire compares a message seen on the broker with a recorded one:
// routing key, every AMQP property, and the exact body bytes.
func compareWire(t *testing.T, what string, got brokertest.Message, want fixtures.Message) {
	t.Helper()
	if got.RoutingKey != want.RoutingKey {
		t.Errorf("%s: routing key %q, want %q", what, got.RoutingKey, want.RoutingKey)
	}
	if g, w := propsJSON(t, got.Properties), propsJSON(t, want.Properties); g != w {
		t.Errorf("%s: properties\n got %s\nwant %s", what, g, w)
	}
	if string(got.Body) != want.Body {
		t.Errorf("%s: body\n got %s\nwant %s", what, got.Body, want.Body)
	}
	if got.Redelivered != want.Redelivered {
		t.Errorf("%s: redelivered %v, want %v", what, got.Redelivered, want.Redelivered)
	}
}

// djangoProps are the properties of a message django-cqrs publishes
// (and of the capture's own publishes): text/plain, persistent, nothing else.
func djangoProps(expiration any) map[string]any {
	return map[string]any{
		"content_type": "text/plain", "content_encoding": nil, "headers": nil, "delivery_mode": 2,
		"priority": nil, "correlation_id": nil, "reply_to": nil, "expiration": expiration, "message_id": nil,
		"timestamp": nil, "type": nil, "user_id": nil, "app_id": nil, "cluster_id": nil,
	}
}

// objectKeys returns the keys of the JSON object raw in document order and
// their raw values.
func objectKeys(raw []byte) ([]string, map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, fmt.Errorf("not a JSON object: %.40s", raw)
	}
	var keys []string
	vals := map[string]json.RawMessage{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		keys = append(keys, k.(string))
		vals[k.(string)] = v
	}
	return keys, vals, nil
}
