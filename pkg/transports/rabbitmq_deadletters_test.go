package transports_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// drainBodies takes every message of queue (removing them) and returns
// their bodies in order.
func drainBodies(t *testing.T, rawURL, queue string) []string {
	t.Helper()
	ch := rawChannel(t, rawURL)
	var out []string
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatalf("get from %q: %v", queue, err)
		}
		if !ok {
			return out
		}
		out = append(out, string(d.Body))
	}
}

func TestDeadLettersQueueReaderKeepsOrder(t *testing.T) {
	s := newScratch(t)
	q := s.queue(t, nil, "k")
	for i := 1; i <= 5; i++ {
		s.publishRaw(t, "k", amqp.Publishing{ContentType: "text/plain", Expiration: "864000000", Body: []byte(fmt.Sprintf("m%d", i))})
	}
	r := s.transport(t)
	testenv.WaitFor(t, wait, "5 messages queued", func() bool { n, err := r.QueueLength(q); return err == nil && n == 5 })

	rd, err := r.ReadQueue(q)
	if err != nil {
		t.Fatal(err)
	}
	var got []*transports.QueuedMessage
	for range 3 {
		m, err := rd.Next()
		if err != nil || m == nil {
			t.Fatalf("next: %v, %v", m, err)
		}
		got = append(got, m)
	}
	if string(got[0].Body) != "m1" || got[0].RoutingKey != "k" || got[0].Exchange != s.exchange ||
		got[0].Expiration != "864000000" || got[0].ContentType != "text/plain" {
		t.Errorf("first message: %+v", got[0])
	}
	if n, err := r.QueueLength(q); err != nil || n != 2 {
		t.Errorf("ready while 3 are held: %d, %v; want 2", n, err)
	}
	if err := rd.Remove(got[1]); err != nil {
		t.Fatal(err)
	}
	if err := rd.Remove(got[1]); err == nil {
		t.Error("removing a message twice: no error")
	}
	if err := rd.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rd.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	want := []string{"m1", "m3", "m4", "m5"}
	if got := drainBodies(t, s.url, q); !slices.Equal(got, want) {
		t.Errorf("queue after reading 3 and removing m2: %q, want %q", got, want)
	}
}

func TestDeadLettersQueueReaderEmptyQueue(t *testing.T) {
	s := newScratch(t)
	q := s.queue(t, nil)
	r := s.transport(t)
	rd, err := r.ReadQueue(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if m, err := rd.Next(); m != nil || err != nil {
		t.Errorf("next on an empty queue: %+v, %v; want nil, nil", m, err)
	}
	if _, err := r.QueueLength(testenv.Name("gocqrs_missing")); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("length of a missing queue: %v; want a 404 error", err)
	}
}

func TestDeadLettersDeclareReplicaQueues(t *testing.T) {
	s := newScratch(t)
	r := s.transport(t)
	queue, dlq := testenv.Name("gocqrs_q"), testenv.Name("gocqrs_dlq")
	t.Cleanup(func() { deleteQueue(t, s.url, queue); deleteQueue(t, s.url, dlq) })

	// No cqrs_id: both queues, no binding.
	if err := r.DeclareReplicaQueues(queue, dlq, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{queue, dlq} {
		if n, err := r.QueueLength(name); err != nil || n != 0 {
			t.Errorf("queue %q after declaring: %d, %v", name, n, err)
		}
	}
	msg := func() *message.Message { return message.NewMessage("u", []byte("{}")) }
	if err := r.Publish(transports.DirectKey(queue, "author"), msg()); !errors.Is(err, transports.ErrUnroutable) {
		t.Errorf("publish before any binding: %v; want ErrUnroutable", err)
	}

	// With cqrs_ids: the three bindings of each.
	if err := r.DeclareReplicaQueues(queue, dlq, []string{"author", "book"}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"author", transports.DirectKey(queue, "book"), transports.DeadLetterKey(dlq, "author")} {
		if err := r.Publish(key, msg()); err != nil {
			t.Errorf("publish on %q: %v", key, err)
		}
	}
	if n := s.depth(t, queue); n != 2 {
		t.Errorf("queue holds %d, want 2", n)
	}
	if n := s.depth(t, dlq); n != 1 {
		t.Errorf("dead-letter queue holds %d, want 1", n)
	}

	for _, bad := range [][2]string{{queue, queue}, {"a#", dlq}, {queue, ""}} {
		if err := r.DeclareReplicaQueues(bad[0], bad[1], nil); err == nil {
			t.Errorf("DeclareReplicaQueues(%q, %q): no error", bad[0], bad[1])
		}
	}
	if err := r.DeclareReplicaQueues(queue, dlq, []string{"a*b"}); err == nil || !strings.Contains(err.Error(), "a*b") {
		t.Errorf("wildcard cqrs_id: %v", err)
	}
}

func TestDeadLettersPurgeQueue(t *testing.T) {
	s := newScratch(t)
	q := s.queue(t, nil, "k")
	for i := range 3 {
		s.publishRaw(t, "k", amqp.Publishing{Body: []byte(fmt.Sprint(i))})
	}
	r := s.transport(t)
	testenv.WaitFor(t, wait, "3 messages queued", func() bool { n, err := r.QueueLength(q); return err == nil && n == 3 })
	n, err := r.PurgeQueue(q)
	if err != nil || n != 3 {
		t.Fatalf("purge: %d, %v; want 3", n, err)
	}
	if n := s.depth(t, q); n != 0 {
		t.Errorf("queue holds %d after purge", n)
	}
	if _, err := r.PurgeQueue(testenv.Name("gocqrs_missing")); err == nil {
		t.Error("purging a missing queue: no error")
	}
}
