package outbox

import (
	"encoding/json"
	"maps"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

// The headers shortcut takes the plain objects Insert writes, giving what
// encoding/json gives, and leaves everything else to encoding/json.
func TestSetFlatHeadersMatchesJSON(t *testing.T) {
	written, err := json.Marshal(map[string]string{"pk": "42", "revision": "7", "correlation_id": "req-1",
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		in   string
		fast bool
	}{
		{string(written), true},
		{`{}`, true},
		{`{"a":"b","a":"c"}`, true},
		{`{"a":""}`, true},
		{`{"a":"x\"y"}`, false},
		{`{"a":"é"}`, false},
		{`{"a": "b"}`, false},
		{`{"a":"<b>"}`, true},
		{`{"a":"b",}`, false},
		{`{"a":1}`, false},
		{`{"a":"b"`, false},
		{`null`, false},
		{`{"a":"b"}x`, false},
		{`{,}`, false},
	} {
		md := message.Metadata{}
		got := setFlatHeaders(md, c.in)
		if got != c.fast {
			t.Errorf("setFlatHeaders(%s) took it: %v, want %v", c.in, got, c.fast)
			continue
		}
		if !got {
			if len(md) != 0 {
				t.Errorf("setFlatHeaders(%s) refused it but set %v", c.in, md)
			}
			continue
		}
		var want map[string]string
		if err := json.Unmarshal([]byte(c.in), &want); err != nil {
			t.Errorf("setFlatHeaders(%s) took what encoding/json refuses: %v", c.in, err)
			continue
		}
		if !maps.Equal(map[string]string(md), want) {
			t.Errorf("setFlatHeaders(%s) = %v, encoding/json %v", c.in, md, want)
		}
	}
}

// The headers Insert writes without encoding/json are byte for byte what
// json.Marshal writes; anything it would escape is left to json.Marshal.
func TestFlatHeadersMatchJSONMarshal(t *testing.T) {
	for _, c := range []struct {
		in   map[string]string
		fast bool
	}{
		{map[string]string{"pk": "42", "revision": "7"}, true},
		{map[string]string{"revision": "7", "pk": "42", "correlation_id": "req-1",
			"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "a=b,c=d"}, true},
		{map[string]string{"": ""}, true},
		{map[string]string{"b": "1", "a": "2", "B": "3", "a_": "4", "a ": "5"}, true},
		{map[string]string{"pk": "<b>"}, false},
		{map[string]string{"pk": "a&b"}, false},
		{map[string]string{"pk": `x"y`}, false},
		{map[string]string{"pk": `x\y`}, false},
		{map[string]string{"pk": "é"}, false},
		{map[string]string{"pk": "a\nb"}, false},
		{map[string]string{"pk": "\x7f"}, false},
		{map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6", "g": "7", "h": "8", "i": "9"}, false},
	} {
		want, err := json.Marshal(c.in)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := flatHeaders(c.in)
		if ok != c.fast {
			t.Errorf("flatHeaders(%v) took it: %v, want %v", c.in, ok, c.fast)
			continue
		}
		if ok && got != string(want) {
			t.Errorf("flatHeaders(%v) = %s, json.Marshal %s", c.in, got, want)
		}
	}
}
