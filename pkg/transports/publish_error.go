package transports

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// PublishError reports, message by message, a Publish call of several
// messages that failed only in part or for different reasons: the messages
// whose index (in the call's msgs) is in Failed were not confirmed, for the
// cause given; every other message of the call was confirmed by the broker.
//
// Publishers return it wrapped, so find it with errors.As (or
// [PublishFailures]). errors.Is sees through it to every cause, so callers
// that only ask errors.Is(err, ErrRejected) keep working.
//
// Which transports fill it: [RabbitMQ.Publish] always does once its messages
// went out (basic.return and nacks name single messages; a lost channel
// leaves the unconfirmed ones failed with [ErrNotConfirmed]). [Memory.Publish]
// enqueues all of a call or nothing, so its plain errors already say every
// message failed. [Kafka.Publish] always does once its records went to the
// producer (each record gets its own outcome; a broker refuses per produce
// batch, so a refusal may name records besides the one at fault).
type PublishError struct {
	// Total is the number of messages of the call.
	Total int
	// Failed maps the index of every message that was not confirmed to its
	// cause. Causes wrap [ErrRejected] when the broker refused that message
	// (unroutable, nacked); other causes mean its outcome is unknown.
	Failed map[int]error
}

// Error summarises the failures: how many of how many, and each distinct
// cause with the indexes it concerns (at most a few of them listed).
func (e *PublishError) Error() string {
	if e == nil || len(e.Failed) == 0 {
		return "transports: publish: no message failed"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d message(s) failed", len(e.Failed), e.Total)
	for _, g := range e.groups() {
		b.WriteString("; ")
		const shown = 5
		if len(g.indexes) == 1 {
			fmt.Fprintf(&b, "message %d", g.indexes[0])
		} else {
			b.WriteString("messages ")
			for i, idx := range g.indexes[:min(shown, len(g.indexes))] {
				if i > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "%d", idx)
			}
			if len(g.indexes) > shown {
				fmt.Fprintf(&b, " and %d more", len(g.indexes)-shown)
			}
		}
		b.WriteString(": ")
		b.WriteString(g.text)
	}
	return b.String()
}

// Unwrap returns the distinct causes (by message), in index order, so that
// errors.Is and errors.As look into every one of them.
func (e *PublishError) Unwrap() []error {
	if e == nil {
		return nil
	}
	groups := e.groups()
	out := make([]error, len(groups))
	for i, g := range groups {
		out[i] = g.err
	}
	return out
}

// causeGroup is one distinct cause of a PublishError and the indexes it
// concerns.
type causeGroup struct {
	text    string
	err     error
	indexes []int
}

// groups lists the distinct causes by their first index.
func (e *PublishError) groups() []causeGroup {
	idx := make([]int, 0, len(e.Failed))
	for i := range e.Failed {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var out []causeGroup
	at := map[string]int{}
	for _, i := range idx {
		err := e.Failed[i]
		text := "<nil>"
		if err != nil {
			text = err.Error()
		}
		g, ok := at[text]
		if !ok {
			g = len(out)
			at[text] = g
			out = append(out, causeGroup{text: text, err: err})
		}
		out[g].indexes = append(out[g].indexes, i)
	}
	return out
}

// PublishFailures says which messages of a Publish call of n messages failed,
// given the call's error: nil when err is nil; the Failed map of a wrapped
// [*PublishError]; otherwise every index 0..n-1 mapped to err (a whole-call
// error concerns every message). The returned map must not be modified when
// it came from a PublishError.
func PublishFailures(err error, n int) map[int]error {
	if err == nil {
		return nil
	}
	var pe *PublishError
	if errors.As(err, &pe) && pe != nil && pe.Total == n {
		return pe.Failed
	}
	out := make(map[int]error, n)
	for i := range n {
		out[i] = err
	}
	return out
}
