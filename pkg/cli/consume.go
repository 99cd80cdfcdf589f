package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/metrics"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// Consume runs `cqrs-consume` with args (without the program name) and
// returns the exit code: the replica consumer, with N workers, until SIGINT
// or SIGTERM; in-flight messages are finished (or handed back to the broker)
// before it exits.
func Consume(ctx context.Context, env Env, args []string) int {
	env = env.withDefaults()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return exitCode(env, "cqrs-consume", runConsume(ctx, env, args))
}

func runConsume(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "cqrs-consume", "cqrs-consume [-w N] [--cqrs-id ID ...] [--config FILE]")
	workers := fs.Int("w", 1, "number of workers (consumers on the replica queue)")
	fs.IntVar(workers, "workers", 1, "same as -w")
	var ids stringList
	fs.Var(&ids, "cqrs-id", "consume only this cqrs_id (repeatable, or comma-separated); default: every replica model")
	cfgPath := fs.String("config", "", "configuration file (YAML or JSON; default $CQRS_CONFIG)")
	shutdown := fs.Duration("shutdown-timeout", 30*time.Second, "how long SIGINT/SIGTERM waits for in-flight messages")
	metricsAddr := fs.String("metrics-address", "", "serve /metrics, /healthz and /readyz on this host:port (default metrics.address)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *workers < 1 {
		return usagef("-w %d: want at least 1 worker", *workers)
	}
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		return err
	}
	if cfg.Queue == "" {
		return errors.New("config: queue: required for a replica (CQRS_QUEUE or `queue:` in the config file)")
	}
	logger, err := newLogger(env.Stderr, cfg.Log)
	if err != nil {
		return err
	}
	reg, err := registryFor(env, cfg)
	if err != nil {
		return err
	}
	known := reg.ReplicaIDs()
	if len(known) == 0 {
		return errors.New("no replica models: declare some under `models:` (role: replica) or register them in Go")
	}
	for _, id := range ids {
		if !slices.Contains(known, id) {
			return usagef("--cqrs-id %q: no replica model with that cqrs_id (known: %s)", id, strings.Join(known, ", "))
		}
	}
	db, _, err := openDB(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer db.Close()
	eng, err := cqrs.NewEngine(ctx, db, reg, replica.Options{Queue: cfg.Queue, DjangoCompat: cfg.Replica.DjangoCompat, Logger: logger})
	if err != nil {
		return err
	}
	consumers := *workers
	if cfg.Transport == transports.KafkaName {
		// One consumer-group member; -w sets how many partitions it works
		// on at once (each partition stays in order).
		if cfg.Kafka.Workers == 0 {
			cfg.Kafka.Workers = *workers
		}
		consumers = 1
	}
	tr, err := connectTransport(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer tr.Close()
	if tr.Name() == transports.MemoryName && consumers > 1 {
		logger.Warn("the memory transport fans every message out to every subscriber: running 1 worker", "asked", consumers)
		consumers = 1
	}
	opts := consumerOptions(cfg, ids, logger)
	cm := metrics.NewConsumerMetrics()
	opts.Observer = cm
	stopMetrics, err := serveMetrics(ctx, metricsAddress(*metricsAddr, cfg.Metrics.Address), logger,
		[]metrics.Check{metrics.DBCheck(db.DB), metrics.TransportCheck(tr)}, cm)
	if err != nil {
		return err
	}
	defer stopMetrics()
	logger.Info("cqrs-consume started", "queue", cfg.Queue, "transport", tr.Name(), "workers", *workers, "cqrs_ids", ids)
	return superviseWorkers(ctx, consumers, *shutdown, logger, func() (*consumer.Consumer, error) {
		return consumer.New(tr, reg, eng, opts)
	})
}

// consumerOptions maps the replica block of the configuration.
func consumerOptions(cfg *cqrs.Config, ids []string, logger *slog.Logger) consumer.Options {
	o := consumer.Options{
		Queue:             cfg.Queue,
		DeadLetterQueue:   cfg.Replica.DeadLetterQueue,
		MaxRetries:        cfg.Replica.MaxRetries,
		RetryDelay:        cfg.Replica.RetryDelay.Or(consumer.DefaultRetryDelay),
		DeadMessageTTL:    cfg.Replica.DeadMessageTTL.Or(consumer.DefaultDeadMessageTTL),
		CQRSIDs:           ids,
		DelayQueueMaxSize: cfg.Replica.DelayQueueMaxSize,
		BatchSize:         cfg.Replica.BatchSize,
		BatchWait:         cfg.Replica.BatchWait.Or(0),
		BatchMaxInFlight:  cfg.Replica.BatchMaxInFlight,
		Logger:            logger,
	}
	if cfg.Replica.DeadMessageTTL.Set && cfg.Replica.DeadMessageTTL.D == 0 {
		o.DeadMessageTTL = -1 // null: dead letters never expire
	}
	return o
}

// superviseWorkers runs n consumers, restarting one that stops with an
// error (with a growing pause), until ctx is done; then it waits up to
// grace for them to finish their in-flight messages.
func superviseWorkers(ctx context.Context, n int, grace time.Duration, logger *slog.Logger, newConsumer func() (*consumer.Consumer, error)) error {
	var wg sync.WaitGroup
	fatal := make(chan error, n)
	for w := 1; w <= n; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			backoff := time.Second
			for ctx.Err() == nil {
				c, err := newConsumer()
				if err != nil {
					fatal <- err // a configuration problem: restarting will not help
					return
				}
				started := time.Now()
				err = c.Run(ctx)
				if ctx.Err() != nil {
					return
				}
				if time.Since(started) > time.Minute {
					backoff = time.Second
				}
				logger.Error("worker stopped; restarting", "worker", w, "error", err, "in", backoff)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 30*time.Second)
			}
		}(w)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case err := <-fatal:
		return err
	case <-ctx.Done():
	case <-done:
	}
	logger.Info("cqrs-consume stopping: finishing in-flight messages", "timeout", grace)
	select {
	case <-done:
		logger.Info("cqrs-consume stopped")
		return nil
	case <-time.After(grace):
		return fmt.Errorf("shutdown: workers still busy after %s", grace)
	}
}
