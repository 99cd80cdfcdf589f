package transports_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// kafkaDetach detaches m, failing the test when the transport cannot.
func kafkaDetach(t *testing.T, m *message.Message) transports.Settle {
	t.Helper()
	settle, ok, err := transports.Detach(m)
	if err != nil || !ok {
		t.Fatalf("detach %q: ok %v, error %v", m.Payload, ok, err)
	}
	return settle
}

// TestKafkaDetach: a detached message lets the next one of its partition
// through; a detached message handed back (Settle(false)) is delivered
// again behind the ones already delivered; the committed offset never
// passes a detached message that is not settled, so after a restart the
// group gets every message from there again, and once all are settled
// (in any order) the offset passes them all.
func TestKafkaDetach(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	cfg := transports.KafkaConfig{Partitions: 1, ConsumerGroup: "detach"}
	k1 := newKafka(t, c, cfg)
	for i := range 6 {
		kafkaPublish(t, k1, "d", []byte(strconv.Itoa(i)), nil)
	}
	ch := kafkaSubscribe(t, k1, "d")
	expect := func(ch <-chan *message.Message, want string) *message.Message {
		t.Helper()
		m := kafkaReceive(t, ch)
		if string(m.Payload) != want {
			t.Fatalf("got %q, want %q", m.Payload, want)
		}
		return m
	}

	m0 := expect(ch, "0")
	settle0 := kafkaDetach(t, m0)
	if _, _, err := transports.Detach(m0); err == nil || !strings.Contains(err.Error(), "already detached") {
		t.Fatalf("second detach of one message: %v, want an \"already detached\" error", err)
	}
	m0.Nack() // the router's nack after a detach reaches nothing
	expect(ch, "1").Ack()
	m2 := expect(ch, "2")
	settle2 := kafkaDetach(t, m2)
	expect(ch, "3").Ack()
	if err := settle2(false); err != nil {
		t.Fatal(err)
	}
	// "2" comes again, behind what was already handed to the subscriber.
	var order []string
	for {
		m := kafkaReceive(t, ch)
		order = append(order, string(m.Payload))
		if string(m.Payload) == "2" {
			if err := kafkaDetach(t, m)(true); err != nil {
				t.Fatal(err)
			}
		} else {
			m.Ack()
		}
		if len(order) == 3 {
			break
		}
	}
	if got := strings.Join(slices.Sorted(slices.Values(order)), ","); got != "2,4,5" {
		t.Fatalf("after handing back 2, deliveries %v, want 2, 4 and 5 once each", order)
	}
	if err := k1.Close(); err != nil {
		t.Fatal(err)
	}
	a := kafkaAdmin(t, c)
	if off := kafkaCommitted(t, a, "detach", "d", 0); off > 0 {
		t.Fatalf("committed offset %d while message 0 was detached and not settled, want none or 0", off)
	}
	if err := settle0(true); err != nil {
		t.Fatalf("settle after the transport closed: %v, want nil (it does nothing)", err)
	}

	k2 := newKafka(t, c, cfg)
	ch2 := kafkaSubscribe(t, k2, "d")
	var settles []transports.Settle
	for i := range 6 {
		settles = append(settles, kafkaDetach(t, expect(ch2, strconv.Itoa(i))))
	}
	for i := len(settles) - 1; i >= 0; i-- {
		if err := settles[i](true); err != nil {
			t.Fatal(err)
		}
	}
	if err := k2.Close(); err != nil {
		t.Fatal(err)
	}
	if off := kafkaCommitted(t, a, "detach", "d", 0); off != 6 {
		t.Fatalf("committed offset %d after settling all 6 messages in reverse order, want 6", off)
	}
}

// TestKafkaDetachRebalance: messages detached and never settled by a
// member that loses their partitions in a rebalance are delivered again
// (their offsets were not committed), and their late settles do nothing.
func TestKafkaDetachRebalance(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	cfg := transports.KafkaConfig{Partitions: 2, ConsumerGroup: "rebalance"}
	k1 := newKafka(t, c, cfg)
	const n = 20
	for i := range n {
		kafkaPublish(t, k1, "rb", []byte(strconv.Itoa(i)), map[string]string{transports.MetaEntityKey: "e:" + strconv.Itoa(i)})
	}
	ch1 := kafkaSubscribe(t, k1, "rb")
	// k1 alone holds both partitions: every message flows while held.
	var held []transports.Settle
	perPartition := map[int32]int{}
	for range n {
		m := kafkaReceive(t, ch1)
		perPartition[kafkaDeliveryOf(t, m).partition]++
		held = append(held, kafkaDetach(t, m))
	}
	if len(perPartition) != 2 {
		t.Fatalf("messages on partitions %v, want both partitions used", perPartition)
	}

	// A second member joins: the partitions are shared out again and every
	// message, none of them settled, is delivered again.
	k2 := newKafka(t, c, cfg)
	ch2 := kafkaSubscribe(t, k2, "rb")
	got := map[string]int{}
	from := map[int]bool{}
	for len(got) < n {
		var m *message.Message
		select {
		case m = <-ch1:
			from[1] = true
		case m = <-ch2:
			from[2] = true
		case <-time.After(30 * time.Second):
			t.Fatalf("after the rebalance %d of %d messages came again: %v", len(got), n, got)
		}
		got[string(m.Payload)]++
		m.Ack()
	}
	if !from[2] {
		t.Fatal("the second member got no message after the rebalance")
	}
	for _, settle := range held {
		if err := settle(true); err != nil {
			t.Fatalf("late settle: %v", err)
		}
	}
	// Every message was acked after the rebalance: the group's offsets
	// reach the end of both partitions (the late settles moved nothing).
	a := kafkaAdmin(t, c)
	testenv.WaitFor(t, 20*time.Second, "offsets committed past every message", func() bool {
		for p, count := range perPartition {
			if kafkaCommitted(t, a, "rebalance", "rb", p) != int64(count) {
				return false
			}
		}
		return true
	})
}
