package wire

import (
	"fmt"
	"strings"
)

// NormalizeUUID returns a UUID in the canonical form django-cqrs puts on the
// wire (str(uuid.UUID)): lowercase, hyphenated 8-4-4-4-12. Like Python's
// uuid.UUID it accepts upper case, surrounding braces, a "urn:uuid:" prefix
// and hyphens anywhere or none, as long as 32 hex digits remain.
func NormalizeUUID(s string) (string, error) {
	h := strings.TrimSpace(s)
	if len(h) >= 9 && strings.EqualFold(h[:9], "urn:uuid:") {
		h = h[9:]
	}
	h = strings.TrimPrefix(strings.TrimSuffix(h, "}"), "{")
	var out [36]byte
	n := 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c == '-':
			continue
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			c += 'a' - 'A'
		default:
			return "", fmt.Errorf("wire: normalize UUID %q: invalid character %q", s, c)
		}
		if n == 32 {
			return "", fmt.Errorf("wire: normalize UUID %q: more than 32 hex digits", s)
		}
		pos := n
		switch {
		case n >= 20:
			pos += 4
		case n >= 16:
			pos += 3
		case n >= 12:
			pos += 2
		case n >= 8:
			pos++
		}
		out[pos] = c
		n++
	}
	if n != 32 {
		return "", fmt.Errorf("wire: normalize UUID %q: want 32 hex digits, got %d", s, n)
	}
	out[8], out[13], out[18], out[23] = '-', '-', '-', '-'
	return string(out[:]), nil
}
