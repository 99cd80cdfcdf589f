package master

import (
	"context"
	"strconv"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/otelcqrs"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/tracectx"
)

// logHeaders are the outbox row headers of a message: the pk, revision and
// correlation id (when it is a string) for the relay's log lines, and the
// W3C trace context of ctx (its OpenTelemetry span, else what package
// tracectx carries; see otelcqrs.Traceparent), which transports send as
// message headers. The body (the wire protocol) is not affected.
func logHeaders(ctx context.Context, pk any, p *wire.Payload) map[string]string {
	h := make(map[string]string, 5)
	h[outbox.MetadataPK] = pkString(pk)
	if rev, ok := p.Revision(); ok {
		h[outbox.MetadataRevision] = strconv.FormatInt(rev, 10)
	}
	if cid, ok := p.CorrelationID.(string); ok {
		h[outbox.MetadataCorrelationID] = cid
	}
	if tp, ts := otelcqrs.Traceparent(ctx); tp != "" {
		h[tracectx.HeaderTraceparent] = tp
		if ts != "" {
			h[tracectx.HeaderTracestate] = ts
		}
	}
	return h
}
