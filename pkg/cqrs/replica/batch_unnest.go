package replica

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// Upserts from arrays (PostgreSQL with pgx)
//
// A multi-row VALUES upsert binds one parameter per value, and its text
// depends on the number of rows: every batch size is another prepared
// statement (pgx keeps up to 512 per connection, each planned for thousands
// of parameters). On PostgreSQL with pgx, ApplyBatch binds each column's
// values as one array instead and reads the rows back with unnest:
//
//	INSERT INTO t AS cqrs_t (a, b) SELECT cqrs_v.c0::T, cqrs_v.c1
//	FROM unnest($1::text[], $2::U[]) AS cqrs_v(c0, c1) ON CONFLICT ...
//
// one statement per shape whatever the batch size. Each column is bound so
// that the database sees what the one-parameter-per-value statement gives
// it: a column of a type built into PostgreSQL whose values are all int64,
// float64, bool, time.Time or []byte (or NULL) as an array of its own type,
// whose elements pgx encodes with the codec it encodes such a parameter
// with; a column whose values are strings, int64 and bool (or NULL) as a
// text array, the integers and booleans written in decimal and as
// true/false, each element cast to the column's type (its input function:
// what a string parameter, which pgx sends as text, goes through). The
// latter also takes the integers of a type pgx does not know (a domain
// over integer, say). The casts
// name the type without its modifier (numeric, not numeric(6,2); bpchar,
// not character, which means character(1)): the assignment to the column
// applies it, as it does to a parameter. A chunk with a column of any other
// mix of values (a float among strings, a float of a domain type) is
// written with VALUES.

// pgColType is how a column's values are bound in an array.
type pgColType struct {
	typ     string // the column's type, schema-qualified and quoted, no modifier
	array   string // its array type, likewise; "" when it has none
	builtin bool   // a type pgx encodes itself (an oid below 10000)
}

// pgColTypesSQL reads the type of every column of the table $1.
const pgColTypesSQL = `SELECT a.attname,
  quote_ident(n.nspname) || '.' || quote_ident(t.typname),
  COALESCE(quote_ident(an.nspname) || '.' || quote_ident(at.typname), ''),
  t.oid < 10000
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_type at ON at.oid = t.typarray
LEFT JOIN pg_namespace an ON an.oid = at.typnamespace
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`

// loadPGColTypes sets cm.pgTypes, by position in cm.all.
func (cm *model) loadPGColTypes(ctx context.Context, q sqlx.QueryerContext) error {
	rows, err := q.QueryContext(ctx, pgColTypesSQL, cm.table)
	if err != nil {
		return fmt.Errorf("replica model %q: column types of %s: %w", cm.m.CQRSID, cm.table, err)
	}
	defer rows.Close()
	byName := map[string]pgColType{}
	for rows.Next() {
		var name string
		var t pgColType
		if err := rows.Scan(&name, &t.typ, &t.array, &t.builtin); err != nil {
			return fmt.Errorf("replica model %q: column types of %s: %w", cm.m.CQRSID, cm.table, err)
		}
		byName[name] = t
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("replica model %q: column types of %s: %w", cm.m.CQRSID, cm.table, err)
	}
	types := make([]pgColType, len(cm.all))
	for i, c := range cm.all {
		t, ok := byName[c.name]
		if !ok {
			return fmt.Errorf("replica model %q: column types of %s: no column %q", cm.m.CQRSID, cm.table, c.name)
		}
		types[i] = t
	}
	cm.pgTypes = types
	return nil
}

// Array bindings of a column, in unnestSQL's shape key.
const (
	bindText   = 't' // a text array, each element cast to the column's type
	bindNative = 'n' // an array of the column's type
)

// unnestArgs returns one chunk's arrays, one per column at pos, and how
// each is bound; ok is false when a column's values fit neither binding.
func (cm *model) unnestArgs(pos []int, chunk []*rowOp) (binds []byte, args []any, ok bool) {
	if cm.pgTypes == nil {
		return nil, nil, false
	}
	binds = make([]byte, len(pos))
	args = make([]any, len(pos))
	for j, p := range pos {
		t := cm.pgTypes[p]
		col := make([]any, len(chunk))
		strs, natives, exact := 0, 0, 0
		for k, op := range chunk {
			v := op.vals[p]
			switch v.(type) {
			case nil:
			case string:
				strs++
			case int64, bool:
				exact++
			case float64, time.Time, []byte:
				natives++
			default:
				return nil, nil, false
			}
			col[k] = v
		}
		switch {
		case strs == 0 && natives+exact > 0 && t.builtin && t.array != "":
			binds[j] = bindNative
		case natives == 0:
			// Text: integers and booleans in the form the type's input
			// function reads as the same value.
			binds[j] = bindText
			for k, v := range col {
				switch x := v.(type) {
				case int64:
					col[k] = strconv.FormatInt(x, 10)
				case bool:
					col[k] = strconv.FormatBool(x)
				}
			}
		default:
			return nil, nil, false
		}
		args[j] = col
	}
	return binds, args, true
}

// unnestSQL is the upsert of one shape (columns at pos, bound as binds)
// from arrays; its text does not depend on the number of rows.
func (cm *model) unnestSQL(sig string, pos []int, binds []byte, guarded bool) string {
	return cached(&cm.batch.stmts, "unnest:"+strconv.FormatBool(guarded)+":"+sig+":"+string(binds), func() string {
		head, tail := cm.upsertEnds(sig, pos, guarded)
		var sel, from, names strings.Builder
		for j, p := range pos {
			if j > 0 {
				sel.WriteString(", ")
				from.WriteString(", ")
				names.WriteString(", ")
			}
			c := "c" + strconv.Itoa(j)
			names.WriteString(c)
			sel.WriteString("cqrs_v." + c)
			param := "$" + strconv.Itoa(j+1)
			if binds[j] == bindText {
				sel.WriteString("::" + cm.pgTypes[p].typ)
				from.WriteString(param + "::text[]")
			} else {
				from.WriteString(param + "::" + cm.pgTypes[p].array)
			}
		}
		// head ends with "VALUES "; the rows come from the arrays instead.
		return strings.TrimSuffix(head, "VALUES ") + "SELECT " + sel.String() + " FROM unnest(" + from.String() +
			") AS cqrs_v(" + names.String() + ")" + tail
	})
}
