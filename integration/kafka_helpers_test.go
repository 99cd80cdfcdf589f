package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// kafkaE2E is the end-to-end pipeline (PostgreSQL master and replica) with
// an in-process Kafka between them instead of the memory transport.
type kafkaE2E struct {
	*pipeline
	cluster *kfake.Cluster
	kc      transports.KafkaConfig
}

func newKafkaE2E(t *testing.T, kc transports.KafkaConfig) *kafkaE2E {
	t.Helper()
	mdb := testenv.Postgres(t)
	rdb := testenv.Postgres(t)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close) // after the transports, which close first
	p := newPipeline(t, mdb, rdb, replica.Options{Queue: "e2e"})
	if err := p.tr.Close(); err != nil { // the memory transport newPipeline made
		t.Fatal(err)
	}
	e := &kafkaE2E{pipeline: p, cluster: cluster, kc: kc}
	p.tr = e.transport() // closed by newPipeline's cleanup
	return e
}

// transport connects a new kafka transport to the cluster, as another
// process would.
func (e *kafkaE2E) transport() *transports.Kafka {
	e.t.Helper()
	kc := e.kc
	kc.Tune = func(c *sarama.Config) {
		// Notice rebalances and commit offsets quickly.
		c.Consumer.Group.Heartbeat.Interval = 100 * time.Millisecond
		c.Consumer.Offsets.AutoCommit.Interval = 100 * time.Millisecond
		c.Metadata.Retry.Backoff = 50 * time.Millisecond
	}
	k, err := transports.NewKafka(context.Background(), transports.Config{
		Transport: transports.KafkaName, URL: strings.Join(e.cluster.ListenAddrs(), ","), Kafka: kc,
	}, quietLogger())
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

// writeMore commits 2n master changes: n new authors from id base+1 on,
// each created in one transaction and updated in another.
func (e *kafkaE2E) writeMore(n, base int) {
	e.t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(base), uint64(n)))
	for i := 1; i <= n; i++ {
		id := base + i
		for _, update := range []bool{false, true} {
			tx, err := e.mdb.BeginTxx(ctx, nil)
			if err != nil {
				e.t.Fatal(err)
			}
			v := authorValues(rng, id)
			if update {
				delete(v, "id")
				err = e.master.Update(ctx, tx, "author", id, v)
			} else {
				_, err = e.master.Insert(ctx, tx, "author", v)
			}
			if err != nil {
				_ = tx.Rollback()
				e.t.Fatalf("author %d: %v", id, err)
			}
			if err := tx.Commit(); err != nil {
				e.t.Fatal(err)
			}
		}
	}
}

// runningConsumer is a consumer started by a test, stoppable mid-test.
type runningConsumer struct {
	*consumer.Consumer
	cancel context.CancelFunc
	done   chan error
}

// startKafkaConsumer runs a consumer of queue "e2e" on tr through ap until
// stop is called or the test ends.
func (e *kafkaE2E) startKafkaConsumer(tr transports.Transport, ap consumer.Applier, opts consumer.Options) *runningConsumer {
	e.t.Helper()
	opts.Queue = "e2e"
	if opts.RetryDelay == 0 {
		opts.RetryDelay = 10 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	c, err := consumer.New(tr, e.rreg, ap, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningConsumer{Consumer: c, cancel: cancel, done: make(chan error, 1)}
	go func() { rc.done <- c.Run(ctx) }()
	e.t.Cleanup(func() { rc.stop(e.t) })
	select {
	case <-c.Running():
	case err := <-rc.done:
		rc.done <- err
		e.t.Fatalf("consumer stopped while starting: %v", err)
	case <-time.After(30 * time.Second):
		e.t.Fatal("consumer did not start")
	}
	return rc
}

// stop cancels the consumer and waits for Run to return. It may be called
// more than once.
func (rc *runningConsumer) stop(t *testing.T) {
	t.Helper()
	rc.cancel()
	select {
	case err, ok := <-rc.done:
		if ok && err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("consumer: %v", err)
		}
		if ok {
			close(rc.done)
		}
	case <-time.After(30 * time.Second):
		t.Error("consumer did not stop within 30 s")
	}
}

// recordingApplier passes deliveries to the replica engine and records, per
// entity, the revisions in the order they were applied.
type recordingApplier struct {
	inner consumer.Applier
	mu    sync.Mutex
	revs  map[string][]int64
	calls int
}

func newRecordingApplier(inner consumer.Applier) *recordingApplier {
	return &recordingApplier{inner: inner, revs: map[string][]int64{}}
}

// Apply records d, then applies it.
func (r *recordingApplier) Apply(ctx context.Context, d replica.Delivery) (replica.Result, error) {
	if rev, ok := d.Payload.Revision(); ok {
		pk := fmt.Sprint(d.Payload.InstancePK)
		r.mu.Lock()
		r.revs[pk] = append(r.revs[pk], rev)
		r.calls++
		r.mu.Unlock()
	}
	return r.inner.Apply(ctx, d)
}

// batchRecordingApplier is a recordingApplier whose inner applier also
// applies batches; it records the largest batch.
type batchRecordingApplier struct {
	*recordingApplier
	largest int
}

// ApplyBatch records dls in order, then applies them as one batch.
func (r *batchRecordingApplier) ApplyBatch(ctx context.Context, dls []replica.Delivery) ([]replica.Result, []error, error) {
	r.mu.Lock()
	r.largest = max(r.largest, len(dls))
	for _, d := range dls {
		if rev, ok := d.Payload.Revision(); ok {
			pk := fmt.Sprint(d.Payload.InstancePK)
			r.revs[pk] = append(r.revs[pk], rev)
			r.calls++
		}
	}
	r.mu.Unlock()
	return r.inner.(consumer.BatchApplier).ApplyBatch(ctx, dls)
}

// largestBatch returns the size of the largest batch applied.
func (r *batchRecordingApplier) largestBatch() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.largest
}

// outOfOrder returns a description of the first entity whose revisions
// went down ("" when none did). Repeats (redeliveries) are in order.
func (r *recordingApplier) outOfOrder() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for pk, list := range r.revs {
		for i := 1; i < len(list); i++ {
			if list[i] < list[i-1] {
				return fmt.Sprintf("entity %s: revision %d applied after %d (all: %v)", pk, list[i], list[i-1], list)
			}
		}
	}
	return ""
}

func (r *recordingApplier) entities() (entities, calls int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.revs), r.calls
}

// logBuffer collects a logger's output for assertions.
type logBuffer struct{ testenv.SyncBuffer }

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
