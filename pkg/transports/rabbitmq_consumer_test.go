package transports_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// poisonPK is the instance_pk scriptedApplier always fails on.
const poisonPK = "666"

// scriptedApplier records what the consumer hands it and fails poisonPK.
type scriptedApplier struct {
	mu    sync.Mutex
	calls []string // "<pk>/<retries>/<direct>"
}

func (a *scriptedApplier) Apply(_ context.Context, d replica.Delivery) (replica.Result, error) {
	pk := fmt.Sprint(d.Payload.InstancePK)
	a.mu.Lock()
	a.calls = append(a.calls, fmt.Sprintf("%s/%d/%v", pk, d.Payload.Retries, d.Direct))
	a.mu.Unlock()
	if pk == poisonPK {
		return replica.Result{}, errors.New("scripted failure")
	}
	return replica.Result{Outcome: replica.OutcomeCreated, StoredRevision: -1}, nil
}

func (a *scriptedApplier) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

func authorBody(pk int) string {
	return fmt.Sprintf(`{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"cqrs_revision":0,`+
		`"cqrs_updated":"2024-01-02 03:04:05+00:00","id":%d},"previous_data":null,"instance_pk":%d,`+
		`"correlation_id":null,"retries":0,"expires":null,"meta":{}}`, pk, pk)
}

// The replica consumer on the rabbitmq transport: broadcast and direct
// messages arrive on the one replica queue and are told apart by routing
// key; a failing message is held detached while the messages behind it are
// applied, requeued on cqrs.<queue>.author, then dead-lettered with
// django-cqrs's properties and expiration.
func TestRabbitMQWithReplicaConsumer(t *testing.T) {
	t.Parallel()
	s := newScratch(t)
	r := s.transport(t)
	q := testenv.Name("gocqrs_q")
	dlq := "dead_letter_" + q
	t.Cleanup(func() {
		deleteQueue(t, s.url, q)
		deleteQueue(t, s.url, dlq)
	})
	reg := registry.New()
	if err := reg.RegisterReplica(registry.ReplicaModel{CQRSID: "author", Table: "author_ref"}); err != nil {
		t.Fatal(err)
	}
	ap := &scriptedApplier{}
	maxRetries := 1
	c, err := consumer.New(r, reg, ap, consumer.Options{
		Queue: q, MaxRetries: &maxRetries, RetryDelay: time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("consumer: %v", err)
			}
		case <-time.After(wait):
			t.Error("consumer did not stop")
		}
	})
	select {
	case <-c.Running():
	case <-time.After(wait):
		t.Fatal("consumer did not start")
	}

	if err := r.Publish("author", msg(authorBody(666))); err != nil {
		t.Fatal(err)
	}
	for pk := 1; pk <= 5; pk++ {
		if err := r.Publish("author", msg(authorBody(pk))); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Publish("cqrs."+q+".author", msg(authorBody(7))); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, wait, "the poison message dead-lettered", func() bool { return s.depth(t, dlq) == 1 })

	calls := ap.seen()
	want := []string{"666/0/false", "1/0/false", "2/0/false", "3/0/false", "4/0/false", "5/0/false", "7/0/true", "666/1/true"}
	if strings.Join(calls, " ") != strings.Join(want, " ") {
		t.Fatalf("applier calls\n got %v\nwant %v (the held message must not block the ones behind it)", calls, want)
	}
	d, ok, err := rawChannel(t, s.url).Get(dlq, true)
	if err != nil || !ok {
		t.Fatalf("dead letter: ok=%v err=%v", ok, err)
	}
	p, err := wire.Decode(d.Body)
	if err != nil {
		t.Fatal(err)
	}
	if d.RoutingKey != "cqrs."+dlq+".author" || d.Expiration != "864000000" || d.ContentType != "text/plain" ||
		d.DeliveryMode != 2 || d.Headers != nil || p.Retries != 1 {
		t.Fatalf("dead letter on %q: expiration %q, content type %q, mode %d, headers %v, retries %d",
			d.RoutingKey, d.Expiration, d.ContentType, d.DeliveryMode, d.Headers, p.Retries)
	}
	testenv.WaitFor(t, wait, "the replica queue drained and acked", func() bool {
		ready, unacked := queueCounts(t, "/", q)
		return ready == 0 && unacked == 0
	})
	if st := c.Stats(); st.Requeued != 1 || st.DeadLettered != 1 || st.Applied != 6 {
		t.Fatalf("consumer stats %+v", st)
	}
}
