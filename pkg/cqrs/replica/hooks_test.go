package replica_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// hookCall records what one hook received.
type hookCall struct {
	step     string
	data     *wire.Fields
	existing *wire.Fields
	pk       any
	meta     any
	sync     bool
	hasTx    bool
}

type recorder struct {
	mu    sync.Mutex
	calls []hookCall
}

func (r *recorder) add(c hookCall) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
}

func (r *recorder) last(t *testing.T, step string) hookCall {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 || r.calls[len(r.calls)-1].step != step {
		t.Fatalf("last hook call is not %s: %+v", step, r.calls)
	}
	return r.calls[len(r.calls)-1]
}

func metaSource(meta any) any {
	f, ok := meta.(*wire.Fields)
	if !ok {
		return nil
	}
	v, _ := f.Get("source")
	return v
}

func TestHooksReceiveMappedDataAndMeta(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		freshDB(t, db)
		ctx := context.Background()
		for _, deliverMeta := range []bool{true, false} {
			rec := &recorder{}
			reg := registry.New()
			err := reg.RegisterReplica(registry.ReplicaModel{
				CQRSID: "book", Table: "book_ref", PK: "id", DeliverMeta: deliverMeta,
				Mapping: []registry.Mapping{{From: "id", To: "id"}, {From: "title", To: "name"}, {From: "author", To: "author_id"}},
				Hooks: registry.ReplicaHooks{
					Create: func(ctx context.Context, ac *registry.ApplyContext, data *wire.Fields) error {
						rec.add(hookCall{step: "create", data: data.Clone(), meta: ac.Meta, sync: ac.Sync, hasTx: ac.Tx != nil})
						return replica.DefaultCreate(ctx, ac, data)
					},
					Update: func(ctx context.Context, ac *registry.ApplyContext, existing, data *wire.Fields) error {
						rec.add(hookCall{step: "update", data: data.Clone(), existing: existing.Clone(), meta: ac.Meta, sync: ac.Sync, hasTx: ac.Tx != nil})
						return replica.DefaultUpdate(ctx, ac, data)
					},
					Delete: func(ctx context.Context, ac *registry.ApplyContext, pk any) error {
						rec.add(hookCall{step: "delete", pk: pk, meta: ac.Meta, hasTx: ac.Tx != nil})
						return replica.DefaultDelete(ctx, ac, pk)
					},
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, replica.Options{})
			if err != nil {
				t.Fatal(err)
			}
			wantMeta := any(nil)
			if deliverMeta {
				wantMeta = "master"
			}

			res := apply(t, eng, msg(t, "SAVE", "book", `{"cqrs_revision":0,"cqrs_updated":"2026-01-01 10:00:00+00:00","id":10,"title":"T","author":1,"extra":"x"}`), false)
			wantOutcome(t, "create", res, replica.OutcomeCreated)
			c := rec.last(t, "create")
			if got := c.data.Keys(); len(got) != 5 || !c.data.Has("name") || !c.data.Has("author_id") || c.data.Has("title") || c.data.Has("extra") {
				t.Errorf("create hook data keys %v, want cqrs_revision, cqrs_updated, id, name, author_id", got)
			}
			if metaSource(c.meta) != wantMeta || !c.hasTx || c.sync {
				t.Errorf("create hook: meta %v (want source %v), tx %v, sync %v", c.meta, wantMeta, c.hasTx, c.sync)
			}

			res = apply(t, eng, msg(t, "SYNC", "book", `{"cqrs_revision":1,"cqrs_updated":"2026-01-01 10:00:01+00:00","id":10,"title":"T2","author":2}`), false)
			wantOutcome(t, "update", res, replica.OutcomeUpdated)
			c = rec.last(t, "update")
			if v, _ := c.data.Get("name"); v != "T2" {
				t.Errorf("update hook data name %v, want T2", v)
			}
			if v, _ := c.existing.Get("name"); v != "T" {
				t.Errorf("update hook existing name %v, want the stored T", v)
			}
			if v, _ := c.existing.Get("cqrs_revision"); v != int64(0) {
				t.Errorf("update hook existing cqrs_revision %#v, want int64 0", v)
			}
			if !c.sync || metaSource(c.meta) != wantMeta {
				t.Errorf("update hook: sync %v, meta %v", c.sync, c.meta)
			}
			var name string
			if err := db.GetContext(ctx, &name, "SELECT name FROM book_ref WHERE id = 10"); err != nil || name != "T2" {
				t.Errorf("DefaultUpdate: name %q, %v", name, err)
			}

			res = apply(t, eng, msg(t, "DELETE", "book", `{"id":10,"cqrs_revision":2,"cqrs_updated":"2026-01-01 10:00:02+00:00","custom":{"title":"T2"}}`), false)
			wantOutcome(t, "delete", res, replica.OutcomeDeleted)
			c = rec.last(t, "delete")
			if c.pk != int64(10) || metaSource(c.meta) != wantMeta {
				t.Errorf("delete hook: pk %#v (want int64 10), meta %v", c.pk, c.meta)
			}
			if n := count(t, db, "SELECT COUNT(*) FROM book_ref"); n != 0 {
				t.Errorf("DefaultDelete left %d rows", n)
			}
			if _, err := db.ExecContext(ctx, "DELETE FROM cqrs_tombstones"); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestHookErrorRollsBack(t *testing.T) {
	db := freshDB(t, testenv.SQLite(t))
	boom := errors.New("boom")
	eng := authorEngine(t, db, replica.Options{}, func(m *registry.ReplicaModel) {
		m.Hooks.Create = func(ctx context.Context, ac *registry.ApplyContext, data *wire.Fields) error {
			if err := replica.DefaultCreate(ctx, ac, data); err != nil {
				return err
			}
			return boom // after the insert: the engine must roll it back
		}
	})
	_, err := eng.Apply(context.Background(), replica.Delivery{Payload: msg(t, "SAVE", "author", author(1, 0, "2026-01-01 10:00:00+00:00", "Ann"))})
	if !errors.Is(err, boom) {
		t.Fatalf("error %v, want the hook's", err)
	}
	if n := nameOf(t, db, 1); n != "" {
		t.Errorf("failed apply left a row %q", n)
	}
}

func TestRawReplica(t *testing.T) {
	db := testenv.SQLite(t) // no tables at all: a raw replica runs no SQL
	ctx := context.Background()
	rec := &recorder{}
	reg := registry.New()
	err := reg.RegisterReplica(registry.ReplicaModel{
		CQRSID: "event", DeliverMeta: true,
		Raw: registry.RawHandlers{
			Save: func(ctx context.Context, ac *registry.ApplyContext) error {
				rec.add(hookCall{step: "save", data: ac.Payload.InstanceData, meta: ac.Meta, sync: ac.Sync, hasTx: ac.Tx != nil})
				return nil
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = reg.RegisterReplica(registry.ReplicaModel{
		CQRSID: "direct_only", OnlyDirectSyncs: true,
		Raw: registry.RawHandlers{Save: func(ctx context.Context, ac *registry.ApplyContext) error {
			rec.add(hookCall{step: "direct_only"})
			return nil
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, replica.Options{DjangoCompat: true})
	if err != nil {
		t.Fatal(err)
	}
	// Raw handlers get instance_data unmapped and unchecked (no cqrs_* needed).
	res := apply(t, eng, msg(t, "SAVE", "event", `{"id":1,"anything":{"nested":[1,2]}}`), false)
	wantOutcome(t, "raw save", res, replica.OutcomeRaw)
	c := rec.last(t, "save")
	if !c.data.Has("anything") || c.hasTx || metaSource(c.meta) != "master" || c.sync {
		t.Errorf("raw save handler got data %v, tx %v, meta %v, sync %v", c.data.Keys(), c.hasTx, c.meta, c.sync)
	}
	res = apply(t, eng, msg(t, "SYNC", "event", `{"id":1}`), false)
	wantOutcome(t, "raw sync", res, replica.OutcomeRaw)
	if c := rec.last(t, "save"); !c.sync {
		t.Errorf("raw handler: SYNC not flagged")
	}
	// No Delete handler: acknowledged and ignored.
	res = apply(t, eng, msg(t, "DELETE", "event", `{"id":1}`), false)
	wantOutcome(t, "raw delete without handler", res, replica.OutcomeSkippedNoHandler)
	// ApplyTx on a raw replica still passes no transaction.
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := eng.ApplyTx(ctx, tx, replica.Delivery{Payload: msg(t, "SAVE", "event", `{"id":2}`)}); err != nil {
		t.Fatal(err)
	}
	if c := rec.last(t, "save"); c.hasTx {
		t.Errorf("raw handler under ApplyTx got a transaction")
	}
	// OnlyDirectSyncs applies to raw replicas too.
	res = apply(t, eng, msg(t, "SYNC", "direct_only", `{"id":1}`), false)
	wantOutcome(t, "raw broadcast sync", res, replica.OutcomeSkippedIndirect)
	res = apply(t, eng, msg(t, "SYNC", "direct_only", `{"id":1}`), true)
	wantOutcome(t, "raw direct sync", res, replica.OutcomeRaw)
	// A raw handler's error is returned (retry later).
	boom := errors.New("raw boom")
	reg2 := registry.New()
	if err := reg2.RegisterReplica(registry.ReplicaModel{CQRSID: "event", Raw: registry.RawHandlers{
		Delete: func(ctx context.Context, ac *registry.ApplyContext) error { return boom },
	}}); err != nil {
		t.Fatal(err)
	}
	eng2, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg2, replica.Options{DjangoCompat: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng2.Apply(ctx, replica.Delivery{Payload: msg(t, "DELETE", "event", `{"id":1}`)}); !errors.Is(err, boom) {
		t.Errorf("raw delete error %v, want the handler's", err)
	}
}
