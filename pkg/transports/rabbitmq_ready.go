package transports

import "fmt"

// Ready reports whether the transport is connected to the broker now: nil
// when it is, an error wrapping ErrNotConnected while the connection is
// down (it is being re-established), or ErrRabbitMQClosed after Close.
func (r *RabbitMQ) Ready() error {
	if _, err := r.conn.current(); err != nil {
		return fmt.Errorf("rabbitmq transport: ready: %w", err)
	}
	return nil
}
