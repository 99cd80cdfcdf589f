package transports

import (
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Queue maintenance on the rabbitmq transport, for the `cqrs dead-letters`
// command (django-cqrs's cqrs_dead_letters): declare a replica's queues,
// count, read and purge one of them.

// DeclareReplicaQueues declares the exchange, queue and deadLetterQueue and
// binds them for cqrsIDs as [RabbitMQ.ReplicaSubscriptions] does, but
// subscribes to nothing and accepts an empty cqrsIDs (the queues are then
// declared without bindings). django-cqrs's cqrs_dead_letters declares the
// same, without the dead-letter queue's bindings, which its consumer
// declares.
func (r *RabbitMQ) DeclareReplicaQueues(queue, deadLetterQueue string, cqrsIDs []string) error {
	rt := replicaTopology{exchange: r.s.exchange, queue: queue, deadLetterQueue: deadLetterQueue, cqrsIDs: cqrsIDs}
	if err := rt.checkNames(); err != nil {
		return fmt.Errorf("transports: rabbitmq: declare replica queues: %w", err)
	}
	ch, err := r.openChannel()
	if err != nil {
		return fmt.Errorf("transports: rabbitmq: declare replica queue %q: %w", queue, err)
	}
	defer ch.Close() //nolint:errcheck // a failed declaration has closed it already
	if err := rt.declare(ch); err != nil {
		return fmt.Errorf("transports: rabbitmq: declare replica queue %q: %w", queue, err)
	}
	return nil
}

// checkNames validates the names of a replica topology whose cqrs_ids may
// be none.
func (rt replicaTopology) checkNames() error {
	if len(rt.cqrsIDs) > 0 {
		return rt.check()
	}
	if err := checkRoutingPart("queue name", rt.queue); err != nil {
		return err
	}
	if err := checkRoutingPart("dead-letter queue name", rt.deadLetterQueue); err != nil {
		return err
	}
	if rt.queue == rt.deadLetterQueue {
		return fmt.Errorf("dead-letter queue %q must differ from the queue", rt.deadLetterQueue)
	}
	return nil
}

// QueueLength returns how many messages queue holds ready for delivery (not
// counting messages delivered and not yet acknowledged). It fails when the
// queue does not exist.
func (r *RabbitMQ) QueueLength(queue string) (int, error) {
	ch, err := r.openChannel()
	if err != nil {
		return 0, fmt.Errorf("transports: rabbitmq: count queue %q: %w", queue, err)
	}
	defer ch.Close() //nolint:errcheck // a failed passive declaration has closed it already
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("transports: rabbitmq: count queue %q: %w", queue, err)
	}
	return q.Messages, nil
}

// PurgeQueue removes every ready message of queue and returns how many it
// removed.
func (r *RabbitMQ) PurgeQueue(queue string) (int, error) {
	ch, err := r.openChannel()
	if err != nil {
		return 0, fmt.Errorf("transports: rabbitmq: purge queue %q: %w", queue, err)
	}
	defer ch.Close() //nolint:errcheck // a failed purge has closed it already
	n, err := ch.QueuePurge(queue, false)
	if err != nil {
		return 0, fmt.Errorf("transports: rabbitmq: purge queue %q: %w", queue, err)
	}
	return n, nil
}

// openChannel opens a channel on the current connection.
func (r *RabbitMQ) openChannel() (*amqp.Channel, error) {
	conn, err := r.conn.current()
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	return ch, nil
}

// QueuedMessage is a message a [QueueReader] took off its queue and holds
// (unacknowledged) until it is removed or released.
type QueuedMessage struct {
	// Body is the message body as published.
	Body []byte
	// Exchange and RoutingKey are where the message was published.
	Exchange, RoutingKey string
	// Expiration is the AMQP expiration property (milliseconds), "" when
	// the message has none.
	Expiration string
	// ContentType is the AMQP content type property.
	ContentType string

	tag uint64
}

// QueueReader takes the messages of one queue in order, one at a time,
// without removing them: each stays held by the reader (delivered, not
// acknowledged) until [QueueReader.Remove] deletes it from the queue or
// [QueueReader.Close] hands it back. Messages handed back return to their
// places in the queue, so reading and closing leaves a queue as it was. If
// the connection drops, the broker hands back every held message itself.
//
// A QueueReader has a channel of its own and is not safe for concurrent
// use.
type QueueReader struct {
	queue string
	ch    *amqp.Channel
	held  int    // taken, neither removed nor handed back
	last  uint64 // delivery tag of the latest message taken
}

// ReadQueue returns a reader of queue. The caller must Close it.
func (r *RabbitMQ) ReadQueue(queue string) (*QueueReader, error) {
	ch, err := r.openChannel()
	if err != nil {
		return nil, fmt.Errorf("transports: rabbitmq: read queue %q: %w", queue, err)
	}
	return &QueueReader{queue: queue, ch: ch}, nil
}

// Next takes the next ready message of the queue and holds it; it returns
// nil and no error when the queue has no ready message.
func (q *QueueReader) Next() (*QueuedMessage, error) {
	d, ok, err := q.ch.Get(q.queue, false)
	if err != nil {
		return nil, fmt.Errorf("transports: rabbitmq: read queue %q: %w", q.queue, err)
	}
	if !ok {
		return nil, nil
	}
	q.held++
	q.last = d.DeliveryTag
	return &QueuedMessage{
		Body:        d.Body,
		Exchange:    d.Exchange,
		RoutingKey:  d.RoutingKey,
		Expiration:  d.Expiration,
		ContentType: d.ContentType,
		tag:         d.DeliveryTag,
	}, nil
}

// Remove deletes m, which this reader holds, from the queue
// (acknowledges it).
func (q *QueueReader) Remove(m *QueuedMessage) error {
	if m == nil || m.tag == 0 {
		return errors.New("transports: rabbitmq: remove: not a message of this reader")
	}
	if err := q.ch.Ack(m.tag, false); err != nil {
		return fmt.Errorf("transports: rabbitmq: remove a message from queue %q: %w", q.queue, err)
	}
	m.tag = 0
	q.held--
	return nil
}

// Close hands every message still held back to the queue, at its place,
// and closes the reader's channel; it returns once they are back. Close is
// idempotent.
func (q *QueueReader) Close() error {
	if q.ch == nil {
		return nil
	}
	ch := q.ch
	q.ch = nil
	var err error
	if q.held > 0 {
		// Negative acknowledgement of every outstanding tag up to the last,
		// with requeue: RabbitMQ puts them back where they were.
		if nerr := ch.Nack(q.last, true, true); nerr != nil && !errors.Is(nerr, amqp.ErrClosed) {
			err = fmt.Errorf("transports: rabbitmq: hand %d message(s) back to queue %q: %w", q.held, q.queue, nerr)
		} else if nerr == nil {
			// The broker requeues asynchronously. A passive declare on the
			// same channel is answered by the queue after it handled the
			// nack (one sender's messages arrive in order), so Close
			// returns once the messages are back in the queue.
			_, _ = ch.QueueDeclarePassive(q.queue, true, false, false, false, nil)
		}
		q.held = 0
	}
	if cerr := ch.Close(); cerr != nil && !errors.Is(cerr, amqp.ErrClosed) && err == nil {
		err = fmt.Errorf("transports: rabbitmq: close reader of queue %q: %w", q.queue, cerr)
	}
	return err
}
