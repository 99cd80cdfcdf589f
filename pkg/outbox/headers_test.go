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
