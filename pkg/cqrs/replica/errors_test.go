package replica_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

func TestErrorsNameWhatFailed(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *testenv.DB) {
		freshDB(t, db)
		eng := authorEngine(t, db, replica.Options{}, nil)
		const u = `"cqrs_updated":"2026-01-01 10:00:00+00:00"`
		badSignal := msg(t, "SAVE", "author", author(1, 0, "2026-01-01 10:00:00+00:00", "x"))
		badSignal.SignalType = "UPSERT"
		ghost := msg(t, "SAVE", "author", author(1, 0, "2026-01-01 10:00:00+00:00", "x"))
		ghost.CQRSID = "ghost"

		cases := []struct {
			name string
			p    *wire.Payload
			is   error
			want []string
		}{
			{"bad signal", badSignal, replica.ErrBadSignal, []string{`Bad signal type "UPSERT" for CQRS_ID "author"`}},
			{"unknown model", ghost, replica.ErrUnknownModel, []string{"No model with such CQRS_ID: ghost"}},
			{"no cqrs_revision", msg(t, "SAVE", "author", `{`+u+`,"id":1,"name":"x","active":true}`),
				replica.ErrSyncFields, []string{"CQRS sync fields are not provided", "(author, pk = 1)"}},
			{"bad cqrs_updated", msg(t, "SAVE", "author", `{"cqrs_revision":0,"cqrs_updated":"yesterday","id":1,"name":"x","active":true}`),
				replica.ErrSyncFields, []string{"CQRS sync fields are not provided", `"yesterday"`, "pk = 1"}},
			{"DELETE without cqrs_updated", msg(t, "DELETE", "author", `{"id":1,"cqrs_revision":1}`),
				replica.ErrSyncFields, []string{"CQRS sync fields are not provided", "(author, pk = 1)"}},
			{"DELETE without id", msg(t, "DELETE", "author", `{"cqrs_revision":1,`+u+`}`),
				replica.ErrNoPK, []string{"CQRS PK is not provided", "author", `"id"`}},
			{"SAVE without pk", msg(t, "SAVE", "author", `{"cqrs_revision":0,`+u+`,"name":"x","active":true}`),
				replica.ErrNoPK, []string{"CQRS PK is not provided", "author"}},
			{"missing required", msg(t, "SAVE", "author", `{"cqrs_revision":0,`+u+`,"id":1,"active":true}`),
				replica.ErrRequiredFields, []string{"Not all required CQRS fields are provided", "(author, pk = 1)", `"name"`}},
			{"bad mapping", msg(t, "SAVE", "book", `{"cqrs_revision":0,`+u+`,"id":11,"author":1}`),
				replica.ErrBadMapping, []string{"Bad master-replica mapping for title (book, pk = 11)"}},
			{"bad decimal", msg(t, "SAVE", "author", `{"cqrs_revision":0,`+u+`,"id":1,"name":"x","active":true,"rating":"abc"}`),
				replica.ErrBadValue, []string{`column "rating"`, `"abc"`, "(author, pk = 1)"}},
			{"bad date", msg(t, "SAVE", "author", `{"cqrs_revision":0,`+u+`,"id":1,"name":"x","active":true,"birth_date":"2024-02-30"}`),
				replica.ErrBadValue, []string{`column "birth_date"`, `"2024-02-30"`, "pk = 1"}},
			{"bad datetime", msg(t, "SAVE", "author", `{"cqrs_revision":0,`+u+`,"id":1,"name":"x","active":true,"created_at":"noon"}`),
				replica.ErrBadValue, []string{`column "created_at"`, `"noon"`}},
			{"bad uuid", msg(t, "SAVE", "author", `{"cqrs_revision":0,`+u+`,"id":1,"name":"x","active":true,"external_uuid":"not-a-uuid"}`),
				replica.ErrBadValue, []string{`column "external_uuid"`, `"not-a-uuid"`}},
			{"bad bool", msg(t, "SAVE", "author", `{"cqrs_revision":0,`+u+`,"id":1,"name":"x","active":"maybe"}`),
				replica.ErrBadValue, []string{`column "active"`, `"maybe"`}},
			{"null into NOT NULL", msg(t, "SAVE", "author", `{"cqrs_revision":0,`+u+`,"id":1,"name":null,"active":true}`),
				replica.ErrBadValue, []string{`column "name"`, "NOT NULL"}},
			{"null pk", msg(t, "SAVE", "author", `{"cqrs_revision":0,`+u+`,"id":null,"name":"x","active":true}`),
				replica.ErrBadValue, []string{`column "id"`, "NOT NULL"}},
			{"fractional int", msg(t, "SAVE", "book", `{"cqrs_revision":0,`+u+`,"id":12,"title":"t","author":1.5}`),
				replica.ErrBadValue, []string{`column "author_id"`, "1.5", "(book, pk = 12)"}},
		}
		for _, c := range cases {
			_, err := eng.Apply(context.Background(), replica.Delivery{Payload: c.p})
			if err == nil {
				t.Errorf("%s: applied, want an error", c.name)
				continue
			}
			if !errors.Is(err, c.is) {
				t.Errorf("%s: %v is not %v", c.name, err, c.is)
			}
			if c.is != replica.ErrUnknownModel && errors.Is(err, replica.ErrUnknownModel) {
				t.Errorf("%s: %v must not be ErrUnknownModel (it would be dropped)", c.name, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: error %q does not contain %q", c.name, err, w)
				}
			}
		}
		if n := count(t, db, "SELECT COUNT(*) FROM author_ref"); n != 0 {
			t.Errorf("failed messages left %d rows", n)
		}
	})
}

func TestNewEngineChecksDeclaredColumns(t *testing.T) {
	db := freshDB(t, testenv.SQLite(t))
	ctx := context.Background()
	reg := registry.New()
	if err := reg.RegisterReplica(registry.ReplicaModel{
		CQRSID: "author", Table: "author_ref", PK: "id",
		Fields: []registry.Field{{Name: "id"}, {Name: "name"}, {Name: "nickname"}},
	}); err != nil {
		t.Fatal(err)
	}
	_, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, replica.Options{})
	for _, w := range []string{`"author"`, `"author_ref"`, `"nickname"`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("NewEngine with an unknown column: %v, want it to name %s", err, w)
		}
	}
	reg = registry.New()
	if err := reg.RegisterReplica(registry.ReplicaModel{CQRSID: "author", Table: "no_such_table", PK: "id"}); err != nil {
		t.Fatal(err)
	}
	if _, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, replica.Options{}); err == nil || !strings.Contains(err.Error(), "no_such_table") {
		t.Errorf("NewEngine with a missing table: %v", err)
	}
}

func TestDeclaredFieldsSubset(t *testing.T) {
	// A model declaring only some columns writes only those; the others
	// keep their defaults (or NULL), and keys for undeclared columns are ignored.
	db := freshDB(t, testenv.SQLite(t))
	eng := authorEngine(t, db, replica.Options{}, func(m *registry.ReplicaModel) {
		m.Fields = []registry.Field{{Name: "id"}, {Name: "name"}, {Name: "active"}}
	})
	apply(t, eng, msg(t, "SAVE", "author", `{"cqrs_revision":0,"cqrs_updated":"2026-01-01 10:00:00+00:00","id":1,"name":"Ann","active":true,"rating":9.5}`), false)
	if n := count(t, db, "SELECT COUNT(*) FROM author_ref WHERE rating IS NULL AND name = 'Ann'"); n != 1 {
		t.Errorf("undeclared column rating was written (or the row is missing)")
	}
}
