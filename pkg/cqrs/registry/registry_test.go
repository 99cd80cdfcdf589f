package registry_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

func fields(names ...string) []registry.Field {
	out := make([]registry.Field, len(names))
	for i, n := range names {
		out[i] = registry.Field{Name: n}
	}
	return out
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

func TestRegisterMasterErrors(t *testing.T) {
	cases := []struct {
		name string
		m    registry.MasterModel
		want []string
	}{
		{"empty id", registry.MasterModel{Table: "author"}, []string{"master model", "empty cqrs_id"}},
		{"hash in id", registry.MasterModel{CQRSID: "au#thor", Table: "author"}, []string{`"au#thor"`, "'#'"}},
		{"star in id", registry.MasterModel{CQRSID: "a*", Table: "author"}, []string{`"a*"`, "'*'"}},
		{"space in id", registry.MasterModel{CQRSID: "an author", Table: "author"}, []string{`"an author"`, "spaces"}},
		{"no table", registry.MasterModel{CQRSID: "author"}, []string{`"author"`, "table", `identifier ""`}},
		{"injected table", registry.MasterModel{CQRSID: "author", Table: `author"; DROP TABLE x; --`}, []string{`"author"`, "table", "DROP TABLE"}},
		{"bad revision column", registry.MasterModel{CQRSID: "author", Table: "author", RevisionColumn: "rev ision"}, []string{`"author"`, "revision column", `"rev ision"`}},
		{"bad updated column", registry.MasterModel{CQRSID: "author", Table: "author", UpdatedColumn: "1upd"}, []string{`"author"`, "updated column", `"1upd"`}},
		{"bad column", registry.MasterModel{CQRSID: "author", Table: "author", Fields: []registry.Field{{Name: "id"}, {Name: "author", Column: "author id"}}}, []string{`"author"`, `field "author"`, `"author id"`}},
		{"unnamed field", registry.MasterModel{CQRSID: "author", Table: "author", Fields: []registry.Field{{Name: "id"}, {Column: "x"}}}, []string{`"author"`, "field 1 has no name"}},
		{"field twice", registry.MasterModel{CQRSID: "author", Table: "author", Fields: fields("id", "name", "name")}, []string{`"author"`, `field "name" declared twice`}},
		{"bad kind", registry.MasterModel{CQRSID: "author", Table: "author", Fields: []registry.Field{{Name: "id", Kind: "money"}}}, []string{`"author"`, `field "id"`, `"money"`}},
		{"pk not a field", registry.MasterModel{CQRSID: "author", Table: "author", Fields: fields("name")}, []string{`"author"`, `primary key "id" is not among its fields`}},
		{"named pk not a field", registry.MasterModel{CQRSID: "label", Table: "label", PK: "code", Fields: fields("id", "name")}, []string{`"label"`, `primary key "code"`}},
		{"tracked not a field", registry.MasterModel{CQRSID: "author", Table: "author", Fields: fields("id", "name"), TrackedFields: []string{"name", "rating"}}, []string{`"author"`, `tracked field "rating"`}},
		{"sync column as field", registry.MasterModel{CQRSID: "author", Table: "author", Fields: fields("id", "cqrs_revision")}, []string{`"author"`, `"cqrs_revision"`, "sync column"}},
		{"custom sync column as field", registry.MasterModel{CQRSID: "author", Table: "author", UpdatedColumn: "changed", Fields: fields("id", "changed")}, []string{`"author"`, `"changed"`, "sync column"}},
		{"sync key as field name", registry.MasterModel{CQRSID: "author", Table: "author", RevisionColumn: "rev", Fields: []registry.Field{{Name: "id"}, {Name: "cqrs_revision", Column: "version"}}}, []string{`"author"`, `"cqrs_revision"`, "reserved"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := registry.New()
			wantErr(t, r.RegisterMaster(c.m), append([]string{"registry: master model"}, c.want...)...)
			if len(r.MasterIDs()) != 0 {
				t.Errorf("a rejected model was registered: %v", r.MasterIDs())
			}
		})
	}
}

func TestRegisterReplicaErrors(t *testing.T) {
	save := func(context.Context, *registry.ApplyContext) error { return nil }
	create := func(context.Context, *registry.ApplyContext, *wire.Fields) error { return nil }
	cases := []struct {
		name string
		m    registry.ReplicaModel
		want []string
	}{
		{"empty id", registry.ReplicaModel{Table: "author_ref"}, []string{"replica model", "empty cqrs_id"}},
		{"hash in id", registry.ReplicaModel{CQRSID: "book#", Table: "book_ref"}, []string{`"book#"`, "'#'"}},
		{"neither table nor raw", registry.ReplicaModel{CQRSID: "author"}, []string{`"author"`, "no table and no Raw handlers"}},
		{"hooks without table", registry.ReplicaModel{CQRSID: "author", Hooks: registry.ReplicaHooks{Create: create}}, []string{`"author"`, "no table and no Raw handlers"}},
		{"raw with table", registry.ReplicaModel{CQRSID: "author", Table: "author_ref", Raw: registry.RawHandlers{Save: save}}, []string{`"author"`, "raw replica", `"author_ref"`}},
		{"bad table", registry.ReplicaModel{CQRSID: "author", Table: "s.t.u"}, []string{`"author"`, "table", `"s.t.u"`}},
		{"bad pk", registry.ReplicaModel{CQRSID: "author", Table: "author_ref", PK: "1id"}, []string{`"author"`, "primary key", `"1id"`}},
		{"bad revision column", registry.ReplicaModel{CQRSID: "author", Table: "author_ref", RevisionColumn: "a-b"}, []string{`"author"`, "revision column", `"a-b"`}},
		{"bad field", registry.ReplicaModel{CQRSID: "author", Table: "author_ref", Fields: fields("id", "na me")}, []string{`"author"`, `field "na me"`}},
		{"renamed field", registry.ReplicaModel{CQRSID: "book", Table: "book_ref", Fields: []registry.Field{{Name: "id"}, {Name: "author", Column: "author_id"}}}, []string{`"book"`, `field "author"`, "use Mapping"}},
		{"pk not a field", registry.ReplicaModel{CQRSID: "author", Table: "author_ref", Fields: fields("name")}, []string{`"author"`, `primary key "id" is not among its fields`}},
		{"sync column as field", registry.ReplicaModel{CQRSID: "author", Table: "author_ref", Fields: fields("id", "cqrs_updated")}, []string{`"author"`, `"cqrs_updated"`, "sync column"}},
		{"mapping without target", registry.ReplicaModel{CQRSID: "book", Table: "book_ref", Mapping: []registry.Mapping{{From: "title"}}}, []string{`"book"`, "both sides are required"}},
		{"mapping without source", registry.ReplicaModel{CQRSID: "book", Table: "book_ref", Mapping: []registry.Mapping{{To: "name"}}}, []string{`"book"`, "both sides are required"}},
		{"mapping to bad identifier", registry.ReplicaModel{CQRSID: "book", Table: "book_ref", Mapping: []registry.Mapping{{From: "title", To: "name; --"}}}, []string{`"book"`, `"title"→"name; --"`}},
		{"mapping target twice", registry.ReplicaModel{CQRSID: "book", Table: "book_ref", Mapping: []registry.Mapping{{From: "title", To: "name"}, {From: "name", To: "name"}}}, []string{`"book"`, `column "name" is the target of two keys`}},
		{"mapping target not a column", registry.ReplicaModel{CQRSID: "book", Table: "book_ref", Fields: fields("id", "name"), Mapping: []registry.Mapping{{From: "id", To: "id"}, {From: "author", To: "author_id"}}}, []string{`"book"`, `"author"→"author_id"`, "no such column"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := registry.New()
			wantErr(t, r.RegisterReplica(c.m), append([]string{"registry: replica model"}, c.want...)...)
			if len(r.ReplicaIDs()) != 0 {
				t.Errorf("a rejected model was registered: %v", r.ReplicaIDs())
			}
		})
	}
}

func TestRegisterDuplicate(t *testing.T) {
	r := registry.New()
	if err := r.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author"}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, r.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author2"}), `master model "author"`, "already registered")
	if m, _ := r.Master("author"); m.Table != "author" {
		t.Errorf("the duplicate replaced the first model: table %q", m.Table)
	}
	// A master and a replica may share a cqrs_id (a service replicating its own entity).
	if err := r.RegisterReplica(registry.ReplicaModel{CQRSID: "author", Table: "author_ref"}); err != nil {
		t.Fatalf("replica with a master's cqrs_id: %v", err)
	}
	wantErr(t, r.RegisterReplica(registry.ReplicaModel{CQRSID: "author", Table: "author_ref2"}), `replica model "author"`, "already registered")
}

func TestRegisterDefaultsAndCopies(t *testing.T) {
	r := registry.New()
	fs := fields("id", "name")
	tracked := []string{"name"}
	if err := r.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "s.author", Fields: fs, TrackedFields: tracked}); err != nil {
		t.Fatal(err)
	}
	mapping := []registry.Mapping{{From: "title", To: "name"}}
	if err := r.RegisterReplica(registry.ReplicaModel{CQRSID: "book", Table: "book_ref", Mapping: mapping}); err != nil {
		t.Fatal(err)
	}
	// The caller's slices are copied: changing them later does not change the model.
	fs[1].Name = "changed"
	tracked[0] = "changed"
	mapping[0].To = "changed"

	m, ok := r.Master("author")
	if !ok {
		t.Fatal("master author not found")
	}
	if m.PK != "id" || m.RevisionColumn != registry.DefaultRevisionColumn || m.UpdatedColumn != registry.DefaultUpdatedColumn {
		t.Errorf("master defaults: pk %q rev %q upd %q", m.PK, m.RevisionColumn, m.UpdatedColumn)
	}
	if m.Fields[1].Name != "name" || m.TrackedFields[0] != "name" {
		t.Errorf("master shares the caller's slices: %v %v", m.Fields, m.TrackedFields)
	}
	rm, ok := r.Replica("book")
	if !ok {
		t.Fatal("replica book not found")
	}
	if rm.PK != "id" || rm.RevisionColumn != "cqrs_revision" || rm.UpdatedColumn != "cqrs_updated" || rm.Mapping[0].To != "name" {
		t.Errorf("replica: pk %q rev %q upd %q mapping %v", rm.PK, rm.RevisionColumn, rm.UpdatedColumn, rm.Mapping)
	}
	if _, ok := r.Master("book"); ok {
		t.Error("Master(book) found a replica-only id")
	}
	if _, ok := r.Replica("nope"); ok {
		t.Error("Replica(nope) found something")
	}

	// A raw replica needs no table and keeps its (empty) defaults.
	raw := registry.ReplicaModel{CQRSID: "event", Raw: registry.RawHandlers{Delete: func(context.Context, *registry.ApplyContext) error { return nil }}}
	if err := r.RegisterReplica(raw); err != nil {
		t.Fatalf("raw replica: %v", err)
	}
	if got, _ := r.Replica("event"); !got.IsRaw() || got.Table != "" {
		t.Errorf("raw replica: IsRaw %v table %q", got.IsRaw(), got.Table)
	}
	if rm.IsRaw() {
		t.Error("table replica reports IsRaw")
	}
}

func TestIDsSorted(t *testing.T) {
	r := registry.New()
	for _, id := range []string{"zeta", "alpha", "mid.dle"} {
		if err := r.RegisterMaster(registry.MasterModel{CQRSID: id, Table: "t"}); err != nil {
			t.Fatal(err)
		}
		if err := r.RegisterReplica(registry.ReplicaModel{CQRSID: "r_" + id, Table: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.MasterIDs(); !slices.Equal(got, []string{"alpha", "mid.dle", "zeta"}) {
		t.Errorf("MasterIDs = %v", got)
	}
	if got := r.ReplicaIDs(); !slices.Equal(got, []string{"r_alpha", "r_mid.dle", "r_zeta"}) {
		t.Errorf("ReplicaIDs = %v", got)
	}
}

// Concurrent registration and lookup is safe (run with -race).
func TestRegisterConcurrent(t *testing.T) {
	r := registry.New()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Add(2)
		id := string(rune('a' + i))
		go func() {
			defer wg.Done()
			errs <- r.RegisterMaster(registry.MasterModel{CQRSID: id, Table: "t"})
			r.MasterIDs()
		}()
		go func() {
			defer wg.Done()
			// Everyone races for the same replica id: exactly one wins.
			errs <- r.RegisterReplica(registry.ReplicaModel{CQRSID: "shared", Table: "t", Fields: []registry.Field{{Name: "id", Kind: dialect.KindInt}}})
			r.Replica("shared")
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
		}
	}
	if len(r.MasterIDs()) != 20 || len(r.ReplicaIDs()) != 1 || failed != 19 {
		t.Errorf("masters %d replicas %d failures %d; want 20, 1, 19", len(r.MasterIDs()), len(r.ReplicaIDs()), failed)
	}
}
