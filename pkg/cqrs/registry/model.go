// Package registry holds the declarations of master and replica models: which
// table backs a cqrs_id, its primary key, its fields and their kinds, the
// master→replica mapping and the hooks that customise serialisation and apply.
//
// Models are declared in Go (struct literals, with [FieldsOf] deriving the
// fields of a struct with `db` tags) or from configuration
// (table-only declarations). [Registry] rejects bad declarations when they are
// added, and [Registry.Bind] checks them against the real tables.
package registry

import (
	"context"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// Default names of the two sync columns every master and replica table has.
const (
	DefaultRevisionColumn = "cqrs_revision"
	DefaultUpdatedColumn  = "cqrs_updated"
)

// Field is one serialised field of a master model, or one column of a replica model.
type Field struct {
	// Name is the key in instance_data (master) or the column name (replica).
	Name string
	// Column is the table column on the master side; empty means Name.
	Column string
	// Kind decides the wire and SQL format; KindAuto takes it from the table.
	Kind dialect.Kind
	// Nullable is filled in by Bind from the table (replica: decides whether
	// the field may be missing from instance_data).
	Nullable bool
	// HasDefault is filled in by Bind from the table.
	HasDefault bool
	// Scale is filled in by Bind: the decimal places of a decimal column
	// (values are rounded to it, half to even, as Django does), -1 for none.
	Scale int
	// ArrayElem is filled in by Bind: the element type of a PostgreSQL
	// array column ("int4" for integer[], "text", "jsonb"...), whose values
	// are lists on the wire; "" for other columns.
	ArrayElem string
}

// ColumnName returns Column, or Name when Column is empty.
func (f Field) ColumnName() string {
	if f.Column != "" {
		return f.Column
	}
	return f.Name
}

// Event describes a master change being turned into a message; it is what
// correlation and meta functions receive.
type Event struct {
	Signal wire.SignalType
	CQRSID string
	PK     any
	// Queue is the target replica queue of a direct SYNC, empty otherwise.
	Queue string
}

// MasterModel declares a table whose changes gocqrs publishes.
type MasterModel struct {
	// CQRSID names the entity type on the wire, e.g. "author".
	CQRSID string
	// Table is the SQL table, optionally schema-qualified.
	Table string
	// PK is the primary key field's Name (its instance_data key, e.g. "id" or "code").
	PK string
	// Fields lists the serialised fields in order, without the two sync
	// columns. Empty means every column of the table, in table order (Bind).
	Fields []Field
	// RevisionColumn and UpdatedColumn default to cqrs_revision and cqrs_updated.
	RevisionColumn string
	UpdatedColumn  string
	// TrackedFields are field names whose old values go into previous_data
	// (django-cqrs's CQRS_TRACKED_FIELDS).
	TrackedFields []string
	// Serialize, when set, replaces the default instance_data (CQRS_SERIALIZER).
	// It gets the row as read in the transaction (fields by Name, sync fields
	// included) and returns the instance_data to send.
	Serialize func(ctx context.Context, tx *sqlx.Tx, row *wire.Fields) (*wire.Fields, error)
	// DeleteData, when set, adds its result under "custom" to DELETE
	// messages (get_custom_cqrs_delete_data). It gets the row before deletion.
	DeleteData func(ctx context.Context, tx *sqlx.Tx, row *wire.Fields) (any, error)
	// IsSyncInstance, when set, decides which rows produce messages at all
	// (django-cqrs's is_sync_instance): a row it rejects sends no SAVE,
	// DELETE or SYNC, though its revision is still bumped.
	IsSyncInstance func(row *wire.Fields) bool
	// ProduceOff stops this model from publishing (CQRS_PRODUCE = False); the
	// revision is still bumped.
	ProduceOff bool
	// Correlation and Meta override the master-wide functions for this model.
	Correlation func(ctx context.Context, ev Event) any
	Meta        func(ctx context.Context, ev Event, row *wire.Fields) any
}

// ApplyContext is what replica hooks receive.
type ApplyContext struct {
	// Tx is the replica transaction (nil for raw replicas).
	Tx *sqlx.Tx
	// Dialect of the replica database.
	Dialect dialect.Dialect
	// Model is the replica model being applied.
	Model *ReplicaModel
	// Payload is the whole message.
	Payload *wire.Payload
	// Sync is true for SYNC messages.
	Sync bool
	// Meta is the payload's meta, delivered only when the model asks for it
	// (ReplicaModel.DeliverMeta); nil otherwise.
	Meta any
}

// ReplicaHooks customise how a replica model applies messages. Any hook left
// nil does the default (SQL insert / update / delete). data is instance_data
// after mapping: keys are replica column names, only the model's columns, and
// the sync columns included.
type ReplicaHooks struct {
	Create func(ctx context.Context, ac *ApplyContext, data *wire.Fields) error
	Update func(ctx context.Context, ac *ApplyContext, existing, data *wire.Fields) error
	Delete func(ctx context.Context, ac *ApplyContext, pk any) error
}

// RawHandlers handle a replica model that has no table (django-cqrs's
// CQRS_NO_DB_OPERATIONS): they receive every message, unmapped, and decide
// everything. Save gets SAVE and SYNC.
type RawHandlers struct {
	Save   func(ctx context.Context, ac *ApplyContext) error
	Delete func(ctx context.Context, ac *ApplyContext) error
}

// Mapping maps one master instance_data key to a replica column
// (CQRS_MAPPING).
type Mapping struct {
	From string // master key
	To   string // replica column
}

// ReplicaModel declares a table (or raw handlers) that applies a cqrs_id's messages.
type ReplicaModel struct {
	CQRSID string
	// Table is the replica table; empty with Raw set.
	Table string
	// PK is the replica's primary key column.
	PK string
	// Fields lists the replica columns without the sync columns; empty means
	// every column of the table (Bind).
	Fields []Field
	// Mapping, when set, is exactly which master keys land in which columns;
	// a mapped key missing from a message is an error ("Bad master-replica
	// mapping"). Without it, keys land in the columns of the same name.
	Mapping []Mapping
	// RevisionColumn and UpdatedColumn default to cqrs_revision and cqrs_updated.
	RevisionColumn string
	UpdatedColumn  string
	// SelectForUpdate locks the existing row while applying (CQRS_SELECT_FOR_UPDATE).
	SelectForUpdate bool
	// OnlyDirectSyncs applies SYNCs only when aimed at this replica's queue
	// (CQRS_ONLY_DIRECT_SYNCS); broadcast SYNCs are acknowledged and ignored.
	OnlyDirectSyncs bool
	// DeliverMeta passes the payload's meta to the hooks (CQRS_META).
	DeliverMeta bool
	// Hooks override create, update or delete.
	Hooks ReplicaHooks
	// Raw, when Save or Delete is set, makes this a raw replica with no table.
	Raw RawHandlers
}

// IsRaw reports whether the model has no table and is handled by Raw.
func (m *ReplicaModel) IsRaw() bool {
	return m.Raw.Save != nil || m.Raw.Delete != nil
}
