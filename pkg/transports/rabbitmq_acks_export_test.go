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
