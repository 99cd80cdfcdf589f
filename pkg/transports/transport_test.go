package transports_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/pkg/transports"
)

func TestRoutingKeys(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ got, want string }{
		{transports.BroadcastKey("author"), "author"},
		{transports.DirectKey("fixture_replica", "author"), "cqrs.fixture_replica.author"},
		{transports.DeadLetterKey("dead_letter_fixture_replica", "author"), "cqrs.dead_letter_fixture_replica.author"},
		{transports.DefaultDeadLetterQueue("fixture_replica"), "dead_letter_fixture_replica"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestNewMemory(t *testing.T) {
	t.Parallel()
	tr, err := transports.New(context.Background(), transports.Config{Transport: "memory"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.Name() != "memory" {
		t.Fatalf("Name() = %q", tr.Name())
	}
	if _, ok := tr.(*transports.Memory); !ok {
		t.Fatalf("memory transport is %T, want *transports.Memory", tr)
	}
	if _, err := transports.New(context.Background(), transports.Config{Transport: "memory", Memory: transports.MemoryConfig{MaxPending: -1}}, nil); err == nil || !strings.Contains(err.Error(), "memory.max_pending") {
		t.Fatalf("negative max_pending: err = %v, want one naming memory.max_pending", err)
	}
}

func TestNewNotBuiltAndUnknown(t *testing.T) {
	t.Parallel()
	// Every named transport is built now: without a URL they fail on their
	// configuration, not with ErrNotBuilt.
	for _, name := range []string{"rabbitmq", "kafka"} {
		_, err := transports.New(context.Background(), transports.Config{Transport: name}, nil)
		if err == nil || errors.Is(err, transports.ErrNotBuilt) || !strings.Contains(err.Error(), "url") {
			t.Errorf("New(%q) without a URL: err = %v, want a configuration error naming url", name, err)
		}
	}
	for _, name := range []string{"", "nats"} {
		_, err := transports.New(context.Background(), transports.Config{Transport: name}, nil)
		if err == nil || !strings.Contains(err.Error(), "memory") || !strings.Contains(err.Error(), `"`+name+`"`) {
			t.Errorf("New(%q): err = %v, want an error naming it and listing memory", name, err)
		}
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	var got transports.Config
	transports.Register("test-register", func(ctx context.Context, cfg transports.Config, logger *slog.Logger) (transports.Transport, error) {
		got = cfg
		return transports.NewMemory(cfg.Memory, logger)
	})
	tr, err := transports.New(context.Background(), transports.Config{Transport: "test-register", URL: "x://y"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if got.URL != "x://y" || got.Exchange != transports.DefaultExchange || got.Memory.MaxPending != transports.DefaultMaxPending {
		t.Fatalf("constructor got %+v, want the URL and defaults applied", got)
	}
	found := false
	for _, n := range transports.Names() {
		found = found || n == "test-register"
	}
	if !found {
		t.Fatalf("Names() = %q lacks the registered transport", transports.Names())
	}
}
