package replica_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// msg builds a payload from a signal, a cqrs_id and instance_data JSON, by
// encoding a whole body and decoding it as a consumer would.
func msg(t *testing.T, signal, cqrsID, data string) *wire.Payload {
	t.Helper()
	fields, err := wire.DecodeFields([]byte(data))
	if err != nil {
		t.Fatalf("instance_data %s: %v", data, err)
	}
	pk, _ := fields.Get("id")
	pkJSON, _ := wire.MarshalValue(pk)
	body := fmt.Sprintf(`{"signal_type":%q,"cqrs_id":%q,"instance_data":%s,"previous_data":null,"instance_pk":%s,`+
		`"correlation_id":null,"retries":0,"expires":null,"meta":{"source":"master"}}`, signal, cqrsID, data, pkJSON)
	p, err := wire.Decode([]byte(body))
	if err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	return p
}

// author returns a SAVE/SYNC instance_data for author_ref.
func author(pk, rev int, updated, name string) string {
	return fmt.Sprintf(`{"cqrs_revision":%d,"cqrs_updated":%q,"id":%d,"name":%q,"active":true}`, rev, updated, pk, name)
}

// del returns a DELETE instance_data.
func del(pk, rev int, updated string) string {
	return fmt.Sprintf(`{"id":%d,"cqrs_revision":%d,"cqrs_updated":%q}`, pk, rev, updated)
}

// logBuffer is a concurrency-safe log sink for asserting log lines.
type logBuffer = testenv.SyncBuffer

// authorEngine returns an engine over the fixture tables with a plain author
// model (no hooks) and the fixture's book model.
func authorEngine(t *testing.T, db *testenv.DB, opts replica.Options, tweak func(*registry.ReplicaModel)) *replica.Engine {
	t.Helper()
	ctx := context.Background()
	reg := registry.New()
	m := fixtures.AuthorRefModel()
	if tweak != nil {
		tweak(&m)
	}
	for _, m := range []registry.ReplicaModel{m, fixtures.BookRefModel()} {
		if err := reg.RegisterReplica(m); err != nil {
			t.Fatal(err)
		}
	}
	eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// freshDB returns an isolated database with the fixture tables and the
// tombstone table.
func freshDB(t *testing.T, db *testenv.DB) *testenv.DB {
	t.Helper()
	fixtures.SetUpReplica(t, db)
	return db
}

func apply(t *testing.T, eng *replica.Engine, p *wire.Payload, direct bool) replica.Result {
	t.Helper()
	res, err := eng.Apply(context.Background(), replica.Delivery{Payload: p, Direct: direct})
	if err != nil {
		t.Fatalf("apply %s %s: %v", p.SignalType, p.CQRSID, err)
	}
	return res
}

func wantOutcome(t *testing.T, what string, got replica.Result, want replica.Outcome) {
	t.Helper()
	if got.Outcome != want {
		t.Errorf("%s: outcome %s, want %s (result %+v)", what, got.Outcome, want, got)
	}
}

// nameOf reads author_ref.name of pk, "" when there is no row.
func nameOf(t *testing.T, db *testenv.DB, pk int) string {
	t.Helper()
	var names []string
	if err := db.SelectContext(context.Background(), &names, db.Rebind("SELECT name FROM author_ref WHERE id = ?"), pk); err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

func count(t testing.TB, db *testenv.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.GetContext(context.Background(), &n, db.Rebind(query), args...); err != nil {
		t.Fatal(err)
	}
	return n
}
