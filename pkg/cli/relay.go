package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/gocqrs/gocqrs/pkg/cqrs"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/metrics"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

func runMigrate(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "migrate", "cqrs migrate [--config FILE]")
	cfgPath := fs.String("config", "", "configuration file (YAML or JSON)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		return err
	}
	db, d, err := openDB(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer db.Close()
	var oopts []outbox.Option
	if cfg.Master.OutboxTable != "" {
		oopts = append(oopts, outbox.WithTable(cfg.Master.OutboxTable))
	}
	if err := outbox.Migrate(ctx, db, d, oopts...); err != nil {
		return err
	}
	if err := replica.Migrate(ctx, db, d, replica.Options{DjangoCompat: cfg.Replica.DjangoCompat}); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "migrated %s database: outbox and tombstone tables are up to date\n", d)
	return nil
}

func runRelay(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "relay", "cqrs relay [--config FILE] [--once]")
	cfgPath := fs.String("config", "", "configuration file (YAML or JSON)")
	once := fs.Bool("once", false, "publish what the outbox holds now, then exit")
	metricsAddr := fs.String("metrics-address", "", "serve /metrics, /healthz and /readyz on this host:port (default metrics.address)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		return err
	}
	logger, err := newLogger(env.Stderr, cfg.Log)
	if err != nil {
		return err
	}
	db, d, err := openDB(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer db.Close()
	tr, err := connectTransport(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer tr.Close()
	pub := metrics.InstrumentPublisher(tr.Publisher())
	r, err := cqrs.NewRelay(db, pub, outbox.RelayOptions{
		Table: cfg.Master.OutboxTable, BatchSize: cfg.Master.RelayBatchSize, Logger: logger,
	})
	if err != nil {
		return err
	}
	var oopts []outbox.Option
	if cfg.Master.OutboxTable != "" {
		oopts = append(oopts, outbox.WithTable(cfg.Master.OutboxTable))
	}
	stopMetrics, err := serveMetrics(ctx, metricsAddress(*metricsAddr, cfg.Metrics.Address), logger,
		[]metrics.Check{metrics.DBCheck(db.DB), metrics.TransportCheck(tr)},
		pub, metrics.NewRelayCollector(r), metrics.NewOutboxCollector(db, d, logger, oopts...))
	if err != nil {
		return err
	}
	defer stopMetrics()
	if *once {
		total := 0
		for {
			n, err := r.RunOnce(ctx)
			total += n
			if err != nil {
				return fmt.Errorf("relay: %d published before: %w", total, err)
			}
			if n == 0 {
				fmt.Fprintf(env.Stdout, "%d message(s) published\n", total)
				return nil
			}
		}
	}
	logger.Info("relay started", "transport", tr.Name(), "owner", r.OwnerID())
	err = r.Run(ctx)
	st := r.Stats()
	logger.Info("relay stopped", "published", st.Published, "failed", st.Failed)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
