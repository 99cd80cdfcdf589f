package wire_test

import (
	"fmt"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// Encode writes a SAVE exactly as a django-cqrs master would: envelope keys in
// django-cqrs's order, datetimes in Python's forms, floats like ujson, "/"
// and non-ASCII characters escaped.
func ExampleEncode() {
	updated := time.Date(2026, 11, 27, 9, 43, 57, 187664000, time.UTC)
	expires := updated.Add(24 * time.Hour)
	p := &wire.Payload{
		SignalType: wire.SignalSave,
		CQRSID:     "author",
		InstanceData: wire.FieldsOf(
			wire.RevisionKey, 0,
			wire.UpdatedKey, updated,
			"id", 1,
			"name", "Zoë / Ann",
			"birth_date", wire.FormatDate(time.Date(1990, 5, 17, 0, 0, 0, 0, time.UTC)),
			"rating", 10.1,
			"active", true,
		),
		PreviousData:  wire.FieldsOf("name", nil),
		InstancePK:    1,
		CorrelationID: "corr-1",
		Expires:       &expires,
		Meta:          map[string]any{"source": "master"},
	}
	body, err := wire.Encode(p)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(body))
	// Output:
	// {"signal_type":"SAVE","cqrs_id":"author","instance_data":{"cqrs_revision":0,"cqrs_updated":"2026-11-27 09:43:57.187664+00:00","id":1,"name":"Zo\u00eb \/ Ann","birth_date":"1990-05-17","rating":10.1,"active":true},"previous_data":{"name":null},"instance_pk":1,"correlation_id":"corr-1","retries":0,"expires":"2026-11-28T09:43:57+00:00","meta":{"source":"master"}}
}

// Decode keeps numbers as json.Number and nested objects as ordered Fields.
func ExampleDecode() {
	p, err := wire.Decode([]byte(`{"signal_type":"DELETE","cqrs_id":"book","instance_data":{"id":18446744073709551616,"cqrs_revision":1,"cqrs_updated":"2026-01-01T10:00:00Z"},"instance_pk":1,"expires":null}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	id, _ := p.InstanceData.Get("id")
	rev, _ := p.Revision()
	fmt.Println(p.SignalType, p.CQRSID, id, rev, p.InstanceData.Keys(), p.Expires == nil)

	_, err = wire.Decode([]byte(`{"signal_type":"SAVE","cqrs_id":"author","instance_data":{}}`))
	fmt.Println(err)
	// Output:
	// DELETE book 18446744073709551616 1 [id cqrs_revision cqrs_updated] true
	// wire: decode: missing required key "instance_pk"
}
