package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gocqrs/gocqrs/pkg/transports"
)

// kafkaNote is printed with every kafka report that uses kfake, which is
// not a real Kafka.
func kafkaNote(o Options) string {
	if len(o.KafkaBrokers) > 0 {
		return ""
	}
	return "note: the broker is kfake (github.com/twmb/franz-go/pkg/kfake), in memory and in this process:\n" +
		"      it shares the process's CPU and says nothing of a real Kafka's disk and network costs."
}

// kafkaBench is one run's Kafka: the brokers, and the topic prefix that
// keeps the run's topics apart from other runs' on a shared cluster.
type kafkaBench struct {
	brokers []string
	prefix  string
	// inProcess is true when brokers are an in-process kfake cluster.
	inProcess bool
}

// kafkaDescription names the Kafka of o for the progress and report lines.
func kafkaDescription(o Options) string {
	if len(o.KafkaBrokers) == 0 {
		return "in-process kfake cluster, 1 broker"
	}
	return "brokers " + strings.Join(o.KafkaBrokers, ",")
}

// CheckKafkaBrokers reports why brokers cannot be a Kafka broker list
// (each host:port).
func CheckKafkaBrokers(brokers []string) error {
	for i, b := range brokers {
		host, port, err := net.SplitHostPort(b)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("broker %d %q is not host:port", i+1, b)
		}
	}
	return nil
}

// setupKafka points cfg at the run's Kafka: o.KafkaBrokers, or an in-process
// kfake cluster started here (closed by e's cleanup). Every topic of the run
// gets a fresh prefix; on an external cluster the run's topics and consumer
// groups are deleted by e's cleanup. It must be called before the transport
// is built, so that the cleanup runs after the transport is closed.
func (e *env) setupKafka(cfg *transports.Config) error {
	kb := &kafkaBench{brokers: e.o.KafkaBrokers, prefix: randomName("bench") + "."}
	if len(kb.brokers) == 0 {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return fmt.Errorf("start in-process kafka (kfake): %w", err)
		}
		e.cleanup = append(e.cleanup, c.Close)
		kb.brokers = c.ListenAddrs()
		kb.inProcess = true
	} else {
		if err := CheckKafkaBrokers(kb.brokers); err != nil {
			return fmt.Errorf("kafka brokers: %w", err)
		}
		queue := e.queue
		e.cleanup = append(e.cleanup, func() {
			if err := kb.deleteRun(queue, transports.DefaultDeadLetterQueue(queue)); err != nil {
				e.o.Logger.Warn("bench: removing the run's kafka topics", "prefix", kb.prefix, "error", err)
			}
		})
	}
	e.kafka = kb
	cfg.URL = strings.Join(kb.brokers, ",")
	cfg.Kafka.TopicPrefix = kb.prefix
	return nil
}

// saramaConfig is the transport's producer and consumer settings
// (idempotent producer, acks=all, the Java client's partitioner) for the
// raw baseline.
func (kb *kafkaBench) saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = "gocqrs-bench"
	c.Version = sarama.V2_8_0_0
	c.Metadata.AllowAutoTopicCreation = false
	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Net.MaxOpenRequests = 1
	c.Producer.Retry.Max = 10
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.Partitioner = sarama.NewMurmur2Partitioner
	c.Consumer.Return.Errors = true
	return c
}

// raw is the broker's limit as a plain Sarama client sees it: n messages,
// keyed 1..n as the relay keys entities, produced to a fresh topic of the
// transport's partition count by one asynchronous producer with the
// transport's settings (idempotent, acks=all) and every send outstanding
// that Sarama allows, then consumed back from every partition; both in
// msgs/s.
func (kb *kafkaBench) raw(ctx context.Context, n int, body []byte) (produce, consume float64, err error) {
	cfg := kb.saramaConfig()
	admin, err := sarama.NewClusterAdmin(kb.brokers, cfg)
	if err != nil {
		return 0, 0, fmt.Errorf("connect admin client: %w", err)
	}
	defer admin.Close()
	topic := kb.prefix + "raw"
	partitions := int32(transports.DefaultKafkaPartitions)
	detail := &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: transports.DefaultKafkaReplicationFactor}
	if err := admin.CreateTopic(topic, detail, false); err != nil {
		return 0, 0, fmt.Errorf("create topic %q: %w", topic, err)
	}
	defer func() { _ = admin.DeleteTopic(topic) }()

	if produce, err = kb.rawProduce(ctx, cfg, topic, n, body); err != nil {
		return 0, 0, err
	}
	consume, err = kb.rawConsume(ctx, cfg, topic, partitions, n)
	return produce, consume, err
}

func (kb *kafkaBench) rawProduce(ctx context.Context, cfg *sarama.Config, topic string, n int, body []byte) (float64, error) {
	p, err := sarama.NewAsyncProducer(kb.brokers, cfg)
	if err != nil {
		return 0, fmt.Errorf("connect producer: %w", err)
	}
	defer p.Close()
	acked := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			select {
			case <-p.Successes():
			case perr := <-p.Errors():
				acked <- fmt.Errorf("produce: %w", perr)
				return
			case <-ctx.Done():
				acked <- ctx.Err()
				return
			}
		}
		acked <- nil
	}()
	start := time.Now()
	for i := 1; i <= n; i++ {
		msg := &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(strconv.Itoa(i)), Value: sarama.ByteEncoder(body)}
		select {
		case p.Input() <- msg:
		case err := <-acked:
			if err == nil {
				err = errors.New("producer acknowledged more messages than were sent")
			}
			return 0, err
		}
	}
	if err := <-acked; err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func (kb *kafkaBench) rawConsume(ctx context.Context, cfg *sarama.Config, topic string, partitions int32, n int) (float64, error) {
	c, err := sarama.NewConsumer(kb.brokers, cfg)
	if err != nil {
		return 0, fmt.Errorf("connect consumer: %w", err)
	}
	defer c.Close()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		got   int
		first error
	)
	done := make(chan struct{})
	for part := int32(0); part < partitions; part++ {
		pc, err := c.ConsumePartition(topic, part, sarama.OffsetOldest)
		if err != nil {
			return 0, fmt.Errorf("consume partition %d: %w", part, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer pc.AsyncClose()
			for {
				select {
				case <-pc.Messages():
					mu.Lock()
					got++
					if got == n {
						close(done)
					}
					mu.Unlock()
				case cerr := <-pc.Errors():
					mu.Lock()
					if first == nil {
						first = cerr
					}
					mu.Unlock()
					cancel()
					return
				case <-cctx.Done():
					return
				}
			}
		}()
	}
	select {
	case <-done:
	case <-cctx.Done():
	}
	rate := float64(n) / time.Since(start).Seconds()
	cancel()
	wg.Wait()
	switch {
	case first != nil:
		return 0, fmt.Errorf("consume: %w", first)
	case got < n:
		return 0, fmt.Errorf("consume: %d of %d messages: %w", got, n, ctx.Err())
	}
	return rate, nil
}

// deleteRun removes the run's topics (those under its prefix) and consumer
// groups from an external cluster.
func (kb *kafkaBench) deleteRun(groups ...string) error {
	admin, err := sarama.NewClusterAdmin(kb.brokers, kb.saramaConfig())
	if err != nil {
		return err
	}
	defer admin.Close()
	var errs []error
	for _, g := range groups {
		if err := admin.DeleteConsumerGroup(g); err != nil && !errors.Is(err, sarama.ErrGroupIDNotFound) {
			errs = append(errs, fmt.Errorf("delete consumer group %q: %w", g, err))
		}
	}
	topics, err := admin.ListTopics()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list topics: %w", err))...)
	}
	for t := range topics {
		if strings.HasPrefix(t, kb.prefix) {
			if err := admin.DeleteTopic(t); err != nil {
				errs = append(errs, fmt.Errorf("delete topic %q: %w", t, err))
			}
		}
	}
	return errors.Join(errs...)
}
