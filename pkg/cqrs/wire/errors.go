package wire

import (
	"fmt"
	"strconv"
	"strings"
)

// DecodeReason classifies why Decode rejected a body. A consumer maps it to
// django-cqrs's outcomes: ReasonInvalidJSON is "couldn't be parsed",
// ReasonMissingKey is "couldn't proceed" (both rejected without requeue),
// ReasonBadValue is a body django-cqrs would accept and then fail on.
type DecodeReason int

// The decode failure reasons.
const (
	// ReasonInvalidJSON: the body is not JSON, not UTF-8, nested too deep,
	// or its top-level value is not an object.
	ReasonInvalidJSON DecodeReason = iota + 1
	// ReasonMissingKey: one of signal_type, cqrs_id, instance_data or
	// instance_pk is absent (instance_pk may be null, but must be present).
	ReasonMissingKey
	// ReasonBadValue: a known key holds a value of the wrong type or an
	// unparseable one (instance_data not an object, retries not a
	// non-negative integer, expires not a datetime, ...).
	ReasonBadValue
)

// String returns the reason's name.
func (r DecodeReason) String() string {
	switch r {
	case ReasonInvalidJSON:
		return "invalid JSON"
	case ReasonMissingKey:
		return "missing key"
	case ReasonBadValue:
		return "bad value"
	}
	return "DecodeReason(" + strconv.Itoa(int(r)) + ")"
}

// DecodeError is the error Decode, DecodeFields and DecodeValue return for a
// body they reject. Key names the envelope key at fault (empty for
// ReasonInvalidJSON); Err holds the detail, if any.
type DecodeError struct {
	Reason DecodeReason
	Key    string
	Err    error
}

// Error says what was wrong and with which key.
func (e *DecodeError) Error() string {
	var b strings.Builder
	b.WriteString("wire: decode: ")
	switch e.Reason {
	case ReasonMissingKey:
		b.WriteString("missing required key ")
		b.WriteString(strconv.Quote(e.Key))
	case ReasonBadValue:
		b.WriteString("bad value for key ")
		b.WriteString(strconv.Quote(e.Key))
	default:
		b.WriteString(e.Reason.String())
		if e.Key != "" {
			b.WriteString(" in key ")
			b.WriteString(strconv.Quote(e.Key))
		}
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying detail error.
func (e *DecodeError) Unwrap() error { return e.Err }

// syntaxError is the detail of a ReasonInvalidJSON DecodeError: what was
// wrong and the byte offset where the decoder noticed it.
type syntaxError struct {
	msg    string
	offset int
}

func (e *syntaxError) Error() string {
	return e.msg + " at offset " + strconv.Itoa(e.offset)
}

// pathError is an encoding failure inside a nested value; path is the
// dotted/indexed location (payload.list[2]).
type pathError struct {
	path string
	err  error
}

func (e *pathError) Error() string { return e.path + ": " + e.err.Error() }

func (e *pathError) Unwrap() error { return e.err }

// atKey prefixes err's location with an object key.
func atKey(err error, key string) error {
	if pe, ok := err.(*pathError); ok {
		if strings.HasPrefix(pe.path, "[") {
			pe.path = key + pe.path
		} else {
			pe.path = key + "." + pe.path
		}
		return pe
	}
	return &pathError{path: key, err: err}
}

// atIndex prefixes err's location with an array index.
func atIndex(err error, i int) error {
	seg := "[" + strconv.Itoa(i) + "]"
	if pe, ok := err.(*pathError); ok {
		if strings.HasPrefix(pe.path, "[") {
			pe.path = seg + pe.path
		} else {
			pe.path = seg + "." + pe.path
		}
		return pe
	}
	return &pathError{path: seg, err: err}
}

// UnsupportedTypeError is returned by the encoder for a value whose Go type
// has no JSON form in django-cqrs's wire format (structs, channels,
// functions, maps with non-string keys, ...).
type UnsupportedTypeError struct {
	// Type is the Go type, as fmt's %T prints it.
	Type string
}

// Error names the type.
func (e *UnsupportedTypeError) Error() string {
	return "unsupported value type " + e.Type
}

func unsupported(v any) error { return &UnsupportedTypeError{Type: fmt.Sprintf("%T", v)} }
