package outbox

import (
	"context"
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/trace"

	"github.com/gocqrs/gocqrs/pkg/otelcqrs"
)

// errNotTried ends the publish span of a row the relay did not publish in
// this batch (an earlier row of its entity failed, or the batch stopped).
var errNotTried = errors.New("outbox: not published in this batch")

// publishSpans are the "cqrs.relay.publish" spans of the messages of one
// publish call (see package otelcqrs), one per message; nil when no
// OpenTelemetry provider records them.
type publishSpans []trace.Span

// startPublishSpans starts one span per message, each a child of the
// traceparent the message carries. It returns nil when none is recorded.
func startPublishSpans(ctx context.Context, topic string, msgs []*message.Message) publishSpans {
	if !otelcqrs.Enabled() {
		return nil // no provider: no span would record
	}
	var spans publishSpans
	for j, m := range msgs {
		md := m.Metadata
		span := otelcqrs.StartPublish(ctx, md.Get, md.Get(MetadataCQRSID), topic, md.Get(MetadataOutboxID))
		if span == nil {
			continue
		}
		if spans == nil {
			spans = make(publishSpans, len(msgs))
		}
		spans[j] = span
	}
	return spans
}

// end ends message j's span with the publish error (nil when confirmed).
func (s publishSpans) end(j int, err error) {
	if s == nil || s[j] == nil {
		return
	}
	otelcqrs.EndPublish(s[j], err)
	s[j] = nil
}

// endRest ends the spans not ended yet as not published.
func (s publishSpans) endRest() {
	for j := range s {
		s.end(j, errNotTried)
	}
}
