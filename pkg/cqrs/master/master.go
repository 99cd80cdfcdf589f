// Package master is the writing side of gocqrs: inside the caller's own
// *sqlx.Tx it bumps a row's cqrs_revision and cqrs_updated, serialises the row
// as it stands in that transaction into a django-cqrs payload and writes the
// payload to the outbox table. The message exists if and only if the
// transaction commits; the relay (package outbox) publishes it.
//
// Several changes to one row in one transaction give one message with the
// final state and one revision bump, as django-cqrs intends. Savepoints
// work: when the caller rolls back to a savepoint taken before a call, the
// next call for that row bumps and writes its message anew.
//
// A call that fails after it has changed rows in the transaction (its own
// INSERT, UPDATE or DELETE, or Save's revision bump: the message of that
// change is then not written) rolls the transaction back before it returns,
// and its error wraps [ErrRolledBack]: a later Commit returns
// sql.ErrTxDone, so the change cannot commit without its message even when
// the caller commits after the error. Save and SaveMany, whose rows the
// caller changed, do so on any failure but a missing row ([ErrNotFound]).
// A call that fails before it changes anything (an unknown cqrs_id or
// field, a value that cannot be bound, a row not found, the database
// refusing the change itself) leaves the transaction as it was.
package master

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"
	"weak"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// DefaultMessageTTL is django-cqrs's CQRS_MESSAGE_TTL default: messages
// expire a day after they are written.
const DefaultMessageTTL = 24 * time.Hour

// Option configures a Master.
type Option func(*Master)

// WithMessageTTL sets how long after the change a message expires
// (master.message_ttl). 0 means never: expires is null.
func WithMessageTTL(d time.Duration) Option { return func(m *Master) { m.ttl = d } }

// WithCorrelation sets the master-wide correlation function
// (master.correlation_function); its result is the payload's correlation_id.
func WithCorrelation(fn func(ctx context.Context, ev registry.Event) any) Option {
	return func(m *Master) { m.correlation = fn }
}

// WithMeta sets the master-wide meta function (master.meta_function); its
// result is the payload's meta. Without one, meta is {}.
func WithMeta(fn func(ctx context.Context, ev registry.Event, row *wire.Fields) any) Option {
	return func(m *Master) { m.meta = fn }
}

// WithOutboxTable names the outbox table (default cqrs_outbox).
func WithOutboxTable(name string) Option { return func(m *Master) { m.outboxTable = name } }

// WithClock replaces time.Now for cqrs_updated and expires.
func WithClock(now func() time.Time) Option { return func(m *Master) { m.now = now } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(m *Master) { m.log = l } }

// WithProduceOff stops every model from publishing (the revision is still
// bumped), like django-cqrs's CQRS_PRODUCE = False.
func WithProduceOff() Option { return func(m *Master) { m.produceOff = true } }

// Master writes changes of registered master models and their messages.
// It is safe for concurrent use.
type Master struct {
	reg         *registry.Registry
	d           dialect.Dialect
	ttl         time.Duration
	correlation func(ctx context.Context, ev registry.Event) any
	meta        func(ctx context.Context, ev registry.Event, row *wire.Fields) any
	outboxTable string
	now         func() time.Time
	log         *slog.Logger
	produceOff  bool

	txs     sync.Map // weak.Pointer[sqlx.Tx] → *txState
	predict sync.Map // cqrs_id → *predictStats (insert_pg.go)
	tables  sync.Map // *registry.MasterModel → *tableSQL
}

// New binds the registry's master models to the tables of db (checking that
// every declared column exists and learning the column kinds) and returns a
// Master for transactions on that database.
func New(ctx context.Context, db *sqlx.DB, reg *registry.Registry, opts ...Option) (*Master, error) {
	d, err := dialect.Of(db)
	if err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	m := &Master{reg: reg, d: d, ttl: DefaultMessageTTL, now: time.Now, log: slog.Default(), outboxTable: outbox.DefaultTable}
	for _, o := range opts {
		o(m)
	}
	if m.ttl < 0 {
		return nil, fmt.Errorf("master: message TTL %s is negative", m.ttl)
	}
	if _, err := d.Quote(m.outboxTable); err != nil {
		return nil, fmt.Errorf("master: outbox table: %w", err)
	}
	if err := reg.Bind(ctx, db, d, true); err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	return m, nil
}

// Dialect returns the database dialect the master writes to.
func (m *Master) Dialect() dialect.Dialect { return m.d }

// pending is one entity's message already written in a transaction.
type pending struct {
	outboxID int64 // 0: no outbox row (produce off)
	bumped   bool  // revision already bumped in this tx
	rev      int64 // the row's cqrs_revision as this tx left it, once bumped
	created  bool  // the first change in this tx was a create
	deleted  bool
	// oldTracked holds the tracked fields' values from before the first
	// change in this tx; previous_data compares them with the final row.
	oldTracked map[string]any
	snapshot   bool // send all of oldTracked (bulk update), not just the changed ones
}

type txState struct {
	mu       sync.Mutex
	entities map[string]*pending
}

// state returns the per-transaction bookkeeping of tx. It lives as long as
// the *sqlx.Tx is reachable: a weak key and a cleanup drop it afterwards.
func (m *Master) state(tx *sqlx.Tx) *txState {
	key := weak.Make(tx)
	if s, ok := m.txs.Load(key); ok {
		return s.(*txState)
	}
	s, loaded := m.txs.LoadOrStore(key, &txState{entities: map[string]*pending{}})
	if !loaded {
		runtime.AddCleanup(tx, func(k weak.Pointer[sqlx.Tx]) { m.txs.Delete(k) }, key)
	}
	return s.(*txState)
}

// ErrRolledBack is wrapped by the error of a call that failed after it had
// changed rows in the caller's transaction: the call rolled the
// transaction back (see the package documentation).
var ErrRolledBack = errors.New("the transaction was rolled back, so that no change commits without its message")

// abort rolls tx back after a call failed part way (err), so that neither
// a change without its message nor the call's half-done bookkeeping of tx
// can be committed, and returns err wrapped with ErrRolledBack. After
// Rollback the transaction is done whatever the driver answers.
func (m *Master) abort(tx *sqlx.Tx, err error) error {
	m.txs.Delete(weak.Make(tx))
	if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
		return fmt.Errorf("%w: %w (the rollback reported: %v)", err, ErrRolledBack, rbErr)
	}
	return fmt.Errorf("%w: %w", err, ErrRolledBack)
}

func (m *Master) model(cqrsID string) (*registry.MasterModel, error) {
	mm, ok := m.reg.Master(cqrsID)
	if !ok {
		return nil, fmt.Errorf("master: no master model registered for cqrs_id %q (known: %v)", cqrsID, m.reg.MasterIDs())
	}
	return mm, nil
}

func (m *Master) clock() time.Time { return m.now().UTC().Truncate(time.Microsecond) }

func (m *Master) produces(mm *registry.MasterModel) bool { return !m.produceOff && !mm.ProduceOff }
