package cli

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/gocqrs/gocqrs/pkg/bench"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

func runBench(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "bench", `cqrs bench [--transport memory|rabbitmq|kafka] [--url AMQP_URL] [--brokers HOST:PORT,...] [--postgres URL] [--rows N] [--runs N]

Measures gocqrs on this machine and, in the same run, the machine's limits:
master write with and without the outbox, relay rate against a raw pipelined
AMQP publisher (kafka: a raw asynchronous Sarama producer, acks=all), replica
apply rate against a raw batched revision-guarded upsert, end-to-end drain
(rabbitmq: against a raw publisher and consumer running at once), and
commit→applied latency at a fixed offered rate. Every run ends with a
row-by-row comparison of master and replica. Fresh tables (PostgreSQL
schemas, or SQLite files when --postgres is empty) and fresh broker queues
(kafka: topics under a fresh prefix) are made for each run and removed after
it. --transport kafka without --brokers starts an in-process Kafka (kfake)
for each run.`)
	transport := fs.String("transport", "memory", "memory, rabbitmq or kafka")
	amqpURL := fs.String("url", env.Getenv("CQRS_URL"), "RabbitMQ URL for --transport rabbitmq (default $CQRS_URL)")
	brokers := fs.String("brokers", "", "Kafka brokers host:port,... for --transport kafka (default: an in-process kfake cluster)")
	pg := fs.String("postgres", "", "PostgreSQL URL for both sides (default: SQLite files)")
	rows := fs.Int("rows", 100000, "messages for the relay, apply and drain measurements")
	writes := fs.Int("writes", 2000, "transactions for the master write measurement")
	runs := fs.Int("runs", 3, "runs; the table shows the median")
	batch := fs.Int("batch", 500, "replica batch size (1 = one message per transaction)")
	relayBatch := fs.Int("relay-batch", outbox.DefaultBatchSize, "relay batch size (outbox rows claimed at once, as master.relay_batch_size)")
	workers := fs.Int("w", 2, "replica workers (consumers on the queue), as cqrs-consume -w")
	rate := fs.Int("rate", 2000, "offered rows/s for the latency measurement")
	rateFor := fs.Duration("rate-for", 5*time.Second, "how long the latency load runs")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file (go tool pprof): of the whole run, or of --profile-phase")
	profilePhase := fs.String("profile-phase", "", "profile only this phase of every run: write, relay, apply, drain or latency")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	var kafkaBrokers []string
	for _, b := range strings.Split(*brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			kafkaBrokers = append(kafkaBrokers, b)
		}
	}
	switch *transport {
	case "memory":
	case "rabbitmq":
		if *amqpURL == "" {
			return usagef("--transport rabbitmq needs --url (or $CQRS_URL)")
		}
	case "kafka":
		if err := bench.CheckKafkaBrokers(kafkaBrokers); err != nil {
			return usagef("--brokers: %v", err)
		}
	default:
		return usagef("--transport %q: want memory, rabbitmq or kafka", *transport)
	}
	if *transport != "kafka" && len(kafkaBrokers) > 0 {
		return usagef("--brokers is for --transport kafka")
	}
	for name, v := range map[string]int{"rows": *rows, "writes": *writes, "runs": *runs, "batch": *batch, "rate": *rate, "w": *workers} {
		if v < 1 {
			return usagef("--%s %d: want a positive number", name, v)
		}
	}
	switch *profilePhase {
	case "", "write", "relay", "apply", "drain", "latency":
	default:
		return usagef("--profile-phase %q: want write, relay, apply, drain or latency", *profilePhase)
	}
	if *profilePhase != "" && *cpuProfile == "" {
		return usagef("--profile-phase needs --cpuprofile")
	}
	var phase func(string) func()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if *profilePhase == "" {
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		} else {
			// pprof writes one profile per file: the first run's phase.
			phase = phaseProfiler(f, *profilePhase, env)
		}
	}
	rep, err := bench.Run(ctx, bench.Options{
		Rows: *rows, WriteTxs: *writes, Runs: *runs, Rate: *rate, RateFor: *rateFor,
		Transport: *transport, AMQPURL: *amqpURL, KafkaBrokers: kafkaBrokers, PostgresURL: *pg, BatchSize: *batch, RelayBatch: *relayBatch, Workers: *workers,
		Progress: env.Stderr, Phase: phase,
	})
	if rep != nil && len(rep.Figures) > 0 {
		rep.Print(env.Stdout)
	}
	if err != nil {
		return err
	}
	if !rep.Equal {
		return fmt.Errorf("the replica differs from the master")
	}
	return nil
}

// phaseProfiler returns a bench phase hook that writes a CPU profile of the
// first run's phase named want to f.
func phaseProfiler(f *os.File, want string, env Env) func(string) func() {
	done := false
	return func(name string) func() {
		if name != want || done {
			return func() {}
		}
		done = true
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(env.Stderr, "cqrs bench: cpu profile: %v\n", err)
			return func() {}
		}
		return pprof.StopCPUProfile
	}
}
