package master

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// BenchmarkMasterWrite measures one master transaction inserting one row,
// committed, by one writer: "plain" writes the row with a plain INSERT,
// "outbox" with Master.Insert (the row and its outbox row; on PostgreSQL
// one statement). Compare the two in the same run; `cqrs bench` reports
// the same pair as "master write".
//
//	CQRS_TEST_POSTGRES=... go test -run '^$' -bench MasterWrite -benchtime 3000x ./pkg/cqrs/master/
func BenchmarkMasterWrite(b *testing.B) {
	testenv.Need(b, testenv.EnvPostgres, "PostgreSQL")
	ctx := context.Background()
	db := testenv.Postgres(b)
	for _, table := range []string{"plain", "author"} {
		if _, err := db.Exec(`CREATE TABLE ` + table + ` (id BIGINT PRIMARY KEY, name TEXT NOT NULL, rating NUMERIC(6,2) NULL,
			active BOOLEAN NOT NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NULL)`); err != nil {
			b.Fatal(err)
		}
	}
	if err := outbox.Migrate(ctx, db.DB, db.Dialect); err != nil {
		b.Fatal(err)
	}
	reg := registry.New()
	if err := reg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author"}); err != nil {
		b.Fatal(err)
	}
	m, err := New(ctx, db.DB, reg)
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.Run("plain", func(b *testing.B) {
		q := db.Rebind("INSERT INTO plain (id, name, rating, active, cqrs_revision, cqrs_updated) VALUES (?, ?, ?, ?, 0, now())")
		for b.Loop() {
			id := next.Add(1)
			tx, err := db.BeginTxx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, q, id, "author "+strconv.FormatInt(id, 10), "4.50", true); err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
	})
	b.Run("outbox", func(b *testing.B) {
		for b.Loop() {
			id := next.Add(1)
			tx, err := db.BeginTxx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := m.Insert(ctx, tx, "author", map[string]any{"id": id, "name": "author " + strconv.FormatInt(id, 10), "rating": "4.50", "active": true}); err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
	})
}
