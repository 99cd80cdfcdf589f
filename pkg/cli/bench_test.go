package cli

import (
	"regexp"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

// benchSmallArgs make `cqrs bench` a smoke test: SQLite files, no services.
var benchSmallArgs = []string{"--rows", "300", "--writes", "50", "--rate-for", "1s", "--runs", "1"}

// benchRow returns the report row of figure name and its median, failing
// the test when the row is missing or its median is not a number.
func benchRow(t *testing.T, report, name string) string {
	t.Helper()
	for _, line := range strings.Split(report, "\n") {
		if !strings.HasPrefix(line, name+" ") {
			continue
		}
		rest := strings.TrimSpace(strings.TrimPrefix(line, name))
		median := strings.Fields(rest)[0]
		if !regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`).MatchString(median) || median == "0" || median == "0.00" {
			t.Errorf("figure %q: median %q is not a positive number: %q", name, median, line)
		}
		return line
	}
	t.Errorf("report has no row %q:\n%s", name, report)
	return ""
}

func checkBenchReport(t *testing.T, r run, header string, figures []string) {
	t.Helper()
	if r.code != ExitOK {
		t.Fatalf("bench exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, header) {
		t.Errorf("report header: want %q in\n%s", header, r.stdout)
	}
	for _, f := range figures {
		benchRow(t, r.stdout, f)
	}
	if !strings.Contains(r.stdout, "run 1: replica equal to master, 300 rows compared field by field") {
		t.Errorf("report has no equal verdict:\n%s", r.stdout)
	}
}

var benchCommonFigures = []string{
	"master write: tx without outbox",
	"master write: tx with outbox",
	"relay: pre-filled outbox → broker",
	"baseline: raw batched guarded upsert",
	"replica apply: pre-filled queue",
	"end-to-end drain: outbox → replica",
	"latency commit→applied p50",
	"latency commit→applied p99",
}

func TestBenchMemorySQLite(t *testing.T) {
	r := runCqrs(t, nil, append([]string{"bench", "--transport", "memory"}, benchSmallArgs...)...)
	checkBenchReport(t, r, "gocqrs bench: memory transport, SQLite on both sides, 300 rows, median of 1 run(s)", benchCommonFigures)
	if strings.Contains(r.stdout, "Kafka") {
		t.Errorf("memory report mentions Kafka:\n%s", r.stdout)
	}
	// Every phase reports its CPU use on the progress output.
	for _, phase := range []string{"write", "relay", "apply", "drain", "latency"} {
		if !strings.Contains(r.stderr, "    "+phase+": wall ") {
			t.Errorf("progress has no CPU line for phase %s:\n%s", phase, r.stderr)
		}
	}
	// The replica phases say how full the applier calls were and how long
	// they took.
	for _, phase := range []string{"apply", "drain"} {
		if !regexp.MustCompile(`(?m)^    ` + phase + `: [1-9][0-9]* applier calls, [0-9.]+ messages each, [0-9.]+ ms each \([0-9.]+ µs per message\)$`).MatchString(r.stderr) {
			t.Errorf("progress has no applier-call line for phase %s:\n%s", phase, r.stderr)
		}
	}
}

func TestBenchKafkaInProcess(t *testing.T) {
	r := runCqrs(t, nil, append([]string{"bench", "--transport", "kafka"}, benchSmallArgs...)...)
	figures := append([]string{
		"baseline: raw Kafka produce, acks=all, async",
		"baseline: raw Kafka consume, all partitions",
		"replica apply (same figure) vs broker delivery",
		"apply ceiling: raw consume (same figure)",
		"end-to-end drain (same figure) vs the broker",
	}, benchCommonFigures...)
	checkBenchReport(t, r, "gocqrs bench: kafka (in-process kfake cluster, 1 broker) transport, SQLite on both sides, 300 rows", figures)
	if !strings.Contains(r.stdout, "the broker is kfake") {
		t.Errorf("kafka report does not say the broker is kfake:\n%s", r.stdout)
	}
	relay := benchRow(t, r.stdout, "relay: pre-filled outbox → broker")
	if !strings.Contains(relay, "× baseline: raw Kafka produce, acks=all, async") {
		t.Errorf("relay row is not compared with the raw producer: %q", relay)
	}
	apply := benchRow(t, r.stdout, "replica apply (same figure) vs broker delivery")
	if !strings.Contains(apply, "× baseline: raw Kafka consume, all partitions") {
		t.Errorf("apply row is not compared with the raw consumer: %q", apply)
	}
	drain := benchRow(t, r.stdout, "end-to-end drain (same figure) vs the broker")
	if !strings.Contains(drain, "× baseline: raw Kafka produce, acks=all, async") {
		t.Errorf("drain row is not compared with the raw producer: %q", drain)
	}
}

// TestBenchRabbitMQPostgres runs the bench the way the throughput goals
// are measured (RabbitMQ, PostgreSQL both sides), small: every figure is
// there and compared with the baseline it is a share of.
func TestBenchRabbitMQPostgres(t *testing.T) {
	amqpURL := testenv.Need(t, testenv.EnvAMQP, "RabbitMQ")
	pgURL := testenv.Need(t, testenv.EnvPostgres, "PostgreSQL")
	r := runCqrs(t, nil, append([]string{"bench", "--transport", "rabbitmq", "--url", amqpURL, "--postgres", pgURL}, benchSmallArgs...)...)
	figures := append([]string{
		"baseline: raw AMQP, pipelined confirms",
		"baseline: raw AMQP consume, 1 per worker",
		"baseline: raw AMQP publish + consume at once",
		"replica apply (same figure) vs broker delivery",
		"apply ceiling: raw consume (same figure)",
		"end-to-end drain (same figure) vs the broker",
	}, benchCommonFigures...)
	checkBenchReport(t, r, "gocqrs bench: rabbitmq transport, PostgreSQL on both sides, 300 rows", figures)
	for name, against := range map[string]string{
		"relay: pre-filled outbox → broker":              "× baseline: raw AMQP, pipelined confirms",
		"replica apply: pre-filled queue":                "× baseline: raw batched guarded upsert",
		"replica apply (same figure) vs broker delivery": "× baseline: raw AMQP consume, 1 per worker",
		"apply ceiling: raw consume (same figure)":       "× baseline: raw batched guarded upsert",
		"end-to-end drain (same figure) vs the broker":   "× baseline: raw AMQP publish + consume at once",
	} {
		if row := benchRow(t, r.stdout, name); !strings.Contains(row, against) {
			t.Errorf("row %q is not compared %q: %q", name, against, row)
		}
	}
	// Each relay round and each apply round prints its rates.
	for _, re := range []string{
		`(?m)^    round 1: [0-9]+ messages: raw [0-9]+ msg/s, relay [0-9]+ msg/s$`,
		`(?m)^    round 1: [0-9]+ rows: raw upsert VALUES [0-9]+ rows/s, arrays [0-9]+ rows/s, replica [0-9]+ rows/s( \(start-up included\))?$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stderr) {
			t.Errorf("progress has no line matching %s:\n%s", re, r.stderr)
		}
	}
}

func TestBenchFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--transport", "nats"}, "want memory, rabbitmq or kafka"},
		{[]string{"--transport", "kafka", "--brokers", "localhost"}, `broker 1 "localhost" is not host:port`},
		{[]string{"--transport", "kafka", "--brokers", "a:9092,:9092"}, `broker 2 ":9092" is not host:port`},
		{[]string{"--transport", "memory", "--brokers", "a:9092"}, "--brokers is for --transport kafka"},
		{[]string{"--transport", "rabbitmq"}, "needs --url"},
	} {
		r := runCqrs(t, nil, append([]string{"bench"}, tc.args...)...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("bench %v: exit %d, want usage error with %q; stderr:\n%s", tc.args, r.code, tc.want, r.stderr)
		}
	}
}

// An external cluster (--brokers; here a kfake cluster of the test's own)
// is left as it was found: the run's topics and consumer groups are deleted.
func TestBenchKafkaBrokersCleansUp(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := strings.Join(c.ListenAddrs(), ",")
	r := runCqrs(t, nil, append([]string{"bench", "--transport", "kafka", "--brokers", brokers}, benchSmallArgs...)...)
	checkBenchReport(t, r, "gocqrs bench: kafka (brokers "+brokers+") transport", benchCommonFigures)
	if strings.Contains(r.stdout, "kfake") {
		t.Errorf("report of an external cluster mentions kfake:\n%s", r.stdout)
	}

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	admin, err := sarama.NewClusterAdmin(c.ListenAddrs(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	topics, err := admin.ListTopics()
	if err != nil {
		t.Fatal(err)
	}
	for name := range topics {
		if strings.HasPrefix(name, "bench_") {
			t.Errorf("topic %q left on the cluster", name)
		}
	}
	groups, err := admin.ListConsumerGroups()
	if err != nil {
		t.Fatal(err)
	}
	for name := range groups {
		if strings.HasPrefix(name, "bench_") {
			t.Errorf("consumer group %q left on the cluster", name)
		}
	}
}
