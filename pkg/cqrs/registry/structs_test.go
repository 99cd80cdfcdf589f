package registry_test

import (
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
)

// UUID stands for github.com/google/uuid.UUID and its look-alikes.
type UUID [16]byte

// Money is a user type that scans itself; its kind comes from the table.
type Money struct{ cents int64 }

// Scan makes Money a sql.Scanner.
func (m *Money) Scan(any) error { return nil }

// Status is a named string.
type Status string

type Timestamps struct {
	CreatedAt time.Time  `db:"created_at"`
	UpdatedAt *time.Time `db:"updated_at"`
}

type everyKind struct {
	ID         int64 `db:"id"`
	I8         int8
	U16        uint16           `db:"u16"`
	U64        uint64           `db:"u64"`
	F32        float32          `db:"f32"`
	F64        float64          `db:"f64"`
	Name       string           `db:"name"`
	State      Status           `db:"state"`
	Active     bool             `db:"active"`
	At         time.Time        `db:"at"`
	PtrAt      *time.Time       `db:"ptr_at"`
	NStr       sql.NullString   `db:"n_str"`
	NI64       sql.NullInt64    `db:"n_i64"`
	NI32       sql.NullInt32    `db:"n_i32"`
	NI16       sql.NullInt16    `db:"n_i16"`
	NByte      sql.NullByte     `db:"n_byte"`
	NF64       sql.NullFloat64  `db:"n_f64"`
	NBool      sql.NullBool     `db:"n_bool"`
	NTime      sql.NullTime     `db:"n_time"`
	NGeneric   sql.Null[int]    `db:"n_generic"`
	NGenStr    sql.Null[string] `db:"n_gen_str"`
	PtrI       *int             `db:"ptr_i"`
	PtrPtrS    **string         `db:"ptr_ptr_s"`
	Raw        []byte           `db:"raw"`
	Doc        json.RawMessage  `db:"doc"`
	Attrs      map[string]any   `db:"attrs"`
	Tags       []string         `db:"tags"`
	Pair       [2]int           `db:"pair"`
	Ext        UUID             `db:"ext"`
	PtrExt     *UUID            `db:"ptr_ext"`
	Price      Money            `db:"price"`
	Anything   any              `db:"anything"`
	Valuer     valuer           `db:"valuer"`
	Revision   int              `db:"cqrs_revision"`
	Updated    time.Time        `db:"cqrs_updated"`
	Ignored    string           `db:"-"`
	unexported int
	Timestamps
}

type valuer struct{ v string }

// Value makes valuer a driver.Valuer.
func (v valuer) Value() (driver.Value, error) { return v.v, nil }

func TestFieldsOfKinds(t *testing.T) {
	want := []struct {
		name string
		kind dialect.Kind
	}{
		{"id", dialect.KindInt}, {"i8", dialect.KindInt}, {"u16", dialect.KindInt}, {"u64", dialect.KindInt},
		{"f32", dialect.KindFloat}, {"f64", dialect.KindFloat},
		{"name", dialect.KindString}, {"state", dialect.KindString}, {"active", dialect.KindBool},
		{"at", dialect.KindDateTime}, {"ptr_at", dialect.KindDateTime},
		{"n_str", dialect.KindString}, {"n_i64", dialect.KindInt}, {"n_i32", dialect.KindInt}, {"n_i16", dialect.KindInt},
		{"n_byte", dialect.KindInt}, {"n_f64", dialect.KindFloat}, {"n_bool", dialect.KindBool}, {"n_time", dialect.KindDateTime},
		{"n_generic", dialect.KindInt}, {"n_gen_str", dialect.KindString},
		{"ptr_i", dialect.KindInt}, {"ptr_ptr_s", dialect.KindString},
		{"raw", dialect.KindBytes}, {"doc", dialect.KindJSON}, {"attrs", dialect.KindJSON}, {"tags", dialect.KindJSON}, {"pair", dialect.KindJSON},
		{"ext", dialect.KindUUID}, {"ptr_ext", dialect.KindUUID},
		{"price", dialect.KindAuto}, {"anything", dialect.KindAuto}, {"valuer", dialect.KindAuto},
		{"created_at", dialect.KindDateTime}, {"updated_at", dialect.KindDateTime},
	}
	for _, sample := range []any{everyKind{}, &everyKind{}, new(*everyKind)} {
		got, err := registry.FieldsOf(sample)
		if err != nil {
			t.Fatalf("FieldsOf(%T): %v", sample, err)
		}
		if len(got) != len(want) {
			names := make([]string, len(got))
			for i, f := range got {
				names[i] = f.Name
			}
			t.Fatalf("FieldsOf(%T): %d fields %v, want %d", sample, len(got), names, len(want))
		}
		for i, w := range want {
			if g := got[i]; g.Name != w.name || g.Kind != w.kind || g.Column != "" || g.Scale != -1 || g.Nullable || g.HasDefault {
				t.Errorf("FieldsOf(%T) field %d = %+v, want name %q kind %q", sample, i, g, w.name, w.kind)
			}
		}
	}
}

func TestFieldsOfTags(t *testing.T) {
	type Book struct {
		ID       int64     `db:"id,omitempty"`
		Title    string    `db:"title"`
		AuthorID int64     `db:"author_id" cqrs:"name=author"`
		Price    float64   `db:"price" cqrs:"decimal"`
		Day      time.Time `db:"day" cqrs:"date"`
		Ref      string    `db:"ref" cqrs:"uuid"`
		Blob     Money     `db:"blob" cqrs:"bytes"`
		When     string    `db:"when_at" cqrs:" timestamptz , name=when"`
		Auto     int       `db:"auto" cqrs:"auto"`
		Extra    string    `db:"extra" cqrs:"-"`
		Version  int64     `db:"version" cqrs:"-"`
		Self     string    `db:"self" cqrs:"name=self"`
	}
	got, err := registry.FieldsOf(&Book{})
	if err != nil {
		t.Fatal(err)
	}
	want := []registry.Field{
		{Name: "id", Kind: dialect.KindInt, Scale: -1},
		{Name: "title", Kind: dialect.KindString, Scale: -1},
		{Name: "author", Column: "author_id", Kind: dialect.KindInt, Scale: -1},
		{Name: "price", Kind: dialect.KindDecimal, Scale: -1},
		{Name: "day", Kind: dialect.KindDate, Scale: -1},
		{Name: "ref", Kind: dialect.KindUUID, Scale: -1},
		{Name: "blob", Kind: dialect.KindBytes, Scale: -1},
		{Name: "when", Column: "when_at", Kind: dialect.KindDateTime, Scale: -1},
		{Name: "auto", Kind: dialect.KindAuto, Scale: -1},
		{Name: "self", Kind: dialect.KindString, Scale: -1},
	}
	checkFields(t, got, want)
	// The result registers as a master model as is.
	if err := registry.New().RegisterMaster(registry.MasterModel{CQRSID: "book", Table: "book", Fields: got}); err != nil {
		t.Errorf("RegisterMaster(FieldsOf): %v", err)
	}
}

type Base struct {
	ID      int64  `db:"id"`
	Name    string `db:"name"`
	private string
}

type inner struct {
	Code string `db:"code"`
}

type Node struct {
	*Node        // recursive embedding is ignored, as sqlx does
	Value string `db:"value"`
}

func TestFieldsOfEmbedded(t *testing.T) {
	type Outer struct {
		Base
		Name  string `db:"name"` // shadows Base.Name (shallower wins)
		inner        // unexported embedded struct: its exported fields are promoted
		Extra string `db:"extra"`
		*Timestamps
	}
	got, err := registry.FieldsOf(Outer{})
	if err != nil {
		t.Fatal(err)
	}
	checkFields(t, got, []registry.Field{
		{Name: "id", Kind: dialect.KindInt, Scale: -1},
		{Name: "name", Kind: dialect.KindString, Scale: -1},
		{Name: "code", Kind: dialect.KindString, Scale: -1},
		{Name: "extra", Kind: dialect.KindString, Scale: -1},
		{Name: "created_at", Kind: dialect.KindDateTime, Scale: -1},
		{Name: "updated_at", Kind: dialect.KindDateTime, Scale: -1},
	})
	got, err = registry.FieldsOf(Node{})
	if err != nil {
		t.Fatal(err)
	}
	checkFields(t, got, []registry.Field{{Name: "value", Kind: dialect.KindString, Scale: -1}})
}

func TestFieldsOfErrors(t *testing.T) {
	type Nested struct{ A int }
	type Other struct {
		Name string `db:"name"`
	}
	type sameDepth1 struct {
		X int `db:"x"`
	}
	type sameDepth2 struct {
		X string `db:"x"`
	}
	type BadColumn struct {
		ID   int `db:"id"`
		Evil int `db:"evil\"; DROP TABLE x; --"`
	}
	type LongName struct {
		ID int `db:"id"`
		// sqlx maps it to its lower-cased name, 64 characters: too long for an identifier.
		Aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa int
	}
	type TwoColumns struct {
		A int `db:"a"`
		B int `db:"a"`
	}
	type TwoKeys struct {
		Author   string `db:"author"`
		AuthorID int    `db:"author_id" cqrs:"name=author"`
	}
	type SyncKey struct {
		Rev int `db:"rev" cqrs:"name=cqrs_revision"`
	}
	type BadKind struct {
		Amount float64 `db:"amount" cqrs:"money"`
	}
	type TwoKind struct {
		Amount float64 `db:"amount" cqrs:"decimal,float"`
	}
	type EmptyName struct {
		Amount float64 `db:"amount" cqrs:"name="`
	}
	type StructField struct {
		ID     int    `db:"id"`
		Nested Nested `db:"nested"`
	}
	type ChanField struct {
		C chan int `db:"c"`
	}
	type FuncField struct {
		F func() `db:"f"`
	}
	type ComplexField struct {
		Z complex128 `db:"z"`
	}
	type TaggedEmbed struct {
		Other `db:"other"`
	}
	type Ambiguous struct {
		sameDepth1
		sameDepth2
	}
	type NoFields struct {
		a int
		B int `db:"-"`
	}
	cases := []struct {
		sample any
		want   []string
	}{
		{42, []string{"FieldsOf(int)", "want a struct"}},
		{nil, []string{"FieldsOf(<nil>)", "want a struct"}},
		{[]Other{}, []string{"want a struct"}},
		{BadColumn{}, []string{"registry_test.BadColumn", "field Evil", "identifier"}},
		{LongName{}, []string{"registry_test.LongName", "field Aaaa", "identifier"}},
		{TwoColumns{}, []string{"registry_test.TwoColumns", "field B", `column "a"`, "field A"}},
		{TwoKeys{}, []string{"registry_test.TwoKeys", "field AuthorID", `key "author"`, "field Author"}},
		{SyncKey{}, []string{"registry_test.SyncKey", "field Rev", "reserved"}},
		{BadKind{}, []string{"registry_test.BadKind", "field Amount", `"money"`}},
		{TwoKind{}, []string{"registry_test.TwoKind", "field Amount", "two kinds"}},
		{EmptyName{}, []string{"registry_test.EmptyName", "field Amount", "name= needs a key"}},
		{StructField{}, []string{"registry_test.StructField", "field Nested", "registry_test.Nested", "sql.Scanner"}},
		{ChanField{}, []string{"registry_test.ChanField", "field C", "chan int"}},
		{FuncField{}, []string{"registry_test.FuncField", "field F"}},
		{ComplexField{}, []string{"registry_test.ComplexField", "field Z", "complex128"}},
		{TaggedEmbed{}, []string{"registry_test.TaggedEmbed", "field Other", "embedded struct"}},
		{Ambiguous{}, []string{"registry_test.Ambiguous", "field sameDepth2.X", `column "x"`, "sameDepth1.X"}},
		{NoFields{}, []string{"registry_test.NoFields", "no fields"}},
	}
	for _, c := range cases {
		got, err := registry.FieldsOf(c.sample)
		if got != nil {
			t.Errorf("FieldsOf(%T) returned fields with an error: %v", c.sample, got)
		}
		wantErr(t, err, append([]string{"registry: FieldsOf("}, c.want...)...)
	}
	// A struct field with an explicit kind is the user's business (a Valuer
	// on the pointer, say).
	type JSONField struct {
		Nested Nested `db:"nested" cqrs:"json"`
	}
	if got, err := registry.FieldsOf(JSONField{}); err != nil || len(got) != 1 || got[0].Kind != dialect.KindJSON {
		t.Errorf("FieldsOf(JSONField) = %+v, %v", got, err)
	}
}

func TestFieldsOfReplica(t *testing.T) {
	type BookRef struct {
		ID       int64  `db:"id"`
		Name     string `db:"name"`
		AuthorID int64  `db:"author_id"`
	}
	fs, err := registry.FieldsOf(BookRef{})
	if err != nil {
		t.Fatal(err)
	}
	err = registry.New().RegisterReplica(registry.ReplicaModel{CQRSID: "book", Table: "book_ref", Fields: fs,
		Mapping: []registry.Mapping{{From: "id", To: "id"}, {From: "title", To: "name"}, {From: "author", To: "author_id"}}})
	if err != nil {
		t.Fatalf("RegisterReplica(FieldsOf): %v", err)
	}
	// A renamed key is a master concept; a replica says so.
	type Renamed struct {
		ID       int64 `db:"id"`
		AuthorID int64 `db:"author_id" cqrs:"name=author"`
	}
	fs, err = registry.FieldsOf(Renamed{})
	if err != nil {
		t.Fatal(err)
	}
	err = registry.New().RegisterReplica(registry.ReplicaModel{CQRSID: "book", Table: "book_ref", Fields: fs})
	wantErr(t, err, `replica model "book"`, "use Mapping")
	if !strings.Contains(err.Error(), `"author"`) {
		t.Errorf("error %q does not name the field", err)
	}
}
