package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// freeAddr returns a loopback address no one listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func httpGetBody(url string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// startCmd runs `cqrs args` (or, with consume, `cqrs-consume args`) with
// s's config until the test's cleanup or the returned stop, which waits for
// the exit and returns it.
func startCmd(t *testing.T, s *side, consume bool, args ...string) (stop func() run) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan run, 1)
	go func() {
		if !consume {
			done <- s.runCtx(ctx, "", args...)
			return
		}
		var out, errb bytes.Buffer
		env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
		code := Consume(ctx, env, append(append([]string{}, args...), "--config", s.cfg))
		done <- run{code, out.String(), errb.String()}
	}()
	var r *run
	stop = func() run {
		cancel()
		if r == nil {
			select {
			case got := <-done:
				r = &got
			case <-time.After(30 * time.Second):
				t.Fatalf("%v did not stop", args)
			}
		}
		return *r
	}
	t.Cleanup(func() { stop() })
	return stop
}

func TestRelayServesMetrics(t *testing.T) {
	db := testenv.SQLite(t)
	s := newMasterSide(t, db)
	tx, err := db.BeginTxx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := outbox.Insert(context.Background(), tx, db.Dialect, []outbox.Message{
		{CQRSID: "author", EntityKey: "author:1", Topic: "author", Body: []byte(`{}`)},
		{CQRSID: "author", EntityKey: "author:2", Topic: "author", Body: []byte(`{}`)},
	}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	stop := startCmd(t, s, false, "relay", "--metrics-address", addr)
	var body string
	testenv.WaitFor(t, 30*time.Second, "relay metrics", func() bool {
		_, body = httpGetBody("http://" + addr + "/metrics")
		return strings.Contains(body, "\ncqrs_relay_published_total 2\n") && strings.Contains(body, "\ncqrs_outbox_depth 0\n")
	})
	for _, series := range []string{"cqrs_relay_confirmed_messages_total 2", "cqrs_relay_publish_duration_seconds_count", "go_goroutines"} {
		if !strings.Contains(body, series) {
			t.Errorf("/metrics lacks %q", series)
		}
	}
	if code, b := httpGetBody("http://" + addr + "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d %q", code, b)
	}
	if r := stop(); r.code != ExitOK {
		t.Fatalf("relay exit %+v", r)
	}
	if code, _ := httpGetBody("http://" + addr + "/healthz"); code != 0 {
		t.Errorf("/healthz answers %d after the relay stopped", code)
	}
}

func TestConsumeServesHealthFromConfig(t *testing.T) {
	db := testenv.SQLite(t)
	addr := freeAddr(t)
	s := newSide(t, db, "author_ref", "transport: memory\nqueue: metrics_replica\nmetrics: {address: '"+addr+"'}\n"+
		"models:\n  - {cqrs_id: author, role: replica, table: author_ref}\n")
	stop := startCmd(t, s, true)
	testenv.WaitFor(t, 30*time.Second, "/healthz of cqrs consume", func() bool {
		code, _ := httpGetBody("http://" + addr + "/healthz")
		return code == http.StatusOK
	})
	if code, b := httpGetBody("http://" + addr + "/readyz"); code != http.StatusOK || !strings.Contains(b, "ready") {
		t.Errorf("/readyz = %d %q", code, b)
	}
	if code, _ := httpGetBody("http://" + addr + "/metrics"); code != http.StatusOK {
		t.Errorf("/metrics = %d", code)
	}
	if r := stop(); r.code != ExitOK {
		t.Fatalf("consume exit %+v", r)
	}
}

func TestMetricsAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := newMasterSide(t, testenv.SQLite(t))
	r := s.run("", "relay", "--metrics-address", ln.Addr().String())
	if r.code == ExitOK || !strings.Contains(r.stderr, ln.Addr().String()) {
		t.Fatalf("relay with a busy metrics address: %+v", r)
	}
}
