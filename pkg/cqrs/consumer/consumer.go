// Package consumer is the replica side's message loop: it subscribes to what
// a transport says a replica queue needs, decodes django-cqrs bodies, hands
// them to an [Applier] (the replica engine) and does what django-cqrs's
// consumer does with the result:
//
//   - invalid JSON, or a missing instance_pk, signal_type, cqrs_id or
//     instance_data: acknowledged and dropped ("CQRS couldn't be parsed",
//     "CQRS couldn't proceed");
//   - a body cqrs_id this consumer has no replica model for (or that is not
//     in Options.CQRSIDs): acknowledged and dropped ("Model for cqrs_id X is
//     not found");
//   - expires in the past: a copy goes to the dead-letter key
//     cqrs.<dead letter queue>.<cqrs_id> with an expiration of
//     Options.DeadMessageTTL, then the message is acknowledged;
//   - the applier fails: while retries < MaxRetries the message is held for
//     RetryDelay, a copy with retries+1 is published on the replica's own key
//     cqrs.<queue>.<cqrs_id> and the original is acknowledged; after that it
//     is dead-lettered with its retries unchanged;
//   - a body without expires is applied (django-cqrs's worker crashes on it).
//
// # Holding failed messages
//
// Like django-cqrs's delay queue, a failed message is held without stopping
// the flow of the messages behind it: when the transport supports
// [transports.Detach], the message is detached from its subscription (the
// broker keeps it unacknowledged) and a goroutine holds it for RetryDelay,
// publishes the retries+1 copy and then acks it on the broker (or hands it
// back when the copy cannot be published), while the handler returns at
// once and the next message is consumed. A poison message therefore delays
// nothing but its own retries. At most Options.DelayQueueMaxSize messages
// are held that way; when that many are held, or when the transport cannot
// detach, a failed message is held inside its router handler instead, which
// blocks its subscription for RetryDelay (django-cqrs, with a full delay
// queue, instead republishes the held message that is due first at once).
//
// A message held for a retry lets later messages of the same entity pass
// it. The revision check makes that safe, as with django-cqrs: when a newer
// revision of the entity is applied meanwhile, the retry copy of the older
// one arrives later and is skipped as stale.
//
// A body whose keys are all present but hold values of the wrong type
// (retries "abc", expires not a datetime, ...) cannot be retried with a new
// retries count; it is dead-lettered as received.
//
// Copies differ from the received body only in retries (they are re-encoded
// with wire.Encode, so expires is written in its normal form). When a copy
// cannot be published, the original is handed back to the broker (a message
// held in its handler after a further RetryDelay, so that a broker
// redelivering at once is not hammered). On shutdown every message held for
// a retry is handed back to the broker, nothing is lost; a message being
// applied is finished first.
//
// Retries are the consumer's own: the Watermill router runs without retry
// middleware.
//
// # Batches
//
// With Options.BatchSize > 1 and a transport that supports
// [transports.Detach] (memory, RabbitMQ, Kafka), each handler detaches its message
// and hands it to a collector, so the subscription goes on with the next
// one. The collector applies up to BatchSize messages, or what arrived
// within BatchWait of the oldest, in one replica transaction
// ([BatchApplier], replica.Engine.ApplyBatch), then settles each message:
// applied and skipped ones are acked after the commit; a failed one goes
// through the retry and dead-letter rules above on its own (the others of
// its batch are not affected); when the whole batch fails, every message of
// it does. Batches are applied one after the other, messages in the order
// they were delivered, so the messages of one entity keep their order; a
// batch's messages are settled, logged and counted by a second goroutine
// while the next batch is applied. At most BatchMaxInFlight messages are
// collected and not yet settled; beyond that, handlers wait. When the delay
// queue is full, settling waits for room (and at most one more batch is
// applied meanwhile). On shutdown the collected
// messages are applied and settled before the subscriptions end, and
// messages delivered meanwhile are handed back to the broker: nothing is
// lost. A transport that cannot detach gets one message at a time.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// Applier applies one decoded message to the replica; *replica.Engine is
// one. An error means "not applied, retry later", except errors wrapping
// replica.ErrUnknownModel, which drop the message.
type Applier interface {
	Apply(ctx context.Context, d replica.Delivery) (replica.Result, error)
}

// Defaults of [Options], django-cqrs's replica defaults.
const (
	DefaultMaxRetries     = 30
	DefaultRetryDelay     = 2 * time.Second
	DefaultDeadMessageTTL = 864000 * time.Second
	// DefaultDelayQueueMaxSize bounds the failed messages held for their
	// retry without blocking a subscription (django-cqrs's
	// replica.delay_queue_max_size, which is unbounded by default there).
	DefaultDelayQueueMaxSize = 1000
)

// Options configure a [Consumer].
type Options struct {
	// Queue is the replica queue name (django-cqrs's CQRS["queue"]).
	// Required.
	Queue string
	// DeadLetterQueue defaults to "dead_letter_<Queue>".
	DeadLetterQueue string
	// MaxRetries is how many times a failing message is requeued before it
	// is dead-lettered; nil means DefaultMaxRetries (30). new(0) dead-letters
	// on the first failure.
	MaxRetries *int
	// RetryDelay is how long a failed message is held before its requeue;
	// 0 means DefaultRetryDelay (2 s).
	RetryDelay time.Duration
	// DelayQueueMaxSize is how many failed messages may be held for their
	// retry at once without blocking their subscription (django-cqrs's
	// replica.delay_queue_max_size). Beyond it a failed message is held in
	// its router handler, which stops its subscription for RetryDelay. 0
	// means DefaultDelayQueueMaxSize (1000); negative is an error. Every held
	// message stays unacknowledged on the broker, so a RabbitMQ prefetch
	// must leave room for them.
	DelayQueueMaxSize int
	// DeadMessageTTL is the expiration dead letters carry (AMQP expiration,
	// in ms, as transports.MetaExpiration metadata); 0 means
	// DefaultDeadMessageTTL (10 days), negative means none.
	DeadMessageTTL time.Duration
	// CQRSIDs limits the consumer to these cqrs_ids; empty means every
	// replica model of the registry.
	CQRSIDs []string
	// Logger receives the consumer's events; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for expiry checks; nil means time.Now.
	Now func() time.Time
	// BatchSize > 1 applies up to BatchSize messages per replica
	// transaction (see "Batches" in the package doc); the Applier must then
	// also be a [BatchApplier]. 0 or 1 applies one message at a time.
	BatchSize int
	// BatchWait is how long a batch waits for more messages after its first
	// one; 0 means DefaultBatchWait (20 ms).
	BatchWait time.Duration
	// BatchMaxInFlight bounds the messages collected for batches and not
	// yet settled (they are unacknowledged on the broker, like held
	// messages: a RabbitMQ prefetch must leave room for them); 0 means
	// DefaultBatchMaxInFlight (3 × BatchSize), and it must be at least
	// BatchSize.
	BatchMaxInFlight int
	// Observer, when set, receives per-message events (see [Observer]).
	Observer Observer
}

// Consumer runs one replica queue's subscriptions on a Watermill router.
type Consumer struct {
	tr         transports.Transport
	pub        message.Publisher
	ap         Applier
	queue      string
	dlq        string
	maxRetries int
	retryDelay time.Duration
	ttl        time.Duration
	ids        []string
	consumed   map[string]bool
	log        *slog.Logger
	now        func() time.Time
	observer   Observer

	started atomic.Bool
	running chan struct{}
	stats   counters

	// Messages held for their retry outside the router handler (held.go).
	slots      chan struct{}   // one token per held message, DelayQueueMaxSize at most
	holdCtx    context.Context // set by Run; cancelled once its router has stopped
	heldMu     sync.Mutex
	heldClosed bool           // Run is ending: hold no more messages
	held       sync.WaitGroup // held goroutines

	batch *batcher // nil when applying one message at a time
}

// New checks opts and returns a consumer of tr's messages for reg's replica
// models. It does not touch the broker; [Consumer.Run] does.
func New(tr transports.Transport, reg *registry.Registry, ap Applier, opts Options) (*Consumer, error) {
	if tr == nil || reg == nil || ap == nil {
		return nil, errors.New("consumer: New needs a transport, a registry and an applier")
	}
	if err := checkQueueName("queue", opts.Queue); err != nil {
		return nil, err
	}
	dlq := opts.DeadLetterQueue
	if dlq == "" {
		dlq = transports.DefaultDeadLetterQueue(opts.Queue)
	} else if err := checkQueueName("dead_letter_queue", dlq); err != nil {
		return nil, err
	}
	if dlq == opts.Queue {
		return nil, fmt.Errorf("consumer: dead_letter_queue %q must differ from queue", dlq)
	}
	maxRetries := DefaultMaxRetries
	if opts.MaxRetries != nil {
		maxRetries = *opts.MaxRetries
		if maxRetries < 0 {
			return nil, fmt.Errorf("consumer: max_retries must not be negative, got %d", maxRetries)
		}
	}
	retryDelay := opts.RetryDelay
	switch {
	case retryDelay == 0:
		retryDelay = DefaultRetryDelay
	case retryDelay < 0:
		return nil, fmt.Errorf("consumer: retry_delay must not be negative, got %s", retryDelay)
	}
	ttl := opts.DeadMessageTTL
	if ttl == 0 {
		ttl = DefaultDeadMessageTTL
	}
	delayMax := opts.DelayQueueMaxSize
	switch {
	case delayMax == 0:
		delayMax = DefaultDelayQueueMaxSize
	case delayMax < 0:
		return nil, fmt.Errorf("consumer: delay_queue_max_size must not be negative, got %d", delayMax)
	}
	var bap BatchApplier
	batchWait, maxInFlight := opts.BatchWait, opts.BatchMaxInFlight
	switch {
	case opts.BatchSize < 0:
		return nil, fmt.Errorf("consumer: batch_size must not be negative, got %d", opts.BatchSize)
	case batchWait < 0:
		return nil, fmt.Errorf("consumer: batch_wait must not be negative, got %s", batchWait)
	case opts.BatchSize > 1:
		var ok bool
		if bap, ok = ap.(BatchApplier); !ok {
			return nil, fmt.Errorf("consumer: batch_size %d needs an applier with ApplyBatch (%T has none)", opts.BatchSize, ap)
		}
		if batchWait == 0 {
			batchWait = DefaultBatchWait
		}
		if maxInFlight == 0 {
			maxInFlight = DefaultBatchMaxInFlight(opts.BatchSize)
		}
		if maxInFlight < opts.BatchSize {
			return nil, fmt.Errorf("consumer: batch_max_in_flight %d must be at least batch_size %d", maxInFlight, opts.BatchSize)
		}
	}
	ids, err := consumedIDs(reg, opts.CQRSIDs)
	if err != nil {
		return nil, err
	}
	c := &Consumer{
		tr:         tr,
		pub:        tr.Publisher(),
		ap:         ap,
		queue:      opts.Queue,
		dlq:        dlq,
		maxRetries: maxRetries,
		retryDelay: retryDelay,
		ttl:        ttl,
		ids:        ids,
		consumed:   map[string]bool{},
		log:        opts.Logger,
		now:        opts.Now,
		observer:   opts.Observer,
		running:    make(chan struct{}),
		slots:      make(chan struct{}, delayMax),
	}
	for _, id := range ids {
		c.consumed[id] = true
	}
	if bap != nil {
		c.batch = newBatcher(c, bap, opts.BatchSize, batchWait, maxInFlight)
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.log = c.log.With("queue", c.queue)
	return c, nil
}

func checkQueueName(key, name string) error {
	if name == "" {
		return fmt.Errorf("consumer: %s is required", key)
	}
	if strings.ContainsAny(name, " \t\r\n#*") {
		return fmt.Errorf("consumer: %s %q must not contain spaces, '#' or '*' (it is part of a routing key)", key, name)
	}
	return nil
}

// consumedIDs returns the filter checked against the registry, or every
// replica cqrs_id when the filter is empty.
func consumedIDs(reg *registry.Registry, filter []string) ([]string, error) {
	known := reg.ReplicaIDs()
	if len(known) == 0 {
		return nil, errors.New("consumer: the registry has no replica models")
	}
	if len(filter) == 0 {
		return known, nil
	}
	var ids []string
	for _, id := range filter {
		if !slices.Contains(known, id) {
			return nil, fmt.Errorf("consumer: cqrs_id %q has no replica model (known: %s)", id, strings.Join(known, ", "))
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// CQRSIDs returns the cqrs_ids this consumer applies.
func (c *Consumer) CQRSIDs() []string { return slices.Clone(c.ids) }

// Running is closed once every subscription is in place. It stays open when
// Run fails before that.
func (c *Consumer) Running() <-chan struct{} { return c.running }

// Run declares the replica's subscriptions, starts one router handler per
// subscription (named "<cqrs_id>.broadcast" / "<cqrs_id>.direct") and
// consumes until ctx is cancelled. It returns nil after a clean shutdown,
// once the messages being applied are done and every message held for a
// retry was handed back to the broker; an error when the subscriptions
// cannot be set up or end while ctx is still live (e.g. the transport was
// closed). Run may be called once.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("consumer: Run called twice")
	}
	subs, err := c.tr.ReplicaSubscriptions(c.queue, c.dlq, c.ids)
	if err != nil {
		return fmt.Errorf("consumer: queue %q: %w", c.queue, err)
	}
	if len(subs) == 0 {
		return fmt.Errorf("consumer: queue %q: transport %q returned no subscriptions", c.queue, c.tr.Name())
	}
	router, err := message.NewRouter(message.RouterConfig{}, transports.NewWatermillLogger(c.log, false))
	if err != nil {
		return fmt.Errorf("consumer: queue %q: router: %w", c.queue, err)
	}
	// The router closes its subscribers on shutdown; the transport is not ours to close.
	sub := nopCloseSubscriber{c.tr.Subscriber()}
	names := map[string]int{}
	for _, s := range subs {
		name := handlerName(s)
		if names[name]++; names[name] > 1 {
			name = fmt.Sprintf("%s#%d", name, names[name])
		}
		router.AddConsumerHandler(name, s.Topic, sub, c.handler(s))
	}
	// Held messages are handed back only once the router has stopped: a
	// subscription still running would get them again at once.
	holdCtx, stopHolding := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHolding()
	c.holdCtx = holdCtx
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-router.Running():
			close(c.running)
		case <-done:
		}
	}()
	routerCtx := ctx
	var routerDone, drained chan struct{}
	if c.batch != nil {
		// On shutdown the collected messages are applied and acked while
		// the subscriptions are still up; only then is the router stopped.
		// When the router ends by itself (the transport closed), what was
		// collected is applied too.
		rctx, stopRouter := context.WithCancel(context.WithoutCancel(ctx))
		defer stopRouter()
		routerCtx = rctx
		routerDone, drained = make(chan struct{}), make(chan struct{})
		go c.batch.run()
		go func() {
			defer close(drained)
			select {
			case <-ctx.Done():
			case <-routerDone:
			}
			c.batch.drain(stopRouter)
		}()
	}
	err = router.Run(routerCtx)
	if c.batch != nil {
		close(routerDone)
		<-drained
	}
	// The subscriptions are closed: held messages go back to the broker,
	// however the router ended.
	stopHolding()
	c.waitHeld()
	if err != nil {
		return fmt.Errorf("consumer: queue %q: %w", c.queue, err)
	}
	if ctx.Err() == nil {
		return fmt.Errorf("consumer: queue %q: every subscription ended while running (transport %q closed?)", c.queue, c.tr.Name())
	}
	return nil
}

func handlerName(s transports.Subscription) string {
	id := s.CQRSID
	if id == "" {
		id = "any"
	}
	if s.Direct {
		return id + ".direct"
	}
	return id + ".broadcast"
}

// nopCloseSubscriber keeps the router from closing the transport's subscriber.
type nopCloseSubscriber struct{ message.Subscriber }

func (nopCloseSubscriber) Close() error { return nil }
