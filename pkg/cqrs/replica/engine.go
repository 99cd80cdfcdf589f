package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// DefaultTombstoneTable is the tombstone table's name when Options leaves it empty.
const DefaultTombstoneTable = "cqrs_tombstones"

// Options configure an Engine.
type Options struct {
	// Queue is this replica's queue name; it only appears in logs.
	Queue string
	// DjangoCompat turns tombstones off: a DELETE leaves nothing behind and a
	// late SAVE recreates the row, as django-cqrs does.
	DjangoCompat bool
	// TombstoneTable names the tombstone table (default "cqrs_tombstones",
	// optionally schema-qualified). Unused with DjangoCompat.
	TombstoneTable string
	// Logger receives the revision-rule warnings; nil discards them.
	Logger *slog.Logger
}

func (o Options) tombstoneTable() string {
	if o.TombstoneTable == "" {
		return DefaultTombstoneTable
	}
	return o.TombstoneTable
}

// Engine applies messages to the replica database. It is safe for concurrent
// use; it holds no state besides what NewEngine computed.
type Engine struct {
	db     *sqlx.DB
	d      dialect.Dialect
	reg    *registry.Registry
	opts   Options
	log    *slog.Logger
	models map[string]*model
	tomb   *tombstones // nil with DjangoCompat
}

// NewEngine binds the registry's replica models to the database (declared
// columns are checked against the tables; errors name the model, the table
// and the column), compiles each model's SQL and, unless DjangoCompat is set,
// checks that the tombstone table exists (create it with [Migrate]).
func NewEngine(ctx context.Context, db *sqlx.DB, d dialect.Dialect, reg *registry.Registry, opts Options) (*Engine, error) {
	if db == nil || reg == nil {
		return nil, errors.New("replica: NewEngine needs a database and a registry")
	}
	if !d.Valid() {
		return nil, errors.New("replica: NewEngine: invalid dialect")
	}
	if err := reg.Bind(ctx, db, d, false); err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	e := &Engine{db: db, d: d, reg: reg, opts: opts, log: opts.Logger, models: map[string]*model{}}
	if e.log == nil {
		e.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, id := range reg.ReplicaIDs() {
		m, _ := reg.Replica(id)
		cm, err := compile(ctx, db, d, m)
		if err != nil {
			return nil, fmt.Errorf("replica: %w", err)
		}
		if d.Name() == dialect.Postgres && pgxDrivers[db.DriverName()] && !m.IsRaw() {
			cm.pkArray = pgArrays[cm.pkType]
			if err := cm.loadPGColTypes(ctx, db); err != nil {
				return nil, fmt.Errorf("replica: %w", err)
			}
		}
		e.models[id] = cm
		compiled.Store(compiledKey{m, d.Name()}, cm)
	}
	if !opts.DjangoCompat {
		t, err := newTombstones(ctx, db, d, opts.tombstoneTable())
		if err != nil {
			return nil, err
		}
		e.tomb = t
	}
	return e, nil
}

// Apply applies one message in its own replica transaction (none for a raw
// replica). A returned error means the message was not applied and should be
// retried later, except [ErrUnknownModel].
func (e *Engine) Apply(ctx context.Context, dl Delivery) (Result, error) {
	cm, err := e.route(dl)
	if err != nil {
		return Result{StoredRevision: -1}, err
	}
	if cm.m.IsRaw() {
		return e.applyRaw(ctx, cm, dl)
	}
	tx, err := e.db.BeginTxx(ctx, nil)
	if err != nil {
		return Result{StoredRevision: -1}, fmt.Errorf("replica: %s: begin: %w", where(cm.m.CQRSID, dl.Payload.InstancePK), err)
	}
	res, err := e.apply(ctx, tx, cm, dl)
	if err != nil {
		_ = tx.Rollback()
		return res, err
	}
	if err := tx.Commit(); err != nil {
		return Result{StoredRevision: -1}, fmt.Errorf("replica: %s: commit: %w", where(cm.m.CQRSID, dl.Payload.InstancePK), err)
	}
	return res, nil
}

// ApplyTx applies one message inside the caller's transaction and does not
// commit. After an error the transaction may be unusable (PostgreSQL aborts
// it): roll it back, or wrap the call in a savepoint. A raw replica's
// handlers still get a nil ApplyContext.Tx.
func (e *Engine) ApplyTx(ctx context.Context, tx *sqlx.Tx, dl Delivery) (Result, error) {
	cm, err := e.route(dl)
	if err != nil {
		return Result{StoredRevision: -1}, err
	}
	if cm.m.IsRaw() {
		return e.applyRaw(ctx, cm, dl)
	}
	if tx == nil {
		return Result{StoredRevision: -1}, errors.New("replica: ApplyTx: nil transaction")
	}
	return e.apply(ctx, tx, cm, dl)
}

// route checks the signal type and finds the model, in django-cqrs's order.
func (e *Engine) route(dl Delivery) (*model, error) {
	p := dl.Payload
	if p == nil {
		return nil, errors.New("replica: delivery without a payload")
	}
	if !p.SignalType.Valid() {
		return nil, fmt.Errorf("replica: %w %q for CQRS_ID %q", ErrBadSignal, string(p.SignalType), p.CQRSID)
	}
	cm, ok := e.models[p.CQRSID]
	if !ok {
		return nil, fmt.Errorf("replica: %w: %s", ErrUnknownModel, p.CQRSID)
	}
	return cm, nil
}

func (e *Engine) applyContext(tx *sqlx.Tx, cm *model, p *wire.Payload) *registry.ApplyContext {
	ac := &registry.ApplyContext{Tx: tx, Dialect: e.d, Model: cm.m, Payload: p, Sync: p.SignalType == wire.SignalSync}
	if cm.m.DeliverMeta {
		ac.Meta = p.Meta
	}
	return ac
}

func (e *Engine) applyRaw(ctx context.Context, cm *model, dl Delivery) (Result, error) {
	res := Result{StoredRevision: -1}
	if e.indirect(logSink{l: e.log}, cm, dl) {
		res.Outcome = OutcomeSkippedIndirect
		return res, nil
	}
	ac := e.applyContext(nil, cm, dl.Payload)
	h := cm.m.Raw.Save
	step := "save"
	if dl.Payload.SignalType == wire.SignalDelete {
		h, step = cm.m.Raw.Delete, "delete"
	}
	if h == nil {
		e.log.Info("CQRS message ignored: raw replica has no handler for it", "cqrs_id", cm.m.CQRSID,
			"signal_type", string(dl.Payload.SignalType), "pk", pkString(dl.Payload.InstancePK))
		res.Outcome = OutcomeSkippedNoHandler
		return res, nil
	}
	if err := h(ctx, ac); err != nil {
		return res, fmt.Errorf("replica: %s: raw %s handler: %w", where(cm.m.CQRSID, dl.Payload.InstancePK), step, err)
	}
	res.Outcome = OutcomeRaw
	return res, nil
}

func (e *Engine) apply(ctx context.Context, tx *sqlx.Tx, cm *model, dl Delivery) (Result, error) {
	if dl.Payload.SignalType == wire.SignalDelete {
		return e.applyDelete(ctx, tx, cm, dl)
	}
	return e.applySave(ctx, tx, cm, dl)
}
