package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
)

// The binary tests build cmd/cqrs and cmd/cqrs-consume once per test run
// and run them as an operator does: configuration files copied from
// examples/config, overridden by CQRS_* variables, streams piped from one
// process to the next, exit codes and stderr checked.

// bins holds the binaries built for this test run.
var bins struct {
	once sync.Once
	dir  string
	err  error
}

// TestMain removes the binaries built for the run.
func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		_ = os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// binTimeout bounds one run of a command that is expected to finish.
const binTimeout = 60 * time.Second

// binary returns the path of a built binary ("cqrs" or "cqrs-consume").
// They are built with -race when the tests are, which reuses the packages
// `go test -race` just compiled and checks the binaries for races too.
func binary(t *testing.T, name string) string {
	t.Helper()
	bins.once.Do(func() { bins.dir, bins.err = buildBinaries() })
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return filepath.Join(bins.dir, name)
}

func buildBinaries() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build the binaries: the go command is not on PATH: %w", err)
	}
	dir, err := os.MkdirTemp("", "gocqrs-binaries-")
	if err != nil {
		return "", fmt.Errorf("build the binaries: %w", err)
	}
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	if raceEnabled() {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/cqrs", "./cmd/cqrs-consume")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return dir, nil
}

// moduleRoot is the directory holding go.mod, above the test's directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// binResult is how a finished command ended.
type binResult struct {
	code           int
	stdout, stderr string
}

func (r binResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// binSide is one service as an operator sets it up: a configuration file
// copied from examples/config and the CQRS_* variables that point it at
// this test's database and broker.
type binSide struct {
	t   *testing.T
	db  *testenv.DB
	cfg string
	env map[string]string // CQRS_* overrides
}

// newBinSide copies examples/config/<example> (optionally rewritten by edit)
// to a temporary directory and points the database at db through
// CQRS_DATABASE_DRIVER and CQRS_DATABASE_DSN (a plain file path for
// SQLite, a URL with a password for PostgreSQL, which trusts it without
// asking: the password must never show up in the output).
func newBinSide(t *testing.T, db *testenv.DB, example string, edit func(string) string) *binSide {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "examples", "config", example))
	if err != nil {
		t.Fatal(err)
	}
	body := string(b)
	if edit != nil {
		body = edit(body)
	}
	cfg := filepath.Join(t.TempDir(), example)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &binSide{t: t, db: db, cfg: cfg, env: map[string]string{
		"CQRS_DATABASE_DRIVER": string(db.Dialect.Name()),
		"CQRS_DATABASE_DSN":    operatorDSN(t, db),
	}}
	return s
}

// dbPassword is the password put into PostgreSQL DSNs (the test server
// trusts loopback connections and never asks for it).
const dbPassword = "pg-Secret-7f3a9c"

// operatorDSN is the DSN an operator would configure for db.
func operatorDSN(t *testing.T, db *testenv.DB) string {
	t.Helper()
	switch db.Dialect.Name() {
	case dialect.SQLite:
		return strings.TrimPrefix(strings.SplitN(db.DSN, "?", 2)[0], "file:")
	case dialect.Postgres:
		u, err := url.Parse(db.DSN)
		if err != nil {
			t.Fatal(err)
		}
		user := "postgres"
		if u.User != nil && u.User.Username() != "" {
			user = u.User.Username()
		}
		u.User = url.UserPassword(user, dbPassword)
		return u.String()
	}
	return db.DSN
}

// environ is the process environment for a command: the test's own
// without any CQRS_* variable, plus the side's overrides.
func (s *binSide) environ() []string {
	var env []string
	gorace := "atexit_sleep_ms=0" // a race-enabled binary would wait 1 s at every exit
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, "CQRS_"):
		case strings.HasPrefix(kv, "GORACE="):
			gorace = strings.TrimPrefix(kv, "GORACE=") + " " + gorace
		default:
			env = append(env, kv)
		}
	}
	env = append(env, "GORACE="+gorace)
	for k, v := range s.env {
		env = append(env, k+"="+v)
	}
	return env
}

// command builds `<bin> <args> --config <cfg>`.
func (s *binSide) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binary(s.t, bin), append(append([]string{}, args...), "--config", s.cfg)...)
	cmd.Env = s.environ()
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// cqrs runs `cqrs <args> --config <cfg>` with stdin and waits for it.
func (s *binSide) cqrs(stdin string, args ...string) binResult {
	s.t.Helper()
	return s.run("cqrs", stdin, args...)
}

// run runs `<bin> <args> --config <cfg>` with stdin and waits for it.
func (s *binSide) run(bin, stdin string, args ...string) binResult {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), binTimeout)
	defer cancel()
	cmd := s.command(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		s.t.Fatalf("%s %s: still running after %s; stderr:\n%s", bin, strings.Join(args, " "), binTimeout, errb.String())
	}
	return binResult{code: exitCodeOf(s.t, cmd, err), stdout: out.String(), stderr: errb.String()}
}

// mustCqrs runs a cqrs command that must exit 0.
func (s *binSide) mustCqrs(stdin string, args ...string) binResult {
	s.t.Helper()
	r := s.cqrs(stdin, args...)
	if r.code != 0 {
		s.t.Fatalf("cqrs %s: %s", strings.Join(args, " "), r)
	}
	return r
}

func exitCodeOf(t *testing.T, cmd *exec.Cmd, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	return cmd.ProcessState.ExitCode()
}

// binStage is one command of a shell pipeline.
type binStage struct {
	side *binSide
	args []string // cqrs arguments
}

// runPipe runs the stages as `cqrs a | cqrs b | cqrs c` does: each stage's
// stdout is an OS pipe to the next one's stdin (and is recorded); all
// stages run at once. It returns every stage's result.
func runPipe(t *testing.T, stages ...binStage) []binResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), binTimeout)
	defer cancel()
	n := len(stages)
	cmds := make([]*exec.Cmd, n)
	outs := make([]*bytes.Buffer, n)
	errs := make([]*bytes.Buffer, n)
	for i, st := range stages {
		cmds[i] = st.side.command(ctx, "cqrs", st.args...)
		outs[i], errs[i] = &bytes.Buffer{}, &bytes.Buffer{}
		cmds[i].Stdout, cmds[i].Stderr = outs[i], errs[i]
	}
	cmds[0].Stdin = strings.NewReader("")
	writers := make([]*os.File, n) // the write end of the pipe after stage i
	readers := make([]*os.File, n) // the read end before stage i
	for i := 0; i < n-1; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		writers[i], readers[i+1] = w, r
		cmds[i].Stdout = io.MultiWriter(w, outs[i])
		cmds[i+1].Stdin = r
	}
	for i, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatalf("start %s: %v", strings.Join(c.Args, " "), err)
		}
		if readers[i] != nil {
			readers[i].Close() // the child has its copy
		}
	}
	res := make([]binResult, n)
	for i, c := range cmds {
		err := c.Wait()
		if ctx.Err() != nil {
			t.Fatalf("%s: still running after %s; stderr:\n%s", strings.Join(c.Args, " "), binTimeout, errs[i])
		}
		if writers[i] != nil {
			writers[i].Close() // EOF for the next stage
		}
		res[i] = binResult{code: exitCodeOf(t, c, err), stdout: outs[i].String(), stderr: errs[i].String()}
	}
	return res
}

// binProc is a long-running command (relay, cqrs-consume).
type binProc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stderr *logBuffer
	done   chan struct{}
	code   int
}

// start starts `<bin> <args> --config <cfg>`; a process still running when
// the test ends is killed.
func (s *binSide) start(bin string, args ...string) *binProc {
	s.t.Helper()
	cmd := s.command(context.Background(), bin, args...)
	p := &binProc{t: s.t, name: bin + " " + strings.Join(args, " "), cmd: cmd, stderr: &logBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.stderr // nothing is expected there; keep it with the logs
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		_ = cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	s.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop sends sig and waits up to timeout for the exit code.
func (p *binProc) stop(sig syscall.Signal, timeout time.Duration) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s: %v\n%s", p.name, err, p.stderr)
	}
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s of %s; stderr:\n%s", p.name, timeout, sig, p.stderr)
	}
	return -1
}

// exited reports whether the process has ended.
func (p *binProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// rabbitVhost gives the test a RabbitMQ vhost and a user of its own with a
// password that must never appear in the commands' output; both are
// deleted when the test ends. It returns the vhost's AMQP URL.
func rabbitVhost(t *testing.T) (vhostURL, password string) {
	t.Helper()
	base := testenv.Need(t, testenv.EnvAMQP, "RabbitMQ")
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", testenv.EnvAMQP, err)
	}
	vhost, user := testenv.Name("gocqrs_bin_vh"), testenv.Name("gocqrs_bin_user")
	password = testenv.Name("Amqp-Secret")
	rabbitCtl(t, "add_vhost", vhost)
	t.Cleanup(func() { rabbitCtl(t, "delete_vhost", vhost) })
	rabbitCtl(t, "add_user", user, password)
	t.Cleanup(func() { rabbitCtl(t, "delete_user", user) })
	rabbitCtl(t, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
	u.User = url.UserPassword(user, password)
	u.Path, u.RawPath = "/"+vhost, ""
	return u.String(), password
}

// rabbitCtl runs rabbitmqctl on the broker's host.
func rabbitCtl(t *testing.T, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		bin = "/usr/sbin/rabbitmqctl"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			testenv.Unavailable(t, "rabbitmqctl", err)
		}
		t.Errorf("rabbitmqctl %s: %v: %s", args[0], err, out)
	}
}

// queueState returns the ready messages and the consumers of a queue, or
// ok false when the queue does not exist (yet).
func queueState(t *testing.T, vhostURL, queue string) (messages, consumers int, ok bool) {
	t.Helper()
	conn, err := amqp.Dial(vhostURL)
	if err != nil {
		t.Fatalf("dial RabbitMQ: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open a channel: %v", err)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, 0, false // 404: the channel is closed with it
	}
	_ = ch.Close()
	return q.Messages, q.Consumers, true
}

// waitConsumers waits until queue has n consumers.
func waitConsumers(t *testing.T, vhostURL, queue string, n int, p *binProc) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("%d consumers on queue %s", n, queue), func() bool {
		if p.exited() {
			t.Fatalf("%s exited with %d:\n%s", p.name, p.code, p.stderr)
		}
		_, c, ok := queueState(t, vhostURL, queue)
		return ok && c == n
	})
}

// wireReader reads a table's rows in the wire format.
func wireReader(t *testing.T, db *testenv.DB, table string) *master.Master {
	t.Helper()
	reg := registry.New()
	if err := reg.RegisterMaster(registry.MasterModel{CQRSID: table, Table: table}); err != nil {
		t.Fatal(err)
	}
	m, err := master.New(context.Background(), db.DB, reg, master.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// replicaDiff compares the master's author table with the replica's
// author_ref row by row in the wire format, revision and cqrs_updated
// included (pipeline.diff); "" means equal.
func replicaDiff(t *testing.T, mdb, rdb *testenv.DB) string {
	t.Helper()
	p := &pipeline{t: t, mdb: mdb, rdb: rdb, master: wireReader(t, mdb, "author"), reader: wireReader(t, rdb, "author_ref")}
	return p.diff()
}

// situation is ../shared/wire-fixtures/dumps/situation.json.
type situation struct {
	ReplicaAfterSituation []map[string]*string `json:"replica_rows_after_situation"`
	ReplicaAfterRepair    []map[string]*string `json:"replica_rows_after_diff_sync_and_deleted_sync"`
	ReplicaAfterBulkLoad  []map[string]*string `json:"replica_rows_after_bulk_load"`
}

func loadSituation(t *testing.T) situation {
	t.Helper()
	var s situation
	if err := json.Unmarshal([]byte(dumpFixture(t, "situation.json")), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.ReplicaAfterBulkLoad) == 0 || len(s.ReplicaAfterRepair) == 0 {
		t.Fatal("situation.json: replica rows missing")
	}
	return s
}

// pgTextRows reads a PostgreSQL author table as psql would print it in UTC,
// the form situation.json records the fixture replica's rows in: the
// columns of replica_schema.json's author_ref, as fixtures.ReadTable reads
// them.
func pgTextRows(t *testing.T, db *testenv.DB, table string) []map[string]*string {
	t.Helper()
	return fixtures.ReadTable(t, db, fixtures.LoadSchema(t)["author_ref"], table)
}

// showTextRows prints text rows for failure messages.
func showTextRows(rows []map[string]*string) string {
	var b strings.Builder
	for _, r := range rows {
		plain := map[string]any{}
		for k, v := range r {
			if v == nil {
				plain[k] = nil
			} else {
				plain[k] = *v
			}
		}
		j, _ := json.Marshal(plain)
		b.WriteString("\n  ")
		b.Write(j)
	}
	return b.String()
}

// noSecrets fails the test if any output holds one of the secrets.
func noSecrets(t *testing.T, what, output string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(output, s) {
			t.Errorf("%s: the output shows a credential (%q):\n%s", what, s, output)
		}
	}
	if strings.Contains(output, "DATA RACE") {
		t.Errorf("%s: the race detector reported a race:\n%s", what, output)
	}
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// noErrors fails the test if a process logged at level ERROR.
func noErrors(t *testing.T, what, logs string) {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "level=ERROR") {
			t.Errorf("%s logged an error: %s", what, line)
		}
	}
}
