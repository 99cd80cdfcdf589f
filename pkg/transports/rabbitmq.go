package transports

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// RabbitMQ is the rabbitmq transport: one AMQP connection (re-established
// after a loss, with backoff), a publisher with pipelined publisher confirms
// and a subscriber with detach support, on django-cqrs's topology:
//
//   - exchange Config.Exchange ("cqrs"): topic, durable, not auto-delete,
//     not internal, no arguments; declared by publishers and replicas;
//   - per replica queue Q with dead-letter queue D: Q and D durable, not
//     exclusive, not auto-delete, no arguments; Q bound with <cqrs_id> and
//     cqrs.Q.<cqrs_id>, D with cqrs.D.<cqrs_id>, for each cqrs_id.
//
// Topics are routing keys when publishing and queue names when subscribing.
// Credentials never appear in its logs or errors ([RedactURL]). A RabbitMQ
// is safe for concurrent use.
type RabbitMQ struct {
	s    *rabbitSettings
	log  *slog.Logger
	conn *amqpConn

	pubPool chan *pubChannel

	life    context.Context // cancelled by Close
	kill    context.CancelFunc
	closing chan struct{}

	mu     sync.Mutex
	closed bool
	topo   map[string]replicaTopology // by queue
	subs   sync.WaitGroup

	ackStats rabbitAckStats
}

// NewRabbitMQ connects to the broker at cfg.URL (amqp:// or amqps://, with
// the vhost as path: amqp://user:password@host:5672/vhost) and returns the
// transport; it fails when the broker cannot be reached now (ctx bounds the
// attempt). cfg's Exchange, Prefetch and TLS apply (defaults from
// [Config.WithDefaults]). A nil logger means slog.Default(). Nothing is
// declared until the first Publish or ReplicaSubscriptions.
func NewRabbitMQ(ctx context.Context, cfg Config, logger *slog.Logger) (*RabbitMQ, error) {
	s, err := rabbitSettingsFrom(cfg)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("transport", RabbitMQName, "url", s.redacted, "exchange", s.exchange)
	conn, err := dialAMQP(ctx, s, logger)
	if err != nil {
		return nil, err
	}
	life, kill := context.WithCancel(context.Background())
	r := &RabbitMQ{
		s:       s,
		log:     logger,
		conn:    conn,
		pubPool: make(chan *pubChannel, rabbitPublishChannels),
		life:    life,
		kill:    kill,
		closing: make(chan struct{}),
		topo:    map[string]replicaTopology{},
	}
	for range rabbitPublishChannels {
		r.pubPool <- &pubChannel{}
	}
	logger.Debug("rabbitmq: connected")
	return r, nil
}

func newRabbitMQTransport(ctx context.Context, cfg Config, logger *slog.Logger) (Transport, error) {
	return NewRabbitMQ(ctx, cfg, logger)
}

// Name returns "rabbitmq".
func (r *RabbitMQ) Name() string { return RabbitMQName }

// URL returns the broker URL with its password redacted.
func (r *RabbitMQ) URL() string { return r.s.redacted }

// Exchange returns the exchange the transport publishes to.
func (r *RabbitMQ) Exchange() string { return r.s.exchange }

// Publisher returns r as a message.Publisher whose Close does nothing.
func (r *RabbitMQ) Publisher() message.Publisher { return nopClosePublisher{r} }

// Subscriber returns r as a message.Subscriber whose Close does nothing.
func (r *RabbitMQ) Subscriber() message.Subscriber { return nopCloseSubscriber{r} }

// ReplicaSubscriptions declares the exchange, queue and deadLetterQueue and
// binds them for cqrsIDs as django-cqrs's replica does (see [RabbitMQ]).
// It returns one subscription on queue with CQRSID "" and Direct false:
// messages of every cqrs_id arrive there, broadcast and direct alike, and
// the consumer tells them apart by the body's cqrs_id and the
// [MetaRoutingKey] metadata. Declaring again is harmless; the declaration
// is repeated when a subscription to queue reconnects. Bindings of cqrs_ids
// no longer listed are not removed.
func (r *RabbitMQ) ReplicaSubscriptions(queue, deadLetterQueue string, cqrsIDs []string) ([]Subscription, error) {
	rt := replicaTopology{exchange: r.s.exchange, queue: queue, deadLetterQueue: deadLetterQueue, cqrsIDs: slices.Clone(cqrsIDs)}
	if err := rt.check(); err != nil {
		return nil, fmt.Errorf("transports: rabbitmq: replica subscriptions: %w", err)
	}
	conn, err := r.conn.current()
	if err != nil {
		return nil, fmt.Errorf("transports: rabbitmq: declare replica queue %q: %w", queue, err)
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("transports: rabbitmq: declare replica queue %q: open channel: %w", queue, err)
	}
	defer ch.Close() //nolint:errcheck // a failed declaration has closed it already
	if err := rt.declare(ch); err != nil {
		return nil, fmt.Errorf("transports: rabbitmq: declare replica queue %q: %w", queue, err)
	}
	r.mu.Lock()
	r.topo[queue] = rt
	r.mu.Unlock()
	r.log.Debug("rabbitmq: replica topology declared", "queue", queue, "dead_letter_queue", deadLetterQueue, "cqrs_ids", cqrsIDs)
	return []Subscription{{Topic: queue}}, nil
}

// check validates the names of a replica topology.
func (rt replicaTopology) check() error {
	if err := checkRoutingPart("queue name", rt.queue); err != nil {
		return err
	}
	if err := checkRoutingPart("dead-letter queue name", rt.deadLetterQueue); err != nil {
		return err
	}
	if rt.queue == rt.deadLetterQueue {
		return fmt.Errorf("dead-letter queue %q must differ from the queue", rt.deadLetterQueue)
	}
	if len(rt.cqrsIDs) == 0 {
		return fmt.Errorf("queue %q: no cqrs_id", rt.queue)
	}
	for _, id := range rt.cqrsIDs {
		if err := checkRoutingPart("cqrs_id", id); err != nil {
			return fmt.Errorf("queue %q: %w", rt.queue, err)
		}
	}
	return nil
}

func (r *RabbitMQ) topologyOf(queue string) (replicaTopology, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt, ok := r.topo[queue]
	return rt, ok
}

// Close ends every subscription at once (the broker requeues their
// unacknowledged messages), fails pending Publish calls and closes the
// connection. Close is idempotent.
func (r *RabbitMQ) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.closing)
	r.kill()
	r.mu.Unlock()

	r.subs.Wait()
	err := r.conn.close()
	// Pending publishes fail once the connection is gone; then the pool is ours.
	for range rabbitPublishChannels {
		pc := <-r.pubPool
		pc.ch, pc.returns = nil, nil
	}
	if err != nil {
		return err
	}
	r.log.Debug("rabbitmq: closed")
	return nil
}
