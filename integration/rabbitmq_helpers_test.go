package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/brokertest"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
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

// readFixtureJSON decodes a wire-fixtures file.
func readFixtureJSON(t *testing.T, rel string, v any) {
	t.Helper()
	path := filepath.Join(testenv.FixturesDir(t), rel)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// rmqColumn is a column of wire-fixtures/replica_schema.json.
type rmqColumn struct {
	Column   string `json:"column"`
	DataType string `json:"data_type"`
	Nullable string `json:"nullable"`
	CharMax  *int   `json:"char_max_length"`
	Prec     *int   `json:"numeric_precision"`
	Scale    *int   `json:"numeric_scale"`
}

// rmqRows are table rows as PostgreSQL's text output (col::text, session
// time zone UTC); nil is SQL NULL.
type rmqRows map[string][]map[string]*string

// rmqReplicaTables are the fixture replica's tables, in schema order.
var rmqReplicaTables = []string{"author_ref", "book_ref"}

// createFixtureReplicaTables creates the fixture replica's tables on
// PostgreSQL exactly as replica_schema.json describes them (the types
// Django created), and the tombstone table.
func createFixtureReplicaTables(t *testing.T, db *testenv.DB) map[string][]rmqColumn {
	t.Helper()
	var schema map[string][]rmqColumn
	readFixtureJSON(t, "replica_schema.json", &schema)
	ctx := context.Background()
	for _, table := range rmqReplicaTables {
		var defs []string
		for _, c := range schema[table] {
			typ := c.DataType
			switch typ {
			case "character varying":
				typ = fmt.Sprintf("varchar(%d)", *c.CharMax)
			case "numeric":
				typ = fmt.Sprintf("numeric(%d,%d)", *c.Prec, *c.Scale)
			}
			def := c.Column + " " + typ
			if c.Nullable == "NO" {
				def += " NOT NULL"
			}
			if c.Column == "id" {
				def += " PRIMARY KEY"
			}
			defs = append(defs, def)
		}
		if _, err := db.ExecContext(ctx, "CREATE TABLE "+table+" ("+strings.Join(defs, ", ")+")"); err != nil {
			t.Fatalf("create %s: %v", table, err)
		}
	}
	if err := replica.Migrate(ctx, db.DB, db.Dialect, replica.Options{}); err != nil {
		t.Fatal(err)
	}
	return schema
}

// readFixtureRows reads the fixture replica's tables as the capture did:
// every column as col::text with the session time zone UTC, by id.
func readFixtureRows(t *testing.T, db *testenv.DB, schema map[string][]rmqColumn) rmqRows {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET TIME ZONE 'UTC'"); err != nil {
		t.Fatal(err)
	}
	out := rmqRows{}
	for _, table := range rmqReplicaTables {
		var sel []string
		for _, c := range schema[table] {
			sel = append(sel, c.Column+"::text")
		}
		rows, err := conn.QueryxContext(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM "+table+" ORDER BY id")
		if err != nil {
			t.Fatal(err)
		}
		out[table] = []map[string]*string{}
		for rows.Next() {
			vals := make([]*string, len(sel))
			ptrs := make([]any, len(sel))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				t.Fatal(err)
			}
			row := map[string]*string{}
			for i, c := range schema[table] {
				row[c.Column] = vals[i]
			}
			out[table] = append(out[table], row)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return out
}

// showRows renders rows for comparison and messages: one line per row,
// columns in schema order, NULL for SQL NULL; rows sorted by id.
func showRows(schema map[string][]rmqColumn, rows rmqRows) string {
	var b strings.Builder
	for _, table := range rmqReplicaTables {
		list := append([]map[string]*string(nil), rows[table]...)
		sort.SliceStable(list, func(i, j int) bool { return rowID(list[i]) < rowID(list[j]) })
		fmt.Fprintf(&b, "%s:", table)
		for _, row := range list {
			b.WriteString("\n  ")
			for _, c := range schema[table] {
				v := "NULL"
				if p := row[c.Column]; p != nil {
					v = strconv.Quote(*p)
				}
				fmt.Fprintf(&b, "%s=%s ", c.Column, v)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func rowID(row map[string]*string) int {
	if p := row["id"]; p != nil {
		n, _ := strconv.Atoi(*p)
		return n
	}
	return 0
}

// failingCreate is the fixture replica's cqrs_create override: "fail-always"
// always fails, "fail-once" fails the first time its pk is seen (by this
// hook, the fixture's "worker process"); other rows get the default create.
type failingCreate struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (f *failingCreate) create(ctx context.Context, ac *registry.ApplyContext, data *wire.Fields) error {
	name, _ := data.Get("name")
	pk, _ := data.Get("id")
	switch name {
	case "fail-always":
		return errors.New("fixture replica: fail-always")
	case "fail-once":
		key := fmt.Sprint(pk)
		f.mu.Lock()
		first := !f.seen[key]
		f.seen[key] = true
		f.mu.Unlock()
		if first {
			return errors.New("fixture replica: fail-once (first attempt)")
		}
	}
	return replica.DefaultCreate(ctx, ac, data)
}

// fixtureReplicaRegistry declares the fixture replica's models (README §1):
// author with the failing create override, book with its mapping.
func fixtureReplicaRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	reg := registry.New()
	hook := &failingCreate{seen: map[string]bool{}}
	if err := reg.RegisterReplica(registry.ReplicaModel{
		CQRSID: "author", Table: "author_ref", PK: "id",
		Hooks: registry.ReplicaHooks{Create: hook.create},
	}); err != nil {
		t.Fatal(err)
	}
	if err := reg.RegisterReplica(registry.ReplicaModel{
		CQRSID: "book", Table: "book_ref", PK: "id",
		Mapping: []registry.Mapping{{From: "id", To: "id"}, {From: "title", To: "name"}, {From: "author", To: "author_id"}},
	}); err != nil {
		t.Fatal(err)
	}
	return reg
}

// rmqWireMessage is a message as the fixtures record it (messages/ files,
// published_by_replica and dead-letter queue contents).
type rmqWireMessage struct {
	Scenario    string         `json:"scenario"`
	PublishedBy string         `json:"published_by"`
	RoutingKey  string         `json:"routing_key"`
	Redelivered bool           `json:"redelivered"`
	Properties  map[string]any `json:"properties"`
	Body        string         `json:"body"`
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
func compareWire(t *testing.T, what string, got brokertest.Message, want rmqWireMessage) {
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
