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
	vals []any          // vals[i] is keys[i]'s value
	idx  map[string]int // key → position, kept once there are more than linearKeys keys
}

// linearKeys is how many keys Fields looks up by scanning: a CQRS payload
// has a few to a few dozen, and a scan of short strings is cheaper than a
// map's hashing and allocation.
const linearKeys = 16

// NewFields returns an empty Fields.
func NewFields() *Fields { return &Fields{} }

// FieldsOf builds a Fields from alternating keys and values:
// FieldsOf("id", 1, "name", "x").
func FieldsOf(kv ...any) *Fields {
	f := &Fields{keys: make([]string, 0, len(kv)/2), vals: make([]any, 0, len(kv)/2)}
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		f.Set(k, kv[i+1])
	}
	return f
}

// find returns k's position, or -1.
func (f *Fields) find(k string) int {
	if f.idx != nil {
		if i, ok := f.idx[k]; ok {
			return i
		}
		return -1
	}
	for i, key := range f.keys {
		if key == k {
			return i
		}
	}
	return -1
}

// Set adds or replaces a key; a new key goes last.
func (f *Fields) Set(k string, v any) {
	if i := f.find(k); i >= 0 {
		f.vals[i] = v
		return
	}
	f.keys = append(f.keys, k)
	f.vals = append(f.vals, v)
	switch {
	case f.idx != nil:
		f.idx[k] = len(f.keys) - 1
	case len(f.keys) > linearKeys:
		f.index()
	}
}

// index builds the key index.
func (f *Fields) index() {
	f.idx = make(map[string]int, 2*len(f.keys))
	for i, key := range f.keys {
		f.idx[key] = i
	}
}

// Get returns a key's value and whether it is present.
func (f *Fields) Get(k string) (any, bool) {
	if f == nil {
		return nil, false
	}
	if i := f.find(k); i >= 0 {
		return f.vals[i], true
	}
	return nil, false
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
	i := f.find(k)
	if i < 0 {
		return
	}
	// A fresh array: Keys' callers may hold the old one.
	f.keys = append(f.keys[:i:i], f.keys[i+1:]...)
	f.vals = append(f.vals[:i:i], f.vals[i+1:]...)
	if f.idx != nil {
		f.index()
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
	c := &Fields{keys: append([]string(nil), f.keys...), vals: append([]any(nil), f.vals...)}
	if f.idx != nil {
		c.index()
	}
	return c
}

// Map returns the fields as a plain map (nested *Fields stay as they are).
func (f *Fields) Map() map[string]any {
	out := make(map[string]any, f.Len())
	if f != nil {
		for i, k := range f.keys {
			out[k] = f.vals[i]
		}
	}
	return out
}
