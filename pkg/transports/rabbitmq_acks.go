package transports

import (
	"sync"
	"sync/atomic"
)

// Acknowledgements of a rabbitmq subscription are coalesced per session (one
// AMQP channel): an ack is recorded at once and sent moments later by the
// session's flusher goroutine, which covers the contiguous run of settled
// delivery tags with one basic.ack(multiple=true). Nacks (requeue) go out at
// once, one by one.
//
// amqp091 numbers a channel's deliveries 1, 2, 3, ... and this channel has
// one consumer, so the session sees every tag in order (hold). It keeps a
// window of the tags from the floor up: each slot says whether the tag is
// still outstanding (handed out, neither acked nor nacked locally) or
// settled locally. Settled-with-ack tags whose frame is not written yet are
// listed in pending. A flush advances the floor over the settled prefix of
// the window, sends one multiple ack for the highest pending tag at or below
// the floor, and acks the pending tags above it one by one: those lie above
// an outstanding tag (a detached message held for a retry, say), which a
// multiple ack would settle too, so it never covers one.
//
// Every frame is computed and written under sendMu, so a multiple ack never
// reaches the broker before the nack of a lower tag (the nacked tag stays
// outstanding in the window until its nack is written), and no tag is
// settled twice on the wire (the broker would close the channel with
// PRECONDITION_FAILED "unknown delivery tag").
//
// If a tag is ever not the expected next one, the session stops trusting
// the window and acks every tag on its own (still from the flusher).
type rabbitAcks struct {
	// sendMu serialises computing and writing the session's ack and nack
	// frames; it is taken before rabbitSession.mu.
	sendMu sync.Mutex
	single []uint64 // scratch of flush, guarded by sendMu

	// Guarded by rabbitSession.mu.
	base       uint64   // delivery tag of win[head]; the tags below it are settled on the wire
	win        []bool   // from head on: true once the tag is settled locally
	head       int      // first slot in use of win
	pending    []uint64 // tags acked locally whose frame is not written yet
	individual bool     // tags not consecutive: no multiple acks on this session

	wake chan struct{} // signals the flusher (non-blocking sends, capacity 1)
	stop chan struct{} // closed to stop the flusher
	done chan struct{} // closed when the flusher has returned

	stats *rabbitAckStats
}

// rabbitAckStats counts a transport's acknowledgement frames and interrupted
// consumer sessions (tests read them).
type rabbitAckStats struct {
	paused     atomic.Bool // tests: flushers leave acks pending until their session ends
	individual atomic.Bool // tests: sessions start acking one by one, as after a tag out of order

	multiple    atomic.Int64 // basic.ack with multiple=true
	single      atomic.Int64 // basic.ack of one tag
	nacks       atomic.Int64 // basic.nack (requeue)
	interrupted atomic.Int64 // sessions whose channel was lost or consumer cancelled by the broker
}

// winCompact is the number of dead slots at the front of the window above
// which the window is moved back to the start of its array (when they are
// also more than half of it).
const winCompact = 1024

func (a *rabbitAcks) init(stats *rabbitAckStats) {
	a.base = 1
	a.individual = stats.individual.Load()
	a.wake = make(chan struct{}, 1)
	a.stop = make(chan struct{})
	a.done = make(chan struct{})
	a.stats = stats
}

// track registers tag, just delivered, as outstanding.
func (s *rabbitSession) track(tag uint64) {
	a := &s.acks
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.individual {
		return
	}
	if want := a.base + uint64(len(a.win)-a.head); tag != want {
		a.individual = true
		s.log.Warn("rabbitmq: delivery tags not consecutive; acking messages one by one on this channel",
			"delivery_tag", tag, "expected", want)
		return
	}
	a.win = append(a.win, false)
}

// settledLocked marks tag settled locally in the window. s.mu is held.
func (s *rabbitSession) settledLocked(tag uint64) {
	a := &s.acks
	if a.individual {
		return
	}
	if tag < a.base || tag-a.base >= uint64(len(a.win)-a.head) {
		// Not in the window: cannot happen when every tag went through
		// track; stop relying on the window rather than guess.
		a.individual = true
		s.log.Warn("rabbitmq: settled delivery tag outside the ack window; acking messages one by one on this channel",
			"delivery_tag", tag, "floor", a.base-1)
		return
	}
	a.win[a.head+int(tag-a.base)] = true
}

// ackLocked records an ack of tag, to be sent by the flusher; it reports
// whether the caller must wake the flusher (after unlocking). s.mu is held.
func (s *rabbitSession) ackLocked(tag uint64) (wake bool) {
	s.settledLocked(tag)
	a := &s.acks
	// A non-empty list means a wake-up is on its way and the flusher has
	// not taken the list yet: it will send this tag too.
	wake = len(a.pending) == 0
	a.pending = append(a.pending, tag)
	return wake
}

// wakeFlusher signals the flusher without blocking.
func (s *rabbitSession) wakeFlusher() {
	select {
	case s.acks.wake <- struct{}{}:
	default:
	}
}

// nack settles tag with a nack (requeue), written at once. The caller holds
// s.acks.sendMu and s.mu; s.mu is released on return.
func (s *rabbitSession) nackAndUnlock(tag uint64) error {
	s.settledLocked(tag)
	s.mu.Unlock()
	s.acks.stats.nacks.Add(1)
	return s.ch.Nack(tag, false, true)
}

// flusher sends the session's pending acks whenever it is woken, until stop
// is closed.
func (s *rabbitSession) flusher() {
	defer close(s.acks.done)
	for {
		select {
		case <-s.acks.wake:
			if !s.acks.stats.paused.Load() {
				s.flush()
			}
		case <-s.acks.stop:
			return
		}
	}
}

// stopFlusher stops the flusher and waits for it to return; it does not
// flush.
func (s *rabbitSession) stopFlusher() {
	close(s.acks.stop)
	<-s.acks.done
}

// flush writes the pending acks: one multiple ack for those at or below the
// floor of the settled prefix, one ack each for those above it.
func (s *rabbitSession) flush() {
	a := &s.acks
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	s.mu.Lock()
	if len(a.pending) == 0 {
		s.mu.Unlock()
		return
	}
	var multiple uint64
	single := a.single[:0]
	if a.individual {
		single = append(single, a.pending...)
	} else {
		a.advanceLocked()
		floor := a.base - 1
		for _, tag := range a.pending {
			if tag <= floor {
				multiple = max(multiple, tag)
			} else {
				single = append(single, tag)
			}
		}
	}
	a.pending = a.pending[:0]
	s.mu.Unlock()

	var firstErr error
	if multiple != 0 {
		a.stats.multiple.Add(1)
		firstErr = s.ch.Ack(multiple, true)
	}
	for _, tag := range single {
		a.stats.single.Add(1)
		if err := s.ch.Ack(tag, false); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	a.single = single[:0]
	if firstErr != nil {
		s.log.Debug("rabbitmq: could not send acks; the broker delivers those messages again",
			"multiple_up_to", multiple, "single", len(single), "error", firstErr.Error())
	}
}

// advanceLocked moves the floor over the settled prefix of the window. s.mu
// is held.
func (a *rabbitAcks) advanceLocked() {
	i := a.head
	for i < len(a.win) && a.win[i] {
		i++
	}
	a.base += uint64(i - a.head)
	a.head = i
	switch {
	case a.head == len(a.win):
		a.win, a.head = a.win[:0], 0
	case a.head > winCompact && a.head > len(a.win)/2:
		n := copy(a.win, a.win[a.head:])
		a.win, a.head = a.win[:n], 0
	}
}
