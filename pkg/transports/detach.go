package transports

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Settle finishes a detached message on the broker: ack removes it, a nack
// hands it back (redelivered later). It may be called once; later calls do
// nothing and return nil. A subscriber may send the ack asynchronously,
// moments after Settle returns (the rabbitmq transport coalesces acks, see
// [RabbitMQ.Subscribe]); an error means the message will not be acked.
type Settle func(ack bool) error

// DetachFunc is what a subscriber puts in a message's context so that the
// message can be detached: calling it tells the subscriber to stop waiting
// for the message's Ack/Nack and deliver the next one, while the broker keeps
// the message unacknowledged until the returned Settle is called. After a
// successful detach, the Watermill Ack/Nack of the message (for instance the
// router's, when the handler returns) no longer reaches the broker.
type DetachFunc func() (Settle, error)

type detachKey struct{}

// WithDetach returns ctx carrying fn; subscribers that support detaching set
// it on each message they deliver (msg.SetContext).
func WithDetach(ctx context.Context, fn DetachFunc) context.Context {
	return context.WithValue(ctx, detachKey{}, fn)
}

// Detach detaches msg from its subscriber if the subscriber supports it, so a
// consumer can hold a message (a failed one waiting for its retry delay)
// without stopping the flow of the messages behind it. ok is false when the
// subscriber does not support detaching; the caller then keeps the message
// attached (and blocks the subscription while it holds it).
func Detach(msg *message.Message) (settle Settle, ok bool, err error) {
	fn, _ := msg.Context().Value(detachKey{}).(DetachFunc)
	if fn == nil {
		return nil, false, nil
	}
	s, err := fn()
	if err != nil {
		return nil, false, err
	}
	return s, true, nil
}
