package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// Figure names.
const (
	fWritePlain  = "master write: tx without outbox"
	fWriteOutbox = "master write: tx with outbox"
	fRawAMQP     = "baseline: raw AMQP, pipelined confirms"
	fRawKafka    = "baseline: raw Kafka produce, acks=all, async"
	fRelay       = "relay: pre-filled outbox → broker"
	fRawValues   = "baseline: raw guarded upsert, VALUES only"
	fRawUpsert   = "baseline: raw batched guarded upsert"
	fRawConsume  = "baseline: raw AMQP consume, 1 per worker"
	fRawThrough  = "baseline: raw AMQP publish + consume at once"
	fRawKConsume = "baseline: raw Kafka consume, all partitions"
	fApplyBroker = "replica apply (same figure) vs broker delivery"
	fApplyBound  = "apply ceiling: raw consume (same figure)"
	fApply       = "replica apply: pre-filled queue"
	fDrain       = "end-to-end drain: outbox → replica"
	fDrainBroker = "end-to-end drain (same figure) vs the broker"
	fP50         = "latency commit→applied p50"
	fP99         = "latency commit→applied p99"
)

const cqrsID = "bench_author"

// env is one run's databases and transports.
type env struct {
	o        Options
	mdb, rdb *sqlx.DB
	d        dialect.Dialect
	tr       transports.Transport // the replica's
	// pub is the master's (the relay's) transport. Over RabbitMQ it is a
	// second transport, its own connection, as a master service and
	// cqrs-consume have theirs; otherwise it is tr.
	pub     transports.Transport
	queue   string
	m       *master.Master
	reader  *master.Master
	rreg    *registry.Registry
	eng     *replica.Engine
	kafka   *kafkaBench // Transport "kafka" only
	cleanup []func()
}

func (e *env) close() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
}

func randomName(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

const tableColumns = `(id BIGINT PRIMARY KEY, name VARCHAR(200) NOT NULL, rating NUMERIC(8,2) NULL,
	active BOOLEAN NOT NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated %s NULL)`

func newEnv(ctx context.Context, o Options) (*env, error) {
	e := &env{o: o, queue: randomName("bench")}
	var err error
	if o.PostgresURL != "" {
		e.d, _ = dialect.For("postgres")
		if e.mdb, err = pgSchema(ctx, e, o.PostgresURL, "m"); err != nil {
			return e, err
		}
		if e.rdb, err = pgSchema(ctx, e, o.PostgresURL, "r"); err != nil {
			return e, err
		}
	} else {
		e.d, _ = dialect.For("sqlite")
		dir, err := os.MkdirTemp("", "gocqrs-bench-")
		if err != nil {
			return e, err
		}
		e.cleanup = append(e.cleanup, func() { os.RemoveAll(dir) })
		for _, side := range []struct {
			db   **sqlx.DB
			file string
		}{{&e.mdb, "master.db"}, {&e.rdb, "replica.db"}} {
			db, err := sqlx.Open("sqlite", "file:"+filepath.Join(dir, side.file)+"?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate")
			if err != nil {
				return e, err
			}
			db.SetMaxOpenConns(4)
			*side.db = db
			e.cleanup = append(e.cleanup, func() { db.Close() })
		}
	}
	ts := "TIMESTAMPTZ"
	if e.d.Name() == dialect.SQLite {
		ts = "DATETIME"
	}
	cols := fmt.Sprintf(tableColumns, ts)
	for _, s := range []struct {
		db    *sqlx.DB
		table string
	}{{e.mdb, "bench_author"}, {e.mdb, "bench_plain"}, {e.rdb, "bench_author_ref"}, {e.rdb, "bench_upsert"}, {e.rdb, "bench_upsert_arrays"}} {
		if s.table == "bench_upsert_arrays" && e.d.Name() != dialect.Postgres {
			continue // the raw upsert from arrays is PostgreSQL's
		}
		if _, err := s.db.ExecContext(ctx, "CREATE TABLE "+s.table+" "+cols); err != nil {
			return e, fmt.Errorf("create %s: %w", s.table, err)
		}
	}
	if err := outbox.Migrate(ctx, e.mdb, e.d); err != nil {
		return e, err
	}
	if err := replica.Migrate(ctx, e.rdb, e.d, replica.Options{}); err != nil {
		return e, err
	}
	mreg := registry.New()
	if err := mreg.RegisterMaster(registry.MasterModel{CQRSID: cqrsID, Table: "bench_author"}); err != nil {
		return e, err
	}
	if e.m, err = master.New(ctx, e.mdb, mreg); err != nil {
		return e, err
	}
	readReg := registry.New()
	if err := readReg.RegisterMaster(registry.MasterModel{CQRSID: "ref", Table: "bench_author_ref"}); err != nil {
		return e, err
	}
	if e.reader, err = master.New(ctx, e.rdb, readReg); err != nil {
		return e, err
	}
	e.rreg = registry.New()
	if err := e.rreg.RegisterReplica(registry.ReplicaModel{CQRSID: cqrsID, Table: "bench_author_ref"}); err != nil {
		return e, err
	}
	if e.eng, err = replica.NewEngine(ctx, e.rdb, e.d, e.rreg, replica.Options{Queue: e.queue, Logger: o.Logger}); err != nil {
		return e, err
	}
	cfg := transports.Config{Transport: o.Transport, URL: o.AMQPURL, Exchange: randomName("bench_x")}
	cfg.Memory.MaxPending = 4*o.Rows + 100000
	// The RabbitMQ prefetch cqrs-consume sets for this batch size.
	cfg.Prefetch = (&cqrs.Config{Replica: cqrs.ReplicaConfig{BatchSize: o.BatchSize}}).TransportConfig().Prefetch
	if o.Transport == transports.KafkaName {
		if err := e.setupKafka(&cfg); err != nil {
			return e, err
		}
		// One consumer-group member working on Workers partitions at once,
		// as cqrs-consume -w runs Kafka.
		if cfg.Kafka.Workers == 0 {
			cfg.Kafka.Workers = o.Workers
		}
	}
	if e.tr, err = transports.New(ctx, cfg.WithDefaults(), o.Logger); err != nil {
		return e, err
	}
	e.cleanup = append(e.cleanup, func() { e.tr.Close() })
	e.pub = e.tr
	if o.Transport == transports.RabbitMQName {
		if e.pub, err = transports.New(ctx, cfg.WithDefaults(), o.Logger); err != nil {
			return e, err
		}
		e.cleanup = append(e.cleanup, func() { e.pub.Close() })
	}
	if _, err := e.tr.ReplicaSubscriptions(e.queue, transports.DefaultDeadLetterQueue(e.queue), []string{cqrsID}); err != nil {
		return e, err
	}
	if o.Transport == transports.RabbitMQName {
		e.cleanup = append(e.cleanup, func() {
			_ = deleteAMQP(o.AMQPURL, cfg.Exchange, e.queue, transports.DefaultDeadLetterQueue(e.queue))
		})
	}
	return e, nil
}

func pgSchema(ctx context.Context, e *env, base, side string) (*sqlx.DB, error) {
	admin, err := sqlx.Open("pgx", base)
	if err != nil {
		return nil, err
	}
	schema := randomName("bench_" + side)
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		return nil, fmt.Errorf("create schema: %w", err)
	}
	e.cleanup = append(e.cleanup, func() {
		_, _ = admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	db, err := sqlx.Open("pgx", u.String())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(8)
	e.cleanup = append(e.cleanup, func() { db.Close() })
	return db, nil
}

func runOnce(ctx context.Context, o Options, rep *Report) error {
	e, err := newEnv(ctx, o)
	defer e.close()
	if err != nil {
		return err
	}
	p := o.Progress
	// Each measured phase reports its CPU use on the progress output: it
	// tells whether the machine's cores were the bound.
	userPhase := o.Phase
	o.Phase = func(name string) func() {
		end := userPhase(name)
		at := sampleCPU()
		return func() {
			u := cpuSince(at)
			end()
			fmt.Fprintf(p, "    %s: %s\n", name, u)
		}
	}
	// 1. master write overhead.
	fmt.Fprintf(p, "  master write: %d transactions each way\n", o.WriteTxs)
	endPhase := o.Phase("write")
	plain, withOutbox, err := e.writeBoth(ctx, o.WriteTxs)
	endPhase()
	if err != nil {
		return err
	}
	rep.add(fWritePlain, "tx/s", float64(o.WriteTxs)/plain.Seconds())
	fw := rep.add(fWriteOutbox, "tx/s", float64(o.WriteTxs)/withOutbox.Seconds())
	fw.Against, fw.Goal, fw.Higher, fw.GoalIsRatio = fWritePlain, 1/1.5, true, true
	if err := e.reset(ctx); err != nil {
		return err
	}

	// 2. relay from a pre-filled outbox, with its baseline.
	relay, err := outbox.NewRelay(e.mdb, e.d, e.pub.Publisher(), outbox.RelayOptions{BatchSize: o.RelayBatch, Logger: o.Logger})
	if err != nil {
		return err
	}
	rawPub, rawCons := "", "" // the broker baselines' figures, if any
	var consRate float64      // the raw consume of this run, if any
	var relayDur time.Duration
	switch o.Transport {
	case transports.RabbitMQName:
		fmt.Fprintf(p, "  relay and its baseline, a raw AMQP publisher, in %d rounds: fill the outbox, publish raw, relay\n", relayTurns)
		pub, cons, dur, err := e.relayRounds(ctx, relay, o.Phase)
		if err != nil {
			return err
		}
		relayDur = dur
		rep.add(fRawAMQP, "msg/s", pub)
		rep.add(fRawConsume, "msg/s", cons)
		rawPub, rawCons, consRate = fRawAMQP, fRawConsume, cons
	case transports.KafkaName:
		fmt.Fprintf(p, "  baseline: raw Kafka producer and consumer (Sarama), %d messages\n", o.Rows)
		pub, cons, err := e.kafka.raw(ctx, o.Rows, sampleBody())
		if err != nil {
			return fmt.Errorf("raw Kafka baseline: %w", err)
		}
		rep.add(fRawKafka, "msg/s", pub)
		rep.add(fRawKConsume, "msg/s", cons)
		rawPub, rawCons, consRate = fRawKafka, fRawKConsume, cons
	}
	if o.Transport != transports.RabbitMQName { // measured in rounds above otherwise
		fmt.Fprintf(p, "  filling the outbox with %d creates\n", o.Rows)
		if err := e.prefillCreates(ctx, 1, o.Rows); err != nil {
			return err
		}
		fmt.Fprintln(p, "  relay: publishing the outbox")
		endPhase = o.Phase("relay")
		relayDur, err = timeIt(func() error { return e.drainOutbox(ctx, relay, o.Rows) })
		endPhase()
		if err != nil {
			return err
		}
	}
	fr := rep.add(fRelay, "msg/s", float64(o.Rows)/relayDur.Seconds())
	if rawPub != "" {
		fr.Against, fr.Goal, fr.Higher, fr.GoalIsRatio = rawPub, 0.7, true, true
	}

	// 3. replica apply from the pre-filled queue, with its baseline.
	rec := newRecorder(e.eng)
	stopConsumer, cons, rawRate, rawValuesRate, applyRate, err := e.applyRounds(ctx, rec, o.Phase)
	if err != nil {
		return err
	}
	printBatches(p, "apply", rec)
	if rawValuesRate != rawRate {
		rep.add(fRawValues, "rows/s", rawValuesRate)
	}
	rep.add(fRawUpsert, "rows/s", rawRate)
	fa := rep.add(fApply, "rows/s", applyRate)
	fa.Against, fa.Goal, fa.Higher, fa.GoalIsRatio = fRawUpsert, 0.5, true, true
	if rawCons != "" {
		// What plain clients consume from the broker, for comparison
		// (measured once per run, right after the raw publish, while the
		// replica's apply is measured in rounds; it is not a hard bound).
		fb := rep.add(fApplyBroker, "rows/s", fa.Runs[len(fa.Runs)-1])
		fb.Against = rawCons
		// What the broker delivers to raw consumers that write nothing is
		// as far as any replica's apply over it can go: this puts it
		// beside the raw upsert the apply's goal is a share of.
		fc := rep.add(fApplyBound, "msg/s", consRate)
		fc.Against = fRawUpsert
	}

	// 4. end-to-end drain of updates, relay and consumer running together.
	fmt.Fprintf(p, "  filling the outbox with %d updates\n", o.Rows)
	if err := e.prefillUpdates(ctx, o.Rows); err != nil {
		stopConsumer()
		return err
	}
	drainBound := rawPub // what bounds a drain through the broker
	if o.Transport == transports.RabbitMQName {
		fmt.Fprintf(p, "  baseline: raw AMQP publisher and consumer at once, %d messages\n", o.Rows)
		through, err := rawAMQPThrough(ctx, o.AMQPURL, o.Rows, o.Workers, sampleBody())
		if err != nil {
			stopConsumer()
			return fmt.Errorf("raw AMQP pass-through baseline: %w", err)
		}
		rep.add(fRawThrough, "msg/s", through)
		drainBound = fRawThrough
	}
	before := cons.Done()
	rec.batches() // count the drain's applier calls only
	rctx, stopRelay := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = relay.Run(rctx) }()
	fmt.Fprintln(p, "  drain: relay and replica running")
	endPhase = o.Phase("drain")
	start := time.Now()
	err = waitFor(ctx, 10*time.Minute, func() bool { return cons.Done()-before >= int64(o.Rows) })
	endPhase()
	if err != nil {
		stopRelay()
		wg.Wait()
		stopConsumer()
		return fmt.Errorf("drain: %w", err)
	}
	printBatches(p, "drain", rec)
	fd := rep.add(fDrain, "rows/s", float64(o.Rows)/time.Since(start).Seconds())
	fd.Goal, fd.Higher = 10000, true
	if drainBound != "" {
		// Every row crosses the broker once: the drain cannot exceed what
		// a raw client gets through it (RabbitMQ: published and consumed
		// at once; Kafka: produced).
		fb := rep.add(fDrainBroker, "rows/s", fd.Runs[len(fd.Runs)-1])
		fb.Against = drainBound
	}

	// 5. latency at a fixed offered rate.
	fmt.Fprintf(p, "  latency: %d rows/s for %s\n", o.Rate, o.RateFor)
	endPhase = o.Phase("latency")
	p50, p99, err := e.latency(ctx, rec, relay, o.Rate, o.RateFor)
	endPhase()
	stopRelay()
	wg.Wait()
	stopConsumer()
	if err != nil {
		return err
	}
	rep.add(fP50, "ms", p50)
	f99 := rep.add(fP99, "ms", p99)
	f99.Goal, f99.Higher = 100, false

	verdict, err := e.compare(ctx)
	if err != nil {
		return err
	}
	if verdict != "" {
		rep.Equal = false
		rep.Compared = append(rep.Compared, "replica DIFFERS from master: "+verdict)
	} else {
		n, _ := e.count(ctx)
		rep.Compared = append(rep.Compared, fmt.Sprintf("replica equal to master, %d rows compared field by field", n))
	}
	return nil
}

func timeIt(fn func() error) (time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), err
}

func waitFor(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

func sampleBody() []byte {
	p := &wire.Payload{SignalType: wire.SignalSave, CQRSID: cqrsID, InstancePK: 1, Meta: wire.NewFields(),
		InstanceData: wire.FieldsOf(wire.RevisionKey, 0, wire.UpdatedKey, "2026-11-27 10:00:00.123456+00:00",
			"id", 1, "name", "author 1", "rating", 4.5, "active", true)}
	b, _ := wire.Encode(p)
	return b
}

// writeBoth times n master transactions each way: without the outbox
// (writePlain) and with it (writeOutbox). The two take turns in blocks of
// writeBlock transactions, so that a change in what else the machine is
// doing falls on both alike; a first block each way, not timed, warms the
// connections and statement caches.
func (e *env) writeBoth(ctx context.Context, n int) (plain, withOutbox time.Duration, err error) {
	const writeBlock = 100
	next := 1
	if err := e.writePlain(ctx, next, writeBlock); err != nil {
		return 0, 0, err
	}
	if err := e.writeOutbox(ctx, next, writeBlock); err != nil {
		return 0, 0, err
	}
	next += writeBlock
	for done := 0; done < n; {
		k := min(writeBlock, n-done)
		d, err := timeIt(func() error { return e.writePlain(ctx, next, k) })
		if err != nil {
			return 0, 0, err
		}
		plain += d
		if d, err = timeIt(func() error { return e.writeOutbox(ctx, next, k) }); err != nil {
			return 0, 0, err
		}
		withOutbox += d
		next, done = next+k, done+k
	}
	return plain, withOutbox, nil
}

// writePlain writes rows first..first+n-1 of the plain table, one
// transaction each.
func (e *env) writePlain(ctx context.Context, first, n int) error {
	q := e.d.Rebind("INSERT INTO bench_plain (id, name, rating, active, cqrs_revision, cqrs_updated) VALUES (?, ?, ?, ?, 0, ?)")
	for i := first; i < first+n; i++ {
		tx, err := e.mdb.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, q, i, "author "+strconv.Itoa(i), "4.50", true, time.Now().UTC()); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// writeOutbox writes rows first..first+n-1 of the master table with
// Master.Insert, one transaction each.
func (e *env) writeOutbox(ctx context.Context, first, n int) error {
	for i := first; i < first+n; i++ {
		tx, err := e.mdb.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := e.m.Insert(ctx, tx, cqrsID, map[string]any{"id": i, "name": "author " + strconv.Itoa(i), "rating": "4.50", "active": true}); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// reset empties the master table and the outbox after the write measurement.
func (e *env) reset(ctx context.Context) error {
	for _, q := range []string{"DELETE FROM bench_author", "DELETE FROM cqrs_outbox"} {
		if _, err := e.mdb.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// prefillCreates commits master rows first..last and their outbox rows, in
// transactions of 1000.
func (e *env) prefillCreates(ctx context.Context, first, last int) error {
	const chunk = 1000
	for lo := first; lo <= last; lo += chunk {
		tx, err := e.mdb.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		var pks []any
		for i := lo; i < lo+chunk && i <= last; i++ {
			if _, err := tx.ExecContext(ctx, e.d.Rebind("INSERT INTO bench_author (id, name, rating, active) VALUES (?, ?, ?, ?)"),
				i, "author "+strconv.Itoa(i), fmt.Sprintf("%d.%02d", i%1000, i%100), i%2 == 0); err != nil {
				tx.Rollback()
				return err
			}
			pks = append(pks, i)
		}
		if err := e.m.SaveMany(ctx, tx, cqrsID, pks, master.Created()); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) prefillUpdates(ctx context.Context, n int) error {
	const chunk = 1000
	for lo := 1; lo <= n; lo += chunk {
		var pks []any
		for i := lo; i < lo+chunk && i <= n; i++ {
			pks = append(pks, i)
		}
		tx, err := e.mdb.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if err := e.m.UpdateMany(ctx, tx, cqrsID, pks, map[string]any{"name": fmt.Sprintf("updated %d", lo)}); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// drainOutbox runs r as `cqrs relay` does (Relay.Run: claims, publishing
// and deletes overlap) until it has published n rows since it was created
// and the outbox is empty.
func (e *env) drainOutbox(ctx context.Context, r *outbox.Relay, n int) error {
	rctx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- r.Run(rctx) }()
	published := func() bool { return r.Stats().Published >= int64(n) }
	err := waitFor(ctx, 10*time.Minute, published)
	if err == nil {
		err = waitFor(ctx, time.Minute, func() bool {
			left, _, perr := outbox.Pending(ctx, e.mdb, e.d)
			return perr == nil && left == 0
		})
	}
	stop()
	if rerr := <-stopped; rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		st := r.Stats()
		return fmt.Errorf("relay published %d of %d rows (errors %d, last %v): %w", st.Published, n, st.Errors, st.LastError, err)
	}
	return nil
}

// rawUpsert is the database's limit: rows first..last in revision-guarded
// upserts of batch rows per transaction, written by hand. It returns the
// time they took the multi-row VALUES way (one parameter per value, table
// bench_upsert) and, on PostgreSQL, the time they took from one array per
// column (unnest, table bench_upsert_arrays; 0 elsewhere), each way
// writing the whole range before the other starts.
func (e *env) rawUpsert(ctx context.Context, first, last, batch int) (values, arrays time.Duration, err error) {
	now := time.Now().UTC()
	const tail = " ON CONFLICT (id) DO UPDATE SET name = excluded.name, rating = excluded.rating, active = excluded.active," +
		" cqrs_revision = excluded.cqrs_revision, cqrs_updated = excluded.cqrs_updated WHERE t.cqrs_revision < excluded.cqrs_revision"
	write := func(q string, args []any) error {
		tx, err := e.rdb.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	start := time.Now()
	for lo := first; lo <= last; lo += batch {
		hi := min(lo+batch-1, last)
		vals := make([]string, 0, hi-lo+1)
		args := make([]any, 0, 6*(hi-lo+1))
		for i := lo; i <= hi; i++ {
			vals = append(vals, "(?, ?, ?, ?, ?, ?)")
			args = append(args, i, "author "+strconv.Itoa(i), "4.50", true, 1, now)
		}
		q := "INSERT INTO bench_upsert AS t (id, name, rating, active, cqrs_revision, cqrs_updated) VALUES " +
			strings.Join(vals, ", ") + tail
		if err := write(e.d.Rebind(q), args); err != nil {
			return 0, 0, err
		}
	}
	values = time.Since(start)
	if e.d.Name() != dialect.Postgres {
		return values, 0, nil
	}
	const q = "INSERT INTO bench_upsert_arrays AS t (id, name, rating, active, cqrs_revision, cqrs_updated)" +
		" SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]::numeric[], $4::boolean[], $5::integer[], $6::timestamptz[])" + tail
	start = time.Now()
	for lo := first; lo <= last; lo += batch {
		hi := min(lo+batch-1, last)
		n := hi - lo + 1
		ids, names, ratings := make([]int64, 0, n), make([]string, 0, n), make([]string, 0, n)
		actives, revs, updated := make([]bool, 0, n), make([]int64, 0, n), make([]time.Time, 0, n)
		for i := lo; i <= hi; i++ {
			ids, names, ratings = append(ids, int64(i)), append(names, "author "+strconv.Itoa(i)), append(ratings, "4.50")
			actives, revs, updated = append(actives, true), append(revs, 1), append(updated, now)
		}
		if err := write(q, []any{ids, names, ratings, actives, revs, updated}); err != nil {
			return 0, 0, err
		}
	}
	return values, time.Since(start), nil
}

// rawRates formats a round's raw upsert rates: VALUES, and arrays when
// measured.
func rawRates(n int, values, arrays time.Duration) string {
	out := fmt.Sprintf("VALUES %.0f rows/s", float64(n)/values.Seconds())
	if arrays > 0 {
		out += fmt.Sprintf(", arrays %.0f rows/s", float64(n)/arrays.Seconds())
	}
	return out
}

// workers are the replica's consumers, as `cqrs-consume -w N` runs them:
// one consumer (router, subscription, batch collector) per worker on the
// same queue.
type workers []*consumer.Consumer

// Done sums the workers' finished messages.
func (w workers) Done() int64 {
	var n int64
	for _, c := range w {
		n += c.Stats().Done()
	}
	return n
}

func (e *env) startConsumer(ctx context.Context, ap consumer.Applier) (stop func(), w workers, err error) {
	n := e.o.Workers
	if e.o.Transport != transports.RabbitMQName {
		// As cqrs-consume: the memory transport fans every message out to
		// every subscriber, and Kafka's workers are partitions of one
		// consumer-group member.
		n = 1
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, n)
	stop = func() {
		cancel()
		for range w {
			<-done
		}
	}
	for range n {
		c, err := consumer.New(e.tr, e.rreg, ap, consumer.Options{Queue: e.queue, BatchSize: e.o.BatchSize, Logger: e.o.Logger})
		if err != nil {
			stop()
			return nil, nil, err
		}
		w = append(w, c)
		go func() { done <- c.Run(cctx) }()
		select {
		case <-c.Running():
		case err := <-done:
			w = w[:len(w)-1]
			stop()
			return nil, nil, fmt.Errorf("consumer: %w", err)
		}
	}
	return stop, w, nil
}

// latency offers rate updates per second for dur, one transaction every
// 10 ms, and returns the p50 and p99 of commit→applied in milliseconds.
func (e *env) latency(ctx context.Context, rec *recorder, relay *outbox.Relay, rate int, dur time.Duration) (p50, p99 float64, err error) {
	perTick := max(1, rate/100)
	ticks := int(dur / (10 * time.Millisecond))
	committed := map[string]time.Time{}
	// A pk is updated again when the load wraps around Rows; it counts as
	// applied once all its updates are.
	commits := map[string]int{}
	rec.start()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	pk := 0
	for t := 0; t < ticks; t++ {
		<-tick.C
		tx, err := e.mdb.BeginTxx(ctx, nil)
		if err != nil {
			return 0, 0, err
		}
		var keys []string
		for i := 0; i < perTick; i++ {
			pk = pk%e.o.Rows + 1
			if err := e.m.Update(ctx, tx, cqrsID, pk, map[string]any{"name": fmt.Sprintf("latency %d", t)}); err != nil {
				tx.Rollback()
				return 0, 0, err
			}
			keys = append(keys, strconv.Itoa(pk))
		}
		if err := tx.Commit(); err != nil {
			return 0, 0, err
		}
		now := time.Now()
		relay.Wake()
		for _, k := range keys {
			committed[k] = now
			commits[k]++
		}
	}
	want := len(committed)
	var lat []float64
	err = waitFor(ctx, 2*time.Minute, func() bool {
		lat = rec.latencies(committed, commits)
		return len(lat) >= want
	})
	if err != nil {
		return 0, 0, fmt.Errorf("latency: %d of %d rows applied: %w", len(lat), want, err)
	}
	sort.Float64s(lat)
	return lat[len(lat)*50/100], lat[min(len(lat)-1, len(lat)*99/100)], nil
}

func (e *env) compare(ctx context.Context) (string, error) {
	mrows, err := e.m.Rows(ctx, e.mdb, cqrsID, nil)
	if err != nil {
		return "", err
	}
	rrows, err := e.reader.Rows(ctx, e.rdb, "ref", nil)
	if err != nil {
		return "", err
	}
	if len(mrows) != len(rrows) {
		return fmt.Sprintf("master has %d rows, replica %d", len(mrows), len(rrows)), nil
	}
	for i := range mrows {
		a, _ := wire.MarshalValue(mrows[i])
		b, _ := wire.MarshalValue(rrows[i])
		if string(a) != string(b) {
			return fmt.Sprintf("row %d: master %s, replica %s", i, a, b), nil
		}
	}
	return "", nil
}

func (e *env) count(ctx context.Context) (int, error) {
	var n int
	err := e.rdb.GetContext(ctx, &n, "SELECT COUNT(*) FROM bench_author_ref")
	return n, err
}

// printBatches prints how many applier calls the phase made and how many
// messages each carried on average (with batching, how full the batches
// were).
func printBatches(p io.Writer, phase string, rec *recorder) {
	calls, msgs, busy := rec.batches()
	if calls > 0 {
		fmt.Fprintf(p, "    %s: %d applier calls, %.1f messages each, %.2f ms each (%.1f µs per message)\n", phase, calls,
			float64(msgs)/float64(calls), float64(busy.Microseconds())/1000/float64(calls),
			float64(busy.Nanoseconds())/1000/float64(msgs))
	}
}

// recorder wraps the engine and notes when each pk was last applied, for
// the latency measurement.
type recorder struct {
	eng *replica.Engine
	mu  sync.Mutex
	on  bool
	at  map[string]time.Time
	n   map[string]int // messages applied per pk since start

	// Applier calls, the messages they carried and the time they took
	// (ns), for the progress output (how full the replica's batches were,
	// how long the engine took for them).
	calls, msgs, busy atomic.Int64
}

// batches returns the applier calls, their messages and the time they
// took since the last call.
func (r *recorder) batches() (calls, msgs int64, busy time.Duration) {
	return r.calls.Swap(0), r.msgs.Swap(0), time.Duration(r.busy.Swap(0))
}

func newRecorder(eng *replica.Engine) *recorder {
	return &recorder{eng: eng, at: map[string]time.Time{}, n: map[string]int{}}
}

func (r *recorder) start() {
	r.mu.Lock()
	r.on = true
	r.at = map[string]time.Time{}
	r.n = map[string]int{}
	r.mu.Unlock()
}

func (r *recorder) note(dls []replica.Delivery, took time.Duration) {
	r.calls.Add(1)
	r.msgs.Add(int64(len(dls)))
	r.busy.Add(int64(took))
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.on {
		return
	}
	now := time.Now()
	for _, dl := range dls {
		k := fmt.Sprint(dl.Payload.InstancePK)
		r.at[k] = now
		r.n[k]++
	}
}

// Apply implements consumer.Applier.
func (r *recorder) Apply(ctx context.Context, dl replica.Delivery) (replica.Result, error) {
	start := time.Now()
	res, err := r.eng.Apply(ctx, dl)
	if err == nil {
		r.note([]replica.Delivery{dl}, time.Since(start))
	}
	return res, err
}

// ApplyBatch implements consumer.BatchApplier.
func (r *recorder) ApplyBatch(ctx context.Context, dls []replica.Delivery) ([]replica.Result, []error, error) {
	start := time.Now()
	res, errs, err := r.eng.ApplyBatch(ctx, dls)
	if err == nil {
		r.note(dls, time.Since(start))
	}
	return res, errs, err
}

func (r *recorder) latencies(committed map[string]time.Time, commits map[string]int) []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []float64
	for k, c := range committed {
		// Messages of one pk are applied in order: once all of its updates
		// are, a is when the last one was. It may precede c by the time
		// between Commit returning and c being taken (a loaded machine),
		// which counts as 0.
		if a, ok := r.at[k]; ok && r.n[k] >= commits[k] {
			out = append(out, float64(max(0, a.Sub(c)).Microseconds())/1000)
		}
	}
	return out
}

var errNoAMQP = errors.New("bench: the rabbitmq transport needs an AMQP URL")

// share is round r's rows, first..last, when n rows are measured in turns
// rounds (empty, last < first, for some rounds when n < turns).
func share(r, turns, n int) (first, last int) { return r*n/turns + 1, (r + 1) * n / turns }

// applyTurns is the number of turns the replica's apply and the raw upsert
// take over RabbitMQ (one elsewhere).
const applyTurns = 4

// applyRounds measures the replica applying the queue (o.Rows messages)
// against the raw upsert (rawUpsert) of as many rows. Over RabbitMQ they
// take turns, as the relay and its baseline do (relayRounds): each round
// upserts its share of the rows raw, then starts the replica's workers and
// times them until they have applied that share, then stops them (untimed:
// what they finish while stopping counts for neither), so that a change in
// the machine's load falls on both alike. The raw upsert is written two
// ways on PostgreSQL (rawUpsert); each round counts the faster. A round
// whose share the workers applied while the round before stopped them
// (when a share is smaller than what they hold in flight) is not timed,
// nor is what the first workers of a round apply while the others start. It returns the workers of the
// last round, still running, with their stop function, and the rates in
// rows/s: the raw upsert (each round's faster way), the raw upsert the
// VALUES way, and the replica's (the rows applied within the timed windows
// over their time).
func (e *env) applyRounds(ctx context.Context, rec *recorder, phase func(string) func()) (stop func(), cons workers, raw, rawValues, apply float64, err error) {
	n, turns := e.o.Rows, 1
	if e.o.Transport == transports.RabbitMQName {
		turns = applyTurns
	}
	p := e.o.Progress
	fmt.Fprintf(p, "  replica apply and its baseline, a raw batched guarded upsert, in %d round(s): upsert raw, consume the queue\n", turns)
	var rawDur, rawValuesDur, applyDur time.Duration
	var done, timed int64 // messages applied in all, and within the timed windows
	for r := range turns {
		first, last := share(r, turns, n)
		if last < first {
			continue
		}
		dv, da, err := e.rawUpsert(ctx, first, last, 500)
		if err != nil {
			return nil, nil, 0, 0, 0, fmt.Errorf("raw upsert baseline: %w", err)
		}
		rawValuesDur += dv
		d := dv
		if da > 0 {
			d = min(dv, da)
		}
		rawDur += d
		want := int64(last) - done // what is left of the rounds so far
		if want <= 0 && r < turns-1 {
			fmt.Fprintf(p, "    round %d: %d rows: raw upsert %s; the replica applied its share while stopping\n",
				r+1, last-first+1, rawRates(last-first+1, dv, da))
			continue
		}
		end := phase("apply")
		launched := time.Now()
		stop, cons, err = e.startConsumer(ctx, rec)
		if err != nil {
			end()
			return nil, nil, 0, 0, 0, err
		}
		// The clock starts once every worker runs: what the first ones
		// applied meanwhile is not counted.
		start, before := time.Now(), cons.Done()
		err = waitFor(ctx, 10*time.Minute, func() bool { return cons.Done() >= want })
		took, got := time.Since(start), cons.Done()-before
		end()
		if err != nil {
			stop()
			return nil, nil, 0, 0, 0, fmt.Errorf("apply: %d of %d messages done: %w", done+before+got, n, err)
		}
		note := ""
		if got == 0 && cons.Done() > 0 {
			// A share so small that the workers applied it while starting:
			// the round is timed from their start instead.
			took, got, note = time.Since(launched), cons.Done(), " (start-up included)"
		}
		if got > 0 {
			applyDur, timed = applyDur+took, timed+got
			if turns > 1 {
				fmt.Fprintf(p, "    round %d: %d rows: raw upsert %s, replica %.0f rows/s%s\n", r+1, last-first+1,
					rawRates(last-first+1, dv, da), float64(got)/took.Seconds(), note)
			}
		}
		if r == turns-1 {
			break // the last round's workers stay up for the drain
		}
		stop()
		done += cons.Done()
	}
	return stop, cons, float64(n) / rawDur.Seconds(), float64(n) / rawValuesDur.Seconds(), float64(timed) / applyDur.Seconds(), nil
}
