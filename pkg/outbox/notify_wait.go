package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Notifying only while a relay waits (migration 3)
//
// A NOTIFY costs the committing transaction (PostgreSQL serialises notifying
// commits), and only a relay that waits idle needs one: a busy relay claims
// new rows by itself. So the trigger of migration 3 notifies only when a
// relay may be waiting, as two advisory locks on (class, the outbox
// table's oid) tell:
//
//   - "writing" (lockClassWriting): every transaction that writes to the
//     outbox takes it SHARED in the trigger, without waiting, and holds it
//     until it ends.
//   - "waiting" (lockClassWaiting): every relay that waits idle holds it
//     SHARED, at session level, on a connection of its own (waitLock).
//
// The trigger (each INSERT statement on the outbox, in transaction T):
//
//	W1. try "writing" SHARED for the transaction; if it is not available,
//	    notify;
//	W2. otherwise try "waiting" EXCLUSIVE (released at once); if it is not
//	    available, notify.
//
// A notification is delivered when T commits, and not at all if T rolls
// back. The relay, in Run, before it waits for a wake-up:
//
//	R1. takes "waiting" SHARED, unless it holds it already;
//	R2. takes "writing" EXCLUSIVE and releases it at once: this waits for
//	    every transaction that holds it SHARED to end;
//	R3. claims once more, and waits only if that claim found nothing to
//	    publish. It keeps "waiting" while it waits and when it wakes up;
//	R4. releases "waiting" (in the background) as soon as a claim finds
//	    rows to publish (it is busy: writers stop notifying), and goes
//	    through R1-R3 again before its next wait.
//
// A wait shorter than armMinWait (with the default PollMin, the one after a
// partial batch and the first idle one) is a poll in itself: the relay
// takes no lock for it.
//
// Claim: while the relay waits after R3, holding "waiting" since R1, every
// transaction T that writes to the outbox and commits either has its row
// seen by the claim R3 or notifies, so no commit is missed. By when T's
// first trigger ran:
//
//   - Before R2 started, with W1 granted: T held "writing" SHARED, so R2
//     returned only once T had ended. PostgreSQL releases a transaction's
//     locks after its commit became visible, so the claim R3, which starts
//     after R2 returned, sees T's row (if T committed).
//   - Before R2 started, with W1 refused: some relay was taking "writing"
//     exclusively; T notifies.
//   - After R2 started (so after R1): W1 is refused while R2 waits for or
//     holds "writing", and T notifies; once R2 released it, W1 is granted
//     and W2 is refused (the relay holds "waiting"), and T notifies.
//
// The relay's listener LISTENs before R1 (Run takes the locks only while
// the listener is up; a listener that comes back up wakes the relay once),
// and Relay.wake keeps one pending wake-up, so a notification that arrives
// between R3 and the wait is not lost. When the relay wakes up and claims
// again without having released "waiting", a transaction whose row that
// claim did not see had its trigger run after R1, so it notifies when it
// commits (third case): the relay may wait again after any claim as long as
// it held "waiting" since R2.
//
// When R2 does not get "writing" within waitLockTimeout (a long transaction
// wrote to the outbox and is still open), the relay waits at most
// waitLockRetry, claims and tries again, until R2 succeeds: the long
// transaction's row is published soon after it commits. When the lock
// connection fails, the relay waits without the guarantee: its wait is a
// poll (PollMin to PollMax), and it takes the locks again before its next
// wait. Relays do not block each other: they all hold "waiting" SHARED,
// and R2 holds "writing" only for a moment. Transactions never wait for
// these locks. A relay of an older gocqrs, which does not take "waiting",
// is woken by its polling only against migration 3.

// Advisory lock classes (first key; the second is the table's oid as int4).
const (
	lockClassWriting = 1734570355 // held SHARED by each open transaction that wrote to the outbox
	lockClassWaiting = 1734570356 // held SHARED by each relay waiting idle
)

// waitLockTimeout bounds how long taking a lock (R1, R2) may wait: the
// relay does nothing else meanwhile. After R2 timed out, the relay waits
// at most waitLockRetry before it claims and tries again, so that the row
// of a long transaction is published soon after it commits whatever
// PollMax is. A wait shorter than armMinWait is a poll in itself: the
// relay takes no lock for it (with the default PollMin, the wait after a
// partial batch and the first idle wait).
const (
	waitLockTimeout = 50 * time.Millisecond
	waitLockRetry   = 50 * time.Millisecond
	armMinWait      = 10 * time.Millisecond
)

// waitLock is Run's hold on the "waiting" lock, on a connection of its own
// (opened with the pool's configuration, outside the pool). It is used by
// Run's goroutine only.
type waitLock struct {
	r       *Relay
	conn    *pgx.Conn
	oid     int32
	held    bool          // "waiting" is held on conn (false once its release started)
	synced  bool          // R2 returned while "waiting" was held (and it still is)
	off     bool          // the handle's driver is not pgx: never possible
	release chan struct{} // closed when the release in flight is done; nil when none
}

// safe reports whether the relay may wait for a notification after a claim
// it starts now: it holds "waiting" since R2.
func (w *waitLock) safe() bool { return w.held && w.synced }

// armResult is what arm did.
type armResult int

const (
	armFailed armResult = iota // no lock (connection or driver): poll
	armOpen                    // R2 timed out: a transaction that wrote is still open
	armDone                    // R1 and R2 done: claim once more (R3), then wait
)

// arm does R1 (unless "waiting" is held) and R2.
func (w *waitLock) arm(ctx context.Context) armResult {
	if w.off {
		return armFailed
	}
	w.settle()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if w.conn == nil {
		if err := w.connect(ctx); err != nil {
			if errors.Is(err, errNoListen) {
				w.off = true
			}
			w.r.log.Debug("outbox: cannot take the relay's waiting lock; polling", "error", err)
			return armFailed
		}
	}
	b := &pgx.Batch{}
	if !w.held {
		b.Queue("SELECT pg_advisory_lock_shared($1, $2)", lockClassWaiting, w.oid)
	}
	b.Queue("SELECT pg_advisory_xact_lock($1, $2)", lockClassWriting, w.oid)
	res := w.conn.SendBatch(ctx, b)
	var err error
	if !w.held {
		if _, err = res.Exec(); err == nil {
			w.held = true
		}
	}
	if err == nil {
		_, err = res.Exec()
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		w.synced = false
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "55P03" { // lock_not_available: lock_timeout
			w.r.log.Debug("outbox: a transaction that wrote to the outbox is still open; polling for it")
			return armOpen
		}
		w.r.log.Warn("outbox: relay waiting lock failed; polling meanwhile", "error", err)
		w.drop()
		return armFailed
	}
	w.synced = true
	return armDone
}

// unlock does R4: writers stop notifying for this relay. The statement
// runs in the background, so that the relay's first batch after a wait
// does not wait for it; the next use of the connection waits for it.
func (w *waitLock) unlock(ctx context.Context) {
	w.synced = false
	if !w.held {
		return
	}
	w.held = false
	conn, done := w.conn, make(chan struct{})
	w.release = done
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock_shared($1, $2)", lockClassWaiting, w.oid); err != nil {
			w.r.log.Warn("outbox: releasing the relay waiting lock failed; closing its connection", "error", err)
			closeConn(ctx, conn) // releases the lock
		}
	}()
}

// settle waits for the release in flight, if any, and forgets a
// connection it closed.
func (w *waitLock) settle() {
	if w.release == nil {
		return
	}
	<-w.release
	w.release = nil
	if w.conn != nil && w.conn.IsClosed() {
		w.conn = nil
	}
}

// check pings the lock connection while the relay holds "waiting" (after a
// wait that ended without a wake-up): a connection the server closed holds
// nothing any more, so the relay takes the locks again before its next
// wait instead of waiting without them.
func (w *waitLock) check(ctx context.Context) {
	if !w.held {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.conn.Ping(ctx); err != nil {
		w.r.log.Warn("outbox: relay waiting lock connection lost; taking the lock again", "error", err)
		w.drop()
	}
}

// connect opens the lock connection and resolves the table's oid.
func (w *waitLock) connect(ctx context.Context) error {
	cfg, err := w.r.pgxConfig(ctx)
	if err != nil {
		return err
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["lock_timeout"] = fmt.Sprintf("%dms", waitLockTimeout.Milliseconds())
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("outbox: waiting lock: connect: %w", err)
	}
	var oid *int32
	if err := conn.QueryRow(ctx, "SELECT c.oid::int4 FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)", w.r.n.table).Scan(&oid); err != nil || oid == nil {
		closeConn(ctx, conn)
		if err == nil {
			err = fmt.Errorf("table %s not found", w.r.n.raw)
		}
		return fmt.Errorf("outbox: waiting lock: look up table: %w", err)
	}
	w.conn, w.oid = conn, *oid
	return nil
}

// drop closes the lock connection, which releases its locks.
func (w *waitLock) drop() {
	w.settle()
	if w.conn != nil {
		closeConn(context.Background(), w.conn)
	}
	w.conn, w.held, w.synced = nil, false, false
}

func closeConn(ctx context.Context, conn *pgx.Conn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = conn.Close(cctx)
}
