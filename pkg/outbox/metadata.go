package outbox

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/pkg/tracectx"
)

// Metadata keys a master (package master) stores in a row's headers so that
// the relay can log the message as django-cqrs does ("CQRS is published"
// with pk, revision and correlation_id). Transports do not send them as
// AMQP headers (Kafka carries every metadata key as a record header).
const (
	MetadataPK            = "pk"
	MetadataRevision      = "revision"
	MetadataCorrelationID = "correlation_id"
)

// logPublished logs a confirmed message as django-cqrs does ("CQRS is
// published"), from its metadata. Nothing is built when Info is disabled.
func (r *Relay) logPublished(ctx context.Context, topic string, msg *message.Message) {
	if !r.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	md := msg.Metadata
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs,
		slog.String("cqrs_id", md.Get(MetadataCQRSID)),
		slog.String("pk", md.Get(MetadataPK)),
	)
	if rev := md.Get(MetadataRevision); rev != "" {
		if n, err := strconv.ParseInt(rev, 10, 64); err == nil {
			attrs = append(attrs, slog.Int64("revision", n))
		} else {
			attrs = append(attrs, slog.String("revision", rev))
		}
	}
	cid := md.Get(MetadataCorrelationID)
	if cid == "" {
		cid = "None" // as django-cqrs logs a null correlation id
	}
	attrs = append(attrs, slog.String("correlation_id", cid))
	if tp := md.Get(tracectx.HeaderTraceparent); tp != "" {
		attrs = append(attrs, slog.String("traceparent", tp))
	}
	attrs = append(attrs, slog.String("routing_key", topic), slog.String("outbox_id", md.Get(MetadataOutboxID)))
	r.log.LogAttrs(ctx, slog.LevelInfo, "CQRS is published", attrs...)
}
