package transports

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
)

// kafkaPublisher is the kafka transport's producer. Where watermill-kafka's
// Publisher sends the messages of a call one after the other, each waiting
// for its acknowledgement, it hands all of them to Sarama's producer at once
// (SyncProducer.SendMessages): they go out batched per partition with the
// transport's producer settings (idempotent, acks=all, one request in flight
// per broker), and the call returns once every message was acknowledged or
// failed, with the outcome of each.
//
// Order: the records of a call enter the producer in the order of msgs, and
// Sarama's idempotent producer keeps the order of one partition, retries
// included. Records of different partitions are independent: one may fail
// while a later one of another partition, or of the same partition in a
// later produce request, is written.
type kafkaPublisher struct {
	client   sarama.Client
	producer sarama.SyncProducer
	marsh    kafkaMarshaler
	log      *slog.Logger
}

// newKafkaPublisher connects a producer to brokers with cfg (which must ask
// for successes and errors to be returned, as the transport's does).
func newKafkaPublisher(brokers []string, cfg *sarama.Config, marsh kafkaMarshaler, log *slog.Logger) (*kafkaPublisher, error) {
	client, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect client: %w", err)
	}
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("create producer: %w", err)
	}
	return &kafkaPublisher{client: client, producer: producer, marsh: marsh, log: log}, nil
}

// publish sends msgs to topic (a full Kafka topic name) and waits until each
// is acknowledged or failed.
//
// It returns nil when every message was acknowledged, a plain error when
// nothing was sent (no message of the call is published), and otherwise a
// *[PublishError] naming every message that was not acknowledged: its cause
// wraps [ErrRejected] when the message itself was refused (it cannot be
// built, is larger than the producer's or the topic's limit, its topic does
// not exist, is invalid or not authorised, or the broker found the record
// invalid); any other cause (network, broker or producer failure) leaves
// its outcome unknown. The messages not in Failed are acknowledged by every
// in-sync replica.
func (p *kafkaPublisher) publish(topic string, msgs []*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	// A topic that does not exist would cost each message the producer's
	// metadata retries and then trip its circuit breaker, whose error says
	// nothing of the cause: ask once, for the whole call.
	if _, err := p.client.Partitions(topic); err != nil {
		if !kafkaRefused(err) {
			return fmt.Errorf("partitions of topic %q: %w", topic, err)
		}
		cause := fmt.Errorf("%w: %w", ErrRejected, err)
		failed := make(map[int]error, len(msgs))
		for i := range msgs {
			failed[i] = cause
		}
		return &PublishError{Total: len(msgs), Failed: failed}
	}

	recs := make([]*sarama.ProducerMessage, 0, len(msgs))
	at := make([]int, 0, len(msgs)) // at[j]: index in msgs of recs[j]
	var failed map[int]error
	fail := func(i int, cause error) {
		if failed == nil {
			failed = map[int]error{}
		}
		failed[i] = cause
	}
	for i, msg := range msgs {
		rec, err := p.marsh.Marshal(topic, msg)
		if err != nil {
			// No broker would take it: refused like a message the broker
			// turned down, so that a relay sets it aside alone.
			fail(i, fmt.Errorf("%w: message cannot be made a Kafka record: %w", ErrRejected, err))
			continue
		}
		recs = append(recs, rec)
		at = append(at, i)
	}
	if len(recs) > 0 {
		if err := p.producer.SendMessages(recs); err != nil {
			p.sendFailures(recs, at, err, fail)
			p.warnSizeRefusal(topic, failed)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return &PublishError{Total: len(msgs), Failed: failed}
}

// sendFailures records, through fail, the outcome of each record of recs
// (recs[j] is message at[j] of the call) that SendMessages reported failed
// with err.
func (p *kafkaPublisher) sendFailures(recs []*sarama.ProducerMessage, at []int, err error, fail func(int, error)) {
	var perrs sarama.ProducerErrors
	if errors.As(err, &perrs) {
		index := make(map[*sarama.ProducerMessage]int, len(recs))
		for j, rec := range recs {
			index[rec] = at[j]
		}
		mapped := make(map[int]error, len(perrs))
		for _, pe := range perrs {
			i, ok := index[pe.Msg]
			if !ok {
				mapped = nil // cannot say which record failed
				break
			}
			mapped[i] = kafkaCause(pe.Err)
		}
		if mapped != nil {
			for i, cause := range mapped {
				fail(i, cause)
			}
			return
		}
	}
	// No word on single records: none of them counts as published.
	cause := fmt.Errorf("outcome unknown: %w", err)
	for _, i := range at {
		fail(i, cause)
	}
}

// warnSizeRefusal logs a warning when the broker refused several records of
// a call as too large: it refuses a whole produce batch, so records within
// every limit fail with the one that is not, or with none at all when the
// producer builds batches larger than the topic takes.
func (p *kafkaPublisher) warnSizeRefusal(topic string, failed map[int]error) {
	n := 0
	for _, cause := range failed {
		if errors.Is(cause, sarama.ErrMessageSizeTooLarge) || errors.Is(cause, sarama.ErrMessageSetSizeTooLarge) {
			n++
		}
	}
	if n > 1 {
		p.log.Warn("kafka broker refused produce batches as too large; every record of such a batch fails, however small: "+
			"keep the producer's MaxMessageBytes (KafkaConfig.Tune) at or below the topic's max.message.bytes, so that "+
			"an oversized record fails alone before it is sent",
			"topic", topic, "refused_records", n)
	}
}

// kafkaCause is the cause recorded for a record the producer failed with
// err: wrapping [ErrRejected] when the record itself was refused.
func kafkaCause(err error) error {
	if err == nil {
		err = errors.New("producer reported a failure without a cause")
	}
	if kafkaRefused(err) {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	return fmt.Errorf("not acknowledged, outcome unknown: %w", err)
}

// kafkaRefused reports whether a producer error concerns the record (its
// size, its topic, its contents), so that sending it again unchanged would
// fail the same way, rather than the brokers or the connection.
//
// The broker answers per partition and request: a record the broker
// refuses (too large for the topic's max.message.bytes, invalid) fails the
// records sent to its partition in the same request with it. Sarama's
// Producer.MaxMessageBytes (default 1000000) is checked per record before
// sending; keep it at or below the topics' max.message.bytes (Kafka's
// default 1048588) so that an oversized record fails alone.
func kafkaRefused(err error) bool {
	var ce sarama.ConfigurationError
	if errors.As(err, &ce) {
		// Refused by the producer before sending: larger than
		// Producer.MaxMessageBytes.
		return true
	}
	var ke sarama.KError
	if errors.As(err, &ke) {
		switch ke {
		case sarama.ErrMessageSizeTooLarge, sarama.ErrMessageSetSizeTooLarge,
			sarama.ErrUnknownTopicOrPartition, sarama.ErrInvalidTopic, sarama.ErrTopicAuthorizationFailed,
			sarama.ErrInvalidTimestamp, sarama.ErrPolicyViolation, sarama.ErrInvalidRecord:
			return true
		}
	}
	return false
}

// close closes the producer (it waits for the records in flight) and its
// client.
func (p *kafkaPublisher) close() error {
	var errs []error
	if err := p.producer.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close producer: %w", err))
	}
	if err := p.client.Close(); err != nil && !errors.Is(err, sarama.ErrClosedClient) {
		errs = append(errs, fmt.Errorf("close producer's client: %w", err))
	}
	return errors.Join(errs...)
}
