// Package transports connects gocqrs to a message broker through Watermill.
// One factory, [New], builds a [Transport] from configuration; each
// transport speaks django-cqrs's routing keys (see [BroadcastKey],
// [DirectKey], [DeadLetterKey]) so that gocqrs and django-cqrs services can
// share a broker.
//
// Transports:
//   - "memory": in-process queues on Watermill's GoChannel ([Memory]); for
//     tests and single-process setups. Everything is lost when the process
//     exits.
//   - "rabbitmq": django-cqrs's exchange, queues and message properties on
//     RabbitMQ ([RabbitMQ]), wire-compatible with django-cqrs services.
//     From watermill-amqp v3 it takes the TopologyBuilder seam only
//     ([RabbitMQTopology] implements it and declares everything). Publisher,
//     subscriber and connection are written on amqp091-go because
//     watermill-amqp's publisher confirms one message at a time and loses
//     basic.return (unroutable) silently, and its marshaler adds headers
//     django-cqrs never sends; its subscriber binds one key per Subscribe,
//     cannot detach a held message, and its default marshaler fails on a
//     non-string header, which nacks and requeues the message forever; its
//     ConnectionWrapper swaps its connection without synchronisation (data
//     races while reconnecting) and cannot fail fast while disconnected.
//   - "kafka": watermill-kafka v3 over Sarama ([Kafka]): topic = routing
//     key (plus an optional prefix), record key = entity key so that one
//     entity keeps one partition, consumer group = replica queue. Its
//     subscriber's handler and unmarshaler are wrapped so that a message
//     can be detached: a partition's committed offset stays below its
//     lowest message not settled (kafka_detach.go).
package transports

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Subscription is one topic a replica consumer must subscribe to, as
// returned by [Transport.ReplicaSubscriptions].
type Subscription struct {
	// Topic is what to pass to the transport's Subscriber.
	Topic string
	// CQRSID is the cqrs_id whose messages arrive on Topic; "" means
	// messages of any cqrs_id arrive there (the consumer dispatches by body).
	CQRSID string
	// Direct is true when the messages on Topic came on the replica's own
	// routing key (cqrs.<queue>.<cqrs_id>): direct SYNCs and requeues.
	Direct bool
}

// Transport is a broker connection: a Watermill publisher and subscriber plus
// the topology a replica needs.
//
// Publisher and Subscriber belong to the transport: their Close methods do
// nothing, so that a Watermill router or a relay closing them does not close
// the transport under other users. The owner calls [Transport.Close].
type Transport interface {
	// Name is the transport's name in configuration ("memory", ...).
	Name() string
	// Publisher publishes messages; the topic is the routing key.
	Publisher() message.Publisher
	// Subscriber subscribes to the topics ReplicaSubscriptions returns.
	// Every delivered message carries metadata [MetaRoutingKey].
	Subscriber() message.Subscriber
	// ReplicaSubscriptions declares what a replica with this queue,
	// dead-letter queue and cqrs_ids needs (queues, bindings, topics), and
	// returns the subscriptions its consumer must run.
	ReplicaSubscriptions(queue, deadLetterQueue string, cqrsIDs []string) ([]Subscription, error)
	// Close stops the transport and releases its connections. Subscribers'
	// channels are closed. Close is idempotent.
	Close() error
}

// ErrRejected is wrapped by publish errors that concern the messages, not
// the transport: the broker is there but refused them (unroutable, nacked,
// a full topic). A relay sets such a message aside and goes on with other
// entities' messages; any other publish error stops its batch.
var ErrRejected = errors.New("message rejected by the broker")

// DefaultExchange is the exchange django-cqrs uses.
const DefaultExchange = "cqrs"

// Config selects and configures a transport. It is decoded with
// github.com/go-viper/mapstructure/v2; keys follow django-cqrs's CQRS dict.
type Config struct {
	// Transport is "memory", "rabbitmq" or "kafka".
	Transport string `mapstructure:"transport"`
	// URL is the broker address (amqp://user:pass@host:5672/vhost for
	// RabbitMQ, a comma-separated broker list for Kafka); unused by memory.
	URL string `mapstructure:"url"`
	// Exchange is the RabbitMQ topic exchange; empty means [DefaultExchange].
	Exchange string `mapstructure:"exchange"`
	// Prefetch is the RabbitMQ subscriber's prefetch count (unacknowledged
	// messages per subscription, detached ones included); 0 means
	// [DefaultPrefetch] (django-cqrs's delay_queue_max_size + 1).
	Prefetch int `mapstructure:"prefetch"`
	// TLS configures amqps:// RabbitMQ connections.
	TLS RabbitMQTLSConfig `mapstructure:"tls"`
	// Memory configures the memory transport.
	Memory MemoryConfig `mapstructure:"memory"`
	// Kafka configures the kafka transport.
	Kafka KafkaConfig `mapstructure:"kafka"`
}

// WithDefaults returns c with empty fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Exchange == "" {
		c.Exchange = DefaultExchange
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.Memory.MaxPending == 0 {
		c.Memory.MaxPending = DefaultMaxPending
	}
	return c
}

// Constructor builds a transport from its configuration.
type Constructor func(ctx context.Context, cfg Config, logger *slog.Logger) (Transport, error)

var (
	ctorsMu sync.RWMutex
	ctors   = map[string]Constructor{
		MemoryName:   newMemoryTransport,
		RabbitMQName: newRabbitMQTransport,
		KafkaName:    newKafkaTransport,
	}
)

// planned are transports that come in later versions; [New] says so instead
// of calling them unknown.
var planned = map[string]bool{}

// ErrNotBuilt is returned by [New] for a transport that gocqrs names but
// does not implement yet.
var ErrNotBuilt = errors.New("transport not built yet")

// Register makes a transport available to [New] under name. Registering a
// name again replaces the earlier constructor. An empty name or a nil
// constructor is ignored.
func Register(name string, ctor Constructor) {
	if name == "" || ctor == nil {
		return
	}
	ctorsMu.Lock()
	defer ctorsMu.Unlock()
	ctors[name] = ctor
}

// Names returns the registered transport names, sorted.
func Names() []string {
	ctorsMu.RLock()
	defer ctorsMu.RUnlock()
	out := make([]string, 0, len(ctors))
	for n := range ctors {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// New builds the transport cfg.Transport names, with defaults applied to
// cfg. A nil logger means slog.Default().
func New(ctx context.Context, cfg Config, logger *slog.Logger) (Transport, error) {
	if logger == nil {
		logger = slog.Default()
	}
	cfg = cfg.WithDefaults()
	ctorsMu.RLock()
	ctor, ok := ctors[cfg.Transport]
	ctorsMu.RUnlock()
	if !ok {
		known := strings.Join(Names(), ", ")
		if planned[cfg.Transport] {
			return nil, fmt.Errorf("transports: transport %q: %w (available: %s)", cfg.Transport, ErrNotBuilt, known)
		}
		return nil, fmt.Errorf("transports: config key transport: unknown transport %q (known: %s)", cfg.Transport, known)
	}
	t, err := ctor(ctx, cfg, logger)
	if err != nil {
		return nil, fmt.Errorf("transports: build %q: %w", cfg.Transport, err)
	}
	return t, nil
}

// nopClosePublisher hides Close from users of Transport.Publisher.
type nopClosePublisher struct{ message.Publisher }

func (nopClosePublisher) Close() error { return nil }

// nopCloseSubscriber hides Close from users of Transport.Subscriber.
type nopCloseSubscriber struct{ message.Subscriber }

func (nopCloseSubscriber) Close() error { return nil }
