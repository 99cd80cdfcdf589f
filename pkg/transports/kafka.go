package transports

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
)

// KafkaName is the kafka transport's name in configuration.
const KafkaName = "kafka"

// ErrKafkaClosed is returned (wrapped) by a closed [Kafka].
var ErrKafkaClosed = errors.New("kafka transport: closed")

// Kafka is the Kafka transport: a batching publisher of its own and
// watermill-kafka's subscriber, both over Sarama, with django-cqrs's routing
// keys as topic names.
//
//   - Topics: topic = TopicPrefix + routing key: "<cqrs_id>" for SAVE,
//     DELETE and broadcast SYNC, "cqrs.<queue>.<cqrs_id>" for direct SYNCs
//     and requeues, "cqrs.<dead letter queue>.<cqrs_id>" for dead letters.
//     Publish and Subscribe take routing keys; the prefix is added there and
//     removed again from the [MetaRoutingKey] of delivered messages.
//   - Keys: the record key is the message's entity key ([EntityKey]), and
//     the partitioner is the Java client's (murmur2), so one entity's
//     messages share a partition and keep their order.
//   - Publishing: the messages of one Publish call are handed to the
//     producer together and go out batched per partition (idempotent
//     producer, acks=all, one request in flight per broker, so each
//     partition keeps the call's order). Publish returns once every message
//     was acknowledged by every in-sync replica or failed, and reports
//     failures message by message ([PublishError]), so a relay deletes
//     outbox rows only after the broker confirmed them.
//   - Consumer groups: a replica's broadcast and direct topics are read by
//     the consumer group named after its queue (or KafkaConfig.ConsumerGroup),
//     its dead-letter topics by the group named after its dead-letter queue.
//     A new group starts at the oldest message (KafkaConfig.InitialOffset).
//   - Delivery: each partition delivers one message at a time and the next
//     after an Ack or a detach; partitions (and topics) are consumed in
//     parallel, up to KafkaConfig.Workers messages at once. A Nack delivers
//     the same message again after a short delay, so a message that is
//     neither acked nor detached holds its partition.
//   - Detach: every delivered message carries a [DetachFunc] (see
//     [Detach]). A detached message lets the next one of its partition
//     through; its Settle(true) settles it, Settle(false) delivers it again
//     behind the messages already delivered. The committed offset of a
//     partition stays below its lowest delivered message not settled yet
//     (acked, or detached and settled with ack), so a crash or a rebalance
//     delivers again every message not settled, never skips one. Offsets
//     are committed asynchronously, at the latest when the subscription or
//     the partition's claim ends; a Settle after that does nothing (the
//     message is delivered again to the partition's next owner).
//   - Expiration: Kafka has no per-message TTL. The [MetaExpiration]
//     metadata of dead letters travels as a header; the topic's retention
//     decides how long they stay.
//
// A Kafka is safe for concurrent use.
type Kafka struct {
	set   *kafkaSettings
	log   *slog.Logger
	wmLog watermill.LoggerAdapter
	marsh kafkaMarshaler
	det   *kafkaDetacher // the subscribers' unmarshaler and handler wrapper
	sem   chan struct{}  // nil: no cap on messages in hand
	// closing is closed by Close; it frees deliver's goroutines.
	closing chan struct{}

	pubMu     sync.RWMutex // Publish holds it shared, Close exclusively
	pub       *kafkaPublisher
	pubClosed bool

	topicMu sync.RWMutex
	known   map[string]bool // full topic names known to exist
	admin   sarama.ClusterAdmin
	noAdmin bool // set by Close: no admin client may be made

	mu     sync.Mutex
	closed bool
	groups map[string]string            // routing key → consumer group, from ReplicaSubscriptions
	subs   map[string]*kafka.Subscriber // by consumer group
}

// NewKafka connects a kafka transport to cfg's brokers (cfg.URL or
// cfg.Kafka.Brokers) with cfg.Kafka's settings. A nil logger means
// slog.Default(). It fails when the configuration is invalid or no broker
// answers; ctx is checked before connecting, the connection attempt itself
// is bounded by Sarama's timeouts and retries.
func NewKafka(ctx context.Context, cfg Config, logger *slog.Logger) (*Kafka, error) {
	set, err := kafkaSettingsFrom(cfg)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("transports: kafka: %w", err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("transport", KafkaName)
	k := &Kafka{
		set: set,
		log: logger,
		// watermill-kafka logs every subscription at info; they are debug here.
		wmLog:   NewWatermillLogger(logger, true),
		marsh:   kafkaMarshaler{prefix: set.prefix},
		known:   map[string]bool{},
		groups:  map[string]string{},
		subs:    map[string]*kafka.Subscriber{},
		closing: make(chan struct{}),
	}
	if set.workers > 0 {
		k.sem = make(chan struct{}, set.workers)
	}
	k.det = newKafkaDetacher(k.marsh, set.sarama().Consumer.Offsets.AutoCommit.Enable)
	k.pub, err = newKafkaPublisher(set.brokers, set.sarama(), k.marsh, logger)
	if err != nil {
		return nil, fmt.Errorf("transports: kafka: connect producer to %v: %w", set.brokers, err)
	}
	logger.Debug("kafka transport connected", "brokers", set.brokers, "topic_prefix", set.prefix,
		"auto_create_topics", set.autoCreate, "sasl", set.sasl, "tls", set.tls != nil)
	return k, nil
}

func newKafkaTransport(ctx context.Context, cfg Config, logger *slog.Logger) (Transport, error) {
	return NewKafka(ctx, cfg, logger)
}

// Name returns "kafka".
func (k *Kafka) Name() string { return KafkaName }

// Publisher returns k as a message.Publisher whose Close does nothing.
func (k *Kafka) Publisher() message.Publisher { return nopClosePublisher{k} }

// Subscriber returns k as a message.Subscriber whose Close does nothing.
func (k *Kafka) Subscriber() message.Subscriber { return nopCloseSubscriber{k} }

// Topic returns the Kafka topic of a routing key: TopicPrefix + key.
func (k *Kafka) Topic(routingKey string) string { return k.set.prefix + routingKey }

// topic checks a routing key and returns its Kafka topic.
func (k *Kafka) topic(routingKey string) (string, error) {
	if routingKey == "" {
		return "", errors.New("empty routing key")
	}
	t := k.Topic(routingKey)
	if err := checkKafkaTopic(t); err != nil {
		return "", fmt.Errorf("routing key %q cannot name a Kafka topic: %w", routingKey, err)
	}
	return t, nil
}

// ReplicaSubscriptions creates (when AutoCreateTopics is on) the broadcast,
// direct and dead-letter topics of each cqrs_id, records which consumer
// group reads them, and returns one subscription per broadcast and direct
// topic, as the memory transport does. Subscription topics are routing keys.
func (k *Kafka) ReplicaSubscriptions(queue, deadLetterQueue string, cqrsIDs []string) ([]Subscription, error) {
	if queue == "" {
		return nil, errors.New("transports: kafka: replica subscriptions: empty queue name")
	}
	if deadLetterQueue == "" {
		return nil, errors.New("transports: kafka: replica subscriptions: empty dead-letter queue name")
	}
	if len(cqrsIDs) == 0 {
		return nil, fmt.Errorf("transports: kafka: replica subscriptions for queue %q: no cqrs_id", queue)
	}
	group := queue
	if k.set.group != "" {
		group = k.set.group
	}
	subs := make([]Subscription, 0, 2*len(cqrsIDs))
	groups := map[string]string{}
	var topics []string
	for _, id := range cqrsIDs {
		if id == "" {
			return nil, fmt.Errorf("transports: kafka: replica subscriptions for queue %q: empty cqrs_id", queue)
		}
		b, d, dl := BroadcastKey(id), DirectKey(queue, id), DeadLetterKey(deadLetterQueue, id)
		for _, key := range []string{b, d, dl} {
			t, err := k.topic(key)
			if err != nil {
				return nil, fmt.Errorf("transports: kafka: replica subscriptions for queue %q: %w", queue, err)
			}
			topics = append(topics, t)
		}
		groups[b], groups[d], groups[dl] = group, group, deadLetterQueue
		subs = append(subs,
			Subscription{Topic: b, CQRSID: id},
			Subscription{Topic: d, CQRSID: id, Direct: true},
		)
	}
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return nil, fmt.Errorf("transports: kafka: replica subscriptions for queue %q: %w", queue, ErrKafkaClosed)
	}
	for key, g := range groups {
		if old, ok := k.groups[key]; ok && old != g {
			k.mu.Unlock()
			return nil, fmt.Errorf("transports: kafka: replica subscriptions for queue %q: routing key %q is already read by consumer group %q on this transport; use one transport per replica queue", queue, key, old)
		}
	}
	for key, g := range groups {
		k.groups[key] = g
	}
	k.mu.Unlock()
	if err := k.ensureTopics(topics...); err != nil {
		return nil, fmt.Errorf("transports: kafka: replica subscriptions for queue %q: %w", queue, err)
	}
	return subs, nil
}

// Publish sends msgs to the topic of routing key topic, all at once (each
// partition's messages in the order of msgs), and returns once each was
// acknowledged by all in-sync replicas or failed.
//
// A failure before anything was sent (a routing key that cannot name a
// topic, a topic that could not be created, [ErrKafkaClosed], the topic's
// metadata out of reach) is a plain error: no message of the call was
// published.
// Otherwise failures are reported message by message: the error wraps a
// [*PublishError] whose Failed map holds the index of every message that was
// not acknowledged, with a cause wrapping [ErrRejected] when the message
// itself was refused (it cannot be made a record, is larger than
// Producer.MaxMessageBytes or the topic's max.message.bytes, its topic does
// not exist with AutoCreateTopics off, is not authorised, or the record is
// invalid) and any other cause when its outcome is unknown (the brokers or
// the connection failed). The messages not in Failed were acknowledged; a
// failed message does not stop the others, so a later message of the same
// entity may be published while an earlier one failed. errors.Is(err,
// ErrRejected) reports whether some message was refused; [PublishFailures]
// gives the per-message picture.
//
// The broker refuses records per partition and request: a record too large
// for the topic's max.message.bytes fails the records of its partition sent
// in the same request with it. Sarama's Producer.MaxMessageBytes (set with
// KafkaConfig.Tune) is checked per record before sending. Publish is safe
// for concurrent use.
func (k *Kafka) Publish(topic string, msgs ...*message.Message) error {
	t, err := k.topic(topic)
	if err != nil {
		return fmt.Errorf("transports: kafka: publish: %w", err)
	}
	if err := k.ensureTopics(t); err != nil {
		return fmt.Errorf("transports: kafka: publish to %q: %w", t, err)
	}
	k.pubMu.RLock()
	defer k.pubMu.RUnlock()
	if k.pubClosed {
		return fmt.Errorf("transports: kafka: publish to %q: %w", t, ErrKafkaClosed)
	}
	if err := k.pub.publish(t, msgs); err != nil {
		return fmt.Errorf("transports: kafka: publish %d message(s) to %q: %w", len(msgs), t, err)
	}
	return nil
}

// Subscribe consumes the topic of routing key topic in the consumer group
// that ReplicaSubscriptions recorded for it, or else KafkaConfig's
// ConsumerGroup; without either it fails. Each message must be acked or
// nacked; the next message of its partition comes after the Ack. The channel
// is closed when ctx is cancelled or the transport closes.
func (k *Kafka) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	t, err := k.topic(topic)
	if err != nil {
		return nil, fmt.Errorf("transports: kafka: subscribe: %w", err)
	}
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return nil, fmt.Errorf("transports: kafka: subscribe to %q: %w", t, ErrKafkaClosed)
	}
	group, ok := k.groups[topic]
	if !ok {
		group = k.set.group
	}
	if group == "" {
		k.mu.Unlock()
		return nil, fmt.Errorf("transports: kafka: subscribe to %q: no consumer group: call ReplicaSubscriptions first, or set kafka.consumer_group", t)
	}
	sub, err := k.subscriberLocked(group)
	k.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("transports: kafka: subscribe to %q: %w", t, err)
	}
	if err := k.ensureTopics(t); err != nil {
		return nil, fmt.Errorf("transports: kafka: subscribe to %q: %w", t, err)
	}
	ch, err := sub.Subscribe(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("transports: kafka: subscribe to %q as group %q: %w", t, group, err)
	}
	k.log.Debug("kafka subscription started", "topic", t, "consumer_group", group)
	return k.deliver(ctx, ch), nil
}

// subscriberLocked returns the watermill-kafka subscriber of group, creating
// it on first use. k.mu must be held and k must not be closed.
func (k *Kafka) subscriberLocked(group string) (*kafka.Subscriber, error) {
	if s, ok := k.subs[group]; ok {
		return s, nil
	}
	s, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers:               k.set.brokers,
		Unmarshaler:           k.det,
		OverwriteSaramaConfig: k.set.sarama(),
		ConsumerGroup:         group,
		NackResendSleep:       DefaultKafkaNackResendDelay,
		// Not a tracer: the hook wraps the consumer-group handler so that
		// messages can be detached (kafka_detach.go).
		Tracer: k.det,
	}, k.wmLog.With(watermill.LogFields{"consumer_group": group}))
	if err != nil {
		return nil, fmt.Errorf("consumer group %q: %w", group, err)
	}
	k.subs[group] = s
	return s, nil
}

// deliver hands in's messages on, detachable (see kafka_detach.go), while
// fewer than Workers are unacked over the whole transport (a detached
// message counts as acked).
func (k *Kafka) deliver(ctx context.Context, in <-chan *message.Message) <-chan *message.Message {
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for msg := range in {
			msg = k.det.detachable(msg)
			if k.sem == nil {
				select {
				case out <- msg:
				case <-ctx.Done():
				case <-k.closing:
				}
				continue
			}
			// A message not handed out is left unacked: the subscriber
			// drops it when ctx ends and Kafka delivers it again later.
			select {
			case k.sem <- struct{}{}:
			case <-ctx.Done():
				continue
			case <-k.closing:
				continue
			}
			select {
			case out <- msg:
			case <-ctx.Done():
				<-k.sem
				continue
			case <-k.closing:
				<-k.sem
				continue
			}
			go func() {
				select {
				case <-msg.Acked():
				case <-msg.Nacked():
				case <-ctx.Done():
				case <-k.closing:
				}
				<-k.sem
			}()
		}
	}()
	return out
}

// ensureTopics creates the topics (full names) that are not known to exist,
// when AutoCreateTopics is on.
func (k *Kafka) ensureTopics(topics ...string) error {
	if !k.set.autoCreate {
		return nil
	}
	k.topicMu.RLock()
	missing := false
	for _, t := range topics {
		missing = missing || !k.known[t]
	}
	k.topicMu.RUnlock()
	if !missing {
		return nil
	}

	k.topicMu.Lock()
	defer k.topicMu.Unlock()
	for _, t := range topics {
		if k.known[t] {
			continue
		}
		if k.noAdmin {
			return ErrKafkaClosed
		}
		if k.admin == nil {
			admin, err := sarama.NewClusterAdmin(k.set.brokers, k.set.sarama())
			if err != nil {
				return fmt.Errorf("connect admin client to %v: %w", k.set.brokers, err)
			}
			k.admin = admin
		}
		detail := &sarama.TopicDetail{NumPartitions: k.set.partitions, ReplicationFactor: k.set.replication}
		err := k.admin.CreateTopic(t, detail, false)
		switch {
		case err == nil:
			k.log.Info("kafka topic created", "topic", t, "partitions", k.set.partitions, "replication_factor", k.set.replication)
		case errors.Is(err, sarama.ErrTopicAlreadyExists):
		case k.topicExists(t):
			// Not allowed to create topics, say, but this one is there.
			k.log.Debug("kafka topic exists; creating it failed", "topic", t, "error", err)
		default:
			return fmt.Errorf("create topic %q (%d partitions, replication factor %d): %w", t, k.set.partitions, k.set.replication, err)
		}
		k.known[t] = true
	}
	return nil
}

// topicExists reports whether the brokers know topic t. k.topicMu must be
// held with k.admin set.
func (k *Kafka) topicExists(t string) bool {
	meta, err := k.admin.DescribeTopics([]string{t})
	return err == nil && len(meta) == 1 && errors.Is(meta[0].Err, sarama.ErrNoError)
}

// Close ends every subscription (their channels close), then closes the
// producer and the admin client. It waits for the subscriptions to stop;
// offsets of acked messages are committed on the way. Close is idempotent.
func (k *Kafka) Close() error {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return nil
	}
	k.closed = true
	close(k.closing)
	subs := make([]*kafka.Subscriber, 0, len(k.subs))
	for _, s := range k.subs {
		subs = append(subs, s)
	}
	k.mu.Unlock()

	var errs []error
	for _, s := range subs {
		if err := s.Close(); err != nil {
			errs = append(errs, fmt.Errorf("transports: kafka: close subscriber: %w", err))
		}
	}
	k.pubMu.Lock()
	k.pubClosed = true
	if err := k.pub.close(); err != nil {
		errs = append(errs, fmt.Errorf("transports: kafka: %w", err))
	}
	k.pubMu.Unlock()
	k.topicMu.Lock()
	k.noAdmin = true
	if k.admin != nil {
		if err := k.admin.Close(); err != nil {
			errs = append(errs, fmt.Errorf("transports: kafka: close admin client: %w", err))
		}
		k.admin = nil
	}
	k.topicMu.Unlock()
	return errors.Join(errs...)
}
