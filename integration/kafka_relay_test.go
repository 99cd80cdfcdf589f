package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// TestKafkaRelayRefusedTopic: with topic auto-creation off, a cqrs_id whose
// topic does not exist ("orphan"), written between ones whose topic does,
// does not stop the relay. Kafka refuses its messages (each reported alone
// by the transport's batching publisher); the relay sets the row aside
// (attempts and last_error recorded, the row kept) and publishes every other
// row, those written after the refusal included, in order.
func TestKafkaRelayRefusedTopic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	scfg := sarama.NewConfig()
	scfg.Version = sarama.V2_8_0_0
	admin, err := sarama.NewClusterAdmin(cluster.ListenAddrs(), scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	if err := admin.CreateTopic("author", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
		t.Fatal(err)
	}

	db, insert := orphanMaster(t)
	// Committed before the relay starts: one batch, the orphan in the middle.
	insert("author", 1)
	insert("orphan", 1)
	insert("author", 2)

	off := false
	tr, err := transports.NewKafka(ctx, transports.Config{
		Transport: transports.KafkaName, URL: strings.Join(cluster.ListenAddrs(), ","),
		Kafka: transports.KafkaConfig{AutoCreateTopics: &off, Tune: func(c *sarama.Config) {
			c.Metadata.Retry.Backoff = 50 * time.Millisecond
		}},
	}, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	relay, err := outbox.NewRelay(db.DB, db.Dialect, tr.Publisher(), outbox.RelayOptions{
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond,
		ErrorBackoff: 20 * time.Millisecond, ErrorBackoffMax: 200 * time.Millisecond,
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	t.Cleanup(func() { // runs before tr.Close, registered earlier
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("relay: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("relay did not stop within 30 s")
		}
	})
	testenv.WaitFor(t, 30*time.Second, "kafka's refusal of the orphan", func() bool { return relay.Stats().Rejected >= 1 })

	// Written after the refusal: published as well.
	for id := 3; id <= 10; id++ {
		insert("author", id)
	}
	testenv.WaitFor(t, 30*time.Second, "10 rows published", func() bool { return relay.Stats().Published >= 10 })

	client, err := sarama.NewClient(cluster.ListenAddrs(), scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	end, err := client.GetOffset("author", 0, sarama.OffsetNewest)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	pc, err := cons.ConsumePartition("author", 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var pks []string
	for int64(len(pks)) < end {
		select {
		case msg := <-pc.Messages():
			p, err := wire.Decode(msg.Value)
			if err != nil {
				t.Fatal(err)
			}
			pks = append(pks, fmt.Sprint(p.InstancePK))
		case <-time.After(20 * time.Second):
			t.Fatalf("read %d of %d records of topic author", len(pks), end)
		}
	}
	if got := strings.Join(pks, ","); got != "1,2,3,4,5,6,7,8,9,10" {
		t.Errorf("topic author holds %s, want 1..10 in order, once each", got)
	}

	type row struct {
		CQRSID    string  `db:"cqrs_id"`
		Attempts  int     `db:"attempts"`
		LastError *string `db:"last_error"`
	}
	var rows []row
	testenv.WaitFor(t, 30*time.Second, "the outbox holding only the orphan's row", func() bool {
		rows = nil
		if err := db.SelectContext(ctx, &rows, "SELECT cqrs_id, attempts, last_error FROM cqrs_outbox"); err != nil {
			t.Fatal(err)
		}
		return len(rows) == 1
	})
	r := rows[0]
	if r.CQRSID != "orphan" || r.Attempts < 1 || r.LastError == nil || !strings.Contains(*r.LastError, "rejected") {
		last := "NULL"
		if r.LastError != nil {
			last = *r.LastError
		}
		t.Errorf("outbox row %+v (last_error %s), want the orphan with attempts >= 1 and a rejection as last_error", r, last)
	}
	if st := relay.Stats(); st.Published != 10 || st.Rejected < 1 {
		t.Errorf("relay stats %+v, want 10 published and the orphan rejected", st)
	}
}
