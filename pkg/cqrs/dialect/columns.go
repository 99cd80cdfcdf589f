package dialect

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"
)

// Kind is the kind of value a column holds, as far as gocqrs cares: it decides
// how a value is written on the wire (master) and bound to SQL (replica).
type Kind string

// The column kinds.
const (
	KindAuto     Kind = ""         // not declared: taken from introspection, else passed through
	KindInt      Kind = "int"      // integers of any size; JSON number
	KindFloat    Kind = "float"    // binary floating point; JSON number
	KindDecimal  Kind = "decimal"  // exact numeric; JSON number (as django-cqrs: a float)
	KindString   Kind = "string"   // text
	KindBool     Kind = "bool"     // true/false
	KindDate     Kind = "date"     // "YYYY-MM-DD"
	KindDateTime Kind = "datetime" // Python str(datetime) on the wire
	KindUUID     Kind = "uuid"     // canonical lowercase hyphenated string
	KindJSON     Kind = "json"     // any JSON value, inline
	KindBytes    Kind = "bytes"    // raw bytes (sent as a string)
)

// ParseKind checks a kind name from configuration.
func ParseKind(s string) (Kind, error) {
	k := Kind(strings.ToLower(strings.TrimSpace(s)))
	switch k {
	case KindAuto, KindInt, KindFloat, KindDecimal, KindString, KindBool, KindDate,
		KindDateTime, KindUUID, KindJSON, KindBytes:
		return k, nil
	case "integer", "bigint":
		return KindInt, nil
	case "numeric":
		return KindDecimal, nil
	case "text", "varchar":
		return KindString, nil
	case "boolean":
		return KindBool, nil
	case "timestamp", "timestamptz":
		return KindDateTime, nil
	}
	return "", fmt.Errorf("unknown column type %q (want int, float, decimal, string, bool, date, datetime, uuid, json or bytes)", s)
}

// Column is what introspection tells about one table column.
type Column struct {
	Name       string
	DBType     string // the database's own type name, lower case
	Kind       Kind
	Nullable   bool
	HasDefault bool
	PrimaryKey bool
	// Scale is the number of decimal places of a decimal column, -1 when
	// the column has none or it is unknown.
	Scale int
	// ArrayElem is the element type of a PostgreSQL array column (DBType
	// "array"): "int4", "text", "jsonb"...; "" for other columns.
	ArrayElem string
}

// Columns reads the columns of table (optionally "schema.table") in their
// declaration order. It returns an error naming the table if it has none
// (it does not exist or is not visible).
func (d Dialect) Columns(ctx context.Context, q sqlx.QueryerContext, table string) ([]Column, error) {
	if err := ValidIdent(table); err != nil {
		return nil, fmt.Errorf("dialect: columns of %q: %w", table, err)
	}
	var cols []Column
	var err error
	switch d.name {
	case Postgres:
		cols, err = pgColumns(ctx, q, table)
	case MySQL:
		cols, err = mysqlColumns(ctx, q, table)
	case SQLite:
		cols, err = sqliteColumns(ctx, q, table)
	default:
		return nil, fmt.Errorf("dialect: columns of %q: invalid dialect", table)
	}
	if err != nil {
		return nil, fmt.Errorf("dialect: columns of %q: %w", table, err)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("dialect: table %q not found (no columns visible)", table)
	}
	return cols, nil
}

func splitTable(table string) (schema, name string) {
	if i := strings.IndexByte(table, '.'); i >= 0 {
		return table[:i], table[i+1:]
	}
	return "", table
}

func pgColumns(ctx context.Context, q sqlx.QueryerContext, table string) ([]Column, error) {
	schema, name := splitTable(table)
	schemaCond := "c.table_schema = ANY (current_schemas(false))"
	args := []any{name}
	if schema != "" {
		schemaCond = "c.table_schema = $2"
		args = append(args, schema)
	}
	// The first schema on the search path that has the table wins.
	rows, err := q.QueryxContext(ctx, `
SELECT c.column_name, c.data_type, c.udt_name, c.is_nullable = 'YES', c.column_default IS NOT NULL OR c.is_identity = 'YES',
  COALESCE(c.numeric_scale, -1),
  EXISTS (SELECT 1 FROM information_schema.table_constraints tc
          JOIN information_schema.key_column_usage k
            ON k.constraint_name = tc.constraint_name AND k.table_schema = tc.table_schema AND k.table_name = tc.table_name
          WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = c.table_schema AND tc.table_name = c.table_name
            AND k.column_name = c.column_name),
  c.table_schema
FROM information_schema.columns c
WHERE c.table_name = $1 AND `+schemaCond+`
ORDER BY array_position(current_schemas(false), c.table_schema::name), c.ordinal_position`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []Column
	firstSchema := ""
	for rows.Next() {
		var c Column
		var dataType, udt, sch string
		if err := rows.Scan(&c.Name, &dataType, &udt, &c.Nullable, &c.HasDefault, &c.Scale, &c.PrimaryKey, &sch); err != nil {
			return nil, err
		}
		if firstSchema == "" {
			firstSchema = sch
		}
		if sch != firstSchema {
			continue
		}
		c.DBType = strings.ToLower(dataType)
		c.Kind = pgKind(c.DBType, udt)
		if c.DBType == "array" {
			c.ArrayElem = strings.TrimPrefix(udt, "_")
		}
		if c.Kind != KindDecimal {
			c.Scale = -1
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

func pgKind(dataType, udt string) Kind {
	switch {
	case dataType == "smallint" || dataType == "integer" || dataType == "bigint":
		return KindInt
	case dataType == "real" || dataType == "double precision":
		return KindFloat
	case dataType == "numeric":
		return KindDecimal
	case dataType == "boolean":
		return KindBool
	case dataType == "date":
		return KindDate
	case strings.HasPrefix(dataType, "timestamp"):
		return KindDateTime
	case dataType == "uuid":
		return KindUUID
	case dataType == "json" || dataType == "jsonb" || dataType == "array" || dataType == "ARRAY":
		return KindJSON
	case dataType == "bytea":
		return KindBytes
	}
	_ = udt
	return KindString
}

// mysqlColumns reads information_schema.columns. MariaDB reports the implicit
// default of a nullable column as the string NULL; that is no default, as on
// the other databases.
func mysqlColumns(ctx context.Context, q sqlx.QueryerContext, table string) ([]Column, error) {
	schema, name := splitTable(table)
	schemaCond := "table_schema = DATABASE()"
	args := []any{name}
	if schema != "" {
		schemaCond = "table_schema = ?"
		args = append(args, schema)
	}
	rows, err := q.QueryxContext(ctx, `
SELECT column_name, data_type, column_type, is_nullable = 'YES',
  (column_default IS NOT NULL AND NOT (is_nullable = 'YES' AND column_default = 'NULL')) OR extra LIKE '%auto_increment%',
  column_key = 'PRI',
  COALESCE(numeric_scale, -1)
FROM information_schema.columns WHERE table_name = ? AND `+schemaCond+` ORDER BY ordinal_position`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []Column
	for rows.Next() {
		var c Column
		var dataType, colType string
		if err := rows.Scan(&c.Name, &dataType, &colType, &c.Nullable, &c.HasDefault, &c.PrimaryKey, &c.Scale); err != nil {
			return nil, err
		}
		c.DBType = strings.ToLower(colType)
		c.Kind = mysqlKind(strings.ToLower(dataType), c.DBType)
		if c.Kind != KindDecimal {
			c.Scale = -1
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	// MariaDB's JSON type is LONGTEXT with a json_valid() check constraint.
	jsonCols, err := mariadbJSONColumns(ctx, q, schema, name)
	if err != nil {
		return nil, err
	}
	for i := range cols {
		if jsonCols[cols[i].Name] {
			cols[i].Kind = KindJSON
		}
	}
	return cols, nil
}

func mariadbJSONColumns(ctx context.Context, q sqlx.QueryerContext, schema, name string) (map[string]bool, error) {
	schemaCond := "constraint_schema = DATABASE()"
	args := []any{name}
	if schema != "" {
		schemaCond = "constraint_schema = ?"
		args = append(args, schema)
	}
	rows, err := q.QueryxContext(ctx, "SELECT check_clause FROM information_schema.check_constraints WHERE table_name = ? AND "+schemaCond, args...)
	if err != nil {
		// MySQL has no table_name there, and real JSON columns instead.
		return nil, nil
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var clause string
		if err := rows.Scan(&clause); err != nil {
			return nil, err
		}
		if m := jsonValidRe.FindStringSubmatch(clause); m != nil {
			out[m[1]] = true
		}
	}
	return out, rows.Err()
}

var jsonValidRe = regexp.MustCompile("^json_valid\\(`([^`]+)`\\)$")

func mysqlKind(dataType, colType string) Kind {
	switch dataType {
	case "tinyint":
		if strings.HasPrefix(colType, "tinyint(1)") {
			return KindBool
		}
		return KindInt
	case "smallint", "mediumint", "int", "integer", "bigint":
		return KindInt
	case "float", "double", "real":
		return KindFloat
	case "decimal", "numeric":
		return KindDecimal
	case "bool", "boolean":
		return KindBool
	case "date":
		return KindDate
	case "datetime", "timestamp":
		return KindDateTime
	case "json":
		return KindJSON
	case "blob", "tinyblob", "mediumblob", "longblob", "binary", "varbinary":
		return KindBytes
	case "uuid":
		return KindUUID
	case "longtext":
		// MariaDB stores JSON as LONGTEXT with a JSON_VALID check.
		return KindString
	}
	return KindString
}

func sqliteColumns(ctx context.Context, q sqlx.QueryerContext, table string) ([]Column, error) {
	schema, name := splitTable(table)
	// The schema is the function's second argument: a "schema." prefix on
	// pragma_table_info is ignored and would read the main database.
	query := `SELECT name, type, "notnull", dflt_value IS NOT NULL, pk FROM pragma_table_info(?)`
	args := []any{name}
	if schema != "" {
		query = `SELECT name, type, "notnull", dflt_value IS NOT NULL, pk FROM pragma_table_info(?, ?)`
		args = append(args, schema)
	}
	rows, err := q.QueryxContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []Column
	pkCols := 0
	for rows.Next() {
		var c Column
		var notNull bool
		var pk int
		if err := rows.Scan(&c.Name, &c.DBType, &notNull, &c.HasDefault, &pk); err != nil {
			return nil, err
		}
		c.DBType = strings.ToLower(c.DBType)
		c.Nullable = !notNull
		c.PrimaryKey = pk > 0
		if c.PrimaryKey {
			pkCols++
		}
		c.Kind = sqliteKind(c.DBType)
		c.Scale = -1
		if m := decimalScaleRe.FindStringSubmatch(c.DBType); m != nil && c.Kind == KindDecimal {
			c.Scale, _ = strconv.Atoi(m[1])
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// A lone INTEGER PRIMARY KEY is an alias of the rowid: SQLite fills it
	// in. The integer column of a composite key is not.
	if pkCols == 1 {
		for i := range cols {
			if cols[i].PrimaryKey && cols[i].DBType == "integer" {
				cols[i].HasDefault = true
			}
		}
	}
	return cols, nil
}

func sqliteKind(t string) Kind {
	switch {
	case t == "boolean" || t == "bool":
		return KindBool
	case t == "date":
		return KindDate
	case strings.HasPrefix(t, "datetime") || strings.HasPrefix(t, "timestamp"):
		return KindDateTime
	case t == "uuid":
		return KindUUID
	case t == "json" || t == "jsonb":
		return KindJSON
	case strings.HasPrefix(t, "decimal") || strings.HasPrefix(t, "numeric"):
		return KindDecimal
	case strings.Contains(t, "int"):
		return KindInt
	case strings.Contains(t, "real") || strings.Contains(t, "floa") || strings.Contains(t, "doub"):
		return KindFloat
	case t == "blob":
		return KindBytes
	}
	return KindString
}

var decimalScaleRe = regexp.MustCompile(`^\w+\s*\(\s*\d+\s*,\s*(\d+)\s*\)`)
