// Package cli is the command-line side of gocqrs: the `cqrs` operator tool
// and the `cqrs-consume` replica consumer. The stock binaries in cmd/ call
// [Cqrs] and [Consume] with an empty registry, so tables declared in the
// configuration file replicate with no Go code; a service that needs hooks
// builds the same binaries with its own registry:
//
//	func main() {
//		reg := cqrs.NewRegistry()
//		reg.RegisterReplica(cqrs.ReplicaModel{CQRSID: "author", Table: "author_ref",
//			Hooks: cqrs.ReplicaHooks{Create: myCreateHook}})
//		os.Exit(cli.Consume(context.Background(), cli.Env{Registry: reg}, os.Args[1:]))
//	}
//
// Exit codes: 0 success, 1 failure, 2 usage error.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/gocqrs/gocqrs/pkg/cqrs"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// Version is the gocqrs version the binaries report.
var Version = "0.1.0-dev"

// Env is what a command runs with: the models declared in Go (nil for none;
// the configuration's models are added to a copy), the output streams and
// the environment lookup.
type Env struct {
	Registry *registry.Registry
	Stdout   io.Writer
	Stderr   io.Writer
	Stdin    io.Reader
	// Getenv defaults to os.Getenv; CQRS_CONFIG names the default config file.
	Getenv func(string) string
}

func (e Env) withDefaults() Env {
	if e.Stdout == nil {
		e.Stdout = os.Stdout
	}
	if e.Stderr == nil {
		e.Stderr = os.Stderr
	}
	if e.Stdin == nil {
		e.Stdin = os.Stdin
	}
	if e.Getenv == nil {
		e.Getenv = os.Getenv
	}
	return e
}

// usageError is a command-line mistake: exit code 2.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// exitCode maps an error to an exit code and prints it.
func exitCode(env Env, prog string, err error) int {
	if err == nil {
		return ExitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(env.Stderr, "%s: %s\nRun '%s -h' for help.\n", prog, ue.msg, prog)
		return ExitUsage
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if errors.Is(err, context.Canceled) {
		return ExitOK
	}
	fmt.Fprintf(env.Stderr, "%s: %v\n", prog, err)
	return ExitFailure
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(env Env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "Usage: %s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args; an unknown flag or a bad value is a usage error.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*s = append(*s, part)
		}
	}
	return nil
}

// loadConfig reads the configuration from path, or from CQRS_CONFIG, or
// only from the environment.
func loadConfig(env Env, path string) (*cqrs.Config, error) {
	if path == "" {
		path = env.Getenv("CQRS_CONFIG")
	}
	return cqrs.LoadConfig(path)
}

// registryFor returns a registry with the Go-declared models of env plus the
// configuration's table-only models.
func registryFor(env Env, cfg *cqrs.Config) (*registry.Registry, error) {
	reg := registry.New()
	if env.Registry != nil {
		if err := copyRegistry(env.Registry, reg); err != nil {
			return nil, err
		}
	}
	if err := cfg.Register(reg); err != nil {
		return nil, err
	}
	return reg, nil
}

func copyRegistry(from, to *registry.Registry) error {
	for _, id := range from.MasterIDs() {
		m, _ := from.Master(id)
		if err := to.RegisterMaster(*m); err != nil {
			return err
		}
	}
	for _, id := range from.ReplicaIDs() {
		m, _ := from.Replica(id)
		if err := to.RegisterReplica(*m); err != nil {
			return err
		}
	}
	return nil
}

// newLogger builds the slog logger the configuration asks for.
func newLogger(w io.Writer, cfg cqrs.LogConfig) (*slog.Logger, error) {
	var level slog.Level
	switch strings.ToLower(cfg.Level) {
	case "", "info":
		level = slog.LevelInfo
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		return nil, fmt.Errorf("config: log.level: %q is not debug, info, warn or error", cfg.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(cfg.Format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("config: log.format: %q is not text or json", cfg.Format)
}
