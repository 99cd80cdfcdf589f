package transports

// django-cqrs routing keys. Every transport names its topics (RabbitMQ
// routing keys, Kafka topics, memory topics) with these functions so that
// gocqrs and django-cqrs services meet on the same keys.

// BroadcastKey is the routing key of SAVE, DELETE and broadcast SYNC
// messages of a cqrs_id: the cqrs_id itself.
func BroadcastKey(cqrsID string) string { return cqrsID }

// DirectKey is the routing key aimed at one replica queue: a SYNC sent to
// that queue only, and the replica's own requeues after a failure
// ("cqrs.<queue>.<cqrs_id>").
func DirectKey(queue, cqrsID string) string { return "cqrs." + queue + "." + cqrsID }

// DeadLetterKey is the routing key of a replica's dead letters
// ("cqrs.<dead letter queue>.<cqrs_id>").
func DeadLetterKey(deadLetterQueue, cqrsID string) string {
	return "cqrs." + deadLetterQueue + "." + cqrsID
}

// DefaultDeadLetterQueue is django-cqrs's default dead-letter queue name of a
// replica queue: "dead_letter_<queue>".
func DefaultDeadLetterQueue(queue string) string { return "dead_letter_" + queue }

// Metadata keys that transports set or read on Watermill messages.
const (
	// MetaRoutingKey is set by every subscriber on every delivered message:
	// the routing key (topic) the message was published with.
	MetaRoutingKey = "routing_key"
	// MetaExpiration is the AMQP expiration of a message in milliseconds, as
	// a decimal string. The consumer sets it on dead letters
	// (django-cqrs's dead_message_ttl, "864000000" by default).
	MetaExpiration = "expiration"
	// MetaDeadLetterReason says why a dead letter was dead-lettered
	// ("expired", "retries exhausted", ...). Transports whose messages carry
	// headers of gocqrs's own (Kafka) send it; RabbitMQ dead letters carry
	// none, like django-cqrs's.
	MetaDeadLetterReason = "dead_letter_reason"
)
