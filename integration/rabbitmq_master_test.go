package integration

// A Go master's messages on a real RabbitMQ, compared with what django-cqrs's
// master put on the wire (wire-fixtures/messages): a subset of the recorded
// scenarios is replayed on a Go master with the fixture models (SQLite, as
// the recording's master), its outbox is published by the relay through
// the rabbitmq transport, and a sniffer bound with "#" on exchange "cqrs"
// compares routing keys, every AMQP property and the body format (keys and
// key order; values once the volatile cqrs_updated and expires are set
// aside).

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/internal/brokertest"
	"github.com/gocqrs/gocqrs/internal/fixtures"
	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// bodyShape describes a body's format: the envelope's keys in order and,
// for every object in it (instance_data, previous_data, meta), its keys in
// order; previous_data's keys sorted, since django-cqrs builds it from a
// Python set whose order changes per process.
func bodyShape(t *testing.T, body []byte) string {
	t.Helper()
	keys, vals, err := objectKeys(body)
	if err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	shape := []string{"envelope: " + strings.Join(keys, ",")}
	for _, k := range keys {
		inner, _, err := objectKeys(vals[k])
		if err != nil {
			continue // not an object
		}
		if k == "previous_data" {
			sort.Strings(inner)
		}
		shape = append(shape, k+": "+strings.Join(inner, ","))
	}
	return strings.Join(shape, "\n")
}

func TestRabbitMQMasterScenarios(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	node := brokertest.Shared(t)
	u, _ := node.Vhost(t)
	sniffer := brokertest.Sniff(t, u, rmqExchange, "fixture_sniff")
	recorded := fixtures.LoadMasterMessages(t)

	db := testenv.SQLite(t)
	for _, s := range fixtures.MasterDDL {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := outbox.Migrate(ctx, db.DB, db.Dialect); err != nil {
		t.Fatal(err)
	}
	reg := fixtures.MasterRegistry(t)
	hooks, err := master.New(ctx, db.DB, reg, master.WithCorrelation(fixtures.Correlation), master.WithMeta(fixtures.Meta))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := master.New(ctx, db.DB, reg)
	if err != nil {
		t.Fatal(err)
	}
	tr := newRabbitTransport(t, u)
	relay, err := outbox.NewRelay(db.DB, db.Dialect, tr.Publisher(), outbox.RelayOptions{
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "relay", relay.Run)

	create := func(m *master.Master, cqrsID string, values map[string]any) func(tx *sqlx.Tx) error {
		return func(tx *sqlx.Tx) error { _, err := m.Insert(ctx, tx, cqrsID, values); return err }
	}
	createdAt, err := time.Parse("2006-01-02 15:04:05.999999-07:00", "2024-01-02 03:04:05.678901+00:00")
	if err != nil {
		t.Fatal(err)
	}
	// The scenarios run in the recorded order; those left out (other
	// authors, bulk operations, ...) do not touch the rows used here, so
	// ids and revisions line up with the recording.
	scenarios := []struct {
		name string
		op   func(tx *sqlx.Tx) error
	}{
		{"01_author_create_minimal", create(hooks, "author", map[string]any{"name": "Minimal Author"})},
		{"02_author_update_tracked", func(tx *sqlx.Tx) error {
			return hooks.Update(ctx, tx, "author", 1, map[string]any{"name": "Minimal Author (renamed)", "rating": "3.75"})
		}},
		{"03_author_update_untracked_only", func(tx *sqlx.Tx) error {
			return hooks.Update(ctx, tx, "author", 1, map[string]any{"birth_date": "1990-05-17", "active": false})
		}},
		{"04_author_create_all_types", create(hooks, "author", map[string]any{
			"name": "All Types", "birth_date": "1815-12-10", "rating": "1234.56", "active": false,
			"external_uuid": "6f1c2a4e-9b7d-4c3a-8e21-0a5b4c3d2e1f",
			"payload": wire.FieldsOf("str", "v", "int", 7, "float", 2.5, "bool", true, "null", nil,
				"list", []any{1, "two", wire.FieldsOf("three", 3)}, "unicode", "é漢😀", "slash", "a/b"),
			"created_at": createdAt,
		})},
		{"10_cqrs_sync_direct_queue", func(tx *sqlx.Tx) error {
			_, err := hooks.Sync(ctx, tx, "author", []any{2}, "fixture_replica")
			return err
		}},
		{"15_book_create", create(hooks, "book", map[string]any{"title": "Notes on the Analytical Engine", "author": 2})},
		{"16_book_delete_custom_data", func(tx *sqlx.Tx) error { return hooks.Delete(ctx, tx, "book", 1) }},
		{"27_label_char_pk_create", create(hooks, "label", map[string]any{"code": "lbl/Ä-1", "name": "Label One"})},
		{"28_label_char_pk_delete", func(tx *sqlx.Tx) error { return hooks.Delete(ctx, tx, "label", "lbl/Ä-1") }},
		{"29_plain_author_create", create(plain, "author", map[string]any{"id": 108, "name": "Plain Author"})},
		{"30_plain_author_update", func(tx *sqlx.Tx) error {
			return plain.Update(ctx, tx, "author", 108, map[string]any{"name": "Plain Author (renamed)", "rating": "3.75"})
		}},
		{"33_plain_cqrs_sync_direct_queue", func(tx *sqlx.Tx) error {
			_, err := plain.Sync(ctx, tx, "author", []any{108}, "fixture_replica")
			return err
		}},
	}
	total := 0
	for _, sc := range scenarios {
		want := recorded[sc.name]
		if len(want) == 0 {
			t.Fatalf("%s: no recorded master message", sc.name)
		}
		from := sniffer.Len()
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.op(tx); err != nil {
			_ = tx.Rollback()
			t.Fatalf("%s: %v", sc.name, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		total += len(want)
		got := sniffer.Wait(t, from+len(want), from, rmqWait)
		for i, w := range want {
			what := fmt.Sprintf("%s #%d", sc.name, i+1)
			g := got[i]
			if g.RoutingKey != w.RoutingKey {
				t.Errorf("%s: routing key %q, recorded %q", what, g.RoutingKey, w.RoutingKey)
			}
			if gp, wp := propsJSON(t, g.Properties), propsJSON(t, w.Properties); gp != wp {
				t.Errorf("%s: properties\n ours     %s\n recorded %s", what, gp, wp)
			}
			if gs, ws := bodyShape(t, g.Body), bodyShape(t, []byte(w.Body)); gs != ws {
				t.Errorf("%s: body keys\n ours:\n%s\n recorded:\n%s", what, gs, ws)
			}
			if gb, wb := fixtures.CanonicalBody(t, what, g.Body), fixtures.CanonicalBody(t, what+" (recorded)", []byte(w.Body)); gb != wb {
				t.Errorf("%s: body\n ours     %s\n recorded %s", what, gb, wb)
			}
		}
		if len(got) > len(want) {
			t.Errorf("%s: %d messages on the exchange, recorded %d", sc.name, len(got), len(want))
		}
	}
	testenv.WaitFor(t, rmqWait, "the outbox drained", func() bool {
		n, _, err := outbox.Pending(ctx, db.DB, db.Dialect)
		return err == nil && n == 0
	})
	if st := relay.Stats(); st.Published != int64(total) || st.Failed != 0 {
		t.Errorf("relay stats %+v, want %d published and no failure", st, total)
	}
}
