// Package bench measures gocqrs on the machine it runs on, against that
// machine's own limits measured in the same run: a raw pipelined AMQP
// publisher (or a raw asynchronous Kafka producer), the same publisher with
// a raw consumer taking the messages at once (RabbitMQ), and a raw batched
// revision-guarded upsert. It backs `cqrs bench`.
//
// Each run builds fresh master and replica tables (PostgreSQL schemas or
// SQLite files) and a fresh transport, then measures, in order:
//
//  1. master write: transactions writing one row, with and without the outbox;
//  2. relay: publishing a pre-filled outbox of Rows messages;
//  3. apply: the replica consuming those Rows messages from the broker;
//  4. drain: Rows updates, outbox → relay → broker → replica, both running;
//  5. latency: commit→applied at a fixed offered rate;
//
// and ends with a row-by-row comparison of master and replica.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// Options configure a benchmark run.
type Options struct {
	// Rows is the number of messages for relay, apply and drain (default 100000).
	Rows int
	// WriteTxs is the number of transactions of the write measurement (default 2000).
	WriteTxs int
	// Rate and RateFor are the offered load of the latency measurement
	// (default 2000 rows/s for 5 s).
	Rate    int
	RateFor time.Duration
	// Runs is how many times everything is measured; the report shows the
	// median (default 3).
	Runs int
	// Transport is "memory", "rabbitmq" or "kafka" (default memory).
	Transport string
	// AMQPURL is the RabbitMQ URL for Transport "rabbitmq".
	AMQPURL string
	// KafkaBrokers lists the brokers (host:port) for Transport "kafka";
	// empty means an in-process kfake cluster started for each run.
	KafkaBrokers []string
	// PostgresURL selects PostgreSQL for both sides (a schema each per run);
	// empty means SQLite files in a temporary directory.
	PostgresURL string
	// BatchSize is the consumer's batch (default 500); RelayBatch the
	// relay's (default outbox.DefaultBatchSize, as cqrs-relay).
	BatchSize  int
	RelayBatch int
	// Workers is the number of replica consumers on the queue (default 2,
	// as `cqrs-consume -w 2`).
	Workers int
	// Progress receives one line per phase; nil discards them.
	Progress io.Writer
	// Logger receives the components' logs; nil discards them.
	Logger *slog.Logger
	// Phase, when set, is called as each measured phase of a run starts
	// ("write", "relay", "apply", "drain", "latency"); the function it
	// returns is called when that phase ends. The bench command uses it to
	// profile one phase.
	Phase func(name string) (end func())
}

func (o *Options) fill() {
	if o.Rows <= 0 {
		o.Rows = 100000
	}
	if o.WriteTxs <= 0 {
		o.WriteTxs = 2000
	}
	if o.Rate <= 0 {
		o.Rate = 2000
	}
	if o.RateFor <= 0 {
		o.RateFor = 5 * time.Second
	}
	if o.Runs <= 0 {
		o.Runs = 3
	}
	if o.Transport == "" {
		o.Transport = "memory"
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.RelayBatch <= 0 {
		o.RelayBatch = outbox.DefaultBatchSize
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Phase == nil {
		o.Phase = func(string) func() { return func() {} }
	}
}

// Figure is one measured quantity over the runs.
type Figure struct {
	Name string
	Unit string
	Runs []float64
	// Against names the baseline figure this one is compared with, if any.
	Against string
	// Goal, when set, is the ratio (this / baseline) or absolute value the
	// project aims for, and Higher says whether higher is better.
	Goal   float64
	Higher bool
	// GoalIsRatio says whether Goal applies to the ratio against Against.
	GoalIsRatio bool
}

// Median returns the median of the runs.
func (f Figure) Median() float64 {
	if len(f.Runs) == 0 {
		return math.NaN()
	}
	v := append([]float64(nil), f.Runs...)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Report is the outcome of [Run].
type Report struct {
	Options Options
	Figures []*Figure
	// Compared lists, per run, the row-by-row comparison verdict.
	Compared []string
	// Equal is true when every run ended with the replica equal to the master.
	Equal bool
}

// add records one run's value of the figure name (made on first use) and
// returns the figure.
func (r *Report) add(name, unit string, v float64) *Figure {
	f := r.figure(name, unit)
	f.Runs = append(f.Runs, v)
	return f
}

func (r *Report) figure(name, unit string) *Figure {
	for _, f := range r.Figures {
		if f.Name == name {
			return f
		}
	}
	f := &Figure{Name: name, Unit: unit}
	r.Figures = append(r.Figures, f)
	return f
}

// Run measures everything Options.Runs times.
func Run(ctx context.Context, opts Options) (*Report, error) {
	opts.fill()
	rep := &Report{Options: opts, Equal: true}
	for i := 1; i <= opts.Runs; i++ {
		fmt.Fprintf(opts.Progress, "run %d/%d (%s transport, %s, %d rows)\n", i, opts.Runs, transportName(opts), dbName(opts), opts.Rows)
		if err := runOnce(ctx, opts, rep); err != nil {
			return rep, fmt.Errorf("bench: run %d: %w", i, err)
		}
	}
	return rep, nil
}

// transportName names o's transport, and for kafka which cluster.
func transportName(o Options) string {
	if o.Transport == "kafka" {
		return "kafka (" + kafkaDescription(o) + ")"
	}
	return o.Transport
}

func dbName(o Options) string {
	if o.PostgresURL != "" {
		return "PostgreSQL"
	}
	return "SQLite"
}

// Print writes the report as a table: median of the runs, every run, the
// ratio against the baseline (the median of the ratios measured within each
// run, then each run's) and the goal.
func (r *Report) Print(w io.Writer) {
	o := r.Options
	fmt.Fprintf(w, "gocqrs bench: %s transport, %s on both sides, %d rows, median of %d run(s)\n\n", transportName(o), dbName(o), o.Rows, o.Runs)
	if note := kafkaNote(o); o.Transport == "kafka" && note != "" {
		fmt.Fprintf(w, "%s\n\n", note)
	}
	fmt.Fprintf(w, "%-44s %14s  %-28s %s\n", "measure", "median", "runs", "vs baseline / goal")
	fmt.Fprintln(w, strings.Repeat("-", 120))
	byName := map[string]*Figure{}
	for _, f := range r.Figures {
		byName[f.Name] = f
	}
	for _, f := range r.Figures {
		runs := make([]string, len(f.Runs))
		for i, v := range f.Runs {
			runs[i] = short(v)
		}
		cmp := ""
		if f.Against != "" {
			if b, ok := byName[f.Against]; ok && b.Median() > 0 {
				ratio, per := runRatios(f, b)
				cmp = fmt.Sprintf("%.2f × %s (runs %s)", ratio, f.Against, per)
				if f.GoalIsRatio {
					cmp += verdict(ratio, f.Goal, f.Higher, fmt.Sprintf("%.2f×", f.Goal))
				}
			}
		} else if f.Goal != 0 {
			cmp = strings.TrimSpace(verdict(f.Median(), f.Goal, f.Higher, short(f.Goal)+" "+f.Unit))
		}
		fmt.Fprintf(w, "%-44s %14s  %-28s %s\n", f.Name, short(f.Median())+" "+f.Unit, strings.Join(runs, " "), cmp)
	}
	fmt.Fprintln(w)
	for i, c := range r.Compared {
		fmt.Fprintf(w, "run %d: %s\n", i+1, c)
	}
}

// runRatios returns the median of f's ratio to b measured within each run
// (a baseline is compared with the figure of its own run), and the ratios.
func runRatios(f, b *Figure) (float64, string) {
	r := &Figure{}
	var parts []string
	for i := range min(len(f.Runs), len(b.Runs)) {
		if b.Runs[i] > 0 {
			r.Runs = append(r.Runs, f.Runs[i]/b.Runs[i])
			parts = append(parts, fmt.Sprintf("%.2f", f.Runs[i]/b.Runs[i]))
		}
	}
	if len(r.Runs) == 0 {
		return f.Median() / b.Median(), "-"
	}
	return r.Median(), strings.Join(parts, " ")
}

func verdict(v, goal float64, higher bool, goalText string) string {
	ok := v >= goal
	if !higher {
		ok = v <= goal
	}
	cmpOp := "≥"
	if !higher {
		cmpOp = "≤"
	}
	mark := "met"
	if !ok {
		mark = "NOT met"
	}
	return fmt.Sprintf(" (goal %s %s: %s)", cmpOp, goalText, mark)
}

func short(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}
