package master_test

import (
	"context"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// TestPostgresArrayColumns: a master writes Go slices to PostgreSQL array
// columns and sends them as JSON lists (as django-cqrs sends an
// ArrayField), built from what the database stored (numeric(5,1) rounds);
// a replica applying those messages ends with the same arrays.
func TestPostgresArrayColumns(t *testing.T) {
	db := testenv.Postgres(t)
	ctx := context.Background()
	cols := `(id integer PRIMARY KEY, tags integer[], names text[], grid integer[][], docs jsonb[], flags boolean[],
		nums numeric(5,1)[], cqrs_revision integer NOT NULL DEFAULT 0, cqrs_updated timestamptz NULL)`
	for _, tbl := range []string{"arr", "arr_ref"} {
		if _, err := db.ExecContext(ctx, "CREATE TABLE "+tbl+" "+cols); err != nil {
			t.Fatal(err)
		}
	}
	must(t, outbox.Migrate(ctx, db.DB, db.Dialect))
	must(t, replica.Migrate(ctx, db.DB, db.Dialect, replica.Options{}))
	reg := registry.New()
	must(t, reg.RegisterMaster(registry.MasterModel{CQRSID: "arr", Table: "arr"}))
	must(t, reg.RegisterReplica(registry.ReplicaModel{CQRSID: "arr", Table: "arr_ref", PK: "id"}))
	m, err := master.New(ctx, db.DB, reg)
	must(t, err)
	eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, replica.Options{})
	must(t, err)

	tx := db.MustBeginTx(ctx, nil)
	_, err = m.Insert(ctx, tx, "arr", map[string]any{
		"id": 1, "tags": []int64{1, 2, 3}, "names": []string{"a,b", `q"x`, `back\slash`, "", "NULL", " sp ", "{}"},
		"grid": [][]int{{1, 2}, {3, 4}}, "docs": []any{map[string]any{"a": 1}, nil, "s"}, "flags": []bool{true, false},
		"nums": []any{1.25, 2, nil},
	})
	must(t, err)
	_, err = m.Insert(ctx, tx, "arr", map[string]any{"id": 2, "tags": "{7,8}"})
	must(t, err)
	must(t, tx.Commit())
	tx = db.MustBeginTx(ctx, nil)
	must(t, m.Update(ctx, tx, "arr", 2, map[string]any{"tags": []any{}, "names": []any{"x"}}))
	must(t, tx.Commit())

	bodies := outboxBodies(t, db.DB)
	if len(bodies) != 3 {
		t.Fatalf("%d messages, want 3", len(bodies))
	}
	for _, want := range []string{`"tags":[1,2,3]`, `"names":["a,b","q\"x","back\\slash","","NULL"," sp ","{}"]`,
		`"grid":[[1,2],[3,4]]`, `"docs":[{"a":1},null,"s"]`, `"flags":[true,false]`, `"nums":[1.3,2.0,null]`} {
		if !strings.Contains(bodies[0], want) {
			t.Errorf("first message lacks %s:\n%s", want, bodies[0])
		}
	}
	if !strings.Contains(bodies[1], `"tags":[7,8]`) || !strings.Contains(bodies[2], `"tags":[]`) ||
		!strings.Contains(bodies[2], `"names":["x"]`) || !strings.Contains(bodies[2], `"grid":null`) {
		t.Errorf("second and third messages:\n%s\n%s", bodies[1], bodies[2])
	}
	for i, b := range bodies {
		p, err := wire.Decode([]byte(b))
		must(t, err)
		if res, err := eng.Apply(ctx, replica.Delivery{Payload: p}); err != nil || !res.Outcome.Applied() {
			t.Fatalf("message %d on the replica: %+v %v", i+1, res, err)
		}
	}
	const q = `SELECT concat_ws('|', id, tags, names, grid, docs, flags, nums, cqrs_revision) FROM %s ORDER BY id`
	var got, want []string
	must(t, db.SelectContext(ctx, &want, strings.Replace(q, "%s", "arr", 1)))
	must(t, db.SelectContext(ctx, &got, strings.Replace(q, "%s", "arr_ref", 1)))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("replica:\n%s\nmaster:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(want) != 2 || !strings.HasPrefix(want[0], `1|{1,2,3}|{"a,b","q\"x","back\\slash","","NULL"," sp ","{}"}|{{1,2},{3,4}}`) {
		t.Errorf("master rows: %q", want)
	}
}
