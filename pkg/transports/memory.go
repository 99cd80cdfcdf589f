package transports

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
)

// MemoryName is the memory transport's name in configuration.
const MemoryName = "memory"

// DefaultMaxPending is the memory transport's default limit of unacknowledged
// messages per topic.
const DefaultMaxPending = 100_000

// ErrTopicFull is returned (wrapped) by [Memory.Publish] when a topic already
// holds MaxPending unacknowledged messages. Nothing of the failed call is
// enqueued, so a relay keeps its outbox rows and retries later.
var ErrTopicFull = errors.New("memory transport: topic full")

// ErrClosed is returned (wrapped) by a closed [Memory].
var ErrClosed = errors.New("memory transport: closed")

// MemoryConfig configures the memory transport.
type MemoryConfig struct {
	// MaxPending bounds the unacknowledged messages kept per topic (queued
	// plus in flight). 0 means [DefaultMaxPending]; negative is an error.
	MaxPending int `mapstructure:"max_pending"`
}

// Memory is the in-process transport: a queue per topic in front of a
// Watermill GoChannel, so that it behaves like a broker queue rather than
// like a bare GoChannel.
//
//   - Order: messages of one topic are delivered one at a time, in publish
//     order. The next one is sent only after every subscriber acked the
//     previous one (GoChannel with BlockPublishUntilSubscriberAck, fed by one
//     pump goroutine per topic).
//   - Publish never waits for subscribers: it appends to the topic's queue
//     and returns, so a handler may publish to the topic it consumes (a
//     requeue on cqrs.<queue>.<cqrs_id>) without deadlocking.
//   - Retention: a message published to a topic nobody subscribes to is kept
//     until a subscriber comes, up to MaxPending per topic; beyond that
//     Publish fails with [ErrTopicFull]. A topic nobody ever consumes (e.g. a
//     dead-letter topic) fills up and then rejects publishes.
//   - Fan-out: every subscriber of a topic gets every message (like several
//     queues bound to one routing key). A message counts as delivered once at
//     least one subscriber acked it.
//   - Nack: the message is redelivered to the subscriber at once. If every
//     subscriber goes away before acking, the message stays at the head of
//     the queue and goes to the next subscriber (at-least-once: an ack racing
//     with a subscriber's cancellation may give a duplicate).
//   - Memory only: all queued messages are lost when the process exits or
//     the transport is closed.
//
// Delivered messages carry metadata [MetaRoutingKey] = topic. A Memory is
// safe for concurrent use.
type Memory struct {
	logger     *slog.Logger
	wmLogger   watermill.LoggerAdapter
	maxPending int

	mu      sync.Mutex
	topics  map[string]*memTopic
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup // pumps and forwarders
}

// memTopic is one topic's queue and its GoChannel. Fields other than name,
// gc and wake are guarded by Memory.mu.
type memTopic struct {
	name string
	gc   *gochannel.GoChannel
	wake chan struct{} // capacity 1: "something changed", for the pump

	queue []*message.Message // unacknowledged messages; queue[0] may be in flight
	subs  int                // live subscriptions
	gen   uint64             // bumped whenever a subscription starts or ends

	inflight string // UUID of the head while the pump delivers it
	acked    bool   // some subscriber acked the in-flight message
}

// NewMemory returns an empty memory transport. A nil logger means
// slog.Default().
func NewMemory(cfg MemoryConfig, logger *slog.Logger) (*Memory, error) {
	if cfg.MaxPending < 0 {
		return nil, fmt.Errorf("transports: memory: config key memory.max_pending: must not be negative, got %d", cfg.MaxPending)
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("transport", MemoryName)
	return &Memory{
		logger: logger,
		// GoChannel logs routine events at info; they are debug here.
		wmLogger:   watermill.NewSlogLoggerWithLevelMapping(logger, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug}),
		maxPending: cfg.MaxPending,
		topics:     map[string]*memTopic{},
		closing:    make(chan struct{}),
	}, nil
}

func newMemoryTransport(_ context.Context, cfg Config, logger *slog.Logger) (Transport, error) {
	return NewMemory(cfg.Memory, logger)
}

// Name returns "memory".
func (m *Memory) Name() string { return MemoryName }

// Publisher returns m as a message.Publisher whose Close does nothing.
func (m *Memory) Publisher() message.Publisher { return nopClosePublisher{m} }

// Subscriber returns m as a message.Subscriber whose Close does nothing.
func (m *Memory) Subscriber() message.Subscriber { return nopCloseSubscriber{m} }

// ReplicaSubscriptions returns, per cqrs_id, one subscription on its
// broadcast topic and one on its direct topic (cqrs.<queue>.<cqrs_id>).
// Nothing needs declaring in memory: every topic keeps its messages.
// Dead letters (cqrs.<dead letter queue>.<cqrs_id>) are not subscribed;
// read them with [Memory.Peek].
func (m *Memory) ReplicaSubscriptions(queue, deadLetterQueue string, cqrsIDs []string) ([]Subscription, error) {
	if queue == "" {
		return nil, errors.New("transports: memory: replica subscriptions: empty queue name")
	}
	if deadLetterQueue == "" {
		return nil, errors.New("transports: memory: replica subscriptions: empty dead-letter queue name")
	}
	if len(cqrsIDs) == 0 {
		return nil, fmt.Errorf("transports: memory: replica subscriptions for queue %q: no cqrs_id", queue)
	}
	subs := make([]Subscription, 0, 2*len(cqrsIDs))
	for _, id := range cqrsIDs {
		if id == "" {
			return nil, fmt.Errorf("transports: memory: replica subscriptions for queue %q: empty cqrs_id", queue)
		}
		subs = append(subs,
			Subscription{Topic: BroadcastKey(id), CQRSID: id},
			Subscription{Topic: DirectKey(queue, id), CQRSID: id, Direct: true},
		)
	}
	return subs, nil
}

// Publish appends copies of msgs to topic's queue and returns without
// waiting for any subscriber. Either all of msgs are enqueued or none: when
// the topic would exceed MaxPending the error wraps [ErrTopicFull].
func (m *Memory) Publish(topic string, msgs ...*message.Message) error {
	if topic == "" {
		return errors.New("transports: memory: publish: empty topic")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("transports: memory: publish to %q: %w", topic, ErrClosed)
	}
	t := m.topicLocked(topic)
	if n := len(t.queue); n+len(msgs) > m.maxPending {
		return fmt.Errorf("transports: memory: publish %d message(s) to %q: %w (%d pending, limit %d)",
			len(msgs), topic, ErrTopicFull, n, m.maxPending)
	}
	for _, msg := range msgs {
		c := msg.Copy()
		c.Metadata.Set(MetaRoutingKey, topic)
		t.queue = append(t.queue, c)
	}
	t.signal()
	return nil
}

// Subscribe returns a channel of topic's messages, starting with those
// already queued. Each message must be acked or nacked. The channel is
// closed when ctx is cancelled (after the message in hand, if any, was acked
// or nacked) or when the transport closes.
func (m *Memory) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic == "" {
		return nil, errors.New("transports: memory: subscribe: empty topic")
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, fmt.Errorf("transports: memory: subscribe to %q: %w", topic, ErrClosed)
	}
	t := m.topicLocked(topic)
	m.wg.Add(1)
	m.mu.Unlock()

	in, err := t.gc.Subscribe(ctx, topic)
	if err != nil {
		m.wg.Done()
		return nil, fmt.Errorf("transports: memory: subscribe to %q: %w", topic, err)
	}
	m.mu.Lock()
	t.subs++
	t.gen++
	m.mu.Unlock()
	t.signal()

	out := make(chan *message.Message)
	go m.forward(ctx, t, in, out)
	return out, nil
}

// forward hands the GoChannel's messages to the subscriber and records acks
// for the pump. GoChannel sends one message at a time per topic and resends
// it on nack, so at most one message is in hand here.
func (m *Memory) forward(ctx context.Context, t *memTopic, in <-chan *message.Message, out chan<- *message.Message) {
	defer func() {
		m.mu.Lock()
		t.subs--
		t.gen++
		m.mu.Unlock()
		t.signal()
		close(out)
		m.wg.Done()
	}()
	for msg := range in {
		if ctx.Err() != nil {
			continue // cancelled: hand out nothing more; GoChannel closes in
		}
		select {
		case out <- msg:
		case <-ctx.Done():
			continue // not handed out; GoChannel closes in
		case <-m.closing:
			continue
		}
		select {
		case <-msg.Acked():
			m.mu.Lock()
			if t.inflight == msg.UUID {
				t.acked = true
			}
			m.mu.Unlock()
			t.signal() // the pump may have stopped waiting before this ack
		case <-msg.Nacked():
		case <-m.closing:
		}
	}
}

// topicLocked returns topic's state, creating it and its pump on first use.
// m.mu must be held and m must not be closed.
func (m *Memory) topicLocked(topic string) *memTopic {
	if t, ok := m.topics[topic]; ok {
		return t
	}
	t := &memTopic{
		name: topic,
		gc: gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true},
			m.wmLogger.With(watermill.LogFields{"topic": topic})),
		wake: make(chan struct{}, 1),
	}
	m.topics[topic] = t
	m.wg.Add(1)
	go m.pump(t)
	return t
}

func (t *memTopic) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// pump delivers t's queue head through the GoChannel, one message at a time.
// The head leaves the queue only once a subscriber acked it.
func (m *Memory) pump(t *memTopic) {
	defer m.wg.Done()
	var failedGen uint64
	failed := false
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return
		}
		if failed && t.acked {
			// A subscriber acked after the GoChannel had given up on it.
			t.popLocked()
			failed = false
		}
		// After a delivery nobody acked, wait for a subscription change: the
		// subscribers that had the message are gone.
		ready := len(t.queue) > 0 && t.subs > 0 && (!failed || t.gen != failedGen)
		var msg *message.Message
		var gen uint64
		if ready {
			msg = t.queue[0]
			t.inflight, t.acked = msg.UUID, false
			gen = t.gen
		}
		m.mu.Unlock()
		if !ready {
			select {
			case <-t.wake:
				continue
			case <-m.closing:
				return
			}
		}

		// Blocks until every current subscriber acked, or went away.
		if err := t.gc.Publish(t.name, msg); err != nil {
			return // the GoChannel is closed: so is m
		}

		m.mu.Lock()
		failed = !t.acked
		if failed {
			failedGen = gen // keep inflight set: a late ack still counts
		} else {
			t.popLocked()
		}
		m.mu.Unlock()
	}
}

// popLocked removes the acknowledged head. Memory.mu must be held.
func (t *memTopic) popLocked() {
	t.inflight, t.acked = "", false
	if len(t.queue) == 0 {
		return
	}
	t.queue[0] = nil
	t.queue = t.queue[1:]
	if len(t.queue) == 0 {
		t.queue = nil
	}
}

// Pending returns how many messages topic holds that no subscriber has
// acked yet (queued plus in flight).
func (m *Memory) Pending(topic string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.topics[topic]; ok {
		return len(t.queue)
	}
	return 0
}

// Peek returns copies of topic's unacknowledged messages in order, without
// removing them; for inspecting topics nobody consumes, such as dead letters.
func (m *Memory) Peek(topic string) []*message.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.topics[topic]
	if !ok {
		return nil
	}
	out := make([]*message.Message, len(t.queue))
	for i, msg := range t.queue {
		out[i] = msg.Copy()
	}
	return out
}

// Close stops all pumps, closes every subscriber's channel and discards the
// queued messages. It waits for its goroutines to end; a subscriber holding
// an unacked message is not waited for. Close is idempotent.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.closing)
	topics := make([]*memTopic, 0, len(m.topics))
	for _, t := range m.topics {
		topics = append(topics, t)
	}
	m.mu.Unlock()

	var errs []error
	for _, t := range topics {
		if err := t.gc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("transports: memory: close topic %q: %w", t.name, err))
		}
	}
	m.wg.Wait()
	m.mu.Lock()
	m.topics = map[string]*memTopic{}
	m.mu.Unlock()
	return errors.Join(errs...)
}
