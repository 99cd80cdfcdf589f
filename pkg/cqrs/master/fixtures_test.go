package master_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type sent struct{ topic, body string }

// canonical is fixtures.CanonicalBody of a body, errors without a prefix.
func canonical(t *testing.T, body string) string {
	t.Helper()
	return fixtures.CanonicalBody(t, "", []byte(body))
}

// TestFixtureScenarios replays the master operations of every scenario in
// wire-fixtures/messages on a Go master with the same models and settings,
// and compares what lands in the outbox with what django-cqrs put on the
// wire: same keys, key order, value formats and routing keys.
func TestFixtureScenarios(t *testing.T) {
	recorded := fixtures.LoadMasterMessages(t)
	db := testenv.SQLite(t)
	ctx := context.Background()
	for _, s := range fixtures.MasterDDL {
		_, err := db.ExecContext(ctx, s)
		must(t, err)
	}
	must(t, outbox.Migrate(ctx, db.DB, db.Dialect))
	reg := fixtures.MasterRegistry(t)
	hooks, err := master.New(ctx, db.DB, reg, master.WithCorrelation(fixtures.Correlation), master.WithMeta(fixtures.Meta))
	must(t, err)
	plain, err := master.New(ctx, db.DB, reg)
	must(t, err)
	nottl, err := master.New(ctx, db.DB, reg, master.WithCorrelation(fixtures.Correlation), master.WithMeta(fixtures.Meta), master.WithMessageTTL(0))
	must(t, err)

	inTx := func(fn func(tx *sqlx.Tx) error) []sent {
		t.Helper()
		tx := db.MustBeginTx(ctx, nil)
		if err := fn(tx); err != nil {
			_ = tx.Rollback()
			t.Fatal(err)
		}
		must(t, tx.Commit())
		var out []sent
		rows, err := db.QueryxContext(ctx, "SELECT topic, body FROM cqrs_outbox ORDER BY id")
		must(t, err)
		for rows.Next() {
			var s sent
			must(t, rows.Scan(&s.topic, &s.body))
			out = append(out, s)
		}
		must(t, rows.Err())
		_, err = db.ExecContext(ctx, "DELETE FROM cqrs_outbox")
		must(t, err)
		return out
	}
	escapingName := func() string {
		var p wire.Payload
		must(t, json.Unmarshal([]byte(recorded["06_author_create_escaping"][0].Body), &p))
		v, _ := p.InstanceData.Get("name")
		return v.(string)
	}()
	ts := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04:05.999999-07:00", s)
		must(t, err)
		return tm
	}
	renamed := func(m *master.Master, id int) func(tx *sqlx.Tx) error {
		return func(tx *sqlx.Tx) error {
			var name string
			if err := tx.GetContext(ctx, &name, "SELECT name FROM author WHERE id = ?", id); err != nil {
				return err
			}
			return m.Update(ctx, tx, "author", id, map[string]any{"name": name + " (renamed)", "rating": "3.75"})
		}
	}
	create := func(m *master.Master, values map[string]any) func(tx *sqlx.Tx) error {
		return func(tx *sqlx.Tx) error { _, err := m.Insert(ctx, tx, "author", values); return err }
	}

	type scenario struct {
		name string
		op   func(tx *sqlx.Tx) error
		// differs explains a deliberate difference; expect then adjusts the
		// fixture body to what gocqrs sends.
		differs string
		expect  func(i int, body string) string
	}
	scenarios := []scenario{
		{name: "01_author_create_minimal", op: create(hooks, map[string]any{"name": "Minimal Author"})},
		{name: "02_author_update_tracked", op: renamed(hooks, 1)},
		{name: "03_author_update_untracked_only", op: func(tx *sqlx.Tx) error {
			return hooks.Update(ctx, tx, "author", 1, map[string]any{"birth_date": "1990-05-17", "active": false})
		}},
		{name: "04_author_create_all_types", op: create(hooks, map[string]any{
			"name": "All Types", "birth_date": "1815-12-10", "rating": "1234.56", "active": false,
			"external_uuid": "6f1c2a4e-9b7d-4c3a-8e21-0a5b4c3d2e1f",
			"payload": wire.FieldsOf("str", "v", "int", 7, "float", 2.5, "bool", true, "null", nil,
				"list", []any{1, "two", wire.FieldsOf("three", 3)}, "unicode", "é漢😀", "slash", "a/b"),
			"created_at": ts("2024-01-02 03:04:05.678901+00:00"),
		})},
		{name: "05_author_create_whole_values", op: create(hooks, map[string]any{
			"name": "Whole Values", "birth_date": "2000-02-29", "rating": "10.10",
			"external_uuid": "00000000-0000-0000-0000-000000000001", "payload": []any{},
			"created_at": ts("2024-06-30 23:59:59+00:00"),
		})},
		{name: "06_author_create_escaping", op: create(hooks, map[string]any{
			"name": escapingName, "payload": wire.FieldsOf("k/ey", `v"al`, "ü", []any{"é", "😀"}),
		})},
		{name: "07_author_create_naive_datetime", op: create(hooks, map[string]any{
			"name": "Naive Datetime", "created_at": ts("2024-03-04 05:06:07.890000+00:00"),
		}), differs: "django-cqrs serialises the in-memory naive datetime; gocqrs serialises the row as stored in the transaction (UTC, with offset) — the same value django-cqrs's own SYNC sends (09_*__05)",
			expect: func(_ int, body string) string {
				return strings.Replace(body, `"2024-03-04 05:06:07.890000"`, `"2024-03-04 05:06:07.890000+00:00"`, 1)
			}},
		{name: "08_author_create_float_rating", op: create(hooks, map[string]any{"name": "Float Rating", "rating": 2.675}),
			differs: "django-cqrs serialises the in-memory float 2.675; gocqrs serialises the stored decimal 2.68 — the same value django-cqrs's own SYNC sends (09_*__06)",
			expect:  func(_ int, body string) string { return strings.Replace(body, `"rating":2.675`, `"rating":2.68`, 1) }},
		{name: "09_cqrs_sync_broadcast", op: func(tx *sqlx.Tx) error { _, err := hooks.Sync(ctx, tx, "author", nil, ""); return err }},
		{name: "10_cqrs_sync_direct_queue", op: func(tx *sqlx.Tx) error {
			_, err := hooks.Sync(ctx, tx, "author", []any{2}, "fixture_replica")
			return err
		}},
		{name: "11_author_save_update_fields_no_message", op: func(tx *sqlx.Tx) error {
			_, err := tx.ExecContext(ctx, "UPDATE author SET name = name || ' [update_fields]' WHERE id = 1")
			return err
		}},
		{name: "12_author_save_update_fields_update_cqrs_fields", op: func(tx *sqlx.Tx) error {
			return hooks.Update(ctx, tx, "author", 1, map[string]any{"name": "Minimal Author (renamed) [update_fields] [update_cqrs_fields]"})
		}},
		{name: "13_author_queryset_update_no_message", op: func(tx *sqlx.Tx) error {
			_, err := tx.ExecContext(ctx, "UPDATE author SET name = 'queryset update' WHERE id = 1")
			return err
		}},
		{name: "14_author_atomic_double_save", op: func(tx *sqlx.Tx) error {
			if err := hooks.Update(ctx, tx, "author", 1, map[string]any{"name": "atomic first"}); err != nil {
				return err
			}
			return hooks.Update(ctx, tx, "author", 1, map[string]any{"name": "atomic second"})
		}, differs: "django-cqrs bumps the revision twice (3→5) for two saves in one transaction (README §9.1); gocqrs bumps once (3→4), so the replica sees no gap",
			expect: func(_ int, body string) string {
				return strings.Replace(body, `"cqrs_revision":5`, `"cqrs_revision":4`, 1)
			}},
		{name: "15_book_create", op: func(tx *sqlx.Tx) error {
			_, err := hooks.Insert(ctx, tx, "book", map[string]any{"title": "Notes on the Analytical Engine", "author": 2})
			return err
		}},
		{name: "16_book_delete_custom_data", op: func(tx *sqlx.Tx) error { return hooks.Delete(ctx, tx, "book", 1) }},
		{name: "17_author_delete", op: func(tx *sqlx.Tx) error { return hooks.Delete(ctx, tx, "author", 3) }},
		{name: "18_author_with_book_create", op: func(tx *sqlx.Tx) error {
			id, err := hooks.Insert(ctx, tx, "author", map[string]any{"name": "Cascade Author"})
			if err != nil {
				return err
			}
			_, err = hooks.Insert(ctx, tx, "book", map[string]any{"title": "Cascade Book", "author": id})
			return err
		}},
		{name: "19_author_delete_cascade", op: func(tx *sqlx.Tx) error {
			// gocqrs does not cascade for the caller: the service deletes
			// the book, then the author, as Django's collector did.
			if err := hooks.Delete(ctx, tx, "book", 2); err != nil {
				return err
			}
			return hooks.Delete(ctx, tx, "author", 7)
		}},
		{name: "20_bulk_create_with_pks", op: func(tx *sqlx.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO author (id, name, rating, birth_date) VALUES (101, 'Bulk One', NULL, NULL), (102, 'Bulk Two', 1.0, NULL), (103, 'Bulk Three', 2.5, '1970-01-01')"); err != nil {
				return err
			}
			return hooks.SaveMany(ctx, tx, "author", []any{101, 102, 103}, master.Created())
		}},
		{name: "21_bulk_update", op: func(tx *sqlx.Tx) error {
			return hooks.UpdateMany(ctx, tx, "author", []any{101, 102}, map[string]any{"name": "Bulk Updated", "rating": "9.99"})
		}},
		{name: "22_bulk_create_without_pks", op: func(tx *sqlx.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO author (name) VALUES ('Bulk No PK A'), ('Bulk No PK B')"); err != nil {
				return err
			}
			return hooks.SaveMany(ctx, tx, "author", []any{104, 105}, master.Created())
		}, differs: "Django 3.2 cannot return bulk-created ids on SQLite and sends id/instance_pk null, which every replica then dead-letters; gocqrs always sends the real primary key",
			expect: func(i int, body string) string {
				id := []string{"104", "105"}[i]
				body = strings.Replace(body, `"id":null`, `"id":`+id, 1)
				body = strings.Replace(body, `"instance_pk":null`, `"instance_pk":`+id, 1)
				return strings.Replace(body, `author:None:None`, `author:`+id+`:None`, 1)
			}},
		{name: "23_replica_fail_once_requeue", op: create(hooks, map[string]any{"name": "fail-once"})},
		{name: "24_replica_fail_always_dead_letter", op: create(hooks, map[string]any{"name": "fail-always"})},
		{name: "25_tag_uuid_pk_create", op: func(tx *sqlx.Tx) error {
			_, err := hooks.Insert(ctx, tx, "tag", map[string]any{"id": "0419d87b-5e1c-4bf3-a1d0-3c6b7c2d9e10", "name": "tag-one"})
			return err
		}},
		{name: "26_tag_uuid_pk_delete_fails", op: func(tx *sqlx.Tx) error {
			return hooks.Delete(ctx, tx, "tag", "0419d87b-5e1c-4bf3-a1d0-3c6b7c2d9e10")
		}, differs: "django-cqrs cannot encode a UUID primary key in a DELETE (issue #163) and sends nothing; gocqrs sends the DELETE"},
		{name: "27_label_char_pk_create", op: func(tx *sqlx.Tx) error {
			_, err := hooks.Insert(ctx, tx, "label", map[string]any{"code": "lbl/Ä-1", "name": "Label One"})
			return err
		}},
		{name: "28_label_char_pk_delete", op: func(tx *sqlx.Tx) error { return hooks.Delete(ctx, tx, "label", "lbl/Ä-1") }},
		{name: "29_plain_author_create", op: create(plain, map[string]any{"id": 108, "name": "Plain Author"})},
		{name: "30_plain_author_update", op: renamed(plain, 108)},
		{name: "31_plain_book_create", op: func(tx *sqlx.Tx) error {
			_, err := plain.Insert(ctx, tx, "book", map[string]any{"title": "Plain Book", "author": 108})
			return err
		}},
		{name: "32_plain_book_delete", op: func(tx *sqlx.Tx) error { return plain.Delete(ctx, tx, "book", 3) }},
		{name: "33_plain_cqrs_sync_direct_queue", op: func(tx *sqlx.Tx) error {
			_, err := plain.Sync(ctx, tx, "author", []any{108}, "fixture_replica")
			return err
		}},
		{name: "34_plain_author_delete", op: func(tx *sqlx.Tx) error { return plain.Delete(ctx, tx, "author", 108) }},
		{name: "35_nottl_author_create", op: create(nottl, map[string]any{"name": "No TTL Author"})},
	}
	// Scenario 22 left two failed messages on Django's side only; the ids
	// line up because the rows are inserted here too (104, 105), and 23/24
	// get 106/107 as on the master the fixtures were recorded from.
	for _, sc := range scenarios {
		got := inTx(sc.op)
		want := recorded[sc.name]
		if sc.name == "26_tag_uuid_pk_delete_fails" {
			if len(want) != 0 || len(got) != 1 || !strings.Contains(got[0].body, `"signal_type":"DELETE"`) {
				t.Errorf("%s: want django-cqrs's no message and one gocqrs DELETE, got fixture %d, ours %v", sc.name, len(want), got)
			}
			continue
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d messages, fixture has %d: %v", sc.name, len(got), len(want), got)
			continue
		}
		for i := range want {
			if got[i].topic != want[i].RoutingKey {
				t.Errorf("%s #%d: routing key %q, fixture %q", sc.name, i+1, got[i].topic, want[i].RoutingKey)
			}
			wantBody := want[i].Body
			if sc.expect != nil {
				wantBody = sc.expect(i, wantBody)
			}
			if g, w := canonical(t, got[i].body), canonical(t, wantBody); g != w {
				t.Errorf("%s #%d body differs (deliberate differences: %q)\n ours:    %s\n fixture: %s", sc.name, i+1, sc.differs, g, w)
			}
		}
	}
}
