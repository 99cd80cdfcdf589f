package consumer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// batchApplier records the batches it gets and answers each delivery with
// fn (applied by default); whole, when set, may fail a batch as a whole.
// during runs inside ApplyBatch, before it returns.
type batchApplier struct {
	testApplier
	whole  func(call int, dls []replica.Delivery) error
	during func(dls []replica.Delivery)

	bmu     sync.Mutex
	batches [][]replica.Delivery
}

func (a *batchApplier) ApplyBatch(ctx context.Context, dls []replica.Delivery) ([]replica.Result, []error, error) {
	a.bmu.Lock()
	a.batches = append(a.batches, slices.Clone(dls))
	call := len(a.batches)
	a.bmu.Unlock()
	if a.during != nil {
		a.during(dls)
	}
	if a.whole != nil {
		if err := a.whole(call, dls); err != nil {
			return nil, nil, err
		}
	}
	res := make([]replica.Result, len(dls))
	errs := make([]error, len(dls))
	for i, d := range dls {
		res[i], errs[i] = a.testApplier.Apply(ctx, d)
	}
	return res, errs, nil
}

// Apply fails the test's expectations loudly: in batch mode over a
// detaching transport nothing is applied alone.
func (a *batchApplier) Apply(ctx context.Context, d replica.Delivery) (replica.Result, error) {
	return replica.Result{}, errors.New("batchApplier: Apply called in batch mode")
}

func (a *batchApplier) allBatches() [][]replica.Delivery {
	a.bmu.Lock()
	defer a.bmu.Unlock()
	return slices.Clone(a.batches)
}

func pks(dls []replica.Delivery) []string {
	var out []string
	for _, d := range dls {
		out = append(out, pkOf(d))
	}
	return out
}

func TestBatchOptionsValidated(t *testing.T) {
	t.Parallel()
	tr := newMemory(t)
	reg := rawRegistry(t, "author")
	for _, c := range []struct {
		name string
		ap   consumer.Applier
		opts consumer.Options
		want string
	}{
		{"no ApplyBatch", &testApplier{}, consumer.Options{Queue: "q", BatchSize: 8}, "batch_size 8 needs an applier with ApplyBatch"},
		{"negative size", &batchApplier{}, consumer.Options{Queue: "q", BatchSize: -1}, "batch_size must not be negative"},
		{"negative wait", &batchApplier{}, consumer.Options{Queue: "q", BatchSize: 8, BatchWait: -time.Second}, "batch_wait must not be negative"},
		{"in flight below size", &batchApplier{}, consumer.Options{Queue: "q", BatchSize: 8, BatchMaxInFlight: 4}, "batch_max_in_flight 4 must be at least batch_size 8"},
	} {
		if _, err := consumer.New(tr, reg, c.ap, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := consumer.New(tr, reg, &testApplier{}, consumer.Options{Queue: "q", BatchSize: 1}); err != nil {
		t.Errorf("batch size 1 needs no ApplyBatch: %v", err)
	}
}

// TestBatchAppliesInOrderAndAcksAfterCommit: messages are applied in
// batches of at most BatchSize, in publish order, and stay unacknowledged on
// the transport until their batch returned.
func TestBatchAppliesInOrderAndAcksAfterCommit(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	var mu sync.Mutex
	var unacked []string
	ap := &batchApplier{during: func(dls []replica.Delivery) {
		// Every message of the batch is still pending on the transport.
		if n := mem.Pending("author"); n < len(dls) {
			mu.Lock()
			unacked = append(unacked, fmt.Sprintf("batch of %d applied with %d pending", len(dls), n))
			mu.Unlock()
		}
	}}
	c := newConsumer(t, mem, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q", BatchSize: 16, BatchWait: 20 * time.Millisecond})
	start(t, c)
	const n = 200
	for pk := 1; pk <= n; pk++ {
		publish(t, mem, "author", encode(t, payload(wire.SignalSave, "author", pk, 0)))
	}
	s := waitDone(t, c, n)
	if s.Applied != n || s.Received != n {
		t.Fatalf("stats %+v, want %d applied", s, n)
	}
	batches := ap.allBatches()
	var all []string
	for _, b := range batches {
		if len(b) > 16 {
			t.Errorf("batch of %d, BatchSize is 16", len(b))
		}
		all = append(all, pks(b)...)
	}
	var want []string
	for pk := 1; pk <= n; pk++ {
		want = append(want, fmt.Sprint(pk))
	}
	if !slices.Equal(all, want) {
		t.Fatalf("applied in the order %q, want publish order", all)
	}
	if len(batches) >= n/2 {
		t.Errorf("%d batches for %d messages: not batching", len(batches), n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(unacked) > 0 {
		t.Errorf("messages acked before their batch was applied: %q", unacked)
	}
	testenv.WaitFor(t, wait, "everything acked", func() bool { return mem.Pending("author") == 0 })
}

// TestBatchFailingMessageRetriedAlone: a message that fails in its batch is
// requeued (and eventually dead-lettered) on its own; the others of its
// batch are acked.
func TestBatchFailingMessageRetriedAlone(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	tr := &recorder{Transport: mem}
	ap := &batchApplier{}
	ap.fn = func(_ context.Context, d replica.Delivery) (replica.Result, error) {
		if pk := pkOf(d); pk == "9" || (pk == "7" && d.Payload.Retries == 0) {
			return replica.Result{}, errFixture
		}
		return replica.Result{Outcome: replica.OutcomeCreated}, nil
	}
	c := newConsumer(t, tr, rawRegistry(t, "author"), ap, consumer.Options{
		Queue: "q", BatchSize: 16, MaxRetries: new(2), RetryDelay: time.Millisecond, DeadMessageTTL: time.Hour,
	})
	start(t, c)
	const n = 30
	for pk := 1; pk <= n; pk++ {
		publish(t, tr, "author", encode(t, payload(wire.SignalSave, "author", pk, 0)))
	}
	s := waitDone(t, c, n)
	if s.Applied != n-1 || s.DeadLettered != 1 || s.Requeued != 3 || s.Failed != 4 || s.Received != n+3 {
		t.Fatalf("stats %+v, want %d applied, pk 7 requeued once, pk 9 requeued twice then dead-lettered", s, n-1)
	}
	var sent []string
	for _, p := range tr.sent() {
		var body struct {
			PK      any `json:"instance_pk"`
			Retries int `json:"retries"`
		}
		if err := json.Unmarshal([]byte(p.Body), &body); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, fmt.Sprintf("%s pk=%v retries=%d", p.Topic, body.PK, body.Retries))
	}
	slices.Sort(sent)
	want := []string{"cqrs.dead_letter_q.author pk=9 retries=2", "cqrs.q.author pk=7 retries=1", "cqrs.q.author pk=9 retries=1", "cqrs.q.author pk=9 retries=2"}
	if !slices.Equal(sent, want) {
		t.Fatalf("published %q, want %q", sent, want)
	}
	applied := map[string]int{}
	for _, d := range ap.deliveries() {
		applied[pkOf(d)]++
	}
	for pk := 1; pk <= n; pk++ {
		wantCalls := 1
		switch pk {
		case 7:
			wantCalls = 2
		case 9:
			wantCalls = 3
		}
		if applied[fmt.Sprint(pk)] != wantCalls {
			t.Errorf("pk %d applied %d times, want %d", pk, applied[fmt.Sprint(pk)], wantCalls)
		}
	}
	testenv.WaitFor(t, wait, "replica topics empty", func() bool {
		return mem.Pending("author") == 0 && mem.Pending("cqrs.q.author") == 0
	})
}

// TestBatchWholeFailureRetriesEachMessage: when ApplyBatch fails as a
// whole, every message of that batch goes through the retry path.
func TestBatchWholeFailureRetriesEachMessage(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	var first []string
	ap := &batchApplier{whole: func(call int, dls []replica.Delivery) error {
		if call == 1 {
			first = pks(dls)
			return errors.New("commit: connection lost")
		}
		return nil
	}}
	c := newConsumer(t, mem, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q", BatchSize: 8, RetryDelay: time.Millisecond})
	start(t, c)
	const n = 10
	for pk := 1; pk <= n; pk++ {
		publish(t, mem, "author", encode(t, payload(wire.SignalSave, "author", pk, 0)))
	}
	s := waitDone(t, c, n)
	if len(first) == 0 || s.Applied != n || s.Requeued != int64(len(first)) || s.Failed != int64(len(first)) {
		t.Fatalf("stats %+v, want the %d messages of the failed batch requeued once and all %d applied", s, len(first), n)
	}
	retried := map[string]bool{}
	for _, d := range ap.deliveries() {
		if d.Payload.Retries == 1 {
			retried[pkOf(d)] = true
		}
	}
	for _, pk := range first {
		if !retried[pk] {
			t.Errorf("pk %s of the failed batch was not retried", pk)
		}
	}
	testenv.WaitFor(t, wait, "replica topics empty", func() bool {
		return mem.Pending("author") == 0 && mem.Pending("cqrs.q.author") == 0
	})
}

// TestBatchShutdownAppliesWhatWasCollected: messages waiting in the
// collector when Run is cancelled are applied and acked before it returns.
func TestBatchShutdownAppliesWhatWasCollected(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	ap := &batchApplier{}
	c := newConsumer(t, mem, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q", BatchSize: 1000, BatchWait: time.Hour})
	r := start(t, c)
	const n = 20
	for pk := 1; pk <= n; pk++ {
		publish(t, mem, "author", encode(t, payload(wire.SignalSave, "author", pk, 0)))
	}
	// All received (and so collected: the batch waits for an hour).
	testenv.WaitFor(t, wait, "messages collected", func() bool { return c.Stats().Received == n })
	if len(ap.allBatches()) != 0 {
		t.Fatal("a batch was applied before its wait was over")
	}
	r.stop(t)
	s := c.Stats()
	if s.Applied != n || s.Nacked != 0 {
		t.Fatalf("stats %+v after shutdown, want all %d applied", s, n)
	}
	if b := ap.allBatches(); len(b) != 1 || len(b[0]) != n {
		t.Fatalf("batches %v, want one of %d", b, n)
	}
	if got := mem.Pending("author"); got != 0 {
		t.Fatalf("Pending(author) = %d after shutdown, want every applied message acked", got)
	}
}

// TestBatchShutdownHandsBackHeld: failed messages held for their retry are
// handed back on shutdown, and the next consumer gets every one of them.
func TestBatchShutdownHandsBackHeld(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	failing := &batchApplier{}
	failing.fn = func(context.Context, replica.Delivery) (replica.Result, error) { return replica.Result{}, errFixture }
	c := newConsumer(t, mem, rawRegistry(t, "author"), failing, consumer.Options{
		Queue: "q", BatchSize: 8, RetryDelay: time.Hour, DelayQueueMaxSize: 2,
	})
	r := start(t, c)
	const n = 4
	for pk := 1; pk <= n; pk++ {
		publish(t, mem, "author", encode(t, payload(wire.SignalSave, "author", pk, 0)))
	}
	// Two are held detached; the collector waits for room for the others.
	testenv.WaitFor(t, wait, "failures", func() bool { return c.Stats().Failed >= 3 })
	r.stop(t)
	s := c.Stats()
	if s.Done() != 0 || s.Requeued != 0 || s.Nacked != s.Received {
		t.Fatalf("stats %+v, want every received message handed back", s)
	}
	if got := mem.Pending("author"); got != n {
		t.Fatalf("Pending(author) = %d after shutdown, want all %d kept", got, n)
	}
	ok := &batchApplier{}
	c2 := newConsumer(t, mem, rawRegistry(t, "author"), ok, consumer.Options{Queue: "q", BatchSize: 8})
	start(t, c2)
	waitDone(t, c2, n)
	var got []string
	for _, b := range ok.allBatches() {
		got = append(got, pks(b)...)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"1", "2", "3", "4"}) {
		t.Fatalf("second consumer applied %q, want 1 2 3 4 once each", got)
	}
	testenv.WaitFor(t, wait, "topic empty", func() bool { return mem.Pending("author") == 0 })
}

// TestBatchWithoutDetachAppliesOneByOne: a transport that cannot detach
// (Kafka) gets the one-at-a-time path.
func TestBatchWithoutDetachAppliesOneByOne(t *testing.T) {
	t.Parallel()
	mem := newMemory(t)
	ap := &oneOrBatch{}
	c := newConsumer(t, noDetach{mem}, rawRegistry(t, "author"), ap, consumer.Options{Queue: "q", BatchSize: 8})
	start(t, c)
	for pk := 1; pk <= 5; pk++ {
		publish(t, mem, "author", encode(t, payload(wire.SignalSave, "author", pk, 0)))
	}
	s := waitDone(t, c, 5)
	if s.Applied != 5 || ap.batchCalls.Load() != 0 || len(ap.deliveries()) != 5 {
		t.Fatalf("stats %+v, %d ApplyBatch calls, %d Apply calls; want 5 Apply calls", s, ap.batchCalls.Load(), len(ap.deliveries()))
	}
}

// oneOrBatch has both methods and counts ApplyBatch calls.
type oneOrBatch struct {
	testApplier
	batchCalls atomic.Int32
}

func (a *oneOrBatch) ApplyBatch(ctx context.Context, dls []replica.Delivery) ([]replica.Result, []error, error) {
	a.batchCalls.Add(1)
	return nil, nil, errors.New("unexpected")
}

// TestBatchWithEngine: the real engine behind a batching consumer. Ten
// revisions of twenty authors arrive in order; every SAVE must be applied
// (none skipped as stale, which a reordering would cause), then the DELETEs.
func TestBatchWithEngine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.SQLite(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE author (id integer PRIMARY KEY, name text NOT NULL,
		cqrs_revision integer NOT NULL, cqrs_updated text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	if err := reg.RegisterReplica(registry.ReplicaModel{CQRSID: "author", Table: "author", PK: "id"}); err != nil {
		t.Fatal(err)
	}
	if err := replica.Migrate(ctx, db.DB, db.Dialect, replica.Options{}); err != nil {
		t.Fatal(err)
	}
	eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, replica.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	mem := newMemory(t)
	c := newConsumer(t, mem, reg, eng, consumer.Options{Queue: "q", BatchSize: 50})
	start(t, c)
	n := 0
	for rev := 0; rev < 10; rev++ {
		for pk := 1; pk <= 20; pk++ {
			p := payload(wire.SignalSave, "author", pk, rev)
			p.InstanceData.Set("name", fmt.Sprintf("a%d r%d", pk, rev))
			publish(t, mem, "author", encode(t, p))
			n++
		}
	}
	for pk := 1; pk <= 5; pk++ {
		p := payload(wire.SignalDelete, "author", pk, 10)
		p.InstanceData = wire.FieldsOf("id", pk, "cqrs_revision", 10, "cqrs_updated", "2026-01-01 10:00:01+00:00")
		publish(t, mem, "author", encode(t, p))
		n++
	}
	s := waitDone(t, c, int64(n))
	if s.Outcomes[replica.OutcomeCreated] != 20 || s.Outcomes[replica.OutcomeUpdated] != 180 || s.Outcomes[replica.OutcomeDeleted] != 5 {
		t.Fatalf("outcomes %v, want 20 created, 180 updated, 5 deleted", s.Outcomes)
	}
	var rows []struct {
		ID   int    `db:"id"`
		Name string `db:"name"`
		Rev  int    `db:"cqrs_revision"`
	}
	if err := db.SelectContext(ctx, &rows, "SELECT id, name, cqrs_revision FROM author ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 15 || rows[0].ID != 6 || rows[0].Name != "a6 r9" || rows[0].Rev != 9 {
		t.Fatalf("rows %+v, want authors 6..20 at revision 9", rows)
	}
	testenv.WaitFor(t, wait, "topic empty", func() bool { return mem.Pending("author") == 0 })
}
