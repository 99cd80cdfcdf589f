// Package pgarray converts between the lists of the wire format and
// PostgreSQL's array literals ({1,NULL,3}, {"a b","q\"x"}, {{1,2},{3,4}}),
// the form an array column (integer[], text[], a Django ArrayField) takes
// in a query parameter and in what database/sql reads back from pgx.
package pgarray

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// JSONElem reports whether elem, an array's element type, is json or
// jsonb: Format then writes every element as its JSON text, and Parse
// decodes every element as JSON.
func JSONElem(elem string) bool { return elem == "json" || elem == "jsonb" }

// Format writes v, a list ([]any or any other slice but []byte), as an
// array literal for an array of element type elem ("int4", "text",
// "jsonb": the array type's name without its leading underscore). nil is
// NULL, a nested list a dimension, numbers and booleans are written bare
// (NaN and ±Inf as PostgreSQL spells them), strings and []byte quoted,
// times in RFC 3339, anything else as its JSON text, quoted. For json and jsonb
// elements every element but NULL and a nested list is written as its
// JSON text, quoted.
func Format(v any, elem string) (string, error) {
	var sb strings.Builder
	if err := format(&sb, v, JSONElem(elem)); err != nil {
		return "", err
	}
	return sb.String(), nil
}

// isList reports whether rv is a slice or array that Format writes as a
// list ([]byte is a value).
func isList(rv reflect.Value) bool {
	k := rv.Kind()
	return (k == reflect.Slice || k == reflect.Array) && rv.Type().Elem().Kind() != reflect.Uint8
}

func format(sb *strings.Builder, v any, asJSON bool) error {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() || !isList(rv) {
		return fmt.Errorf("pgarray: %T is not a list", v)
	}
	sb.WriteByte('{')
	for i := 0; i < rv.Len(); i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		e := rv.Index(i).Interface()
		if e == nil {
			sb.WriteString("NULL")
			continue
		}
		if ev := reflect.ValueOf(e); isList(ev) {
			if err := format(sb, e, asJSON); err != nil {
				return err
			}
			continue
		}
		if asJSON {
			b, err := wire.MarshalValue(e)
			if err != nil {
				return fmt.Errorf("pgarray: element %d: %w", i, err)
			}
			quote(sb, string(b))
			continue
		}
		if err := formatElem(sb, e); err != nil {
			return fmt.Errorf("pgarray: element %d: %w", i, err)
		}
	}
	sb.WriteByte('}')
	return nil
}

func formatElem(sb *strings.Builder, e any) error {
	switch x := e.(type) {
	case string:
		quote(sb, x)
	case []byte:
		quote(sb, string(x))
	case json.Number:
		sb.WriteString(x.String())
	case bool:
		sb.WriteString(strconv.FormatBool(x))
	case float64:
		sb.WriteString(formatFloat(x, 64))
	case float32:
		sb.WriteString(formatFloat(float64(x), 32))
	case time.Time:
		quote(sb, x.Format(time.RFC3339Nano))
	default:
		rv := reflect.ValueOf(e)
		switch rv.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			sb.WriteString(strconv.FormatInt(rv.Int(), 10))
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			sb.WriteString(strconv.FormatUint(rv.Uint(), 10))
		default:
			b, err := wire.MarshalValue(e)
			if err != nil {
				return err
			}
			quote(sb, string(b))
		}
	}
	return nil
}

func formatFloat(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}

// quote writes s double-quoted, its backslashes and double quotes escaped.
func quote(sb *strings.Builder, s string) {
	sb.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			sb.WriteByte('\\')
		}
		sb.WriteByte(s[i])
	}
	sb.WriteByte('"')
}

// Parse reads an array literal as PostgreSQL writes one (an optional
// dimension decoration such as "[0:1]=" is skipped) into a list, its
// elements converted by the element type elem: integers and finite
// floating-point and numeric values as json.Number, booleans as bool,
// json and jsonb as decoded JSON, NULL as nil, everything else (and NaN,
// Infinity) as a string; a nested dimension is a nested list.
func Parse(s, elem string) ([]any, error) {
	p := &parser{s: s, elem: elem}
	if strings.HasPrefix(s, "[") {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return nil, fmt.Errorf("pgarray: %q: dimensions without '='", short(s))
		}
		p.i = eq + 1
	}
	list, err := p.list()
	if err == nil && p.i != len(s) {
		err = errors.New("text after the closing brace")
	}
	if err != nil {
		return nil, fmt.Errorf("pgarray: %q at offset %d: %w", short(s), p.i, err)
	}
	return list, nil
}

func short(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

type parser struct {
	s    string
	i    int
	elem string
}

func (p *parser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *parser) list() ([]any, error) {
	if p.peek() != '{' {
		return nil, errors.New("want '{'")
	}
	p.i++
	out := []any{}
	if p.peek() == '}' {
		p.i++
		return out, nil
	}
	for {
		var v any
		var err error
		switch p.peek() {
		case '{':
			v, err = p.list()
		case '"':
			var text string
			if text, err = p.quoted(); err == nil {
				v, err = convert(text, p.elem)
			}
		default:
			var text string
			var null bool
			if text, null, err = p.bare(); err == nil && !null {
				v, err = convert(text, p.elem)
			}
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			return out, nil
		default:
			return nil, errors.New("want ',' or '}'")
		}
	}
}

// quoted reads a double-quoted element.
func (p *parser) quoted() (string, error) {
	p.i++ // the opening quote
	var sb strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch c {
		case '\\':
			if p.i == len(p.s) {
				return "", errors.New("unfinished escape")
			}
			sb.WriteByte(p.s[p.i])
			p.i++
		case '"':
			return sb.String(), nil
		default:
			sb.WriteByte(c)
		}
	}
	return "", errors.New("unterminated quoted element")
}

// bare reads an unquoted element up to ',' or '}'; null is true for NULL.
func (p *parser) bare() (text string, null bool, err error) {
	var sb strings.Builder
	escaped := false
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c == ',' || c == '}' {
			break
		}
		if c == '{' || c == '"' {
			return "", false, fmt.Errorf("unexpected %q", c)
		}
		p.i++
		if c == '\\' {
			if p.i == len(p.s) {
				return "", false, errors.New("unfinished escape")
			}
			c = p.s[p.i]
			p.i++
			escaped = true
		}
		sb.WriteByte(c)
	}
	text = strings.TrimSpace(sb.String())
	if text == "" {
		return "", false, errors.New("empty element")
	}
	return text, !escaped && strings.EqualFold(text, "NULL"), nil
}

// convert turns one element's text into its wire value by element type.
func convert(text, elem string) (any, error) {
	switch elem {
	case "int2", "int4", "int8", "oid":
		if _, err := strconv.ParseInt(text, 10, 64); err != nil {
			return nil, fmt.Errorf("%q is not an integer", text)
		}
		return json.Number(text), nil
	case "float4", "float8", "numeric":
		if c := text[0]; (c == '-' || c >= '0' && c <= '9') && json.Valid([]byte(text)) {
			return json.Number(text), nil
		}
		return text, nil // NaN, Infinity: no JSON number
	case "bool":
		switch text {
		case "t", "true":
			return true, nil
		case "f", "false":
			return false, nil
		}
		return nil, fmt.Errorf("%q is not a boolean", text)
	case "json", "jsonb":
		v, err := wire.DecodeValue([]byte(text))
		if err != nil {
			return nil, err
		}
		return v, nil
	}
	return text, nil
}
