package consumer_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// nopBatchApplier applies nothing: the benchmark measures the consumer's
// own cost per message (router, decode, batching, settling, logging).
type nopBatchApplier struct{}

func (nopBatchApplier) Apply(context.Context, replica.Delivery) (replica.Result, error) {
	return replica.Result{Outcome: replica.OutcomeCreated, StoredRevision: -1}, nil
}

func (nopBatchApplier) ApplyBatch(_ context.Context, dls []replica.Delivery) ([]replica.Result, []error, error) {
	res := make([]replica.Result, len(dls))
	for i := range res {
		res[i] = replica.Result{Outcome: replica.OutcomeCreated, StoredRevision: -1}
	}
	return res, make([]error, len(dls)), nil
}

// BenchmarkConsumerBatch is the consumer's cost per message over the memory
// transport with batches of 500 and Info logging to a discarded text
// handler (the binaries' default level): one op is one message.
func BenchmarkConsumerBatch(b *testing.B) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	mem, err := transports.NewMemory(transports.MemoryConfig{MaxPending: b.N + 10}, logger)
	if err != nil {
		b.Fatal(err)
	}
	defer mem.Close()
	body, err := wire.Encode(payload(wire.SignalSave, "author", 1, 0))
	if err != nil {
		b.Fatal(err)
	}
	c, err := consumer.New(mem, rawRegistry(b, "author"), nopBatchApplier{},
		consumer.Options{Queue: "q", BatchSize: 500, BatchWait: time.Millisecond, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		if err := mem.Publisher().Publish("author", message.NewMessage(watermill.NewUUID(), body)); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for c.Stats().Done() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d messages done", c.Stats().Done(), b.N)
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
