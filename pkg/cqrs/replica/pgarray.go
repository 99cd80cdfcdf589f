package replica

import (
	"reflect"

	"github.com/gocqrs/gocqrs/pkg/cqrs/pgarray"
)

// pgArrayLiteral writes v, the JSON list a master sends for a PostgreSQL
// array column (django-cqrs sends an ArrayField as one), as the array
// literal PostgreSQL's array input reads with the column's element type
// (see pgarray.Format). A string is taken as a literal already.
func pgArrayLiteral(c *column, v any) (any, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	if k := reflect.ValueOf(v).Kind(); k != reflect.Slice && k != reflect.Array {
		return nil, valueError(c, v, "is not a list (the column is an array)")
	}
	s, err := pgarray.Format(v, c.pgArray)
	if err != nil {
		return nil, valueError(c, v, "cannot be written as an array: "+err.Error())
	}
	return s, nil
}
