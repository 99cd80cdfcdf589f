package master

import (
	"database/sql"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

// sameScannedValue says "the same" only for values toWire serialises alike,
// and says it for the common pairs of a bound value and the value read back
// (so that Insert's one statement skips serialising the row twice).
func TestSameScannedValueAgreesWithToWire(t *testing.T) {
	at := time.Date(2026, 11, 28, 23, 30, 0, 123000, time.UTC)
	east := time.FixedZone("east", 3*3600)
	values := []any{nil, "", "4.5", "4.50", "7", "true", "t", "2026-11-28", int64(7), int32(7), 7, uint64(7), float64(7), float64(4.5),
		true, false, []byte("7"), []byte("4.50"), at, at.In(east), at.Add(time.Microsecond), sql.NullString{String: "x", Valid: true}}
	kinds := []dialect.Kind{dialect.KindInt, dialect.KindString, dialect.KindFloat, dialect.KindDecimal, dialect.KindBool,
		dialect.KindDate, dialect.KindDateTime, dialect.KindBytes}
	for _, kind := range kinds {
		for _, a := range values {
			for _, b := range values {
				if !sameScannedValue(kind, a, b) {
					continue
				}
				wa, errA := toWire(kind, a)
				wb, errB := toWire(kind, b)
				if (errA == nil) != (errB == nil) || !sameValue(wa, wb) {
					t.Errorf("kind %v: %#v and %#v called the same, serialised %#v (%v) and %#v (%v)", kind, a, b, wa, errA, wb, errB)
				}
			}
		}
	}
	for _, c := range []struct {
		kind dialect.Kind
		a, b any
		want bool
	}{
		{dialect.KindInt, 7, int64(7), true},
		{dialect.KindString, "author 7", "author 7", true},
		{dialect.KindDecimal, "4.50", "4.50", true},
		{dialect.KindDecimal, "4.5", "4.50", false},
		{dialect.KindBool, true, true, true},
		{dialect.KindDateTime, at, at.In(time.Local), true},
		{dialect.KindDate, at, at.In(east), false},
		{dialect.KindFloat, 7, int64(7), false},
		{dialect.KindString, nil, nil, true},
		{dialect.KindString, nil, "", false},
		{dialect.KindString, sql.NullString{String: "x", Valid: true}, sql.NullString{String: "x", Valid: true}, false},
	} {
		if got := sameScannedValue(c.kind, c.a, c.b); got != c.want {
			t.Errorf("sameScannedValue(%v, %#v, %#v) = %v, want %v", c.kind, c.a, c.b, got, c.want)
		}
	}
}
