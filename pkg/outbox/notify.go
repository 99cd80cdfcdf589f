package outbox

import (
	"context"
	"crypto/md5"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// Wake-up on PostgreSQL
//
// Migration 2 puts a statement-level AFTER INSERT trigger on the outbox
// table that NOTIFYs the channel NotifyChannel(schema, table); since
// migration 3 it notifies only while a relay waits idle (see
// notify_wait.go). While Run runs on PostgreSQL, the relay keeps one
// connection of its own (opened with the configuration of the pool's
// connections, outside the pool, so that MaxOpenConns is not touched)
// LISTENing on that channel, and calls Wake for every notification: an idle
// relay publishes a committed row within a round trip instead of within its
// idle wait. Before it waits, Run takes the "waiting" lock on another
// connection of its own and claims once more, so that no commit is missed
// (notify_wait.go). The relay keeps polling adaptively as on other
// databases, as the fallback for a listener or lock connection that is
// down. The listener reconnects with backoff (listenRetryMin doubling to
// listenRetryMax) and, once LISTENing again, wakes the relay once for what
// was committed meanwhile. It pings its connection after listenPing without
// traffic, so that a dead connection is noticed.
//
// It does not start when RelayOptions.DisableListen is set, when the table
// has no enabled notify trigger (migration 2 not applied: it logs so and the
// relay polls), or when the database handle does not use the pgx driver.

// Listener timings.
const (
	listenRetryMin = 100 * time.Millisecond
	listenRetryMax = 30 * time.Second
	listenPing     = 30 * time.Second
)

// errNoListen stops the listener for good (polling only).
var errNoListen = errors.New("outbox: listen: not possible")

// NotifyChannel returns the PostgreSQL notification channel of the outbox
// table schema.table (the table's real schema, as the notify trigger sees
// it): "gocqrs_" and the hex MD5 of "schema.table".
func NotifyChannel(schema, table string) string {
	sum := md5.Sum([]byte(schema + "." + table))
	return "gocqrs_" + hex.EncodeToString(sum[:])
}

// listener LISTENs for the outbox table's notifications and wakes the relay.
type listener struct {
	r        *Relay
	cancel   context.CancelFunc
	done     chan struct{}
	up       atomic.Bool   // LISTENing now
	pid      atomic.Uint32 // the listening backend's process id (tests)
	notified atomic.Int64  // notifications received (tests)
}

// startListener starts the listener when the relay is on PostgreSQL and
// listening is not disabled; stop ends it.
func (r *Relay) startListener(ctx context.Context) *listener {
	l := &listener{r: r, done: make(chan struct{})}
	r.listening.Store(l)
	if r.d.Name() != dialect.Postgres || r.opts.DisableListen {
		close(l.done)
		return l
	}
	ctx, l.cancel = context.WithCancel(ctx)
	go l.run(ctx)
	return l
}

// stop ends the listener and waits for it.
func (l *listener) stop() {
	if l.cancel != nil {
		l.cancel()
	}
	<-l.done
}

// healthy reports whether the listener is LISTENing now.
func (l *listener) healthy() bool { return l.up.Load() }

func (l *listener) run(ctx context.Context) {
	defer close(l.done)
	delay := listenRetryMin
	for {
		listened, err := l.session(ctx)
		l.up.Store(false)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNoListen) {
			l.r.log.Info("outbox: not listening for notifications; polling only", "reason", err)
			return
		}
		if listened {
			delay = listenRetryMin
		}
		l.r.log.Warn("outbox: notification listener failed; polling meanwhile, reconnecting", "retry_in", delay, "error", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, listenRetryMax)
	}
}

// session connects, LISTENs and wakes the relay per notification until the
// connection fails or ctx is done. listened reports whether LISTEN worked.
func (l *listener) session(ctx context.Context) (listened bool, err error) {
	channel, err := l.r.notifyChannel(ctx)
	if err != nil {
		return false, err
	}
	cfg, err := l.r.pgxConfig(ctx)
	if err != nil {
		return false, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("outbox: listen: connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return false, fmt.Errorf("outbox: listen on %s: %w", channel, err)
	}
	l.pid.Store(conn.PgConn().PID())
	l.up.Store(true)
	l.r.log.Debug("outbox: listening for notifications", "channel", channel)
	l.r.Wake() // rows may have been committed while nobody listened
	for {
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			l.notified.Add(1)
			l.r.Wake()
		case ctx.Err() != nil:
			return true, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			pctx, cancel := context.WithTimeout(ctx, listenPing)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("outbox: listen: ping: %w", err)
			}
		default:
			return true, fmt.Errorf("outbox: listen: wait for notification: %w", err)
		}
	}
}

// notifyChannel resolves the table's real schema and name, checks that its
// notify trigger is there and enabled, and returns its channel.
func (r *Relay) notifyChannel(ctx context.Context) (string, error) {
	var (
		schema, table string
		hasTrigger    bool
	)
	err := r.db.QueryRowContext(ctx, `SELECT n.nspname, c.relname,
		EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = $2 AND t.tgenabled <> 'D')
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1)`, r.n.table, r.n.notifyName).Scan(&schema, &table, &hasTrigger)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("outbox: listen: table %s not found (run Migrate)", r.n.raw)
	case err != nil:
		return "", fmt.Errorf("outbox: listen: look up table %s: %w", r.n.raw, err)
	case !hasTrigger:
		return "", fmt.Errorf("%w: table %s has no enabled trigger %s (run Migrate to apply migration 2)", errNoListen, r.n.raw, r.n.notifyName)
	}
	return NotifyChannel(schema, table), nil
}

// pgxConfig returns a copy of the connection configuration of the relay's
// pool, read from one of its connections.
func (r *Relay) pgxConfig(ctx context.Context) (*pgx.ConnConfig, error) {
	conn, err := r.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox: listen: get a pool connection: %w", err)
	}
	defer conn.Close()
	var cfg *pgx.ConnConfig
	err = conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("%w: the database handle's driver connection is %T, not pgx's (*stdlib.Conn)", errNoListen, dc)
		}
		cfg = sc.Conn().Config().Copy()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cfg, nil
}
