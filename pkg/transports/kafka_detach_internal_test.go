package transports

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
)

// markingSession is a consumer-group session that records the offsets
// marked on it. A real session cannot be made to show the orderings below
// on demand (a stale mark arriving after a hand-back), hence the fake.
type markingSession struct {
	sarama.ConsumerGroupSession // other methods are not called
	ctx                         context.Context
	mu                          sync.Mutex
	marks                       []int64
}

func (s *markingSession) Context() context.Context { return s.ctx }
func (s *markingSession) Commit()                  {}
func (s *markingSession) MarkOffset(_ string, _ int32, off int64, _ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marks = append(s.marks, off)
}

func (s *markingSession) marked() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.marks)
}

// TestKafkaClaimIgnoresStaleDeliveries: a record handed back goes out again
// as a new delivery; the mark of its earlier delivery (the subscriber's,
// after the detach's ack) and a second settle of the earlier detach do not
// settle it, and the committed offset moves only when the new delivery is
// acked.
func TestKafkaClaimIgnoresStaleDeliveries(t *testing.T) {
	sess := &markingSession{ctx: context.Background()}
	d := newKafkaDetacher(kafkaMarshaler{}, true)
	c := &kafkaClaim{d: d, sess: sess, topic: "t", partition: 0, state: map[int64]tracked{},
		linked: map[*message.Message]struct{}{}, again: make(chan struct{}, 1)}
	in := make(chan *sarama.ConsumerMessage, 2)
	out := make(chan *sarama.ConsumerMessage)
	stop := make(chan struct{})
	defer close(stop)
	go c.feed(in, out, stop)

	rec0 := &sarama.ConsumerMessage{Topic: "t", Partition: 0, Offset: 0}
	rec1 := &sarama.ConsumerMessage{Topic: "t", Partition: 0, Offset: 1}
	in <- rec0
	if got := <-out; got != rec0 {
		t.Fatalf("fed %+v, want offset 0", got)
	}
	msg0 := message.NewMessage("0", nil)
	settle0, err := c.detacher(msg0, rec0)()
	if err != nil {
		t.Fatal(err)
	}
	in <- rec1
	if got := <-out; got != rec1 {
		t.Fatalf("fed %+v, want offset 1", got)
	}
	c.acked(rec1) // attached, acked: settled, but offset 0 is not
	if m := sess.marked(); len(m) != 0 {
		t.Fatalf("marked %v while offset 0 is detached", m)
	}
	if err := settle0(false); err != nil {
		t.Fatal(err)
	}
	again := <-out
	if again == rec0 || again.Offset != 0 {
		t.Fatalf("handed back: fed %p offset %d, want a copy of offset 0", again, again.Offset)
	}
	c.acked(rec0) // the earlier delivery's mark, late
	if err := settle0(true); err != nil {
		t.Fatal(err)
	}
	if m := sess.marked(); len(m) != 0 {
		t.Fatalf("marked %v from the earlier delivery of offset 0", m)
	}
	if _, err := c.detacher(msg0, rec0)(); err == nil {
		t.Fatal("detached the earlier delivery of a handed-back record")
	}
	c.acked(again)
	if m := sess.marked(); !slices.Equal(m, []int64{2}) {
		t.Fatalf("marked %v after the new delivery of offset 0 was acked, want [2]", m)
	}
}
