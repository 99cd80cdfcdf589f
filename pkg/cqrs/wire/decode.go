package wire

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Envelope key names.
const (
	KeySignalType    = "signal_type"
	KeyCQRSID        = "cqrs_id"
	KeyInstanceData  = "instance_data"
	KeyPreviousData  = "previous_data"
	KeyInstancePK    = "instance_pk"
	KeyCorrelationID = "correlation_id"
	KeyRetries       = "retries"
	KeyExpires       = "expires"
	KeyMeta          = "meta"
)

// envelope slot indexes, in wire order.
const (
	slotSignalType = iota
	slotCQRSID
	slotInstanceData
	slotPreviousData
	slotInstancePK
	slotCorrelationID
	slotRetries
	slotExpires
	slotMeta
	numSlots
)

var slotKeys = [numSlots]string{
	KeySignalType, KeyCQRSID, KeyInstanceData, KeyPreviousData, KeyInstancePK,
	KeyCorrelationID, KeyRetries, KeyExpires, KeyMeta,
}

func slotOf(key string) int {
	switch key {
	case KeySignalType:
		return slotSignalType
	case KeyCQRSID:
		return slotCQRSID
	case KeyInstanceData:
		return slotInstanceData
	case KeyPreviousData:
		return slotPreviousData
	case KeyInstancePK:
		return slotInstancePK
	case KeyCorrelationID:
		return slotCorrelationID
	case KeyRetries:
		return slotRetries
	case KeyExpires:
		return slotExpires
	case KeyMeta:
		return slotMeta
	}
	return -1
}

// Decode parses a django-cqrs body. It is tolerant where django-cqrs is:
// "\/" and \uXXXX escapes, surrogate pairs, integers of any size (kept as
// json.Number), raw control characters inside strings, unknown top-level
// keys (ignored), duplicate keys (the last value wins, at the first
// position, as in a Python dict). Nested objects become *Fields keeping
// their key order, arrays []any.
//
// signal_type, cqrs_id, instance_data and instance_pk must be present
// (instance_pk may be null). previous_data, correlation_id, retries, meta and
// expires are optional; a missing or null expires means the message never
// expires (where django-cqrs's replica crashes), a missing or null retries is
// 0. expires accepts everything ParseDateTime does; a naive one is UTC.
// signal_type is not checked against SAVE/DELETE/SYNC.
//
// Errors are *DecodeError: ReasonInvalidJSON (not JSON, invalid UTF-8, not an
// object, nested deeper than 1024), then ReasonMissingKey, then
// ReasonBadValue (signal_type or cqrs_id not a string, instance_data not an
// object, previous_data neither object nor null, retries not a non-negative
// integer, expires neither null nor a datetime string).
//
// A lone UTF-16 surrogate escape ("\ud800" not followed by a low surrogate,
// or an unpaired "\udc00") decodes to U+FFFD, as in encoding/json.
func Decode(body []byte) (*Payload, error) {
	d := decoder{data: string(body)}
	var vals [numSlots]any
	var seen [numSlots]bool
	if err := d.envelope(&vals, &seen); err != nil {
		return nil, &DecodeError{Reason: ReasonInvalidJSON, Err: err}
	}
	for _, s := range [...]int{slotSignalType, slotCQRSID, slotInstanceData, slotInstancePK} {
		if !seen[s] {
			return nil, &DecodeError{Reason: ReasonMissingKey, Key: slotKeys[s]}
		}
	}
	p := &Payload{
		InstancePK:    vals[slotInstancePK],
		CorrelationID: vals[slotCorrelationID],
		Meta:          vals[slotMeta],
	}
	bad := func(s int, format string, args ...any) error {
		return &DecodeError{Reason: ReasonBadValue, Key: slotKeys[s], Err: fmt.Errorf(format, args...)}
	}
	st, ok := vals[slotSignalType].(string)
	if !ok {
		return nil, bad(slotSignalType, "want a string, got %s", kindOf(vals[slotSignalType]))
	}
	p.SignalType = SignalType(st)
	if p.CQRSID, ok = vals[slotCQRSID].(string); !ok {
		return nil, bad(slotCQRSID, "want a string, got %s", kindOf(vals[slotCQRSID]))
	}
	if p.InstanceData, ok = vals[slotInstanceData].(*Fields); !ok {
		return nil, bad(slotInstanceData, "want an object, got %s", kindOf(vals[slotInstanceData]))
	}
	if v := vals[slotPreviousData]; v != nil {
		if p.PreviousData, ok = v.(*Fields); !ok {
			return nil, bad(slotPreviousData, "want an object or null, got %s", kindOf(v))
		}
	}
	if v := vals[slotRetries]; v != nil {
		n, isNum := v.(json.Number)
		r, err := strconv.Atoi(string(n))
		if !isNum || err != nil || r < 0 {
			return nil, bad(slotRetries, "want a non-negative integer, got %s", describe(v))
		}
		p.Retries = r
	}
	if v := vals[slotExpires]; v != nil {
		s, isStr := v.(string)
		if !isStr {
			return nil, bad(slotExpires, "want a datetime string or null, got %s", kindOf(v))
		}
		t, _, err := ParseDateTime(s)
		if err != nil {
			return nil, &DecodeError{Reason: ReasonBadValue, Key: KeyExpires, Err: err}
		}
		p.Expires = &t
	}
	return p, nil
}

// DecodeFields parses one JSON object (e.g. a line of a cqrs_bulk_dump
// stream) into an ordered Fields, with Decode's value rules.
func DecodeFields(data []byte) (*Fields, error) {
	v, err := DecodeValue(data)
	if err != nil {
		return nil, err
	}
	f, ok := v.(*Fields)
	if !ok {
		return nil, &DecodeError{Reason: ReasonInvalidJSON, Err: fmt.Errorf("want a JSON object, got %s", kindOf(v))}
	}
	return f, nil
}

// DecodeValue parses one JSON value with Decode's rules: nil, bool, string,
// json.Number, []any or *Fields.
func DecodeValue(data []byte) (any, error) {
	d := decoder{data: string(data)}
	d.skipWS()
	v, err := d.value()
	if err == nil {
		err = d.end()
	}
	if err != nil {
		return nil, &DecodeError{Reason: ReasonInvalidJSON, Err: err}
	}
	return v, nil
}

// UnmarshalJSON replaces f's contents with the JSON object in data, keeping
// its key order.
func (f *Fields) UnmarshalJSON(data []byte) error {
	g, err := DecodeFields(data)
	if err != nil {
		return err
	}
	*f = *g
	return nil
}

// MarshalJSON returns Encode(p).
func (p *Payload) MarshalJSON() ([]byte, error) { return Encode(p) }

// UnmarshalJSON decodes data with Decode into p.
func (p *Payload) UnmarshalJSON(data []byte) error {
	q, err := Decode(data)
	if err != nil {
		return err
	}
	*p = *q
	return nil
}

// kindOf names a decoded value's JSON type for error messages.
func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case []any:
		return "an array"
	case *Fields:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// describe is kindOf plus the value for scalars.
func describe(v any) string {
	switch x := v.(type) {
	case json.Number:
		return "number " + string(x)
	case string:
		return "string " + strconv.Quote(x)
	case bool:
		return "boolean " + strconv.FormatBool(x)
	}
	return kindOf(v)
}
