package transports_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// amqpURL returns the test broker's URL, or skips.
func amqpURL(t *testing.T) string {
	t.Helper()
	return testenv.Need(t, testenv.EnvAMQP, "RabbitMQ")
}

// rawConn opens a plain amqp091 connection for the test's own checks.
func rawConn(t *testing.T, rawURL string) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(rawURL)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// rawChannel opens a channel on a new connection.
func rawChannel(t *testing.T, rawURL string) *amqp.Channel {
	t.Helper()
	ch, err := rawConn(t, rawURL).Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// newRabbit builds a rabbitmq transport closed at the end of the test.
func newRabbit(t *testing.T, cfg transports.Config) *transports.RabbitMQ {
	t.Helper()
	cfg.Transport = transports.RabbitMQName
	if cfg.URL == "" {
		cfg.URL = amqpURL(t)
	}
	r, err := transports.NewRabbitMQ(context.Background(), cfg, nil)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close transport: %v", err)
		}
	})
	return r
}

// scratch is a test's own exchange and queues in vhost "/", deleted at the
// end of the test.
type scratch struct {
	url      string
	exchange string
	ch       *amqp.Channel
}

func newScratch(t *testing.T) *scratch {
	t.Helper()
	u := amqpURL(t)
	s := &scratch{url: u, exchange: testenv.Name("gocqrs_ex"), ch: rawChannel(t, u)}
	t.Cleanup(func() { deleteExchange(t, u, s.exchange) })
	return s
}

// queue declares a queue bound to s.exchange with keys (the exchange is
// declared with django-cqrs's flags first) and deletes it after the test.
func (s *scratch) queue(t *testing.T, args amqp.Table, keys ...string) string {
	t.Helper()
	name := testenv.Name("gocqrs_q")
	ch := rawChannel(t, s.url)
	if err := ch.ExchangeDeclare(s.exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteQueue(t, s.url, name) })
	for _, k := range keys {
		if err := ch.QueueBind(name, k, s.exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

// transport returns a rabbitmq transport on s's exchange.
func (s *scratch) transport(t *testing.T) *transports.RabbitMQ {
	t.Helper()
	return newRabbit(t, transports.Config{URL: s.url, Exchange: s.exchange})
}

// depth returns how many messages queue holds ready for delivery.
func (s *scratch) depth(t *testing.T, queue string) int {
	t.Helper()
	q, err := rawChannel(t, s.url).QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("inspect queue %q: %v", queue, err)
	}
	return q.Messages
}

// publishRaw publishes a message as a foreign producer would.
func (s *scratch) publishRaw(t *testing.T, key string, p amqp.Publishing) {
	t.Helper()
	if err := s.ch.PublishWithContext(context.Background(), s.exchange, key, false, false, p); err != nil {
		t.Fatal(err)
	}
}

func deleteExchange(t *testing.T, rawURL, name string) {
	conn, err := amqp.Dial(rawURL)
	if err != nil {
		t.Logf("cleanup: delete exchange %q: %v", name, err)
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		_ = ch.ExchangeDelete(name, false, false)
	}
}

func deleteQueue(t *testing.T, rawURL, name string) {
	conn, err := amqp.Dial(rawURL)
	if err != nil {
		t.Logf("cleanup: delete queue %q: %v", name, err)
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		_, _ = ch.QueueDelete(name, false, false, false)
	}
}

// rabbitmqctl runs the broker's CLI (we run on the broker's host as root).
func rabbitmqctl(t *testing.T, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		bin = "/usr/sbin/rabbitmqctl"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		testenv.Unavailable(t, "rabbitmqctl "+strings.Join(args, " "), err)
	}
	return out
}

// rabbitmqctlJSON runs a rabbitmqctl list command with JSON output.
func rabbitmqctlJSON(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	out := rabbitmqctl(t, append(args, "--formatter", "json", "-q")...)
	var rows []map[string]any
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("rabbitmqctl %s: %v in %q", strings.Join(args, " "), err, out)
	}
	return rows
}

// queueCounts returns a queue's ready and unacknowledged message counts as
// the broker reports them.
func queueCounts(t *testing.T, vhost, queue string) (ready, unacked int) {
	t.Helper()
	for _, row := range rabbitmqctlJSON(t, "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged") {
		if row["name"] == queue {
			return int(row["messages_ready"].(float64)), int(row["messages_unacknowledged"].(float64))
		}
	}
	t.Fatalf("queue %q not listed in vhost %q", queue, vhost)
	return 0, 0
}

// testVhost creates a vhost of the test's own (the URL's user gets full
// permissions on it), deleted after the test, and returns its URL and name.
func testVhost(t *testing.T) (vhostURL, vhost string) {
	t.Helper()
	base := amqpURL(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", testenv.EnvAMQP, err)
	}
	user := "guest"
	if u.User != nil && u.User.Username() != "" {
		user = u.User.Username()
	}
	vhost = testenv.Name("gocqrs_vh")
	rabbitmqctl(t, "add_vhost", vhost)
	t.Cleanup(func() { rabbitmqctl(t, "delete_vhost", vhost) })
	rabbitmqctl(t, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
	u.Path = "/" + vhost
	u.RawPath = ""
	return u.String(), vhost
}

// receive waits for the next message of ch.
func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription channel closed")
		}
		return m
	case <-time.After(wait):
		t.Fatal("no message within the timeout")
	}
	return nil
}
