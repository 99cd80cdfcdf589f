package transports_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gocqrs/gocqrs/pkg/tracectx"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// kafkaRecord is a record read back from a topic.
type kafkaRecord struct {
	partition int32
	offset    int64
	key       string
	value     []byte
	headers   map[string]string
}

// kafkaReadTopic returns every record of topic (full name), by partition in
// offset order. Publish has returned, so the partitions' end offsets say how
// many records there are.
func kafkaReadTopic(t *testing.T, c *kfake.Cluster, topic string) map[int32][]kafkaRecord {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	client, err := sarama.NewClient(c.ListenAddrs(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cons, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32][]kafkaRecord{}
	for _, p := range parts {
		end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		if end == 0 {
			continue
		}
		pc, err := cons.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.After(20 * time.Second)
		for int64(len(out[p])) < end {
			select {
			case m := <-pc.Messages():
				h := map[string]string{}
				for _, rh := range m.Headers {
					h[string(rh.Key)] = string(rh.Value)
				}
				out[p] = append(out[p], kafkaRecord{partition: p, offset: m.Offset, key: string(m.Key), value: m.Value, headers: h})
			case err := <-pc.Errors():
				t.Fatalf("partition %d: %v", p, err)
			case <-deadline:
				t.Fatalf("partition %d: %d of %d records within 20 s", p, len(out[p]), end)
			}
		}
		_ = pc.Close()
	}
	return out
}

// kafkaUUIDs returns how often each message UUID occurs in recs.
func kafkaUUIDs(recs map[int32][]kafkaRecord) map[string]int {
	seen := map[string]int{}
	for _, rs := range recs {
		for _, r := range rs {
			seen[r.headers[kafka.UUIDHeaderKey]]++
		}
	}
	return seen
}

// kafkaEntityMessages returns n messages of entities "item:0".."item:<e-1>",
// revisions in order: message i is revision i/e of entity i%e.
func kafkaEntityMessages(t *testing.T, n, e int) []*message.Message {
	t.Helper()
	msgs := make([]*message.Message, n)
	for i := range msgs {
		m := message.NewMessage(watermill.NewUUID(), kafkaBody(t, "item", fmt.Sprint(i%e), i/e))
		m.Metadata.Set(transports.MetaEntityKey, fmt.Sprintf("item:%d", i%e))
		m.Metadata.Set(tracectx.HeaderTraceparent, testTraceparentKafka)
		msgs[i] = m
	}
	return msgs
}

const testTraceparentKafka = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// One Publish call of 1000 messages of 50 entities lands every message once,
// each entity's in one partition in the call's order, with the entity key as
// record key and the metadata (trace context included) as headers.
func TestKafkaPublishBatchKeepsEntityOrder(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	k := newKafka(t, c, transports.KafkaConfig{Partitions: 8, TopicPrefix: "b."})
	const n, entities = 1000, 50
	msgs := kafkaEntityMessages(t, n, entities)
	if err := k.Publish("item", msgs...); err != nil {
		t.Fatal(err)
	}
	recs := kafkaReadTopic(t, c, "b.item")
	seen := kafkaUUIDs(recs)
	for i, m := range msgs {
		if seen[m.UUID] != 1 {
			t.Fatalf("message %d (%s) is on the topic %d times", i, m.UUID, seen[m.UUID])
		}
	}
	if len(seen) != n {
		t.Fatalf("%d distinct messages on the topic, want %d", len(seen), n)
	}
	partitionOf := map[string]int32{}
	nextRev := map[string]int{}
	for p, rs := range recs {
		for _, r := range rs {
			pk, rev := kafkaRecordEntity(t, r)
			key := "item:" + pk
			if r.key != key || r.headers[transports.MetaEntityKey] != key {
				t.Fatalf("record %d/%d of entity %s has key %q, header %q", p, r.offset, key, r.key, r.headers[transports.MetaEntityKey])
			}
			if r.headers[tracectx.HeaderTraceparent] != testTraceparentKafka {
				t.Fatalf("record %d/%d lost its traceparent: %v", p, r.offset, r.headers)
			}
			if q, ok := partitionOf[key]; ok && q != p {
				t.Fatalf("entity %s in partitions %d and %d", key, q, p)
			}
			partitionOf[key] = p
			if rev != nextRev[key] {
				t.Fatalf("entity %s: revision %d at %d/%d, want %d (out of order)", key, rev, p, r.offset, nextRev[key])
			}
			nextRev[key]++
		}
	}
	if len(partitionOf) != entities {
		t.Fatalf("%d entities on the topic, want %d", len(partitionOf), entities)
	}
	if len(recs) < 2 {
		t.Fatalf("50 entities all in %d partition(s)", len(recs))
	}
}

// kafkaRecordEntity returns the pk and revision in the body of r.
func kafkaRecordEntity(t *testing.T, r kafkaRecord) (pk string, rev int) {
	t.Helper()
	var body struct {
		PK   string `json:"instance_pk"`
		Data struct {
			Rev int `json:"cqrs_revision"`
		} `json:"instance_data"`
	}
	if err := json.Unmarshal(r.value, &body); err != nil {
		t.Fatalf("record %d/%d: %v", r.partition, r.offset, err)
	}
	return body.PK, body.Data.Rev
}

// A message larger than the producer's MaxMessageBytes, and one that cannot
// be made a record, fail alone as rejections (what a relay sets aside); every
// other message of the call is published once.
func TestKafkaPublishRefusedMessageFailsAlone(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	k := newKafka(t, c, transports.KafkaConfig{Partitions: 4, Tune: func(sc *sarama.Config) {
		kafkaFastGroups(sc)
		sc.Producer.MaxMessageBytes = 8 << 10
	}})
	const n = 200
	msgs := kafkaEntityMessages(t, n, 20)
	const big, reserved = 77, 150
	msgs[big].Payload = bytes.Repeat([]byte("x"), 20<<10)
	msgs[reserved].Metadata.Set(kafka.UUIDHeaderKey, "mine")
	err := k.Publish("item", msgs...)
	if !errors.Is(err, transports.ErrRejected) {
		t.Fatalf("err = %v, want one wrapping ErrRejected", err)
	}
	var pe *transports.PublishError
	if !errors.As(err, &pe) || pe.Total != n {
		t.Fatalf("err = %v, want a PublishError of %d messages", err, n)
	}
	failed := transports.PublishFailures(err, n)
	if len(failed) != 2 || failed[big] == nil || failed[reserved] == nil {
		t.Fatalf("failed messages %v, want %d and %d only", failed, big, reserved)
	}
	for i, cause := range failed {
		if !errors.Is(cause, transports.ErrRejected) {
			t.Fatalf("message %d: cause %v does not wrap ErrRejected", i, cause)
		}
	}
	if !strings.Contains(failed[big].Error(), "MaxMessageBytes") {
		t.Fatalf("cause of the oversized message: %v", failed[big])
	}
	seen := kafkaUUIDs(kafkaReadTopic(t, c, "item"))
	for i, m := range msgs {
		want := 1
		if i == big || i == reserved {
			want = 0
		}
		if seen[m.UUID] != want {
			t.Fatalf("message %d is on the topic %d times, want %d", i, seen[m.UUID], want)
		}
	}
}

// A record larger than the topic's max.message.bytes is refused by the
// broker: it is reported rejected, never published; every message reported
// published is on the topic once, and none reported failed is. The
// producer goes on publishing afterwards.
func TestKafkaPublishBrokerRefusal(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	limit := "100000"
	err := kafkaAdmin(t, c).CreateTopic("small", &sarama.TopicDetail{NumPartitions: 4, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"max.message.bytes": &limit}}, false)
	if err != nil {
		t.Fatal(err)
	}
	k := newKafka(t, c, transports.KafkaConfig{})
	const n, big = 200, 77
	msgs := kafkaEntityMessages(t, n, 20)
	msgs[big].Payload = bytes.Repeat([]byte("x"), 200<<10)
	err = k.Publish("small", msgs...)
	failed := transports.PublishFailures(err, n)
	if cause := failed[big]; !errors.Is(cause, transports.ErrRejected) || !errors.Is(cause, sarama.ErrMessageSizeTooLarge) {
		t.Fatalf("oversized message: cause %v, want ErrRejected and MessageSizeTooLarge (err %v)", cause, err)
	}
	for i, cause := range failed {
		// After a refused batch Sarama's idempotent producer bumps its
		// epoch, and the broker refuses other partitions' batches in
		// flight with the old one: not written, their outcome reported
		// unknown (the relay publishes them again), as the topic shows
		// below.
		if !errors.Is(cause, transports.ErrRejected) && !errors.Is(cause, sarama.ErrInvalidProducerEpoch) {
			t.Fatalf("message %d: cause %v does not wrap ErrRejected (nor the old producer epoch)", i, cause)
		}
	}
	if len(failed) == n {
		t.Fatalf("every message failed: %v", err)
	}
	t.Logf("%d of %d messages failed with the oversized one (its partition's batch, and batches sent with the old producer epoch)", len(failed), n)

	more := kafkaEntityMessages(t, 50, 20)
	if err := k.Publish("small", more...); err != nil {
		t.Fatalf("publish after a refusal: %v", err)
	}
	seen := kafkaUUIDs(kafkaReadTopic(t, c, "small"))
	for i, m := range msgs {
		want := 1
		if _, ok := failed[i]; ok {
			want = 0
		}
		if seen[m.UUID] != want {
			t.Fatalf("message %d (failed: %v) is on the topic %d times, want %d", i, failed[i], seen[m.UUID], want)
		}
	}
	for i, m := range more {
		if seen[m.UUID] != 1 {
			t.Fatalf("later message %d is on the topic %d times", i, seen[m.UUID])
		}
	}
}

// With AutoCreateTopics off, a call to a topic that does not exist fails
// message by message as rejections, and quickly (not once per message).
func TestKafkaPublishMissingTopicRejected(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	off := false
	k := newKafka(t, c, transports.KafkaConfig{AutoCreateTopics: &off, ConsumerGroup: "g"})
	const n = 100
	start := time.Now()
	err := k.Publish("missing", kafkaEntityMessages(t, n, 10)...)
	var pe *transports.PublishError
	if !errors.As(err, &pe) || pe.Total != n || len(pe.Failed) != n {
		t.Fatalf("err = %v, want a PublishError failing all %d messages", err, n)
	}
	for i, cause := range pe.Failed {
		if !errors.Is(cause, transports.ErrRejected) || !errors.Is(cause, sarama.ErrUnknownTopicOrPartition) {
			t.Fatalf("message %d: cause %v", i, cause)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("failing a call to a missing topic took %s", d)
	}
}

// A broker that keeps failing produce requests (a retriable error, until
// the producer's retries run out) leaves every message's outcome unknown:
// failed, not a rejection. Once the broker recovers, so does Publish.
func TestKafkaPublishBrokerFailureIsNotRejection(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	k := newKafka(t, c, transports.KafkaConfig{Partitions: 2})
	kafkaPublish(t, k, "flaky", []byte("first"), nil) // topic and metadata in place
	const notEnoughReplicas = 19
	failing := make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case <-failing:
			return nil, nil, false // recovered: handled as usual
		default:
		}
		c.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			st.TopicID = rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = notEnoughReplicas
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	const n = 20
	msgs := kafkaEntityMessages(t, n, 5)
	err := k.Publish("flaky", msgs...)
	failed := transports.PublishFailures(err, n)
	if len(failed) != n {
		t.Fatalf("%d of %d messages failed against a failing broker: %v", len(failed), n, err)
	}
	if errors.Is(err, transports.ErrRejected) {
		t.Fatalf("a broker failure is reported as a rejection: %v", err)
	}
	if !errors.Is(err, sarama.ErrNotEnoughReplicas) {
		t.Fatalf("err = %v, want the broker's error", err)
	}
	close(failing)
	again := kafkaEntityMessages(t, n, 5)
	if err := k.Publish("flaky", again...); err != nil {
		t.Fatalf("publish after the broker recovered: %v", err)
	}
	seen := kafkaUUIDs(kafkaReadTopic(t, c, "flaky"))
	for i := range n {
		if seen[msgs[i].UUID] != 0 || seen[again[i].UUID] != 1 {
			t.Fatalf("message %d: failed one on the topic %d times, later one %d times", i, seen[msgs[i].UUID], seen[again[i].UUID])
		}
	}
}

// BenchmarkKafkaPublish publishes calls of 500 messages of 100 entities
// to an 8-partition topic of an in-process Kafka, 4 calls at once (as the
// relay's default MaxInFlight); one op is one message.
func BenchmarkKafkaPublish(b *testing.B) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	k, err := transports.NewKafka(context.Background(), kafkaConfig(c, transports.KafkaConfig{Partitions: 8}), kafkaDiscardLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	const perCall = 500
	body := bytes.Repeat([]byte("x"), 300)
	b.SetParallelism(2) // with GOMAXPROCS 2: 4 calls at once
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		msgs := make([]*message.Message, 0, perCall)
		flush := func() {
			if err := k.Publish("bench", msgs...); err != nil {
				b.Error(err)
			}
			msgs = msgs[:0]
		}
		for i := 0; pb.Next(); i++ {
			m := message.NewMessage(watermill.NewUUID(), body)
			m.Metadata.Set(transports.MetaEntityKey, fmt.Sprintf("item:%d", i%100))
			msgs = append(msgs, m)
			if len(msgs) == perCall {
				flush()
			}
		}
		if len(msgs) > 0 {
			flush()
		}
	})
}
