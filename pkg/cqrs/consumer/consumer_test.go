package consumer_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

func TestNewValidatesOptions(t *testing.T) {
	t.Parallel()
	tr := newMemory(t)
	reg := rawRegistry(t, "author", "book")
	ap := &testApplier{}
	for _, c := range []struct {
		name string
		opts consumer.Options
		want string
	}{
		{"no queue", consumer.Options{}, "queue is required"},
		{"wildcard queue", consumer.Options{Queue: "a#b"}, `queue "a#b"`},
		{"unknown cqrs_id", consumer.Options{Queue: "q", CQRSIDs: []string{"author", "ghost"}}, `cqrs_id "ghost" has no replica model (known: author, book)`},
		{"negative retries", consumer.Options{Queue: "q", MaxRetries: new(-1)}, "max_retries"},
		{"negative delay", consumer.Options{Queue: "q", RetryDelay: -time.Second}, "retry_delay"},
		{"negative delay queue", consumer.Options{Queue: "q", DelayQueueMaxSize: -1}, "delay_queue_max_size must not be negative, got -1"},
		{"dlq equals queue", consumer.Options{Queue: "q", DeadLetterQueue: "q"}, "must differ"},
	} {
		_, err := consumer.New(tr, reg, ap, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
		}
	}
	if _, err := consumer.New(tr, rawRegistry(t), ap, consumer.Options{Queue: "q"}); err == nil {
		t.Error("a registry without replica models was accepted")
	}
	c, err := consumer.New(tr, reg, ap, consumer.Options{Queue: "q", CQRSIDs: []string{"book", "book"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CQRSIDs(); len(got) != 1 || got[0] != "book" {
		t.Fatalf("CQRSIDs() = %q, want [book]", got)
	}
}

func TestAppliesBroadcastAndDirect(t *testing.T) {
	t.Parallel()
	tr := newMemory(t)
	ap := &testApplier{}
	c := newConsumer(t, tr, rawRegistry(t, "author", "book"), ap, consumer.Options{Queue: "q"})
	start(t, c)

	publish(t, tr, "author", encode(t, payload(wire.SignalSave, "author", 1, 0)))
	waitDone(t, c, 1)
	publish(t, tr, "cqrs.q.author", encode(t, payload(wire.SignalSync, "author", 1, 0)))
	waitDone(t, c, 2)
	publish(t, tr, "book", encode(t, payload(wire.SignalDelete, "book", 7, 1)))
	s := waitDone(t, c, 3)

	d := ap.deliveries()
	if len(d) != 3 {
		t.Fatalf("applier got %d deliveries, want 3", len(d))
	}
	if d[0].Direct || d[0].Payload.SignalType != wire.SignalSave || d[0].Payload.CQRSID != "author" {
		t.Errorf("broadcast SAVE delivered as %+v", d[0])
	}
	if !d[1].Direct || d[1].Payload.SignalType != wire.SignalSync {
		t.Errorf("SYNC on cqrs.q.author delivered with Direct=%v, want true", d[1].Direct)
	}
	if d[2].Payload.CQRSID != "book" || d[2].Direct {
		t.Errorf("book DELETE delivered as %+v", d[2])
	}
	if s.Applied != 3 || s.Received != 3 || s.Outcomes[replica.OutcomeCreated] != 3 {
		t.Errorf("stats %+v, want 3 received and applied", s)
	}
}

func TestDirectFromRoutingKeyOnSharedSubscription(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	// A transport whose subscriptions carry any cqrs_id (like one RabbitMQ
	// queue): Direct must come from the routing key metadata.
	tr := &recorder{Transport: mem, subs: func(queue, dlq string, ids []string) ([]transports.Subscription, error) {
		return []transports.Subscription{{Topic: "author"}, {Topic: transports.DirectKey(queue, "author")}}, nil
	}}
	ap := &testApplier{}
	c := newConsumer(t, tr, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q"})
	start(t, c)
	publish(t, tr, "cqrs.q.author", encode(t, payload(wire.SignalSync, "author", 1, 0)))
	waitDone(t, c, 1)
	publish(t, tr, "author", encode(t, payload(wire.SignalSync, "author", 1, 0)))
	waitDone(t, c, 2)
	d := ap.deliveries()
	if !d[0].Direct || d[1].Direct {
		t.Fatalf("Direct = %v, %v; want true for cqrs.q.author, false for author", d[0].Direct, d[1].Direct)
	}
}

func TestDropsUnparseableMissingKeyAndUnknownModel(t *testing.T) {
	t.Parallel()
	tr := &recorder{Transport: newMemory(t)}
	ap := &testApplier{}
	c := newConsumer(t, tr, rawRegistry(t, "author", "book"), ap, consumer.Options{Queue: "q", CQRSIDs: []string{"author"}})
	start(t, c)

	publish(t, tr, "author", []byte(`{"signal_type":"SAVE", this is not json`))
	publish(t, tr, "author", []byte(`{"signal_type":"SAVE","cqrs_id":"author","instance_data":{}}`))
	publish(t, tr, "author", encode(t, payload(wire.SignalSave, "ghost", 1, 0)))
	// book has a replica model, but this consumer does not take it.
	publish(t, tr, "author", encode(t, payload(wire.SignalSave, "book", 1, 0)))
	s := waitDone(t, c, 4)
	if s.Unparseable != 1 || s.MissingKey != 1 || s.NoModel != 2 {
		t.Fatalf("stats %+v, want 1 unparseable, 1 missing key, 2 without model", s)
	}
	if n := len(ap.deliveries()); n != 0 {
		t.Fatalf("applier called %d times for dropped messages", n)
	}
	if got := tr.sent(); len(got) != 0 {
		t.Fatalf("dropped messages were republished: %+v", got)
	}
}

func TestExpiredIsDeadLettered(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	tr := &recorder{Transport: mem}
	ap := &testApplier{}
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	c := newConsumer(t, tr, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q", Now: func() time.Time { return now }})
	start(t, c)

	p := payload(wire.SignalSave, "author", 1, 0)
	p.Retries = 1
	exp := now // expires == now counts as expired, as in django-cqrs
	p.Expires = &exp
	publish(t, tr, "author", encode(t, p))
	s := waitDone(t, c, 1)
	if s.DeadLettered != 1 || len(ap.deliveries()) != 0 {
		t.Fatalf("stats %+v, applier calls %d: want one dead letter and no apply", s, len(ap.deliveries()))
	}
	dl := mem.Peek("cqrs.dead_letter_q.author")
	if len(dl) != 1 {
		t.Fatalf("dead-letter topic holds %d messages, want 1", len(dl))
	}
	if got := dl[0].Metadata.Get(transports.MetaExpiration); got != "864000000" {
		t.Errorf("expiration %q, want 864000000", got)
	}
	if string(dl[0].Payload) != string(encode(t, p)) {
		t.Errorf("dead letter body\n%s\nwant the original (retries 1)\n%s", dl[0].Payload, encode(t, p))
	}
	// A message expiring later is applied.
	later := now.Add(time.Second)
	p.Expires = &later
	publish(t, tr, "author", encode(t, p))
	s = waitDone(t, c, 2)
	if s.Applied != 1 {
		t.Fatalf("unexpired message: stats %+v", s)
	}
}

func TestMissingExpiresIsApplied(t *testing.T) {
	t.Parallel()
	tr := newMemory(t)
	ap := &testApplier{}
	c := newConsumer(t, tr, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q"})
	start(t, c)
	publish(t, tr, "author", []byte(`{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"cqrs_revision":0,"cqrs_updated":"2026-01-01 10:00:00+00:00","id":1},"instance_pk":1}`))
	s := waitDone(t, c, 1)
	if s.Applied != 1 || ap.deliveries()[0].Payload.Expires != nil {
		t.Fatalf("stats %+v: want the message applied with no expiry", s)
	}
}

func TestFailureIsRequeuedThenApplied(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	tr := &recorder{Transport: mem}
	var calls atomic.Int32
	ap := &testApplier{fn: func(ctx context.Context, d replica.Delivery) (replica.Result, error) {
		if calls.Add(1) == 1 {
			return replica.Result{}, errFixture
		}
		return replica.Result{Outcome: replica.OutcomeUpdated}, nil
	}}
	c := newConsumer(t, tr, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q", RetryDelay: time.Millisecond})
	start(t, c)
	orig := payload(wire.SignalSave, "author", 50, 0)
	publish(t, tr, "author", encode(t, orig))
	s := waitDone(t, c, 1)
	if s.Failed != 1 || s.Requeued != 1 || s.Applied != 1 || s.Received != 2 {
		t.Fatalf("stats %+v, want 1 failure, 1 requeue, then applied", s)
	}
	sent := tr.sent()
	want := *orig
	want.Retries = 1
	if len(sent) != 1 || sent[0].Topic != "cqrs.q.author" || sent[0].Body != string(encode(t, &want)) {
		t.Fatalf("published %+v, want one copy with retries 1 on cqrs.q.author", sent)
	}
	d := ap.deliveries()
	if !d[1].Direct || d[1].Payload.Retries != 1 {
		t.Fatalf("second delivery %+v, want the direct copy with retries 1", d[1])
	}
	testenv.WaitFor(t, wait, "topics empty", func() bool { return mem.Pending("author") == 0 && mem.Pending("cqrs.q.author") == 0 })
}

func TestRetriesExhaustedDeadLetters(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		maxRetries *int
		retries    int // of the published message
		requeues   int
		dlRetries  int
	}{
		{"two retries", new(2), 0, 2, 2},
		{"no retries", new(0), 0, 0, 0},
		{"already beyond", new(2), 5, 0, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			mem := newMemory(t)
			tr := &recorder{Transport: mem}
			ap := &testApplier{fn: func(context.Context, replica.Delivery) (replica.Result, error) {
				return replica.Result{}, errFixture
			}}
			cons := newConsumer(t, tr, rawRegistry(t, "author"), ap,
				consumer.Options{Queue: "q", MaxRetries: c.maxRetries, RetryDelay: time.Millisecond, DeadMessageTTL: time.Hour})
			start(t, cons)
			p := payload(wire.SignalSave, "author", 51, 0)
			p.Retries = c.retries
			publish(t, tr, "author", encode(t, p))
			s := waitDone(t, cons, 1)
			if s.DeadLettered != 1 || s.Requeued != int64(c.requeues) || s.Failed != int64(c.requeues+1) {
				t.Fatalf("stats %+v, want %d requeues then a dead letter", s, c.requeues)
			}
			sent := tr.sent()
			if len(sent) != c.requeues+1 {
				t.Fatalf("published %d messages, want %d", len(sent), c.requeues+1)
			}
			for i := range c.requeues {
				var got struct{ Retries int }
				if err := json.Unmarshal([]byte(sent[i].Body), &got); err != nil {
					t.Fatal(err)
				}
				if sent[i].Topic != "cqrs.q.author" || got.Retries != c.retries+i+1 {
					t.Errorf("copy %d on %q with retries %d", i, sent[i].Topic, got.Retries)
				}
			}
			last := sent[len(sent)-1]
			want := *p
			want.Retries = c.dlRetries
			if last.Topic != "cqrs.dead_letter_q.author" || last.Body != string(encode(t, &want)) || last.Metadata[transports.MetaExpiration] != "3600000" {
				t.Fatalf("dead letter %+v, want retries %d on cqrs.dead_letter_q.author with expiration 3600000", last, c.dlRetries)
			}
		})
	}
}

func TestBadValueIsDeadLetteredAsReceived(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	tr := &recorder{Transport: mem}
	ap := &testApplier{}
	c := newConsumer(t, tr, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q", DeadLetterQueue: "dlq", DeadMessageTTL: -1})
	start(t, c)
	body := `{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"id":1},"instance_pk":1,"retries":"abc"}`
	publish(t, tr, "author", []byte(body))
	s := waitDone(t, c, 1)
	if s.DeadLettered != 1 || len(ap.deliveries()) != 0 {
		t.Fatalf("stats %+v: want the body dead-lettered without applying", s)
	}
	dl := mem.Peek("cqrs.dlq.author")
	if len(dl) != 1 || string(dl[0].Payload) != body {
		t.Fatalf("dead letters %v, want the body as received", dl)
	}
	if _, ok := dl[0].Metadata[transports.MetaExpiration]; ok {
		t.Fatal("negative DeadMessageTTL must leave the expiration unset")
	}
}

func TestShutdownDuringRetryHoldKeepsMessage(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	tr := &recorder{Transport: mem}
	ap := &testApplier{fn: func(context.Context, replica.Delivery) (replica.Result, error) {
		return replica.Result{}, errFixture
	}}
	c := newConsumer(t, tr, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q", RetryDelay: time.Hour})
	r := start(t, c)
	publish(t, tr, "author", encode(t, payload(wire.SignalSave, "author", 1, 0)))
	testenv.WaitFor(t, wait, "the failure", func() bool { return c.Stats().Failed == 1 })
	r.stop(t)
	s := c.Stats()
	if s.Nacked != 1 || s.Requeued != 0 || s.DeadLettered != 0 {
		t.Fatalf("stats %+v, want the held message nacked, no copy", s)
	}
	if len(tr.sent()) != 0 {
		t.Fatalf("published %+v during shutdown", tr.sent())
	}
	if got := mem.Pending("author"); got != 1 {
		t.Fatalf("Pending(author) = %d after shutdown, want the message kept", got)
	}
}

func TestShutdownFinishesMessageBeingApplied(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	var ctxErr atomic.Value
	ap := &testApplier{fn: func(ctx context.Context, d replica.Delivery) (replica.Result, error) {
		close(entered)
		<-release
		ctxErr.Store(ctx.Err() != nil)
		return replica.Result{Outcome: replica.OutcomeCreated}, nil
	}}
	c := newConsumer(t, mem, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q"})
	r := start(t, c)
	publish(t, mem, "author", encode(t, payload(wire.SignalSave, "author", 1, 0)))
	<-entered
	r.cancel()
	close(release)
	r.stop(t)
	if cancelled, _ := ctxErr.Load().(bool); cancelled {
		t.Fatal("Apply saw a cancelled context: the message being applied must be finished")
	}
	if s := c.Stats(); s.Applied != 1 {
		t.Fatalf("stats %+v, want the in-flight message applied", s)
	}
	// The router's ack reaches the transport asynchronously.
	testenv.WaitFor(t, wait, "the applied message acked", func() bool { return mem.Pending("author") == 0 })
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	c := newConsumer(t, mem, rawRegistry(t, "author"), &testApplier{}, consumer.Options{Queue: "q"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-c.Running()
	if err := c.Run(ctx); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("second Run: err = %v", err)
	}
	// Closing the transport under a running consumer ends Run with an error.
	if err := mem.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "subscription ended") {
			t.Fatalf("Run after the transport closed: err = %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after the transport closed")
	}
}

// lockedBuffer is an io.Writer safe for the consumer's goroutines.
type lockedBuffer struct{ testenv.SyncBuffer }

// lines returns the JSON log lines written so far.
func (l *lockedBuffer) lines() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func TestLogsMirrorDjangoCQRSEvents(t *testing.T) {
	t.Parallel()
	tr := newMemory(t)
	var calls atomic.Int32
	ap := &testApplier{fn: func(context.Context, replica.Delivery) (replica.Result, error) {
		if calls.Add(1) == 1 {
			return replica.Result{}, errFixture
		}
		return replica.Result{Outcome: replica.OutcomeSkippedDuplicate}, nil
	}}
	var buf lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newConsumer(t, tr, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q", RetryDelay: time.Millisecond, Logger: logger})
	start(t, c)
	p := payload(wire.SignalSave, "author", 7, 3)
	p.CorrelationID = "corr-1"
	publish(t, tr, "author", encode(t, p))
	waitDone(t, c, 1)
	// Per delivery (retries 0, then its copy with retries 1) the events come
	// in django-cqrs's order; the copy may be consumed before the original's
	// "requeued" line is written.
	want := map[float64][]string{
		0: {"CQRS is received", "CQRS is failed", "CQRS is delayed", "CQRS is requeued"},
		1: {"CQRS is received", "CQRS is skipped: Received duplicate CQRS data"},
	}
	var got map[float64][]string
	testenv.WaitFor(t, wait, "the log lines", func() bool {
		got = map[float64][]string{}
		n := 0
		for _, l := range buf.lines() {
			if msg, _ := l["msg"].(string); strings.HasPrefix(msg, "CQRS is") {
				retries, _ := l["retries"].(float64)
				got[retries] = append(got[retries], msg)
				n++
				if l["cqrs_id"] != "author" || l["pk"] != "7" || l["revision"] != float64(3) ||
					l["correlation_id"] != "corr-1" || l["retries"] == nil || l["queue"] != "q" {
					t.Fatalf("log line %v lacks the message's attributes", l)
				}
			}
		}
		return n == len(want[0])+len(want[1])
	})
	for r, w := range want {
		if strings.Join(got[r], "|") != strings.Join(w, "|") {
			t.Fatalf("log events of the delivery with retries %v: %q, want %q (all: %v)", r, got[r], w, got)
		}
	}
}

func TestUnpublishableCopyHandsMessageBack(t *testing.T) {
	t.Parallel()
	mem, err := transports.NewMemory(transports.MemoryConfig{MaxPending: 1}, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mem.Close() })
	// The dead-letter topic is full: the dead letter cannot be published.
	publish(t, mem, "cqrs.dead_letter_q.author", []byte("older dead letter"))
	ap := &testApplier{}
	c := newConsumer(t, mem, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q", RetryDelay: time.Millisecond})
	r := start(t, c)
	p := payload(wire.SignalSave, "author", 1, 0)
	past := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	p.Expires = &past
	publish(t, mem, "author", encode(t, p))
	// Handed back, redelivered, handed back again: never dropped.
	testenv.WaitFor(t, wait, "two hand-backs", func() bool { return c.Stats().Nacked >= 2 })
	r.stop(t)
	s := c.Stats()
	if s.DeadLettered != 0 || s.Done() != 0 || len(ap.deliveries()) != 0 {
		t.Fatalf("stats %+v: the message must be neither dead-lettered nor applied", s)
	}
	if got := mem.Pending("author"); got != 1 {
		t.Fatalf("Pending(author) = %d, want the message kept", got)
	}
}
