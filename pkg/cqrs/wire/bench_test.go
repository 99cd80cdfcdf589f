package wire_test

import (
	"testing"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// benchBody is messages/04_author_create_all_types.json's body: a typical
// author SAVE with every column type and a nested JSON payload.
const benchBody = `{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"cqrs_revision":0,"cqrs_updated":"2026-11-27 09:44:05.125866+00:00","id":2,"name":"All Types","birth_date":"1815-12-10","rating":1234.56,"active":false,"external_uuid":"6f1c2a4e-9b7d-4c3a-8e21-0a5b4c3d2e1f","payload":{"str":"v","int":7,"float":2.5,"bool":true,"null":null,"list":[1,"two",{"three":3}],"unicode":"\u00e9\u6f22\ud83d\ude00","slash":"a\/b"},"created_at":"2024-01-02 03:04:05.678901+00:00"},"previous_data":{"name":null,"rating":null},"instance_pk":2,"correlation_id":"corr:SAVE:author:2:None","retries":0,"expires":"2026-11-28T09:44:05+00:00","meta":{"source":"master"}}`

func BenchmarkEncode(b *testing.B) {
	p, err := wire.Decode([]byte(benchBody))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.Encode(p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	body := []byte(benchBody)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}
