package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
)

// The data commands (sync, bulk-dump, bulk-load, the diff and deleted-diff
// stages) keep django-cqrs's flag names, stream formats and final messages,
// so that an operator finds the same command lines and their stages can be
// mixed with django-cqrs's management commands in one pipeline.

// dataEnv is what every data command opens: the configuration, its logger,
// the registry and the database.
type dataEnv struct {
	env    Env
	cfg    *cqrs.Config
	log    *slog.Logger
	reg    *registry.Registry
	db     *sqlx.DB
	d      dialect.Dialect
	closer []func()
}

func (de *dataEnv) Close() {
	for i := len(de.closer) - 1; i >= 0; i-- {
		de.closer[i]()
	}
}

// loadDataEnv reads the configuration and builds the registry; the database
// is opened later by open, once the arguments are checked.
func loadDataEnv(env Env, cfgPath string) (*dataEnv, error) {
	cfg, err := loadConfig(env, cfgPath)
	if err != nil {
		return nil, err
	}
	logger, err := newLogger(env.Stderr, cfg.Log)
	if err != nil {
		return nil, err
	}
	reg, err := registryFor(env, cfg)
	if err != nil {
		return nil, err
	}
	return &dataEnv{env: env, cfg: cfg, log: logger, reg: reg}, nil
}

func (de *dataEnv) open(ctx context.Context) error {
	db, d, err := openDB(ctx, de.cfg.Database)
	if err != nil {
		return err
	}
	de.db, de.d = db, d
	de.closer = append(de.closer, func() { db.Close() })
	return nil
}

// unknownModel is the error for a cqrs_id the registry has no role model
// of; where names the source of the id ("--cqrs-id" is a usage error, a
// stream line is not).
func unknownModel(role, id, where string, known []string) error {
	list := "none declared"
	if len(known) > 0 {
		list = "known: " + strings.Join(known, ", ")
	}
	msg := fmt.Sprintf("no %s model with cqrs_id %q (%s)", role, id, list)
	if where == "--cqrs-id" {
		return usagef("--cqrs-id: %s", msg)
	}
	return fmt.Errorf("%s: %s", where, msg)
}

// masterFor checks that id is a master model; where names the source of
// the id for the error, as for unknownModel.
func (de *dataEnv) masterFor(id, where string) error {
	if _, ok := de.reg.Master(id); ok {
		return nil
	}
	return unknownModel("master", id, where, de.reg.MasterIDs())
}

// replicaFor is masterFor for replica models.
func (de *dataEnv) replicaFor(id, where string) error {
	if _, ok := de.reg.Replica(id); ok {
		return nil
	}
	return unknownModel("replica", id, where, de.reg.ReplicaIDs())
}

// newMaster opens the master over the database with the configuration's
// master options; the master models are bound to their tables.
func (de *dataEnv) newMaster(ctx context.Context) (*master.Master, error) {
	opts := []master.Option{master.WithLogger(de.log), master.WithMessageTTL(de.cfg.Master.MessageTTL.Or(master.DefaultMessageTTL))}
	if de.cfg.Master.OutboxTable != "" {
		opts = append(opts, master.WithOutboxTable(de.cfg.Master.OutboxTable))
	}
	return master.New(ctx, de.db, de.reg, opts...)
}

// bindReplicas binds the replica models to their tables without the
// engine (the diff stages only read).
func (de *dataEnv) bindReplicas(ctx context.Context) error {
	return de.reg.Bind(ctx, de.db, de.d, false)
}

// newEngine opens the replica engine with the configuration's options.
func (de *dataEnv) newEngine(ctx context.Context) (*replica.Engine, error) {
	return replica.NewEngine(ctx, de.db, de.d, de.reg, replica.Options{
		Queue: de.cfg.Queue, DjangoCompat: de.cfg.Replica.DjangoCompat, Logger: de.log,
	})
}

// openMaster checks that id is a master model (where names the source of the
// id, as for masterFor), opens the database and returns the master, with the
// master models bound, and the SQL names of the model.
func (de *dataEnv) openMaster(ctx context.Context, id, where string) (*master.Master, *tableRef, error) {
	if err := de.masterFor(id, where); err != nil {
		return nil, nil, err
	}
	return de.openMasterModel(ctx, id)
}

// openMasterModel is openMaster for an id that masterFor has checked.
func (de *dataEnv) openMasterModel(ctx context.Context, id string) (*master.Master, *tableRef, error) {
	if err := de.open(ctx); err != nil {
		return nil, nil, err
	}
	m, err := de.newMaster(ctx)
	if err != nil {
		return nil, nil, err
	}
	t, err := de.masterTable(id)
	if err != nil {
		return nil, nil, err
	}
	return m, t, nil
}

// openEngine checks that id is a replica model (where names the source of
// the id, as for masterFor), opens the database and returns the replica
// engine, with the replica models bound.
func (de *dataEnv) openEngine(ctx context.Context, id, where string) (*replica.Engine, error) {
	if err := de.replicaFor(id, where); err != nil {
		return nil, err
	}
	if err := de.open(ctx); err != nil {
		return nil, err
	}
	return de.newEngine(ctx)
}

// openReplicaTable checks that id is a replica model, opens the database,
// binds the replica models (without an engine: the diff stages only read)
// and returns the SQL names of the model.
func (de *dataEnv) openReplicaTable(ctx context.Context, id, where string) (*tableRef, error) {
	if err := de.replicaFor(id, where); err != nil {
		return nil, err
	}
	if err := de.open(ctx); err != nil {
		return nil, err
	}
	if err := de.bindReplicas(ctx); err != nil {
		return nil, err
	}
	return de.replicaTable(id)
}

// masterTable returns the SQL names of a bound master model.
func (de *dataEnv) masterTable(id string) (*tableRef, error) {
	mm, _ := de.reg.Master(id)
	var fields []tableField
	for _, f := range mm.Fields {
		fields = append(fields, tableField{key: f.Name, column: f.ColumnName(), kind: f.Kind})
	}
	return newTableRef(de.d, id, mm.Table, mm.PK, mm.RevisionColumn, mm.UpdatedColumn, fields)
}

// replicaTable returns the SQL names of a bound replica model.
func (de *dataEnv) replicaTable(id string) (*tableRef, error) {
	rm, _ := de.reg.Replica(id)
	if rm.IsRaw() {
		return nil, fmt.Errorf("replica model %q has no table (raw handlers): nothing to compare or delete", id)
	}
	var fields []tableField
	for _, f := range rm.Fields {
		fields = append(fields, tableField{key: f.Name, column: f.ColumnName(), kind: f.Kind})
	}
	return newTableRef(de.d, id, rm.Table, rm.PK, rm.RevisionColumn, rm.UpdatedColumn, fields)
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
