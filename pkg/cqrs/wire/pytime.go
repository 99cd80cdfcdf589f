package wire

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// FormatPyDateTime returns Python's str() of an aware datetime:
// "2024-01-02 03:04:05.678901+00:00", without the fraction when the
// microseconds are 0 ("2024-06-30 23:59:59+00:00"). The offset is t's own
// (call t.UTC() first for "+00:00"); an offset with seconds is written
// "+HH:MM:SS" as Python does. Nanoseconds are truncated to microseconds.
// Years outside 1..9999, which Python cannot represent, are written with at
// least four digits.
func FormatPyDateTime(t time.Time) string {
	return string(appendPyDateTime(make([]byte, 0, 32), t, ' ', true, true))
}

// FormatPyNaiveDateTime returns Python's str() of a naive datetime holding
// t's wall clock: "2024-03-04 05:06:07.890000", no offset.
func FormatPyNaiveDateTime(t time.Time) string {
	return string(appendPyDateTime(make([]byte, 0, 32), t, ' ', true, false))
}

// FormatExpires returns the form django-cqrs gives "expires":
// expires.replace(microsecond=0).isoformat(), e.g. "2026-11-28T09:43:59+00:00",
// with t's own offset.
func FormatExpires(t time.Time) string {
	return string(appendPyDateTime(make([]byte, 0, 25), t, 'T', false, true))
}

// FormatDate returns a date as Python's str(date): "YYYY-MM-DD".
func FormatDate(t time.Time) string {
	return string(appendDate(make([]byte, 0, 10), t))
}

// appendPyDateTime writes t as Python would: date, sep, time, an optional
// ".ffffff" (only when frac is set and the microseconds are not 0) and an
// optional offset.
func appendPyDateTime(dst []byte, t time.Time, sep byte, frac, offset bool) []byte {
	dst = appendDate(dst, t)
	dst = append(dst, sep)
	dst = append2(dst, t.Hour())
	dst = append(dst, ':')
	dst = append2(dst, t.Minute())
	dst = append(dst, ':')
	dst = append2(dst, t.Second())
	if us := t.Nanosecond() / 1000; frac && us != 0 {
		dst = append(dst, '.')
		dst = appendPadded(dst, us, 6)
	}
	if offset {
		_, off := t.Zone()
		dst = appendOffset(dst, off)
	}
	return dst
}

func appendDate(dst []byte, t time.Time) []byte {
	y, m, d := t.Date()
	if y < 0 {
		dst = append(dst, '-')
		y = -y
	}
	dst = appendPadded(dst, y, 4)
	dst = append(dst, '-')
	dst = append2(dst, int(m))
	dst = append(dst, '-')
	return append2(dst, d)
}

// appendOffset writes a UTC offset in seconds as Python's isoformat does:
// "+HH:MM", or "+HH:MM:SS" when it has seconds.
func appendOffset(dst []byte, off int) []byte {
	sign := byte('+')
	if off < 0 {
		sign = '-'
		off = -off
	}
	dst = append(dst, sign)
	dst = append2(dst, off/3600)
	dst = append(dst, ':')
	dst = append2(dst, off%3600/60)
	if s := off % 60; s != 0 {
		dst = append(dst, ':')
		dst = append2(dst, s)
	}
	return dst
}

func append2(dst []byte, n int) []byte {
	return append(dst, byte('0'+n/10%10), byte('0'+n%10))
}

// appendPadded writes a non-negative n with at least width digits.
func appendPadded(dst []byte, n, width int) []byte {
	var buf [20]byte
	i := len(buf)
	for n >= 10 || width > 1 {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		width--
	}
	i--
	buf[i] = byte('0' + n)
	return append(dst, buf[i:]...)
}

// ParseDateTime parses the datetime forms django-cqrs masters and replicas
// produce or accept: Python str() ("2026-01-01 10:00:00.123456+00:00"),
// isoformat ("2026-01-01T10:00:00+00:00"), with a fraction of any length (kept
// to nanoseconds), "Z", an offset "+HH:MM", "+HHMM", "+HH" or "+HH:MM:SS",
// optional seconds, and a naive form without offset. A bare date
// "2026-01-01" is midnight. naive reports that s had no offset; the time is
// then taken as UTC, as django-cqrs's replica does. Surrounding spaces are
// ignored.
func ParseDateTime(s string) (t time.Time, naive bool, err error) {
	p := dtParser{s: strings.TrimSpace(s)}
	t, naive, err = p.parse()
	if err != nil {
		return time.Time{}, false, fmt.Errorf("wire: parse datetime %q: %w", s, err)
	}
	return t, naive, nil
}

// ParseDate parses "YYYY-MM-DD" (month and day may have one digit, as
// Django's parse_date allows) into midnight UTC.
func ParseDate(s string) (time.Time, error) {
	p := dtParser{s: s}
	y, m, d, err := p.date()
	if err == nil && p.i != len(p.s) {
		err = errors.New("unexpected text after the date")
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("wire: parse date %q: %w", s, err)
	}
	return time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC), nil
}

type dtParser struct {
	s string
	i int
}

// digits reads between min and max ASCII digits.
func (p *dtParser) digits(min, max int, what string) (int, error) {
	n, start := 0, p.i
	for p.i < len(p.s) && p.i-start < max && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		n = n*10 + int(p.s[p.i]-'0')
		p.i++
	}
	if p.i-start < min {
		return 0, fmt.Errorf("want %s at position %d", what, start)
	}
	return n, nil
}

func (p *dtParser) char(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *dtParser) date() (y, m, d int, err error) {
	if y, err = p.digits(4, 4, "a four-digit year"); err != nil {
		return
	}
	if !p.char('-') {
		return 0, 0, 0, fmt.Errorf("want '-' at position %d", p.i)
	}
	if m, err = p.digits(1, 2, "a month"); err != nil {
		return
	}
	if !p.char('-') {
		return 0, 0, 0, fmt.Errorf("want '-' at position %d", p.i)
	}
	if d, err = p.digits(1, 2, "a day"); err != nil {
		return
	}
	if y < 1 {
		return 0, 0, 0, errors.New("year 0 is out of range")
	}
	if m < 1 || m > 12 {
		return 0, 0, 0, fmt.Errorf("month %d is out of range", m)
	}
	if d < 1 || d > daysIn(y, m) {
		return 0, 0, 0, fmt.Errorf("day %d is out of range for %04d-%02d", d, y, m)
	}
	return y, m, d, nil
}

func daysIn(y, m int) int {
	return time.Date(y, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

func (p *dtParser) parse() (time.Time, bool, error) {
	y, mo, d, err := p.date()
	if err != nil {
		return time.Time{}, false, err
	}
	if p.i == len(p.s) {
		return time.Date(y, time.Month(mo), d, 0, 0, 0, 0, time.UTC), true, nil
	}
	if c := p.s[p.i]; c != 'T' && c != 't' && c != ' ' {
		return time.Time{}, false, fmt.Errorf("want 'T' or ' ' at position %d", p.i)
	}
	p.i++
	h, err := p.digits(1, 2, "an hour")
	if err != nil {
		return time.Time{}, false, err
	}
	if !p.char(':') {
		return time.Time{}, false, fmt.Errorf("want ':' at position %d", p.i)
	}
	mi, err := p.digits(1, 2, "minutes")
	if err != nil {
		return time.Time{}, false, err
	}
	var sec, nsec int
	if p.char(':') {
		if sec, err = p.digits(1, 2, "seconds"); err != nil {
			return time.Time{}, false, err
		}
		if p.char('.') || p.char(',') {
			start := p.i
			scale := 100000000
			for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
				nsec += int(p.s[p.i]-'0') * scale
				scale /= 10
				p.i++
			}
			if p.i == start {
				return time.Time{}, false, fmt.Errorf("want fraction digits at position %d", p.i)
			}
		}
	}
	if h > 23 || mi > 59 || sec > 59 {
		return time.Time{}, false, fmt.Errorf("time %02d:%02d:%02d is out of range", h, mi, sec)
	}
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
	loc, naive, err := p.zone()
	if err != nil {
		return time.Time{}, false, err
	}
	if p.i != len(p.s) {
		return time.Time{}, false, fmt.Errorf("unexpected text at position %d", p.i)
	}
	return time.Date(y, time.Month(mo), d, h, mi, sec, nsec, loc), naive, nil
}

// zone reads "", "Z", or ±HH[[:]MM[:SS]].
func (p *dtParser) zone() (*time.Location, bool, error) {
	if p.i == len(p.s) {
		return time.UTC, true, nil
	}
	c := p.s[p.i]
	if c == 'Z' || c == 'z' {
		p.i++
		return time.UTC, false, nil
	}
	if c != '+' && c != '-' {
		return nil, false, fmt.Errorf("want an offset at position %d", p.i)
	}
	p.i++
	hh, err := p.digits(2, 2, "offset hours")
	if err != nil {
		return nil, false, err
	}
	var mm, ss int
	colon := p.char(':')
	if colon || p.i < len(p.s) {
		if mm, err = p.digits(2, 2, "offset minutes"); err != nil {
			return nil, false, err
		}
		if colon && p.char(':') {
			if ss, err = p.digits(2, 2, "offset seconds"); err != nil {
				return nil, false, err
			}
		}
	}
	if hh > 23 || mm > 59 || ss > 59 {
		return nil, false, fmt.Errorf("offset %02d:%02d is out of range", hh, mm)
	}
	off := hh*3600 + mm*60 + ss
	if off == 0 {
		return time.UTC, false, nil
	}
	if c == '-' {
		off = -off
	}
	return time.FixedZone("", off), false, nil
}
