package transports_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// djangoTopology is the part of topology.json this test compares.
type djangoTopology struct {
	Exchange struct {
		Name       string         `json:"name"`
		Type       string         `json:"type"`
		Durable    bool           `json:"durable"`
		AutoDelete bool           `json:"auto_delete"`
		Internal   bool           `json:"internal"`
		Arguments  map[string]any `json:"arguments"`
	} `json:"exchange"`
	Queues []struct {
		Name       string         `json:"name"`
		Type       string         `json:"type"`
		Durable    bool           `json:"durable"`
		AutoDelete bool           `json:"auto_delete"`
		Exclusive  bool           `json:"exclusive"`
		Arguments  map[string]any `json:"arguments"`
	} `json:"queues"`
	Bindings []struct {
		Source          string         `json:"source"`
		Destination     string         `json:"destination"`
		DestinationType string         `json:"destination_type"`
		RoutingKey      string         `json:"routing_key"`
		Arguments       map[string]any `json:"arguments"`
	} `json:"bindings"`
	Consumers []struct {
		AckRequired   bool           `json:"ack_required"`
		PrefetchCount float64        `json:"prefetch_count"`
		Arguments     map[string]any `json:"arguments"`
	} `json:"consumers"`
	Settings struct {
		Queue           string   `json:"queue"`
		DeadLetterQueue string   `json:"dead_letter_queue"`
		CQRSIDs         []string `json:"replica_cqrs_ids"`
	} `json:"replica_queue_settings"`
}

func readTopology(t *testing.T) djangoTopology {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.FixturesDir(t), "topology.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx djangoTopology
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	if fx.Exchange.Name == "" || len(fx.Queues) != 2 || len(fx.Bindings) != 6 || fx.Settings.Queue == "" {
		t.Fatalf("topology.json not understood: %+v", fx)
	}
	return fx
}

// noArgs reports whether rabbitmqctl printed empty arguments ([] in JSON).
func noArgs(v any) bool {
	switch a := v.(type) {
	case nil:
		return true
	case []any:
		return len(a) == 0
	case map[string]any:
		return len(a) == 0
	}
	return false
}

// The replica topology the transport declares in a fresh vhost equals what
// django-cqrs's replica declared (topology.json), and its consumer has
// django-cqrs's prefetch and manual acks.
func TestRabbitMQTopologyMatchesDjango(t *testing.T) {
	t.Parallel()
	fx := readTopology(t)
	vurl, vhost := testVhost(t)
	r := newRabbit(t, transports.Config{URL: vurl}) // exchange and prefetch defaults
	if r.Exchange() != fx.Exchange.Name {
		t.Fatalf("default exchange %q, want %q", r.Exchange(), fx.Exchange.Name)
	}
	for range 2 { // declaring again is harmless
		subs, err := r.ReplicaSubscriptions(fx.Settings.Queue, fx.Settings.DeadLetterQueue, fx.Settings.CQRSIDs)
		if err != nil {
			t.Fatal(err)
		}
		want := []transports.Subscription{{Topic: fx.Settings.Queue}}
		if !slices.Equal(subs, want) {
			t.Fatalf("subscriptions %+v, want %+v", subs, want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := r.Subscribe(ctx, fx.Settings.Queue)
	if err != nil {
		t.Fatal(err)
	}

	exchanges := rabbitmqctlJSON(t, "list_exchanges", "-p", vhost, "name", "type", "durable", "auto_delete", "internal", "arguments")
	found := false
	for _, e := range exchanges {
		if e["name"] != fx.Exchange.Name {
			continue
		}
		found = true
		if e["type"] != fx.Exchange.Type || e["durable"] != fx.Exchange.Durable || e["auto_delete"] != fx.Exchange.AutoDelete ||
			e["internal"] != fx.Exchange.Internal || !noArgs(e["arguments"]) || len(fx.Exchange.Arguments) != 0 {
			t.Errorf("exchange %v, want %+v", e, fx.Exchange)
		}
	}
	if !found {
		t.Fatalf("exchange %q not declared: %v", fx.Exchange.Name, exchanges)
	}

	queues := map[string]map[string]any{}
	for _, q := range rabbitmqctlJSON(t, "list_queues", "-p", vhost, "name", "type", "durable", "auto_delete", "exclusive", "arguments") {
		queues[q["name"].(string)] = q
	}
	if len(queues) != len(fx.Queues) {
		t.Errorf("vhost holds queues %v, want exactly %d", queues, len(fx.Queues))
	}
	for _, want := range fx.Queues {
		q, ok := queues[want.Name]
		if !ok {
			t.Errorf("queue %q not declared", want.Name)
			continue
		}
		if q["type"] != want.Type || q["durable"] != want.Durable || q["auto_delete"] != want.AutoDelete ||
			q["exclusive"] != want.Exclusive || !noArgs(q["arguments"]) || len(want.Arguments) != 0 {
			t.Errorf("queue %v, want %+v", q, want)
		}
	}

	type binding struct{ source, dest, kind, key string }
	var got, want []binding
	for _, b := range rabbitmqctlJSON(t, "list_bindings", "-p", vhost, "source_name", "destination_name", "destination_kind", "routing_key", "arguments") {
		if b["source_name"] != fx.Exchange.Name {
			continue // the default exchange's implicit bindings
		}
		if !noArgs(b["arguments"]) {
			t.Errorf("binding with arguments: %v", b)
		}
		got = append(got, binding{b["source_name"].(string), b["destination_name"].(string), b["destination_kind"].(string), b["routing_key"].(string)})
	}
	for _, b := range fx.Bindings {
		if len(b.Arguments) != 0 {
			t.Fatalf("fixture binding with arguments: %+v", b)
		}
		want = append(want, binding{b.Source, b.Destination, b.DestinationType, b.RoutingKey})
	}
	cmp := func(a, b binding) int {
		if c := strings.Compare(a.dest, b.dest); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	}
	slices.SortFunc(got, cmp)
	slices.SortFunc(want, cmp)
	if !slices.Equal(got, want) {
		t.Errorf("bindings\n got %v\nwant %v", got, want)
	}

	testenv.WaitFor(t, wait, "the consumer is listed", func() bool {
		return len(rabbitmqctlJSON(t, "list_consumers", "-p", vhost, "queue_name")) == 1
	})
	consumers := rabbitmqctlJSON(t, "list_consumers", "-p", vhost, "queue_name", "ack_required", "prefetch_count", "arguments")
	wantC := fx.Consumers[0]
	if c := consumers[0]; c["queue_name"] != fx.Settings.Queue || c["ack_required"] != wantC.AckRequired ||
		c["prefetch_count"] != wantC.PrefetchCount || !noArgs(c["arguments"]) {
		t.Errorf("consumer %v, want %+v on queue %q", c, wantC, fx.Settings.Queue)
	}

	// Where django-cqrs's durable exchange exists, a second transport (a
	// master) declares it again without trouble, while watermill-amqp's stock
	// topic config (non-durable exchange) is refused with 406.
	master := newRabbit(t, transports.Config{URL: vurl})
	if err := master.Publish(transports.BroadcastKey("author"), msg("{}")); err != nil {
		t.Fatalf("publish through a second transport on the existing exchange: %v", err)
	}
	if m := receive(t, sub); m.Metadata.Get(transports.MetaRoutingKey) != "author" || string(m.Payload) != "{}" {
		t.Fatalf("replica got %q on %q", m.Payload, m.Metadata.Get(transports.MetaRoutingKey))
	} else {
		m.Ack()
	}
	ch := rawChannel(t, vurl)
	stock := wamqp.NewDurableTopicConfig(vurl, fx.Exchange.Name, fx.Settings.Queue)
	err = stock.TopologyBuilder.ExchangeDeclare(ch, fx.Exchange.Name, stock)
	var aerr *amqp.Error
	if !errors.As(err, &aerr) || aerr.Code != amqp.PreconditionFailed {
		t.Fatalf("stock watermill-amqp exchange declaration: err = %v, want 406 PRECONDITION_FAILED", err)
	}
	// RabbitMQTopology, set as a watermill-amqp TopologyBuilder, is accepted.
	ch = rawChannel(t, vurl)
	stock.TopologyBuilder = transports.RabbitMQTopology{}
	if err := stock.TopologyBuilder.BuildTopology(ch, wamqp.BuildTopologyParams{
		QueueName: fx.Settings.Queue, ExchangeName: fx.Exchange.Name, RoutingKey: "book",
	}, stock, nil); err != nil {
		t.Fatalf("RabbitMQTopology as a watermill-amqp TopologyBuilder on django's topology: %v", err)
	}
}

func TestRabbitMQReplicaSubscriptionsRejectsBadNames(t *testing.T) {
	t.Parallel()
	r := newRabbit(t, transports.Config{Exchange: testenv.Name("gocqrs_ex")})
	for _, bad := range []struct {
		q, dlq string
		ids    []string
	}{
		{"", "d", []string{"a"}},
		{"q", "", []string{"a"}},
		{"q", "q", []string{"a"}},
		{"q", "d", nil},
		{"q", "d", []string{""}},
		{"q", "d", []string{"a.*"}},
		{"q#", "d", []string{"a"}},
		{"q", "d x", []string{"a"}},
	} {
		if _, err := r.ReplicaSubscriptions(bad.q, bad.dlq, bad.ids); err == nil {
			t.Errorf("ReplicaSubscriptions(%q, %q, %q) accepted", bad.q, bad.dlq, bad.ids)
		}
	}
}
