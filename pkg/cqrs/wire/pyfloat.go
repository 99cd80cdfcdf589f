package wire

import (
	"errors"
	"math"
	"strconv"
)

var errNonFinite = errors.New("NaN and infinite floats have no JSON form")

// FormatPyFloat returns Python's repr() of a float: the shortest digits that
// round-trip, ".0" on integral values (10.1, 1.0, 1234.56, 2.675,
// 0.30000000000000004, -0.0), and exponent form when the decimal exponent is
// below -4 or at least 16 ("1e+16", "1e-05"). NaN and infinities are an
// error.
//
// ujson, which writes django-cqrs bodies, differs from repr in one detail:
// it does not pad negative exponents ("1e-5", "1.5e-7"). The encoder
// (Encode, MarshalValue) writes ujson's form; FormatPyFloat is repr's.
func FormatPyFloat(f float64) (string, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", errNonFinite
	}
	return string(appendFloat(make([]byte, 0, 24), f, 64, true)), nil
}

// appendUJSONFloat writes f as ujson 5.7 does (double-conversion
// ToShortest: fixed notation for exponents -4..15, else "1e+16", "1e-5").
func appendUJSONFloat(dst []byte, f float64, bits int) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return dst, errNonFinite
	}
	return appendFloat(dst, f, bits, false), nil
}

// appendFloat writes the shortest round-trip form of f (as a float32 when
// bits is 32). pyExp selects Python's two-digit minimum exponent.
func appendFloat(dst []byte, f float64, bits int, pyExp bool) []byte {
	if f == 0 {
		if math.Signbit(f) {
			return append(dst, "-0.0"...)
		}
		return append(dst, "0.0"...)
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, bits)
	// e is "-d.ddde±XX": find the decimal exponent.
	ei := len(e) - 1
	for e[ei] != 'e' {
		ei--
	}
	exp, _ := strconv.Atoi(string(e[ei+1:]))
	if exp < -4 || exp >= 16 {
		if pyExp {
			return append(dst, e...)
		}
		dst = append(dst, e[:ei+2]...) // mantissa, 'e' and sign
		digits := e[ei+2:]
		for len(digits) > 1 && digits[0] == '0' {
			digits = digits[1:]
		}
		return append(dst, digits...)
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, 'f', -1, bits)
	for _, c := range dst[start:] {
		if c == '.' {
			return dst
		}
	}
	return append(dst, '.', '0')
}
