package replica

import (
	"errors"
	"fmt"
)

// Sentinel errors wrapped by the errors Apply returns. Their text is
// django-cqrs's log wording, so operators recognise them.
var (
	// ErrUnknownModel: the message's cqrs_id has no replica model. This is
	// the one error that does not mean "retry later": the consumer drops the
	// message (django-cqrs nacks it without requeue).
	ErrUnknownModel = errors.New("No model with such CQRS_ID")
	// ErrBadSignal: signal_type is not SAVE, DELETE or SYNC.
	ErrBadSignal = errors.New("Bad signal type")
	// ErrSyncFields: instance_data lacks cqrs_revision or cqrs_updated, or
	// they are not an integer and a datetime.
	ErrSyncFields = errors.New("CQRS sync fields are not provided")
	// ErrRequiredFields: a NOT NULL column without a default is missing from
	// the (mapped) instance_data.
	ErrRequiredFields = errors.New("Not all required CQRS fields are provided")
	// ErrBadMapping: a master key named in the model's Mapping is missing.
	ErrBadMapping = errors.New("Bad master-replica mapping")
	// ErrNoPK: the primary key is missing from instance_data (for DELETE:
	// the "id" key).
	ErrNoPK = errors.New("CQRS PK is not provided")
	// ErrBadValue: a value cannot be converted to its column's kind.
	ErrBadValue = errors.New("bad CQRS value")
)

// where names the message an error is about: "(author, pk = 1)".
func where(cqrsID string, pk any) string {
	return fmt.Sprintf("(%s, pk = %s)", cqrsID, pkString(pk))
}

func pkString(pk any) string {
	switch v := pk.(type) {
	case nil:
		return "None"
	case string:
		return v
	case []byte:
		return string(v)
	}
	return fmt.Sprint(pk)
}
