//go:build brokerrestart

// This test restarts the RabbitMQ application (rabbitmqctl stop_app /
// start_app), which breaks every other test using the broker at the same
// time. Run it alone:
//
//	CQRS_TEST_AMQP='amqp://guest:guest@127.0.0.1:5672/' CQRS_REQUIRE_SERVICES=1 \
//	  go test -race -tags brokerrestart -run TestRabbitMQBrokerRestart ./pkg/transports/

package transports_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// After a broker restart the publisher and the subscription come back on
// their own: Publish fails fast during the outage, the message in hand and
// the detached one are redelivered, and consuming resumes.
func TestRabbitMQBrokerRestart(t *testing.T) {
	s := newScratch(t)
	r := s.transport(t)
	q := s.replica(t, r)
	if err := r.Publish("author", msg("detached"), msg("in hand")); err != nil {
		t.Fatal(err)
	}
	ch, _ := subscribe(t, r, q)
	detached := receive(t, ch)
	settle, ok, err := transports.Detach(detached)
	if err != nil || !ok {
		t.Fatalf("Detach: ok=%v err=%v", ok, err)
	}
	inHand := receive(t, ch)

	rabbitmqctl(t, "stop_app")
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			rabbitmqctl(t, "start_app")
		}
	})
	testenv.WaitFor(t, time.Minute, "Publish fails fast while the broker is down", func() bool {
		start := time.Now()
		err := r.Publish("author", msg("during outage"))
		if err == nil {
			return false // not noticed yet
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("Publish during the outage took %s (err %v)", took, err)
		}
		return errors.Is(err, transports.ErrNotConnected) || errors.Is(err, transports.ErrNotConfirmed)
	})
	inHand.Ack() // its channel is gone: the broker redelivers it
	rabbitmqctl(t, "start_app")
	restarted = true

	testenv.WaitFor(t, 2*time.Minute, "Publish works again", func() bool {
		return r.Publish("author", msg("after restart")) == nil
	})
	if err := settle(true); !errors.Is(err, transports.ErrRequeued) {
		t.Fatalf("Settle(true) of a message detached before the restart: err = %v, want ErrRequeued", err)
	}
	got := map[string]int{}
	testenv.WaitFor(t, 2*time.Minute, "the unacked messages and the new one are consumed", func() bool {
		select {
		case m := <-ch:
			got[string(m.Payload)]++
			m.Ack()
		case <-time.After(100 * time.Millisecond):
		}
		return got["detached"] >= 1 && got["in hand"] >= 1 && got["after restart"] >= 1
	})
}
