package cli

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs"
)

// gate listens on a free port and, until opened, drops every connection at
// once (a broker that is down); once opened it forwards to target (the real
// broker).
type gate struct {
	ln     net.Listener
	target string
	open   atomic.Bool
}

func newGate(t *testing.T, target string) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go g.serve()
	return g
}

func (g *gate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		if !g.open.Load() {
			c.Close()
			continue
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", g.target)
			if err != nil {
				return
			}
			defer up.Close()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			_, _ = io.Copy(c, up)
		}()
	}
}

// amqpBehind returns the broker URL of CQRS_TEST_AMQP with its host
// replaced by addr.
func amqpBehind(t *testing.T, addr string) (brokerURL, host string) {
	t.Helper()
	raw := testenv.Need(t, testenv.EnvAMQP, "RabbitMQ")
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	host = u.Host
	if !strings.Contains(host, ":") {
		host += ":5672"
	}
	u.Host = addr
	return u.String(), host
}

// TestConnectTransportWaitsForTheBroker: with the broker unreachable at
// start, the relay and the consumer keep trying (logging each failure) and
// connect once it answers.
func TestConnectTransportWaitsForTheBroker(t *testing.T) {
	t.Parallel()
	g := newGate(t, "")
	u, host := amqpBehind(t, g.ln.Addr().String())
	g.target = host
	logs := &testenv.SyncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	cfg := &cqrs.Config{Transport: "rabbitmq", URL: u, Exchange: testenv.Name("connect_x")}
	type result struct {
		tr  cqrs.Transport
		err error
	}
	done := make(chan result, 1)
	go func() {
		tr, err := connectTransport(context.Background(), cfg, logger)
		done <- result{tr, err}
	}()
	testenv.WaitFor(t, 30*time.Second, "two failed attempts logged", func() bool {
		return strings.Count(logs.String(), "broker unreachable; retrying") >= 2
	})
	select {
	case r := <-done:
		t.Fatalf("connectTransport returned while the broker was unreachable: %v", r.err)
	default:
	}
	g.open.Store(true)
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("connectTransport did not connect after the broker came up")
	}
	if r.err != nil {
		t.Fatalf("connectTransport: %v", r.err)
	}
	defer r.tr.Close()
	if !strings.Contains(logs.String(), "broker reached") {
		t.Errorf("no \"broker reached\" line in the log:\n%s", logs.String())
	}
}

// TestConnectTransportStopsOnCancel: a SIGTERM while waiting ends the wait
// with context.Canceled (a clean exit).
func TestConnectTransportStopsOnCancel(t *testing.T) {
	t.Parallel()
	g := newGate(t, "")
	u, _ := amqpBehind(t, g.ln.Addr().String())
	logs := &testenv.SyncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := connectTransport(ctx, &cqrs.Config{Transport: "rabbitmq", URL: u}, logger)
		done <- err
	}()
	testenv.WaitFor(t, 30*time.Second, "a failed attempt logged", func() bool {
		return strings.Contains(logs.String(), "broker unreachable; retrying")
	})
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("connectTransport did not return after cancel")
	}
}

// TestConnectTransportRefusedCredentials: refused credentials are a
// configuration error: no retry.
func TestConnectTransportRefusedCredentials(t *testing.T) {
	t.Parallel()
	raw := testenv.Need(t, testenv.EnvAMQP, "RabbitMQ")
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("gocqrs_no_such_user", "wrong")
	logs := &testenv.SyncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = connectTransport(ctx, &cqrs.Config{Transport: "rabbitmq", URL: u.String()}, slog.New(slog.NewTextHandler(logs, nil)))
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the broker's refusal at once", err)
	}
	if strings.Contains(logs.String(), "retrying") {
		t.Errorf("retried refused credentials:\n%s", logs.String())
	}
	if !strings.Contains(err.Error(), "username or password not allowed") && !strings.Contains(err.Error(), "ACCESS_REFUSED") && !strings.Contains(err.Error(), "403") {
		t.Errorf("err = %v, want it to say the credentials were refused", err)
	}
}
