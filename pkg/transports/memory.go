package transports

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
var ErrTopicFull = fmt.Errorf("memory transport: topic full (%w)", ErrRejected)

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
//     order. The next one is sent only after every subscriber acked or
//     detached the previous one (GoChannel with
//     BlockPublishUntilSubscriberAck, fed by one pump goroutine per topic).
//   - Detach: every delivered message carries a [DetachFunc] in its context
//     (see [Detach]). A detached message no longer holds up its topic: the
//     next one is delivered while it stays pending (and counts towards
//     MaxPending) until its [Settle] is called. Settle(true) removes it;
//     Settle(false) puts it back at the head of the queue: it is delivered
//     next, after the message in flight if there is one. The Watermill
//     Ack/Nack of a detached message does nothing.
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
//   - Memory only: all queued and detached messages are lost when the
//     process exits or the transport is closed; Settle then returns an error
//     wrapping [ErrClosed].
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

	queue []*memEntry // waiting, in publish order (settled nacks go first)
	cur   *memEntry   // being delivered, or waiting to be delivered again
	held  []*memEntry // detached by a subscriber and not settled yet
	subs  int         // live subscriptions
	gen   uint64      // bumped whenever a subscription starts or ends
}

// pendingLocked counts the messages no subscriber has acked: waiting, in
// delivery and detached. Memory.mu must be held.
func (t *memTopic) pendingLocked() int {
	n := len(t.queue) + len(t.held)
	if t.curPendingLocked() {
		n++
	}
	return n
}

// curPendingLocked reports whether t.cur is a message still unacknowledged
// (an acked one only waits for the pump to drop it). Memory.mu must be held.
func (t *memTopic) curPendingLocked() bool {
	return t.cur != nil && !t.cur.acked
}

// memEntry is one unacknowledged message of a topic. Fields other than msg
// are guarded by Memory.mu.
type memEntry struct {
	msg   *message.Message
	place entryPlace

	// The delivery round, meaningful while place is placeCurrent.
	delivering bool   // the pump's GoChannel publish is running
	acked      bool   // a subscriber acked it, or settled a detached copy with ack
	detached   int    // detached copies not settled yet
	handedBack bool   // a detached copy was settled with nack while it was current
	failed     bool   // the last round ended without an ack or a detach
	failedGen  uint64 // memTopic.gen when the failed round started
}

// entryPlace says where a memEntry is.
type entryPlace int

const (
	placeQueued  entryPlace = iota // in memTopic.queue
	placeCurrent                   // memTopic.cur
	placeHeld                      // in memTopic.held
	placeGone                      // acknowledged
)

// memCopy is one subscriber's delivery of an entry. Fields other than e,
// out and detachCh are guarded by Memory.mu.
type memCopy struct {
	e        *memEntry
	out      *message.Message // what the subscriber got
	detachCh chan struct{}    // closed on detach, to wake forward
	detached bool
	done     bool // forward has passed on out's ack or nack
	settled  bool // the Settle of a detached copy was called
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
		wmLogger:   NewWatermillLogger(logger, true),
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
	if n := t.pendingLocked(); n+len(msgs) > m.maxPending {
		return fmt.Errorf("transports: memory: publish %d message(s) to %q: %w (%d pending, limit %d)",
			len(msgs), topic, ErrTopicFull, n, m.maxPending)
	}
	for _, msg := range msgs {
		c := msg.Copy()
		c.Metadata.Set(MetaRoutingKey, topic)
		t.queue = append(t.queue, &memEntry{msg: c, place: placeQueued})
	}
	t.signal()
	return nil
}

// Subscribe returns a channel of topic's messages, starting with those
// already queued. Each message must be acked, nacked or detached (see
// [Detach]; a detached message must later be settled). The channel is
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

// forward hands the GoChannel's messages to the subscriber and passes the
// subscriber's ack, nack or detach back. GoChannel sends one message at a
// time per subscriber and resends it on nack, so at most one message is in
// hand here. The subscriber gets its own copy carrying a DetachFunc, so that
// its Ack or Nack after a detach does not reach the GoChannel.
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
		m.mu.Lock()
		e := t.cur
		if e == nil || !e.delivering || e.msg.UUID != msg.UUID {
			// The pump's publish is over, so the GoChannel gave up on this
			// subscriber: it is going away.
			m.mu.Unlock()
			continue
		}
		c := &memCopy{e: e, out: msg.Copy(), detachCh: make(chan struct{})}
		m.mu.Unlock()
		c.out.SetContext(WithDetach(ctx, m.detacher(t, c)))

		select {
		case out <- c.out:
		case <-ctx.Done():
			continue // not handed out; GoChannel closes in
		case <-m.closing:
			continue
		}
		select {
		case <-c.out.Acked():
		case <-c.out.Nacked():
		case <-c.detachCh:
		case <-m.closing:
			m.mu.Lock()
			c.done = true
			m.mu.Unlock()
			continue
		}
		m.mu.Lock()
		if c.detached {
			// The entry tracks the message now; release the GoChannel so
			// that the pump sends the next one.
			m.mu.Unlock()
			msg.Ack()
			continue
		}
		c.done = true
		acked := isClosed(c.out.Acked())
		if acked {
			// Recorded before the GoChannel learns of it, so the pump sees
			// the ack when its publish returns (or, for a late ack, when
			// woken).
			t.ackLocked(e)
		}
		m.mu.Unlock()
		if acked {
			msg.Ack()
			t.signal()
		} else {
			msg.Nack() // the GoChannel sends it again
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// detacher returns the DetachFunc of subscriber copy c.
func (m *Memory) detacher(t *memTopic, c *memCopy) DetachFunc {
	return func() (Settle, error) {
		m.mu.Lock()
		defer m.mu.Unlock()
		what := fmt.Sprintf("transports: memory: detach message %s on %q", c.out.UUID, t.name)
		switch {
		case m.closed:
			return nil, fmt.Errorf("%s: %w", what, ErrClosed)
		case c.detached:
			return nil, fmt.Errorf("%s: already detached", what)
		case c.done || isClosed(c.out.Acked()) || isClosed(c.out.Nacked()):
			return nil, fmt.Errorf("%s: already acked or nacked", what)
		}
		c.detached = true
		c.e.detached++
		close(c.detachCh)
		return func(ack bool) error { return m.settle(t, c, ack) }, nil
	}
}

// settle finishes detached copy c: an ack removes its message, a nack puts
// it back at the head of the queue once no other subscriber holds it
// detached or acked it.
func (m *Memory) settle(t *memTopic, c *memCopy, ack bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.settled {
		return nil
	}
	c.settled = true
	if m.closed {
		return fmt.Errorf("transports: memory: settle message %s on %q: %w (the message is lost)", c.out.UUID, t.name, ErrClosed)
	}
	e := c.e
	e.detached--
	switch {
	case ack:
		t.ackLocked(e)
	case e.acked || e.detached > 0:
		// Delivered already, or still held by another subscriber.
	case e.place == placeHeld:
		t.unholdLocked(e)
		e.place = placeQueued
		t.queue = slices.Insert(t.queue, 0, e)
	case e.place == placeCurrent:
		e.handedBack = true // delivered again once the round is over
	}
	t.signal()
	return nil
}

// ackLocked records that a subscriber acknowledged e. Memory.mu must be held.
func (t *memTopic) ackLocked(e *memEntry) {
	e.acked = true
	if e.place == placeHeld {
		t.unholdLocked(e)
		e.place = placeGone
	}
}

// unholdLocked removes e from t.held. Memory.mu must be held.
func (t *memTopic) unholdLocked(e *memEntry) {
	if i := slices.Index(t.held, e); i >= 0 {
		t.held = slices.Delete(t.held, i, i+1)
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

// pump delivers t's messages through the GoChannel, one at a time. A
// message leaves the topic once a subscriber acked it; a detached one moves
// to t.held and the next one is delivered.
func (m *Memory) pump(t *memTopic) {
	defer m.wg.Done()
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return
		}
		e, gen, ready := t.nextLocked()
		m.mu.Unlock()
		if !ready {
			select {
			case <-t.wake:
				continue
			case <-m.closing:
				return
			}
		}

		// Blocks until every current subscriber acked or detached, or went away.
		if err := t.gc.Publish(t.name, e.msg); err != nil {
			return // the GoChannel is closed: so is m
		}

		m.mu.Lock()
		e.delivering = false
		if !e.acked && e.detached == 0 && !e.handedBack {
			// Nobody took it: keep it current; a late ack or detach still counts.
			e.failed, e.failedGen = true, gen
		}
		m.mu.Unlock()
	}
}

// nextLocked closes the current message's finished delivery round (acked:
// gone; detached: held; handed back: deliver again) and returns the message
// to deliver now, if any, with the subscription generation it goes to.
// After a round nobody acked or detached, the message waits for a
// subscription change: the subscribers that had it are gone. Memory.mu must
// be held.
func (t *memTopic) nextLocked() (e *memEntry, gen uint64, ready bool) {
	if e := t.cur; e != nil && !e.delivering {
		switch {
		case e.acked:
			e.place = placeGone
			t.cur = nil
		case e.detached > 0:
			e.place = placeHeld
			t.held = append(t.held, e)
			t.cur = nil
		case e.handedBack:
			e.handedBack, e.failed = false, false
		}
	}
	if t.cur == nil && len(t.queue) > 0 {
		e := t.queue[0]
		t.queue[0] = nil
		t.queue = t.queue[1:]
		if len(t.queue) == 0 {
			t.queue = nil
		}
		e.place = placeCurrent
		e.acked, e.detached, e.handedBack, e.failed = false, 0, false, false
		t.cur = e
	}
	e = t.cur
	if e == nil || t.subs == 0 || (e.failed && e.failedGen == t.gen) {
		return nil, 0, false
	}
	e.delivering, e.failed = true, false
	return e, t.gen, true
}

// Pending returns how many messages topic holds that no subscriber has
// acked yet: queued, in flight and detached but not settled.
func (m *Memory) Pending(topic string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.topics[topic]; ok {
		return t.pendingLocked()
	}
	return 0
}

// Peek returns copies of topic's unacknowledged messages without removing
// them: detached ones first (in the order they were detached), then the
// one in flight and the queue in delivery order. It is meant for inspecting
// topics nobody consumes, such as dead letters.
func (m *Memory) Peek(topic string) []*message.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.topics[topic]
	if !ok {
		return nil
	}
	out := make([]*message.Message, 0, t.pendingLocked())
	for _, e := range t.held {
		out = append(out, e.msg.Copy())
	}
	if t.curPendingLocked() {
		out = append(out, t.cur.msg.Copy())
	}
	for _, e := range t.queue {
		out = append(out, e.msg.Copy())
	}
	return out
}

// Close stops all pumps, closes every subscriber's channel and discards the
// queued and detached messages. It waits for its goroutines to end; a
// subscriber holding an unacked or detached message is not waited for (a
// later Settle returns an error wrapping [ErrClosed]). Close is idempotent.
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
