package wire

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// decoder is a single-pass JSON parser over data. It works on a string
// copy of the input, so that keys, strings without escapes and numbers are
// substrings of it rather than allocations of their own (and never alias
// the caller's buffer).
type decoder struct {
	data  string
	pos   int
	depth int
	buf   []byte // scratch for strings with escapes
}

func (d *decoder) errf(format string, args ...any) error {
	return &syntaxError{msg: fmt.Sprintf(format, args...), offset: d.pos}
}

func (d *decoder) unexpected(what string) error {
	if d.pos >= len(d.data) {
		return d.errf("unexpected end of input, want %s", what)
	}
	return d.errf("unexpected %s, want %s", quoteByte(d.data[d.pos]), what)
}

func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

func (d *decoder) skipWS() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// end checks that only whitespace follows.
func (d *decoder) end() error {
	d.skipWS()
	if d.pos != len(d.data) {
		return d.errf("unexpected data after the JSON value")
	}
	return nil
}

// skipTopValue checks that data is exactly one JSON value.
func (d *decoder) skipTopValue() error {
	d.skipWS()
	if _, err := d.value(); err != nil {
		return err
	}
	return d.end()
}

// envelope parses the top-level object, keeping the nine known keys.
func (d *decoder) envelope(vals *[numSlots]any, seen *[numSlots]bool) error {
	d.skipWS()
	if d.pos >= len(d.data) {
		return d.errf("empty body")
	}
	if d.data[d.pos] != '{' {
		v, err := d.value()
		if err != nil {
			return err
		}
		if err := d.end(); err != nil {
			return err
		}
		return fmt.Errorf("body is %s, want an object", kindOf(v))
	}
	d.pos++
	d.depth++
	d.skipWS()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		return d.end()
	}
	for {
		if d.pos >= len(d.data) || d.data[d.pos] != '"' {
			return d.unexpected("a key string")
		}
		key, err := d.str()
		if err != nil {
			return err
		}
		slot := slotOf(key)
		d.skipWS()
		if d.pos >= len(d.data) || d.data[d.pos] != ':' {
			return d.unexpected("':'")
		}
		d.pos++
		d.skipWS()
		v, err := d.value()
		if err != nil {
			return err
		}
		if slot >= 0 {
			vals[slot], seen[slot] = v, true
		}
		d.skipWS()
		if d.pos >= len(d.data) {
			return d.unexpected("',' or '}'")
		}
		switch d.data[d.pos] {
		case ',':
			d.pos++
			d.skipWS()
		case '}':
			d.pos++
			return d.end()
		default:
			return d.unexpected("',' or '}'")
		}
	}
}

// value parses the value at d.pos (whitespace already skipped).
func (d *decoder) value() (any, error) {
	if d.pos >= len(d.data) {
		return nil, d.unexpected("a value")
	}
	switch c := d.data[d.pos]; c {
	case '{':
		return d.object()
	case '[':
		return d.array()
	case '"':
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		return s, nil
	case 't':
		return true, d.literal("true")
	case 'f':
		return false, d.literal("false")
	case 'n':
		return nil, d.literal("null")
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			return d.number()
		}
		return nil, d.unexpected("a value")
	}
}

func (d *decoder) literal(lit string) error {
	if len(d.data)-d.pos < len(lit) || d.data[d.pos:d.pos+len(lit)] != lit {
		return d.errf("invalid literal, want %s", lit)
	}
	d.pos += len(lit)
	return nil
}

// decodedFields is a Fields with room for its first few keys, allocated at
// once.
type decodedFields struct {
	f    Fields
	keys [8]string
	vals [8]any
}

func newDecodedFields() *Fields {
	s := &decodedFields{}
	s.f.keys, s.f.vals = s.keys[:0], s.vals[:0]
	return &s.f
}

func (d *decoder) object() (any, error) {
	d.depth++
	if d.depth > maxDepth {
		return nil, d.errf("nesting deeper than %d levels", maxDepth)
	}
	d.pos++ // '{'
	f := newDecodedFields()
	d.skipWS()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		d.depth--
		return f, nil
	}
	for {
		if d.pos >= len(d.data) || d.data[d.pos] != '"' {
			return nil, d.unexpected("a key string")
		}
		key, err := d.str()
		if err != nil {
			return nil, err
		}
		d.skipWS()
		if d.pos >= len(d.data) || d.data[d.pos] != ':' {
			return nil, d.unexpected("':'")
		}
		d.pos++
		d.skipWS()
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		f.Set(key, v) // a repeated key keeps its place and takes the last value
		d.skipWS()
		if d.pos >= len(d.data) {
			return nil, d.unexpected("',' or '}'")
		}
		switch d.data[d.pos] {
		case ',':
			d.pos++
			d.skipWS()
		case '}':
			d.pos++
			d.depth--
			return f, nil
		default:
			return nil, d.unexpected("',' or '}'")
		}
	}
}

func (d *decoder) array() (any, error) {
	d.depth++
	if d.depth > maxDepth {
		return nil, d.errf("nesting deeper than %d levels", maxDepth)
	}
	d.pos++ // '['
	out := []any{}
	d.skipWS()
	if d.pos < len(d.data) && d.data[d.pos] == ']' {
		d.pos++
		d.depth--
		return out, nil
	}
	for {
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		d.skipWS()
		if d.pos >= len(d.data) {
			return nil, d.unexpected("',' or ']'")
		}
		switch d.data[d.pos] {
		case ',':
			d.pos++
			d.skipWS()
		case ']':
			d.pos++
			d.depth--
			return out, nil
		default:
			return nil, d.unexpected("',' or ']'")
		}
	}
}

func (d *decoder) number() (any, error) {
	start := d.pos
	data := d.data
	i := d.pos
	if data[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		digits()
	default:
		d.pos = i
		return nil, d.unexpected("a digit")
	}
	if i < len(data) && data[i] == '.' {
		i++
		if digits() == 0 {
			d.pos = i
			return nil, d.unexpected("a digit after '.'")
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if digits() == 0 {
			d.pos = i
			return nil, d.unexpected("an exponent digit")
		}
	}
	d.pos = i
	return json.Number(data[start:i]), nil
}

// str parses the string at d.pos ('"'). Without escapes the result is a
// substring of d.data.
func (d *decoder) str() (string, error) {
	d.pos++ // opening quote
	start := d.pos
	data := d.data
	for i := start; i < len(data); {
		c := data[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return data[start:i], nil
		case c == '\\':
			d.buf = append(d.buf[:0], data[start:i]...)
			d.pos = i
			b, err := d.stringSlow()
			return string(b), err
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRuneInString(data[i:])
			if r == utf8.RuneError && size == 1 {
				d.pos = i
				return "", d.errf("invalid UTF-8 in string")
			}
			i += size
		}
	}
	d.pos = len(data)
	return "", d.errf("unterminated string")
}

// stringSlow continues a string from its first backslash, unescaping into
// d.buf.
func (d *decoder) stringSlow() ([]byte, error) {
	data := d.data
	i := d.pos
	for i < len(data) {
		c := data[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return d.buf, nil
		case c == '\\':
			if i+1 >= len(data) {
				d.pos = len(data)
				return nil, d.errf("unterminated string")
			}
			e := data[i+1]
			i += 2
			switch e {
			case '"', '\\', '/':
				d.buf = append(d.buf, e)
			case 'b':
				d.buf = append(d.buf, '\b')
			case 'f':
				d.buf = append(d.buf, '\f')
			case 'n':
				d.buf = append(d.buf, '\n')
			case 'r':
				d.buf = append(d.buf, '\r')
			case 't':
				d.buf = append(d.buf, '\t')
			case 'u':
				r, ok := hex4(data, i)
				if !ok {
					d.pos = i
					return nil, d.errf("invalid \\u escape")
				}
				i += 4
				if utf16.IsSurrogate(r) {
					r2, ok2 := rune(0), false
					if r < 0xDC00 && i+6 <= len(data) && data[i] == '\\' && data[i+1] == 'u' {
						r2, ok2 = hex4(data, i+2)
					}
					if dec := utf16.DecodeRune(r, r2); ok2 && dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError // lone surrogate
					}
				}
				d.buf = utf8.AppendRune(d.buf, r)
			default:
				d.pos = i - 1
				return nil, d.errf("invalid escape %s", quoteByte(e))
			}
		case c < utf8.RuneSelf:
			d.buf = append(d.buf, c)
			i++
		default:
			r, size := utf8.DecodeRuneInString(data[i:])
			if r == utf8.RuneError && size == 1 {
				d.pos = i
				return nil, d.errf("invalid UTF-8 in string")
			}
			d.buf = append(d.buf, data[i:i+size]...)
			i += size
		}
	}
	d.pos = len(data)
	return nil, d.errf("unterminated string")
}

func hex4(data string, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	var r rune
	for j := i; j < i+4; j++ {
		c := data[j]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
