package brokertest

import (
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

// private is the state of a node started by StartPrivate.
type private struct {
	dir     string
	pidFile string
}

// serverDirs are where the RabbitMQ scripts live that run as the calling
// user (Debian's /usr/sbin wrappers switch to the rabbitmq user, which
// would lose the private node's environment).
var serverDirs = []string{"/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin"}

// serverScripts finds rabbitmq-server and rabbitmqctl.
func serverScripts() (server, ctl string, err error) {
	for _, d := range serverDirs {
		s, c := filepath.Join(d, "rabbitmq-server"), filepath.Join(d, "rabbitmqctl")
		if isFile(s) && isFile(c) {
			return s, c, nil
		}
	}
	s, err := exec.LookPath("rabbitmq-server")
	if err != nil {
		return "", "", err
	}
	c, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		return "", "", err
	}
	return s, c, nil
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// StartPrivate starts a RabbitMQ node that belongs to the calling test: its
// own node name, AMQP and distribution ports on 127.0.0.1, Erlang cookie,
// configuration, database and logs in a temporary directory. The node runs
// as the test's user from the local RabbitMQ installation; it is stopped
// (killed if need be) when the test ends, before its directory is removed.
// The test may stop and start its RabbitMQ application freely.
//
// It skips (fails under CQRS_REQUIRE_SERVICES=1) when CQRS_TEST_AMQP is not
// set, as every RabbitMQ test does, or when RabbitMQ is not installed
// locally. Starting a node takes a few seconds.
func StartPrivate(t testing.TB) *Node {
	t.Helper()
	testenv.Need(t, testenv.EnvAMQP, "RabbitMQ")
	server, ctl, err := serverScripts()
	if err != nil {
		testenv.Unavailable(t, "a local RabbitMQ installation (rabbitmq-server)", err)
	}
	dir := t.TempDir()
	amqpPort := freePort(t)
	distPort := freePort(t)
	for distPort == amqpPort {
		distPort = freePort(t)
	}
	name := testenv.Name("gocqrs") + "@localhost"
	p := &private{dir: dir, pidFile: filepath.Join(dir, "rabbitmq.pid")}
	var cookie [20]byte
	_, _ = crand.Read(cookie[:])
	files := map[string]string{
		".erlang.cookie":    hex.EncodeToString(cookie[:]),
		"rabbitmq-env.conf": "",
		"enabled_plugins":   "[].\n",
		"rabbitmq.conf": fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nlog.file.level = warning\nlog.console = false\n",
			amqpPort),
	}
	for f, content := range files {
		mode := os.FileMode(0o600)
		if f == ".erlang.cookie" {
			mode = 0o400
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), mode); err != nil {
			t.Fatalf("brokertest: private node: %v", err)
		}
	}
	n := &Node{
		URL:     fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", amqpPort),
		ctl:     ctl,
		name:    name,
		env:     privateEnv(dir, name, distPort, p.pidFile),
		private: p,
	}

	cmd := exec.Command(server, "-detached")
	cmd.Env = n.env
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("brokertest: start private RabbitMQ node %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { n.shutdown(t) })
	if _, err := n.run("wait", "--timeout", "60", p.pidFile); err != nil {
		t.Fatalf("brokertest: private RabbitMQ node %s did not start: %v\n%s", name, err, n.logTail())
	}
	conn, err := amqp.Dial(n.URL)
	if err != nil {
		t.Fatalf("brokertest: private RabbitMQ node %s started but its AMQP port does not answer: %v\n%s", name, err, n.logTail())
	}
	_ = conn.Close()
	t.Logf("brokertest: private RabbitMQ node %s on 127.0.0.1:%d", name, amqpPort)
	return n
}

// privateEnv is the test process's environment without RabbitMQ and Erlang
// settings, plus the private node's.
func privateEnv(dir, name string, distPort int, pidFile string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "RABBITMQ_") || strings.HasPrefix(k, "ERL_") || k == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+dir, // the Erlang cookie of the node and of its CLI
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(dir, "rabbitmq-env.conf"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_PID_FILE="+pidFile,
		"RABBITMQ_NODENAME="+name,
		"RABBITMQ_DIST_PORT="+strconv.Itoa(distPort),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"ERL_FLAGS=-kernel inet_dist_use_interface {127,0,0,1}",
	)
}

// freePort returns a TCP port free on 127.0.0.1 below the kernel's
// ephemeral range: a port in that range may be taken by an outgoing
// connection (the node's own) before the node listens on it.
func freePort(t testing.TB) int {
	t.Helper()
	lo, hi := 20000, 32000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if eph, err := strconv.Atoi(f[0]); err == nil && eph > lo+1000 {
				hi = eph
			}
		}
	}
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		_ = l.Close()
		return p
	}
	t.Fatalf("brokertest: no free port in %d..%d on 127.0.0.1", lo, hi)
	return 0
}

// StopApp stops the RabbitMQ application of a private node (the Erlang node
// keeps running): every connection is closed and the AMQP port refuses
// connections until StartApp. It refuses to stop the shared broker.
func (n *Node) StopApp(t testing.TB) {
	t.Helper()
	if n.private == nil {
		t.Fatal("brokertest: StopApp on the shared broker: other tests use it; use StartPrivate")
	}
	n.Ctl(t, "stop_app")
}

// StartApp starts the RabbitMQ application of a private node again and
// waits until it accepts AMQP connections. start_app is retried while it
// fails (the listener port may not be released at once).
func (n *Node) StartApp(t testing.TB) {
	t.Helper()
	if n.private == nil {
		t.Fatal("brokertest: StartApp on the shared broker")
	}
	var last error
	testenv.WaitFor(t, ctlTimeout, "the private RabbitMQ node's start_app", func() bool {
		_, last = n.run("start_app")
		return last == nil
	})
	testenv.WaitFor(t, ctlTimeout, "the private RabbitMQ node's AMQP port", func() bool {
		conn, err := amqp.Dial(n.URL)
		if err != nil {
			last = err
			return false
		}
		_ = conn.Close()
		return true
	})
}

// shutdown stops a private node and waits until its process is gone,
// killing it when rabbitmqctl cannot stop it.
func (n *Node) shutdown(t testing.TB) {
	_, err := n.run("stop", n.private.pidFile)
	if err == nil {
		return
	}
	t.Logf("brokertest: stop private node %s: %v; killing it", n.name, err)
	b, err := os.ReadFile(n.private.pidFile)
	if err != nil {
		return // it never wrote its pid: it did not start
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Errorf("brokertest: private node %s: bad pid file %q", n.name, b)
		return
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Errorf("brokertest: kill private node %s (pid %d): %v", n.name, pid, err)
		return
	}
	testenv.WaitFor(t, 10*time.Second, fmt.Sprintf("private node %s (pid %d) to exit after SIGKILL", n.name, pid), func() bool {
		return syscall.Kill(pid, 0) != nil
	})
}

// logTail returns the end of a private node's log, for failure messages.
func (n *Node) logTail() string {
	matches, _ := filepath.Glob(filepath.Join(n.private.dir, "log", "*.log"))
	var b strings.Builder
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Fprintf(&b, "--- %s ---\n%s\n", m, data)
	}
	return b.String()
}
