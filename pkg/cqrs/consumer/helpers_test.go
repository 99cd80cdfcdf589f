package consumer_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

const wait = 20 * time.Second

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// published is one message the consumer published, as the transport got it.
type published struct {
	Topic    string
	Body     string
	Metadata map[string]string
}

// recorder wraps a real transport and records what is published through
// its Publisher (the consumer's requeues and dead letters), then passes it on.
type recorder struct {
	transports.Transport
	subs func(queue, dlq string, ids []string) ([]transports.Subscription, error)
	// onPublish, if set, sees each message just before it is published
	// (also when publishing then fails), in publish order.
	onPublish func(published)

	mu  sync.Mutex
	out []published
}

func (r *recorder) Publisher() message.Publisher { return recordingPublisher{r} }

func (r *recorder) ReplicaSubscriptions(queue, dlq string, ids []string) ([]transports.Subscription, error) {
	if r.subs != nil {
		return r.subs(queue, dlq, ids)
	}
	return r.Transport.ReplicaSubscriptions(queue, dlq, ids)
}

func (r *recorder) sent() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]published(nil), r.out...)
}

type recordingPublisher struct{ r *recorder }

func (p recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	// Recorded before, and locked across, the publish: whatever consuming
	// these messages makes the consumer publish or apply is recorded after
	// them. A failed publish is removed from sent() again.
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	n := len(p.r.out)
	for _, m := range msgs {
		md := map[string]string{}
		for k, v := range m.Metadata {
			md[k] = v
		}
		p.r.out = append(p.r.out, published{Topic: topic, Body: string(m.Payload), Metadata: md})
		if p.r.onPublish != nil {
			p.r.onPublish(p.r.out[len(p.r.out)-1])
		}
	}
	if err := p.r.Transport.Publisher().Publish(topic, msgs...); err != nil {
		p.r.out = p.r.out[:n]
		return err
	}
	return nil
}

func (p recordingPublisher) Close() error { return nil }

func newMemory(t *testing.T) *transports.Memory {
	t.Helper()
	m, err := transports.NewMemory(transports.MemoryConfig{}, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// rawRegistry declares table-less replica models: the consumer only needs
// their cqrs_ids; the test applier does the applying.
func rawRegistry(t testing.TB, ids ...string) *registry.Registry {
	t.Helper()
	reg := registry.New()
	nop := func(context.Context, *registry.ApplyContext) error { return nil }
	for _, id := range ids {
		if err := reg.RegisterReplica(registry.ReplicaModel{CQRSID: id, Raw: registry.RawHandlers{Save: nop, Delete: nop}}); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// testApplier records deliveries and answers with fn (applied by default).
type testApplier struct {
	mu    sync.Mutex
	calls []replica.Delivery
	fn    func(ctx context.Context, d replica.Delivery) (replica.Result, error)
}

func (a *testApplier) Apply(ctx context.Context, d replica.Delivery) (replica.Result, error) {
	a.mu.Lock()
	a.calls = append(a.calls, d)
	fn := a.fn
	a.mu.Unlock()
	if fn == nil {
		return replica.Result{Outcome: replica.OutcomeCreated, StoredRevision: -1}, nil
	}
	return fn(ctx, d)
}

func (a *testApplier) deliveries() []replica.Delivery {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]replica.Delivery(nil), a.calls...)
}

var errFixture = errors.New("test applier: fails")

// running is a consumer whose Run goroutine the test controls.
type running struct {
	c      *consumer.Consumer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs c until the test ends (or stop is called) and waits until it
// is subscribed.
func start(t *testing.T, c *consumer.Consumer) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	select {
	case <-c.Running():
	case err := <-r.done:
		t.Fatalf("Run returned before subscribing: %v", err)
	case <-time.After(wait):
		t.Fatal("consumer did not subscribe")
	}
	return r
}

// stop cancels Run and checks that it returns nil; later calls do nothing.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(wait):
			t.Fatal("Run did not return after cancel")
		}
	})
}

func newConsumer(t *testing.T, tr transports.Transport, reg *registry.Registry, ap consumer.Applier, opts consumer.Options) *consumer.Consumer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	c, err := consumer.New(tr, reg, ap, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// payload builds a SAVE-like body.
func payload(signal wire.SignalType, id string, pk, rev int) *wire.Payload {
	exp := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	return &wire.Payload{
		SignalType: signal,
		CQRSID:     id,
		InstanceData: wire.FieldsOf("cqrs_revision", rev, "cqrs_updated", "2026-01-01 10:00:00.100000+00:00",
			"id", pk, "name", "Ann"),
		InstancePK: pk,
		Expires:    &exp,
		Meta:       wire.NewFields(),
	}
}

func encode(t *testing.T, p *wire.Payload) []byte {
	t.Helper()
	b, err := wire.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// publish publishes as a master would: past the recorder, which records only
// the consumer's own publishes.
func publish(t *testing.T, tr transports.Transport, topic string, body []byte) {
	t.Helper()
	if r, ok := tr.(*recorder); ok {
		tr = r.Transport
	}
	if err := tr.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), body)); err != nil {
		t.Fatal(err)
	}
}

func waitDone(t *testing.T, c *consumer.Consumer, n int64) consumer.Stats {
	t.Helper()
	testenv.WaitFor(t, wait, "consumer outcomes", func() bool { return c.Stats().Done() >= n })
	s := c.Stats()
	if s.Done() != n {
		t.Fatalf("Done() = %d, want %d (stats %+v)", s.Done(), n, s)
	}
	return s
}
