package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// maxDepth bounds the nesting of objects and arrays on both encode and
// decode (ujson's decoder stops at 1024 as well). It turns a Fields that
// contains itself into an error instead of a stack overflow.
const maxDepth = 1024

var errTooDeep = errors.New("nesting deeper than 1024 levels")

// Encode returns the body django-cqrs would publish for p: compact JSON with
// the keys signal_type, cqrs_id, instance_data, previous_data, instance_pk,
// correlation_id, retries, expires and meta in that order, escaped as
// ujson 5.7 escapes ("/" as "\/", every non-ASCII character as \uXXXX,
// non-BMP characters as surrogate pairs). A nil PreviousData, Meta,
// CorrelationID or InstancePK is null; a nil Expires is null, otherwise
// FormatExpires. Values inside follow MarshalValue's rules.
func Encode(p *Payload) ([]byte, error) {
	return AppendPayload(make([]byte, 0, 1024), p)
}

// AppendPayload appends Encode's output for p to dst. On error dst is
// returned with unspecified partial content appended.
func AppendPayload(dst []byte, p *Payload) ([]byte, error) {
	if p == nil {
		return dst, errors.New("wire: encode: nil payload")
	}
	if p.InstanceData == nil {
		return dst, errors.New("wire: encode: instance_data is nil")
	}
	var err error
	dst = append(dst, `{"signal_type":`...)
	dst = appendString(dst, string(p.SignalType))
	dst = append(dst, `,"cqrs_id":`...)
	dst = appendString(dst, p.CQRSID)
	dst = append(dst, `,"instance_data":`...)
	if dst, err = appendFields(dst, p.InstanceData, 1); err != nil {
		return dst, encodeErr("instance_data", err)
	}
	dst = append(dst, `,"previous_data":`...)
	if p.PreviousData == nil {
		dst = append(dst, "null"...)
	} else if dst, err = appendFields(dst, p.PreviousData, 1); err != nil {
		return dst, encodeErr("previous_data", err)
	}
	dst = append(dst, `,"instance_pk":`...)
	if dst, err = appendValue(dst, p.InstancePK, 1); err != nil {
		return dst, encodeErr("instance_pk", err)
	}
	dst = append(dst, `,"correlation_id":`...)
	if dst, err = appendValue(dst, p.CorrelationID, 1); err != nil {
		return dst, encodeErr("correlation_id", err)
	}
	dst = append(dst, `,"retries":`...)
	dst = strconv.AppendInt(dst, int64(p.Retries), 10)
	dst = append(dst, `,"expires":`...)
	if p.Expires == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '"')
		dst = appendPyDateTime(dst, *p.Expires, 'T', false, true)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"meta":`...)
	if dst, err = appendValue(dst, p.Meta, 1); err != nil {
		return dst, encodeErr("meta", err)
	}
	return append(dst, '}'), nil
}

func encodeErr(key string, err error) error {
	return fmt.Errorf("wire: encode: %w", atKey(err, key))
}

// MarshalValue encodes one value the way Encode writes values inside a
// payload. Accepted: nil, bool, string (and SignalType), json.Number
// (verbatim, after checking it is a JSON number), every Go integer type,
// float32/float64 (ujson's shortest form: 10.1, 1.0, 1e+16; NaN and
// infinities are an error), time.Time and *time.Time (Python str(datetime):
// "2024-01-02 03:04:05.678901+00:00"), *Fields (in order), map[string]any and
// other maps with string keys (keys sorted), []any and other slices and
// arrays, json.RawMessage (verbatim, after checking it is one JSON value),
// []byte (as a string), json.Marshaler (its output re-escaped in ujson's
// style), encoding.TextMarshaler (as a string), driver.Valuer (its Value),
// and pointers to any of these (nil is null). Any other type is an
// *UnsupportedTypeError naming it. A nil slice or map is null.
func MarshalValue(v any) ([]byte, error) {
	b, err := appendValue(nil, v, 0)
	if err != nil {
		return nil, fmt.Errorf("wire: marshal value: %w", err)
	}
	return b, nil
}

// AppendValue appends MarshalValue's output for v to dst.
func AppendValue(dst []byte, v any) ([]byte, error) {
	out, err := appendValue(dst, v, 0)
	if err != nil {
		return out, fmt.Errorf("wire: marshal value: %w", err)
	}
	return out, nil
}

// MarshalJSON encodes f as a JSON object in key order, ujson-escaped; a nil
// *Fields is null.
func (f *Fields) MarshalJSON() ([]byte, error) {
	if f == nil {
		return []byte("null"), nil
	}
	b, err := appendFields(make([]byte, 0, 64*len(f.keys)+2), f, 0)
	if err != nil {
		return nil, fmt.Errorf("wire: marshal fields: %w", err)
	}
	return b, nil
}

func appendValue(dst []byte, v any, depth int) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case string:
		return appendString(dst, x), nil
	case bool:
		if x {
			return append(dst, "true"...), nil
		}
		return append(dst, "false"...), nil
	case json.Number:
		if !validNumber(string(x)) {
			return dst, fmt.Errorf("json.Number %q is not a JSON number", string(x))
		}
		return append(dst, x...), nil
	case int:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(dst, x, 10), nil
	case int32:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int16:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int8:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case uint:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(dst, x, 10), nil
	case uint32:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint8:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uintptr:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case float64:
		return appendUJSONFloat(dst, x, 64)
	case float32:
		return appendUJSONFloat(dst, float64(x), 32)
	case *Fields:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return appendFields(dst, x, depth)
	case []any:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return appendSlice(dst, x, depth)
	case map[string]any:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return appendMap(dst, x, depth)
	case time.Time:
		return appendTime(dst, x), nil
	case *time.Time:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return appendTime(dst, *x), nil
	case SignalType:
		return appendString(dst, string(x)), nil
	case json.RawMessage:
		return appendRaw(dst, x)
	case []byte:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return appendString(dst, string(x)), nil
	case []string:
		if x == nil {
			return append(dst, "null"...), nil
		}
		if depth >= maxDepth {
			return dst, errTooDeep
		}
		dst = append(dst, '[')
		for i, s := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, s)
		}
		return append(dst, ']'), nil
	case []int64:
		if x == nil {
			return append(dst, "null"...), nil
		}
		if depth >= maxDepth {
			return dst, errTooDeep
		}
		dst = append(dst, '[')
		for i, n := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendInt(dst, n, 10)
		}
		return append(dst, ']'), nil
	case Fields:
		return appendFields(dst, &x, depth)
	}
	return appendOther(dst, v, depth)
}

func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = appendPyDateTime(dst, t, ' ', true, true)
	return append(dst, '"')
}

func appendFields(dst []byte, f *Fields, depth int) ([]byte, error) {
	if depth >= maxDepth {
		return dst, errTooDeep
	}
	dst = append(dst, '{')
	for i, k := range f.keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		var err error
		if dst, err = appendValue(dst, f.vals[i], depth+1); err != nil {
			return dst, atKey(err, k)
		}
	}
	return append(dst, '}'), nil
}

func appendSlice(dst []byte, s []any, depth int) ([]byte, error) {
	if depth >= maxDepth {
		return dst, errTooDeep
	}
	dst = append(dst, '[')
	for i, v := range s {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendValue(dst, v, depth+1); err != nil {
			return dst, atIndex(err, i)
		}
	}
	return append(dst, ']'), nil
}

func appendMap(dst []byte, m map[string]any, depth int) ([]byte, error) {
	if depth >= maxDepth {
		return dst, errTooDeep
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		var err error
		if dst, err = appendValue(dst, m[k], depth+1); err != nil {
			return dst, atKey(err, k)
		}
	}
	return append(dst, '}'), nil
}

// appendRaw copies a json.RawMessage after checking it holds exactly one JSON
// value; an empty one is null. It is copied verbatim: its escaping is the
// caller's (decode and re-encode it for ujson's style).
func appendRaw(dst []byte, raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 {
		return append(dst, "null"...), nil
	}
	d := decoder{data: string(raw)}
	if err := d.skipTopValue(); err != nil {
		return dst, fmt.Errorf("json.RawMessage is not one JSON value: %w", err)
	}
	return append(dst, raw...), nil
}
