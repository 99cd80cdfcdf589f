package bench

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/pkg/transports"
)

// rawAMQP is the broker's limit as a plain amqp091 client sees it: n
// persistent messages published to a fresh durable queue with publisher
// confirms pipelined (at most window outstanding), then consumed back with
// a prefetch of 1000 and one multiple-ack per 100 messages; both in msgs/s.
func rawAMQP(ctx context.Context, url string, n int, body []byte) (publish, consume float64, err error) {
	err = withRawQueue(url, func(ch *amqp.Channel, q string) error {
		start := time.Now()
		if err := publishPipelined(ctx, ch, q, n, body); err != nil {
			return err
		}
		publish = float64(n) / time.Since(start).Seconds()
		start = time.Now()
		if err := consumeN(ctx, ch, q, n); err != nil {
			return err
		}
		consume = float64(n) / time.Since(start).Seconds()
		return nil
	})
	return publish, consume, err
}

// rawAMQPThrough is the broker's limit for a drain: n messages published
// as rawAMQP publishes them while a consumer on a second connection takes
// them as rawAMQP consumes them, in msgs/s from the first publish to the
// last delivery. Every row of a drain is published and consumed once, so
// no drain over this broker can be faster.
func rawAMQPThrough(ctx context.Context, url string, n int, body []byte) (float64, error) {
	var rate float64
	err := withRawQueue(url, func(ch *amqp.Channel, q string) error {
		cconn, err := dialRaw(url)
		if err != nil {
			return err
		}
		defer cconn.Close()
		cch, err := cconn.Channel()
		if err != nil {
			return err
		}
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		consumed := make(chan error, 1)
		start := time.Now()
		go func() { consumed <- consumeN(cctx, cch, q, n) }()
		if err := publishPipelined(ctx, ch, q, n, body); err != nil {
			return err
		}
		if err := <-consumed; err != nil {
			return err
		}
		rate = float64(n) / time.Since(start).Seconds()
		return nil
	})
	return rate, err
}

// withRawQueue runs fn with a channel on a new connection to url and a
// fresh durable queue, deleted afterwards.
func withRawQueue(url string, fn func(ch *amqp.Channel, q string) error) error {
	if url == "" {
		return errNoAMQP
	}
	conn, err := dialRaw(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	q := randomName("bench_raw")
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		return err
	}
	defer func() {
		if dch, err := conn.Channel(); err == nil {
			_, _ = dch.QueueDelete(q, false, false, false)
		}
	}()
	return fn(ch, q)
}

// dialRaw connects a raw amqp091 client to url.
func dialRaw(url string) (*amqp.Connection, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", transports.RedactURL(url), err)
	}
	return conn, nil
}

// publishPipelined publishes n persistent messages to queue q on ch, with
// publisher confirms, at most window of them unconfirmed, and waits for the
// last confirm.
func publishPipelined(ctx context.Context, ch *amqp.Channel, q string, n int, body []byte) error {
	if err := ch.Confirm(false); err != nil {
		return err
	}
	const window = 2000
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, window))
	msg := amqp.Publishing{ContentType: "text/plain", DeliveryMode: amqp.Persistent, Body: body}
	outstanding := 0
	wait := func() error {
		select {
		case c, ok := <-confirms:
			if !ok {
				return fmt.Errorf("channel closed while waiting for confirms")
			}
			if !c.Ack {
				return fmt.Errorf("broker nacked delivery %d", c.DeliveryTag)
			}
			outstanding--
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i := 0; i < n; i++ {
		if outstanding >= window {
			if err := wait(); err != nil {
				return err
			}
		}
		if err := ch.PublishWithContext(ctx, "", q, true, false, msg); err != nil {
			return err
		}
		outstanding++
	}
	for outstanding > 0 {
		if err := wait(); err != nil {
			return err
		}
	}
	return nil
}

// consumeN consumes n messages from queue q on ch with a prefetch of 1000,
// acking every 100th (and the last) with multiple set, and cancels the
// consumer.
func consumeN(ctx context.Context, ch *amqp.Channel, q string, n int) error {
	if err := ch.Qos(1000, 0, false); err != nil {
		return err
	}
	tag := randomName("bench_raw_consumer")
	deliveries, err := ch.Consume(q, tag, false, false, false, false, nil)
	if err != nil {
		return err
	}
	defer func() { _ = ch.Cancel(tag, false) }()
	for i := 1; i <= n; i++ {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return fmt.Errorf("consumer closed after %d messages", i-1)
			}
			if i%100 == 0 || i == n {
				if err := d.Ack(true); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// deleteAMQP removes what a run declared on the broker.
func deleteAMQP(url, exchange string, queues ...string) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			return err
		}
	}
	return ch.ExchangeDelete(exchange, false, false)
}
