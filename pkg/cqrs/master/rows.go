package master

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/pgarray"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// tableSQL holds the quoted identifiers of one master model.
type tableSQL struct {
	table, pk, rev, upd string
	cols                []string          // quoted, in field order
	byField             map[string]string // field name → quoted column
	sel                 string            // selectList
	// insertAll is Insert's INSERT (with ? marks) when every field is
	// given: the columns in the order of the sorted field names, then the
	// revision (0) and cqrs_updated.
	insertAll string
	// one is the one-statement insert (insert_pg.go) last built from
	// insertAll and an outbox statement.
	one atomic.Pointer[oneStatement]

	// What the identifiers were built from: a registry bound again (New
	// with the same registry) gives its models new field lists.
	from       registry.MasterModel
	fieldsHead *registry.Field
}

// current reports whether t was built from mm as it is now.
func (t *tableSQL) current(mm *registry.MasterModel) bool {
	head := (*registry.Field)(nil)
	if len(mm.Fields) > 0 {
		head = &mm.Fields[0]
	}
	return head == t.fieldsHead && len(mm.Fields) == len(t.from.Fields) && mm.Table == t.from.Table &&
		mm.PK == t.from.PK && mm.RevisionColumn == t.from.RevisionColumn && mm.UpdatedColumn == t.from.UpdatedColumn
}

// quoted returns the quoted identifiers of mm's table, built on first use
// and kept while the model's table, columns and field list stay the same.
func (m *Master) quoted(mm *registry.MasterModel) (*tableSQL, error) {
	if t, ok := m.tables.Load(mm); ok && t.(*tableSQL).current(mm) {
		return t.(*tableSQL), nil
	}
	q := func(s string) (string, error) { return m.d.Quote(s) }
	t := tableSQL{byField: make(map[string]string, len(mm.Fields))}
	var err error
	if t.table, err = q(mm.Table); err != nil {
		return nil, err
	}
	if t.rev, err = q(mm.RevisionColumn); err != nil {
		return nil, err
	}
	if t.upd, err = q(mm.UpdatedColumn); err != nil {
		return nil, err
	}
	for _, f := range mm.Fields {
		c, err := q(f.ColumnName())
		if err != nil {
			return nil, err
		}
		t.cols = append(t.cols, c)
		t.byField[f.Name] = c
		if f.Name == mm.PK {
			t.pk = c
		}
	}
	if t.pk == "" {
		return nil, fmt.Errorf("primary key %q is not among the fields", mm.PK)
	}
	t.sel = t.rev + ", " + t.upd + ", " + strings.Join(t.cols, ", ")
	sorted := make([]string, 0, len(mm.Fields)+2)
	for _, n := range sortedFieldNames(mm) {
		sorted = append(sorted, t.byField[n])
	}
	marks := strings.Repeat("?, ", len(mm.Fields)) + "0, ?"
	t.insertAll = fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", t.table, strings.Join(append(sorted, t.rev, t.upd), ", "), marks)
	t.from = *mm
	if len(mm.Fields) > 0 {
		t.fieldsHead = &mm.Fields[0]
	}
	m.tables.Store(mm, &t)
	return &t, nil
}

func (m *Master) pkField(mm *registry.MasterModel) registry.Field {
	for _, f := range mm.Fields {
		if f.Name == mm.PK {
			return f
		}
	}
	return registry.Field{Name: mm.PK}
}

// readRows reads rows of mm by primary key (all rows when pks is nil) and
// returns them serialised: cqrs_revision, cqrs_updated, then the fields in
// order, each value in its wire form.
func (m *Master) readRows(ctx context.Context, q sqlx.QueryerContext, mm *registry.MasterModel, pks []any, forUpdate bool) ([]*wire.Fields, error) {
	t, err := m.quoted(mm)
	if err != nil {
		return nil, err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "SELECT %s FROM %s", t.selectList(), t.table)
	if pks != nil {
		if len(pks) == 0 {
			return nil, nil
		}
		fmt.Fprintf(&sb, " WHERE %s IN (%s)", t.pk, dialect.Placeholders(len(pks)))
	}
	fmt.Fprintf(&sb, " ORDER BY %s", t.pk)
	if forUpdate && m.d.SupportsForUpdate() {
		sb.WriteString(" FOR UPDATE")
	}
	args := make([]any, len(pks))
	pkf := m.pkField(mm)
	for i, pk := range pks {
		args[i] = bindPK(pkf, pk)
	}
	rows, err := q.QueryContext(ctx, m.d.Rebind(sb.String()), args...)
	if err != nil {
		return nil, err
	}
	return scanRows(rows, mm)
}

// selectList is the column list rows are read with: the sync columns, then
// the fields in order.
func (t *tableSQL) selectList() string { return t.sel }

// scanRows serialises rows read with tableSQL.selectList, and closes them.
func scanRows(rows *sql.Rows, mm *registry.MasterModel) ([]*wire.Fields, error) {
	defer rows.Close()
	var out []*wire.Fields
	n := len(mm.Fields) + 2
	for rows.Next() {
		vals := make([]any, n)
		ptrs := make([]any, n)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		f, err := rowFields(mm, vals)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// rowFields serialises one row's values as scanned in tableSQL.selectList
// order: cqrs_revision, cqrs_updated, then the fields in order.
func rowFields(mm *registry.MasterModel, vals []any) (*wire.Fields, error) {
	f := wire.NewFields()
	rev, ok := ScannedInt(vals[0])
	if !ok {
		return nil, fmt.Errorf("column %s: revision %v is not an integer", mm.RevisionColumn, vals[0])
	}
	f.Set(wire.RevisionKey, json.Number(strconv.FormatInt(rev, 10)))
	if vals[1] == nil {
		f.Set(wire.UpdatedKey, nil)
	} else {
		upd, err := toWire(dialect.KindDateTime, vals[1])
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", mm.UpdatedColumn, err)
		}
		f.Set(wire.UpdatedKey, upd)
	}
	for i, fd := range mm.Fields {
		raw := vals[i+2]
		if fd.Kind == dialect.KindDecimal && fd.Scale >= 0 && raw != nil {
			var err error
			if raw, err = quantize(raw, fd.Scale); err != nil {
				return nil, fmt.Errorf("column %s: %w", fd.ColumnName(), err)
			}
		}
		v, err := fieldToWire(fd, raw)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", fd.ColumnName(), err)
		}
		f.Set(fd.Name, v)
	}
	return f, nil
}

// fieldToWire is toWire for field fd: the array literal pgx reads back
// for a PostgreSQL array column becomes a list.
func fieldToWire(fd registry.Field, raw any) (any, error) {
	if fd.ArrayElem != "" {
		switch x := raw.(type) {
		case string:
			return pgarray.Parse(x, fd.ArrayElem)
		case []byte:
			return pgarray.Parse(string(x), fd.ArrayElem)
		}
	}
	return toWire(fd.Kind, raw)
}

// Rows reads rows of a master model (all of them when pks is nil), in
// primary key order, serialised exactly as in a message's instance_data:
// cqrs_revision, cqrs_updated, then the fields. It is the row format of
// bulk dumps and of master/replica comparisons.
func (m *Master) Rows(ctx context.Context, q sqlx.QueryerContext, cqrsID string, pks []any) ([]*wire.Fields, error) {
	mm, err := m.model(cqrsID)
	if err != nil {
		return nil, err
	}
	rows, err := m.readRows(ctx, q, mm, pks, false)
	if err != nil {
		return nil, fmt.Errorf("master: read %s: %w", cqrsID, err)
	}
	return rows, nil
}

// bindPK converts a primary key given by the caller into a bind value.
func bindPK(f registry.Field, pk any) any {
	switch v := pk.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		return v.String()
	}
	return pk
}

// pkString renders a primary key for the outbox entity key and logs.
func pkString(pk any) string {
	switch v := pk.(type) {
	case nil:
		return ""
	case string:
		return v
	case []byte:
		return string(v)
	case json.Number:
		return v.String()
	}
	return fmt.Sprint(pk)
}

// ScannedInt converts an integer value scanned from the database (any of
// the Go types the drivers return for integer columns, or its decimal text)
// to int64. It reports false when v is not an integer.
func ScannedInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case int:
		return int64(n), true
	case uint64:
		if n <= math.MaxInt64 {
			return int64(n), true
		}
	case float64:
		if n == math.Trunc(n) {
			return int64(n), true
		}
	case []byte:
		i, err := strconv.ParseInt(string(n), 10, 64)
		return i, err == nil
	case string:
		i, err := strconv.ParseInt(n, 10, 64)
		return i, err == nil
	}
	return 0, false
}

// toWire converts a value scanned from the database into its django-cqrs
// wire form for a column of the given kind.
func toWire(kind dialect.Kind, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	if b, ok := v.([]byte); ok && kind != dialect.KindBytes {
		v = string(b)
	}
	switch kind {
	case dialect.KindInt:
		if i, ok := ScannedInt(v); ok {
			return json.Number(strconv.FormatInt(i, 10)), nil
		}
		if s, ok := v.(string); ok {
			// Integers beyond int64 (numeric(30,0) and the like) stay exact.
			if _, err := strconv.ParseUint(s, 10, 64); err == nil {
				return json.Number(s), nil
			}
		}
		return nil, fmt.Errorf("value %v (%T) is not an integer", v, v)
	case dialect.KindFloat, dialect.KindDecimal:
		var f float64
		switch n := v.(type) {
		case float64:
			f = n
		case float32:
			f = float64(n)
		case int64:
			f = float64(n)
		case string:
			var err error
			if f, err = strconv.ParseFloat(strings.TrimSpace(n), 64); err != nil {
				return nil, fmt.Errorf("value %q is not a number", n)
			}
		default:
			return nil, fmt.Errorf("value %v (%T) is not a number", v, v)
		}
		s, err := wire.FormatPyFloat(f)
		if err != nil {
			return nil, err
		}
		return json.Number(s), nil
	case dialect.KindBool:
		switch b := v.(type) {
		case bool:
			return b, nil
		case int64:
			return b != 0, nil
		case string:
			switch strings.ToLower(b) {
			case "1", "t", "true":
				return true, nil
			case "0", "f", "false":
				return false, nil
			}
		}
		return nil, fmt.Errorf("value %v (%T) is not a boolean", v, v)
	case dialect.KindDate:
		switch t := v.(type) {
		case time.Time:
			return wire.FormatDate(t), nil
		case string:
			d, err := wire.ParseDate(firstN(t, 10))
			if err != nil {
				return nil, err
			}
			return wire.FormatDate(d), nil
		}
		return nil, fmt.Errorf("value %v (%T) is not a date", v, v)
	case dialect.KindDateTime:
		switch t := v.(type) {
		case time.Time:
			return wire.FormatPyDateTime(t.UTC()), nil
		case string:
			pt, _, err := wire.ParseDateTime(t)
			if err != nil {
				return nil, err
			}
			return wire.FormatPyDateTime(pt.UTC()), nil
		}
		return nil, fmt.Errorf("value %v (%T) is not a datetime", v, v)
	case dialect.KindUUID:
		switch u := v.(type) {
		case string:
			return wire.NormalizeUUID(u)
		case [16]byte:
			return formatUUID(u[:]), nil
		}
		return nil, fmt.Errorf("value %v (%T) is not a UUID", v, v)
	case dialect.KindJSON:
		var raw []byte
		switch j := v.(type) {
		case string:
			raw = []byte(j)
		case []byte:
			raw = j
		default:
			return v, nil // already decoded by the driver (maps, slices)
		}
		val, err := wire.DecodeValue(raw)
		if err != nil {
			return nil, fmt.Errorf("invalid JSON value: %w", err)
		}
		return val, nil
	case dialect.KindBytes:
		if b, ok := v.([]byte); ok {
			return string(b), nil
		}
		return v, nil
	}
	// KindString and anything else.
	switch s := v.(type) {
	case string:
		return s, nil
	case time.Time:
		return wire.FormatPyDateTime(s.UTC()), nil
	case int64, float64, bool:
		return s, nil
	}
	return fmt.Sprint(v), nil
}

// quantize rounds a decimal value to scale places, half to even, as
// Django's DecimalField does when it reads SQLite's floating-point storage.
// Databases with exact decimals already hold rounded values.
func quantize(v any, scale int) (string, error) {
	var s string
	switch n := v.(type) {
	case float64:
		s = strconv.FormatFloat(n, 'f', -1, 64)
	case int64:
		return strconv.FormatInt(n, 10), nil
	case []byte:
		s = string(n)
	case string:
		s = n
	default:
		return "", fmt.Errorf("value %v (%T) is not a decimal", v, v)
	}
	if q, ok := quantizedAlready(s, scale); ok {
		return q, nil
	}
	return quantizeText(s, scale)
}

// quantizeText is quantize for decimal text, computed exactly.
func quantizeText(s string, scale int) (string, error) {
	r, ok := new(big.Rat).SetString(strings.TrimSpace(s))
	if !ok {
		return "", fmt.Errorf("value %q is not a decimal", s)
	}
	pow := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)
	r.Mul(r, new(big.Rat).SetInt(pow))
	q, rem := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	// Compare 2*|rem| with the denominator to decide the rounding.
	twice := new(big.Int).Mul(new(big.Int).Abs(rem), big.NewInt(2))
	switch c := twice.Cmp(r.Denom()); {
	case c > 0, c == 0 && q.Bit(0) == 1:
		if r.Sign() < 0 {
			q.Sub(q, big.NewInt(1))
		} else {
			q.Add(q, big.NewInt(1))
		}
	}
	return new(big.Rat).SetFrac(q, pow).FloatString(scale), nil
}

// quantizedAlready returns quantize's result for a decimal in canonical
// form with at most scale fraction digits (what databases with exact
// decimals return), which needs no rounding: the fraction padded with
// zeros. ok is false for any other form; quantize then computes.
func quantizedAlready(s string, scale int) (string, bool) {
	digits := strings.TrimPrefix(s, "-")
	intPart, frac, hasDot := strings.Cut(digits, ".")
	switch {
	case intPart == "" || (len(intPart) > 1 && intPart[0] == '0') || !allDigits(intPart) || !allDigits(frac),
		hasDot && (frac == "" || scale == 0), len(frac) > scale:
		return "", false
	case len(digits) < len(s) && strings.Trim(digits, "0.") == "":
		return "", false // negative zero: quantize drops the sign
	}
	if scale == 0 {
		return s, true
	}
	if !hasDot {
		s += "."
	}
	return s + strings.Repeat("0", scale-len(frac)), true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func firstN(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func formatUUID(b []byte) string {
	const hexd = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hexd[c>>4], hexd[c&0xf])
	}
	return string(out)
}

// bindValue converts a Go value given by the caller for field f's column into a
// bind value.
func (m *Master) bindValue(f registry.Field, v any) (any, error) {
	kind := f.Kind
	if f.ArrayElem != "" && v != nil {
		// A PostgreSQL array column: a list as an array literal, a string
		// as a literal already.
		if s, ok := v.(string); ok {
			return s, nil
		}
		return pgarray.Format(v, f.ArrayElem)
	}
	switch x := v.(type) {
	case nil:
		return nil, nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		return x.String(), nil
	case time.Time:
		if kind == dialect.KindDate {
			return wire.FormatDate(x), nil
		}
		if m.d.Name() == dialect.MySQL {
			return x.UTC(), nil
		}
		return x.UTC(), nil
	case *wire.Fields, map[string]any, []any:
		b, err := wire.MarshalValue(x)
		if err != nil {
			return nil, err
		}
		return string(b), nil
	case json.RawMessage:
		return string(x), nil
	case sql.NullString, sql.NullInt64, sql.NullBool, sql.NullFloat64, sql.NullTime:
		return x, nil
	}
	return v, nil
}
