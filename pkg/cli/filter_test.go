package cli

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

func filterTable(t *testing.T, name dialect.Name) *tableRef {
	t.Helper()
	d, err := dialect.For(string(name))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := newTableRef(d, "author", "author", "id", "cqrs_revision", "cqrs_updated", []tableField{
		{key: "id", column: "id", kind: dialect.KindInt},
		{key: "name", column: "name", kind: dialect.KindString},
		{key: "rating", column: "rating", kind: dialect.KindDecimal},
		{key: "active", column: "active", kind: dialect.KindBool},
		{key: "birth_date", column: "birth_date", kind: dialect.KindDate},
		{key: "created_at", column: "created_at", kind: dialect.KindDateTime},
		{key: "external_uuid", column: "external_uuid", kind: dialect.KindUUID},
		{key: "payload", column: "payload", kind: dialect.KindJSON},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestFilterBuildsBoundConditions(t *testing.T) {
	tr := filterTable(t, dialect.Postgres)
	for _, c := range []struct {
		filter string
		sql    string
		args   []any
	}{
		{`{}`, ``, nil},
		{`{"id": 2}`, `"id" = ?`, []any{int64(2)}},
		{`{"pk__in": [1, "2"]}`, `"id" IN (?, ?)`, []any{int64(1), int64(2)}},
		{`{"id__in": []}`, `1 = 0`, nil},
		{`{"id__gt": 1, "id__lte": 9}`, `"id" > ? AND "id" <= ?`, []any{int64(1), int64(9)}},
		{`{"cqrs_revision__gte": 3}`, `"cqrs_revision" >= ?`, []any{int64(3)}},
		{`{"name": "x'; DROP TABLE author; --"}`, `"name" = ?`, []any{"x'; DROP TABLE author; --"}},
		{`{"name__exact": null}`, `"name" IS NULL`, nil},
		{`{"birth_date__isnull": false}`, `"birth_date" IS NOT NULL`, nil},
		{`{"birth_date__range": ["1980-01-01", "1990-12-31"]}`, `"birth_date" BETWEEN ? AND ?`, []any{"1980-01-01", "1990-12-31"}},
		{`{"rating__lt": 2.5}`, `"rating" < ?`, []any{"2.5"}},
		{`{"active": true}`, `"active" = ?`, []any{true}},
		{`{"external_uuid": "1111111111114111811111111111111A"}`, `"external_uuid" = ?`, []any{"11111111-1111-4111-8111-11111111111a"}},
		{`{"created_at__gte": "2024-01-01T12:00:00+01:00"}`, `"created_at" >= ?`, []any{time.Date(2024, 1, 1, 11, 0, 0, 0, time.UTC)}},
		{`{"payload__isnull": true}`, `"payload" IS NULL`, nil},
	} {
		w, err := parseFilter(c.filter, tr)
		if err != nil {
			t.Errorf("%s: %v", c.filter, err)
			continue
		}
		if w.sql != c.sql || !reflect.DeepEqual(w.args, c.args) {
			t.Errorf("%s: %q %#v, want %q %#v", c.filter, w.sql, w.args, c.sql, c.args)
		}
	}
	// Datetimes are bound in the form the replica engine writes.
	w, err := parseFilter(`{"cqrs_updated__lt": "2026-11-27 09:45:35.05+00:00"}`, filterTable(t, dialect.SQLite))
	if err != nil || !reflect.DeepEqual(w.args, []any{"2026-11-27 09:45:35.050000+00:00"}) {
		t.Errorf("sqlite datetime: %#v %v", w.args, err)
	}
	w, err = parseFilter(`{"cqrs_updated__lt": "2026-11-27 09:45:35.05+00:00"}`, filterTable(t, dialect.MySQL))
	if err != nil || !reflect.DeepEqual(w.args, []any{"2026-11-27 09:45:35.050000"}) || w.sql != "`cqrs_updated` < ?" {
		t.Errorf("mysql datetime: %q %#v %v", w.sql, w.args, err)
	}
}

func TestFilterErrorsNameTheKey(t *testing.T) {
	tr := filterTable(t, dialect.SQLite)
	for _, c := range []struct{ filter, want string }{
		{`[1]`, "want a JSON object"},
		{`{"id": 1`, "not valid JSON"},
		{`{"nmae": "x"}`, `key "nmae": model "author" has no field "nmae" (fields: pk, id, name,`},
		{`{"name__icontains": "x"}`, `key "name__icontains": lookup "icontains" is not supported (supported: exact, in, gt, gte, lt, lte, isnull, range)`},
		{`{"name__in": "x"}`, `key "name__in": __in wants a list`},
		{`{"id__in": [1, null]}`, `key "id__in": item 1: null is only allowed`},
		{`{"id": "two"}`, `key "id": "two" is not an integer`},
		{`{"id__gt": null}`, `key "id__gt": null is only allowed`},
		{`{"active": "yes"}`, `key "active": "yes" is not a boolean`},
		{`{"birth_date": "1990-02-31"}`, `key "birth_date": "1990-02-31" is not a date`},
		{`{"created_at__lt": "yesterday"}`, `key "created_at__lt": "yesterday" is not a datetime`},
		{`{"external_uuid": "nope"}`, `key "external_uuid": "nope" is not a UUID`},
		{`{"rating": "cheap"}`, `key "rating": "cheap" is not a number`},
		{`{"payload": {"team": "a"}}`, `key "payload": field "payload" holds JSON`},
		{`{"id__range": [1]}`, `key "id__range": __range wants a list of two values`},
		{`{"birth_date__isnull": "no"}`, `key "birth_date__isnull": __isnull wants true or false`},
		{`{"name": ["a"]}`, `key "name": ["a"] is not a single value`},
	} {
		_, err := parseFilter(c.filter, tr)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "--filter: ") {
			t.Errorf("%s: %v, want a usage error with %q", c.filter, err, c.want)
		}
	}
}

// Filters select the same rows on every database.
func TestFilterOnEveryDatabase(t *testing.T) {
	eachDB(t, func(t *testing.T, m, _ *side) {
		loadMasterFixture(t, m)
		for _, c := range []struct{ filter, pks string }{
			{`{"id": 2}`, "[[2,0]]"},
			{`{"pk__in": [1, 3, 99]}`, "[[1,0],[3,1]]"},
			{`{"id__gt": 3}`, "[[4,0],[5,0]]"},
			{`{"id__range": [2, 4]}`, "[[2,0],[3,1],[4,0]]"},
			{`{"cqrs_revision__gte": 1}`, "[[3,1]]"},
			{`{"birth_date__isnull": false}`, "[[1,0],[3,1]]"},
			{`{"birth_date": null}`, "[[2,0],[4,0],[5,0]]"},
			{`{"birth_date__lt": "1989-01-01"}`, "[[3,1]]"},
			{`{"active": false}`, "[[2,0]]"},
			{`{"active": true, "id__lte": 3}`, "[[1,0],[3,1]]"},
			{`{"name": "Bob / \"the builder\""}`, "[[2,0]]"},
			{`{"name": "Dmitri \u0416\u0443\u043a\u043e\u0432 \ud83d\ude00"}`, "[[4,0]]"},
			{`{"rating": 0.1}`, "[[2,0]]"},
			{`{"rating__gte": 1}`, "[[1,0]]"},
			{`{"external_uuid": "11111111-1111-4111-8111-111111111111"}`, "[[1,0]]"},
			{`{"created_at__gte": "2024-02-01 00:00:00+00:00"}`, "[[5,0]]"},
			{`{"cqrs_updated__lt": "2026-11-27 09:45:35.06+00:00"}`, "[[1,0],[2,0]]"},
			{`{"payload__isnull": true}`, "[[2,0],[3,1],[4,0]]"},
		} {
			res := m.run("", "diff-master", "--cqrs-id", "author", "-f", c.filter)
			lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
			if res.code != ExitOK || len(lines) != 2 || lines[1] != c.pks {
				t.Errorf("%s: %+v, want %s", c.filter, res, c.pks)
			}
		}
		if res := m.run("", "diff-master", "--cqrs-id", "author", "-f", `{"id__in": []}`); res.code != ExitOK || res.stdout != "" || res.stderr != "No objects found for filter!\n" {
			t.Errorf("empty __in: %+v", res)
		}
	})
}
