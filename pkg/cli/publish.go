package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// publishWait bounds how long sync waits for its messages while another
// relay holds them (they are claimed but not yet published).
const publishWait = time.Minute

// transportKey carries a transport handed in by a caller (tests use the
// memory transport they read back); the command then neither opens nor
// closes one.
type transportKey struct{}

func withTransport(ctx context.Context, tr transports.Transport) context.Context {
	return context.WithValue(ctx, transportKey{}, tr)
}

// outboxRange remembers where the outbox ids stood before a command wrote
// its messages, so that it can wait for exactly those rows.
type outboxRange struct {
	table string // quoted
	low   int64
}

func (de *dataEnv) outboxTable() string {
	if de.cfg.Master.OutboxTable != "" {
		return de.cfg.Master.OutboxTable
	}
	return outbox.DefaultTable
}

// markOutbox records the highest outbox id before writing.
func (de *dataEnv) markOutbox(ctx context.Context) (*outboxRange, error) {
	qt, err := de.d.Quote(de.outboxTable())
	if err != nil {
		return nil, fmt.Errorf("config: master.outbox_table: %w", err)
	}
	r := &outboxRange{table: qt}
	if err := de.db.QueryRowxContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM "+qt).Scan(&r.low); err != nil {
		return nil, fmt.Errorf("read the outbox %s (run cqrs migrate): %w", de.outboxTable(), err)
	}
	return r, nil
}

// left counts the outbox rows written since markOutbox (up to high) that
// are still there.
func (de *dataEnv) left(ctx context.Context, r *outboxRange, high int64) (int64, error) {
	var n int64
	err := de.db.QueryRowxContext(ctx, de.d.Rebind("SELECT COUNT(*) FROM "+r.table+" WHERE id > ? AND id <= ?"), r.low, high).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count outbox rows: %w", err)
	}
	return n, nil
}

// publishOutbox publishes, with a relay on the configured transport, the
// outbox rows written since markOutbox: it runs relay cycles until none of
// them is left (another relay may publish some of them meanwhile).
func (de *dataEnv) publishOutbox(ctx context.Context, r *outboxRange, written int) error {
	var high int64
	if err := de.db.QueryRowxContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM "+r.table).Scan(&high); err != nil {
		return fmt.Errorf("read the outbox: %w", err)
	}
	tr, _ := ctx.Value(transportKey{}).(transports.Transport)
	if tr == nil {
		var err error
		if tr, err = cqrs.NewTransport(ctx, de.cfg, de.log); err != nil {
			return fmt.Errorf("%w (the %d message(s) stay in the outbox for cqrs relay)", err, written)
		}
		defer tr.Close()
		if tr.Name() == transports.MemoryName {
			de.log.Warn("the memory transport keeps messages inside this process only: nothing outside it receives them (configure rabbitmq or kafka, or use --no-publish and run cqrs relay)")
		}
	}
	relay, err := outbox.NewRelay(de.db, de.d, tr.Publisher(), outbox.RelayOptions{
		Table: de.cfg.Master.OutboxTable, BatchSize: de.cfg.Master.RelayBatchSize, Logger: de.log,
	})
	if err != nil {
		return err
	}
	published := 0
	waitSince := time.Time{}
	var rejected error // the broker refused a message: the relay set it aside
	for {
		rejBefore := relay.Stats().Rejected
		n, err := relay.RunOnce(ctx)
		published += n
		if err != nil {
			return fmt.Errorf("publish: %w (%d published; the rest stay in the outbox for cqrs relay)", err, published)
		}
		if st := relay.Stats(); st.Rejected > rejBefore && st.LastError != nil {
			rejected = st.LastError
		}
		left, err := de.left(ctx, r, high)
		if err != nil {
			return err
		}
		if left == 0 {
			if published == written {
				fmt.Fprintf(de.env.Stderr, "%d message(s) published.\n", published)
			} else { // the relay also took rows other writers had left
				fmt.Fprintf(de.env.Stderr, "%d message(s) published from the outbox, %d of them written by this command.\n", published, written)
			}
			return nil
		}
		if n > 0 {
			waitSince = time.Time{}
			continue
		}
		if rejected != nil {
			return fmt.Errorf("publish: %w (%d published; %d message(s) stay in the outbox, set aside, for cqrs relay to retry)", rejected, published, left)
		}
		// Another relay holds the rest: wait for it, within bounds.
		if waitSince.IsZero() {
			waitSince = time.Now()
		} else if time.Since(waitSince) > publishWait {
			return fmt.Errorf("publish: %d message(s) still in the outbox after %s (held or failing in another relay)", left, publishWait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted while publishing: %d message(s) stay in the outbox for cqrs relay", left)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
