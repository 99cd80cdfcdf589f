package cli

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// filterHelp documents --filter for the commands' help.
const filterHelp = `--filter takes a JSON object like django-cqrs's filter kwargs, e.g.
  -f '{"id": 2}'   -f '{"id__in": [1, 2]}'   -f '{"cqrs_revision__gte": 3, "active": true}'   -f '{}' (every row)
Keys are a field of the model (its instance_data name, "pk" for the primary key, or
cqrs_revision / cqrs_updated), optionally followed by a lookup:
  __exact (the default; null means IS NULL), __in (a list), __gt, __gte, __lt, __lte,
  __isnull (true/false), __range (a list of two values, both ends included).
Conditions are joined with AND. Values are bound to the query, never spliced into it;
any other key or lookup is a usage error.`

// lookups are the supported --filter lookups and their SQL operators.
var lookups = map[string]string{
	"exact": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
	"in": "IN", "isnull": "IS NULL", "range": "BETWEEN",
}

const lookupNames = "exact, in, gt, gte, lt, lte, isnull, range"

// whereClause is a condition with '?' placeholders and its bound values.
type whereClause struct {
	sql  string // empty: every row
	args []any
}

// parseFilter turns a --filter JSON object into a where clause over t's
// fields. Unknown fields, unsupported lookups and values that do not fit
// the field are usage errors naming the key.
func parseFilter(raw string, t *tableRef) (whereClause, error) {
	v, err := wire.DecodeValue([]byte(raw))
	if err != nil {
		return whereClause{}, usagef("--filter: not valid JSON: %v", err)
	}
	obj, ok := v.(*wire.Fields)
	if !ok {
		return whereClause{}, usagef("--filter: want a JSON object like '{\"id__in\": [1, 2]}', got %s", showJSON(v))
	}
	var conds []string
	var args []any
	for _, key := range obj.Keys() {
		val, _ := obj.Get(key)
		cond, a, err := filterCond(key, val, t)
		if err != nil {
			return whereClause{}, usagef("--filter: key %q: %v", key, err)
		}
		conds = append(conds, cond)
		args = append(args, a...)
	}
	return whereClause{sql: strings.Join(conds, " AND "), args: args}, nil
}

// filterWhere is parseFilter for a --filter that may be left out: without
// one it returns none.
func filterWhere(raw string, t *tableRef, none whereClause) (whereClause, error) {
	if raw == "" {
		return none, nil
	}
	return parseFilter(raw, t)
}

func filterCond(key string, val any, t *tableRef) (string, []any, error) {
	name, lookup, _ := strings.Cut(key, "__")
	if lookup == "" {
		lookup = "exact"
	}
	if _, ok := lookups[lookup]; !ok {
		return "", nil, fmt.Errorf("lookup %q is not supported (supported: %s)", lookup, lookupNames)
	}
	if name == "pk" {
		name = t.pkName
	}
	var f *tableField
	for i := range t.fields {
		if t.fields[i].key == name {
			f = &t.fields[i]
			break
		}
	}
	if f == nil {
		names := make([]string, 0, len(t.fields)+1)
		names = append(names, "pk")
		for _, tf := range t.fields {
			names = append(names, tf.key)
		}
		return "", nil, fmt.Errorf("model %q has no field %q (fields: %s)", t.cqrsID, name, strings.Join(names, ", "))
	}
	if f.kind == dialect.KindJSON && lookup != "isnull" && !(lookup == "exact" && val == nil) {
		return "", nil, fmt.Errorf("field %q holds JSON: only __isnull (or null) can filter it", name)
	}
	switch lookup {
	case "exact":
		if val == nil {
			return f.column + " IS NULL", nil, nil
		}
		a, err := filterValue(t.d, f.kind, val)
		if err != nil {
			return "", nil, err
		}
		return f.column + " = ?", []any{a}, nil
	case "isnull":
		b, ok := val.(bool)
		if !ok {
			return "", nil, fmt.Errorf("__isnull wants true or false, got %s", showJSON(val))
		}
		if b {
			return f.column + " IS NULL", nil, nil
		}
		return f.column + " IS NOT NULL", nil, nil
	case "in":
		list, ok := val.([]any)
		if !ok {
			return "", nil, fmt.Errorf("__in wants a list, got %s", showJSON(val))
		}
		if len(list) == 0 {
			return "1 = 0", nil, nil // Django: an empty IN matches nothing
		}
		args := make([]any, len(list))
		for i, item := range list {
			a, err := filterValue(t.d, f.kind, item)
			if err != nil {
				return "", nil, fmt.Errorf("item %d: %w", i, err)
			}
			args[i] = a
		}
		return f.column + " IN (" + dialect.Placeholders(len(args)) + ")", args, nil
	case "range":
		list, ok := val.([]any)
		if !ok || len(list) != 2 {
			return "", nil, fmt.Errorf("__range wants a list of two values, got %s", showJSON(val))
		}
		lo, err := filterValue(t.d, f.kind, list[0])
		if err != nil {
			return "", nil, fmt.Errorf("lower bound: %w", err)
		}
		hi, err := filterValue(t.d, f.kind, list[1])
		if err != nil {
			return "", nil, fmt.Errorf("upper bound: %w", err)
		}
		return f.column + " BETWEEN ? AND ?", []any{lo, hi}, nil
	}
	a, err := filterValue(t.d, f.kind, val)
	if err != nil {
		return "", nil, err
	}
	return f.column + " " + lookups[lookup] + " ?", []any{a}, nil
}

// filterValue converts one JSON value of a filter into a bind value for a
// column of the given kind.
func filterValue(d dialect.Dialect, kind dialect.Kind, v any) (any, error) {
	switch v.(type) {
	case nil:
		return nil, fmt.Errorf("null is only allowed as the value of an exact match (IS NULL) or through __isnull")
	case []any, *wire.Fields:
		return nil, fmt.Errorf("%s is not a single value", showJSON(v))
	}
	bad := func(want string) error { return fmt.Errorf("%s is not %s", showJSON(v), want) }
	switch kind {
	case dialect.KindInt:
		switch x := v.(type) {
		case json.Number:
			if i, ok := wire.AsInt64(x); ok {
				return i, nil
			}
		case string:
			if i, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64); err == nil {
				return i, nil
			}
		}
		return nil, bad("an integer")
	case dialect.KindFloat:
		if s, ok := numberText(v); ok {
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				return f, nil
			}
		}
		return nil, bad("a number")
	case dialect.KindDecimal:
		// Bound as the number's text, as the replica engine does, so the
		// database compares exactly.
		if s, ok := numberText(v); ok {
			if _, err := strconv.ParseFloat(s, 64); err == nil {
				return s, nil
			}
		}
		return nil, bad("a number")
	case dialect.KindBool:
		switch x := v.(type) {
		case bool:
			return x, nil
		case json.Number:
			switch x.String() {
			case "0":
				return false, nil
			case "1":
				return true, nil
			}
		}
		return nil, bad("a boolean")
	case dialect.KindDate:
		s, ok := v.(string)
		if !ok {
			return nil, bad("a date string (YYYY-MM-DD)")
		}
		t, err := wire.ParseDate(s)
		if err != nil {
			return nil, bad("a date (YYYY-MM-DD)")
		}
		return wire.FormatDate(t), nil
	case dialect.KindDateTime:
		s, ok := v.(string)
		if !ok {
			return nil, bad("a datetime string")
		}
		t, _, err := wire.ParseDateTime(s)
		if err != nil {
			return nil, bad("a datetime (e.g. 2024-01-02 03:04:05+00:00)")
		}
		t = t.UTC()
		// The forms the replica engine writes: fixed-width UTC text on
		// MySQL (DATETIME) and SQLite, a timestamp elsewhere.
		switch d.Name() {
		case dialect.MySQL:
			return t.Format("2006-01-02 15:04:05.000000"), nil
		case dialect.SQLite:
			return t.Format("2006-01-02 15:04:05.000000-07:00"), nil
		}
		return t, nil
	case dialect.KindUUID:
		s, ok := v.(string)
		if !ok {
			return nil, bad("a UUID string")
		}
		u, err := wire.NormalizeUUID(s)
		if err != nil {
			return nil, bad("a UUID")
		}
		return u, nil
	}
	// Strings, bytes and undeclared kinds: text.
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return x.String(), nil
	case bool:
		return x, nil
	}
	return nil, bad("a string")
}

func numberText(v any) (string, bool) {
	switch x := v.(type) {
	case json.Number:
		return x.String(), true
	case string:
		return strings.TrimSpace(x), true
	}
	return "", false
}
