package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// relayTurns is the number of turns the relay and its raw baseline take.
const relayTurns = 4

// relayRounds measures relay against the broker's limit as a plain amqp091
// client sees it, in turns: each round commits its share of the rows to
// the outbox (not timed), publishes as many persistent messages to a fresh
// durable queue with publisher confirms pipelined (publishPipelined), then
// has relay publish the outbox, so that a change in the machine's load
// falls on both alike. The raw queue is then consumed back (consumeRaw,
// as many consumers as the replica has workers). It returns the raw
// publish and consume rates in msg/s and the relay's time for all the
// rows; phase is called around each round's relay.
func (e *env) relayRounds(ctx context.Context, relay *outbox.Relay, phase func(string) func()) (publish, consume float64, relayDur time.Duration, err error) {
	n, body := e.o.Rows, sampleBody()
	err = withRawQueue(e.o.AMQPURL, func(ch *amqp.Channel, q string) error {
		confirms, err := confirmMode(ch)
		if err != nil {
			return err
		}
		var rawDur time.Duration
		for r := range relayTurns {
			first, last := share(r, relayTurns, n)
			if last < first {
				continue
			}
			if err := e.prefillCreates(ctx, first, last); err != nil {
				return err
			}
			raw, err := timeIt(func() error { return publishPipelined(ctx, ch, confirms, q, last-first+1, body) })
			if err != nil {
				return fmt.Errorf("raw AMQP baseline: %w", err)
			}
			end := phase("relay")
			rel, err := timeIt(func() error { return e.drainOutbox(ctx, relay, last) })
			end()
			if err != nil {
				return err
			}
			rawDur, relayDur = rawDur+raw, relayDur+rel
			k := float64(last - first + 1)
			fmt.Fprintf(e.o.Progress, "    round %d: %d messages: raw %.0f msg/s, relay %.0f msg/s\n", r+1, last-first+1, k/raw.Seconds(), k/rel.Seconds())
		}
		publish = float64(n) / rawDur.Seconds()
		start := time.Now()
		if err := consumeRaw(ctx, e.o.AMQPURL, ch, q, n, e.o.Workers); err != nil {
			return fmt.Errorf("raw AMQP consume baseline: %w", err)
		}
		consume = float64(n) / time.Since(start).Seconds()
		return nil
	})
	return publish, consume, relayDur, err
}

// rawAMQPThrough is the broker's limit for a drain: n messages published
// as publishPipelined publishes them while k consumers on other
// connections take them as consumeRaw does, in msgs/s from the first
// publish to the last delivery. Every row of a drain is published and
// consumed once, so no drain over this broker can be faster.
func rawAMQPThrough(ctx context.Context, url string, n, k int, body []byte) (float64, error) {
	var rate float64
	err := withRawQueue(url, func(ch *amqp.Channel, q string) error {
		cconn, cch, err := openRaw(url)
		if err != nil {
			return err
		}
		defer cconn.Close()
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		confirms, err := confirmMode(ch)
		if err != nil {
			return err
		}
		consumed := make(chan error, 1)
		start := time.Now()
		go func() { consumed <- consumeRaw(cctx, url, cch, q, n, k) }()
		if err := publishPipelined(ctx, ch, confirms, q, n, body); err != nil {
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
	conn, ch, err := openRaw(url)
	if err != nil {
		return err
	}
	defer conn.Close()
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

// openRaw connects a raw amqp091 client to url and opens a channel on the
// connection; the caller closes the connection.
func openRaw(url string) (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", transports.RedactURL(url), err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("open a channel on %s: %w", transports.RedactURL(url), err)
	}
	return conn, ch, nil
}

// rawWindow is how many messages publishPipelined keeps unconfirmed.
const rawWindow = 2000

// confirmMode puts ch in confirm mode and returns its confirmations, for
// publishPipelined; once per channel.
func confirmMode(ch *amqp.Channel) (<-chan amqp.Confirmation, error) {
	if err := ch.Confirm(false); err != nil {
		return nil, err
	}
	return ch.NotifyPublish(make(chan amqp.Confirmation, rawWindow)), nil
}

// publishPipelined publishes n persistent messages to queue q on ch, a
// channel in confirm mode whose confirmations confirmMode returned, at most
// rawWindow of them unconfirmed, and waits for the last confirm.
func publishPipelined(ctx context.Context, ch *amqp.Channel, confirms <-chan amqp.Confirmation, q string, n int, body []byte) error {
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
		if outstanding >= rawWindow {
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

// rawPrefetch is the prefetch of each raw consumer (consumeRaw).
const rawPrefetch = 1000

// consumeRaw consumes n messages from queue q with k consumers, each on a
// connection of its own (the first one on ch), as the replica's k workers
// are: each with a prefetch of rawPrefetch, acking every 100th of its
// deliveries (and its last) with multiple set. It returns once the n
// messages were delivered and acked, and cancels the consumers.
func consumeRaw(ctx context.Context, url string, ch *amqp.Channel, q string, n, k int) error {
	chans := []*amqp.Channel{ch}
	for range k - 1 {
		conn, c, err := openRaw(url)
		if err != nil {
			return err
		}
		defer conn.Close()
		chans = append(chans, c)
	}
	var got atomic.Int64
	all := make(chan struct{}) // closed once n messages were delivered
	var once sync.Once
	errs := make(chan error, len(chans))
	started := 0
	var first error
	for _, c := range chans {
		tag := randomName("bench_raw_consumer")
		var deliveries <-chan amqp.Delivery
		if first = c.Qos(rawPrefetch, 0, false); first == nil {
			deliveries, first = c.Consume(q, tag, false, false, false, false, nil)
		}
		if first != nil {
			once.Do(func() { close(all) }) // the consumers started stop
			break
		}
		started++
		go func() { errs <- takeRaw(ctx, c, tag, deliveries, n, &got, all, &once) }()
	}
	for range started {
		if err := <-errs; err != nil && first == nil {
			first = err
			once.Do(func() { close(all) })
		}
	}
	return first
}

// takeRaw is one consumer of consumeRaw: it counts its deliveries into got
// until got reaches n (then it closes all), acks its last one and cancels
// its consumer.
func takeRaw(ctx context.Context, ch *amqp.Channel, tag string, deliveries <-chan amqp.Delivery, n int, got *atomic.Int64, all chan struct{}, once *sync.Once) error {
	defer func() { _ = ch.Cancel(tag, false) }()
	var last *amqp.Delivery // delivered, not acked yet
	for taken := 1; ; taken++ {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return fmt.Errorf("consumer closed after %d messages", got.Load())
			}
			last = &d
			if taken%100 == 0 {
				if err := d.Ack(true); err != nil {
					return err
				}
				last = nil
			}
			if got.Add(1) >= int64(n) {
				once.Do(func() { close(all) })
			}
		case <-all:
			if last != nil {
				return last.Ack(true)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// deleteAMQP removes what a run declared on the broker.
func deleteAMQP(url, exchange string, queues ...string) error {
	conn, ch, err := openRaw(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			return err
		}
	}
	return ch.ExchangeDelete(exchange, false, false)
}
