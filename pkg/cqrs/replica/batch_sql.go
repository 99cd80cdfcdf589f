package replica

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// maxRowsPerStatement bounds a multi-row statement, whatever the parameter
// limit allows, to keep statements well under MySQL's max_allowed_packet.
const maxRowsPerStatement = 1000

// maxParams is the dialect's limit of bound parameters per statement.
func maxParams(d dialect.Dialect) int {
	if d.Name() == dialect.SQLite {
		return 32766 // SQLITE_MAX_VARIABLE_NUMBER's default
	}
	return 65535
}

// rowsPer is how many rows of width columns one statement takes.
func rowsPer(d dialect.Dialect, width int) int {
	return max(1, min(maxRowsPerStatement, (maxParams(d)-1)/width))
}

// batchSQL holds what ApplyBatch keeps per model: statement texts by shape
// (never by batch size) and the memory of earlier plans.
type batchSQL struct {
	stmts sync.Map  // string -> string
	plans sync.Pool // *plan, reused by later batches
}

func cached(m *sync.Map, key string, build func() string) string {
	if v, ok := m.Load(key); ok {
		return v.(string)
	}
	q := build()
	m.Store(key, q)
	return q
}

// tuples writes rows groups of width placeholders: "(?, ?), (?, ?)".
func tuples(sb *strings.Builder, rows, width int) {
	one := "(" + dialect.Placeholders(width) + ")"
	for i := 0; i < rows; i++ {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(one)
	}
}

// pgxDrivers are the database/sql driver names of pgx, which binds Go
// slices as PostgreSQL arrays.
var pgxDrivers = map[string]bool{"pgx": true, "pgx/v5": true}

// pgArrays maps the PostgreSQL pk types (information_schema data_type)
// whose values ApplyBatch binds as one array to the array type; the
// integer ones take []int64, the others []string.
var pgArrays = map[string]string{
	"smallint": "smallint[]", "integer": "integer[]", "bigint": "bigint[]",
	"text": "text[]", "character varying": "character varying[]", "uuid": "uuid[]",
}

// pgIntArrays are the pgArrays bound from []int64.
var pgIntArrays = map[string]bool{"smallint[]": true, "integer[]": true, "bigint[]": true}

// inList returns head + "(?, ?, ...)" with n placeholders, rebound. The
// statements that depend on a batch's size are built per call: a cache of
// every size would grow with every batch size seen.
func inList(d dialect.Dialect, head string, n int) string {
	return d.Rebind(head + "(" + dialect.Placeholders(n) + ")")
}

// selRevsSQL reads the stored revisions of n pks: "SELECT pk, rev FROM t
// WHERE pk IN (...)".
func (cm *model) selRevsSQL(n int) string {
	return inList(cm.d, "SELECT "+cm.pk.quoted+", "+cm.rev.quoted+" FROM "+cm.table+" WHERE "+cm.pk.quoted+" IN ", n)
}

// readArraySQL is ApplyBatch's read on PostgreSQL with pgx: for each pk of
// the array $1 (its tombstone key at the same place in $2), one row: the
// key, the stored revision (NULL without a row) and, with tomb, the
// revision and time of its tombstone for cqrs_id $3 (NULLs without one).
// Each pk is looked up by its own subquery, an index lookup as soon as the
// table has more than a few pages, whatever the batch size: an IN list or
// "= ANY" of hundreds of pks makes the planner scan tables of up to about
// 100k rows. The statement text does not depend on the batch size.
func (cm *model) readArraySQL(tomb *tombstones) string {
	key := "arr"
	if tomb != nil {
		key += ":" + tomb.qt
	}
	return cached(&cm.batch.stmts, key, func() string {
		q := "SELECT k.tk, (SELECT cqrs_t." + cm.rev.quoted + " FROM " + cm.table + " AS cqrs_t WHERE cqrs_t." +
			cm.pk.quoted + " = k.v)::bigint"
		if tomb != nil {
			q += ", tb.revision, tb.updated"
		}
		q += " FROM unnest($1::" + cm.pkArray + ", $2::text[]) AS k(v, tk)"
		if tomb != nil {
			// OFFSET 0 keeps the subquery a lookup per pk (not a join
			// the planner may turn into a scan).
			q += " LEFT JOIN LATERAL (SELECT revision, updated FROM " + tomb.qt +
				" WHERE cqrs_id = $3 AND pk = k.tk OFFSET 0) AS tb ON true"
		}
		return q
	})
}

// delManySQL is DELETE FROM t WHERE pk IN (n placeholders).
func (cm *model) delManySQL(n int) string {
	return inList(cm.d, "DELETE FROM "+cm.table+" WHERE "+cm.pk.quoted+" IN ", n)
}

// upsertSQL is the multi-row upsert of rows rows with the columns at pos
// (positions in cm.all, pk included). Guarded, an existing row is updated
// only when the incoming revision is higher (the SAVE rule; the engine has
// decided already, the guard keeps a concurrent writer's newer row);
// unguarded (a SYNC contributed) it is always updated. The text around the
// VALUES tuples is cached per shape.
func (cm *model) upsertSQL(sig string, pos []int, rows int, guarded bool) string {
	head, tail := cm.upsertEnds(sig, pos, guarded)
	var sb strings.Builder
	sb.Grow(len(head) + len(tail) + rows*(3*len(pos)+2))
	sb.WriteString(head)
	tuples(&sb, rows, len(pos))
	sb.WriteString(tail)
	return cm.d.Rebind(sb.String())
}

// upsertEnds returns the cached text of a shape's upsert around its rows:
// "INSERT INTO t (cols) VALUES " and the ON CONFLICT / ON DUPLICATE KEY
// clause.
func (cm *model) upsertEnds(sig string, pos []int, guarded bool) (head, tail string) {
	shape := "up:" + strconv.FormatBool(guarded) + ":" + sig
	head = cached(&cm.batch.stmts, shape+":head", func() string {
		var sb strings.Builder
		sb.WriteString("INSERT INTO ")
		sb.WriteString(cm.table)
		if cm.d.Name() != dialect.MySQL {
			sb.WriteString(" AS cqrs_t")
		}
		sb.WriteString(" (")
		for i, p := range pos {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString(cm.all[p].quoted)
		}
		sb.WriteString(") VALUES ")
		return sb.String()
	})
	tail = cached(&cm.batch.stmts, shape+":tail", func() string {
		var set []*column // updated columns: all but the pk, the revision last
		for _, p := range pos {
			if c := cm.all[p]; c != cm.pk && c != cm.rev {
				set = append(set, c)
			}
		}
		set = append(set, cm.rev)
		var sb strings.Builder
		rev := cm.rev.quoted
		switch cm.d.Name() {
		case dialect.MySQL:
			// Assignments run left to right and see the new values, so the
			// revision the guard reads is assigned last.
			sb.WriteString(" ON DUPLICATE KEY UPDATE ")
			for i, c := range set {
				if i > 0 {
					sb.WriteString(", ")
				}
				if guarded {
					fmt.Fprintf(&sb, "%s = IF(%s < VALUES(%s), VALUES(%s), %s)", c.quoted, rev, rev, c.quoted, c.quoted)
				} else {
					fmt.Fprintf(&sb, "%s = VALUES(%s)", c.quoted, c.quoted)
				}
			}
		default:
			sb.WriteString(" ON CONFLICT (" + cm.pk.quoted + ") DO UPDATE SET ")
			for i, c := range set {
				if i > 0 {
					sb.WriteString(", ")
				}
				sb.WriteString(c.quoted + " = excluded." + c.quoted)
			}
			if guarded {
				sb.WriteString(" WHERE cqrs_t." + rev + " < excluded." + rev)
			}
		}
		return sb.String()
	})
	return head, tail
}

// getManySQL reads n tombstones of one cqrs_id.
func (t *tombstones) getManySQL(n int) string {
	return inList(t.d, "SELECT pk, revision, updated FROM "+t.qt+" WHERE cqrs_id = ? AND pk IN ", n)
}

// clrManySQL deletes n tombstones of one cqrs_id.
func (t *tombstones) clrManySQL(n int) string {
	return inList(t.d, "DELETE FROM "+t.qt+" WHERE cqrs_id = ? AND pk IN ", n)
}

// putManySQL writes n tombstones, keeping the highest revision and time.
func (t *tombstones) putManySQL(n int) string {
	var sb strings.Builder
	sb.WriteString(t.putHead)
	tuples(&sb, n, 5)
	sb.WriteString(t.putTail)
	return t.d.Rebind(sb.String())
}
