package replica

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// wideDDL is a table of the types whose binding in arrays could differ
// from one parameter per value: a type modifier the cast must not apply
// (char(5), bit(3), numeric(6,2), varchar(10)), an enum and a domain
// (no array type pgx knows), integers beyond int64, floats, bytes, JSON,
// intervals and both kinds of timestamp.
var wideDDL = []string{
	`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`,
	`CREATE DOMAIN positive AS integer CHECK (VALUE > 0)`,
	`CREATE TABLE %s (
		id integer PRIMARY KEY,
		cqrs_revision integer NOT NULL,
		cqrs_updated timestamp with time zone NOT NULL,
		code char(5), flags bit(3), amount numeric(6,2), label varchar(10),
		feel mood, pos positive, big numeric(30,0), ratio real, dbl double precision,
		blob bytea, doc json, docb jsonb, span interval,
		at timestamp, day date, u uuid, ok boolean)`,
}

// wideRow is row pk at revision rev; bad makes label too long for the
// column, huge puts an integer beyond int64 into big.
func wideRow(pk, rev int, bad, huge bool) string {
	label := fmt.Sprintf("l%d", rev)
	if bad {
		label = "far too long a label"
	}
	big := json.Number(fmt.Sprint(pk * 1000))
	if huge {
		big = "123456789012345678901234567890"
	}
	f := wire.FieldsOf(
		"id", pk, "cqrs_revision", rev, "cqrs_updated", fmt.Sprintf("2026-01-01 10:00:%02d.123456+00:00", rev),
		"code", "ab", "flags", "101", "amount", json.Number(fmt.Sprintf("%d.125", pk)), "label", label,
		"feel", []string{"sad", "ok", "happy"}[pk%3], "pos", pk, "big", big,
		"ratio", json.Number("0.1"), "dbl", json.Number(fmt.Sprintf("%d.3e-2", pk)),
		"blob", "bytes\x00and more", "doc", map[string]any{"a": []any{1, "x"}, " b": nil}, "docb", map[string]any{"z": 1, "a": true},
		"span", "1 day 02:03:04", "at", "2026-02-03T04:05:06.789012",
		"day", "2026-03-04", "u", fmt.Sprintf("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD38%04d", pk), "ok", pk%2 == 0)
	if pk%4 == 0 { // NULLs, in some rows of every column that takes them
		for _, c := range []string{"code", "flags", "amount", "feel", "pos", "big", "ratio", "dbl", "blob", "doc", "docb", "span", "at", "day", "u", "ok"} {
			f.Set(c, nil)
		}
	}
	b, err := json.Marshal(f)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestBatchArraysMatchOneByOne applies the same messages to two tables of
// wideDDL, in batches to one and one by one to the other, and compares
// every column as the database prints it: the upserts from arrays write
// what one parameter per value writes and reject what it rejects, also
// for a column that mixes strings with integers (one beyond int64 among
// int64s) and a domain over integer, both bound as text.
func TestBatchArraysMatchOneByOne(t *testing.T) {
	db := testenv.Postgres(t)
	ctx := context.Background()
	for _, tbl := range []string{"wide_batch", "wide_one"} {
		for i, s := range wideDDL {
			if i < 2 && tbl != "wide_batch" {
				continue
			}
			if _, err := db.ExecContext(ctx, strings.ReplaceAll(s, "%s", tbl)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := Migrate(ctx, db.DB, db.Dialect, Options{}); err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	for _, m := range []registry.ReplicaModel{{CQRSID: "wb", Table: "wide_batch", PK: "id"}, {CQRSID: "wo", Table: "wide_one", PK: "id"}} {
		if err := reg.RegisterReplica(m); err != nil {
			t.Fatal(err)
		}
	}
	logs := &testenv.SyncBuffer{}
	eng, err := NewEngine(ctx, db.DB, db.Dialect, reg, Options{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	payload := func(id, data string) *wire.Payload {
		p, err := wire.Decode([]byte(`{"signal_type":"SAVE","cqrs_id":"` + id + `","instance_pk":0,"instance_data":` + data + `}`))
		if err != nil {
			t.Fatal(err)
		}
		p.InstancePK, _ = p.InstanceData.Get("id")
		return p
	}
	// Batch 1 creates 40 rows, batch 2 updates them (row 7 with a label
	// too long), batch 3 updates them again with an integer beyond int64
	// in row 9's big.
	for rev, mod := range []func(pk int) (bad, huge bool){
		func(int) (bool, bool) { return false, false },
		func(pk int) (bool, bool) { return pk == 7, false },
		func(pk int) (bool, bool) { return false, pk == 9 },
	} {
		var dls []Delivery
		var wantErr []bool
		for pk := 1; pk <= 40; pk++ {
			bad, huge := mod(pk)
			data := wideRow(pk, rev, bad, huge)
			dls = append(dls, Delivery{Payload: payload("wb", data)})
			wantErr = append(wantErr, bad)
			_, oneErr := eng.Apply(ctx, Delivery{Payload: payload("wo", data)})
			if (oneErr != nil) != bad {
				t.Fatalf("revision %d, row %d, one by one: %v", rev, pk, oneErr)
			}
		}
		res, errs, err := eng.ApplyBatch(ctx, dls)
		if err != nil {
			t.Fatalf("revision %d: %v", rev, err)
		}
		for i := range dls {
			if (errs[i] != nil) != wantErr[i] || (errs[i] == nil && !res[i].Outcome.Applied()) {
				t.Errorf("revision %d, row %d: %+v, %v", rev, i+1, res[i], errs[i])
			}
		}
	}
	read := func(tbl string) []string {
		var out []string
		if err := db.SelectContext(ctx, &out, "SELECT t::text FROM "+tbl+" AS t ORDER BY id"); err != nil {
			t.Fatal(err)
		}
		return out
	}
	batch, one := read("wide_batch"), read("wide_one")
	if len(batch) != 40 || len(one) != 40 {
		t.Fatalf("%d and %d rows, want 40", len(batch), len(one))
	}
	for i := range batch {
		if batch[i] != one[i] {
			t.Errorf("row %d:\nbatched     %s\none by one  %s", i+1, batch[i], one[i])
		}
	}
	if !strings.Contains(batch[0], "(1,2,") || !strings.Contains(batch[0], `"ab   "`) || !strings.Contains(batch[0], "1.13") {
		t.Errorf("row 1 is not as written: %s", batch[0])
	}
	var viaArrays, textAndNative bool
	eng.models["wb"].batch.stmts.Range(func(k, _ any) bool {
		if key := k.(string); strings.HasPrefix(key, "unnest:") {
			viaArrays = true
			binds := key[strings.LastIndex(key, ":")+1:]
			textAndNative = textAndNative || strings.ContainsRune(binds, bindText) && strings.ContainsRune(binds, bindNative)
		}
		return true
	})
	if !viaArrays || !textAndNative {
		t.Errorf("no upsert from arrays with text and native columns was built (arrays %v, both %v)", viaArrays, textAndNative)
	}
	// Only the batch with the too long label is redone (and split): the
	// others were written by their first statements.
	if n := strings.Count(logs.String(), "CQRS batch redone with savepoints"); n != 1 {
		t.Errorf("%d batches redone, want 1:\n%.3000s", n, logs.String())
	}
}
