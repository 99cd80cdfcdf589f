package replica_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// TestPostgresArrayColumns: a master sends a PostgreSQL array column (a
// Django ArrayField) as a JSON list; the replica writes it as the array,
// one message at a time and in batches alike, and refuses a value that is
// not a list, naming the column.
func TestPostgresArrayColumns(t *testing.T) {
	db := testenv.Postgres(t)
	ctx := context.Background()
	for _, tbl := range []string{"arr_one", "arr_batch"} {
		if _, err := db.ExecContext(ctx, `CREATE TABLE `+tbl+` (id integer PRIMARY KEY,
			cqrs_revision integer NOT NULL, cqrs_updated timestamp with time zone NOT NULL,
			ints integer[], texts text[], grid integer[][], docs jsonb[], flags boolean[], nums numeric(5,1)[])`); err != nil {
			t.Fatal(err)
		}
	}
	if err := replica.Migrate(ctx, db.DB, db.Dialect, replica.Options{}); err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	for _, m := range []registry.ReplicaModel{{CQRSID: "one", Table: "arr_one", PK: "id"}, {CQRSID: "batch", Table: "arr_batch", PK: "id"}} {
		if err := reg.RegisterReplica(m); err != nil {
			t.Fatal(err)
		}
	}
	eng, err := replica.NewEngine(ctx, db.DB, db.Dialect, reg, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rows := []struct{ data, want string }{
		{`"ints":[1,null,3],"texts":["a,b","q\"x","back\\slash","","NULL",null,"{}"," sp "],"grid":[[1,2],[3,4]],` +
			`"docs":[{"a":[1,"x"]},null,"s"],"flags":[true,false,null],"nums":[1.25,2,-0.04]`,
			`{1,NULL,3}|{"a,b","q\"x","back\\slash","","NULL",NULL,"{}"," sp "}|{{1,2},{3,4}}|` +
				`{"{\"a\": [1, \"x\"]}",NULL,"\"s\""}|{t,f,NULL}|{1.3,2.0,0.0}`},
		{`"ints":[],"texts":null,"grid":[],"docs":[],"flags":[],"nums":null`, `{}||{}|{}|{}|`},
	}
	payload := func(id string, pk int, data string) *wire.Payload {
		p, err := wire.Decode([]byte(fmt.Sprintf(`{"signal_type":"SAVE","cqrs_id":%q,"instance_pk":%d,"instance_data":`+
			`{"id":%d,"cqrs_revision":0,"cqrs_updated":"2026-01-01 10:00:00+00:00",%s}}`, id, pk, pk, data)))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	var dls []replica.Delivery
	for i, r := range rows {
		if res, err := eng.Apply(ctx, replica.Delivery{Payload: payload("one", i+1, r.data)}); err != nil || !res.Outcome.Applied() {
			t.Fatalf("row %d one by one: %+v %v", i+1, res, err)
		}
		dls = append(dls, replica.Delivery{Payload: payload("batch", i+1, r.data)})
	}
	res, errs, err := eng.ApplyBatch(ctx, dls)
	if err != nil {
		t.Fatal(err)
	}
	for i := range dls {
		if errs[i] != nil || !res[i].Outcome.Applied() {
			t.Fatalf("row %d batched: %+v %v", i+1, res[i], errs[i])
		}
	}
	for _, tbl := range []string{"arr_one", "arr_batch"} {
		for i, r := range rows {
			var got string
			if err := db.GetContext(ctx, &got, `SELECT concat_ws('|', COALESCE(ints::text, ''), COALESCE(texts::text, ''),
				COALESCE(grid::text, ''), COALESCE(docs::text, ''), COALESCE(flags::text, ''), COALESCE(nums::text, ''))
				FROM `+tbl+` WHERE id = $1`, i+1); err != nil {
				t.Fatal(err)
			}
			if got != r.want {
				t.Errorf("%s row %d:\n got %s\nwant %s", tbl, i+1, got, r.want)
			}
		}
	}
	_, err = eng.Apply(ctx, replica.Delivery{Payload: payload("one", 9, `"ints":5`)})
	if !errors.Is(err, replica.ErrBadValue) || !strings.Contains(err.Error(), `column "ints"`) || !strings.Contains(err.Error(), "not a list") {
		t.Errorf("a number for an array column: %v", err)
	}
}
