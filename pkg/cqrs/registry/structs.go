package registry

import (
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// FieldsOf derives the Fields of a model from a struct (or a pointer to one)
// that sqlx scans rows into, so the struct and the model cannot drift apart.
//
// Columns follow sqlx's conventions: the `db:"column"` tag names the column,
// an exported field without a db tag maps to its lower-cased name, `db:"-"`
// and unexported fields are skipped, and the fields of an embedded struct
// without a db tag are promoted (a shallower field wins over a deeper one
// with the same column). Fields come in declaration order. The sync columns
// cqrs_revision and cqrs_updated are skipped; tag a field `cqrs:"-"` to skip
// another column (e.g. sync columns under other names).
//
// The Kind comes from the Go type: integers → int, float32/float64 → float,
// string → string, bool → bool, time.Time → datetime, sql.NullX and
// sql.Null[T] → the kind of their value, *T → the kind of T, []byte → bytes,
// json.RawMessage, maps, slices and arrays → json, a [16]byte type named UUID
// → uuid, an interface or another type implementing sql.Scanner or
// driver.Valuer → auto (taken from the table by [Registry.Bind]).
//
// The `cqrs` tag holds comma-separated options that override this:
//
//   - a kind: `cqrs:"decimal"`, `cqrs:"date"`, `cqrs:"uuid"`, `cqrs:"auto"`
//     (any name [dialect.ParseKind] accepts). Declared kinds win over the
//     table's at Bind, so a time.Time on a DATE column needs `cqrs:"date"`
//     and a float64 on a NUMERIC column needs `cqrs:"decimal"` to be sent
//     as Django sends them.
//   - name=KEY: the instance_data key, when it differs from the column
//     (Django's foreign keys: key "author", column "author_id"). Master
//     models only: a replica renames keys with Mapping.
//   - "-": not a field of the model.
//
// Errors name the struct and the field.
func FieldsOf(sample any) ([]Field, error) {
	t := reflect.TypeOf(sample)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("registry: FieldsOf(%T): want a struct or a pointer to a struct", sample)
	}
	w := structWalker{root: t}
	if err := w.walk(t, nil, 0, map[reflect.Type]bool{t: true}); err != nil {
		return nil, err
	}
	return w.resolve()
}

// candidate is one struct field that maps to a column, before duplicates
// between embedded structs are resolved.
type candidate struct {
	field Field
	path  string // Go field path, e.g. "Base.ID", for errors
	depth int    // embedding depth; shallower wins
}

type structWalker struct {
	root  reflect.Type
	cands []candidate
}

func (w *structWalker) errorf(path, format string, args ...any) error {
	return fmt.Errorf("registry: FieldsOf(%s): field %s: %s", w.root, path, fmt.Sprintf(format, args...))
}

func (w *structWalker) walk(t reflect.Type, prefix []string, depth int, inChain map[reflect.Type]bool) error {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		path := strings.Join(append(append([]string(nil), prefix...), sf.Name), ".")
		dbTag, hasDB := sf.Tag.Lookup("db")
		column, _, _ := strings.Cut(dbTag, ",")
		if column == "-" {
			continue
		}
		if sf.Anonymous {
			ft := derefType(sf.Type)
			if ft.Kind() == reflect.Struct && !isLeaf(ft) {
				if hasDB && column != "" {
					return w.errorf(path, "embedded struct with db tag %q: sqlx prefixes its columns with %q, which is not a column name; drop the tag", dbTag, column+".")
				}
				if inChain[ft] {
					continue // recursive embedding; sqlx ignores it too
				}
				inChain[ft] = true
				err := w.walk(ft, append(append([]string(nil), prefix...), sf.Name), depth+1, inChain)
				delete(inChain, ft)
				if err != nil {
					return err
				}
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		opts, err := parseCQRSTag(sf.Tag.Get("cqrs"))
		if err != nil {
			return w.errorf(path, "%v", err)
		}
		if opts.skip {
			continue
		}
		if column == "" {
			column = strings.ToLower(sf.Name)
		}
		if column == DefaultRevisionColumn || column == DefaultUpdatedColumn {
			continue
		}
		if err := dialect.ValidIdent(column); err != nil {
			return w.errorf(path, "db column: %v", err)
		}
		kind := opts.kind
		if !opts.hasKind {
			if kind, err = kindOf(sf.Type); err != nil {
				return w.errorf(path, "%v", err)
			}
		}
		f := Field{Name: column, Kind: kind, Scale: -1}
		if opts.name != "" && opts.name != column {
			if opts.name == DefaultRevisionColumn || opts.name == DefaultUpdatedColumn {
				return w.errorf(path, "name=%s: the key is reserved for the sync column", opts.name)
			}
			f.Name, f.Column = opts.name, column
		}
		w.cands = append(w.cands, candidate{field: f, path: path, depth: depth})
	}
	return nil
}

// resolve drops columns shadowed by a shallower field and rejects columns or
// keys that two fields at the same depth claim.
func (w *structWalker) resolve() ([]Field, error) {
	minDepth := map[string]int{}
	for _, c := range w.cands {
		col := c.field.ColumnName()
		if d, ok := minDepth[col]; !ok || c.depth < d {
			minDepth[col] = c.depth
		}
	}
	var out []Field
	colOwner := map[string]string{}
	keyOwner := map[string]string{}
	for _, c := range w.cands {
		col := c.field.ColumnName()
		if c.depth > minDepth[col] {
			continue
		}
		if prev, dup := colOwner[col]; dup {
			return nil, w.errorf(c.path, "column %q is also mapped by field %s", col, prev)
		}
		colOwner[col] = c.path
		if prev, dup := keyOwner[c.field.Name]; dup {
			return nil, w.errorf(c.path, "key %q is also used by field %s", c.field.Name, prev)
		}
		keyOwner[c.field.Name] = c.path
		out = append(out, c.field)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("registry: FieldsOf(%s): no fields (no exported fields, or all skipped)", w.root)
	}
	return out, nil
}

type cqrsTag struct {
	kind    dialect.Kind
	hasKind bool
	name    string
	skip    bool
}

func parseCQRSTag(tag string) (cqrsTag, error) {
	var o cqrsTag
	if tag == "" {
		return o, nil
	}
	for _, opt := range strings.Split(tag, ",") {
		opt = strings.TrimSpace(opt)
		switch {
		case opt == "":
			continue
		case opt == "-":
			o.skip = true
		case strings.HasPrefix(opt, "name="):
			o.name = strings.TrimPrefix(opt, "name=")
			if o.name == "" {
				return o, fmt.Errorf("cqrs tag %q: name= needs a key", tag)
			}
		case strings.EqualFold(opt, "auto"):
			o.kind, o.hasKind = dialect.KindAuto, true
		default:
			if o.hasKind {
				return o, fmt.Errorf("cqrs tag %q: two kinds", tag)
			}
			k, err := dialect.ParseKind(opt)
			if err != nil || k == dialect.KindAuto {
				return o, fmt.Errorf("cqrs tag %q: option %q is not a kind, name=KEY or -", tag, opt)
			}
			o.kind, o.hasKind = k, true
		}
	}
	return o, nil
}

var (
	timeType       = reflect.TypeFor[time.Time]()
	rawMessageType = reflect.TypeFor[json.RawMessage]()
	scannerType    = reflect.TypeFor[sql.Scanner]()
	valuerType     = reflect.TypeFor[driver.Valuer]()
)

func derefType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// isLeaf reports whether a struct type is scanned as one column (time.Time,
// sql.NullX, any Scanner or Valuer) rather than holding columns itself.
func isLeaf(t reflect.Type) bool {
	return t == timeType || reflect.PointerTo(t).Implements(scannerType) || t.Implements(valuerType)
}

// sqlNullValue returns the value type of sql.NullString, sql.Null[T] and
// their siblings: a database/sql struct named Null* with fields (X, Valid).
func sqlNullValue(t reflect.Type) (reflect.Type, bool) {
	if t.Kind() != reflect.Struct || t.PkgPath() != "database/sql" || !strings.HasPrefix(t.Name(), "Null") || t.NumField() != 2 {
		return nil, false
	}
	if t.Field(1).Name != "Valid" {
		return nil, false
	}
	return t.Field(0).Type, true
}

// kindOf maps a Go type to the column kind it holds.
func kindOf(t reflect.Type) (dialect.Kind, error) {
	t = derefType(t)
	switch {
	case t == timeType:
		return dialect.KindDateTime, nil
	case t == rawMessageType:
		return dialect.KindJSON, nil
	case t.Kind() == reflect.Array && t.Len() == 16 && t.Elem().Kind() == reflect.Uint8 && t.Name() == "UUID":
		return dialect.KindUUID, nil
	}
	if v, ok := sqlNullValue(t); ok {
		return kindOf(v)
	}
	switch t.Kind() {
	case reflect.Bool:
		return dialect.KindBool, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return dialect.KindInt, nil
	case reflect.Float32, reflect.Float64:
		return dialect.KindFloat, nil
	case reflect.String:
		return dialect.KindString, nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return dialect.KindBytes, nil
		}
		return dialect.KindJSON, nil
	case reflect.Map, reflect.Array:
		return dialect.KindJSON, nil
	case reflect.Interface:
		return dialect.KindAuto, nil
	case reflect.Struct:
		if isLeaf(t) {
			return dialect.KindAuto, nil
		}
		return "", fmt.Errorf("type %s is a struct sqlx cannot scan into one column (not a sql.Scanner); tag it `db:\"-\"`, or give its kind with a cqrs tag", t)
	}
	return "", fmt.Errorf("type %s has no column kind; tag it `db:\"-\"` or give its kind with a cqrs tag", t)
}
