package replica_test

// Throughput of the replica engine against raw PostgreSQL, measured in the
// same run, one batch of each in turn (the machine's speed and load cancel
// out of the ratio): ratio is against a multi-row VALUES upsert,
// ratio_arrays against the same upsert from one array per column. They need
// CQRS_TEST_POSTGRES. The batched ones are meant for 100k rows:
//
//	go test -run '^$' -bench 'RawBatchedUpsert|EngineApplyBatch' -benchtime 100000x ./pkg/cqrs/replica/
//	go test -run '^$' -bench 'EngineApplyOne' -benchtime 2000x ./pkg/cqrs/replica/
//
// Rows cycle over benchPKs ids: the first 100k are creates, later ones
// updates with the next revision.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

const (
	benchPKs   = 100_000
	benchBatch = 500
)

var benchBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// benchRow is row i of the workload: an author-like row.
type benchRow struct {
	id, rev int64
	name    string
	active  bool
	birth   string
	rating  string
	updated time.Time
}

func rowAt(i int) benchRow {
	return benchRow{
		id: int64(i%benchPKs + 1), rev: int64(i / benchPKs),
		name: fmt.Sprintf("author %d rev %d", i%benchPKs+1, i/benchPKs), active: i%3 != 0,
		birth: fmt.Sprintf("19%02d-%02d-%02d", i%100, 1+i%12, 1+i%28), rating: fmt.Sprintf("%d.%02d", i%1000, i%100),
		updated: benchBase.Add(time.Duration(i) * time.Millisecond),
	}
}

// payload is row r as a decoded SAVE would hold it.
func (r benchRow) payload() *wire.Payload {
	return &wire.Payload{
		SignalType: wire.SignalSave, CQRSID: "author", InstancePK: json.Number(fmt.Sprint(r.id)),
		InstanceData: wire.FieldsOf(
			"cqrs_revision", json.Number(fmt.Sprint(r.rev)),
			"cqrs_updated", r.updated.Format("2006-01-02 15:04:05.000000+00:00"),
			"id", json.Number(fmt.Sprint(r.id)), "name", r.name, "active", r.active,
			"birth_date", r.birth, "rating", json.Number(r.rating)),
	}
}

// benchDB is a fresh PostgreSQL schema with the fixture tables and tombstones.
func benchDB(b *testing.B) *testenv.DB {
	b.Helper()
	db := testenv.Postgres(b)
	for _, s := range fixtures.ReplicaDDL[dialect.Postgres] {
		if _, err := db.ExecContext(context.Background(), s); err != nil {
			b.Fatal(err)
		}
	}
	if err := replica.Migrate(context.Background(), db.DB, db.Dialect, replica.Options{}); err != nil {
		b.Fatal(err)
	}
	return db
}

const rawCols = 7

// rawUpsertSQL is the revision-guarded multi-row upsert a hand-written
// replica would use.
func rawUpsertSQL(rows int) string {
	var sb strings.Builder
	sb.WriteString("INSERT INTO author_ref AS t (id, name, active, birth_date, rating, cqrs_revision, cqrs_updated) VALUES ")
	for i := 0; i < rows; i++ {
		if i > 0 {
			sb.WriteString(", ")
		}
		n := i * rawCols
		fmt.Fprintf(&sb, "($%d, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7)
	}
	sb.WriteString(" ON CONFLICT (id) DO UPDATE SET name = excluded.name, active = excluded.active," +
		" birth_date = excluded.birth_date, rating = excluded.rating, cqrs_revision = excluded.cqrs_revision," +
		" cqrs_updated = excluded.cqrs_updated WHERE t.cqrs_revision < excluded.cqrs_revision")
	return sb.String()
}

// rawBatch writes rows [lo, hi) in one transaction.
func rawBatch(b *testing.B, db *testenv.DB, lo, hi int) {
	ctx := context.Background()
	args := make([]any, 0, (hi-lo)*rawCols)
	for i := lo; i < hi; i++ {
		r := rowAt(i)
		args = append(args, r.id, r.name, r.active, r.birth, r.rating, r.rev, r.updated)
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, rawUpsertSQL(hi-lo), args...); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// rawArraysSQL is the same upsert from one array per column.
const rawArraysSQL = "INSERT INTO author_ref AS t (id, name, active, birth_date, rating, cqrs_revision, cqrs_updated)" +
	" SELECT * FROM unnest($1::integer[], $2::text[], $3::boolean[], $4::date[], $5::text[]::numeric[], $6::integer[], $7::timestamptz[])" +
	" ON CONFLICT (id) DO UPDATE SET name = excluded.name, active = excluded.active," +
	" birth_date = excluded.birth_date, rating = excluded.rating, cqrs_revision = excluded.cqrs_revision," +
	" cqrs_updated = excluded.cqrs_updated WHERE t.cqrs_revision < excluded.cqrs_revision"

// rawArraysBatch writes rows [lo, hi) in one transaction with rawArraysSQL.
func rawArraysBatch(b *testing.B, db *testenv.DB, lo, hi int) {
	ctx := context.Background()
	n := hi - lo
	ids, revs := make([]int64, 0, n), make([]int64, 0, n)
	names, births, ratings := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	actives, updated := make([]bool, 0, n), make([]time.Time, 0, n)
	for i := lo; i < hi; i++ {
		r := rowAt(i)
		ids, revs = append(ids, r.id), append(revs, r.rev)
		names, births, ratings = append(names, r.name), append(births, r.birth), append(ratings, r.rating)
		actives, updated = append(actives, r.active), append(updated, r.updated)
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, rawArraysSQL, ids, names, actives, births, ratings, revs, updated); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// benchEngine returns an engine whose debug log goes to logs: a batch that
// had to be redone or split would show there.
func benchEngine(b *testing.B, db *testenv.DB, logs *logBuffer) *replica.Engine {
	b.Helper()
	reg := registry.New()
	if err := reg.RegisterReplica(registry.ReplicaModel{CQRSID: "author", Table: "author_ref", PK: "id"}); err != nil {
		b.Fatal(err)
	}
	eng, err := replica.NewEngine(context.Background(), db.DB, db.Dialect, reg, replica.Options{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		b.Fatal(err)
	}
	return eng
}

func rowsPerSec(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

// BenchmarkRawBatchedUpsert is the baseline: b.N rows through a
// revision-guarded multi-row upsert, benchBatch rows per transaction.
func BenchmarkRawBatchedUpsert(b *testing.B) {
	db := benchDB(b)
	b.ResetTimer()
	for lo := 0; lo < b.N; lo += benchBatch {
		rawBatch(b, db, lo, min(lo+benchBatch, b.N))
	}
	b.ReportMetric(rowsPerSec(b.N, b.Elapsed()), "rows/s")
}

// compare runs the raw writes (multi-row VALUES, and from arrays) and the
// engine's over the same rows, one batch of each in turn (so that all see
// the same machine load), and reports the rates and the engine's ratio to
// each raw way.
// engine applies rows [lo, hi) and returns the time the engine took
// (building the payloads, the consumer's decoding, is not counted).
func compare(b *testing.B, batch int, engine func(eng *replica.Engine, lo, hi int) time.Duration) {
	rawDB, arrDB, engDB := benchDB(b), benchDB(b), benchDB(b)
	logs := &logBuffer{}
	eng := benchEngine(b, engDB, logs)
	var rawTime, arrTime, engTime time.Duration
	b.ResetTimer()
	for lo := 0; lo < b.N; lo += batch {
		hi := min(lo+batch, b.N)
		start := time.Now()
		rawBatch(b, rawDB, lo, hi)
		rawTime += time.Since(start)
		start = time.Now()
		rawArraysBatch(b, arrDB, lo, hi)
		arrTime += time.Since(start)
		engTime += engine(eng, lo, hi)
	}
	b.StopTimer()
	b.ReportMetric(rowsPerSec(b.N, engTime), "rows/s")
	b.ReportMetric(rowsPerSec(b.N, rawTime), "raw_rows/s")
	b.ReportMetric(rowsPerSec(b.N, arrTime), "raw_arrays_rows/s")
	b.ReportMetric(rawTime.Seconds()/engTime.Seconds(), "ratio")
	b.ReportMetric(arrTime.Seconds()/engTime.Seconds(), "ratio_arrays")

	for _, db := range []*testenv.DB{rawDB, arrDB, engDB} {
		if n := count(b, db, "SELECT COUNT(*) FROM author_ref"); n != min(b.N, benchPKs) {
			b.Fatalf("%d rows, want %d", n, min(b.N, benchPKs))
		}
	}
	if strings.Contains(logs.String(), "CQRS batch") {
		b.Fatalf("batches were redone, split or applied one by one:\n%.2000s", logs.String())
	}
}

// BenchmarkEngineApplyBatch sends the same rows as SAVE messages through
// Engine.ApplyBatch, benchBatch per call, alternating with the raw upsert
// of the same rows on another schema; ratio is engine rows/s over raw
// rows/s. Building the payloads (the consumer's decoding) is not timed.
func BenchmarkEngineApplyBatch(b *testing.B) {
	ctx := context.Background()
	compare(b, benchBatch, func(eng *replica.Engine, lo, hi int) time.Duration {
		dls := make([]replica.Delivery, 0, hi-lo)
		for i := lo; i < hi; i++ {
			dls = append(dls, replica.Delivery{Payload: rowAt(i).payload()})
		}
		start := time.Now()
		res, errs, err := eng.ApplyBatch(ctx, dls)
		if err != nil {
			b.Fatal(err)
		}
		for i := range errs {
			if errs[i] != nil || !res[i].Outcome.Applied() {
				b.Fatalf("row %d: %+v %v", lo+i, res[i], errs[i])
			}
		}
		return time.Since(start)
	})
}

// BenchmarkEngineApplyOne sends the rows through Engine.Apply, one
// transaction per message, alternating with a raw one-row upsert per
// transaction.
func BenchmarkEngineApplyOne(b *testing.B) {
	ctx := context.Background()
	compare(b, 1, func(eng *replica.Engine, lo, _ int) time.Duration {
		dl := replica.Delivery{Payload: rowAt(lo).payload()}
		start := time.Now()
		res, err := eng.Apply(ctx, dl)
		if err != nil || !res.Outcome.Applied() {
			b.Fatalf("row %d: %+v %v", lo, res, err)
		}
		return time.Since(start)
	})
}
