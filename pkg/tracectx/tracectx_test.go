package tracectx

import (
	"context"
	"strings"
	"testing"
)

const validTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestValidate(t *testing.T) {
	if err := Validate(validTP); err != nil {
		t.Fatalf("valid traceparent rejected: %v", err)
	}
	bad := map[string]string{
		"empty":            "",
		"version 01":       "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"version ff":       "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"zero trace id":    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"zero span id":     "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"uppercase hex":    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
		"non-hex flags":    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
		"short trace id":   "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
		"trailing data":    validTP + "-x",
		"moved separators": "00-4bf92f3577b34da6a3ce929d0e0e4736000f067aa0ba902b7-01-",
		"newline":          "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\n",
	}
	for name, tp := range bad {
		if err := Validate(tp); err == nil {
			t.Errorf("%s: %q accepted", name, tp)
		} else if !strings.HasPrefix(err.Error(), "tracectx: traceparent") {
			t.Errorf("%s: error %q does not say what was wrong", name, err)
		}
	}
}

func TestContextRoundTrip(t *testing.T) {
	ctx := context.Background()
	if Traceparent(ctx) != "" || Tracestate(ctx) != "" {
		t.Fatal("empty context carries a trace context")
	}
	c1 := WithTraceparent(ctx, validTP)
	if got := Traceparent(c1); got != validTP {
		t.Fatalf("Traceparent = %q, want %q", got, validTP)
	}
	if got := WithTraceparent(ctx, "00-bad"); Traceparent(got) != "" {
		t.Fatalf("invalid traceparent stored: %q", Traceparent(got))
	}
	// An invalid value does not replace a valid one already there.
	if got := Traceparent(WithTraceparent(c1, "garbage")); got != validTP {
		t.Fatalf("invalid value replaced the stored one: %q", got)
	}
	c2 := WithTraceContext(ctx, validTP, "congo=t61rcWkgMzE")
	if Traceparent(c2) != validTP || Tracestate(c2) != "congo=t61rcWkgMzE" {
		t.Fatalf("trace context = %q, %q", Traceparent(c2), Tracestate(c2))
	}
	c3 := WithTraceContext(ctx, validTP, "a=b\r\nX-Injected: 1")
	if Traceparent(c3) != validTP || Tracestate(c3) != "" {
		t.Fatalf("unsafe tracestate kept: %q", Tracestate(c3))
	}
	if got := WithTraceContext(ctx, "nope", "a=b"); Tracestate(got) != "" || Traceparent(got) != "" {
		t.Fatal("tracestate stored without a valid traceparent")
	}
}

func TestFromHeaders(t *testing.T) {
	h := map[string]string{HeaderTraceparent: validTP, HeaderTracestate: "k=v"}
	ctx := FromHeaders(context.Background(), func(k string) string { return h[k] })
	if Traceparent(ctx) != validTP || Tracestate(ctx) != "k=v" {
		t.Fatalf("from headers: %q, %q", Traceparent(ctx), Tracestate(ctx))
	}
	none := FromHeaders(context.Background(), func(string) string { return "" })
	if Traceparent(none) != "" {
		t.Fatal("trace context from empty headers")
	}
}
