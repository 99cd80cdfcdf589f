package cli

import (
	"context"
	"fmt"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one `cqrs` subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, env Env, args []string) error
}

func commands() map[string]command {
	return map[string]command{
		"version":          {"print the gocqrs version", runVersion},
		"bench":            {"measure gocqrs against this machine's limits", runBench},
		"prune-tombstones": {"delete the replica's old tombstones", runPruneTombstones},
		"migrate":          {"create or upgrade the outbox and tombstone tables", runMigrate},
		"relay":            {"publish the outbox until stopped (SIGINT/SIGTERM)", runRelay},

		"sync":                 {"send SYNC messages for the master rows matching a filter", runSync},
		"bulk-dump":            {"dump a master model in django-cqrs's bulk dump format", runBulkDump},
		"bulk-load":            {"load a bulk dump into a replica model", runBulkLoad},
		"diff-master":          {"revision diff, stage 1 (master): list [pk, revision] pairs", runDiffMaster},
		"diff-replica":         {"revision diff, stage 2 (replica): list the pks to resync", runDiffReplica},
		"diff-sync":            {"revision diff, stage 3 (master): send SYNCs for the listed pks", runDiffSync},
		"deleted-diff-replica": {"deleted-rows diff, stage 1 (replica): list the replica pks", runDeletedDiffReplica},
		"deleted-diff-master":  {"deleted-rows diff, stage 2 (master): list the pks gone on the master", runDeletedDiffMaster},
		"deleted-sync-replica": {"deleted-rows diff, stage 3 (replica): delete the listed pks", runDeletedSyncReplica},

		"dead-letters": {"retry, dump or purge the replica's RabbitMQ dead letters", runDeadLetters},
	}
}

// Cqrs runs the `cqrs` operator tool with args (without the program name)
// and returns the exit code. SIGINT and SIGTERM stop long-running commands
// cleanly.
func Cqrs(ctx context.Context, env Env, args []string) int {
	env = env.withDefaults()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printCqrsUsage(env, cmds)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	c, ok := cmds[args[0]]
	if !ok {
		return exitCode(env, "cqrs", usagef("unknown command %q (commands: %s)", args[0], strings.Join(sortedNames(cmds), ", ")))
	}
	return exitCode(env, "cqrs "+args[0], c.run(ctx, env, args[1:]))
}

func sortedNames(cmds map[string]command) []string {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func printCqrsUsage(env Env, cmds map[string]command) {
	fmt.Fprintln(env.Stderr, "Usage: cqrs <command> [flags]\n\nCommands:")
	for _, n := range sortedNames(cmds) {
		fmt.Fprintf(env.Stderr, "  %-22s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(env.Stderr, "\nEvery command takes --config FILE (default $CQRS_CONFIG); CQRS_* variables override it.\nRun 'cqrs <command> -h' for a command's flags.")
}

func runVersion(_ context.Context, env Env, args []string) error {
	fs := newFlags(env, "version", "cqrs version")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "gocqrs %s\n", Version)
	return nil
}
