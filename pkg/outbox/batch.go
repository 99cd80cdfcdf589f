package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/pkg/transports"
)

// How a batch is published
//
// A claimed batch (after the entity-order filter, in id order) is published
// with few Publish calls, many of them in flight at once, without ever
// letting an entity's rows overtake each other:
//
//   - Lanes: every entity (entity_key, i.e. cqrs_id and pk) belongs to one
//     lane, by a hash of its key. Lanes run concurrently and never wait for
//     each other. A lane gets at least minLaneRows rows: a call is
//     pipelined already (all its messages are sent before its confirms are
//     awaited), and RabbitMQ spends more per message on many small calls
//     over several channels than on few large ones, so a batch of up to
//     2*minLaneRows-1 rows is one lane.
//   - Waves: inside a lane, an entity's rows are cut into runs of
//     consecutive rows with the same topic (the usual case is one run: all of
//     an entity's messages go to its cqrs_id's routing key; a SYNC aimed at
//     one replica queue has another key). The n-th run of every entity goes
//     into the lane's n-th wave. A wave is published as one call per topic,
//     each holding its rows in id order, those calls concurrently; the next
//     wave starts when the whole wave is settled. So an entity's runs are
//     published one after the other, and the rows of one run go out in one
//     call, in order (every gocqrs transport delivers a call's messages in
//     the order given, on one channel or partition).
//   - In flight: at most RelayOptions.MaxInFlight calls run at once over all
//     lanes (RabbitMQ's publisher has 4 channels, each call pipelined: its
//     messages are all sent before its confirms are awaited).
//
// Outcomes come back per message ([transports.PublishError]; a plain error
// concerns every message of the call). A row the broker refused (the error
// wraps transports.ErrRejected, or RelayOptions.Rejected says so) blocks its
// entity: the entity's later waves are not published in this cycle. A row
// whose outcome is unknown (the transport failed) also blocks its entity and
// stops the batch: no call starts after it, the calls in flight finish.
// A call refused as a whole without word on single messages (a plain error
// wrapping ErrRejected, e.g. the memory transport's full topic, which takes
// all of a call or nothing) is published again one message per call, so
// that what the broker takes goes out and only the rest is set aside.

// minLaneRows is the fewest rows per lane: smaller batches use fewer lanes.
// Measured on RabbitMQ 3.10 (a topic exchange, persistent messages): calls
// of 250 messages on 4 channels cost the broker 77-83 µs of CPU per message,
// calls of 1000 on 2 channels 72-75 µs.
const minLaneRows = 1000

// rowFate is what became of one row of a batch.
type rowFate uint8

const (
	notTried  rowFate = iota // not published (batch stopped, or its entity blocked)
	confirmed                // the broker confirmed it
	refused                  // the broker refused it (or its message could not be built)
	unknown                  // the publish failed: it may or may not have been delivered
)

// outcome is the result of publishing one row.
type outcome struct {
	state rowFate
	cause error
	msg   *message.Message // the message the broker confirmed (state confirmed), for the log line
}

// pubCall is one Publish call: rows (indexes into the batch) of one topic,
// in id order.
type pubCall struct {
	topic string
	rows  []int
}

// wave is the calls of one lane that may run at once: no entity has rows in
// two of them.
type wave []*pubCall

// planLanes splits rows (sorted by id) into lanes of waves, as described
// above.
func planLanes(rows []claimedRow, maxLanes int) [][]wave {
	n := min(maxLanes, max(1, len(rows)/minLaneRows))
	type entity struct {
		wave  int
		topic string
	}
	lanes := make([][]wave, n)
	entities := make([]map[string]entity, n)
	byTopic := make([][]map[string]*pubCall, n) // per lane and wave: topic → call
	for i := range entities {
		entities[i] = map[string]entity{}
	}
	for i, row := range rows {
		l := laneOf(row.entityKey, n)
		w := 0
		if e, ok := entities[l][row.entityKey]; ok {
			w = e.wave
			if e.topic != row.topic {
				w++
			}
		}
		entities[l][row.entityKey] = entity{wave: w, topic: row.topic}
		for len(lanes[l]) <= w {
			lanes[l] = append(lanes[l], nil)
			byTopic[l] = append(byTopic[l], map[string]*pubCall{})
		}
		c := byTopic[l][w][row.topic]
		if c == nil {
			c = &pubCall{topic: row.topic}
			byTopic[l][w][row.topic] = c
			lanes[l][w] = append(lanes[l][w], c)
		}
		c.rows = append(c.rows, i)
	}
	return lanes
}

// laneOf hashes an entity key onto one of n lanes.
func laneOf(key string, n int) int {
	if n == 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// batchRun is the shared state of one batch being published.
type batchRun struct {
	r        *Relay
	ctx      context.Context
	rows     []claimedRow
	out      []outcome // one per row; each written by the one call that holds the row
	inFlight chan struct{}
	stop     atomic.Bool // a transport failure or ctx: start no more calls
}

// publishBatch publishes rows (sorted by id) lane by lane and returns each
// row's outcome.
func (r *Relay) publishBatch(ctx context.Context, rows []claimedRow) []outcome {
	b := &batchRun{
		r:        r,
		ctx:      ctx,
		rows:     rows,
		out:      make([]outcome, len(rows)),
		inFlight: make(chan struct{}, r.opts.MaxInFlight),
	}
	lanes := planLanes(rows, r.opts.MaxInFlight)
	if len(lanes) == 1 {
		b.runLane(lanes[0])
		return b.out
	}
	var wg sync.WaitGroup
	for _, lane := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.runLane(lane)
		}()
	}
	wg.Wait()
	return b.out
}

// runLane publishes a lane's waves one after the other, leaving out the
// rows of entities that have a row not confirmed in an earlier wave.
func (b *batchRun) runLane(lane []wave) {
	blocked := map[string]bool{}
	for _, w := range lane {
		var wg sync.WaitGroup
		for _, c := range w {
			idx := c.rows
			if len(blocked) > 0 {
				idx = make([]int, 0, len(c.rows))
				for _, i := range c.rows {
					if !blocked[b.rows[i].entityKey] {
						idx = append(idx, i)
					}
				}
			}
			if len(idx) == 0 || !b.acquire() {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-b.inFlight }()
				b.publishCall(c.topic, idx)
			}()
		}
		wg.Wait()
		for _, c := range w {
			for _, i := range c.rows {
				if b.out[i].state != confirmed {
					blocked[b.rows[i].entityKey] = true
				}
			}
		}
	}
}

// acquire takes an in-flight slot; false when the batch is stopping.
func (b *batchRun) acquire() bool {
	if b.stop.Load() {
		return false
	}
	select {
	case b.inFlight <- struct{}{}:
	case <-b.ctx.Done():
		b.stop.Store(true)
		return false
	}
	if b.stop.Load() || b.ctx.Err() != nil {
		b.stop.Store(true)
		<-b.inFlight
		return false
	}
	return true
}

// publishCall publishes the rows idx (one topic, id order) in one call and
// records each row's outcome.
func (b *batchRun) publishCall(topic string, idx []int) {
	msgs := make([]*message.Message, 0, len(idx))
	sent := make([]int, 0, len(idx))
	for _, i := range idx {
		m, err := b.r.message(b.ctx, b.rows[i])
		if err != nil {
			// The row itself is bad: no broker will take it. Set it aside
			// like a refused message rather than stop every entity.
			b.out[i] = outcome{state: refused, cause: err}
			continue
		}
		msgs = append(msgs, m)
		sent = append(sent, i)
	}
	if len(msgs) == 0 {
		return
	}
	spans := startPublishSpans(b.ctx, topic, msgs)
	defer spans.endRest()
	err := b.r.pub.Publish(topic, msgs...)
	if err != nil {
		b.r.failed.Add(1)
	}
	var pe *transports.PublishError
	if err != nil && len(msgs) > 1 && !errors.As(err, &pe) && b.r.opts.Rejected(err) {
		// Refused as a whole, with no word on single messages: an all or
		// nothing publisher (the memory transport's full topic) may take
		// some of them alone. Publish them one at a time, as a relay
		// without batching would.
		b.publishOneByOne(topic, sent, msgs, spans)
		return
	}
	failures := transports.PublishFailures(err, len(msgs))
	var refusedRows, unknownRows int
	var firstCause error
	for j, i := range sent {
		cause, failed := failures[j]
		switch {
		case !failed:
			spans.end(j, nil)
			b.out[i] = outcome{state: confirmed, msg: msgs[j]}
			continue
		case cause == nil:
			cause = errors.New("publisher reported a failure without a cause")
		}
		if firstCause == nil {
			firstCause = cause
		}
		spans.end(j, cause)
		if b.r.opts.Rejected(cause) {
			b.out[i] = outcome{state: refused, cause: cause}
			refusedRows++
		} else {
			b.out[i] = outcome{state: unknown, cause: cause}
			unknownRows++
		}
	}
	if unknownRows > 0 {
		b.stop.Store(true)
	}
	if refusedRows+unknownRows > 0 {
		first := b.rows[sent[0]]
		b.r.log.Error("outbox: publish call failed in part or whole; refused rows are set aside, unconfirmed ones retried",
			"topic", topic, "rows", len(sent), "refused", refusedRows, "unconfirmed", unknownRows,
			"first_outbox_id", first.id, "cqrs_id", first.cqrsID, "error", firstCause)
	}
}

// publishOneByOne publishes msgs (of the rows sent, in id order) one call
// each, leaving out the later rows of an entity once one of its rows
// failed, and stopping at a failure that is not a refusal. Each call ends
// its message's span (spans may be nil).
func (b *batchRun) publishOneByOne(topic string, sent []int, msgs []*message.Message, spans publishSpans) {
	blocked := map[string]bool{}
	for j, i := range sent {
		row := b.rows[i]
		if blocked[row.entityKey] {
			continue // not tried: released behind its entity's failed row
		}
		err := b.r.pub.Publish(topic, msgs[j])
		spans.end(j, err)
		switch {
		case err == nil:
			b.out[i] = outcome{state: confirmed, msg: msgs[j]}
			continue
		case b.r.opts.Rejected(err):
			b.out[i] = outcome{state: refused, cause: err}
			b.r.log.Error("outbox: broker refused a message; the row is set aside",
				"topic", topic, "outbox_id", row.id, "cqrs_id", row.cqrsID, "error", err)
		default:
			b.out[i] = outcome{state: unknown, cause: err}
			b.stop.Store(true)
			b.r.log.Error("outbox: publish failed; the row is retried",
				"topic", topic, "outbox_id", row.id, "cqrs_id", row.cqrsID, "error", err)
		}
		b.r.failed.Add(1)
		if b.stop.Load() {
			return
		}
		blocked[row.entityKey] = true
	}
}

// message builds the Watermill message of a row.
func (r *Relay) message(ctx context.Context, row claimedRow) (*message.Message, error) {
	msg := message.NewMessage(watermill.NewUUID(), message.Payload(row.body))
	for k, v := range r.opts.Headers {
		msg.Metadata.Set(k, v)
	}
	if row.headers.Valid && row.headers.String != "" {
		if !setFlatHeaders(msg.Metadata, row.headers.String) {
			var h map[string]string
			if err := json.Unmarshal([]byte(row.headers.String), &h); err != nil {
				return nil, fmt.Errorf("row %d: headers column is not a JSON object of strings: %w", row.id, err)
			}
			for k, v := range h {
				msg.Metadata.Set(k, v)
			}
		}
	}
	msg.Metadata.Set(MetadataCQRSID, row.cqrsID)
	msg.Metadata.Set(MetadataEntityKey, row.entityKey)
	msg.Metadata.Set(MetadataOutboxID, strconv.FormatInt(row.id, 10))
	msg.SetContext(ctx)
	return msg, nil
}

// setFlatHeaders sets the pairs of the headers column s into md when s is
// a JSON object of strings in the plain form Insert writes (json.Marshal of
// a map[string]string: no white space, no escapes, printable ASCII only)
// and reports whether it did; for anything else it sets nothing and returns
// false, and the caller decodes s with encoding/json. For the inputs it
// takes, the result is what json.Unmarshal gives (later duplicates win);
// it saves the decoder's cost on every published message.
func setFlatHeaders(md message.Metadata, s string) bool {
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return false
	}
	var buf [8][2]string
	pairs := buf[:0]
	for rest := s[1 : len(s)-1]; rest != ""; {
		k, after, ok := flatString(rest)
		if !ok || after == "" || after[0] != ':' {
			return false
		}
		v, after, ok := flatString(after[1:])
		if !ok {
			return false
		}
		pairs = append(pairs, [2]string{k, v})
		switch {
		case after == "":
			rest = ""
		case after[0] == ',' && len(after) > 1:
			rest = after[1:]
		default:
			return false
		}
	}
	for _, p := range pairs {
		md.Set(p[0], p[1])
	}
	return true
}

// flatString reads a JSON string at the start of s that needs no decoding
// (printable ASCII, no backslash) and returns its contents and what
// follows; ok is false for anything else.
func flatString(s string) (str, rest string, ok bool) {
	if len(s) < 2 || s[0] != '"' {
		return "", "", false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return s[1:i], s[i+1:], true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return "", "", false
		}
	}
	return "", "", false
}
