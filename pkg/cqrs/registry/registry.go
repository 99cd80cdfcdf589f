package registry

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// Registry holds master and replica models by cqrs_id. It is safe for
// concurrent reads after registration is done; registration itself is
// serialised.
type Registry struct {
	mu       sync.RWMutex
	masters  map[string]*MasterModel
	replicas map[string]*ReplicaModel
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{masters: map[string]*MasterModel{}, replicas: map[string]*ReplicaModel{}}
}

// RegisterMaster validates m and adds it. Errors name the model and the
// problem: an empty or duplicate cqrs_id, an invalid identifier, a pk missing
// from the declared fields, a tracked field that is not a field.
func (r *Registry) RegisterMaster(m MasterModel) error {
	if err := m.normalize(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.masters[m.CQRSID]; dup {
		return fmt.Errorf("registry: master model %q: cqrs_id already registered", m.CQRSID)
	}
	r.masters[m.CQRSID] = &m
	return nil
}

// RegisterReplica validates m and adds it, with the same kind of errors as
// RegisterMaster, plus mapping targets that are not declared columns.
func (r *Registry) RegisterReplica(m ReplicaModel) error {
	if err := m.normalize(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.replicas[m.CQRSID]; dup {
		return fmt.Errorf("registry: replica model %q: cqrs_id already registered", m.CQRSID)
	}
	r.replicas[m.CQRSID] = &m
	return nil
}

// Master returns the master model of a cqrs_id.
func (r *Registry) Master(id string) (*MasterModel, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.masters[id]
	return m, ok
}

// Replica returns the replica model of a cqrs_id.
func (r *Registry) Replica(id string) (*ReplicaModel, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.replicas[id]
	return m, ok
}

// MasterIDs returns the registered master cqrs_ids, sorted.
func (r *Registry) MasterIDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return sortedKeys(r.masters)
}

// ReplicaIDs returns the registered replica cqrs_ids, sorted.
func (r *Registry) ReplicaIDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return sortedKeys(r.replicas)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func validID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("registry: %s model: empty cqrs_id", kind)
	}
	if strings.ContainsAny(id, " \t\n#*") {
		return fmt.Errorf("registry: %s model %q: cqrs_id must not contain spaces, '#' or '*' (it is an AMQP routing key)", kind, id)
	}
	return nil
}

func checkFields(kind, id string, fields []Field, revCol, updCol string) error {
	seen := map[string]bool{}
	for i, f := range fields {
		if c := f.ColumnName(); c == revCol || c == updCol {
			return fmt.Errorf("registry: %s model %q: field %q: column %q is a sync column, which is always included; leave it out of Fields", kind, id, f.Name, c)
		}
		if f.Name == wire.RevisionKey || f.Name == wire.UpdatedKey {
			return fmt.Errorf("registry: %s model %q: field %q: the key is reserved for the sync column", kind, id, f.Name)
		}
		if f.Name == "" {
			return fmt.Errorf("registry: %s model %q: field %d has no name", kind, id, i)
		}
		if seen[f.Name] {
			return fmt.Errorf("registry: %s model %q: field %q declared twice", kind, id, f.Name)
		}
		seen[f.Name] = true
		if err := dialect.ValidIdent(f.ColumnName()); err != nil {
			return fmt.Errorf("registry: %s model %q: field %q: %w", kind, id, f.Name, err)
		}
		if _, err := dialect.ParseKind(string(f.Kind)); err != nil {
			return fmt.Errorf("registry: %s model %q: field %q: %w", kind, id, f.Name, err)
		}
	}
	return nil
}

func hasField(fields []Field, name string) bool {
	return slices.ContainsFunc(fields, func(f Field) bool { return f.Name == name })
}

func (m *MasterModel) normalize() error {
	if err := validID("master", m.CQRSID); err != nil {
		return err
	}
	if m.RevisionColumn == "" {
		m.RevisionColumn = DefaultRevisionColumn
	}
	if m.UpdatedColumn == "" {
		m.UpdatedColumn = DefaultUpdatedColumn
	}
	if m.PK == "" {
		m.PK = "id"
	}
	for what, ident := range map[string]string{"table": m.Table, "revision column": m.RevisionColumn, "updated column": m.UpdatedColumn} {
		if err := dialect.ValidIdent(ident); err != nil {
			return fmt.Errorf("registry: master model %q: %s: %w", m.CQRSID, what, err)
		}
	}
	if err := checkFields("master", m.CQRSID, m.Fields, m.RevisionColumn, m.UpdatedColumn); err != nil {
		return err
	}
	if len(m.Fields) > 0 {
		if !hasField(m.Fields, m.PK) {
			return fmt.Errorf("registry: master model %q: primary key %q is not among its fields", m.CQRSID, m.PK)
		}
		for _, t := range m.TrackedFields {
			if !hasField(m.Fields, t) {
				return fmt.Errorf("registry: master model %q: tracked field %q is not among its fields", m.CQRSID, t)
			}
		}
	}
	m.Fields = slices.Clone(m.Fields)
	m.TrackedFields = slices.Clone(m.TrackedFields)
	return nil
}

func (m *ReplicaModel) normalize() error {
	if err := validID("replica", m.CQRSID); err != nil {
		return err
	}
	if m.IsRaw() {
		if m.Table != "" {
			return fmt.Errorf("registry: replica model %q: a raw replica (Raw handlers) has no table, got %q", m.CQRSID, m.Table)
		}
		return nil
	}
	if m.Table == "" {
		// Hooks alone are not enough: the engine reads the stored row and
		// its revision from the table before calling them.
		return fmt.Errorf("registry: replica model %q: no table and no Raw handlers", m.CQRSID)
	}
	if m.RevisionColumn == "" {
		m.RevisionColumn = DefaultRevisionColumn
	}
	if m.UpdatedColumn == "" {
		m.UpdatedColumn = DefaultUpdatedColumn
	}
	if m.PK == "" {
		m.PK = "id"
	}
	for what, ident := range map[string]string{"table": m.Table, "primary key": m.PK, "revision column": m.RevisionColumn, "updated column": m.UpdatedColumn} {
		if err := dialect.ValidIdent(ident); err != nil {
			return fmt.Errorf("registry: replica model %q: %s: %w", m.CQRSID, what, err)
		}
	}
	if err := checkFields("replica", m.CQRSID, m.Fields, m.RevisionColumn, m.UpdatedColumn); err != nil {
		return err
	}
	for _, f := range m.Fields {
		if f.Column != "" && f.Column != f.Name {
			return fmt.Errorf("registry: replica model %q: field %q: replica fields are columns; use Mapping to rename master keys", m.CQRSID, f.Name)
		}
	}
	if len(m.Fields) > 0 && !hasField(m.Fields, m.PK) {
		return fmt.Errorf("registry: replica model %q: primary key %q is not among its fields", m.CQRSID, m.PK)
	}
	seenTo := map[string]bool{}
	for _, mp := range m.Mapping {
		if mp.From == "" || mp.To == "" {
			return fmt.Errorf("registry: replica model %q: mapping %q→%q: both sides are required", m.CQRSID, mp.From, mp.To)
		}
		if err := dialect.ValidIdent(mp.To); err != nil {
			return fmt.Errorf("registry: replica model %q: mapping %q→%q: %w", m.CQRSID, mp.From, mp.To, err)
		}
		if seenTo[mp.To] {
			return fmt.Errorf("registry: replica model %q: mapping: column %q is the target of two keys", m.CQRSID, mp.To)
		}
		seenTo[mp.To] = true
		if len(m.Fields) > 0 && !hasField(m.Fields, mp.To) && mp.To != m.RevisionColumn && mp.To != m.UpdatedColumn {
			return fmt.Errorf("registry: replica model %q: mapping %q→%q: no such column among the model's fields", m.CQRSID, mp.From, mp.To)
		}
	}
	m.Fields = slices.Clone(m.Fields)
	m.Mapping = slices.Clone(m.Mapping)
	return nil
}

// Bind checks every master (masters=true) or replica (masters=false) model
// with a table against the database: the table exists, every declared column
// exists, the pk and sync columns exist. Undeclared fields are filled from
// the table (all columns but the sync columns, in table order); KindAuto
// kinds and nullability come from the table.
func (r *Registry) Bind(ctx context.Context, q sqlx.QueryerContext, d dialect.Dialect, masters bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if masters {
		for _, id := range sortedKeys(r.masters) {
			m := r.masters[id]
			fields, err := bindFields(ctx, q, d, "master", m.CQRSID, m.Table, m.Fields, m.RevisionColumn, m.UpdatedColumn, true)
			if err != nil {
				return err
			}
			if !hasField(fields, m.PK) {
				return fmt.Errorf("registry: master model %q: primary key %q is not a column of table %q", m.CQRSID, m.PK, m.Table)
			}
			for _, t := range m.TrackedFields {
				if !hasField(fields, t) {
					return fmt.Errorf("registry: master model %q: tracked field %q is not a column of table %q", m.CQRSID, t, m.Table)
				}
			}
			m.Fields = fields
		}
		return nil
	}
	for _, id := range sortedKeys(r.replicas) {
		m := r.replicas[id]
		if m.IsRaw() || m.Table == "" {
			continue
		}
		fields, err := bindFields(ctx, q, d, "replica", m.CQRSID, m.Table, m.Fields, m.RevisionColumn, m.UpdatedColumn, false)
		if err != nil {
			return err
		}
		if !hasField(fields, m.PK) {
			return fmt.Errorf("registry: replica model %q: primary key %q is not a column of table %q", m.CQRSID, m.PK, m.Table)
		}
		for _, mp := range m.Mapping {
			if !hasField(fields, mp.To) && mp.To != m.RevisionColumn && mp.To != m.UpdatedColumn {
				return fmt.Errorf("registry: replica model %q: mapping %q→%q: no such column in table %q", m.CQRSID, mp.From, mp.To, m.Table)
			}
		}
		m.Fields = fields
	}
	return nil
}

func bindFields(ctx context.Context, q sqlx.QueryerContext, d dialect.Dialect, kind, id, table string, declared []Field, revCol, updCol string, master bool) ([]Field, error) {
	cols, err := d.Columns(ctx, q, table)
	if err != nil {
		return nil, fmt.Errorf("registry: %s model %q: %w", kind, id, err)
	}
	byName := map[string]dialect.Column{}
	for _, c := range cols {
		byName[c.Name] = c
	}
	for _, sc := range []string{revCol, updCol} {
		if _, ok := byName[sc]; !ok {
			return nil, fmt.Errorf("registry: %s model %q: table %q has no sync column %q", kind, id, table, sc)
		}
	}
	if len(declared) == 0 {
		var out []Field
		for _, c := range cols {
			if c.Name == revCol || c.Name == updCol {
				continue
			}
			out = append(out, Field{Name: c.Name, Kind: c.Kind, Nullable: c.Nullable, HasDefault: c.HasDefault, Scale: c.Scale,
				ArrayElem: c.ArrayElem})
		}
		return out, nil
	}
	out := slices.Clone(declared)
	for i, f := range out {
		c, ok := byName[f.ColumnName()]
		if !ok {
			return nil, fmt.Errorf("registry: %s model %q: field %q: table %q has no column %q", kind, id, f.Name, table, f.ColumnName())
		}
		if f.Kind == dialect.KindAuto {
			out[i].Kind = c.Kind
		}
		out[i].Nullable = c.Nullable
		out[i].HasDefault = c.HasDefault
		out[i].Scale = c.Scale
		out[i].ArrayElem = c.ArrayElem
	}
	return out, nil
}
