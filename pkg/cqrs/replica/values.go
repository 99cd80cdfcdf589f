package replica

import (
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// column is what the engine knows about one replica column.
type column struct {
	name     string
	quoted   string
	kind     dialect.Kind
	nullable bool
	required bool // NOT NULL without a default: must be in instance_data
	// scale and precision of a fixed-point column, enforced by the engine
	// on SQLite only (-1 when unknown or not enforced).
	precision, scale int
	// pgArray is the element type of a PostgreSQL array column ("int4"
	// for integer[]...), whose JSON lists are written as array literals
	// (see pgArrayLiteral); "" for other columns.
	pgArray string
}

// Layouts of the datetimes the engine binds as text: MySQL/MariaDB get UTC
// without an offset (DATETIME has none), SQLite UTC with "+00:00". Both are
// fixed width, so UTC values compare as strings.
const (
	mysqlTimeLayout  = "2006-01-02 15:04:05.000000"
	sqliteTimeLayout = "2006-01-02 15:04:05.000000-07:00"
)

// timeArg binds a UTC time for the dialect.
func timeArg(d dialect.Dialect, t time.Time) any {
	t = t.UTC()
	switch d.Name() {
	case dialect.MySQL:
		return t.Format(mysqlTimeLayout)
	case dialect.SQLite:
		return t.Format(sqliteTimeLayout)
	}
	return t
}

// valueError reports a value that does not fit its column.
func valueError(c *column, v any, why string) error {
	return fmt.Errorf("%w for column %q: %s %s", ErrBadValue, c.name, shortValue(v), why)
}

func shortValue(v any) string {
	var s string
	switch x := v.(type) {
	case string:
		s = strconv.Quote(x)
	case json.Number:
		s = x.String()
	default:
		b, err := wire.MarshalValue(v)
		if err != nil {
			s = fmt.Sprintf("%v", v)
		} else {
			s = string(b)
		}
	}
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// toSQL converts a decoded wire value (nil, bool, string, json.Number, []any,
// *wire.Fields, or Go values from hooks) into a bound parameter for column c.
func toSQL(d dialect.Dialect, c *column, v any) (any, error) {
	if v == nil {
		if !c.nullable {
			return nil, fmt.Errorf("%w for column %q: null, but the column is NOT NULL", ErrBadValue, c.name)
		}
		return nil, nil
	}
	switch c.kind {
	case dialect.KindInt:
		return intArg(c, v)
	case dialect.KindFloat:
		return floatArg(c, v)
	case dialect.KindDecimal:
		return decimalArg(d, c, v)
	case dialect.KindBool:
		return boolArg(c, v)
	case dialect.KindDate:
		s, ok := v.(string)
		if !ok {
			if t, isTime := v.(time.Time); isTime {
				return t.Format(time.DateOnly), nil
			}
			return nil, valueError(c, v, "is not a date string")
		}
		t, err := wire.ParseDate(s)
		if err != nil {
			return nil, valueError(c, v, "is not a date (want YYYY-MM-DD)")
		}
		return t.Format(time.DateOnly), nil
	case dialect.KindDateTime:
		switch x := v.(type) {
		case time.Time:
			return timeArg(d, x), nil
		case string:
			t, _, err := wire.ParseDateTime(x)
			if err != nil {
				return nil, valueError(c, v, "is not a datetime")
			}
			return timeArg(d, t), nil
		}
		return nil, valueError(c, v, "is not a datetime string")
	case dialect.KindUUID:
		s, ok := v.(string)
		if !ok {
			return nil, valueError(c, v, "is not a UUID string")
		}
		u, err := wire.NormalizeUUID(s)
		if err != nil {
			return nil, valueError(c, v, "is not a UUID")
		}
		return u, nil
	case dialect.KindJSON:
		if c.pgArray != "" {
			return pgArrayLiteral(c, v)
		}
		b, err := wire.MarshalValue(v)
		if err != nil {
			return nil, valueError(c, v, "cannot be encoded as JSON: "+err.Error())
		}
		return string(b), nil
	case dialect.KindBytes:
		switch x := v.(type) {
		case string:
			return []byte(x), nil
		case []byte:
			return x, nil
		}
		return nil, valueError(c, v, "is not a string")
	case dialect.KindString:
		return stringArg(c, v)
	}
	return autoArg(c, v)
}

func intArg(c *column, v any) (any, error) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case string:
		s = strings.TrimSpace(x)
	case bool:
		return nil, valueError(c, v, "is a boolean, not an integer")
	default:
		if i, ok := wire.AsInt64(v); ok {
			return i, nil
		}
		return nil, valueError(c, v, "is not an integer")
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i, nil
	}
	// Beyond int64, or written as 1.0 / 1e3: accept integral values only.
	r, ok := new(big.Rat).SetString(s)
	if !ok || !r.IsInt() {
		return nil, valueError(c, v, "is not an integer")
	}
	if r.Num().IsInt64() {
		return r.Num().Int64(), nil
	}
	return r.Num().String(), nil
}

func floatArg(c *column, v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(x.String(), 64)
		if err != nil {
			return nil, valueError(c, v, "is not a number")
		}
		return f, nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return nil, valueError(c, v, "is not a number")
		}
		return f, nil
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	}
	if i, ok := wire.AsInt64(v); ok {
		return float64(i), nil
	}
	return nil, valueError(c, v, "is not a number")
}

// isDecimal reports whether s is a decimal number: [+-]digits[.digits] or
// [+-].digits, with an optional exponent [eE][+-]digits.
func isDecimal(s string) bool {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	n := digits()
	if i < len(s) && s[i] == '.' {
		i++
		n += digits()
	}
	if n == 0 {
		return false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// decimalArg binds the number's text so the database rounds it to the
// column's scale (as PostgreSQL and MySQL do); on SQLite, with a declared
// precision and scale, the engine rounds half away from zero and checks the
// precision the way PostgreSQL does.
func decimalArg(d dialect.Dialect, c *column, v any) (any, error) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case string:
		s = strings.TrimSpace(x)
	case float64:
		s = strconv.FormatFloat(x, 'f', -1, 64)
	default:
		i, ok := wire.AsInt64(v)
		if !ok {
			return nil, valueError(c, v, "is not a decimal number")
		}
		s = strconv.FormatInt(i, 10)
	}
	if !isDecimal(s) {
		return nil, valueError(c, v, "is not a decimal number")
	}
	if d.Name() != dialect.SQLite || c.scale < 0 {
		return s, nil
	}
	r, _ := new(big.Rat).SetString(s)
	rounded := roundHalfAway(r, c.scale)
	digits := strings.TrimPrefix(rounded.String(), "-")
	if len(digits) > c.precision {
		return nil, fmt.Errorf("%w for column %q: %s: numeric field overflow (precision %d, scale %d)",
			ErrBadValue, c.name, s, c.precision, c.scale)
	}
	return formatScaled(rounded, c.scale), nil
}

// roundHalfAway returns r*10^scale rounded half away from zero.
func roundHalfAway(r *big.Rat, scale int) *big.Int {
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)
	x := new(big.Rat).Mul(r, new(big.Rat).SetInt(p))
	neg := x.Sign() < 0
	x.Abs(x)
	x.Add(x, big.NewRat(1, 2))
	q := new(big.Int).Quo(x.Num(), x.Denom())
	if neg {
		q.Neg(q)
	}
	return q
}

// formatScaled writes n / 10^scale with exactly scale decimals.
func formatScaled(n *big.Int, scale int) string {
	s := new(big.Int).Abs(n).String()
	if scale > 0 {
		for len(s) <= scale {
			s = "0" + s
		}
		s = s[:len(s)-scale] + "." + s[len(s)-scale:]
	}
	if n.Sign() < 0 {
		s = "-" + s
	}
	return s
}

var fixedPointRe = regexp.MustCompile(`^\s*(?:decimal|numeric)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)`)

// fixedPoint reads the precision and scale of "decimal(6,2)"; -1, -1 when absent.
func fixedPoint(dbType string) (precision, scale int) {
	m := fixedPointRe.FindStringSubmatch(strings.ToLower(dbType))
	if m == nil {
		return -1, -1
	}
	p, _ := strconv.Atoi(m[1])
	s := 0
	if m[2] != "" {
		s, _ = strconv.Atoi(m[2])
	}
	if p <= 0 || s > p {
		return -1, -1
	}
	return p, s
}

func boolArg(c *column, v any) (any, error) {
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
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "true", "t", "1":
			return true, nil
		case "false", "f", "0":
			return false, nil
		}
	default:
		if i, ok := wire.AsInt64(v); ok && (i == 0 || i == 1) {
			return i == 1, nil
		}
	}
	return nil, valueError(c, v, "is not a boolean")
}

func stringArg(c *column, v any) (any, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return x.String(), nil
	case bool:
		return strconv.FormatBool(x), nil
	case []byte:
		return string(x), nil
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	}
	b, err := wire.MarshalValue(v)
	if err != nil {
		return nil, valueError(c, v, "cannot be written as text: "+err.Error())
	}
	return string(b), nil
}

// autoArg handles a column of unknown kind: scalars pass, integers become
// int64, other numbers their text, objects and arrays JSON text.
func autoArg(c *column, v any) (any, error) {
	switch x := v.(type) {
	case string, bool, []byte, time.Time, int64, float64:
		return x, nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		return x.String(), nil
	}
	if i, ok := wire.AsInt64(v); ok {
		return i, nil
	}
	return stringArg(c, v)
}

// pkKey is the text form of a converted pk, as stored in the tombstone table.
func pkKey(v any) string {
	switch x := v.(type) {
	case int64:
		return strconv.FormatInt(x, 10)
	case string:
		return x
	case []byte:
		return string(x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}

// asInt64 reads an integer scanned from the database.
func asInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case []byte:
		i, err := strconv.ParseInt(string(x), 10, 64)
		return i, err == nil
	case string:
		i, err := strconv.ParseInt(x, 10, 64)
		return i, err == nil
	}
	return wire.AsInt64(v)
}

// asTime reads a timestamp scanned from the database (time.Time, or text in
// the layouts the engine writes).
func asTime(v any) (time.Time, bool) {
	switch x := v.(type) {
	case time.Time:
		return x.UTC(), true
	case []byte:
		return asTime(string(x))
	case string:
		t, _, err := wire.ParseDateTime(x)
		return t.UTC(), err == nil
	}
	return time.Time{}, false
}

// scanned turns a value scanned into any into something hooks can use:
// []byte becomes string.
func scanned(v any) any {
	if b, ok := v.([]byte); ok {
		return string(b)
	}
	return v
}
