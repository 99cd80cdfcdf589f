package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
)

func publishedMessage() *message.Message {
	m := message.NewMessage("id", []byte("{}"))
	m.Metadata.Set(MetadataCQRSID, "author")
	m.Metadata.Set(MetadataPK, "42")
	m.Metadata.Set(MetadataRevision, "7")
	m.Metadata.Set(MetadataCorrelationID, "req-1")
	m.Metadata.Set(MetadataOutboxID, "1001")
	m.Metadata.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	return m
}

// The "CQRS is published" line carries what django-cqrs logs, from the
// message metadata the master stored.
func TestLogPublishedRecord(t *testing.T) {
	var buf bytes.Buffer
	r := &Relay{log: slog.New(slog.NewJSONHandler(&buf, nil))}
	r.logPublished(context.Background(), "cqrs.author", publishedMessage())
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("%q: %v", buf.String(), err)
	}
	want := map[string]any{
		"level": "INFO", "msg": "CQRS is published", "cqrs_id": "author", "pk": "42", "revision": 7.0,
		"correlation_id": "req-1", "outbox_id": "1001", "routing_key": "cqrs.author",
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	for k, w := range want {
		if rec[k] != w {
			t.Errorf("%s = %v, want %v (record %s)", k, rec[k], w, buf.String())
		}
	}

	// A row without a correlation id (not a string, or none) logs None,
	// as django-cqrs.
	buf.Reset()
	m := message.NewMessage("id", []byte("{}"))
	m.Metadata.Set(MetadataCQRSID, "author")
	r.logPublished(context.Background(), "cqrs.author", m)
	rec = nil
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["correlation_id"] != "None" {
		t.Errorf("correlation_id = %v, want None", rec["correlation_id"])
	}
	if _, ok := rec["traceparent"]; ok {
		t.Errorf("traceparent logged without one: %s", buf.String())
	}
}

// With Info disabled the per-message log costs no allocation.
func TestLogPublishedDisabledAllocatesNothing(t *testing.T) {
	r := &Relay{log: slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	m := publishedMessage()
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() { r.logPublished(ctx, "cqrs.author", m) }); n != 0 {
		t.Errorf("logPublished with Info disabled: %v allocations per message, want 0", n)
	}
}

// BenchmarkLogPublished measures the per-message log line, enabled (JSON
// to io.Discard) and disabled.
func BenchmarkLogPublished(b *testing.B) {
	m := publishedMessage()
	ctx := context.Background()
	for name, level := range map[string]slog.Level{"enabled": slog.LevelInfo, "disabled": slog.LevelWarn} {
		b.Run(name, func(b *testing.B) {
			r := &Relay{log: slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: level}))}
			b.ReportAllocs()
			for b.Loop() {
				r.logPublished(ctx, "cqrs.author", m)
			}
		})
	}
}

// BenchmarkRelayPublishedLog is BenchmarkRelay on PostgreSQL with the
// per-message "CQRS is published" line enabled (text to io.Discard) and
// disabled, to compare the relay's throughput.
//
//	go test -run '^$' -bench RelayPublishedLog ./pkg/outbox/
func BenchmarkRelayPublishedLog(b *testing.B) {
	for name, level := range map[string]slog.Level{"info": slog.LevelInfo, "warn": slog.LevelWarn} {
		b.Run(name, func(b *testing.B) {
			db := testenv.Open(b, dialect.Postgres)
			migrated(b, db)
			ctx := context.Background()
			const chunk = 5000
			for done := 0; done < b.N; done += chunk {
				msgs := make([]Message, min(chunk, b.N-done))
				for i := range msgs {
					msgs[i] = msg("author", (done+i)%1000, done+i)
				}
				insertCommitted(b, db.DB, db, msgs)
			}
			logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: level}))
			r := newRelay(b, db.DB, db, noopPublisher{}, RelayOptions{Logger: logger})
			b.ResetTimer()
			start := time.Now()
			for total := 0; total < b.N; {
				n, err := r.RunOnce(ctx)
				if err != nil {
					b.Fatalf("run once: %v", err)
				}
				if n == 0 {
					b.Fatalf("relay published nothing with %d of %d rows left", b.N-total, b.N)
				}
				total += n
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rows/s")
		})
	}
}
