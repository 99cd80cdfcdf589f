package transports

import (
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	amqp "github.com/rabbitmq/amqp091-go"
)

// RabbitMQTopology declares django-cqrs's RabbitMQ topology: a durable,
// non-auto-delete, non-internal topic exchange without arguments, and
// durable, non-exclusive, non-auto-delete queues without arguments. Any
// other flag fails with 406 PRECONDITION_FAILED on a broker where
// django-cqrs declared them first.
//
// It implements watermill-amqp's TopologyBuilder, whose stock
// DefaultTopologyBuilder with the stock configs declares a non-durable
// exchange. Set it as Config.TopologyBuilder to point a watermill-amqp
// publisher or subscriber at django-cqrs's exchange; the exchange and queue
// flags of the watermill-amqp Config are then ignored. The rabbitmq transport
// declares through it as well.
type RabbitMQTopology struct{}

var _ wamqp.TopologyBuilder = RabbitMQTopology{}

// ExchangeDeclare declares exchange as django-cqrs does. The flags in
// config are ignored.
func (RabbitMQTopology) ExchangeDeclare(ch *amqp.Channel, exchange string, _ wamqp.Config) error {
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q (topic, durable): %w", exchange, err)
	}
	return nil
}

// BuildTopology declares params.QueueName as django-cqrs declares replica
// queues and, when params.ExchangeName is set, declares that exchange and
// binds the queue to it with params.RoutingKey. The flags in config are
// ignored.
func (t RabbitMQTopology) BuildTopology(ch *amqp.Channel, params wamqp.BuildTopologyParams, config wamqp.Config, _ watermill.LoggerAdapter) error {
	if err := declareQueue(ch, params.QueueName); err != nil {
		return err
	}
	if params.ExchangeName == "" {
		return nil
	}
	if err := t.ExchangeDeclare(ch, params.ExchangeName, config); err != nil {
		return err
	}
	return bindQueue(ch, params.QueueName, params.RoutingKey, params.ExchangeName)
}

func declareExchange(ch *amqp.Channel, exchange string) error {
	return RabbitMQTopology{}.ExchangeDeclare(ch, exchange, wamqp.Config{})
}

func declareQueue(ch *amqp.Channel, queue string) error {
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %q (durable, no arguments): %w", queue, err)
	}
	return nil
}

func bindQueue(ch *amqp.Channel, queue, key, exchange string) error {
	if err := ch.QueueBind(queue, key, exchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %q to exchange %q with routing key %q: %w", queue, exchange, key, err)
	}
	return nil
}

// replicaTopology is what a replica queue needs: the queue and its
// dead-letter queue bound for its cqrs_ids.
type replicaTopology struct {
	exchange, queue, deadLetterQueue string
	cqrsIDs                          []string
}

// declare declares the exchange, both queues and their bindings
// (django-cqrs's RabbitMQTransport._declare_queue with its dead-letter
// queue): queue ← <cqrs_id> and cqrs.<queue>.<cqrs_id>, dead-letter queue ←
// cqrs.<dead letter queue>.<cqrs_id>.
func (rt replicaTopology) declare(ch *amqp.Channel) error {
	if err := declareExchange(ch, rt.exchange); err != nil {
		return err
	}
	for _, q := range []string{rt.queue, rt.deadLetterQueue} {
		if err := declareQueue(ch, q); err != nil {
			return err
		}
	}
	for _, id := range rt.cqrsIDs {
		for _, b := range [][2]string{
			{rt.queue, BroadcastKey(id)},
			{rt.queue, DirectKey(rt.queue, id)},
			{rt.deadLetterQueue, DeadLetterKey(rt.deadLetterQueue, id)},
		} {
			if err := bindQueue(ch, b[0], b[1], rt.exchange); err != nil {
				return err
			}
		}
	}
	return nil
}
