package transports_test

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"amqp://guest:s3cret@127.0.0.1:5672/", "amqp://guest:xxxxx@127.0.0.1:5672/"},
		{"amqps://u:s3cret@broker/myvhost", "amqps://u:xxxxx@broker/myvhost"},
		{"amqp://127.0.0.1:5672/", "amqp://127.0.0.1:5672/"},
		{"amqp://onlyuser@host/", "amqp://onlyuser@host/"},
		{"amqp://u:s3cret@host:notaport/", "amqp://xxxxx@host:notaport/"}, // does not parse
		{"amqp://u:12/s3cret@host/", "amqp://xxxxx@host/"},                // '/' in the password
		{"amqp://u:1#s3cret@host/", "amqp://xxxxx@host/"},                 // '#' in the password
		{"u:s3cret@host", "xxxxx@host"},
	} {
		if got := transports.RedactURL(c.in); got != c.want {
			t.Errorf("RedactURL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Bad URLs, unreachable brokers and refused credentials give errors that
// name the problem without the password.
func TestRabbitMQErrorsHideCredentials(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-Pa55"
	base := amqpURL(t)
	wrongPassword, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	user := "guest"
	if wrongPassword.User != nil {
		user = wrongPassword.User.Username()
	}
	wrongPassword.User = url.UserPassword(user, secret)

	for _, c := range []struct {
		url, mention string
	}{
		{wrongPassword.String(), "403"},                         // the broker refuses the login
		{"amqp://u:" + secret + "@127.0.0.1:1/", "127.0.0.1:1"}, // nothing listens
		{"amqp://u:" + secret + "@127.0.0.1:notaport/", "url"},
		{"amqp://u:" + secret + "@host with space/", "url"},
		{"http://u:" + secret + "@127.0.0.1/", "url"},
		{"amqp://u:" + secret + "@127.0.0.1/?certfile=/x.pem", "tls block"},
	} {
		var logs testenv.SyncBuffer
		logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		r, err := transports.NewRabbitMQ(context.Background(), transports.Config{URL: c.url}, logger)
		if err == nil {
			_ = r.Close()
			t.Errorf("NewRabbitMQ(%s) succeeded", transports.RedactURL(c.url))
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
			t.Errorf("the password leaked: err %q, logs %q", err, logs.String())
		}
		if !strings.Contains(err.Error(), c.mention) {
			t.Errorf("error %q does not mention %q", err, c.mention)
		}
	}
}

// A working transport logs and reports its URL without the password.
func TestRabbitMQLogsHideCredentials(t *testing.T) {
	t.Parallel()
	base := amqpURL(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	pw, hasPW := u.User.Password()
	if !hasPW || pw == "" {
		t.Skipf("%s has no password to hide", transports.RedactURL(base))
	}
	var logs testenv.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newScratch(t)
	r, err := transports.NewRabbitMQ(context.Background(), transports.Config{URL: base, Exchange: s.exchange}, logger)
	if err != nil {
		t.Fatal(err)
	}
	q := s.replica(t, r)
	if err := r.Publish("author", msg("x")); err != nil {
		t.Fatal(err)
	}
	ch, cancel := subscribe(t, r, q)
	receive(t, ch).Ack()
	cancel()
	drain(t, ch)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	leak := ":" + pw + "@"
	if strings.Contains(r.URL(), leak) || !strings.Contains(r.URL(), "xxxxx") {
		t.Errorf("URL() = %q", r.URL())
	}
	if out := logs.String(); strings.Contains(out, leak) || !strings.Contains(out, "xxxxx") {
		t.Errorf("logs leak the password or lack the redacted URL:\n%s", out)
	}
}

func TestRabbitMQConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		cfg     transports.Config
		mention string
	}{
		{"no url", transports.Config{}, "url"},
		{"tls on amqp://", transports.Config{URL: "amqp://127.0.0.1:1/", TLS: transports.RabbitMQTLSConfig{ServerName: "x"}}, "tls"},
		{"missing ca file", transports.Config{URL: "amqps://127.0.0.1:1/", TLS: transports.RabbitMQTLSConfig{CAFile: filepath.Join(dir, "none.pem")}}, "tls.ca_file"},
		{"garbage ca file", transports.Config{URL: "amqps://127.0.0.1:1/", TLS: transports.RabbitMQTLSConfig{CAFile: garbage}}, "tls.ca_file"},
		{"cert without key", transports.Config{URL: "amqps://127.0.0.1:1/", TLS: transports.RabbitMQTLSConfig{CertFile: garbage}}, "tls.key_file"},
		{"bad key pair", transports.Config{URL: "amqps://127.0.0.1:1/", TLS: transports.RabbitMQTLSConfig{CertFile: garbage, KeyFile: garbage}}, "tls.cert_file"},
		{"negative prefetch", transports.Config{URL: "amqp://127.0.0.1:1/", Prefetch: -1}, "prefetch"},
		{"huge prefetch", transports.Config{URL: "amqp://127.0.0.1:1/", Prefetch: 70000}, "prefetch"},
		{"reserved exchange", transports.Config{URL: "amqp://127.0.0.1:1/", Exchange: "amq.topic"}, "exchange"},
	} {
		_, err := transports.NewRabbitMQ(context.Background(), c.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: err = %v, want one naming %q", c.name, err, c.mention)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := transports.NewRabbitMQ(ctx, transports.Config{URL: "amqp://127.0.0.1:5672/"}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err = %v, want context.Canceled", err)
	}
	// An amqps:// URL with a valid tls block gets as far as dialling.
	_, err := transports.NewRabbitMQ(context.Background(), transports.Config{URL: "amqps://127.0.0.1:1/",
		TLS: transports.RabbitMQTLSConfig{ServerName: "broker", InsecureSkipVerify: true}}, nil)
	if err == nil || !strings.Contains(err.Error(), "connect to amqps://127.0.0.1:1/") {
		t.Errorf("amqps with a valid tls block: err = %v, want a connection error", err)
	}
}

func TestNewRabbitMQThroughFactory(t *testing.T) {
	t.Parallel()
	tr, err := transports.New(context.Background(), transports.Config{Transport: "rabbitmq", URL: amqpURL(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	r, ok := tr.(*transports.RabbitMQ)
	if !ok || tr.Name() != "rabbitmq" || r.Exchange() != transports.DefaultExchange {
		t.Fatalf("New built %T named %q", tr, tr.Name())
	}
	// The Publisher and Subscriber views do not close the transport.
	if err := tr.Publisher().Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Subscriber().Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReplicaSubscriptions("q", "dead_letter_q", nil); err == nil || errors.Is(err, transports.ErrRabbitMQClosed) {
		t.Fatalf("ReplicaSubscriptions without cqrs_ids: err = %v, want a validation error", err)
	}
	if got := (transports.Config{}).WithDefaults().Prefetch; got != 1001 || transports.DefaultPrefetch != 1001 {
		t.Fatalf("default prefetch %d, want 1001", got)
	}
}
