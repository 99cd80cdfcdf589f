package transports

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/pkg/tracectx"
)

// ErrUnroutable is returned (wrapped) by [RabbitMQ.Publish] when the broker
// returned messages as unroutable (basic.return: no queue is bound to the
// routing key). The broker dropped them. It wraps [ErrRejected].
var ErrUnroutable = fmt.Errorf("rabbitmq transport: message unroutable (%w)", ErrRejected)

// ErrNacked is returned (wrapped) by [RabbitMQ.Publish] when the broker
// refused messages (publisher-confirm nack, e.g. a full queue with
// x-overflow reject-publish). It wraps [ErrRejected].
var ErrNacked = fmt.Errorf("rabbitmq transport: message nacked by the broker (%w)", ErrRejected)

// ErrNotConfirmed is returned (wrapped) by [RabbitMQ.Publish] when the
// broker's confirms did not arrive: the channel or connection was lost, or
// [ConfirmTimeout] passed. The messages may or may not have been routed.
var ErrNotConfirmed = errors.New("rabbitmq transport: publish not confirmed")

// ConfirmTimeout bounds how long [RabbitMQ.Publish] waits for the broker's
// confirms of one call.
const ConfirmTimeout = 30 * time.Second

// Publishing channels per transport: Publish calls beyond this many wait
// for a free one.
const rabbitPublishChannels = 4

// returnsBuffer is the capacity of a publishing channel's basic.return
// queue. amqp091 blocks the connection's reader while it is full, so
// Publish also drains it while publishing.
const returnsBuffer = 1024

// pubChannel is one publishing channel in confirm mode. It is used by one
// Publish call at a time, so every basic.return that arrives while a call
// waits for its confirms belongs to that call: RabbitMQ sends a message's
// basic.return before the basic.ack that confirms it, and amqp091 hands
// both out in that order.
type pubChannel struct {
	ch      *amqp.Channel
	returns chan amqp.Return
}

// Publish sends msgs to the exchange with topic as routing key and returns
// once the broker confirmed all of them. Messages go out as django-cqrs
// sends them: persistent (delivery mode 2), content type "text/plain", no
// headers and no other property, except an AMQP expiration when the message
// has metadata [MetaExpiration] (milliseconds), and the W3C trace context
// headers "traceparent" (and "tracestate") when the message's metadata holds
// a valid traceparent (see package tracectx). Other metadata is not sent.
//
// Every message is published with the mandatory flag, all of them before
// the first confirm is awaited (pipelined: the broker has the whole call in
// flight), in the order of msgs on one channel.
//
// Once messages went out, a failure is reported message by message: the
// error wraps a [*PublishError] whose Failed map holds the index of every
// message that was not confirmed, with a cause wrapping [ErrUnroutable] (a
// basic.return: nothing is bound to topic), [ErrNacked] (the broker refused
// it) or [ErrNotConfirmed] (the channel or connection was lost, or
// [ConfirmTimeout] passed or the context was cancelled before its confirm:
// it may or may not have been routed). The messages not in Failed were
// confirmed. A failure before anything was sent (bad input, [ErrNotConnected],
// [ErrRabbitMQClosed], a cancelled context) is a plain error: no message of
// the call was published. errors.Is(err, ErrRejected) reports whether some
// message was refused; [PublishFailures] gives the per-message picture.
//
// The wait ends early when the first message's context is cancelled.
// Publish is safe for concurrent use (up to 4 calls run at once, each on its
// own channel).
func (r *RabbitMQ) Publish(topic string, msgs ...*message.Message) error {
	if topic == "" {
		return errors.New("transports: rabbitmq: publish: empty topic (routing key)")
	}
	if len(topic) > 255 {
		return fmt.Errorf("transports: rabbitmq: publish: routing key %q is longer than 255 bytes", topic)
	}
	if len(msgs) == 0 {
		return nil
	}
	pubs := make([]amqp.Publishing, len(msgs))
	for i, msg := range msgs {
		p, err := publishing(msg)
		if err != nil {
			return fmt.Errorf("transports: rabbitmq: publish to %q: message %d (%s): %w", topic, i, msg.UUID, err)
		}
		pubs[i] = p
	}
	ctx := msgs[0].Context()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("transports: rabbitmq: publish to %q: %w", topic, err)
	}

	var pc *pubChannel
	select {
	case pc = <-r.pubPool:
	case <-r.closing:
		return fmt.Errorf("transports: rabbitmq: publish to %q: %w", topic, ErrRabbitMQClosed)
	case <-ctx.Done():
		return fmt.Errorf("transports: rabbitmq: publish to %q: %w", topic, ctx.Err())
	}
	defer func() { r.pubPool <- pc }()
	if err := r.openPubChannel(pc); err != nil {
		return fmt.Errorf("transports: rabbitmq: publish to %q: %w", topic, err)
	}
	if err := r.publishOn(ctx, pc, topic, pubs); err != nil {
		return fmt.Errorf("transports: rabbitmq: publish %d message(s) to exchange %q: %w", len(pubs), r.s.exchange, err)
	}
	return nil
}

// publishing turns msg into django-cqrs's AMQP properties.
func publishing(msg *message.Message) (amqp.Publishing, error) {
	p := amqp.Publishing{
		ContentType:  "text/plain",
		DeliveryMode: amqp.Persistent,
		Body:         msg.Payload,
	}
	if exp := msg.Metadata.Get(MetaExpiration); exp != "" {
		for _, c := range exp {
			if c < '0' || c > '9' {
				return p, fmt.Errorf("metadata %q: %q is not a number of milliseconds", MetaExpiration, exp)
			}
		}
		p.Expiration = exp
	}
	if tp := msg.Metadata.Get(tracectx.HeaderTraceparent); tp != "" && tracectx.Validate(tp) == nil {
		p.Headers = amqp.Table{tracectx.HeaderTraceparent: tp}
		if ts := msg.Metadata.Get(tracectx.HeaderTracestate); ts != "" && tracectx.ValidateTracestate(ts) == nil {
			p.Headers[tracectx.HeaderTracestate] = ts
		}
	}
	return p, nil
}

// openPubChannel makes sure pc has an open channel in confirm mode on the
// current connection, with the exchange declared.
func (r *RabbitMQ) openPubChannel(pc *pubChannel) error {
	if pc.ch != nil && !pc.ch.IsClosed() {
		return nil
	}
	pc.ch, pc.returns = nil, nil
	conn, err := r.conn.current()
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return fmt.Errorf("enable publisher confirms: %w", err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, returnsBuffer))
	if err := declareExchange(ch, r.s.exchange); err != nil {
		_ = ch.Close()
		return err
	}
	pc.ch, pc.returns = ch, returns
	return nil
}

// discard drops pc's channel after a call that did not see all its
// confirms: late returns and confirms must not reach the next call.
func (pc *pubChannel) discard() {
	if pc.ch != nil {
		go pc.ch.Close() //nolint:errcheck // best effort; the channel may already be gone
	}
	pc.ch, pc.returns = nil, nil
}

// publishOn publishes pubs on pc, waits for their confirms and reports the
// messages that were not confirmed as a *PublishError.
func (r *RabbitMQ) publishOn(ctx context.Context, pc *pubChannel, topic string, pubs []amqp.Publishing) error {
	var returned []amqp.Return
	drain := func() {
		for pc.returns != nil {
			select {
			case ret, ok := <-pc.returns:
				if !ok {
					pc.returns = nil
					return
				}
				returned = append(returned, ret)
			default:
				return
			}
		}
	}
	failed := map[int]error{}
	confirms := make([]*amqp.DeferredConfirmation, 0, len(pubs))
	for i, p := range pubs {
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, r.s.exchange, topic, true, false, p)
		if err != nil {
			// The channel is gone: this message and the ones after it were
			// not sent; the confirms of the earlier ones may still be there.
			cause := fmt.Errorf("routing key %q: %w: message %d not sent: %w", topic, ErrNotConfirmed, i, err)
			for j := i; j < len(pubs); j++ {
				failed[j] = cause
			}
			break
		}
		confirms = append(confirms, dc)
		drain()
	}

	timeout := time.NewTimer(ConfirmTimeout)
	defer timeout.Stop()
	var stopped error // why the wait for confirms ended early
	waited := 0
	for _, dc := range confirms {
	wait:
		for {
			select {
			case <-dc.Done():
				break wait
			case ret, ok := <-pc.returns:
				if !ok {
					pc.returns = nil
					continue
				}
				returned = append(returned, ret)
			case <-timeout.C:
				stopped = fmt.Errorf("routing key %q: %w: no confirm within %s", topic, ErrNotConfirmed, ConfirmTimeout)
			case <-ctx.Done():
				stopped = fmt.Errorf("routing key %q: %w: %w", topic, ErrNotConfirmed, ctx.Err())
			}
			if stopped != nil {
				break
			}
		}
		if stopped != nil {
			break
		}
		waited++
	}
	// Every return of a confirmed message came before its confirm: it is
	// queued now.
	drain()
	closed := pc.ch.IsClosed()
	if stopped != nil || len(failed) > 0 || closed {
		// Late returns and confirms must not reach the next call.
		pc.discard()
	}
	var nackCause error
	for i, dc := range confirms {
		switch {
		case i >= waited:
			failed[i] = stopped
		case dc.Acked():
		case closed:
			// amqp091 nacks what is pending when the channel closes.
			failed[i] = fmt.Errorf("routing key %q: %w: channel closed before the confirm: %w", topic, ErrNotConfirmed, amqp.ErrClosed)
		default:
			if nackCause == nil {
				nackCause = fmt.Errorf("routing key %q: %w", topic, ErrNacked)
			}
			failed[i] = nackCause
		}
	}
	r.attributeReturns(topic, pubs, returned, failed)
	if len(failed) == 0 {
		return nil
	}
	return &PublishError{Total: len(pubs), Failed: failed}
}

// attributeReturns marks the messages the broker returned as failed with
// ErrUnroutable. A basic.return carries no delivery tag, so a return is
// matched to the first message of the call with the same body that is not
// matched yet (messages of one call share the routing key and the
// properties, so two messages with equal bodies are the same message on the
// wire). A return no message matches makes every message not failed yet
// unconfirmed, the cautious reading.
func (r *RabbitMQ) attributeReturns(topic string, pubs []amqp.Publishing, returned []amqp.Return, failed map[int]error) {
	if len(returned) == 0 {
		return
	}
	ret := returned[0]
	cause := fmt.Errorf("routing key %q: %w: returned by the broker (%d %s)", topic, ErrUnroutable, ret.ReplyCode, ret.ReplyText)
	byBody := make(map[string][]int, len(returned))
	for _, ret := range returned {
		byBody[string(ret.Body)] = nil
	}
	for i, p := range pubs {
		if list, ok := byBody[string(p.Body)]; ok {
			byBody[string(p.Body)] = append(list, i)
		}
	}
	unmatched := 0
	for _, ret := range returned {
		list := byBody[string(ret.Body)]
		if len(list) == 0 {
			unmatched++
			continue
		}
		failed[list[0]] = cause
		byBody[string(ret.Body)] = list[1:]
	}
	if unmatched > 0 {
		ambiguous := fmt.Errorf("routing key %q: %w: %d returned message(s) match no message of the call", topic, ErrNotConfirmed, unmatched)
		for i := range pubs {
			if _, ok := failed[i]; !ok {
				failed[i] = ambiguous
			}
		}
	}
}
