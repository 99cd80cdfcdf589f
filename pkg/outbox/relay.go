package outbox

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// Relay defaults.
const (
	DefaultBatchSize       = 1000
	DefaultClaimTTL        = 30 * time.Second
	DefaultPollMin         = 5 * time.Millisecond
	DefaultPollMax         = 500 * time.Millisecond
	DefaultErrorBackoff    = time.Second
	DefaultErrorBackoffMax = 30 * time.Second
	DefaultMaxInFlight     = 4
	// MaxBatchSize bounds RelayOptions.BatchSize (it becomes bound parameters).
	MaxBatchSize = 5000
	// maxInFlightLimit bounds RelayOptions.MaxInFlight.
	maxInFlightLimit = 64
	// MaxOwnerIDLen bounds RelayOptions.OwnerID (the claimed_by column).
	MaxOwnerIDLen = 64
)

// Metadata keys the relay sets on every published message, after the
// RelayOptions.Headers and the row's own headers (which they override).
const (
	MetadataCQRSID    = "cqrs_id"
	MetadataEntityKey = "entity_key"
	MetadataOutboxID  = "outbox_id"
)

// RelayOptions configures a [Relay]. Zero values take the defaults.
type RelayOptions struct {
	// Table is the outbox table (default "cqrs_outbox").
	Table string
	// BatchSize is the number of rows claimed per cycle (default 1000, at most
	// 5000). Under a steady load RabbitMQ confirms in bulk, a few times a
	// second, and a relay has about two batches in flight: smaller batches cap
	// its rate (see BENCHMARKS.md).
	BatchSize int
	// MaxInFlight is the number of Publish calls a cycle keeps running at
	// once (default 4, the RabbitMQ publisher's channel count; at most 64).
	// Each call carries many rows; see RunOnce for the ordering rules.
	MaxInFlight int
	// ClaimTTL is the lease on claimed rows (default 30 s). Rows of a relay
	// that died are claimed again once it expires; a cycle stops publishing
	// when its lease runs out.
	ClaimTTL time.Duration
	// PollMin is the wait after a cycle that published rows (default 5 ms);
	// a cycle that published a full batch is followed at once.
	PollMin time.Duration
	// PollMax caps the idle wait, which doubles from PollMin while cycles
	// find nothing to publish (default 500 ms). [Relay.Wake] cuts it short.
	// On PostgreSQL, Run also wakes on the outbox's notifications.
	PollMax time.Duration
	// DisableListen turns off the PostgreSQL LISTEN/NOTIFY wake-up of Run
	// (see Migrate): the relay then polls as on other databases.
	DisableListen bool
	// ErrorBackoff is the wait after a failed cycle (publish or database
	// error), doubling per consecutive failure up to ErrorBackoffMax
	// (defaults 1 s and 30 s). Wake does not cut it short.
	ErrorBackoff    time.Duration
	ErrorBackoffMax time.Duration
	// Logger receives failures (with cqrs_id and topic) and lifecycle
	// messages; nil means slog.Default().
	Logger *slog.Logger
	// OwnerID is written to claimed_by (default "relay-" and random hex). Two
	// relays must not share one.
	OwnerID string
	// Headers are added to every message's Watermill metadata, under the
	// row's own headers.
	Headers map[string]string
	// Rejected reports whether a publish error concerns only that message
	// (the broker refused it), so the relay sets the row aside and goes on
	// with other entities, rather than the transport (the batch stops). The
	// default recognises errors wrapping transports.ErrRejected.
	Rejected func(error) bool
}

// RelayStats are a relay's counters since it was created.
type RelayStats struct {
	// Cycles counts finished claim → publish → delete cycles, empty ones included.
	Cycles int64
	// Published counts messages the publisher accepted.
	Published int64
	// Failed counts publish calls that returned an error.
	Failed int64
	// Errors counts cycles that failed (publish or database errors).
	Errors int64
	// Released counts claimed rows handed back unpublished so that an
	// entity's rows stay in id order (another relay held a lower one).
	Released int64
	// Rejected counts messages the broker refused (unroutable, nacked):
	// their rows stay, set aside for a while, and are retried.
	Rejected int64
	// LastError is the latest failure, nil if none yet.
	LastError error
	// LastErrorAt is when LastError happened.
	LastErrorAt time.Time
}

// Relay publishes outbox rows through a Watermill publisher: claim a batch
// (a lease), publish it in id order, delete what was published. Any number of
// relays, in one process or many, may work on one table.
type Relay struct {
	db    *sqlx.DB
	d     dialect.Dialect
	pub   message.Publisher
	n     names
	opts  RelayOptions
	log   *slog.Logger
	sql   relaySQL
	wake  chan struct{}
	runMu sync.Mutex // held while Run runs

	listening atomic.Pointer[listener] // Run's listener (PostgreSQL), for tests
	waiting   atomic.Bool              // Run waits for a notification, holding "waiting" (tests)

	cycles, published, failed, errs, released, rejected atomic.Int64
	errMu                                               sync.Mutex
	lastErr                                             error
	lastErrAt                                           time.Time
}

// NewRelay checks opts, fills in defaults and returns a relay over the outbox
// table in db. It does not touch the database: run [Migrate] first.
func NewRelay(db *sqlx.DB, d dialect.Dialect, pub message.Publisher, opts RelayOptions) (*Relay, error) {
	if db == nil {
		return nil, errors.New("outbox: new relay: nil database handle")
	}
	if pub == nil {
		return nil, errors.New("outbox: new relay: nil publisher")
	}
	if opts.Table == "" {
		opts.Table = DefaultTable
	}
	n, err := resolveNames(d, opts.Table)
	if err != nil {
		return nil, fmt.Errorf("outbox: new relay: %w", err)
	}
	if err := opts.fill(); err != nil {
		return nil, fmt.Errorf("outbox: new relay: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &Relay{
		db:   db,
		d:    d,
		pub:  pub,
		n:    n,
		opts: opts,
		log:  log.With("component", "outbox.relay", "table", n.raw, "owner", opts.OwnerID),
		sql:  buildRelaySQL(d, n),
		wake: make(chan struct{}, 1),
	}
	return r, nil
}

// fill applies defaults and rejects bad values, naming the field.
func (o *RelayOptions) fill() error {
	if o.Rejected == nil {
		o.Rejected = func(err error) bool { return errors.Is(err, transports.ErrRejected) }
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ClaimTTL", &o.ClaimTTL, DefaultClaimTTL},
		{"PollMin", &o.PollMin, DefaultPollMin},
		{"PollMax", &o.PollMax, DefaultPollMax},
		{"ErrorBackoff", &o.ErrorBackoff, DefaultErrorBackoff},
		{"ErrorBackoffMax", &o.ErrorBackoffMax, DefaultErrorBackoffMax},
	}
	for _, f := range durations {
		if *f.v < 0 {
			return fmt.Errorf("RelayOptions.%s %s: must not be negative", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if o.ClaimTTL < time.Millisecond {
		return fmt.Errorf("RelayOptions.ClaimTTL %s: must be at least 1ms", o.ClaimTTL)
	}
	if o.PollMax < o.PollMin {
		return fmt.Errorf("RelayOptions.PollMax %s: must not be less than PollMin %s", o.PollMax, o.PollMin)
	}
	if o.ErrorBackoffMax < o.ErrorBackoff {
		return fmt.Errorf("RelayOptions.ErrorBackoffMax %s: must not be less than ErrorBackoff %s", o.ErrorBackoffMax, o.ErrorBackoff)
	}
	switch {
	case o.BatchSize < 0:
		return fmt.Errorf("RelayOptions.BatchSize %d: must not be negative", o.BatchSize)
	case o.BatchSize == 0:
		o.BatchSize = DefaultBatchSize
	case o.BatchSize > MaxBatchSize:
		return fmt.Errorf("RelayOptions.BatchSize %d: at most %d", o.BatchSize, MaxBatchSize)
	}
	switch {
	case o.MaxInFlight < 0 || o.MaxInFlight > maxInFlightLimit:
		return fmt.Errorf("RelayOptions.MaxInFlight %d: want 0 (default %d) to %d", o.MaxInFlight, DefaultMaxInFlight, maxInFlightLimit)
	case o.MaxInFlight == 0:
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.OwnerID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.OwnerID = "relay-" + hex.EncodeToString(b[:])
	}
	if len(o.OwnerID) > MaxOwnerIDLen || !utf8.ValidString(o.OwnerID) {
		return fmt.Errorf("RelayOptions.OwnerID %.70q: want valid UTF-8 of at most %d bytes", o.OwnerID, MaxOwnerIDLen)
	}
	headers := make(map[string]string, len(o.Headers))
	for k, v := range o.Headers {
		headers[k] = v
	}
	o.Headers = headers
	return nil
}

// OwnerID returns the id the relay writes to claimed_by.
func (r *Relay) OwnerID() string { return r.opts.OwnerID }

// Wake asks a running [Relay.Run] to poll now instead of finishing its idle
// wait. It never blocks; wakes coalesce. A notifier (e.g. PostgreSQL
// LISTEN/NOTIFY) calls it when new rows are committed.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the relay's counters.
func (r *Relay) Stats() RelayStats {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return RelayStats{
		Cycles:      r.cycles.Load(),
		Published:   r.published.Load(),
		Failed:      r.failed.Load(),
		Rejected:    r.rejected.Load(),
		Errors:      r.errs.Load(),
		Released:    r.released.Load(),
		LastError:   r.lastErr,
		LastErrorAt: r.lastErrAt,
	}
}

func (r *Relay) recordError(err error) {
	r.errs.Add(1)
	r.errMu.Lock()
	r.lastErr, r.lastErrAt = err, time.Now()
	r.errMu.Unlock()
}
