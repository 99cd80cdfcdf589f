package cli

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
)

// defaultBatch is django-cqrs's batch size for every data command.
const defaultBatch = 10000

// dataFlags are the flags of one data command: --config and --progress,
// which every data command has, and --cqrs-id and --batch for those that
// take them. Its usage text has the command's description above the flags.
type dataFlags struct {
	env    Env
	fs     *flag.FlagSet
	common commonFlags
	id     *string // --cqrs-id once registered; then it is required
	batch  *int    // --batch once registered
}

// newDataFlags is newFlags with a description printed above the flags and
// the common flags registered.
func newDataFlags(env Env, name, usage, about string) *dataFlags {
	fs := newFlags(env, name, usage)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "Usage: %s\n\n%s\n\nFlags:\n", usage, strings.TrimSpace(about))
		fs.PrintDefaults()
	}
	f := &dataFlags{env: env, fs: fs}
	f.common.register(fs)
	return f
}

// stringFlag registers a string flag under a long and a short name.
func (f *dataFlags) stringFlag(long, short, help string) *string {
	p := f.fs.String(long, "", help)
	f.fs.StringVar(p, short, "", "same as --"+long)
	return p
}

// boolFlag registers a boolean flag under a long and a short name.
func (f *dataFlags) boolFlag(long, short, help string) *bool {
	p := f.fs.Bool(long, false, help)
	f.fs.BoolVar(p, short, false, "same as --"+long)
	return p
}

// cqrsID registers the required --cqrs-id, with short as its short name.
func (f *dataFlags) cqrsID(short, help string) *string {
	f.id = f.stringFlag("cqrs-id", short, help)
	return f.id
}

// batchSize registers --batch and -b; what says what a batch is.
func (f *dataFlags) batchSize(what string) *int {
	f.batch = f.fs.Int("batch", defaultBatch, what)
	f.fs.IntVar(f.batch, "b", defaultBatch, "same as --batch")
	return f.batch
}

// load parses args and checks them (no positional arguments, --cqrs-id
// given, --batch at least 1, then checks in order), and loads the
// configuration; the caller closes the dataEnv.
func (f *dataFlags) load(args []string, checks ...func() error) (*dataEnv, error) {
	if err := parse(f.fs, args); err != nil {
		return nil, err
	}
	if err := noArgs(f.fs); err != nil {
		return nil, err
	}
	if f.id != nil && *f.id == "" {
		return nil, usagef("--cqrs-id is required")
	}
	if f.batch != nil {
		if err := checkBatch(*f.batch); err != nil {
			return nil, err
		}
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return nil, err
		}
	}
	return f.loadEnv()
}

// loadEnv loads the configuration named by --config.
func (f *dataFlags) loadEnv() (*dataEnv, error) {
	return loadDataEnv(f.env, f.common.config)
}

// progress decides the progress display from --progress (see
// chooseProgress).
func (f *dataFlags) progress(streamsStdout bool) progressMode {
	return chooseProgress(f.env, f.common.progress, streamsStdout)
}

// autoBool is a boolean flag that remembers whether it was given: --progress
// left out means "decide from the terminal".
type autoBool struct {
	set, val bool
}

func (b *autoBool) String() string {
	if b == nil || !b.set {
		return "auto"
	}
	return strconv.FormatBool(b.val)
}

func (b *autoBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false, got %q", s)
	}
	b.set, b.val = true, v
	return nil
}

// IsBoolFlag lets the flag be given without a value.
func (b *autoBool) IsBoolFlag() bool { return true }

// commonFlags are the flags every data command has.
type commonFlags struct {
	config   string
	progress autoBool
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "", "configuration file (YAML or JSON; default $CQRS_CONFIG)")
	const help = "show progress on stderr: a bar with rate and ETA on a terminal, plain count lines otherwise (default: a bar when stderr is a terminal)"
	fs.Var(&c.progress, "progress", help)
	fs.Var(&c.progress, "p", "same as --progress")
}

// checkBatch rejects a batch size below 1.
func checkBatch(n int) error {
	if n < 1 {
		return usagef("--batch %d: want at least 1", n)
	}
	return nil
}

// noArgs rejects positional arguments.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
