package wire_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// fixtureBodies returns the message bodies of the fixtures, as fuzz seeds.
func fixtureBodies(f *testing.F) []string {
	dir := os.Getenv("CQRS_WIRE_FIXTURES")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "..", "shared", "wire-fixtures")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "messages", "[0-9]*_*.json"))
	var out []string
	for _, file := range files {
		var m recordedMessage
		b, err := os.ReadFile(file)
		if err != nil || json.Unmarshal(b, &m) != nil || m.Body == "" {
			continue
		}
		out = append(out, m.Body)
	}
	return out
}

// FuzzDecode: Decode never panics; whatever it accepts, Encode accepts, and
// the encoded form is a fixed point of Decode→Encode.
func FuzzDecode(f *testing.F) {
	for _, b := range fixtureBodies(f) {
		f.Add([]byte(b))
	}
	for _, s := range []string{
		minimalBody, `{}`, `[]`, `"x"`, `{"a":`, "{\"a\":\"\xff\"}",
		`{"signal_type":"SAVE","cqrs_id":"a","instance_data":{"x":"\ud800\udc00\ud800"},"instance_pk":{"k":[1,2.5e-3,-0]},"expires":"2099-01-01 00:00:00.5-03:30","retries":7}`,
		`{"signal_type":"X","cqrs_id":"","instance_data":{},"instance_pk":null,"expires":"2026-01-01","meta":[[[]]]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := wire.Decode(data)
		if err != nil {
			if _, ok := err.(*wire.DecodeError); !ok {
				t.Fatalf("error %T is not a *DecodeError: %v", err, err)
			}
			return
		}
		enc, err := wire.Encode(p)
		if err != nil {
			t.Fatalf("Encode of a decoded body: %v", err)
		}
		for _, c := range enc {
			if c >= utf8.RuneSelf {
				t.Fatalf("encoded body has non-ASCII byte 0x%x: %s", c, enc)
			}
		}
		p2, err := wire.Decode(enc)
		if err != nil {
			t.Fatalf("Decode of our own output %s: %v", enc, err)
		}
		enc2, err := wire.Encode(p2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("not a fixed point:\n%s\n%s (%v)", enc, enc2, err)
		}
	})
}

// FuzzStringRoundTrip: any string survives MarshalValue→DecodeValue.
func FuzzStringRoundTrip(f *testing.F) {
	for _, s := range []string{"", "a/b", "\u2028\x00\x7f", "😀é漢", "\"\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := wire.MarshalValue(s)
		if err != nil {
			t.Fatal(err)
		}
		v, err := wire.DecodeValue(b)
		if err != nil {
			t.Fatalf("DecodeValue(%s): %v", b, err)
		}
		// Each byte that is not UTF-8 comes back as U+FFFD.
		if want := string([]rune(s)); v != want {
			t.Fatalf("%q came back as %q", s, v)
		}
	})
}

// FuzzParseDateTime: never panics; an aware result formats and parses back
// to the same instant (to the microsecond).
func FuzzParseDateTime(f *testing.F) {
	for _, s := range []string{"2026-01-01 10:00:00.123456+00:00", "2026-01-01T10:00:00Z", "2026-01-01 12:00:00.5+02:00", "2026-01-01", "2026-01-01 10:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, naive, err := wire.ParseDateTime(s)
		if err != nil || naive {
			return
		}
		back, _, err := wire.ParseDateTime(wire.FormatPyDateTime(tm))
		if err != nil || !back.Equal(tm.Truncate(1000)) {
			t.Fatalf("%q → %q → %v, %v", s, wire.FormatPyDateTime(tm), back, err)
		}
	})
}
