package transports

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
)

// MetaEntityKey is the metadata key naming a message's entity,
// "<cqrs_id>:<pk>" (the outbox relay sets it). The kafka transport uses it as
// the Kafka message key, so that one entity's messages share a partition
// and keep their order; without it the key is built from the body's cqrs_id
// and instance_pk. Messages the kafka transport delivers carry it whenever
// the Kafka record had a key.
const MetaEntityKey = "entity_key"

// kafkaMarshaler turns Watermill messages into Kafka records and back:
// metadata become headers (plus Watermill's UUID header), the record key is
// the entity key, and delivered messages get [MetaRoutingKey] = the topic
// without the transport's prefix.
type kafkaMarshaler struct {
	prefix string
}

var _ kafka.MarshalerUnmarshaler = kafkaMarshaler{}

// Marshal builds the record of msg on topic (a full Kafka topic name).
func (m kafkaMarshaler) Marshal(topic string, msg *message.Message) (*sarama.ProducerMessage, error) {
	if msg.Metadata.Get(kafka.UUIDHeaderKey) != "" {
		return nil, fmt.Errorf("metadata key %s is reserved for the message UUID", kafka.UUIDHeaderKey)
	}
	keys := make([]string, 0, len(msg.Metadata))
	for k := range msg.Metadata {
		// The routing key of a received message is its topic; a message
		// published again goes where Publish sends it.
		if k != MetaRoutingKey {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	headers := make([]sarama.RecordHeader, 0, len(keys)+1)
	headers = append(headers, sarama.RecordHeader{Key: []byte(kafka.UUIDHeaderKey), Value: []byte(msg.UUID)})
	for _, k := range keys {
		headers = append(headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(msg.Metadata[k])})
	}
	rec := &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(msg.Payload), Headers: headers}
	if key := EntityKey(msg); key != "" {
		rec.Key = sarama.StringEncoder(key)
	}
	return rec, nil
}

// Unmarshal builds the Watermill message of a record. It never fails: an
// unmarshal error would stop the partition's consumption for good.
func (m kafkaMarshaler) Unmarshal(rec *sarama.ConsumerMessage) (*message.Message, error) {
	id := ""
	md := make(message.Metadata, len(rec.Headers)+2)
	for _, h := range rec.Headers {
		if h == nil {
			continue
		}
		if string(h.Key) == kafka.UUIDHeaderKey {
			id = string(h.Value)
			continue
		}
		md.Set(string(h.Key), string(h.Value))
	}
	if id == "" {
		id = watermill.NewUUID() // a record from a producer that is not Watermill
	}
	if md.Get(MetaEntityKey) == "" && len(rec.Key) > 0 {
		md.Set(MetaEntityKey, string(rec.Key))
	}
	md.Set(MetaRoutingKey, strings.TrimPrefix(rec.Topic, m.prefix))
	msg := message.NewMessage(id, rec.Value)
	msg.Metadata = md
	return msg, nil
}

// EntityKey returns the entity key of msg, "<cqrs_id>:<pk>": its
// [MetaEntityKey] metadata, or else the cqrs_id and instance_pk of its body
// (a string pk as it is, any other JSON value as its JSON text, so 42 gives
// "author:42" as the outbox writes it). It returns "" when neither gives
// one (the body is not a JSON object with a string cqrs_id).
func EntityKey(msg *message.Message) string {
	if k := msg.Metadata.Get(MetaEntityKey); k != "" {
		return k
	}
	var probe struct {
		CQRSID json.RawMessage `json:"cqrs_id"`
		PK     json.RawMessage `json:"instance_pk"`
	}
	if json.Unmarshal(msg.Payload, &probe) != nil {
		return ""
	}
	var id string
	if json.Unmarshal(probe.CQRSID, &id) != nil || id == "" {
		return ""
	}
	pk := bytes.TrimSpace(probe.PK)
	switch {
	case len(pk) == 0 || string(pk) == "null":
		return id + ":"
	case pk[0] == '"':
		var s string
		if json.Unmarshal(pk, &s) != nil {
			return ""
		}
		return id + ":" + s
	}
	var compact bytes.Buffer
	if json.Compact(&compact, pk) != nil {
		return ""
	}
	return id + ":" + compact.String()
}
