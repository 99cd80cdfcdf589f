package wire_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

const minimalBody = `{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"id":1},"instance_pk":1}`

// body builds an envelope from minimalBody with one key replaced, added
// (value non-empty) or removed (value empty).
func body(key, value string) string {
	kv := map[string]string{
		"signal_type":   `"SAVE"`,
		"cqrs_id":       `"author"`,
		"instance_data": `{"id":1}`,
		"instance_pk":   `1`,
	}
	order := []string{"signal_type", "cqrs_id", "instance_data", "instance_pk"}
	if _, ok := kv[key]; !ok {
		order = append(order, key)
	}
	kv[key] = value
	var parts []string
	for _, k := range order {
		if kv[k] != "" {
			parts = append(parts, `"`+k+`":`+kv[k])
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestDecodeErrors(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 1100) + "1" + strings.Repeat("}", 1100)
	tests := []struct {
		body   string
		reason wire.DecodeReason
		key    string
		detail string
	}{
		{"", wire.ReasonInvalidJSON, "", "empty body"},
		{"   ", wire.ReasonInvalidJSON, "", "empty body"},
		{`{"signal_type":"SAVE","cqrs_id":"author", this is not json`, wire.ReasonInvalidJSON, "", "unexpected 't', want a key string at offset 42"},
		{`[]`, wire.ReasonInvalidJSON, "", "body is an array, want an object"},
		{`null`, wire.ReasonInvalidJSON, "", "body is null"},
		{`"x"`, wire.ReasonInvalidJSON, "", "body is a string"},
		{minimalBody + " {}", wire.ReasonInvalidJSON, "", "unexpected data after the JSON value"},
		{`{"signal_type":"SAVE",}`, wire.ReasonInvalidJSON, "", "want a key string"},
		{`{"signal_type" "SAVE"}`, wire.ReasonInvalidJSON, "", "want ':'"},
		{`{"a":[1,]}`, wire.ReasonInvalidJSON, "", "want a value"},
		{`{"a":01}`, wire.ReasonInvalidJSON, "", "want ',' or '}'"},
		{`{"a":1.}`, wire.ReasonInvalidJSON, "", "a digit after '.'"},
		{`{"a":-}`, wire.ReasonInvalidJSON, "", "want a digit"},
		{`{"a":1e}`, wire.ReasonInvalidJSON, "", "exponent digit"},
		{`{"a":NaN}`, wire.ReasonInvalidJSON, "", "want a value"},
		{`{"a":tru}`, wire.ReasonInvalidJSON, "", "want true"},
		{`{"a":"\x"}`, wire.ReasonInvalidJSON, "", `invalid escape 'x'`},
		{`{"a":"\u12"}`, wire.ReasonInvalidJSON, "", `invalid \u escape`},
		{"{\"a\":\"\xff\"}", wire.ReasonInvalidJSON, "", "invalid UTF-8"},
		{"{\"a\":\"\\n\xc3\"}", wire.ReasonInvalidJSON, "", "invalid UTF-8"},
		{`{"a":"abc`, wire.ReasonInvalidJSON, "", "unterminated string"},
		{`{"a":"abc\`, wire.ReasonInvalidJSON, "", "unterminated string"},
		{`{"a":`, wire.ReasonInvalidJSON, "", "unexpected end of input"},
		{`{'a':1}`, wire.ReasonInvalidJSON, "", "want a key string"},
		{deep, wire.ReasonInvalidJSON, "", "nesting deeper than 1024"},
		{body("signal_type", ""), wire.ReasonMissingKey, "signal_type", ""},
		{body("cqrs_id", ""), wire.ReasonMissingKey, "cqrs_id", ""},
		{body("instance_data", ""), wire.ReasonMissingKey, "instance_data", ""},
		{body("instance_pk", ""), wire.ReasonMissingKey, "instance_pk", ""},
		{`{}`, wire.ReasonMissingKey, "signal_type", ""},
		{body("signal_type", "1"), wire.ReasonBadValue, "signal_type", "want a string, got a number"},
		{body("signal_type", "null"), wire.ReasonBadValue, "signal_type", "got null"},
		{body("cqrs_id", `["author"]`), wire.ReasonBadValue, "cqrs_id", "got an array"},
		{body("instance_data", "[]"), wire.ReasonBadValue, "instance_data", "want an object, got an array"},
		{body("instance_data", "null"), wire.ReasonBadValue, "instance_data", "got null"},
		{body("previous_data", `"x"`), wire.ReasonBadValue, "previous_data", "want an object or null, got a string"},
		{body("retries", `"1"`), wire.ReasonBadValue, "retries", `got string "1"`},
		{body("retries", `1.5`), wire.ReasonBadValue, "retries", "got number 1.5"},
		{body("retries", `1.0`), wire.ReasonBadValue, "retries", "got number 1.0"},
		{body("retries", `-1`), wire.ReasonBadValue, "retries", "got number -1"},
		{body("retries", `99999999999999999999`), wire.ReasonBadValue, "retries", "non-negative integer"},
		{body("retries", `true`), wire.ReasonBadValue, "retries", "got boolean true"},
		{body("expires", `5`), wire.ReasonBadValue, "expires", "want a datetime string or null, got a number"},
		{body("expires", `"tomorrow"`), wire.ReasonBadValue, "expires", `parse datetime "tomorrow"`},
		{body("expires", `"2099-02-30T00:00:00+00:00"`), wire.ReasonBadValue, "expires", "day 30 is out of range"},
	}
	for _, tt := range tests {
		p, err := wire.Decode([]byte(tt.body))
		var de *wire.DecodeError
		if !errors.As(err, &de) {
			t.Errorf("Decode(%.60q) = %+v, %v; want a DecodeError", tt.body, p, err)
			continue
		}
		if de.Reason != tt.reason || de.Key != tt.key {
			t.Errorf("Decode(%.60q): reason %v key %q, want %v %q (%v)", tt.body, de.Reason, de.Key, tt.reason, tt.key, err)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "wire: decode: ") || !strings.Contains(msg, tt.detail) || (tt.key != "" && !strings.Contains(msg, `"`+tt.key+`"`)) {
			t.Errorf("Decode(%.60q): message %q should name %q and contain %q", tt.body, msg, tt.key, tt.detail)
		}
	}
	// Invalid JSON wins over a missing key, a missing key over a bad value.
	if _, err := wire.Decode([]byte(`{"signal_type":1,"cqrs_id":2`)); !isReason(err, wire.ReasonInvalidJSON) {
		t.Errorf("precedence: %v", err)
	}
	if _, err := wire.Decode([]byte(`{"signal_type":1,"cqrs_id":2,"instance_data":3}`)); !isReason(err, wire.ReasonMissingKey) {
		t.Errorf("precedence: %v", err)
	}
	// The datetime parse error is reachable through Unwrap.
	_, err := wire.Decode([]byte(body("expires", `"soon"`)))
	if de := (*wire.DecodeError)(nil); !errors.As(err, &de) || de.Unwrap() == nil || !strings.Contains(de.Unwrap().Error(), "soon") {
		t.Errorf("Unwrap of %v", err)
	}
}

func isReason(err error, r wire.DecodeReason) bool {
	var de *wire.DecodeError
	return errors.As(err, &de) && de.Reason == r
}

func TestDecodeTolerance(t *testing.T) {
	in := " \r\n\t{ \"meta\" : {\"b\":1,\"a\":2}, \"signal_type\":\"SYNC\", \"cqrs_id\":\"x\\/y\", \"future_key\": {\"deep\":[1,{\"k\":null}]}," +
		" \"instance_data\":{\"z\":1,\"a\":\"tab\there\",\"z\":2,\"\\u00e9\":\"\\ud83d\\ude00\\uD83D\\uDE00\"}," +
		" \"instance_pk\":null, \"retries\":null, \"expires\":null, \"correlation_id\":{\"n\":[]}, \"cqrs_id\":\"last\" } \n"
	p, err := wire.Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if p.SignalType != wire.SignalSync || p.CQRSID != "last" || p.InstancePK != nil || p.Retries != 0 || p.Expires != nil {
		t.Errorf("decoded %+v", p)
	}
	// Duplicate key: last value, first position; raw tab accepted; escapes decoded.
	if got := strings.Join(p.InstanceData.Keys(), ","); got != "z,a,é" {
		t.Errorf("keys %q", got)
	}
	if v, _ := p.InstanceData.Get("z"); v != json.Number("2") {
		t.Errorf("z = %#v", v)
	}
	if v, _ := p.InstanceData.Get("a"); v != "tab\there" {
		t.Errorf("a = %#v", v)
	}
	if v, _ := p.InstanceData.Get("é"); v != "😀😀" {
		t.Errorf("é = %#v", v)
	}
	meta, ok := p.Meta.(*wire.Fields)
	if !ok || strings.Join(meta.Keys(), ",") != "b,a" {
		t.Errorf("meta %#v", p.Meta)
	}
	want := `{"signal_type":"SYNC","cqrs_id":"last","instance_data":{"z":2,"a":"tab\there","\u00e9":"\ud83d\ude00\ud83d\ude00"},"previous_data":null,"instance_pk":null,"correlation_id":{"n":[]},"retries":0,"expires":null,"meta":{"b":1,"a":2}}`
	if got := string(mustEncode(t, p)); got != want {
		t.Errorf("re-encoded\n got %s\nwant %s", got, want)
	}
	// Naive expires is UTC.
	p, err = wire.Decode([]byte(body("expires", `"2099-01-01 00:00:00"`)))
	if err != nil || wire.FormatExpires(*p.Expires) != "2099-01-01T00:00:00+00:00" {
		t.Errorf("naive expires: %v, %v", p, err)
	}
	// json.Unmarshal goes through UnmarshalJSON.
	var q wire.Payload
	if err := json.Unmarshal([]byte(minimalBody), &q); err != nil || q.CQRSID != "author" {
		t.Errorf("json.Unmarshal: %+v, %v", q, err)
	}
	var f wire.Fields
	if err := json.Unmarshal([]byte(`{"b":1,"a":[]}`), &f); err != nil || strings.Join(f.Keys(), ",") != "b,a" {
		t.Errorf("Fields.UnmarshalJSON: %v, %v", f.Keys(), err)
	}
	if _, err := wire.DecodeFields([]byte(`[1]`)); !isReason(err, wire.ReasonInvalidJSON) {
		t.Errorf("DecodeFields of an array: %v", err)
	}
}

func TestBigIntegers(t *testing.T) {
	const in = `{"max63":9223372036854775807,"min63":-9223372036854775808,"two64":18446744073709551616,"huge":123456789012345678901234567890,"f":1.0,"e":1E+400}`
	f, err := wire.DecodeFields([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]json.Number{
		"max63": "9223372036854775807", "min63": "-9223372036854775808", "two64": "18446744073709551616",
		"huge": "123456789012345678901234567890", "f": "1.0", "e": "1E+400",
	} {
		if v, _ := f.Get(k); v != want {
			t.Errorf("%s = %#v, want json.Number %s", k, v, want)
		}
	}
	if n, ok := wire.AsInt64(mustGet(t, f, "max63")); !ok || n != 1<<63-1 {
		t.Errorf("AsInt64(max63) = %d, %v", n, ok)
	}
	if _, ok := wire.AsInt64(mustGet(t, f, "two64")); ok {
		t.Error("AsInt64(2^64) claims to fit")
	}
	out, err := f.MarshalJSON()
	if err != nil || string(out) != in {
		t.Errorf("re-encoded as %s, %v", out, err)
	}
}

// TestSurrogates: pairs decode to one character in either hex case and
// encode back as a lowercase pair. A lone surrogate becomes U+FFFD (Go
// strings hold UTF-8, where a lone surrogate cannot exist); ujson would keep
// it, and PostgreSQL would then refuse the text, so nothing useful is lost.
func TestSurrogates(t *testing.T) {
	tests := []struct{ in, want string }{
		{`"\ud83d\ude00"`, "😀"},
		{`"\uD83D\uDE00"`, "😀"},
		{`"\udbff\udfff"`, "\U0010ffff"},
		{`"\ud800"`, "\ufffd"},
		{`"\udc00"`, "\ufffd"},
		{`"\udc00\ud800"`, "\ufffd\ufffd"},
		{`"\ud800\u0041"`, "\ufffdA"},
		{`"\ud800\ud800\udc00"`, "\ufffd\U00010000"},
		{`"a\ud800"`, "a\ufffd"},
		{`"\ud800\n"`, "\ufffd\n"},
	}
	for _, tt := range tests {
		v, err := wire.DecodeValue([]byte(tt.in))
		if err != nil || v != tt.want {
			t.Errorf("DecodeValue(%s) = %q, %v; want %q", tt.in, v, err, tt.want)
		}
	}
	if got := marshal(t, "😀\ufffd"); got != `"\ud83d\ude00\ufffd"` {
		t.Errorf("encoded as %s", got)
	}
}
