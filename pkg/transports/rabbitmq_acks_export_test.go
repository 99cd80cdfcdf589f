package transports

// RabbitMQAckStats returns how many basic.ack frames with multiple set and
// of one delivery tag, and how many basic.nack frames, r's subscriptions
// have sent, and how many of their consumer sessions were interrupted (the
// channel lost or the consumer cancelled by the broker).
func RabbitMQAckStats(r *RabbitMQ) (multiple, single, nacks, interrupted int64) {
	s := &r.ackStats
	return s.multiple.Load(), s.single.Load(), s.nacks.Load(), s.interrupted.Load()
}

// PauseRabbitMQAckFlushers makes the ack flushers of r's subscriptions leave
// acks pending until their session ends, as a flusher that has not run yet
// would.
func PauseRabbitMQAckFlushers(r *RabbitMQ) { r.ackStats.paused.Store(true) }

// IndividualRabbitMQAcks makes r's subscriptions started from now on ack
// every message on its own, as a session does once it sees a delivery tag
// out of order (the fallback that never uses multiple acks).
func IndividualRabbitMQAcks(r *RabbitMQ) { r.ackStats.individual.Store(true) }
