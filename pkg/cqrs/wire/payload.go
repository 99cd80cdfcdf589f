// Package wire is django-cqrs's message format: the JSON envelope every master
// publishes and every replica consumes, the ordered field maps inside it, and
// the Python-flavoured value formats (str(datetime), float reprs, ujson
// escaping) that make gocqrs bodies byte-compatible with django-cqrs's.
package wire

import (
	"encoding/json"
	"time"
)

// SignalType is the kind of change a message carries.
type SignalType string

// The signal types django-cqrs defines.
const (
	SignalSave   SignalType = "SAVE"
	SignalDelete SignalType = "DELETE"
	SignalSync   SignalType = "SYNC"
)

// Valid reports whether s is SAVE, DELETE or SYNC.
func (s SignalType) Valid() bool {
	return s == SignalSave || s == SignalDelete || s == SignalSync
}

// Names of the sync fields every instance_data carries.
const (
	RevisionKey = "cqrs_revision"
	UpdatedKey  = "cqrs_updated"
)

// Payload is one django-cqrs message body. Its JSON form has the nine keys
// signal_type, cqrs_id, instance_data, previous_data, instance_pk,
// correlation_id, retries, expires and meta, in that order.
type Payload struct {
	SignalType SignalType
	CQRSID     string
	// InstanceData holds the row's fields plus cqrs_revision and cqrs_updated
	// (for DELETE: id, cqrs_revision, cqrs_updated and optionally custom).
	InstanceData *Fields
	// PreviousData is nil for JSON null; an empty non-nil Fields is {}.
	PreviousData *Fields
	// InstancePK is the primary key: nil (JSON null), json.Number, string,
	// or any integer type on the encoding side.
	InstancePK any
	// CorrelationID is whatever the master's correlation function returned
	// (usually a string), or nil.
	CorrelationID any
	// Retries counts the replica-side retries so far.
	Retries int
	// Expires is nil for JSON null: the message never expires.
	Expires *time.Time
	// Meta is the master's meta function result: usually a map or *Fields;
	// nil is encoded as null.
	Meta any
}

// Revision returns instance_data's cqrs_revision as an int64, and whether it
// is present and an integer.
func (p *Payload) Revision() (int64, bool) {
	if p == nil || p.InstanceData == nil {
		return 0, false
	}
	v, ok := p.InstanceData.Get(RevisionKey)
	if !ok {
		return 0, false
	}
	return AsInt64(v)
}

// AsInt64 converts a decoded or Go-side integer value to int64.
func AsInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case int:
		return int64(n), true
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		if n > 1<<63-1 {
			return 0, false
		}
		return int64(n), true
	case float64:
		if n == float64(int64(n)) {
			return int64(n), true
		}
	}
	return 0, false
}
