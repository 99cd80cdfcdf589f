package consumer

import (
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/pkg/tracectx"
)

// traceOnto sets the trace context of the message being handled (its
// traceparent and tracestate, found in its log attributes, see process) on
// m, a requeue copy or dead letter, so that the trace context follows the
// message through retries.
func traceOnto(m *message.Message, attrs logAttrs) {
	if tp := attrs.traceparent(); tp != "" {
		m.Metadata.Set(tracectx.HeaderTraceparent, tp)
		if ts := attrs.tracestate(); ts != "" {
			m.Metadata.Set(tracectx.HeaderTracestate, ts)
		}
	}
}
