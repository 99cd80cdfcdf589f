package transports_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gocqrs/gocqrs/pkg/transports"
)

func TestPublishErrorSummaryAndUnwrap(t *testing.T) {
	t.Parallel()
	down := errors.New("connection lost")
	nack := fmt.Errorf("queue full: %w", transports.ErrRejected)
	pe := &transports.PublishError{Total: 10, Failed: map[int]error{
		7: down, 1: nack, 2: nack, 3: nack, 4: nack, 5: nack, 6: nack,
	}}
	wrapped := fmt.Errorf("publish to %q: %w", "author", pe)
	text := wrapped.Error()
	for _, want := range []string{"7 of 10", "messages 1, 2, 3, 4, 5 and 1 more: queue full", "message 7: connection lost"} {
		if !strings.Contains(text, want) {
			t.Errorf("error %q lacks %q", text, want)
		}
	}
	if !errors.Is(wrapped, transports.ErrRejected) || !errors.Is(wrapped, down) {
		t.Fatalf("errors.Is does not see the causes through %v", wrapped)
	}
	if causes := pe.Unwrap(); len(causes) != 2 || causes[0] != nack || causes[1] != down {
		t.Fatalf("Unwrap = %v, want the two distinct causes in index order", causes)
	}
}

func TestPublishFailures(t *testing.T) {
	t.Parallel()
	if got := transports.PublishFailures(nil, 3); got != nil {
		t.Fatalf("PublishFailures(nil) = %v, want nil", got)
	}
	whole := errors.New("broker down")
	got := transports.PublishFailures(fmt.Errorf("publish: %w", whole), 3)
	if len(got) != 3 || !errors.Is(got[0], whole) || !errors.Is(got[2], whole) {
		t.Fatalf("whole-call error: %v, want every message failed with it", got)
	}
	pe := &transports.PublishError{Total: 3, Failed: map[int]error{1: whole}}
	got = transports.PublishFailures(fmt.Errorf("publish: %w", pe), 3)
	if len(got) != 1 || got[1] != whole {
		t.Fatalf("PublishError: %v, want message 1 only", got)
	}
	// A PublishError of another call size is not this call's: whole call.
	if got := transports.PublishFailures(pe, 5); len(got) != 5 {
		t.Fatalf("mismatched total: %v, want all 5 failed", got)
	}
}
