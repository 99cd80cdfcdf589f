package transports

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrNotConnected is returned (wrapped) by the rabbitmq transport while its
// connection to the broker is down and being re-established.
var ErrNotConnected = errors.New("rabbitmq transport: not connected to the broker")

// ErrRabbitMQClosed is returned (wrapped) by a closed [RabbitMQ].
var ErrRabbitMQClosed = errors.New("rabbitmq transport: closed")

// Reconnection backoff of the rabbitmq connection and subscriptions.
const (
	reconnectMin = 200 * time.Millisecond
	reconnectMax = 10 * time.Second
)

// amqpConn is one AMQP connection that dials again, with backoff, whenever
// the broker drops it. Users take the current connection and open their own
// channels on it; a channel of a lost connection is closed by amqp091.
type amqpConn struct {
	s   *rabbitSettings
	log *slog.Logger

	mu      sync.Mutex
	conn    *amqp.Connection // nil while down
	up      chan struct{}    // closed while conn is set
	closed  bool
	closing chan struct{}
	done    chan struct{} // closed when watch returns
}

// dialTimeout bounds connecting and the AMQP handshake.
const dialTimeout = 15 * time.Second

// dial connects to the broker; ctx bounds the TCP connect and the handshake.
func (s *rabbitSettings) dial(ctx context.Context) (*amqp.Connection, error) {
	cfg := s.amqp
	cfg.Dial = func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: dialTimeout}
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// Heartbeats start after the handshake; amqp091 clears this deadline then.
		deadline := time.Now().Add(dialTimeout)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		if err := conn.SetDeadline(deadline); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return conn, nil
	}
	return amqp.DialConfig(s.url, cfg)
}

// dialAMQP connects once; it fails when the broker is unreachable now
// (the error wraps ErrNotConnected, unless the broker refused the
// credentials or the vhost: that is a configuration error, which a retry
// does not fix).
func dialAMQP(ctx context.Context, s *rabbitSettings, log *slog.Logger) (*amqpConn, error) {
	conn, err := s.dial(ctx)
	if err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.AccessRefused {
			return nil, fmt.Errorf("transports: rabbitmq: connect to %s: %w", s.redacted, err)
		}
		return nil, fmt.Errorf("transports: rabbitmq: connect to %s: %w: %w", s.redacted, ErrNotConnected, err)
	}
	up := make(chan struct{})
	close(up)
	c := &amqpConn{s: s, log: log, conn: conn, up: up, closing: make(chan struct{}), done: make(chan struct{})}
	go c.watch(conn)
	return c, nil
}

// watch waits for the connection to drop and dials again until it is back
// or c is closed.
func (c *amqpConn) watch(conn *amqp.Connection) {
	defer close(c.done)
	for {
		lost := conn.NotifyClose(make(chan *amqp.Error, 1))
		select {
		case <-c.closing:
			return
		case err := <-lost:
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				return
			}
			c.conn = nil
			c.up = make(chan struct{})
			c.mu.Unlock()
			if err != nil {
				c.log.Warn("rabbitmq: connection lost; reconnecting", "error", err.Error())
			} else {
				c.log.Warn("rabbitmq: connection closed; reconnecting")
			}
		}
		if conn = c.redial(); conn == nil {
			return
		}
	}
}

// redial dials with exponential backoff until it succeeds (the new
// connection is installed) or c is closed (nil).
func (c *amqpConn) redial() *amqp.Connection {
	delay := reconnectMin
	for attempt := 1; ; attempt++ {
		if !waitOrStop(c.closing, rabbitJitter(delay)) {
			return nil
		}
		conn, err := c.s.dial(context.Background())
		if err != nil {
			c.log.Warn("rabbitmq: reconnect failed; retrying", "attempt", attempt, "error", err.Error())
			delay = min(2*delay, reconnectMax)
			continue
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			_ = conn.Close()
			return nil
		}
		c.conn = conn
		close(c.up)
		c.mu.Unlock()
		c.log.Info("rabbitmq: reconnected", "attempts", attempt)
		return conn
	}
}

// current returns the live connection, or an error at once when there is
// none.
func (c *amqpConn) current() (*amqp.Connection, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrRabbitMQClosed
	}
	if c.conn == nil || c.conn.IsClosed() {
		return nil, ErrNotConnected
	}
	return c.conn, nil
}

// await returns the live connection, waiting for a reconnection when there
// is none.
func (c *amqpConn) await(ctx context.Context) (*amqp.Connection, error) {
	for {
		c.mu.Lock()
		closed, conn, up := c.closed, c.conn, c.up
		c.mu.Unlock()
		switch {
		case closed:
			return nil, ErrRabbitMQClosed
		case conn != nil && !conn.IsClosed():
			return conn, nil
		case conn != nil:
			// Dropped, but watch has not noticed yet: it will replace up.
			up = nil
		}
		select {
		case <-up:
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.closing:
			return nil, ErrRabbitMQClosed
		}
	}
}

// close closes the connection and stops reconnecting. It is idempotent.
func (c *amqpConn) close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.closing)
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	var err error
	if conn != nil && !conn.IsClosed() {
		if cerr := conn.Close(); cerr != nil && !errors.Is(cerr, amqp.ErrClosed) {
			err = fmt.Errorf("transports: rabbitmq: close connection to %s: %w", c.s.redacted, cerr)
		}
	}
	<-c.done
	return err
}

// waitOrStop waits d; false when stop closes first.
func waitOrStop(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}

// rabbitJitter spreads d by ±20 % so that many clients do not reconnect in step.
func rabbitJitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}
