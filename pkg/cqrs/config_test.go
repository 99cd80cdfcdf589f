package cqrs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cqrs.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigYAMLAndEnv(t *testing.T) {
	p := writeFile(t, `
transport: memory
queue: replica_a
master:
  message_ttl: null
replica:
  max_retries: 2
  retry_delay: 1
  dead_message_ttl: 10m
models:
  - cqrs_id: author
    role: replica
    table: author_ref
    columns: [id, "name:string"]
    mapping: {title: name}
`)
	t.Setenv("CQRS_QUEUE", "from_env")
	t.Setenv("CQRS_REPLICA_MAX_RETRIES", "5")
	t.Setenv("CQRS_TEST_POSTGRES", "not configuration") // ignored: not a config key
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Queue != "from_env" {
		t.Errorf("queue = %q, want the env override", cfg.Queue)
	}
	if cfg.Replica.MaxRetries == nil || *cfg.Replica.MaxRetries != 5 {
		t.Errorf("max_retries = %v, want 5", cfg.Replica.MaxRetries)
	}
	if got := cfg.Replica.RetryDelay.Or(2 * time.Second); got != time.Second {
		t.Errorf("retry_delay = %s, want 1s (seconds as django-cqrs)", got)
	}
	if got := cfg.Replica.DeadMessageTTL.Or(0); got != 10*time.Minute {
		t.Errorf("dead_message_ttl = %s", got)
	}
	if !cfg.Master.MessageTTL.Set || cfg.Master.MessageTTL.D != 0 {
		t.Errorf("message_ttl null must be explicitly set to never: %+v", cfg.Master.MessageTTL)
	}
	if cfg.Exchange != "cqrs" {
		t.Errorf("exchange default = %q", cfg.Exchange)
	}
	reg := registry.New()
	if err := cfg.Register(reg); err != nil {
		t.Fatal(err)
	}
	m, ok := reg.Replica("author")
	if !ok || m.Table != "author_ref" || len(m.Mapping) != 1 || m.Mapping[0].To != "name" {
		t.Fatalf("replica model from config = %+v", m)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := map[string]struct{ yaml, want string }{
		"unknown key":    {"replica:\n  max_retrys: 3\n", "max_retrys"},
		"bad type":       {"replica:\n  max_retries: lots\n", "max_retries"},
		"bad duration":   {"replica:\n  retry_delay: soon\n", "retry_delay"},
		"bad transport":  {"transport: carrier-pigeon\n", "transport"},
		"negative":       {"replica:\n  max_retries: -1\n", "replica.max_retries"},
		"bad model type": {"models:\n  - {cqrs_id: a, role: replica, table: t, columns: ['x:money']}\n", "models[0]"},
		"bad role":       {"models:\n  - {cqrs_id: a, role: both, table: t}\n", "role"},
		"bad driver":     {"database:\n  driver: oracle\n", "database.driver"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := LoadConfig(writeFile(t, tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
		})
	}
}

func TestConfigEnvBadValue(t *testing.T) {
	t.Setenv("CQRS_REPLICA_MAX_RETRIES", "[")
	_, err := LoadConfig("")
	if err == nil || !strings.Contains(err.Error(), "CQRS_REPLICA_MAX_RETRIES") {
		t.Fatalf("error %v does not name the variable", err)
	}
}
