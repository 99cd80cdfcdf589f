package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
)

func runPruneTombstones(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "prune-tombstones", `cqrs prune-tombstones [--older-than 720h] [--config FILE]

Deletes the replica's tombstones (the record of deleted rows that stops a late
SAVE from bringing a row back) written more than --older-than ago. Keep them
longer than a message can be delayed: retries, and dead letters replayed with
cqrs dead-letters retry (dead letters live replica.dead_message_ttl, 10 days by
default). Does nothing with replica.django_compat.`)
	cfgPath := fs.String("config", "", "configuration file (YAML or JSON)")
	olderThan := fs.Duration("older-than", 30*24*time.Hour, "age of the tombstones to delete")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *olderThan < 0 {
		return usagef("--older-than %s: want a positive age", *olderThan)
	}
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		return err
	}
	reg, err := registryFor(env, cfg)
	if err != nil {
		return err
	}
	db, _, err := openDB(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer db.Close()
	eng, err := cqrs.NewEngine(ctx, db, reg, replica.Options{DjangoCompat: cfg.Replica.DjangoCompat})
	if err != nil {
		return err
	}
	n, err := eng.PruneTombstones(ctx, *olderThan)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%d tombstone(s) older than %s deleted\n", n, *olderThan)
	return nil
}
