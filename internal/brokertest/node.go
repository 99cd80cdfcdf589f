// Package brokertest gives tests RabbitMQ resources of their own:
//
//   - [Shared] is the test broker named by CQRS_TEST_AMQP. Tests never stop
//     it; they isolate themselves in a vhost of their own ([Node.Vhost]),
//     deleted when the test ends.
//   - [StartPrivate] starts a RabbitMQ node that belongs to one test, on free
//     loopback ports and a temporary directory, so that the test may stop
//     and start it ([Node.StopApp], [Node.StartApp]) without disturbing the
//     tests that use the shared broker at the same time.
//   - [Sniff] binds a queue with "#" to an exchange and records every message
//     published to it, properties included; [Publisher] publishes raw
//     messages as a foreign (django-cqrs) producer does; [Drain],
//     [QueueState] and [Node.QueueCounts] inspect queues.
//
// rabbitmqctl runs on the test's host: the shared broker must be local (or
// its CLI reachable) for vhosts; without it the tests that need one skip, or
// fail under CQRS_REQUIRE_SERVICES=1.
package brokertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

// ctlTimeout bounds one rabbitmqctl call.
const ctlTimeout = 60 * time.Second

// Node is a RabbitMQ node the tests talk to: its AMQP URL and how to run
// rabbitmqctl against it.
type Node struct {
	// URL is the AMQP URL of the node's default vhost, with credentials.
	URL string

	ctl     string   // rabbitmqctl executable
	name    string   // -n argument; "" for the CLI's default node
	env     []string // nil: the test process's environment
	private *private // set for nodes started by StartPrivate
}

// Shared returns the shared test broker (CQRS_TEST_AMQP), or skips (fails
// under CQRS_REQUIRE_SERVICES=1) when it is not configured. Never stop it:
// other tests use it concurrently.
func Shared(t testing.TB) *Node {
	t.Helper()
	u := testenv.Need(t, testenv.EnvAMQP, "RabbitMQ")
	ctl, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		ctl = "/usr/sbin/rabbitmqctl"
	}
	return &Node{URL: u, ctl: ctl}
}

// Ctl runs rabbitmqctl against n with args and returns its standard output.
// It skips (fails under CQRS_REQUIRE_SERVICES=1) when rabbitmqctl cannot be
// run at all, and fails the test when the command fails.
func (n *Node) Ctl(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := n.run(args...)
	if err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			testenv.Unavailable(t, "rabbitmqctl", err)
		}
		t.Fatal(err)
	}
	return out
}

// run runs rabbitmqctl; the error carries the command and its stderr.
func (n *Node) run(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
	defer cancel()
	full := args
	if n.name != "" {
		full = append([]string{"-n", n.name}, args...)
	}
	cmd := exec.CommandContext(ctx, n.ctl, full...)
	cmd.Env = n.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("brokertest: rabbitmqctl %s: %w: %s", strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Vhost creates a vhost of the test's own on n, gives the URL's user every
// permission on it, deletes it when the test ends (with its exchanges and
// queues) and returns its AMQP URL and name.
func (n *Node) Vhost(t testing.TB) (vhostURL, vhost string) {
	t.Helper()
	u, err := url.Parse(n.URL)
	if err != nil {
		t.Fatalf("brokertest: %s is not a URL: %v", testenv.Redact(n.URL), err)
	}
	user := "guest"
	if u.User != nil && u.User.Username() != "" {
		user = u.User.Username()
	}
	vhost = testenv.Name("gocqrs_vh")
	n.Ctl(t, "add_vhost", vhost)
	t.Cleanup(func() {
		if _, err := n.run("delete_vhost", vhost); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	n.Ctl(t, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
	u.Path = "/" + vhost
	u.RawPath = ""
	return u.String(), vhost
}

// QueueCounts returns the ready and unacknowledged messages and the
// consumers of queue in vhost, as the broker reports them.
func (n *Node) QueueCounts(t testing.TB, vhost, queue string) (ready, unacked, consumers int) {
	t.Helper()
	out := n.Ctl(t, "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged", "consumers",
		"--formatter", "json", "-q")
	var rows []struct {
		Name      string `json:"name"`
		Ready     int    `json:"messages_ready"`
		Unacked   int    `json:"messages_unacknowledged"`
		Consumers int    `json:"consumers"`
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("brokertest: list_queues in vhost %q: %v in %q", vhost, err, out)
	}
	for _, r := range rows {
		if r.Name == queue {
			return r.Ready, r.Unacked, r.Consumers
		}
	}
	t.Fatalf("brokertest: queue %q not found in vhost %q", queue, vhost)
	return 0, 0, 0
}
