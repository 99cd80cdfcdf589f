package transports

import (
	"fmt"
	"sync"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
)

// How a Kafka message is detached
//
// watermill-kafka's subscriber hands out one message of a partition at a
// time and marks its offset when it is acked. A detached message must let
// the next one through without its own offset being committed, so the
// transport stands between the subscriber and Sarama in two places:
//
//   - The subscriber's consumer-group handler is wrapped (through the
//     SaramaTracer hook, the one place watermill-kafka lets a handler be
//     wrapped): each claimed partition gets a kafkaClaim that sees every
//     record handed to the subscriber and every offset it marks, and marks
//     on Sarama only the offset below which every delivered record is
//     settled (the lowest one not settled, or the next after the last).
//   - The unmarshaler links each Watermill message to its record and claim,
//     and Subscribe puts a DetachFunc in the message's context.
//
// Detaching a message acks it towards watermill-kafka (which then delivers
// the next record of the partition) while its claim keeps its offset
// unsettled. Settle(true) settles it; Settle(false) hands a copy of the
// record to the subscriber again, behind the records already delivered (as
// a RabbitMQ requeue does); marks and settles that concern the earlier
// delivery are then ignored, told apart by the record pointer. A settle that comes after its partition's claim ended
// (rebalance, shutdown) does nothing: the offset was not committed, so the
// record is delivered again to the partition's next owner, a duplicate the
// replica's revision check absorbs.

// kafkaDetacher is a subscriber's unmarshaler and handler wrapper; it
// links delivered Watermill messages to their records and claims.
type kafkaDetacher struct {
	marsh kafkaMarshaler
	// autoCommit: Sarama commits marked offsets by itself; otherwise a
	// claim commits after marking.
	autoCommit bool

	mu      sync.Mutex
	pending map[*sarama.ConsumerMessage]*kafkaClaim // handed to the subscriber, not unmarshalled yet
	msgs    map[*message.Message]kafkaDelivery      // unmarshalled, not seen by Subscribe yet
}

// kafkaDelivery is a delivered message's record and claim.
type kafkaDelivery struct {
	claim *kafkaClaim
	rec   *sarama.ConsumerMessage
}

var (
	_ kafka.Unmarshaler  = (*kafkaDetacher)(nil)
	_ kafka.SaramaTracer = (*kafkaDetacher)(nil)
)

func newKafkaDetacher(marsh kafkaMarshaler, autoCommit bool) *kafkaDetacher {
	return &kafkaDetacher{
		marsh:      marsh,
		autoCommit: autoCommit,
		pending:    map[*sarama.ConsumerMessage]*kafkaClaim{},
		msgs:       map[*message.Message]kafkaDelivery{},
	}
}

// Unmarshal builds the message of rec and links it to rec's claim.
func (d *kafkaDetacher) Unmarshal(rec *sarama.ConsumerMessage) (*message.Message, error) {
	msg, err := d.marsh.Unmarshal(rec)
	if err != nil || msg == nil {
		return msg, err
	}
	d.mu.Lock()
	if c, ok := d.pending[rec]; ok {
		delete(d.pending, rec)
		d.msgs[msg] = kafkaDelivery{claim: c, rec: rec}
		c.linked[msg] = struct{}{}
	}
	d.mu.Unlock()
	return msg, nil
}

// take returns and forgets the delivery of msg, if msg is a message the
// subscriber unmarshalled from a tracked claim.
func (d *kafkaDetacher) take(msg *message.Message) (kafkaDelivery, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dl, ok := d.msgs[msg]
	if ok {
		delete(d.msgs, msg)
		delete(dl.claim.linked, msg)
	}
	return dl, ok
}

// detachable returns msg carrying a DetachFunc in its context when it was
// delivered from a tracked claim, and msg unchanged otherwise (a Nack's
// resend, which watermill-kafka copies without unmarshalling).
func (d *kafkaDetacher) detachable(msg *message.Message) *message.Message {
	dl, ok := d.take(msg)
	if !ok {
		return msg
	}
	msg.SetContext(WithDetach(msg.Context(), dl.claim.detacher(msg, dl.rec)))
	return msg
}

// WrapConsumerGroupHandler wraps the subscriber's handler so that every
// claim is tracked (see kafkaClaim).
func (d *kafkaDetacher) WrapConsumerGroupHandler(h sarama.ConsumerGroupHandler) sarama.ConsumerGroupHandler {
	return detachingHandler{d: d, inner: h}
}

// WrapConsumer returns c: only consumer groups are used.
func (d *kafkaDetacher) WrapConsumer(c sarama.Consumer) sarama.Consumer { return c }

// WrapPartitionConsumer returns pc: only consumer groups are used.
func (d *kafkaDetacher) WrapPartitionConsumer(pc sarama.PartitionConsumer) sarama.PartitionConsumer {
	return pc
}

// WrapSyncProducer returns p: the subscriber does not produce.
func (d *kafkaDetacher) WrapSyncProducer(_ *sarama.Config, p sarama.SyncProducer) sarama.SyncProducer {
	return p
}

// detachingHandler runs the subscriber's handler on tracked claims.
type detachingHandler struct {
	d     *kafkaDetacher
	inner sarama.ConsumerGroupHandler
}

func (h detachingHandler) Setup(s sarama.ConsumerGroupSession) error   { return h.inner.Setup(s) }
func (h detachingHandler) Cleanup(s sarama.ConsumerGroupSession) error { return h.inner.Cleanup(s) }

// ConsumeClaim feeds claim's records (and the records handed back) to the
// subscriber's handler and tracks which of them are settled.
func (h detachingHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	c := &kafkaClaim{
		d:         h.d,
		sess:      sess,
		topic:     claim.Topic(),
		partition: claim.Partition(),
		state:     map[int64]tracked{},
		linked:    map[*message.Message]struct{}{},
		again:     make(chan struct{}, 1),
	}
	feed := make(chan *sarama.ConsumerMessage)
	stop := make(chan struct{})
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		c.feed(claim.Messages(), feed, stop)
	}()
	err := h.inner.ConsumeClaim(trackedSession{ConsumerGroupSession: sess, c: c}, fedClaim{ConsumerGroupClaim: claim, feed: feed})
	close(stop)
	<-fed
	c.end()
	return err
}

// fedClaim is a claim whose records come from its claim's feed.
type fedClaim struct {
	sarama.ConsumerGroupClaim
	feed chan *sarama.ConsumerMessage
}

// Messages returns the feed.
func (f fedClaim) Messages() <-chan *sarama.ConsumerMessage { return f.feed }

// trackedSession is a session whose MarkMessage goes through its claim.
type trackedSession struct {
	sarama.ConsumerGroupSession
	c *kafkaClaim
}

// MarkMessage settles rec (the subscriber marks a record once it is acked).
func (s trackedSession) MarkMessage(rec *sarama.ConsumerMessage, _ string) {
	if rec.Topic == s.c.topic && rec.Partition == s.c.partition {
		s.c.acked(rec)
		return
	}
	s.ConsumerGroupSession.MarkMessage(rec, "")
}

// offsetState is what became of a delivered record.
type offsetState uint8

// tracked is a delivered offset: its state and its current delivery (a
// record handed back goes out again as a copy, so that the marks and
// settles of the earlier delivery are told apart and ignored).
type tracked struct {
	st  offsetState
	cur *sarama.ConsumerMessage
}

const (
	delivered offsetState = iota // handed to the subscriber, not settled
	detached                     // detached, not settled
	settledOK                    // acked, or detached and settled with ack
)

// kafkaClaim tracks one claimed partition: which delivered records are
// settled, and the records handed back to be delivered again.
type kafkaClaim struct {
	d         *kafkaDetacher
	sess      sarama.ConsumerGroupSession
	topic     string
	partition int32

	mu     sync.Mutex
	order  []int64 // delivered offsets, ascending, from the lowest not settled
	state  map[int64]tracked
	back   []*sarama.ConsumerMessage // handed back, to deliver again
	again  chan struct{}             // signalled when back grows
	ended  bool
	linked map[*message.Message]struct{} // guarded by d.mu: messages in d.msgs
}

// feed hands the claim's records, and the records handed back, to out until
// in closes (the session ends) or stop is closed.
func (c *kafkaClaim) feed(in <-chan *sarama.ConsumerMessage, out chan<- *sarama.ConsumerMessage, stop <-chan struct{}) {
	defer close(out)
	done := c.sess.Context().Done()
	for {
		var rec *sarama.ConsumerMessage
		if rec = c.takeBack(); rec == nil {
			select {
			case r, ok := <-in:
				if !ok {
					return
				}
				rec = r
				c.mu.Lock()
				if _, seen := c.state[rec.Offset]; !seen {
					c.order = append(c.order, rec.Offset)
					c.state[rec.Offset] = tracked{st: delivered, cur: rec}
				}
				c.mu.Unlock()
			case <-c.again:
				continue
			case <-stop:
				return
			case <-done:
				return
			}
		}
		c.d.mu.Lock()
		c.d.pending[rec] = c
		c.d.mu.Unlock()
		select {
		case out <- rec:
		case <-stop:
			return
		case <-done:
			return
		}
	}
}

// takeBack returns the first record handed back, or nil.
func (c *kafkaClaim) takeBack() *sarama.ConsumerMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.back) == 0 {
		return nil
	}
	rec := c.back[0]
	c.back = c.back[1:]
	return rec
}

// detacher returns the DetachFunc of msg, delivered from rec.
func (c *kafkaClaim) detacher(msg *message.Message, rec *sarama.ConsumerMessage) DetachFunc {
	return func() (Settle, error) {
		what := fmt.Sprintf("transports: kafka: detach message %s (topic %q, partition %d, offset %d)",
			msg.UUID, rec.Topic, rec.Partition, rec.Offset)
		c.mu.Lock()
		tr, ok := c.state[rec.Offset]
		switch {
		case c.ended:
			c.mu.Unlock()
			return nil, fmt.Errorf("%s: the partition's claim ended", what)
		case !ok || tr.cur != rec || tr.st == settledOK:
			c.mu.Unlock()
			return nil, fmt.Errorf("%s: already settled", what)
		case tr.st == detached:
			c.mu.Unlock()
			return nil, fmt.Errorf("%s: already detached", what)
		}
		c.state[rec.Offset] = tracked{st: detached, cur: rec}
		c.mu.Unlock()
		// The subscriber takes the ack as its cue to deliver the next
		// record; the mark it makes is ignored (the offset is detached).
		msg.Ack()
		var once sync.Once
		return func(ack bool) error {
			once.Do(func() { c.settle(rec, ack) })
			return nil
		}, nil
	}
}

// acked settles rec's offset when rec is its current delivery and not
// detached (a detached record's Settle decides).
func (c *kafkaClaim) acked(rec *sarama.ConsumerMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tr, ok := c.state[rec.Offset]; ok && tr.cur == rec && tr.st == delivered {
		c.settleLocked(rec.Offset)
	}
}

// settle settles a detached record: ack settles its offset, a nack hands
// it back to be delivered again.
func (c *kafkaClaim) settle(rec *sarama.ConsumerMessage, ack bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	if tr, ok := c.state[rec.Offset]; !ok || tr.cur != rec || tr.st != detached {
		return
	}
	if ack {
		c.settleLocked(rec.Offset)
		return
	}
	again := *rec
	c.state[rec.Offset] = tracked{st: delivered, cur: &again}
	c.back = append(c.back, &again)
	select {
	case c.again <- struct{}{}:
	default:
	}
}

// settleLocked marks off settled and, when that settles the lowest
// delivered offsets, marks the next offset to consume on the session.
// c.mu must be held.
func (c *kafkaClaim) settleLocked(off int64) {
	c.state[off] = tracked{st: settledOK}
	n := 0
	for n < len(c.order) && c.state[c.order[n]].st == settledOK {
		delete(c.state, c.order[n])
		n++
	}
	if n == 0 || c.ended {
		return
	}
	next := c.order[n-1] + 1
	c.order = c.order[n:]
	if len(c.order) > 0 {
		next = c.order[0]
	}
	if c.sess.Context().Err() != nil {
		return // the session ended: its offsets are committed already
	}
	c.sess.MarkOffset(c.topic, c.partition, next, "")
	if !c.d.autoCommit {
		c.sess.Commit()
	}
}

// end stops the claim: later settles do nothing, and the messages that
// were never handed out are forgotten.
func (c *kafkaClaim) end() {
	c.mu.Lock()
	c.ended = true
	c.back = nil
	c.mu.Unlock()
	c.d.mu.Lock()
	for rec, owner := range c.d.pending {
		if owner == c {
			delete(c.d.pending, rec)
		}
	}
	for msg := range c.linked {
		delete(c.d.msgs, msg)
		delete(c.linked, msg)
	}
	c.d.mu.Unlock()
}
