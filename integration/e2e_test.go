// Package integration holds end-to-end tests of gocqrs against real
// databases (PostgreSQL, MariaDB, SQLite) and brokers.
package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// pipeline is one master database, one replica database and the memory
// transport between them.
type pipeline struct {
	t        *testing.T
	mdb, rdb *testenv.DB
	master   *master.Master
	reader   *master.Master // reads author_ref rows in the wire format, for comparisons
	tr       transports.Transport
	eng      *replica.Engine
	rreg     *registry.Registry
}

func newPipeline(t *testing.T, mdb, rdb *testenv.DB, ropts replica.Options) *pipeline {
	t.Helper()
	ctx := context.Background()
	p := &pipeline{t: t, mdb: mdb, rdb: rdb}
	createTable(t, mdb, "author")
	createTable(t, rdb, "author_ref")
	if err := outbox.Migrate(ctx, mdb.DB, mdb.Dialect); err != nil {
		t.Fatal(err)
	}
	if err := replica.Migrate(ctx, rdb.DB, rdb.Dialect, ropts); err != nil {
		t.Fatal(err)
	}
	mreg := registry.New()
	if err := mreg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author", TrackedFields: []string{"name"}}); err != nil {
		t.Fatal(err)
	}
	var err error
	if p.master, err = master.New(ctx, mdb.DB, mreg); err != nil {
		t.Fatal(err)
	}
	readReg := registry.New()
	if err := readReg.RegisterMaster(registry.MasterModel{CQRSID: "author_ref", Table: "author_ref"}); err != nil {
		t.Fatal(err)
	}
	if p.reader, err = master.New(ctx, rdb.DB, readReg); err != nil {
		t.Fatal(err)
	}
	p.rreg = registry.New()
	if err := p.rreg.RegisterReplica(registry.ReplicaModel{CQRSID: "author", Table: "author_ref"}); err != nil {
		t.Fatal(err)
	}
	if ropts.Logger == nil {
		ropts.Logger = quietLogger()
	}
	if p.eng, err = replica.NewEngine(ctx, rdb.DB, rdb.Dialect, p.rreg, ropts); err != nil {
		t.Fatal(err)
	}
	if p.tr, err = transports.New(ctx, transports.Config{Transport: "memory"}.WithDefaults(), quietLogger()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.tr.Close() })
	return p
}

// run starts fn in the background until the test ends, and fails the test if
// fn returns an error other than on shutdown.
func (p *pipeline) run(name string, fn func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	p.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				p.t.Errorf("%s: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			p.t.Errorf("%s did not stop within 30 s", name)
		}
	})
}

func (p *pipeline) startConsumer() {
	c, err := consumer.New(p.tr, p.rreg, p.eng, consumer.Options{
		Queue: "e2e", RetryDelay: 10 * time.Millisecond, Logger: quietLogger(),
	})
	if err != nil {
		p.t.Fatal(err)
	}
	p.run("consumer", c.Run)
	select {
	case <-c.Running():
	case <-time.After(30 * time.Second):
		p.t.Fatal("consumer did not start")
	}
}

func (p *pipeline) startRelay(owner string) *outbox.Relay {
	r, err := outbox.NewRelay(p.mdb.DB, p.mdb.Dialect, p.tr.Publisher(), outbox.RelayOptions{
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond, Logger: quietLogger(), OwnerID: owner,
	})
	if err != nil {
		p.t.Fatal(err)
	}
	p.run("relay", r.Run)
	return r
}

// diff compares every master row with its replica row in the wire format,
// revision and cqrs_updated included; "" means equal.
func (p *pipeline) diff() string {
	ctx := context.Background()
	mrows, err := p.master.Rows(ctx, p.mdb, "author", nil)
	if err != nil {
		return err.Error()
	}
	rrows, err := p.reader.Rows(ctx, p.rdb, "author_ref", nil)
	if err != nil {
		return err.Error()
	}
	if len(mrows) != len(rrows) {
		return fmt.Sprintf("master has %d rows, replica %d", len(mrows), len(rrows))
	}
	for i := range mrows {
		a, _ := wire.MarshalValue(mrows[i])
		b, _ := wire.MarshalValue(rrows[i])
		if string(a) != string(b) {
			return fmt.Sprintf("row %d differs:\n master  %s\n replica %s", i, a, b)
		}
	}
	return ""
}

func (p *pipeline) waitEqual(timeout time.Duration) {
	p.t.Helper()
	last := ""
	testenv.WaitFor(p.t, timeout, "replica equal to master", func() bool {
		n, _, err := outbox.Pending(context.Background(), p.mdb.DB, p.mdb.Dialect)
		if err != nil || n > 0 {
			last = fmt.Sprintf("outbox has %d rows (err %v)", n, err)
			return false
		}
		last = p.diff()
		return last == ""
	})
	if last != "" {
		p.t.Fatal(last)
	}
}

// workload runs writers goroutines, each doing ops random transactions on its
// own range of ids: creates, updates (some several times in one
// transaction), deletes, and rolled-back transactions. It returns the number
// of committed and rolled-back transactions.
func (p *pipeline) workload(writers, ops int, seed uint64) (committed, rolledBack int) {
	p.t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			base := w * 1_000_000
			var live []int
			next := base + 1
			for i := 0; i < ops; i++ {
				tx, err := p.mdb.BeginTxx(ctx, nil)
				if err != nil {
					errs <- err
					return
				}
				created, deleted := []int{}, map[int]bool{}
				err = func() error {
					for k := 0; k < 1+rng.IntN(3); k++ {
						switch op := rng.IntN(10); {
						case op < 4 || len(live) == 0:
							id := next
							next++
							if _, err := p.master.Insert(ctx, tx, "author", authorValues(rng, id)); err != nil {
								return err
							}
							created = append(created, id)
						case op < 8:
							id := live[rng.IntN(len(live))]
							if deleted[id] {
								continue
							}
							v := authorValues(rng, id)
							delete(v, "id")
							if err := p.master.Update(ctx, tx, "author", id, v); err != nil {
								return err
							}
						default:
							id := live[rng.IntN(len(live))]
							if deleted[id] {
								continue
							}
							if err := p.master.Delete(ctx, tx, "author", id); err != nil {
								return err
							}
							deleted[id] = true
						}
					}
					return nil
				}()
				if err != nil {
					_ = tx.Rollback()
					errs <- fmt.Errorf("writer %d op %d: %w", w, i, err)
					return
				}
				if rng.IntN(8) == 0 {
					if err := tx.Rollback(); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					rolledBack++
					mu.Unlock()
					continue
				}
				if err := tx.Commit(); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				committed++
				mu.Unlock()
				live = append(live, created...)
				kept := live[:0]
				for _, id := range live {
					if !deleted[id] {
						kept = append(kept, id)
					}
				}
				live = kept
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		p.t.Fatal(err)
	}
	return committed, rolledBack
}

func authorValues(rng *rand.Rand, id int) map[string]any {
	v := map[string]any{
		"id":     id,
		"name":   fmt.Sprintf("author %d / ü %d", id, rng.IntN(1000)),
		"active": rng.IntN(2) == 0,
	}
	if rng.IntN(3) > 0 {
		v["rating"] = fmt.Sprintf("%d.%02d", rng.IntN(9999), rng.IntN(100))
	}
	if rng.IntN(2) == 0 {
		v["birth_date"] = fmt.Sprintf("19%02d-%02d-%02d", rng.IntN(100), 1+rng.IntN(12), 1+rng.IntN(28))
	}
	if rng.IntN(2) == 0 {
		v["external_uuid"] = fmt.Sprintf("%08x-0000-4000-8000-%012x", rng.Uint32(), rng.Uint64()&0xffffffffffff)
	}
	if rng.IntN(2) == 0 {
		v["payload"] = wire.FieldsOf("n", rng.IntN(100), "tags", []any{"a", "b"})
	}
	if rng.IntN(2) == 0 {
		v["created_at"] = time.Date(2020+rng.IntN(5), time.Month(1+rng.IntN(12)), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1_000_000)*1000, time.UTC)
	}
	return v
}

// TestEndToEnd writes through the master API while the relay and the
// consumer run, then checks that the replica equals the master row by row,
// revisions and timestamps included, on every database.
func TestEndToEnd(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, mdb *testenv.DB) {
		rdb := testenv.Open(t, mdb.Dialect.Name())
		p := newPipeline(t, mdb, rdb, replica.Options{Queue: "e2e"})
		p.startConsumer()
		p.startRelay("e2e-relay")
		committed, rolledBack := p.workload(3, 150, 1)
		if committed == 0 || rolledBack == 0 {
			t.Fatalf("workload committed %d and rolled back %d transactions; want both", committed, rolledBack)
		}
		p.waitEqual(60 * time.Second)
	})
}

// TestShuffledAndDuplicated delivers every message of a workload in random
// order, most of them twice: revision checks and tombstones must still leave
// the replica equal to the master.
func TestShuffledAndDuplicated(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, mdb *testenv.DB) {
		rdb := testenv.Open(t, mdb.Dialect.Name())
		p := newPipeline(t, mdb, rdb, replica.Options{Queue: "e2e"})
		p.workload(2, 60, 7)
		type row struct {
			Topic string `db:"topic"`
			Body  string `db:"body"`
		}
		var rows []row
		if err := sqlx.SelectContext(context.Background(), mdb, &rows, "SELECT topic, body FROM cqrs_outbox ORDER BY id"); err != nil {
			t.Fatal(err)
		}
		if len(rows) < 50 {
			t.Fatalf("only %d messages", len(rows))
		}
		rng := rand.New(rand.NewPCG(3, 4))
		var msgs []row
		for _, r := range rows {
			msgs = append(msgs, r)
			if rng.IntN(4) > 0 {
				msgs = append(msgs, r)
			}
		}
		rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
		p.startConsumer()
		for _, m := range msgs {
			if err := p.tr.Publisher().Publish(m.Topic, message.NewMessage(watermill.NewUUID(), []byte(m.Body))); err != nil {
				t.Fatal(err)
			}
		}
		// The outbox rows were delivered by hand: drop them so waitEqual
		// checks only the rows.
		if _, err := mdb.ExecContext(context.Background(), "DELETE FROM cqrs_outbox"); err != nil {
			t.Fatal(err)
		}
		p.waitEqual(60 * time.Second)
	})
}
