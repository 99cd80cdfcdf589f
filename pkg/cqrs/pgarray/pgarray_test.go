package pgarray

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		v    any
		elem string
		want string
	}{
		{[]any{}, "int4", "{}"},
		{[]int64{1, -2}, "int8", "{1,-2}"},
		{[]any{json.Number("1.50"), nil, true}, "numeric", "{1.50,NULL,true}"},
		{[]string{"a,b", `q"x`, `b\s`, "", "NULL", " sp ", "{}"}, "text", `{"a,b","q\"x","b\\s","","NULL"," sp ","{}"}`},
		{[][]int{{1, 2}, {3, 4}}, "int4", "{{1,2},{3,4}}"},
		{[]float64{0.1, math.NaN(), math.Inf(1), math.Inf(-1)}, "float8", "{0.1,NaN,Infinity,-Infinity}"},
		{[]any{map[string]any{"a": 1}, "s", json.Number("2"), nil, []any{true}}, "jsonb", `{"{\"a\":1}","\"s\"","2",NULL,{"true"}}`},
		{[]time.Time{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, "timestamptz", `{"2026-01-02T03:04:05Z"}`},
		{[]any{[]byte("xy")}, "text", `{"xy"}`},
	} {
		got, err := Format(c.v, c.elem)
		if err != nil || got != c.want {
			t.Errorf("Format(%#v, %s) = %s, %v; want %s", c.v, c.elem, got, err, c.want)
		}
	}
	for _, v := range []any{nil, "x", 5, []byte("x")} {
		if _, err := Format(v, "int4"); err == nil || !strings.Contains(err.Error(), "not a list") {
			t.Errorf("Format(%#v): %v, want a not-a-list error", v, err)
		}
	}
}

func TestParse(t *testing.T) {
	for _, c := range []struct {
		s, elem string
		want    []any
	}{
		{"{}", "int4", []any{}},
		{"{1,NULL,-3}", "int4", []any{json.Number("1"), nil, json.Number("-3")}},
		{"[0:1]={7,8}", "int8", []any{json.Number("7"), json.Number("8")}},
		{`{"a,b","q\"x","b\\s","",NULL,"NULL",null, sp ,\NULL}`, "text", []any{"a,b", `q"x`, `b\s`, "", nil, "NULL", nil, "sp", "NULL"}},
		{"{{1,2},{3,4}}", "int4", []any{[]any{json.Number("1"), json.Number("2")}, []any{json.Number("3"), json.Number("4")}}},
		{"{1.50,NaN,Infinity,-Infinity,1e400}", "numeric", []any{json.Number("1.50"), "NaN", "Infinity", "-Infinity", json.Number("1e400")}},
		{"{t,f}", "bool", []any{true, false}},
		{`{"{\"a\": 1}",NULL,"\"s\""}`, "jsonb", []any{map[string]any{"a": json.Number("1")}, nil, "s"}},
		{`{2026-01-02,"2026-01-03 04:05:06+00"}`, "date", []any{"2026-01-02", "2026-01-03 04:05:06+00"}},
	} {
		got, err := Parse(c.s, c.elem)
		if err != nil {
			t.Errorf("Parse(%s, %s): %v", c.s, c.elem, err)
			continue
		}
		if !reflect.DeepEqual(normalise(got), normalise(c.want)) {
			t.Errorf("Parse(%s, %s) = %#v, want %#v", c.s, c.elem, got, c.want)
		}
	}
	for _, s := range []string{"", "1,2", "{1,2", "{1,,2}", `{"a}`, "{1}x", "[1:2]{1,2}", "{a\"b}", "{x}"} {
		if _, err := Parse(s, "int4"); err == nil {
			t.Errorf("Parse(%q): no error", s)
		}
	}
}

// normalise turns decoded JSON objects into maps, for comparing.
func normalise(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	if err := d.Decode(&out); err != nil {
		return v
	}
	return out
}

// TestRoundTrip: what Format writes, Parse reads back as the same list.
func TestRoundTrip(t *testing.T) {
	for _, c := range []struct {
		v    []any
		elem string
	}{
		{[]any{"a,b", `q"x`, `b\s`, "", "NULL", nil, "{}", " sp ", "ünï"}, "text"},
		{[]any{json.Number("1"), nil, json.Number("-20")}, "int4"},
		{[]any{[]any{json.Number("1")}, []any{nil}}, "int4"},
		{[]any{true, nil, false}, "bool"},
		{[]any{map[string]any{"k": []any{json.Number("1"), "v"}}, "s", nil, json.Number("3")}, "jsonb"},
	} {
		s, err := Format(c.v, c.elem)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(s, c.elem)
		if err != nil || !reflect.DeepEqual(normalise(got), normalise(c.v)) {
			t.Errorf("%v (%s) → %s → %#v, %v", c.v, c.elem, s, got, err)
		}
	}
}
