package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

type run struct {
	code           int
	stdout, stderr string
}

func runCqrs(t *testing.T, getenv map[string]string, args ...string) run {
	t.Helper()
	var out, errb bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return getenv[k] }}
	code := Cqrs(context.Background(), env, args)
	return run{code, out.String(), errb.String()}
}

func runConsumeCmd(t *testing.T, getenv map[string]string, args ...string) run {
	t.Helper()
	var out, errb bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return getenv[k] }}
	code := Consume(context.Background(), env, args)
	return run{code, out.String(), errb.String()}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cqrs.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExitCodes(t *testing.T) {
	if r := runCqrs(t, nil, "version"); r.code != ExitOK || !strings.HasPrefix(r.stdout, "gocqrs ") {
		t.Errorf("version: %+v", r)
	}
	if r := runCqrs(t, nil); r.code != ExitUsage || !strings.Contains(r.stderr, "Commands:") {
		t.Errorf("no command: %+v", r)
	}
	if r := runCqrs(t, nil, "frobnicate"); r.code != ExitUsage || !strings.Contains(r.stderr, `"frobnicate"`) || !strings.Contains(r.stderr, "relay") {
		t.Errorf("unknown command: %+v", r)
	}
	if r := runCqrs(t, nil, "relay", "--bogus"); r.code != ExitUsage || !strings.Contains(r.stderr, "bogus") {
		t.Errorf("unknown flag: %+v", r)
	}
	if r := runCqrs(t, nil, "migrate", "-h"); r.code != ExitOK || !strings.Contains(r.stderr, "-config") {
		t.Errorf("help: %+v", r)
	}
	if r := runConsumeCmd(t, nil, "-w", "0"); r.code != ExitUsage || !strings.Contains(r.stderr, "-w 0") {
		t.Errorf("-w 0: %+v", r)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cfg := writeConfig(t, "queue: q\nreplica:\n  max_retrys: 3\n")
	r := runConsumeCmd(t, nil, "--config", cfg)
	if r.code != ExitFailure || !strings.Contains(r.stderr, "max_retrys") {
		t.Errorf("unknown key: %+v", r)
	}
	r = runConsumeCmd(t, map[string]string{"CQRS_CONFIG": cfg})
	if r.code != ExitFailure || !strings.Contains(r.stderr, "max_retrys") {
		t.Errorf("CQRS_CONFIG not used: %+v", r)
	}
}

func TestConsumeUnknownCQRSIDListsKnown(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, `queue: q
database: {driver: sqlite, dsn: `+filepath.Join(dir, "r.db")+`}
models:
  - {cqrs_id: author, role: replica, table: author_ref}
  - {cqrs_id: book, role: replica, table: book_ref}
`)
	r := runConsumeCmd(t, nil, "--config", cfg, "--cqrs-id", "ghost")
	if r.code != ExitUsage || !strings.Contains(r.stderr, `"ghost"`) || !strings.Contains(r.stderr, "author, book") {
		t.Errorf("unknown id: %+v", r)
	}
}

func TestMigrateCreatesTables(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	cfg := writeConfig(t, "database: {driver: sqlite, dsn: "+path+"}\n")
	for i := 0; i < 2; i++ { // idempotent
		if r := runCqrs(t, nil, "migrate", "--config", cfg); r.code != ExitOK {
			t.Fatalf("migrate #%d: %+v", i+1, r)
		}
	}
	db, err := sqlx.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var names []string
	if err := db.Select(&names, "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'cqrs_%' ORDER BY name"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names, ","); !strings.Contains(got, "cqrs_outbox") || !strings.Contains(got, "cqrs_tombstones") {
		t.Errorf("tables after migrate: %s", got)
	}
}

func TestDatabaseErrorsHidePasswords(t *testing.T) {
	cfg := writeConfig(t, "database: {driver: postgres, dsn: 'postgres://u:s3cr3t-pw@127.0.0.1:1/x?connect_timeout=1'}\n")
	r := runCqrs(t, nil, "migrate", "--config", cfg)
	if r.code != ExitFailure {
		t.Fatalf("want failure: %+v", r)
	}
	if strings.Contains(r.stderr, "s3cr3t-pw") {
		t.Errorf("password in error: %s", r.stderr)
	}
}

func TestPruneTombstones(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	cfg := writeConfig(t, "database: {driver: sqlite, dsn: "+path+"}\n")
	if r := runCqrs(t, nil, "migrate", "--config", cfg); r.code != ExitOK {
		t.Fatalf("migrate: %+v", r)
	}
	db, err := sqlx.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("INSERT INTO cqrs_tombstones (cqrs_id, pk, revision, updated, deleted_at) VALUES ('a', '1', 1, '2020-01-01 00:00:00.000000+00:00', '2020-01-01 00:00:00.000000+00:00'), ('a', '2', 1, '2020-01-01 00:00:00.000000+00:00', ?)", time.Now().UTC().Format("2006-01-02 15:04:05.000000+00:00")); err != nil {
		t.Fatal(err)
	}
	r := runCqrs(t, nil, "prune-tombstones", "--config", cfg, "--older-than", "24h")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, "1 tombstone(s)") {
		t.Fatalf("prune: %+v", r)
	}
	var left []string
	if err := db.Select(&left, "SELECT pk FROM cqrs_tombstones"); err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0] != "2" {
		t.Errorf("tombstones left: %v, want the recent one", left)
	}
	if r := runCqrs(t, nil, "prune-tombstones", "--older-than", "-1h"); r.code != ExitUsage {
		t.Errorf("negative age: %+v", r)
	}
}
