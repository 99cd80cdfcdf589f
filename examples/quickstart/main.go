// Command quickstart shows gocqrs end to end on one machine with nothing to
// install: a master and a replica, each a SQLite file, joined by the memory
// transport.
//
// It creates, updates and deletes thousands of rows on the master (each
// change in the master's own transaction, with its message written to the
// outbox in that transaction), relays the outbox, applies the messages on the
// replica with revision checks while showing progress, then compares master
// and replica row by row and prints the verdict and the rates.
//
//	go run ./examples/quickstart [-rows 5000] [-dir DIR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"

	"github.com/gocqrs/gocqrs/pkg/cqrs"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

const schema = `(
	id INTEGER PRIMARY KEY,
	name VARCHAR(200) NOT NULL,
	email VARCHAR(200) NULL,
	rating DECIMAL(6,2) NULL,
	active BOOL NOT NULL DEFAULT 1,
	joined DATE NULL,
	cqrs_revision INTEGER NOT NULL DEFAULT 0,
	cqrs_updated DATETIME NULL)`

func main() {
	rows := flag.Int("rows", 10000, "rows to create on the master (then half are updated and a tenth deleted)")
	dir := flag.String("dir", "", "directory for master.db and replica.db (default: a new temporary directory, removed at the end)")
	verbose := flag.Bool("v", false, "log what the relay and the consumer do")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *rows, *dir, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func open(path string) (*sqlx.DB, error) {
	db, err := sqlx.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4)
	return db, nil
}

func run(ctx context.Context, n int, dir string, verbose bool) error {
	if n <= 0 {
		return fmt.Errorf("-rows %d: want a positive number", n)
	}
	if dir == "" {
		tmp, err := os.MkdirTemp("", "gocqrs-quickstart-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	mdb, err := open(filepath.Join(dir, "master.db"))
	if err != nil {
		return err
	}
	defer mdb.Close()
	rdb, err := open(filepath.Join(dir, "replica.db"))
	if err != nil {
		return err
	}
	defer rdb.Close()
	for _, s := range []struct {
		db    *sqlx.DB
		table string
	}{{mdb, "customer"}, {rdb, "customer_copy"}} {
		if _, err := s.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+s.table); err != nil {
			return err
		}
		if _, err := s.db.ExecContext(ctx, "CREATE TABLE "+s.table+" "+schema); err != nil {
			return err
		}
		if err := cqrs.Migrate(ctx, s.db); err != nil {
			return err
		}
		if _, err := s.db.ExecContext(ctx, "DELETE FROM cqrs_outbox"); err != nil {
			return err
		}
	}

	// The master side: one model, its messages written by the Master.
	mreg := cqrs.NewRegistry()
	if err := mreg.RegisterMaster(cqrs.MasterModel{CQRSID: "customer", Table: "customer", TrackedFields: []string{"name"}}); err != nil {
		return err
	}
	m, err := cqrs.NewMaster(ctx, mdb, mreg)
	if err != nil {
		return err
	}
	// The replica side: the same cqrs_id lands in another table.
	rreg := cqrs.NewRegistry()
	if err := rreg.RegisterReplica(cqrs.ReplicaModel{CQRSID: "customer", Table: "customer_copy"}); err != nil {
		return err
	}
	eng, err := cqrs.NewEngine(ctx, rdb, rreg, replica.Options{Queue: "quickstart", Logger: logger})
	if err != nil {
		return err
	}
	cfg := cqrs.DefaultConfig() // memory transport
	tr, err := cqrs.NewTransport(ctx, &cfg, logger)
	if err != nil {
		return err
	}
	defer tr.Close()
	cons, err := cqrs.NewConsumer(tr, rreg, eng, consumer.Options{Queue: "quickstart", Logger: logger})
	if err != nil {
		return err
	}
	relayDialect, err := dialect.Of(mdb)
	if err != nil {
		return err
	}
	relay, err := cqrs.NewRelay(mdb, tr.Publisher(), outbox.RelayOptions{PollMin: time.Millisecond, PollMax: 50 * time.Millisecond, Logger: logger})
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- cons.Run(runCtx) }()
	go func() { errc <- relay.Run(runCtx) }()
	select {
	case <-cons.Running():
	case err := <-errc:
		return fmt.Errorf("consumer: %w", err)
	}

	fmt.Printf("gocqrs quickstart: master %s, replica %s, memory transport\n", filepath.Join(dir, "master.db"), filepath.Join(dir, "replica.db"))
	start := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	prog := newProgress(os.Stderr)
	written := 0
	ids := make([]int, 0, n)
	step := func(what string, count int, fn func(tx *sqlx.Tx, i int) error) error {
		for i := 0; i < count; {
			tx, err := mdb.BeginTxx(ctx, nil)
			if err != nil {
				return err
			}
			for j := 0; j < 50 && i < count; j, i = j+1, i+1 {
				if err := fn(tx, i); err != nil {
					tx.Rollback()
					return fmt.Errorf("%s %d: %w", what, i, err)
				}
				written++
			}
			if err := tx.Commit(); err != nil {
				return err
			}
			prog.show(what, written, relay.Stats().Published, cons.Stats().Done())
		}
		return nil
	}
	if err := step("create", n, func(tx *sqlx.Tx, i int) error {
		_, err := m.Insert(ctx, tx, "customer", map[string]any{
			"id": i + 1, "name": fmt.Sprintf("Customer %d", i+1), "email": fmt.Sprintf("c%d@example.com", i+1),
			"rating": fmt.Sprintf("%d.%02d", rng.IntN(100), rng.IntN(100)), "joined": fmt.Sprintf("20%02d-%02d-%02d", rng.IntN(25), 1+rng.IntN(12), 1+rng.IntN(28)),
		})
		if err == nil {
			ids = append(ids, i+1)
		}
		return err
	}); err != nil {
		return err
	}
	if err := step("update", n/2, func(tx *sqlx.Tx, i int) error {
		return m.Update(ctx, tx, "customer", ids[rng.IntN(len(ids))], map[string]any{
			"name": fmt.Sprintf("Customer %d (v%d)", i, rng.IntN(9)), "active": rng.IntN(2) == 0,
		})
	}); err != nil {
		return err
	}
	rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	if err := step("delete", n/10, func(tx *sqlx.Tx, i int) error { return m.Delete(ctx, tx, "customer", ids[i]) }); err != nil {
		return err
	}
	wrote := time.Since(start)

	// Wait until the outbox is empty and every published message is applied
	// (several changes to one row in one transaction make one message, so
	// there are fewer messages than changes).
	for {
		pending, _, err := outbox.Pending(ctx, mdb, relayDialect)
		if err != nil {
			return err
		}
		if pending == 0 && cons.Stats().Done() >= relay.Stats().Published {
			break
		}
		select {
		case err := <-errc:
			return fmt.Errorf("stopped early: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		prog.show("drain", written, relay.Stats().Published, cons.Stats().Done())
	}
	total := time.Since(start)
	prog.done()
	cancel()
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}

	// Compare master and replica row by row, in the wire format.
	reader := cqrs.NewRegistry()
	if err := reader.RegisterMaster(cqrs.MasterModel{CQRSID: "copy", Table: "customer_copy"}); err != nil {
		return err
	}
	rm, err := cqrs.NewMaster(ctx, rdb, reader)
	if err != nil {
		return err
	}
	mrows, err := m.Rows(ctx, mdb, "customer", nil)
	if err != nil {
		return err
	}
	rrows, err := rm.Rows(ctx, rdb, "copy", nil)
	if err != nil {
		return err
	}
	mismatch := 0
	if len(mrows) != len(rrows) {
		mismatch = max(len(mrows), len(rrows))
	} else {
		for i := range mrows {
			a, _ := wire.MarshalValue(mrows[i])
			b, _ := wire.MarshalValue(rrows[i])
			if string(a) != string(b) {
				mismatch++
				if mismatch <= 3 {
					fmt.Printf("  differs: master %s\n           replica %s\n", a, b)
				}
			}
		}
	}
	st := cons.Stats()
	fmt.Printf("master:  %d changes (%d creates, %d updates, %d deletes) committed in %.2fs: %.0f changes/s\n",
		written, n, n/2, n/10, wrote.Seconds(), float64(written)/wrote.Seconds())
	published := relay.Stats().Published
	fmt.Printf("relay:   %d messages published (changes to one row in one transaction make one message)\n", published)
	fmt.Printf("replica: %d applied, %d skipped, %d dead-lettered; all applied %.2fs after the first write: %.0f messages/s end to end\n",
		st.Applied, st.Skipped, st.DeadLettered, total.Seconds(), float64(published)/total.Seconds())
	if mismatch > 0 || st.DeadLettered > 0 {
		fmt.Printf("verdict: DIFFERENT — master %d rows, replica %d rows, %d rows differ\n", len(mrows), len(rrows), mismatch)
		return errors.New("replica differs from master")
	}
	fmt.Printf("verdict: EQUAL — %d rows compared field by field (revision and cqrs_updated included)\n", len(mrows))
	return nil
}
