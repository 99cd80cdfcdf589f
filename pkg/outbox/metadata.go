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
	r.logPublishedLine(ctx, topic, msg)
}

// logConfirmed logs the line of every confirmed message of a batch, after
// one check that Info is enabled. The relay calls it once the batch's
// outcomes are in, off the broker's path: while the batch's rows are being
// deleted (RunOnce) or the next batch is being published (Run).
func (r *Relay) logConfirmed(ctx context.Context, sent []sentMessage) {
	if len(sent) == 0 || !r.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	for _, m := range sent {
		r.logPublishedLine(ctx, m.topic, m.msg)
	}
}

// sentMessage is a message the broker confirmed, with its topic.
type sentMessage struct {
	topic string
	msg   *message.Message
}

// logPublishedLine writes the "CQRS is published" line of msg (Info is
// enabled): cqrs_id, pk, revision (a number when it is one),
// correlation_id (None when there is none, as django-cqrs logs a null
// one), traceparent when the message has one, routing_key and outbox_id.
func (r *Relay) logPublishedLine(ctx context.Context, topic string, msg *message.Message) {
	md := msg.Metadata
	var buf [8]slog.Attr
	attrs := append(buf[:0],
		slog.String("cqrs_id", md[MetadataCQRSID]),
		slog.String("pk", md[MetadataPK]),
	)
	if rev := md[MetadataRevision]; rev != "" {
		if n, err := strconv.ParseInt(rev, 10, 64); err == nil {
			attrs = append(attrs, slog.Int64("revision", n))
		} else {
			attrs = append(attrs, slog.String("revision", rev))
		}
	}
	cid := md[MetadataCorrelationID]
	if cid == "" {
		cid = "None"
	}
	attrs = append(attrs, slog.String("correlation_id", cid))
	if tp := md[tracectx.HeaderTraceparent]; tp != "" {
		attrs = append(attrs, slog.String("traceparent", tp))
	}
	attrs = append(attrs, slog.String("routing_key", topic), slog.String("outbox_id", md[MetadataOutboxID]))
	r.log.LogAttrs(ctx, slog.LevelInfo, "CQRS is published", attrs...)
}
