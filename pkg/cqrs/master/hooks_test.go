package master_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// hookClock is a fixed clock in a zone east of UTC, with nanoseconds, so that
// tests see both the UTC conversion and the truncation to microseconds.
var hookClock = time.Date(2026, 3, 2, 1, 59, 59, 999999999, time.FixedZone("UTC+2", 2*3600))

// hookUpdated is hookClock as cqrs_updated carries it.
const hookUpdated = "2026-03-01 23:59:59.999999+00:00"

// hookMaster creates the author table and the outbox in db, registers models
// (all on the author table) and returns a Master with the fixed clock.
func hookMaster(t *testing.T, db *testenv.DB, models []registry.MasterModel, opts ...master.Option) *master.Master {
	t.Helper()
	ctx := context.Background()
	_, err := db.ExecContext(ctx, authorDDL[db.Dialect.Name()])
	must(t, err)
	must(t, outbox.Migrate(ctx, db.DB, db.Dialect))
	reg := registry.New()
	for _, mm := range models {
		must(t, reg.RegisterMaster(mm))
	}
	m, err := master.New(ctx, db.DB, reg, append([]master.Option{master.WithClock(func() time.Time { return hookClock })}, opts...)...)
	must(t, err)
	return m
}

// seedAuthors inserts authors with the given ids straight into the table (as
// rows written earlier), named "author <id>", at revision rev.
func seedAuthors(t *testing.T, db *testenv.DB, rev int, ids ...int) {
	t.Helper()
	var marks []string
	var args []any
	for _, id := range ids {
		marks = append(marks, "(?, ?, ?, ?)")
		args = append(args, id, fmt.Sprintf("author %d", id), rev, time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	}
	q := "INSERT INTO author (id, name, cqrs_revision, cqrs_updated) VALUES " + strings.Join(marks, ", ")
	_, err := db.ExecContext(context.Background(), db.Dialect.Rebind(q), args...)
	must(t, err)
}

// outMsg is one outbox row with its decoded body.
type outMsg struct {
	id     int64
	topic  string
	entity string
	body   string
	p      *wire.Payload
}

// data returns instance_data[key] as JSON text.
func (o outMsg) data(t *testing.T, key string) string {
	t.Helper()
	v, ok := o.p.InstanceData.Get(key)
	if !ok {
		return "<missing>"
	}
	return jsonText(t, v)
}

func jsonText(t *testing.T, v any) string {
	t.Helper()
	b, err := wire.MarshalValue(v)
	must(t, err)
	return string(b)
}

// readOutbox reads the outbox rows in id order through q (a db or a tx).
func readOutbox(t *testing.T, q sqlx.QueryerContext, d dialect.Dialect) []outMsg {
	t.Helper()
	rows, err := q.QueryxContext(context.Background(), "SELECT id, topic, entity_key, body FROM cqrs_outbox ORDER BY id")
	must(t, err)
	defer rows.Close()
	var out []outMsg
	for rows.Next() {
		var o outMsg
		must(t, rows.Scan(&o.id, &o.topic, &o.entity, &o.body))
		p, err := wire.Decode([]byte(o.body))
		if err != nil {
			t.Fatalf("outbox row %d: %v\n%s", o.id, err, o.body)
		}
		o.p = p
		out = append(out, o)
	}
	must(t, rows.Err())
	return out
}

func clearOutbox(t *testing.T, db *testenv.DB) {
	t.Helper()
	_, err := db.ExecContext(context.Background(), "DELETE FROM cqrs_outbox")
	must(t, err)
}

// commit runs fn in a new transaction and commits it; an error fails the test.
func commit(t *testing.T, db *testenv.DB, fn func(tx *sqlx.Tx) error) {
	t.Helper()
	tx := db.MustBeginTx(context.Background(), nil)
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	must(t, tx.Commit())
}

func revisionOf(t *testing.T, q sqlx.QueryerContext, d dialect.Dialect, id int) int {
	t.Helper()
	var rev int
	must(t, sqlx.GetContext(context.Background(), q, &rev, d.Rebind("SELECT cqrs_revision FROM author WHERE id = ?"), id))
	return rev
}

var errBoom = errors.New("boom")

func TestSerializeReplacesInstanceData(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	var got []*wire.Fields
	m := hookMaster(t, db, []registry.MasterModel{{
		CQRSID: "author", Table: "author", TrackedFields: []string{"name"},
		Serialize: func(_ context.Context, tx *sqlx.Tx, row *wire.Fields) (*wire.Fields, error) {
			if tx == nil {
				return nil, errors.New("no transaction")
			}
			got = append(got, row.Clone())
			name, _ := row.Get("name")
			if name == "bad" {
				return nil, fmt.Errorf("cannot serialise %v: %w", name, errBoom)
			}
			id, _ := row.Get("id")
			rev, _ := row.Get(wire.RevisionKey)
			upd, _ := row.Get(wire.UpdatedKey)
			return wire.FieldsOf("id", id, "label", fmt.Sprintf("<%v>", name), wire.RevisionKey, rev, wire.UpdatedKey, upd), nil
		},
	}})

	var id any
	commit(t, db, func(tx *sqlx.Tx) (err error) {
		id, err = m.Insert(ctx, tx, "author", map[string]any{"name": "Ann", "rating": "4.50"})
		return err
	})
	commit(t, db, func(tx *sqlx.Tx) error { return m.Update(ctx, tx, "author", id, map[string]any{"name": "Ann B"}) })
	commit(t, db, func(tx *sqlx.Tx) error { _, err := m.Sync(ctx, tx, "author", nil, ""); return err })
	calls := len(got)
	commit(t, db, func(tx *sqlx.Tx) error { return m.Delete(ctx, tx, "author", id) })

	msgs := readOutbox(t, db, db.Dialect)
	if len(msgs) != 4 {
		t.Fatalf("%d messages, want 4", len(msgs))
	}
	want := []string{
		`{"id":1,"label":"<Ann>","cqrs_revision":0,"cqrs_updated":"` + hookUpdated + `"}`,
		`{"id":1,"label":"<Ann B>","cqrs_revision":1,"cqrs_updated":"` + hookUpdated + `"}`,
		`{"id":1,"label":"<Ann B>","cqrs_revision":1,"cqrs_updated":"` + hookUpdated + `"}`,
	}
	for i, w := range want {
		if g := jsonText(t, msgs[i].p.InstanceData); g != w {
			t.Errorf("message %d (%s) instance_data\n got %s\nwant %s", i+1, msgs[i].p.SignalType, g, w)
		}
	}
	// previous_data still comes from the row, not from the serialiser.
	if g := jsonText(t, msgs[1].p.PreviousData); g != `{"name":"Ann"}` {
		t.Errorf("update previous_data %s", g)
	}
	// DELETE is not serialised: it has its own instance_data.
	if len(got) != calls {
		t.Errorf("Serialize called for DELETE")
	}
	if g := jsonText(t, msgs[3].p.InstanceData); g != `{"id":1,"cqrs_revision":2,"cqrs_updated":"`+hookUpdated+`"}` {
		t.Errorf("delete instance_data %s", g)
	}
	// The serialiser got the row as it stands in the transaction: sync
	// fields first (revision already bumped), then every field.
	if len(got) != 3 {
		t.Fatalf("Serialize called %d times, want 3", len(got))
	}
	wantKeys := []string{"cqrs_revision", "cqrs_updated", "id", "name", "birth_date", "rating", "active", "external_uuid", "payload", "created_at"}
	for i, row := range got {
		if !slices.Equal(row.Keys(), wantKeys) {
			t.Errorf("call %d: row keys %v, want %v", i+1, row.Keys(), wantKeys)
		}
	}
	if g := jsonText(t, got[1]); !strings.Contains(g, `"cqrs_revision":1,"cqrs_updated":"`+hookUpdated+`","id":1,"name":"Ann B"`) || !strings.Contains(g, `"rating":4.5`) {
		t.Errorf("update: serialiser got %s", g)
	}
}

// TestSerializeGetsSyncFields: django-cqrs sets cqrs_revision and
// cqrs_updated on whatever the serializer returns
// (MasterMixin._class_serialization: data['cqrs_revision'] =
// instance.cqrs_revision; data['cqrs_updated'] = str(instance.cqrs_updated)),
// so a serializer that leaves them out (or gets them wrong) still sends
// messages replicas accept: replicas reject a SAVE without them ("CQRS sync
// fields are not provided").
func TestSerializeGetsSyncFields(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	m := hookMaster(t, db, []registry.MasterModel{
		{
			CQRSID: "author", Table: "author",
			Serialize: func(_ context.Context, _ *sqlx.Tx, row *wire.Fields) (*wire.Fields, error) {
				id, _ := row.Get("id")
				name, _ := row.Get("name")
				return wire.FieldsOf("id", id, "label", name), nil
			},
		},
		{
			CQRSID: "author_stale", Table: "author",
			Serialize: func(_ context.Context, _ *sqlx.Tx, row *wire.Fields) (*wire.Fields, error) {
				id, _ := row.Get("id")
				return wire.FieldsOf(wire.RevisionKey, 99, "id", id, wire.UpdatedKey, "yesterday"), nil
			},
		},
	})
	seedAuthors(t, db, 6, 1)
	commit(t, db, func(tx *sqlx.Tx) error {
		if err := m.Update(ctx, tx, "author", 1, map[string]any{"name": "Ann"}); err != nil {
			return err
		}
		_, err := m.Sync(ctx, tx, "author_stale", nil, "")
		return err
	})
	msgs := readOutbox(t, db, db.Dialect)
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	for i, want := range []string{
		`{"id":1,"label":"Ann","cqrs_revision":7,"cqrs_updated":"` + hookUpdated + `"}`,
		`{"cqrs_revision":7,"id":1,"cqrs_updated":"` + hookUpdated + `"}`,
	} {
		if g := jsonText(t, msgs[i].p.InstanceData); g != want {
			t.Errorf("%s %s instance_data\n got %s\nwant %s", msgs[i].p.CQRSID, msgs[i].p.SignalType, g, want)
		}
	}
}

func TestSerializeErrorWritesNothing(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	m := hookMaster(t, db, []registry.MasterModel{{
		CQRSID: "author", Table: "author",
		Serialize: func(_ context.Context, _ *sqlx.Tx, row *wire.Fields) (*wire.Fields, error) {
			if name, _ := row.Get("name"); name == "bad" {
				return nil, errBoom
			}
			return row, nil
		},
	}})
	seedAuthors(t, db, 0, 1, 2, 3)

	// A failure after a change was written rolls the transaction back (the
	// change cannot commit without its message); Sync changes no row and
	// leaves the transaction usable.
	for _, tc := range []struct {
		name       string
		rolledBack bool
		op         func(tx *sqlx.Tx) error
	}{
		{"insert", true, func(tx *sqlx.Tx) error {
			_, err := m.Insert(ctx, tx, "author", map[string]any{"id": 9, "name": "bad"})
			return err
		}},
		{"update", true, func(tx *sqlx.Tx) error { return m.Update(ctx, tx, "author", 2, map[string]any{"name": "bad"}) }},
		{"update many, one bad row among three", true, func(tx *sqlx.Tx) error {
			if _, err := tx.ExecContext(ctx, "UPDATE author SET name = 'bad' WHERE id = 2"); err != nil {
				return err
			}
			return m.UpdateMany(ctx, tx, "author", []any{1, 2, 3}, map[string]any{"active": false})
		}},
		{"save many", true, func(tx *sqlx.Tx) error {
			if _, err := tx.ExecContext(ctx, "UPDATE author SET name = 'bad' WHERE id = 3"); err != nil {
				return err
			}
			return m.SaveMany(ctx, tx, "author", []any{1, 2, 3})
		}},
		{"sync", false, func(tx *sqlx.Tx) error {
			if _, err := tx.ExecContext(ctx, "UPDATE author SET name = 'bad' WHERE id = 1"); err != nil {
				return err
			}
			_, err := m.Sync(ctx, tx, "author", nil, "")
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx := db.MustBeginTx(ctx, nil)
			defer tx.Rollback()
			err := tc.op(tx)
			if !errors.Is(err, errBoom) {
				t.Fatalf("error %v, want the serialiser's error wrapped", err)
			}
			if !strings.Contains(err.Error(), "author") || !strings.Contains(err.Error(), "serializer") {
				t.Errorf("error %q does not name the model and the serialiser", err)
			}
			if got := errors.Is(err, master.ErrRolledBack); got != tc.rolledBack {
				t.Fatalf("error %v: rolled back %v, want %v", err, got, tc.rolledBack)
			}
			if tc.rolledBack {
				if err := tx.Commit(); !errors.Is(err, sql.ErrTxDone) {
					t.Fatalf("commit after the error: %v, want sql.ErrTxDone", err)
				}
				return
			}
			if msgs := readOutbox(t, tx, db.Dialect); len(msgs) != 0 {
				t.Errorf("%d outbox rows written in the transaction after the error: %s", len(msgs), msgs[0].body)
			}
		})
	}
	if msgs := readOutbox(t, db, db.Dialect); len(msgs) != 0 {
		t.Errorf("%d outbox rows after rollback", len(msgs))
	}
	var bad int
	must(t, db.Get(&bad, "SELECT count(*) FROM author WHERE name = 'bad' OR id = 9"))
	if bad != 0 {
		t.Errorf("%d changed rows committed without their messages", bad)
	}
}

func TestDeleteDataAddsCustom(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	var seen []string
	m := hookMaster(t, db, []registry.MasterModel{{
		CQRSID: "author", Table: "author",
		DeleteData: func(_ context.Context, tx *sqlx.Tx, row *wire.Fields) (any, error) {
			id, _ := row.Get("id")
			// The row is read before the DELETE, in the caller's transaction.
			var n int
			if err := tx.Get(&n, "SELECT COUNT(*) FROM author WHERE id = ?", fmt.Sprint(id)); err != nil {
				return nil, err
			}
			name, _ := row.Get("name")
			seen = append(seen, fmt.Sprintf("%v:%v:%d", id, name, n))
			if name == "bad" {
				return nil, errBoom
			}
			return wire.FieldsOf("name", name, "tags", []any{"a", "b"}), nil
		},
	}})
	seedAuthors(t, db, 4, 1, 2)

	commit(t, db, func(tx *sqlx.Tx) error { return m.Delete(ctx, tx, "author", 1) })
	msgs := readOutbox(t, db, db.Dialect)
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	want := `{"id":1,"cqrs_revision":5,"cqrs_updated":"` + hookUpdated + `","custom":{"name":"author 1","tags":["a","b"]}}`
	if g := jsonText(t, msgs[0].p.InstanceData); g != want {
		t.Errorf("DELETE instance_data\n got %s\nwant %s", g, want)
	}
	if msgs[0].p.SignalType != wire.SignalDelete || msgs[0].topic != "author" || msgs[0].entity != "author:1" {
		t.Errorf("message %s topic %q entity %q", msgs[0].p.SignalType, msgs[0].topic, msgs[0].entity)
	}
	if !slices.Equal(seen, []string{"1:author 1:1"}) {
		t.Errorf("DeleteData saw %v, want the row before deletion", seen)
	}

	// An error from DeleteData stops the delete: the row stays, no message.
	_, err := db.ExecContext(ctx, "UPDATE author SET name = 'bad' WHERE id = 2")
	must(t, err)
	clearOutbox(t, db)
	tx := db.MustBeginTx(ctx, nil)
	err = m.Delete(ctx, tx, "author", 2)
	if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "custom delete data") {
		t.Errorf("error %v, want DeleteData's error wrapped with context", err)
	}
	var n int
	must(t, tx.Get(&n, "SELECT COUNT(*) FROM author WHERE id = 2"))
	if n != 1 {
		t.Error("row deleted although DeleteData failed")
	}
	if msgs := readOutbox(t, tx, db.Dialect); len(msgs) != 0 {
		t.Errorf("%d messages written although DeleteData failed", len(msgs))
	}
	must(t, tx.Rollback())
}

// TestDeleteDataEmptyOmitsCustom: django-cqrs adds "custom" only when
// get_custom_cqrs_delete_data() returns something truthy (`if data:
// instance_data['custom'] = data` in dj_cqrs/signals.py post_delete); None
// or {} leave the key out.
func TestDeleteDataEmptyOmitsCustom(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value any
	}{{"nil", nil}, {"empty fields", wire.NewFields()}, {"empty map", map[string]any{}}} {
		t.Run(tc.name, func(t *testing.T) {
			db := testenv.SQLite(t)
			ctx := context.Background()
			m := hookMaster(t, db, []registry.MasterModel{{
				CQRSID: "author", Table: "author",
				DeleteData: func(context.Context, *sqlx.Tx, *wire.Fields) (any, error) { return tc.value, nil },
			}})
			seedAuthors(t, db, 0, 1)
			commit(t, db, func(tx *sqlx.Tx) error { return m.Delete(ctx, tx, "author", 1) })
			msgs := readOutbox(t, db, db.Dialect)
			if len(msgs) != 1 {
				t.Fatalf("%d messages", len(msgs))
			}
			if msgs[0].p.InstanceData.Has("custom") {
				t.Errorf("DELETE instance_data %s has \"custom\"; django-cqrs leaves it out when the custom data is empty",
					jsonText(t, msgs[0].p.InstanceData))
			}
		})
	}
}

func TestIsSyncInstanceFiltersSync(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	var asked []string
	m := hookMaster(t, db, []registry.MasterModel{{
		CQRSID: "author", Table: "author",
		IsSyncInstance: func(row *wire.Fields) bool {
			id, _ := row.Get("id")
			asked = append(asked, fmt.Sprint(id))
			n, _ := wire.AsInt64(id)
			return n%2 == 1
		},
	}})
	seedAuthors(t, db, 0, 1, 2, 3, 4, 5)

	var all, some, none int
	commit(t, db, func(tx *sqlx.Tx) (err error) {
		if all, err = m.Sync(ctx, tx, "author", nil, ""); err != nil {
			return err
		}
		if some, err = m.Sync(ctx, tx, "author", []any{2, 3, 4}, "replica_q"); err != nil {
			return err
		}
		none, err = m.Sync(ctx, tx, "author", []any{2, 4}, "")
		return err
	})
	if all != 3 || some != 1 || none != 0 {
		t.Errorf("counts all=%d some=%d none=%d, want 3, 1, 0", all, some, none)
	}
	if want := []string{"1", "2", "3", "4", "5", "2", "3", "4", "2", "4"}; !slices.Equal(asked, want) {
		t.Errorf("IsSyncInstance asked for %v, want %v (rows in pk order)", asked, want)
	}
	msgs := readOutbox(t, db, db.Dialect)
	var got []string
	for _, o := range msgs {
		got = append(got, fmt.Sprintf("%s %s %v", o.p.SignalType, o.topic, o.p.InstancePK))
	}
	want := []string{"SYNC author 1", "SYNC author 3", "SYNC author 5", "SYNC cqrs.replica_q.author 3"}
	if !slices.Equal(got, want) {
		t.Errorf("messages %v, want %v", got, want)
	}
	for id := 1; id <= 5; id++ {
		if rev := revisionOf(t, db, db.Dialect, id); rev != 0 {
			t.Errorf("SYNC changed row %d's revision to %d", id, rev)
		}
	}
}

// TestIsSyncInstanceFiltersSaveAndDelete: in django-cqrs is_sync_instance()
// gates every message, not only SYNCs: MasterSignals.post_save and
// post_delete return early when it is false, while the revision is still
// counted ("CQRS counting works even without syncing and rule is applied
// every time model is updated", django-cqrs README).
func TestIsSyncInstanceFiltersSaveAndDelete(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	m := hookMaster(t, db, []registry.MasterModel{{
		CQRSID: "author", Table: "author",
		IsSyncInstance: func(row *wire.Fields) bool {
			name, _ := row.Get("name")
			s, _ := name.(string)
			return !strings.HasPrefix(s, "draft")
		},
	}})
	seedAuthors(t, db, 0, 1, 2)
	commit(t, db, func(tx *sqlx.Tx) error {
		if _, err := m.Insert(ctx, tx, "author", map[string]any{"id": 3, "name": "draft three"}); err != nil {
			return err
		}
		if err := m.Update(ctx, tx, "author", 1, map[string]any{"name": "draft one"}); err != nil {
			return err
		}
		return m.Update(ctx, tx, "author", 2, map[string]any{"name": "published two"})
	})
	if rev := revisionOf(t, db, db.Dialect, 1); rev != 1 {
		t.Errorf("filtered row's revision %d, want 1 (still counted)", rev)
	}
	msgs := readOutbox(t, db, db.Dialect)
	var got []string
	for _, o := range msgs {
		got = append(got, fmt.Sprintf("%s %v", o.p.SignalType, o.p.InstancePK))
	}
	if want := []string{"SAVE 2"}; !slices.Equal(got, want) {
		t.Errorf("messages %v, want %v: rows the filter rejects send no SAVE", got, want)
	}
	clearOutbox(t, db)
	commit(t, db, func(tx *sqlx.Tx) error { return m.Delete(ctx, tx, "author", 3) })
	if msgs := readOutbox(t, db, db.Dialect); len(msgs) != 0 {
		t.Errorf("DELETE of a row the filter rejects sent %s", msgs[0].body)
	}
}

func TestModelCorrelationAndMetaOverrideMasterWide(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	var mu sync.Mutex
	var metaRows []string
	m := hookMaster(t, db, []registry.MasterModel{
		{
			CQRSID: "author", Table: "author",
			Correlation: func(_ context.Context, ev registry.Event) any { return "model:" + string(ev.Signal) },
			Meta: func(_ context.Context, ev registry.Event, row *wire.Fields) any {
				name, _ := row.Get("name")
				mu.Lock()
				metaRows = append(metaRows, fmt.Sprintf("%s:%v", ev.Signal, name))
				mu.Unlock()
				return wire.FieldsOf("by", "model")
			},
		},
		{CQRSID: "author_plain", Table: "author"},
		{
			CQRSID: "author_corr", Table: "author",
			Correlation: func(context.Context, registry.Event) any { return 42 },
		},
	},
		master.WithCorrelation(func(_ context.Context, ev registry.Event) any { return "global:" + ev.CQRSID }),
		master.WithMeta(func(context.Context, registry.Event, *wire.Fields) any { return map[string]any{"by": "global"} }),
	)
	commit(t, db, func(tx *sqlx.Tx) error {
		for i, id := range []string{"author", "author_plain", "author_corr"} {
			if _, err := m.Insert(ctx, tx, id, map[string]any{"id": i + 1, "name": id}); err != nil {
				return err
			}
		}
		if _, err := m.Sync(ctx, tx, "author", []any{1}, ""); err != nil {
			return err
		}
		if _, err := m.Sync(ctx, tx, "author_plain", []any{2}, ""); err != nil {
			return err
		}
		return nil
	})
	commit(t, db, func(tx *sqlx.Tx) error {
		if err := m.Delete(ctx, tx, "author", 1); err != nil {
			return err
		}
		return m.Delete(ctx, tx, "author_plain", 2)
	})
	msgs := readOutbox(t, db, db.Dialect)
	var got []string
	for _, o := range msgs {
		got = append(got, fmt.Sprintf("%s %s corr=%s meta=%s", o.p.CQRSID, o.p.SignalType, jsonText(t, o.p.CorrelationID), jsonText(t, o.p.Meta)))
	}
	want := []string{
		`author SAVE corr="model:SAVE" meta={"by":"model"}`,
		`author_plain SAVE corr="global:author_plain" meta={"by":"global"}`,
		`author_corr SAVE corr=42 meta={"by":"global"}`,
		`author SYNC corr="model:SYNC" meta={"by":"model"}`,
		`author_plain SYNC corr="global:author_plain" meta={"by":"global"}`,
		`author DELETE corr="model:DELETE" meta={"by":"model"}`,
		`author_plain DELETE corr="global:author_plain" meta={"by":"global"}`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("messages\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	// The meta function gets the row (before deletion for a DELETE).
	if w := []string{"SAVE:author", "SYNC:author", "DELETE:author"}; !slices.Equal(metaRows, w) {
		t.Errorf("meta rows %v, want %v", metaRows, w)
	}
}

func TestEventFields(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	var events []registry.Event
	m := hookMaster(t, db, []registry.MasterModel{{CQRSID: "author", Table: "author"}},
		master.WithCorrelation(func(_ context.Context, ev registry.Event) any {
			events = append(events, ev)
			return nil
		}))
	var id any
	commit(t, db, func(tx *sqlx.Tx) (err error) {
		id, err = m.Insert(ctx, tx, "author", map[string]any{"name": "Ann"})
		return err
	})
	commit(t, db, func(tx *sqlx.Tx) error { return m.Update(ctx, tx, "author", id, map[string]any{"name": "Bea"}) })
	commit(t, db, func(tx *sqlx.Tx) error { _, err := m.Sync(ctx, tx, "author", nil, ""); return err })
	commit(t, db, func(tx *sqlx.Tx) error { _, err := m.Sync(ctx, tx, "author", []any{id}, "replica_q"); return err })
	commit(t, db, func(tx *sqlx.Tx) error { return m.Delete(ctx, tx, "author", id) })
	var got []string
	for _, ev := range events {
		got = append(got, fmt.Sprintf("%s %s pk=%v queue=%q", ev.Signal, ev.CQRSID, ev.PK, ev.Queue))
	}
	want := []string{
		`SAVE author pk=1 queue=""`,
		`SAVE author pk=1 queue=""`,
		`SYNC author pk=1 queue=""`,
		`SYNC author pk=1 queue="replica_q"`,
		`DELETE author pk=1 queue=""`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("events\n got %v\nwant %v", got, want)
	}
	// The direct SYNC's queue is in the routing key only, never in the body.
	msgs := readOutbox(t, db, db.Dialect)
	if len(msgs) != 5 || msgs[3].topic != "cqrs.replica_q.author" || strings.Contains(msgs[3].body, "replica_q") {
		t.Errorf("direct sync message: %+v", msgs)
	}
}

// TestClockDrivesUpdatedAndExpires: cqrs_updated (in the row and in the
// message) is the clock in UTC, truncated to microseconds; expires is the
// clock plus the TTL, truncated to whole seconds; TTL 0 means null.
func TestClockDrivesUpdatedAndExpires(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		ctx := context.Background()
		m := hookMaster(t, db, []registry.MasterModel{{CQRSID: "author", Table: "author"}}, master.WithMessageTTL(90*time.Second))
		reg := registry.New()
		must(t, reg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author"}))
		never, err := master.New(ctx, db.DB, reg, master.WithMessageTTL(0), master.WithClock(func() time.Time { return hookClock }))
		must(t, err)
		commit(t, db, func(tx *sqlx.Tx) error {
			if _, err := m.Insert(ctx, tx, "author", map[string]any{"id": 1, "name": "Ann"}); err != nil {
				return err
			}
			_, err := never.Insert(ctx, tx, "author", map[string]any{"id": 2, "name": "Bea"})
			return err
		})
		seedAuthors(t, db, 0, 3)
		commit(t, db, func(tx *sqlx.Tx) error { return m.Update(ctx, tx, "author", 3, map[string]any{"name": "Cid"}) })
		commit(t, db, func(tx *sqlx.Tx) error { return m.Delete(ctx, tx, "author", 1) })
		commit(t, db, func(tx *sqlx.Tx) error { _, err := m.Sync(ctx, tx, "author", []any{3}, ""); return err })

		msgs := readOutbox(t, db, db.Dialect)
		if len(msgs) != 5 {
			t.Fatalf("%d messages", len(msgs))
		}
		const expires = `"expires":"2026-03-02T00:01:29+00:00"`
		for i, o := range msgs {
			if g := o.data(t, wire.UpdatedKey); g != `"`+hookUpdated+`"` {
				t.Errorf("message %d (%s %v): cqrs_updated %s, want %q", i+1, o.p.SignalType, o.p.InstancePK, g, hookUpdated)
			}
			wantExp := expires
			if i == 1 {
				wantExp = `"expires":null`
			}
			if !strings.Contains(o.body, wantExp) {
				t.Errorf("message %d (%s %v): want %s in %s", i+1, o.p.SignalType, o.p.InstancePK, wantExp, o.body)
			}
		}
		// The rows hold the same cqrs_updated as their messages.
		rows, err := m.Rows(ctx, db, "author", nil)
		must(t, err)
		if len(rows) != 2 {
			t.Fatalf("%d rows", len(rows))
		}
		for _, r := range rows {
			if g := jsonText(t, mustGet(r, wire.UpdatedKey)); g != `"`+hookUpdated+`"` {
				t.Errorf("row %s: stored cqrs_updated %s", jsonText(t, mustGet(r, "id")), g)
			}
		}
		if _, err := master.New(ctx, db.DB, reg, master.WithMessageTTL(-time.Second)); err == nil || !strings.Contains(err.Error(), "negative") {
			t.Errorf("negative TTL: %v", err)
		}
	})
}

func mustGet(f *wire.Fields, k string) any {
	v, _ := f.Get(k)
	return v
}

func TestDefaultTTLIsADay(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	m := hookMaster(t, db, []registry.MasterModel{{CQRSID: "author", Table: "author"}})
	commit(t, db, func(tx *sqlx.Tx) error {
		_, err := m.Insert(ctx, tx, "author", map[string]any{"name": "Ann"})
		return err
	})
	msgs := readOutbox(t, db, db.Dialect)
	if len(msgs) != 1 || msgs[0].p.Expires == nil || wire.FormatExpires(*msgs[0].p.Expires) != "2026-03-02T23:59:59+00:00" {
		t.Errorf("default TTL: %+v", msgs)
	}
}

func TestProduceOffOnOneModel(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	m := hookMaster(t, db, []registry.MasterModel{
		{CQRSID: "author", Table: "author"},
		{CQRSID: "author_quiet", Table: "author", ProduceOff: true},
	})
	seedAuthors(t, db, 0, 1, 2)
	commit(t, db, func(tx *sqlx.Tx) error {
		if _, err := m.Insert(ctx, tx, "author_quiet", map[string]any{"id": 3, "name": "quiet"}); err != nil {
			return err
		}
		if err := m.Update(ctx, tx, "author_quiet", 1, map[string]any{"name": "quieter"}); err != nil {
			return err
		}
		if err := m.Update(ctx, tx, "author", 2, map[string]any{"name": "loud"}); err != nil {
			return err
		}
		return m.Delete(ctx, tx, "author_quiet", 3)
	})
	if rev := revisionOf(t, db, db.Dialect, 1); rev != 1 {
		t.Errorf("produce-off model's revision %d, want 1 (still bumped)", rev)
	}
	var n int
	must(t, db.Get(&n, "SELECT COUNT(*) FROM author WHERE id = 3"))
	if n != 0 {
		t.Error("produce-off delete left the row")
	}
	msgs := readOutbox(t, db, db.Dialect)
	if len(msgs) != 1 || msgs[0].p.CQRSID != "author" || fmt.Sprint(msgs[0].p.InstancePK) != "2" || msgs[0].data(t, "name") != `"loud"` {
		var bodies []string
		for _, o := range msgs {
			bodies = append(bodies, o.body)
		}
		t.Errorf("want only author 2's SAVE, got %v", bodies)
	}
}

func TestSaveCreated(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	m := hookMaster(t, db, []registry.MasterModel{{CQRSID: "author", Table: "author", TrackedFields: []string{"name", "rating", "birth_date"}}})
	commit(t, db, func(tx *sqlx.Tx) error {
		// The caller inserts the row itself, with a revision column default
		// and a cqrs_updated it chose: Created() says it is new regardless.
		if _, err := tx.ExecContext(ctx, "INSERT INTO author (id, name, rating, cqrs_updated) VALUES (5, 'New', 2.5, '2020-01-01 00:00:00')"); err != nil {
			return err
		}
		if err := m.Save(ctx, tx, "author", 5, master.Created()); err != nil {
			return err
		}
		// A second save in the same transaction: still one message, still revision 0.
		if _, err := tx.ExecContext(ctx, "UPDATE author SET name = 'Newer' WHERE id = 5"); err != nil {
			return err
		}
		return m.Save(ctx, tx, "author", 5)
	})
	msgs := readOutbox(t, db, db.Dialect)
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	o := msgs[0]
	if o.data(t, wire.RevisionKey) != "0" || o.data(t, "name") != `"Newer"` || o.data(t, wire.UpdatedKey) != `"`+hookUpdated+`"` {
		t.Errorf("created SAVE: %s", o.body)
	}
	if g := jsonText(t, o.p.PreviousData); g != `{"name":null,"rating":null}` {
		t.Errorf("previous_data %s, want the non-null tracked fields as null", g)
	}
	if rev := revisionOf(t, db, db.Dialect, 5); rev != 0 {
		t.Errorf("revision %d, want 0", rev)
	}
}

// TestBulk200 runs SaveMany and UpdateMany over 200 rows given in random
// order: 200 messages in primary key order, one revision bump per row per
// transaction however many calls touch it.
func TestBulk200(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		ctx := context.Background()
		m := hookMaster(t, db, []registry.MasterModel{{CQRSID: "author", Table: "author", TrackedFields: []string{"name", "rating"}}})
		const n = 200
		ids := make([]int, n)
		pks := make([]any, n)
		for i := range ids {
			ids[i] = i + 1
		}
		seedAuthors(t, db, 0, ids...)
		rng := rand.New(rand.NewPCG(7, 11))
		rng.Shuffle(n, func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		for i, id := range ids {
			pks[i] = id
		}

		check := func(what string, rev int, prev func(id int) string) {
			t.Helper()
			msgs := readOutbox(t, db, db.Dialect)
			if len(msgs) != n {
				t.Fatalf("%s: %d messages, want %d", what, len(msgs), n)
			}
			for i, o := range msgs {
				id := i + 1
				if o.entity != fmt.Sprintf("author:%d", id) || fmt.Sprint(o.p.InstancePK) != fmt.Sprint(id) {
					t.Fatalf("%s: message %d is for %s (pk %v), want author:%d: not in id order", what, i+1, o.entity, o.p.InstancePK, id)
				}
				if g := o.data(t, wire.RevisionKey); g != fmt.Sprint(rev) {
					t.Fatalf("%s: author %d revision %s, want %d", what, id, g, rev)
				}
				if prev != nil {
					if g := jsonText(t, o.p.PreviousData); g != prev(id) {
						t.Fatalf("%s: author %d previous_data %s, want %s", what, id, g, prev(id))
					}
				}
			}
			var bad int
			must(t, db.Get(&bad, db.Dialect.Rebind("SELECT COUNT(*) FROM author WHERE cqrs_revision <> ?"), rev))
			if bad != 0 {
				t.Fatalf("%s: %d rows not at revision %d", what, bad, rev)
			}
			clearOutbox(t, db)
		}

		// UpdateMany, then UpdateMany and SaveMany again in the same
		// transaction: still one message and one bump per row.
		commit(t, db, func(tx *sqlx.Tx) error {
			if err := m.UpdateMany(ctx, tx, "author", pks, map[string]any{"rating": "1.25"}); err != nil {
				return err
			}
			if err := m.UpdateMany(ctx, tx, "author", pks[:50], map[string]any{"active": false}); err != nil {
				return err
			}
			return m.SaveMany(ctx, tx, "author", pks)
		})
		// previous_data after a bulk update is the full snapshot of the
		// tracked fields from before the transaction.
		check("update many", 1, func(id int) string { return fmt.Sprintf(`{"name":"author %d","rating":null}`, id) })
		var rating string
		must(t, db.Get(&rating, "SELECT CAST(rating AS CHAR(10)) FROM author WHERE id = 200"))
		if !strings.HasPrefix(rating, "1.25") {
			t.Errorf("rating %q after UpdateMany", rating)
		}

		// SaveMany after the caller's own bulk UPDATE: one bump each.
		commit(t, db, func(tx *sqlx.Tx) error {
			if _, err := tx.ExecContext(ctx, "UPDATE author SET name = 'renamed'"); err != nil {
				return err
			}
			return m.SaveMany(ctx, tx, "author", pks)
		})
		check("save many", 2, nil)
	})
}

func TestBulk200Created(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	m := hookMaster(t, db, []registry.MasterModel{{CQRSID: "author", Table: "author", TrackedFields: []string{"name"}}})
	pks := make([]any, 200)
	commit(t, db, func(tx *sqlx.Tx) error {
		for i := range pks {
			pks[i] = 200 - i
			if _, err := tx.ExecContext(ctx, "INSERT INTO author (id, name) VALUES (?, ?)", 200-i, fmt.Sprintf("n%d", 200-i)); err != nil {
				return err
			}
		}
		return m.SaveMany(ctx, tx, "author", pks, master.Created())
	})
	msgs := readOutbox(t, db, db.Dialect)
	if len(msgs) != 200 {
		t.Fatalf("%d messages", len(msgs))
	}
	for i, o := range msgs {
		if o.entity != fmt.Sprintf("author:%d", i+1) || o.data(t, wire.RevisionKey) != "0" || jsonText(t, o.p.PreviousData) != `{"name":null}` {
			t.Fatalf("message %d: %s", i+1, o.body)
		}
	}
}

func TestNotFound(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	m := hookMaster(t, db, []registry.MasterModel{{CQRSID: "author", Table: "author"}})
	seedAuthors(t, db, 3, 1, 2)
	tx := db.MustBeginTx(ctx, nil)
	defer tx.Rollback()
	err := m.Update(ctx, tx, "author", 404, map[string]any{"name": "ghost"})
	if !errors.Is(err, master.ErrNotFound) || !strings.Contains(err.Error(), "author") {
		t.Errorf("update of a missing row: %v", err)
	}
	// One missing row among several: nothing changes.
	err = m.UpdateMany(ctx, tx, "author", []any{1, 404, 2}, map[string]any{"name": "ghost"})
	if !errors.Is(err, master.ErrNotFound) || !strings.Contains(err.Error(), "1 of 3") {
		t.Errorf("update many with a missing row: %v", err)
	}
	if err := m.SaveMany(ctx, tx, "author", []any{1, 404}); !errors.Is(err, master.ErrNotFound) {
		t.Errorf("save many with a missing row: %v", err)
	}
	var n int
	must(t, tx.Get(&n, "SELECT COUNT(*) FROM author WHERE name = 'ghost' OR cqrs_revision <> 3"))
	if n != 0 {
		t.Errorf("%d rows changed by failed calls", n)
	}
	if msgs := readOutbox(t, tx, db.Dialect); len(msgs) != 0 {
		t.Errorf("%d messages written by failed calls", len(msgs))
	}
}

// TestConcurrentTransactionsKeepTheirOwnState runs several goroutines, each
// changing its own row in a series of transactions (two updates each, some
// rolled back) at the same time as the others. Every committed transaction
// must give exactly one message for its row, one revision after the previous
// one, with previous_data from before that transaction.
func TestConcurrentTransactionsKeepTheirOwnState(t *testing.T) {
	for _, name := range []dialect.Name{dialect.Postgres, dialect.MySQL} {
		t.Run(string(name), func(t *testing.T) {
			db := testenv.Open(t, name)
			ctx := context.Background()
			m := hookMaster(t, db, []registry.MasterModel{{CQRSID: "author", Table: "author", TrackedFields: []string{"name"}}})
			const writers, rounds = 6, 12
			ids := make([]int, writers)
			for i := range ids {
				ids[i] = i + 1
			}
			seedAuthors(t, db, 0, ids...)
			db.SetMaxOpenConns(writers + 2)

			start := make(chan struct{})
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := 1; w <= writers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					<-start
					for r := 1; r <= rounds; r++ {
						err := func() error {
							tx, err := db.BeginTxx(ctx, nil)
							if err != nil {
								return err
							}
							defer tx.Rollback()
							if err := m.Update(ctx, tx, "author", w, map[string]any{"name": fmt.Sprintf("w%d r%d a", w, r)}); err != nil {
								return err
							}
							if err := m.Update(ctx, tx, "author", w, map[string]any{"name": fmt.Sprintf("w%d r%d b", w, r)}); err != nil {
								return err
							}
							if r%4 == 0 {
								return tx.Rollback()
							}
							return tx.Commit()
						}()
						if err != nil {
							errs <- fmt.Errorf("writer %d round %d: %w", w, r, err)
							return
						}
					}
				}(w)
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}

			byEntity := map[string][]outMsg{}
			msgs := readOutbox(t, db, db.Dialect)
			for _, o := range msgs {
				byEntity[o.entity] = append(byEntity[o.entity], o)
			}
			committed := rounds - rounds/4
			if len(msgs) != writers*committed {
				t.Errorf("%d messages, want %d (one per committed transaction)", len(msgs), writers*committed)
			}
			for w := 1; w <= writers; w++ {
				got := byEntity[fmt.Sprintf("author:%d", w)]
				if len(got) != committed {
					t.Errorf("author %d: %d messages, want %d", w, len(got), committed)
					continue
				}
				prev := fmt.Sprintf("author %d", w)
				rev := 0
				for r := 1; r <= rounds; r++ {
					if r%4 == 0 {
						continue
					}
					o := got[rev]
					rev++
					name := fmt.Sprintf("w%d r%d b", w, r)
					if o.data(t, wire.RevisionKey) != fmt.Sprint(rev) || o.data(t, "name") != `"`+name+`"` ||
						jsonText(t, o.p.PreviousData) != fmt.Sprintf(`{"name":%q}`, prev) {
						t.Errorf("author %d round %d: want revision %d, name %q, previous %q; got %s", w, r, rev, name, prev, o.body)
					}
					prev = name
				}
				if g := revisionOf(t, db, db.Dialect, w); g != committed {
					t.Errorf("author %d: revision %d, want %d", w, g, committed)
				}
			}
		})
	}
}

// TestDeleteAfterUpdateInOneTransaction: the DELETE replaces the SAVE the
// update wrote, and the revision is bumped once.
func TestDeleteAfterUpdateInOneTransaction(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		ctx := context.Background()
		m := hookMaster(t, db, []registry.MasterModel{{CQRSID: "author", Table: "author", TrackedFields: []string{"name"}}})
		seedAuthors(t, db, 2, 1, 2)
		commit(t, db, func(tx *sqlx.Tx) error {
			if err := m.Update(ctx, tx, "author", 1, map[string]any{"name": "changed"}); err != nil {
				return err
			}
			if err := m.Update(ctx, tx, "author", 1, map[string]any{"name": "changed again"}); err != nil {
				return err
			}
			if err := m.Update(ctx, tx, "author", 2, map[string]any{"name": "kept"}); err != nil {
				return err
			}
			return m.Delete(ctx, tx, "author", 1)
		})
		msgs := readOutbox(t, db, db.Dialect)
		var got []string
		for _, o := range msgs {
			got = append(got, fmt.Sprintf("%s %s %s", o.entity, o.p.SignalType, jsonText(t, o.p.InstanceData)))
		}
		want := []string{
			`author:1 DELETE {"id":1,"cqrs_revision":3,"cqrs_updated":"` + hookUpdated + `"}`,
			`author:2 SAVE {"cqrs_revision":3,"cqrs_updated":"` + hookUpdated + `","id":2,"name":"kept","birth_date":null,"rating":null,"active":` + activeJSON + `,"external_uuid":null,"payload":null,"created_at":null}`,
		}
		if !slices.Equal(got, want) {
			t.Errorf("messages\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
	})
}

// activeJSON is the seeded rows' active column (its default) on the wire.
const activeJSON = "true"

// TestDeleteThenInsertSamePKInOneTransaction: a row deleted and inserted
// again with the same primary key in one transaction is a new row at
// revision 0. Replicas must see the DELETE and then the SAVE, as
// django-cqrs sends them; one SAVE at revision 0 in place of the DELETE is
// skipped as stale by a replica holding the old row at a higher revision,
// which then keeps the old data for good.
func TestDeleteThenInsertSamePKInOneTransaction(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	m := hookMaster(t, db, []registry.MasterModel{{CQRSID: "author", Table: "author"}})
	seedAuthors(t, db, 3, 1)
	commit(t, db, func(tx *sqlx.Tx) error {
		if err := m.Delete(ctx, tx, "author", 1); err != nil {
			return err
		}
		_, err := m.Insert(ctx, tx, "author", map[string]any{"id": 1, "name": "reborn"})
		return err
	})
	msgs := readOutbox(t, db, db.Dialect)
	var got []string
	for _, o := range msgs {
		got = append(got, fmt.Sprintf("%s rev=%s", o.p.SignalType, o.data(t, wire.RevisionKey)))
	}
	if want := []string{"DELETE rev=4", "SAVE rev=0"}; !slices.Equal(got, want) {
		t.Errorf("messages %v, want %v", got, want)
	}
}
