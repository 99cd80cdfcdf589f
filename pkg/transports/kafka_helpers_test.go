package transports_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gocqrs/gocqrs/pkg/transports"
)

// newKafkaCluster starts an in-process Kafka of three brokers for one test.
func newKafkaCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// kafkaFastGroups makes consumer groups notice rebalances and commit quickly.
func kafkaFastGroups(c *sarama.Config) {
	c.Consumer.Group.Heartbeat.Interval = 100 * time.Millisecond
	c.Consumer.Offsets.AutoCommit.Interval = 100 * time.Millisecond
	c.Metadata.Retry.Backoff = 50 * time.Millisecond
}

// kafkaConfig returns a transport configuration for cluster c.
func kafkaConfig(c *kfake.Cluster, kc transports.KafkaConfig) transports.Config {
	if kc.Tune == nil {
		kc.Tune = kafkaFastGroups
	}
	return transports.Config{Transport: transports.KafkaName, URL: strings.Join(c.ListenAddrs(), ","), Kafka: kc}
}

// newKafka connects a kafka transport to c, closed when the test ends.
func newKafka(t *testing.T, c *kfake.Cluster, kc transports.KafkaConfig) *transports.Kafka {
	t.Helper()
	k, err := transports.NewKafka(context.Background(), kafkaConfig(c, kc), kafkaDiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

func kafkaDiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// entityBody is a minimal django-cqrs body of one entity revision.
func kafkaBody(t *testing.T, cqrsID string, pk any, rev int) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"signal_type": "SAVE", "cqrs_id": cqrsID, "instance_pk": pk, "retries": 0,
		"instance_data": map[string]any{"id": pk, "cqrs_revision": rev},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// kafkaDelivery is what a test saw of one delivered message.
type kafkaDelivery struct {
	msg       *message.Message
	uuid      string
	key       string
	partition int32
	offset    int64
	pk        string
	rev       int
}

func kafkaDeliveryOf(t *testing.T, msg *message.Message) kafkaDelivery {
	key, _ := kafka.MessageKeyFromCtx(msg.Context())
	part, ok := kafka.MessagePartitionFromCtx(msg.Context())
	if !ok {
		t.Errorf("message %s carries no partition", msg.UUID)
	}
	off, _ := kafka.MessagePartitionOffsetFromCtx(msg.Context())
	var body struct {
		PK   json.RawMessage `json:"instance_pk"`
		Data struct {
			Rev int `json:"cqrs_revision"`
		} `json:"instance_data"`
	}
	_ = json.Unmarshal(msg.Payload, &body)
	return kafkaDelivery{msg: msg, uuid: msg.UUID, key: string(key), partition: part, offset: off,
		pk: strings.Trim(string(body.PK), `"`), rev: body.Data.Rev}
}

// publish sends body on routing key topic, failing the test on error.
func kafkaPublish(t *testing.T, k *transports.Kafka, topic string, body []byte, md map[string]string) *message.Message {
	t.Helper()
	m := message.NewMessage(watermill.NewUUID(), body)
	for key, v := range md {
		m.Metadata.Set(key, v)
	}
	if err := k.Publish(topic, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// kafkaSubscribe subscribes to routing key topic on k until the test ends.
func kafkaSubscribe(t *testing.T, k *transports.Kafka, topic string) <-chan *message.Message {
	t.Helper()
	ch, err := k.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// receive returns the next message of ch, or fails the test after 20 s.
func kafkaReceive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no message within 20 s")
	}
	return nil
}

// admin returns a Sarama admin client of c, closed when the test ends.
func kafkaAdmin(t *testing.T, c *kfake.Cluster) sarama.ClusterAdmin {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	a, err := sarama.NewClusterAdmin(c.ListenAddrs(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// committed returns the committed offset of group on topic's partition p
// (-1 when none).
func kafkaCommitted(t *testing.T, a sarama.ClusterAdmin, group, topic string, p int32) int64 {
	t.Helper()
	res, err := a.ListConsumerGroupOffsets(group, map[string][]int32{topic: {p}})
	if err != nil {
		t.Fatal(err)
	}
	b := res.GetBlock(topic, p)
	if b == nil {
		return -1
	}
	return b.Offset
}
