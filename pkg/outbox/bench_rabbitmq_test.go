package outbox

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// The relay against RabbitMQ, next to the broker's own pace: the ratio of
// the relay's rows/s to raw amqp091 pipelined publishing of the same bodies,
// measured in the same run, is what the relay's batching is judged by.
//
//	CQRS_TEST_POSTGRES=... CQRS_TEST_AMQP=... go test -run '^$' \
//	    -bench 'RawAMQP|RelayRabbitMQ' -benchtime 20000x ./pkg/outbox/
//
// One op is one message (raw) or one outbox row (relay). Each benchmark run
// uses an exchange and a queue of its own and deletes them.

// benchBody is a django-cqrs SAVE body of a typical size (about 420 bytes).
func benchBody(pk, n int) string {
	return fmt.Sprintf(`{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"cqrs_revision":%d,`+
		`"cqrs_updated":"2026-11-27 09:43:57.187664+00:00","id":%d,"name":"Author number %d","birth_date":null,`+
		`"rating":3.75,"active":true,"external_uuid":null,"payload":null,"created_at":null},"previous_data":{"name":null},`+
		`"instance_pk":%d,"correlation_id":"corr:SAVE:author:%d","retries":0,"expires":"2026-11-28T09:43:57+00:00","meta":null}`,
		n, pk, pk, pk, n)
}

// benchEntities is the number of distinct entities the bench rows cycle through.
const benchEntities = 5000

// benchBroker is a benchmark's own exchange and queue (bound to "author").
type benchBroker struct {
	url, exchange, queue string
	conn                 *amqp.Connection
}

func newBenchBroker(b *testing.B) *benchBroker {
	b.Helper()
	u := testenv.Need(b, testenv.EnvAMQP, "RabbitMQ")
	conn, err := amqp.Dial(u)
	if err != nil {
		testenv.Unavailable(b, "RabbitMQ", err)
	}
	bb := &benchBroker{url: u, exchange: testenv.Name("gocqrs_bench_ex"), queue: testenv.Name("gocqrs_bench_q"), conn: conn}
	b.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(bb.queue, false, false, false)
			_ = ch.ExchangeDelete(bb.exchange, false, false)
		}
		_ = conn.Close()
	})
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(bb.exchange, "topic", true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := ch.QueueDeclare(bb.queue, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if err := ch.QueueBind(bb.queue, "author", bb.exchange, false, nil); err != nil {
		b.Fatal(err)
	}
	return bb
}

// depth is the number of messages in the queue.
func (bb *benchBroker) depth(b *testing.B) int {
	b.Helper()
	ch, err := bb.conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(bb.queue, true, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	return q.Messages
}

// rawPipelined publishes n bench bodies on one confirm-mode channel, all of
// them before waiting for the confirms (mandatory and persistent, as the
// transport does), and returns the time it took.
func rawPipelined(b *testing.B, n int) time.Duration {
	b.Helper()
	bb := newBenchBroker(b)
	ch, err := bb.conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = []byte(benchBody(i%benchEntities, i))
	}
	ctx := context.Background()
	start := time.Now()
	confirms := make([]*amqp.DeferredConfirmation, n)
	for i, body := range bodies {
		confirms[i], err = ch.PublishWithDeferredConfirmWithContext(ctx, bb.exchange, "author", true, false,
			amqp.Publishing{ContentType: "text/plain", DeliveryMode: amqp.Persistent, Body: body})
		if err != nil {
			b.Fatalf("publish %d: %v", i, err)
		}
	}
	for i, dc := range confirms {
		if !dc.Wait() {
			b.Fatalf("message %d nacked", i)
		}
	}
	elapsed := time.Since(start)
	select {
	case ret := <-returns:
		b.Fatalf("message returned: %d %s", ret.ReplyCode, ret.ReplyText)
	default:
	}
	if got := bb.depth(b); got != n {
		b.Fatalf("queue holds %d messages, want %d", got, n)
	}
	return elapsed
}

// relayToRabbitMQ fills a PostgreSQL outbox with n rows, runs a relay
// through the rabbitmq transport until all are confirmed, and returns the
// time that took (the filling is not timed) and how long of it at least one
// Publish call was in flight.
func relayToRabbitMQ(b *testing.B, n int, o RelayOptions) (elapsed, busy time.Duration) {
	b.Helper()
	bb := newBenchBroker(b)
	db := testenv.Postgres(b)
	migrated(b, db)
	for done := 0; done < n; done += 5000 {
		msgs := make([]Message, min(5000, n-done))
		for i := range msgs {
			pk := (done + i) % benchEntities
			msgs[i] = Message{CQRSID: "author", EntityKey: "author:" + strconv.Itoa(pk), Topic: "author",
				Body: []byte(benchBody(pk, done+i))}
		}
		insertCommitted(b, db.DB, db, msgs)
	}
	if _, err := db.Exec("VACUUM ANALYZE cqrs_outbox"); err != nil {
		b.Fatal(err)
	}
	tr, err := transports.NewRabbitMQ(context.Background(), transports.Config{
		Transport: transports.RabbitMQName, URL: bb.url, Exchange: bb.exchange,
	}, quiet)
	if err != nil {
		testenv.Unavailable(b, "RabbitMQ", err)
	}
	defer tr.Close()
	pub := &countingPublisher{next: tr, want: int64(n), done: make(chan struct{})}
	r := newRelay(b, db.DB, db, pub, o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	start := time.Now()
	go func() { stopped <- r.Run(ctx) }()
	select {
	case <-pub.done:
	case err := <-stopped:
		b.Fatalf("relay stopped early: %v", err)
	case <-time.After(10 * time.Minute):
		b.Fatalf("relay published %d of %d rows in 10 minutes", pub.confirmed.Load(), n)
	}
	elapsed = time.Since(start)
	cancel()
	if err := <-stopped; err != nil {
		b.Fatal(err)
	}
	if st := r.Stats(); st.Errors != 0 || st.Published != int64(n) {
		b.Fatalf("relay stats %+v, want %d published and no error", st, n)
	}
	if left := rowCount(b, db); left != 0 {
		b.Fatalf("%d rows left in the outbox", left)
	}
	if got := bb.depth(b); got != n {
		b.Fatalf("queue holds %d messages, want %d", got, n)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	return elapsed, pub.busy
}

// countingPublisher passes calls to next, closes done once want messages
// were confirmed, and measures how long at least one call was in flight.
type countingPublisher struct {
	next      message.Publisher
	want      int64
	confirmed atomic.Int64
	done      chan struct{}

	mu        sync.Mutex
	inFlight  int
	busySince time.Time
	busy      time.Duration
}

func (p *countingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	if p.inFlight == 0 {
		p.busySince = time.Now()
	}
	p.inFlight++
	p.mu.Unlock()
	err := p.next.Publish(topic, msgs...)
	p.mu.Lock()
	if p.inFlight--; p.inFlight == 0 {
		p.busy += time.Since(p.busySince)
	}
	p.mu.Unlock()
	ok := int64(len(msgs) - len(transports.PublishFailures(err, len(msgs))))
	if v := p.confirmed.Add(ok); ok > 0 && v >= p.want && v-ok < p.want {
		close(p.done)
	}
	return err
}

func (p *countingPublisher) Close() error { return nil }

// BenchmarkRawAMQPPipelined is the baseline: amqp091 publishing with every
// confirm in flight on one channel.
func BenchmarkRawAMQPPipelined(b *testing.B) {
	elapsed := rawPipelined(b, b.N)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkRelayRabbitMQ measures the relay (PostgreSQL outbox → rabbitmq
// transport, Relay.Run) against the raw baseline in the same run: b.N rows
// in CQRS_BENCH_ROUNDS rounds (default 4), each round publishing its share
// raw and then through the relay, so that load drifting on a shared machine
// hits both alike. It reports both rates over all rounds, relay/raw as
// "x_raw", and "busy_%": the share of the relay's time during which at
// least one Publish call was in flight (near 100 %: the broker, not the
// database work, bounds the relay). Each round is logged.
func BenchmarkRelayRabbitMQ(b *testing.B) {
	testenv.Need(b, testenv.EnvPostgres, "PostgreSQL")
	configs := []struct {
		name string
		o    RelayOptions
	}{
		{"default", RelayOptions{}},
	}
	if os.Getenv("CQRS_BENCH_SWEEP") == "1" {
		for _, batch := range []int{500, 1000, 2000} {
			for _, inFlight := range []int{1, 4} {
				configs = append(configs, struct {
					name string
					o    RelayOptions
				}{fmt.Sprintf("batch=%d/inflight=%d", batch, inFlight), RelayOptions{BatchSize: batch, MaxInFlight: inFlight}})
			}
		}
	}
	rounds := 4
	if v, err := strconv.Atoi(os.Getenv("CQRS_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	for _, c := range configs {
		b.Run(c.name, func(b *testing.B) {
			var raw, relay, busy time.Duration
			done := 0
			for i := range rounds {
				n := (b.N - done) / (rounds - i)
				if n == 0 {
					continue
				}
				r := rawPipelined(b, n)
				l, bz := relayToRabbitMQ(b, n, c.o)
				raw, relay, busy, done = raw+r, relay+l, busy+bz, done+n
				if n >= 1000 {
					b.Logf("round %d: %d rows: raw %.0f msgs/s, relay %.0f rows/s, x_raw %.3f, busy %.0f%%",
						i+1, n, float64(n)/r.Seconds(), float64(n)/l.Seconds(), r.Seconds()/l.Seconds(), 100*bz.Seconds()/l.Seconds())
				}
			}
			b.ReportMetric(float64(done)/relay.Seconds(), "rows/s")
			b.ReportMetric(float64(done)/raw.Seconds(), "raw_msgs/s")
			b.ReportMetric(raw.Seconds()/relay.Seconds(), "x_raw")
			b.ReportMetric(100*busy.Seconds()/relay.Seconds(), "busy_%")
			b.ReportMetric(0, "ns/op")
		})
	}
}
