package transports_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// publishN publishes n messages "m0000", "m0001", ... with cqrs_id "author"
// and returns their bodies.
func publishN(t *testing.T, r *transports.RabbitMQ, n int) []string {
	t.Helper()
	bodies := make([]string, n)
	msgs := make([]*message.Message, n)
	for i := range n {
		bodies[i] = fmt.Sprintf("m%04d", i)
		msgs[i] = msg(bodies[i])
	}
	if err := r.Publish("author", msgs...); err != nil {
		t.Fatal(err)
	}
	return bodies
}

// waitSettledOnBroker waits until queue holds ready messages and none
// unacknowledged.
func waitSettledOnBroker(t *testing.T, q string, ready int) {
	t.Helper()
	testenv.WaitFor(t, wait, fmt.Sprintf("%d message(s) ready and none unacked in %s", ready, q), func() bool {
		r, u := queueCounts(t, "/", q)
		return r == ready && u == 0
	})
}

// getAll takes every ready message of queue (auto-ack) and returns the
// bodies, sorted.
func getAll(t *testing.T, s *scratch, queue string) []string {
	t.Helper()
	ch := rawChannel(t, s.url)
	var bodies []string
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatalf("get from %q: %v", queue, err)
		}
		if !ok {
			break
		}
		bodies = append(bodies, string(d.Body))
	}
	slices.Sort(bodies)
	return bodies
}

// Detached messages settled with ack in bursts (as the consumer's batch
// collector does after a commit) are all acked, with far fewer ack frames
// than messages and no ack of a single tag (there is no gap).
func TestRabbitMQAcksCoalesced(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	r := s.transport(t)
	q := s.replica(t, r)
	const n, batch = 2000, 500
	publishN(t, r, n)

	ch, cancel := subscribe(t, r, q)
	settles := make([]transports.Settle, 0, batch)
	for range n / batch {
		settles = settles[:0]
		for range batch {
			settles = append(settles, detach(t, receive(t, ch)))
		}
		for _, settle := range settles {
			if err := settle(true); err != nil {
				t.Fatalf("Settle(true): %v", err)
			}
		}
	}
	waitSettledOnBroker(t, q, 0) // acked while the subscription still runs
	cancel()
	drain(t, ch)
	if d := s.depth(t, q); d != 0 {
		t.Fatalf("%d message(s) back in the queue after the subscription ended", d)
	}
	multiple, single, nacks, interrupted := transports.RabbitMQAckStats(r)
	t.Logf("%d messages acked with %d multiple and %d single ack frames", n, multiple, single)
	if multiple+single >= n/10 {
		t.Errorf("%d ack frames (%d multiple, %d single) for %d messages: acks not coalesced", multiple+single, multiple, single, n)
	}
	if single != 0 || nacks != 0 || interrupted != 0 {
		t.Errorf("single acks %d, nacks %d, interrupted sessions %d; want 0, 0, 0", single, nacks, interrupted)
	}
}

// A detached message left unsettled does not hold back the acks of the
// messages after it, and no multiple ack covers it: once it is nacked and
// the subscription ends, it alone is back in the queue.
func TestRabbitMQAcksGapNeverCovered(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	r := s.transport(t)
	q := s.replica(t, r)
	const n, k = 50, 7
	bodies := publishN(t, r, n)

	ch, cancel := subscribe(t, r, q)
	held, settles := receiveHolding(t, ch, bodies, k, func(i int) bool { return i%2 == 1 })
	for _, settle := range settles {
		if err := settle(true); err != nil {
			t.Fatalf("Settle(true): %v", err)
		}
	}
	// Everything but the held message is acked on the broker while it is held.
	testenv.WaitFor(t, wait, "only the held message unacked", func() bool {
		ready, unacked := queueCounts(t, "/", q)
		return ready == 0 && unacked == 1
	})
	_, single, _, _ := transports.RabbitMQAckStats(r)
	if single == 0 {
		t.Error("no single ack sent: the acks above the held message must go one by one")
	}
	m := handBack(t, held, ch, bodies[k])
	m.Nack()
	cancel()
	drain(t, ch)
	waitSettledOnBroker(t, q, 1)
	if got := getAll(t, s, q); !slices.Equal(got, []string{bodies[k]}) {
		t.Fatalf("queue holds %q, want only %q", got, bodies[k])
	}
	if _, _, _, interrupted := transports.RabbitMQAckStats(r); interrupted != 0 {
		t.Fatalf("%d consumer session(s) interrupted: the broker closed the channel", interrupted)
	}
}

// receiveHolding receives the messages of bodies in order from ch and
// settles each as it comes: message k is detached and held (returned
// unsettled), those for which detached(i) holds are detached and their
// Settle functions returned in order, the others are acked attached.
func receiveHolding(t *testing.T, ch <-chan *message.Message, bodies []string, k int, detached func(i int) bool) (held transports.Settle, settles []transports.Settle) {
	t.Helper()
	for i, want := range bodies {
		m := receive(t, ch)
		if string(m.Payload) != want {
			t.Fatalf("message %d is %q, want %q", i, m.Payload, want)
		}
		switch {
		case i == k:
			held = detach(t, m)
		case detached(i):
			settles = append(settles, detach(t, m))
		default:
			m.Ack()
		}
	}
	return held, settles
}

// handBack hands the held message back (Settle(false)) and returns its
// redelivery from ch, which must carry want.
func handBack(t *testing.T, held transports.Settle, ch <-chan *message.Message, want string) *message.Message {
	t.Helper()
	if err := held(false); err != nil {
		t.Fatalf("Settle(false): %v", err)
	}
	m := receive(t, ch)
	if string(m.Payload) != want {
		t.Fatalf("redelivered %q, want %q", m.Payload, want)
	}
	return m
}

// A session that no longer trusts its delivery tags to be consecutive (a
// tag out of order) acks every message on its own: around a held message
// too, nothing but the held one stays unacked, no multiple ack is sent, and
// the broker never sees a tag settled twice.
func TestRabbitMQAcksOneByOneFallback(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	r := s.transport(t)
	transports.IndividualRabbitMQAcks(r)
	q := s.replica(t, r)
	const n, k = 40, 5
	bodies := publishN(t, r, n)

	ch, cancel := subscribe(t, r, q)
	held, settles := receiveHolding(t, ch, bodies, k, func(i int) bool { return i%3 == 1 })
	// Settled in reverse order: with multiple acks the highest would cover
	// the held message.
	for i := len(settles) - 1; i >= 0; i-- {
		if err := settles[i](true); err != nil {
			t.Fatalf("Settle(true): %v", err)
		}
	}
	testenv.WaitFor(t, wait, "only the held message unacked", func() bool {
		ready, unacked := queueCounts(t, "/", q)
		return ready == 0 && unacked == 1
	})
	multiple, single, _, _ := transports.RabbitMQAckStats(r)
	if multiple != 0 || single != n-1 {
		t.Errorf("sent %d multiple and %d single acks, want 0 and %d", multiple, single, n-1)
	}
	m := handBack(t, held, ch, bodies[k])
	m.Ack()
	cancel()
	drain(t, ch)
	waitSettledOnBroker(t, q, 0)
	if _, single, _, interrupted := transports.RabbitMQAckStats(r); interrupted != 0 || single != n {
		t.Fatalf("%d consumer session(s) interrupted, %d single acks (want none interrupted, %d acks)", interrupted, single, n)
	}
}

// Acks recorded right before the subscription ends (ctx cancelled, or the
// transport closed), not sent yet by the flusher, are sent before its
// channel is closed, in one multiple ack: nothing is redelivered.
func TestRabbitMQAcksFlushedOnShutdown(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"cancel", "close"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			s := newScratch(t)
			r := s.transport(t)
			q := s.replica(t, r)
			const n = 1000
			publishN(t, r, n)
			transports.PauseRabbitMQAckFlushers(r) // as if the flusher had not run yet
			ch, cancel := subscribe(t, r, q)
			settles := make([]transports.Settle, 0, n)
			for i := range n {
				m := receive(t, ch)
				if i == n-1 {
					m.Ack() // the last one attached: its ack goes the same way
					break
				}
				settles = append(settles, detach(t, m))
			}
			for _, settle := range settles {
				if err := settle(true); err != nil {
					t.Fatalf("Settle(true): %v", err)
				}
			}
			switch how {
			case "cancel":
				cancel()
			case "close":
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
			}
			drain(t, ch)
			waitSettledOnBroker(t, q, 0)
			if multiple, single, _, _ := transports.RabbitMQAckStats(r); multiple != 1 || single != 0 {
				t.Fatalf("%d multiple and %d single ack frames, want 1 and 0", multiple, single)
			}
		})
	}
}

// Acks and nacks of detached messages from several goroutines, in shuffled
// order, mixed with attached acks: the broker never closes the channel (no
// tag settled twice), and in the end the queue holds exactly the nacked
// messages.
func TestRabbitMQAcksInterleavedWithNacks(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	r := s.transport(t)
	q := s.replica(t, r)
	const n, workers = 1500, 4
	bodies := publishN(t, r, n)
	nacked := func(body string) bool {
		var i int
		_, _ = fmt.Sscanf(body, "m%d", &i)
		return i%7 == 3
	}
	var want []string
	for _, b := range bodies {
		if nacked(b) {
			want = append(want, b)
		}
	}

	type job struct {
		settle transports.Settle
		ack    bool
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	jobs := make([]chan job, workers)
	for w := range workers {
		jobs[w] = make(chan job, 64)
		rng := rand.New(rand.NewPCG(uint64(w), 42))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []job
			settleAll := func() {
				rng.Shuffle(len(buf), func(i, j int) { buf[i], buf[j] = buf[j], buf[i] })
				for _, j := range buf {
					if err := j.settle(j.ack); err != nil {
						errs <- err
					}
				}
				buf = buf[:0]
			}
			for j := range jobs[w] {
				buf = append(buf, j)
				if len(buf) >= 1+rng.IntN(24) {
					settleAll()
				}
			}
			settleAll()
		}()
	}

	ch, cancel := subscribe(t, r, q)
	seen := map[string]bool{}
	deadline := time.After(2 * wait)
	for i := 0; len(seen) < n; i++ {
		var m *message.Message
		select {
		case m = <-ch:
		case <-deadline:
			t.Fatalf("only %d of %d messages received", len(seen), n)
		}
		body := string(m.Payload)
		if seen[body] {
			if !nacked(body) {
				t.Fatalf("acked message %q delivered again", body)
			}
			detach(t, m) // held until the subscription ends, which hands it back
			continue
		}
		seen[body] = true
		switch {
		case i%5 == 0 && nacked(body):
			m.Nack()
		case i%5 == 0:
			m.Ack()
		default:
			jobs[i%workers] <- job{settle: detach(t, m), ack: !nacked(body)}
		}
	}
	for _, c := range jobs {
		close(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Settle: %v", err)
	}
	cancel()
	drain(t, ch)
	waitSettledOnBroker(t, q, len(want))
	if got := getAll(t, s, q); !slices.Equal(got, want) {
		t.Fatalf("queue holds %d message(s), want the %d nacked ones:\ngot  %q\nwant %q", len(got), len(want), got, want)
	}
	multiple, single, nacks, interrupted := transports.RabbitMQAckStats(r)
	t.Logf("%d multiple acks, %d single acks, %d nacks", multiple, single, nacks)
	if interrupted != 0 {
		t.Fatalf("%d consumer session(s) interrupted: the broker closed the channel", interrupted)
	}
}

// BenchmarkRabbitMQDetachSettle consumes b.N messages as the replica
// consumer's batch collector does (detach each, settle them with ack 500 at
// a time) and reports, per message, this process's CPU time, the ack frames
// sent and, when the broker runs on this host, the broker's (beam.smp) CPU
// time (which includes the load of its other clients). Run it with
// -benchtime=100000x.
func BenchmarkRabbitMQDetachSettle(b *testing.B) {
	u := testenv.Need(b, testenv.EnvAMQP, "RabbitMQ")
	r, err := transports.NewRabbitMQ(context.Background(), transports.Config{
		Transport: transports.RabbitMQName, URL: u, Exchange: testenv.Name("gocqrs_ex"),
	}, nil)
	if err != nil {
		testenv.Unavailable(b, "RabbitMQ", err)
	}
	defer r.Close()
	q := testenv.Name("gocqrs_q")
	defer func() {
		conn, err := amqp.Dial(u)
		if err != nil {
			b.Logf("cleanup: %v", err)
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(q, false, false, false)
			_, _ = ch.QueueDelete(q+".dlq", false, false, false)
			_ = ch.ExchangeDelete(r.Exchange(), false, false)
		}
	}()
	if _, err := r.ReplicaSubscriptions(q, q+".dlq", []string{"author"}); err != nil {
		b.Fatal(err)
	}
	const batch = 500
	msgs := make([]*message.Message, 0, 1000)
	for i := 0; i < b.N; i += len(msgs) {
		msgs = msgs[:0]
		for j := i; j < min(i+1000, b.N); j++ {
			msgs = append(msgs, msg(fmt.Sprintf("m%d", j)))
		}
		if err := r.Publish("author", msgs...); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := r.Subscribe(ctx, q)
	if err != nil {
		b.Fatal(err)
	}
	broker := brokerPID()
	selfCPU, brokerCPU := procCPU("self"), procCPU(broker)
	b.ResetTimer()
	settles := make([]transports.Settle, 0, batch)
	for i := range b.N {
		m := <-ch
		settle, ok, err := transports.Detach(m)
		if err != nil || !ok {
			b.Fatalf("Detach: ok=%v err=%v", ok, err)
		}
		settles = append(settles, settle)
		if len(settles) == batch || i == b.N-1 {
			for _, s := range settles {
				if err := s(true); err != nil {
					b.Fatal(err)
				}
			}
			settles = settles[:0]
		}
	}
	cancel()
	for range ch {
	}
	b.StopTimer()
	b.ReportMetric(float64(procCPU("self")-selfCPU)/float64(b.N), "cpu-ns/msg")
	if broker != "" {
		b.ReportMetric(float64(procCPU(broker)-brokerCPU)/float64(b.N), "broker-cpu-ns/msg")
	}
	multiple, single, _, _ := transports.RabbitMQAckStats(r)
	b.ReportMetric(float64(multiple+single)/float64(b.N), "ack-frames/msg")
}

// brokerPID returns the process id of a local RabbitMQ (beam.smp), or "".
func brokerPID() string {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		comm, err := os.ReadFile("/proc/" + d.Name() + "/comm")
		if err == nil && strings.TrimSpace(string(comm)) == "beam.smp" {
			return d.Name()
		}
	}
	return ""
}

// procCPU returns the user+system CPU time of a process from /proc, in
// nanoseconds (0 when unknown); USER_HZ is taken as 100.
func procCPU(pid string) int64 {
	if pid == "" {
		return 0
	}
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which ends with the last ')'): state is
	// field 3, utime 14, stime 15.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return (ut + st) * int64(10*time.Millisecond)
}
