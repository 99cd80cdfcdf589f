package master

import (
	"testing"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
)

// The shortcut for decimals already at their scale gives what the exact
// computation gives, and leaves every other form to it.
func TestQuantizedAlreadyMatchesExact(t *testing.T) {
	inputs := []string{"0", "5", "-5", "4.5", "4.50", "4.505", "-0", "-0.0", "-0.00", "0.00", "007.5", ".5", "5.", "+4.5",
		" 4.5", "4.5 ", "1e3", "12345678901234567890.12", "-12.3", "1.2.3", "", "-", "abc", "0.1", "-0.01"}
	for _, s := range inputs {
		for scale := 0; scale <= 3; scale++ {
			fast, ok := quantizedAlready(s, scale)
			exact, err := quantizeText(s, scale)
			if !ok {
				continue
			}
			if err != nil || fast != exact {
				t.Errorf("quantizedAlready(%q, %d) = %q, exact %q (%v)", s, scale, fast, exact, err)
			}
		}
	}
	for _, c := range []struct {
		s     string
		scale int
		want  bool
	}{{"4.50", 2, true}, {"4.5", 2, true}, {"4", 2, true}, {"4.505", 2, false}, {"-0.00", 2, false}, {"007", 0, false}} {
		if _, ok := quantizedAlready(c.s, c.scale); ok != c.want {
			t.Errorf("quantizedAlready(%q, %d) took it: %v, want %v", c.s, c.scale, ok, c.want)
		}
	}
}

// The quoted identifiers of a model are built once and built again when
// the model's table or field list changes (a registry bound again).
func TestQuotedCachedWhileModelUnchanged(t *testing.T) {
	d, err := dialect.For(string(dialect.Postgres))
	if err != nil {
		t.Fatal(err)
	}
	m := &Master{d: d}
	mm := &registry.MasterModel{CQRSID: "author", Table: "author", PK: "id", RevisionColumn: "cqrs_revision",
		UpdatedColumn: "cqrs_updated", Fields: []registry.Field{{Name: "id"}, {Name: "name"}}}
	first, err := m.quoted(mm)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := m.quoted(mm); again != first {
		t.Fatal("identifiers built again for an unchanged model")
	}
	if first.selectList() != `"cqrs_revision", "cqrs_updated", "id", "name"` || first.byField["name"] != `"name"` {
		t.Fatalf("select list %q, name column %q", first.selectList(), first.byField["name"])
	}
	mm.Fields = []registry.Field{{Name: "id"}, {Name: "name"}, {Name: "rating"}}
	rebound, err := m.quoted(mm)
	if err != nil {
		t.Fatal(err)
	}
	if rebound == first || rebound.selectList() != `"cqrs_revision", "cqrs_updated", "id", "name", "rating"` {
		t.Fatalf("after the field list changed: select list %q", rebound.selectList())
	}
	mm.Table = "writer"
	if moved, _ := m.quoted(mm); moved.table != `"writer"` {
		t.Fatalf("after the table changed: table %q", moved.table)
	}
}
