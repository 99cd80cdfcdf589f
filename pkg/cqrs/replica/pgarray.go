package replica

import (
	"encoding/json"
	"strings"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// pgArrayLiteral writes v, the JSON list a master sends for a PostgreSQL
// array column (django-cqrs sends an ArrayField as one), as an array
// literal that PostgreSQL's array input reads with the column's element
// type: {1,NULL,3}, {"a b","q\"x"}, {{1,2},{3,4}}. Numbers and booleans
// are written bare, strings quoted; the elements of a json[] or jsonb[]
// column are written as their JSON text, quoted. A string is taken as a
// literal already.
func pgArrayLiteral(c *column, v any) (any, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case []any:
		var sb strings.Builder
		if err := writePGArray(&sb, x, c.pgArray == "json" || c.pgArray == "jsonb"); err != nil {
			return nil, valueError(c, v, "cannot be written as an array: "+err.Error())
		}
		return sb.String(), nil
	}
	return nil, valueError(c, v, "is not a list (the column is an array)")
}

// writePGArray writes list; with asJSON every element but NULL and a
// nested list is written as its JSON text.
func writePGArray(sb *strings.Builder, list []any, asJSON bool) error {
	sb.WriteByte('{')
	for i, e := range list {
		if i > 0 {
			sb.WriteByte(',')
		}
		switch x := e.(type) {
		case nil:
			sb.WriteString("NULL")
		case []any:
			if err := writePGArray(sb, x, asJSON); err != nil {
				return err
			}
		case string:
			if asJSON {
				b, err := wire.MarshalValue(x)
				if err != nil {
					return err
				}
				quotePGArrayElem(sb, string(b))
				break
			}
			quotePGArrayElem(sb, x)
		case json.Number:
			sb.WriteString(x.String())
		case bool:
			if x {
				sb.WriteString("true")
			} else {
				sb.WriteString("false")
			}
		default:
			b, err := wire.MarshalValue(x)
			if err != nil {
				return err
			}
			quotePGArrayElem(sb, string(b))
		}
	}
	sb.WriteByte('}')
	return nil
}

// quotePGArrayElem writes s as a double-quoted array element, with its
// backslashes and double quotes escaped.
func quotePGArrayElem(sb *strings.Builder, s string) {
	sb.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			sb.WriteByte('\\')
		}
		sb.WriteByte(s[i])
	}
	sb.WriteByte('"')
}
