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
	publish, err = rawAMQPPublish(ctx, url, n, body, func(ch *amqp.Channel, q string) error {
		start := time.Now()
		if err := ch.Qos(1000, 0, false); err != nil {
			return err
		}
		deliveries, err := ch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			return err
		}
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
		consume = float64(n) / time.Since(start).Seconds()
		return nil
	})
	return publish, consume, err
}

func rawAMQPPublish(ctx context.Context, url string, n int, body []byte, then func(ch *amqp.Channel, q string) error) (float64, error) {
	if url == "" {
		return 0, errNoAMQP
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		return 0, fmt.Errorf("dial %s: %w", transports.RedactURL(url), err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	q := randomName("bench_raw")
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		return 0, err
	}
	defer func() { _, _ = ch.QueueDelete(q, false, false, false) }()
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	const window = 2000
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, window))
	msg := amqp.Publishing{ContentType: "text/plain", DeliveryMode: amqp.Persistent, Body: body}
	start := time.Now()
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
				return 0, err
			}
		}
		if err := ch.PublishWithContext(ctx, "", q, true, false, msg); err != nil {
			return 0, err
		}
		outstanding++
	}
	for outstanding > 0 {
		if err := wait(); err != nil {
			return 0, err
		}
	}
	rate := float64(n) / time.Since(start).Seconds()
	return rate, then(ch, q)
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
