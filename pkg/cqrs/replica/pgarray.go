package replica

import "github.com/gocqrs/gocqrs/pkg/cqrs/pgarray"

// pgArrayLiteral writes v, the JSON list a master sends for a PostgreSQL
// array column (django-cqrs sends an ArrayField as one), as the array
// literal PostgreSQL's array input reads with the column's element type
// (see pgarray.Format; a value that is not a list is refused). A string
// is taken as a literal already.
func pgArrayLiteral(c *column, v any) (any, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	s, err := pgarray.Format(v, c.pgArray)
	if err != nil {
		return nil, valueError(c, v, "cannot be written as an array: "+err.Error())
	}
	return s, nil
}
