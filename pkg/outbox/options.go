package outbox

import (
	"fmt"
	"hash/fnv"
	"strings"
	"sync"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// DefaultTable is the outbox table's name when none is given.
const DefaultTable = "cqrs_outbox"

// Suffixes of the names derived from the outbox table's name.
const (
	migrationsSuffix  = "_migrations"
	entityIndexSuffix = "_entity_idx"
	notifySuffix      = "_notify"
)

// Option changes where [Migrate], [Insert], [Replace] and [Pending] work.
type Option func(*config)

type config struct {
	table string
}

// WithTable sets the outbox table's name (default "cqrs_outbox"), optionally
// schema-qualified ("schema.table"). It must be a plain identifier of at most
// 52 characters, so that the derived names (<table>_migrations,
// <table>_entity_idx, <table>_notify) stay within 63.
func WithTable(name string) Option {
	return func(c *config) { c.table = name }
}

func buildConfig(opts []Option) config {
	c := config{table: DefaultTable}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c
}

// names are the quoted identifiers of one outbox table, ready to be put into SQL.
type names struct {
	raw         string // the table name as configured
	table       string // quoted, schema-qualified when configured so
	migrations  string // quoted migrations table
	entityIndex string // quoted index name as CREATE INDEX wants it
	indexTable  string // quoted table as CREATE INDEX ... ON wants it
	notifyFunc  string // quoted trigger function (PostgreSQL), schema-qualified when the table is
	notifyTrig  string // quoted trigger name (PostgreSQL)
	notifyName  string // the trigger's name unquoted, as pg_trigger holds it
	lockKey     int64  // advisory lock key for migrations
}

// namesCache holds the names resolveNames derived, per dialect and table,
// for Insert and Replace (called in every master transaction).
var namesCache sync.Map // namesKey → names

type namesKey struct {
	dialect dialect.Name
	table   string
}

// cachedNames is resolveNames, remembered.
func cachedNames(d dialect.Dialect, table string) (names, error) {
	key := namesKey{d.Name(), table}
	if n, ok := namesCache.Load(key); ok && d.Valid() {
		return n.(names), nil
	}
	n, err := resolveNames(d, table)
	if err == nil {
		namesCache.Store(key, n)
	}
	return n, err
}

// resolveNames validates the table name and derives the quoted names.
func resolveNames(d dialect.Dialect, table string) (names, error) {
	if !d.Valid() {
		return names{}, fmt.Errorf("outbox: invalid dialect (use dialect.For or dialect.Of)")
	}
	if err := dialect.ValidIdent(table); err != nil {
		return names{}, fmt.Errorf("outbox: table name: %w", err)
	}
	schema, base := "", table
	if i := strings.IndexByte(table, '.'); i >= 0 {
		schema, base = table[:i], table[i+1:]
	}
	if max := 63 - len(migrationsSuffix); len(base) > max {
		return names{}, fmt.Errorf("outbox: table name %q: at most %d characters (derived names get %q appended)", table, max, migrationsSuffix)
	}
	qualify := func(n string) string {
		if schema == "" {
			return n
		}
		return schema + "." + n
	}
	n := names{raw: table}
	var err error
	if n.table, err = d.Quote(table); err != nil {
		return names{}, fmt.Errorf("outbox: table name: %w", err)
	}
	if n.migrations, err = d.Quote(qualify(base + migrationsSuffix)); err != nil {
		return names{}, fmt.Errorf("outbox: migrations table name: %w", err)
	}
	switch d.Name() {
	case dialect.SQLite:
		// SQLite qualifies the index name and wants the bare table after ON.
		n.entityIndex, err = d.Quote(qualify(base + entityIndexSuffix))
		if err == nil {
			n.indexTable, err = d.Quote(base)
		}
	default:
		// PostgreSQL puts the index into the table's schema; MySQL declares it inline.
		n.entityIndex, err = d.Quote(base + entityIndexSuffix)
		n.indexTable = n.table
	}
	if err != nil {
		return names{}, fmt.Errorf("outbox: index name: %w", err)
	}
	if n.notifyFunc, err = d.Quote(qualify(base + notifySuffix)); err == nil {
		n.notifyTrig, err = d.Quote(base + notifySuffix)
	}
	n.notifyName = base + notifySuffix
	if err != nil {
		return names{}, fmt.Errorf("outbox: notify trigger name: %w", err)
	}
	h := fnv.New64a()
	h.Write([]byte("gocqrs.outbox:" + table))
	n.lockKey = int64(h.Sum64() >> 1)
	return n, nil
}

// replacer substitutes the {{...}} names in migration templates.
func (n names) replacer() *strings.Replacer {
	return strings.NewReplacer(
		"{{table}}", n.table,
		"{{migrations}}", n.migrations,
		"{{entity_index}}", n.entityIndex,
		"{{index_table}}", n.indexTable,
		"{{notify_function}}", n.notifyFunc,
		"{{notify_trigger}}", n.notifyTrig,
	)
}
