package transports

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrRequeued is returned (wrapped) by the [Settle] of a detached rabbitmq
// message that can no longer be acked: its channel was lost or its
// subscription ended, and the broker has taken the message back (it will be
// delivered again).
var ErrRequeued = errors.New("rabbitmq transport: message already handed back to the broker")

// Subscribe consumes the queue named topic (a replica queue declared by
// [RabbitMQ.ReplicaSubscriptions], or any existing queue) with the
// configured prefetch and manual acks. Each message carries the delivery's
// routing key as metadata [MetaRoutingKey] and the body as payload; its UUID
// is the AMQP message_id when there is one, a new UUID otherwise. AMQP
// headers of any type become metadata (strings as they are, other values
// printed with fmt).
//
// Messages come one at a time: the next one is sent when the previous one is
// acked, nacked or detached ([Detach]); a detached message stays
// unacknowledged on the broker until its [Settle] is called. Acks are
// coalesced: an Ack or Settle(true) is recorded at once and sent moments
// later, from another goroutine, as one basic.ack with multiple set for the
// run of settled messages it ends (a message still detached is never
// covered: the acks of the messages after it go one by one). AMQP acks are
// not confirmed by the broker either way: if the channel is lost before the
// ack is sent, the broker delivers the message again. Nacks (basic.nack with
// requeue) are sent at once.
//
// When the connection is lost, the subscription waits for the transport to
// reconnect and consumes again (re-declaring the replica topology the
// transport declared for this queue); the broker redelivers what was not
// acked, and a later Settle of a detached message fails with [ErrRequeued].
//
// When ctx is cancelled, the subscription stops consuming, waits until the
// message in hand (if any) is acked or nacked, sends the acks not sent yet,
// nacks (requeues) the detached messages not settled yet, closes its channel
// (the broker requeues any prefetched message) and closes the returned
// channel. [RabbitMQ.Close] ends it at once, without waiting for the message
// in hand (acks recorded before still go out). The messages' context is
// cancelled when the subscription ends.
//
// Subscribe fails when the transport is not connected or the queue cannot be
// consumed (it does not exist, say).
func (r *RabbitMQ) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic == "" {
		return nil, errors.New("transports: rabbitmq: subscribe: empty topic (queue name)")
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, fmt.Errorf("transports: rabbitmq: subscribe to queue %q: %w", topic, ErrRabbitMQClosed)
	}
	r.subs.Add(1)
	r.mu.Unlock()

	conn, err := r.conn.current()
	if err == nil {
		var sess *rabbitSession
		if sess, err = r.startConsumer(conn, topic, false); err == nil {
			sctx, cancel := context.WithCancel(ctx)
			stop := context.AfterFunc(r.life, cancel)
			s := &rabbitSub{
				r:      r,
				queue:  topic,
				ctx:    sctx,
				cancel: func() { stop(); cancel() },
				out:    make(chan *message.Message),
				log:    r.log.With("queue", topic),
			}
			go s.run(sess)
			return s.out, nil
		}
	}
	r.subs.Done()
	return nil, fmt.Errorf("transports: rabbitmq: subscribe to queue %q: %w", topic, err)
}

// startConsumer opens a channel on conn and consumes queue on it,
// re-declaring the queue's replica topology first when redeclare is set and
// the transport declared one.
func (r *RabbitMQ) startConsumer(conn *amqp.Connection, queue string, redeclare bool) (*rabbitSession, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	fail := func(err error) (*rabbitSession, error) {
		_ = ch.Close()
		return nil, err
	}
	if redeclare {
		if rt, ok := r.topologyOf(queue); ok {
			if err := rt.declare(ch); err != nil {
				return fail(err)
			}
		}
	}
	if err := ch.Qos(r.s.prefetch, 0, false); err != nil {
		return fail(fmt.Errorf("set prefetch %d: %w", r.s.prefetch, err))
	}
	tag := "gocqrs." + watermill.NewShortUUID()
	deliveries, err := ch.Consume(queue, tag, false, false, false, false, nil)
	if err != nil {
		return fail(fmt.Errorf("consume: %w", err))
	}
	sess := &rabbitSession{
		conn:       conn,
		ch:         ch,
		tag:        tag,
		deliveries: deliveries,
		log:        r.log.With("queue", queue),
		detached:   map[uint64]*rabbitHeld{},
	}
	sess.acks.init(&r.ackStats)
	go sess.flusher()
	return sess, nil
}

// rabbitSub is one Subscribe call.
type rabbitSub struct {
	r      *RabbitMQ
	queue  string
	ctx    context.Context // ends with the subscription
	cancel func()
	out    chan *message.Message
	log    *slog.Logger
}

// rabbitSession is one channel consuming the queue; its deliveries can be
// settled on it only.
type rabbitSession struct {
	conn       *amqp.Connection
	ch         *amqp.Channel
	tag        string
	deliveries <-chan amqp.Delivery
	log        *slog.Logger

	acks rabbitAcks // see rabbitmq_acks.go

	mu       sync.Mutex
	detached map[uint64]*rabbitHeld // by delivery tag
	ended    bool
}

// lost reports whether the session's channel or connection is gone.
func (s *rabbitSession) lost() bool { return s.conn.IsClosed() || s.ch.IsClosed() }

type heldState int

const (
	heldPending  heldState = iota // handed out, waiting for Ack, Nack or Detach
	heldSettled                   // acked or nacked on the broker
	heldDetached                  // detached, waiting for its Settle
	heldReleased                  // handed back to the broker unsettled
)

// rabbitHeld is one delivery handed out as a Watermill message.
type rabbitHeld struct {
	sess     *rabbitSession
	tag      uint64            // the delivery's tag on sess's channel
	ack      amqp.Acknowledger // the delivery's channel
	msg      *message.Message
	queue    string
	log      *slog.Logger
	state    heldState // guarded by sess.mu
	detachCh chan struct{}
}

func (s *rabbitSub) run(sess *rabbitSession) {
	defer s.r.subs.Done()
	defer close(s.out)
	defer s.cancel()
	for {
		stop := s.consume(sess)
		s.end(sess)
		if stop {
			return
		}
		if sess = s.reopen(); sess == nil {
			return
		}
	}
}

// consume hands out sess's deliveries one at a time. It returns true when
// the subscription ends, false when the channel was lost.
func (s *rabbitSub) consume(sess *rabbitSession) (stop bool) {
	for {
		var d amqp.Delivery
		var ok bool
		select {
		case <-s.ctx.Done():
			return true
		case d, ok = <-sess.deliveries:
		}
		if !ok {
			if s.ctx.Err() != nil {
				return true
			}
			s.r.ackStats.interrupted.Add(1)
			reason := "consumer cancelled by the broker"
			if sess.ch.IsClosed() {
				reason = "channel lost"
			}
			s.log.Warn("rabbitmq: subscription interrupted; consuming again", "reason", reason)
			return false
		}
		h := s.hold(sess, d)
		if s.ctx.Err() != nil { // both were ready: ending wins
			h.finish(false)
			return true
		}
		select {
		case s.out <- h.msg:
		case <-s.ctx.Done():
			h.finish(false)
			return true
		}
		// The message in hand is finished even when ctx ends now.
		select {
		case <-h.msg.Acked():
			h.finish(true)
		case <-h.msg.Nacked():
			h.finish(false)
		case <-h.detachCh:
		case <-s.r.closing:
			return true
		}
	}
}

// hold wraps d as a Watermill message with a DetachFunc in its context.
func (s *rabbitSub) hold(sess *rabbitSession, d amqp.Delivery) *rabbitHeld {
	id := d.MessageId
	if id == "" {
		id = watermill.NewUUID()
	}
	msg := message.NewMessage(id, d.Body)
	for k, v := range d.Headers {
		msg.Metadata.Set(k, headerText(v))
	}
	msg.Metadata.Set(MetaRoutingKey, d.RoutingKey)
	h := &rabbitHeld{sess: sess, tag: d.DeliveryTag, ack: d.Acknowledger, msg: msg, queue: s.queue, log: s.log, detachCh: make(chan struct{})}
	sess.track(d.DeliveryTag)
	msg.SetContext(WithDetach(s.ctx, h.detach))
	return h
}

// headerText renders an AMQP header value of any type as metadata.
func headerText(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	default:
		return fmt.Sprint(x)
	}
}

// finish acks or nacks (requeue) the delivery for its Watermill Ack/Nack,
// unless it was detached or handed back meanwhile. The ack is sent by the
// session's flusher; once the session has ended it is not sent at all (the
// channel is gone and the broker delivers the message again).
func (h *rabbitHeld) finish(ack bool) {
	s := h.sess
	if !ack {
		s.acks.sendMu.Lock()
		defer s.acks.sendMu.Unlock()
	}
	s.mu.Lock()
	if h.state != heldPending || s.ended {
		s.mu.Unlock()
		return
	}
	h.state = heldSettled
	if ack {
		wake := s.ackLocked(h.tag)
		s.mu.Unlock()
		if wake {
			s.wakeFlusher()
		}
		return
	}
	if err := s.nackAndUnlock(h.tag); err != nil {
		h.log.Debug("rabbitmq: could not nack a message; the broker delivers it again", "error", err.Error())
	}
}

// detach is the message's DetachFunc.
func (h *rabbitHeld) detach() (Settle, error) {
	select {
	case <-h.msg.Acked():
		return nil, fmt.Errorf("transports: rabbitmq: detach message %s: already acked", h.msg.UUID)
	case <-h.msg.Nacked():
		return nil, fmt.Errorf("transports: rabbitmq: detach message %s: already nacked", h.msg.UUID)
	default:
	}
	s := h.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case h.state == heldDetached:
		return nil, fmt.Errorf("transports: rabbitmq: detach message %s: already detached", h.msg.UUID)
	case h.state != heldPending || s.ended:
		return nil, fmt.Errorf("transports: rabbitmq: detach message %s: %w", h.msg.UUID, ErrRequeued)
	}
	h.state = heldDetached
	s.detached[h.tag] = h
	close(h.detachCh)
	return h.settle, nil
}

// settle is a detached message's Settle. An ack is recorded and sent
// moments later by the session's flusher; a nack is sent at once.
func (h *rabbitHeld) settle(ack bool) error {
	s := h.sess
	if !ack {
		s.acks.sendMu.Lock()
		defer s.acks.sendMu.Unlock()
	}
	s.mu.Lock()
	st := h.state
	switch st {
	case heldSettled:
		s.mu.Unlock()
		return nil
	case heldReleased:
		s.mu.Unlock()
		if ack {
			return fmt.Errorf("transports: rabbitmq: ack message %s from queue %q: %w", h.msg.UUID, h.queue, ErrRequeued)
		}
		return nil
	}
	h.state = heldSettled
	delete(s.detached, h.tag)
	if !ack {
		// A failed nack changes nothing: a lost channel hands it back as well.
		_ = s.nackAndUnlock(h.tag)
		return nil
	}
	if s.lost() {
		s.settledLocked(h.tag)
		s.mu.Unlock()
		return fmt.Errorf("transports: rabbitmq: ack message %s from queue %q: %w: channel lost", h.msg.UUID, h.queue, ErrRequeued)
	}
	wake := s.ackLocked(h.tag)
	s.mu.Unlock()
	if wake {
		s.wakeFlusher()
	}
	return nil
}

// end gives sess up: the acks not sent yet are sent, its detached messages
// are handed back, the consumer is cancelled and the channel closed, so the
// broker requeues everything unacknowledged on it.
func (s *rabbitSub) end(sess *rabbitSession) {
	sess.stopFlusher()
	sess.mu.Lock()
	sess.ended = true
	held := make([]*rabbitHeld, 0, len(sess.detached))
	for _, h := range sess.detached {
		h.state = heldReleased
		held = append(held, h)
	}
	sess.detached = map[uint64]*rabbitHeld{}
	sess.mu.Unlock()
	if sess.ch.IsClosed() {
		return
	}
	// No ack is recorded after ended is set: this sends the last ones, before
	// the consumer is cancelled.
	sess.flush()
	_ = sess.ch.Cancel(sess.tag, false)
	for _, h := range held {
		if h.ack != nil {
			_ = h.ack.Nack(h.tag, false, true)
		}
	}
	sess.acks.stats.nacks.Add(int64(len(held)))
	if len(held) > 0 {
		s.log.Info("rabbitmq: handed detached messages back to the broker", "messages", len(held))
	}
	if err := sess.ch.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
		s.log.Debug("rabbitmq: close consumer channel", "error", err.Error())
	}
}

// reopen consumes the queue again on the reconnected transport, with
// backoff. nil means the subscription ended meanwhile.
func (s *rabbitSub) reopen() *rabbitSession {
	delay := reconnectMin
	for attempt := 1; ; attempt++ {
		conn, err := s.r.conn.await(s.ctx)
		if err != nil {
			return nil
		}
		sess, err := s.r.startConsumer(conn, s.queue, true)
		if err == nil {
			s.log.Info("rabbitmq: consuming again", "attempts", attempt)
			return sess
		}
		s.log.Warn("rabbitmq: cannot consume yet; retrying", "attempt", attempt, "error", err.Error())
		if !waitOrStop(s.ctx.Done(), rabbitJitter(delay)) {
			return nil
		}
		delay = min(2*delay, reconnectMax)
	}
}
