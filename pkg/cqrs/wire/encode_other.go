package wire

import (
	"database/sql/driver"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
)

// appendOther handles the interfaces and, last, reflection for named and
// composite types the type switch does not list.
func appendOther(dst []byte, v any, depth int) ([]byte, error) {
	if depth >= maxDepth {
		return dst, errTooDeep
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && rv.IsNil() {
		return append(dst, "null"...), nil
	}
	switch x := v.(type) {
	case json.Marshaler:
		raw, err := x.MarshalJSON()
		if err != nil {
			return dst, fmt.Errorf("%T.MarshalJSON: %w", v, err)
		}
		parsed, err := DecodeValue(raw)
		if err != nil {
			return dst, fmt.Errorf("%T.MarshalJSON returned invalid JSON: %w", v, err)
		}
		return appendValue(dst, parsed, depth+1)
	case encoding.TextMarshaler:
		text, err := x.MarshalText()
		if err != nil {
			return dst, fmt.Errorf("%T.MarshalText: %w", v, err)
		}
		return appendString(dst, string(text)), nil
	case driver.Valuer:
		dv, err := x.Value()
		if err != nil {
			return dst, fmt.Errorf("%T.Value: %w", v, err)
		}
		return appendValue(dst, dv, depth+1)
	}
	switch rv.Kind() {
	case reflect.String:
		return appendString(dst, rv.String()), nil
	case reflect.Bool:
		return appendValue(dst, rv.Bool(), depth)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(dst, rv.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.AppendUint(dst, rv.Uint(), 10), nil
	case reflect.Float32:
		return appendUJSONFloat(dst, rv.Float(), 32)
	case reflect.Float64:
		return appendUJSONFloat(dst, rv.Float(), 64)
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return append(dst, "null"...), nil
		}
		return appendValue(dst, rv.Elem().Interface(), depth+1)
	case reflect.Slice:
		if rv.IsNil() {
			return append(dst, "null"...), nil
		}
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return appendString(dst, string(rv.Bytes())), nil
		}
		return appendReflectList(dst, rv, depth)
	case reflect.Array:
		return appendReflectList(dst, rv, depth)
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return dst, unsupported(v)
		}
		if rv.IsNil() {
			return append(dst, "null"...), nil
		}
		keys := make([]string, 0, rv.Len())
		vals := make(map[string]any, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			k := it.Key().String()
			keys = append(keys, k)
			vals[k] = it.Value().Interface()
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
			if dst, err = appendValue(dst, vals[k], depth+1); err != nil {
				return dst, atKey(err, k)
			}
		}
		return append(dst, '}'), nil
	}
	return dst, unsupported(v)
}

func appendReflectList(dst []byte, rv reflect.Value, depth int) ([]byte, error) {
	dst = append(dst, '[')
	for i := 0; i < rv.Len(); i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendValue(dst, rv.Index(i).Interface(), depth+1); err != nil {
			return dst, atIndex(err, i)
		}
	}
	return append(dst, ']'), nil
}
