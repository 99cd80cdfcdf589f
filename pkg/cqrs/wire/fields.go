package wire

// Fields is a JSON object that keeps its keys in insertion order, as Python
// dicts do. Nested objects decoded from the wire are *Fields too, so a body
// re-encoded by gocqrs keeps django-cqrs's key order.
//
// Values are nil, bool, string, json.Number, []any or *Fields when decoded
// (Decode, DecodeFields, UnmarshalJSON); the encoder (Encode, MarshalValue,
// MarshalJSON) also accepts Go integers and floats, map[string]any (keys
// sorted), time.Time (Python str(datetime)), json.RawMessage (verbatim),
// []byte (as a string) and the other types MarshalValue lists.
type Fields struct {
	keys []string
	m    map[string]any
}

// NewFields returns an empty Fields.
func NewFields() *Fields { return &Fields{m: map[string]any{}} }

// FieldsOf builds a Fields from alternating keys and values:
// FieldsOf("id", 1, "name", "x").
func FieldsOf(kv ...any) *Fields {
	f := NewFields()
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		f.Set(k, kv[i+1])
	}
	return f
}

// Set adds or replaces a key; a new key goes last.
func (f *Fields) Set(k string, v any) {
	if f.m == nil {
		f.m = map[string]any{}
	}
	if _, ok := f.m[k]; !ok {
		f.keys = append(f.keys, k)
	}
	f.m[k] = v
}

// Get returns a key's value and whether it is present.
func (f *Fields) Get(k string) (any, bool) {
	if f == nil {
		return nil, false
	}
	v, ok := f.m[k]
	return v, ok
}

// Has reports whether k is present.
func (f *Fields) Has(k string) bool {
	_, ok := f.Get(k)
	return ok
}

// Delete removes a key.
func (f *Fields) Delete(k string) {
	if f == nil {
		return
	}
	if _, ok := f.m[k]; !ok {
		return
	}
	delete(f.m, k)
	for i, key := range f.keys {
		if key == k {
			f.keys = append(f.keys[:i:i], f.keys[i+1:]...)
			break
		}
	}
}

// Keys returns the keys in order. The slice must not be modified.
func (f *Fields) Keys() []string {
	if f == nil {
		return nil
	}
	return f.keys
}

// Len returns the number of keys.
func (f *Fields) Len() int {
	if f == nil {
		return 0
	}
	return len(f.keys)
}

// Clone returns a shallow copy.
func (f *Fields) Clone() *Fields {
	if f == nil {
		return nil
	}
	c := &Fields{keys: append([]string(nil), f.keys...), m: make(map[string]any, len(f.m))}
	for k, v := range f.m {
		c.m[k] = v
	}
	return c
}

// Map returns the fields as a plain map (nested *Fields stay as they are).
func (f *Fields) Map() map[string]any {
	out := make(map[string]any, f.Len())
	for _, k := range f.Keys() {
		out[k] = f.m[k]
	}
	return out
}
