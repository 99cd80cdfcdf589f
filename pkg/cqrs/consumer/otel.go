package consumer

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/otelcqrs"
	"github.com/gocqrs/gocqrs/pkg/tracectx"
)

// startApplySpan starts the "cqrs.replica.apply" span of p (see package
// otelcqrs), child of the trace context ctx carries.
func startApplySpan(ctx context.Context, p *wire.Payload) (context.Context, trace.Span) {
	rev, ok := p.Revision()
	if !ok {
		rev = -1
	}
	return otelcqrs.StartApply(ctx, p.CQRSID, valueText(p.InstancePK), rev)
}

// startBatchSpans starts the apply span of each message of a batch, child
// of the traceparent found in its log attributes (see process); they end
// when the batch is concluded.
func startBatchSpans(items []*batchItem) []trace.Span {
	spans := make([]trace.Span, len(items))
	if !otelcqrs.Enabled() {
		for i := range spans {
			_, spans[i] = startApplySpan(context.Background(), items[i].dl.Payload)
		}
		return spans
	}
	for i, it := range items {
		ctx := tracectx.WithTraceContext(context.Background(), it.attrs.traceparent(), it.attrs.tracestate())
		_, spans[i] = startApplySpan(ctx, it.dl.Payload)
	}
	return spans
}
