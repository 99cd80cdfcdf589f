package transports_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/go-viper/mapstructure/v2"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/outbox"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

func TestKafkaEntityKey(t *testing.T) {
	t.Parallel()
	if transports.MetaEntityKey != outbox.MetadataEntityKey {
		t.Fatalf("MetaEntityKey %q differs from the relay's %q", transports.MetaEntityKey, outbox.MetadataEntityKey)
	}
	for _, c := range []struct{ md, body, want string }{
		{"author:7", `{"cqrs_id":"x","instance_pk":1}`, "author:7"},
		{"", `{"cqrs_id":"author","instance_pk":42}`, "author:42"},
		{"", `{"cqrs_id":"author","instance_pk":123456789012345678901234567890}`, "author:123456789012345678901234567890"},
		{"", `{"instance_pk":"a,b","cqrs_id":"book"}`, "book:a,b"},
		{"", `{"cqrs_id":"book","instance_pk":null}`, "book:"},
		{"", `{"cqrs_id":"book"}`, "book:"},
		{"", `{"cqrs_id":"book","instance_pk":[1, 2]}`, "book:[1,2]"},
		{"", `{"cqrs_id":7,"instance_pk":1}`, ""},
		{"", `not json`, ""},
	} {
		m := message.NewMessage("u", []byte(c.body))
		if c.md != "" {
			m.Metadata.Set(transports.MetaEntityKey, c.md)
		}
		if got := transports.EntityKey(m); got != c.want {
			t.Errorf("EntityKey(%s, metadata %q) = %q, want %q", c.body, c.md, got, c.want)
		}
	}
}

func TestKafkaConfigErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	neg := int32(-1)
	for _, c := range []struct {
		name string
		cfg  transports.Config
		want []string
	}{
		{"no brokers", transports.Config{}, []string{"no brokers"}},
		{"both", transports.Config{URL: "a:1", Kafka: transports.KafkaConfig{Brokers: []string{"b:2"}}}, []string{"url", "kafka.brokers"}},
		{"not host:port", transports.Config{URL: "a:1,nohost"}, []string{"config key url", `"nohost"`}},
		{"bad list", transports.Config{Kafka: transports.KafkaConfig{Brokers: []string{"x"}}}, []string{"kafka.brokers"}},
		{"partitions", transports.Config{URL: "a:1", Kafka: transports.KafkaConfig{Partitions: neg}}, []string{"kafka.partitions", "-1"}},
		{"replication", transports.Config{URL: "a:1", Kafka: transports.KafkaConfig{ReplicationFactor: -2}}, []string{"kafka.replication_factor"}},
		{"prefix", transports.Config{URL: "a:1", Kafka: transports.KafkaConfig{TopicPrefix: "a/b"}}, []string{"kafka.topic_prefix", `'/'`}},
		{"offset", transports.Config{URL: "a:1", Kafka: transports.KafkaConfig{InitialOffset: "first"}}, []string{"kafka.initial_offset", `"first"`}},
		{"workers", transports.Config{URL: "a:1", Kafka: transports.KafkaConfig{Workers: -3}}, []string{"kafka.workers"}},
		{"version", transports.Config{URL: "a:1", Kafka: transports.KafkaConfig{Version: "new"}}, []string{"kafka.version", `"new"`}},
		{"old version", transports.Config{URL: "a:1", Kafka: transports.KafkaConfig{Version: "0.10.2.0"}}, []string{"kafka.version", "0.11.0"}},
		{"mechanism", transports.Config{URL: "a:1", Kafka: transports.KafkaConfig{SASL: transports.KafkaSASLConfig{Mechanism: "GSSAPI", User: "u"}}}, []string{"kafka.sasl.mechanism", "GSSAPI"}},
		{"sasl user", transports.Config{URL: "a:1", Kafka: transports.KafkaConfig{SASL: transports.KafkaSASLConfig{Mechanism: "scram-sha-256", Password: "s3cr3t-pw"}}}, []string{"kafka.sasl.user"}},
		{"tls pair", transports.Config{URL: "a:1", Kafka: transports.KafkaConfig{TLS: transports.KafkaTLSConfig{CertFile: "c.pem"}}}, []string{"kafka.tls.cert_file", "kafka.tls.key_file"}},
		{"tls ca", transports.Config{URL: "a:1", Kafka: transports.KafkaConfig{TLS: transports.KafkaTLSConfig{CAFile: "/nonexistent/ca.pem"}}}, []string{"kafka.tls.ca_file"}},
	} {
		_, err := transports.NewKafka(ctx, c.cfg, kafkaDiscardLogger())
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("%s: error %q shows the password", c.name, err)
		}
	}
	// Through the factory, with the failure named as the transport's.
	if _, err := transports.New(ctx, transports.Config{Transport: "kafka", URL: "a:1", Kafka: transports.KafkaConfig{Workers: -1}}, nil); err == nil || !strings.Contains(err.Error(), `build "kafka"`) {
		t.Errorf("New(kafka, bad workers): err = %v", err)
	}
	s := transports.KafkaSASLConfig{Mechanism: "PLAIN", User: "u", Password: "s3cr3t-pw"}
	if got := fmt.Sprintf("%v %+v %s", s, transports.KafkaConfig{SASL: s}, s); strings.Contains(got, "s3cr3t-pw") {
		t.Errorf("formatting shows the password: %s", got)
	}
}

// TestKafkaConfigDecodes decodes every kafka key the way the config loader
// does (mapstructure, unknown keys are errors).
func TestKafkaConfigDecodes(t *testing.T) {
	t.Parallel()
	raw := map[string]any{"transport": "kafka", "kafka": map[string]any{
		"brokers": []any{"a:1", "b:2"}, "topic_prefix": "p.", "auto_create_topics": false, "partitions": 4,
		"replication_factor": 3, "consumer_group": "g", "initial_offset": "newest", "workers": 2,
		"version": "3.6.0", "client_id": "c",
		"sasl": map[string]any{"mechanism": "SCRAM-SHA-512", "user": "u", "password": "pw"},
		"tls": map[string]any{"enabled": true, "ca_file": "ca.pem", "cert_file": "c.pem", "key_file": "k.pem",
			"server_name": "kafka", "insecure_skip_verify": true},
	}}
	var cfg transports.Config
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{Result: &cfg, ErrorUnused: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(raw); err != nil {
		t.Fatal(err)
	}
	kc := cfg.Kafka
	if strings.Join(kc.Brokers, ",") != "a:1,b:2" || kc.TopicPrefix != "p." || kc.AutoCreateTopics == nil || *kc.AutoCreateTopics ||
		kc.Partitions != 4 || kc.ReplicationFactor != 3 || kc.ConsumerGroup != "g" || kc.InitialOffset != "newest" ||
		kc.Workers != 2 || kc.Version != "3.6.0" || kc.ClientID != "c" ||
		kc.SASL != (transports.KafkaSASLConfig{Mechanism: "SCRAM-SHA-512", User: "u", Password: "pw"}) ||
		kc.TLS != (transports.KafkaTLSConfig{Enabled: true, CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem", ServerName: "kafka", InsecureSkipVerify: true}) {
		t.Fatalf("decoded %+v", kc)
	}
	raw["kafka"].(map[string]any)["tune"] = "x"
	if err := dec.Decode(raw); err == nil || !strings.Contains(err.Error(), "tune") {
		t.Fatalf("key kafka.tune accepted: %v", err)
	}
}

// TestKafkaRoundTrip publishes messages of many entities, some keyed by
// metadata and some by body only, and checks topics, keys, partitions,
// metadata and per-entity order on kafkaDelivery.
func TestKafkaRoundTrip(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	k := newKafka(t, c, transports.KafkaConfig{TopicPrefix: "rt.", Partitions: 4})
	subs, err := k.ReplicaSubscriptions("q", "dead_letter_q", []string{"author"})
	if err != nil {
		t.Fatal(err)
	}
	want := []transports.Subscription{
		{Topic: "author", CQRSID: "author"},
		{Topic: "cqrs.q.author", CQRSID: "author", Direct: true},
	}
	if len(subs) != 2 || subs[0] != want[0] || subs[1] != want[1] {
		t.Fatalf("subscriptions %+v, want %+v", subs, want)
	}
	// The replica's topics exist, prefixed, with the configured partitions.
	meta, err := kafkaAdmin(t, c).DescribeTopics([]string{"rt.author", "rt.cqrs.q.author", "rt.cqrs.dead_letter_q.author"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tm := range meta {
		if !errors.Is(tm.Err, sarama.ErrNoError) || len(tm.Partitions) != 4 {
			t.Errorf("topic %s: err %v, %d partitions, want 4", tm.Name, tm.Err, len(tm.Partitions))
		}
	}

	const entities, revs = 12, 4
	sent := map[string]string{} // uuid -> expected key
	for rev := 1; rev <= revs; rev++ {
		for e := 1; e <= entities; e++ {
			md := map[string]string{"x-custom": "v" + strconv.Itoa(e)}
			if e%2 == 0 {
				md[transports.MetaEntityKey] = "author:" + strconv.Itoa(e)
			}
			m := kafkaPublish(t, k, "author", kafkaBody(t, "author", e, rev), md)
			sent[m.UUID] = "author:" + strconv.Itoa(e)
		}
	}

	ch := kafkaSubscribe(t, k, "author")
	murmur := sarama.NewMurmur2Partitioner("author")
	lastRev := map[string]int{}
	partOf := map[string]int32{}
	parts := map[int32]bool{}
	for range entities * revs {
		m := kafkaReceive(t, ch)
		d := kafkaDeliveryOf(t, m)
		m.Ack()
		wantKey, ok := sent[d.uuid]
		if !ok {
			t.Fatalf("unknown message %s", d.uuid)
		}
		delete(sent, d.uuid)
		if d.key != wantKey || m.Metadata.Get(transports.MetaEntityKey) != wantKey {
			t.Errorf("message of %s: record key %q, entity_key metadata %q", wantKey, d.key, m.Metadata.Get(transports.MetaEntityKey))
		}
		if rk := m.Metadata.Get(transports.MetaRoutingKey); rk != "author" {
			t.Errorf("routing_key %q, want the topic without prefix", rk)
		}
		if got := m.Metadata.Get("x-custom"); got != "v"+d.pk {
			t.Errorf("x-custom metadata %q for pk %s", got, d.pk)
		}
		wantPart, _ := murmur.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(wantKey)}, 4)
		if d.partition != wantPart {
			t.Errorf("%s in partition %d, the Java partitioner says %d", wantKey, d.partition, wantPart)
		}
		if p, seen := partOf[wantKey]; seen && p != d.partition {
			t.Errorf("%s in partitions %d and %d", wantKey, p, d.partition)
		}
		partOf[wantKey] = d.partition
		parts[d.partition] = true
		if d.rev != lastRev[wantKey]+1 {
			t.Errorf("%s: revision %d after %d", wantKey, d.rev, lastRev[wantKey])
		}
		lastRev[wantKey] = d.rev
	}
	if len(parts) < 2 {
		t.Errorf("%d entities all landed in %d partition(s)", entities, len(parts))
	}
}

// TestKafkaWorkersParallelPartitionsKeepEntityOrder consumes 8 partitions
// with 4 workers: 4 messages are in hand at once (never more), and every
// entity's revisions still arrive in order.
func TestKafkaWorkersParallelPartitionsKeepEntityOrder(t *testing.T) {
	t.Parallel()
	const workers, entities, revs = 4, 40, 8
	c := newKafkaCluster(t)
	k := newKafka(t, c, transports.KafkaConfig{Partitions: 8, Workers: workers, ConsumerGroup: "w"})
	for rev := 1; rev <= revs; rev++ {
		for e := 1; e <= entities; e++ {
			kafkaPublish(t, k, "item", kafkaBody(t, "item", strconv.Itoa(e), rev), nil)
		}
	}
	ch := kafkaSubscribe(t, k, "item")

	var (
		mu       sync.Mutex
		inHand   int
		maxHand  int
		parts    = map[int32]bool{}
		seen     = map[string][]int{}
		total    int
		barrier  = make(chan struct{})
		released bool
		errs     = make(chan error, 1)
	)
	for range entities * revs {
		m := kafkaReceive(t, ch)
		d := kafkaDeliveryOf(t, m)
		mu.Lock()
		inHand++
		maxHand = max(maxHand, inHand)
		parts[d.partition] = true
		seen[d.pk] = append(seen[d.pk], d.rev)
		if inHand == workers && !released {
			released = true
			close(barrier)
		}
		mu.Unlock()
		go func() {
			// The first messages wait until the workers are all busy, which
			// only happens if partitions deliver in parallel.
			select {
			case <-barrier:
			case <-time.After(20 * time.Second):
				select {
				case errs <- errors.New("never had 4 messages in hand at once"):
				default:
				}
			}
			mu.Lock()
			inHand--
			total++
			mu.Unlock()
			m.Ack()
		}()
	}
	testenv.WaitFor(t, 20*time.Second, "all acked", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return total == entities*revs
	})
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	mu.Lock()
	defer mu.Unlock()
	if maxHand != workers {
		t.Errorf("at most %d messages in hand at once, want exactly %d", maxHand, workers)
	}
	if len(parts) < workers {
		t.Errorf("messages came from %d partitions", len(parts))
	}
	for pk, list := range seen {
		for i, rev := range list {
			if rev != i+1 {
				t.Fatalf("entity %s: revisions %v, want 1..%d in order", pk, list, revs)
			}
		}
	}
	if len(seen) != entities {
		t.Errorf("%d entities seen, want %d", len(seen), entities)
	}
}

// TestKafkaNackRedeliversAndAckMovesOn: a nacked message comes back before
// anything behind it in its partition; once acked the partition moves on.
func TestKafkaNackRedeliversAndAckMovesOn(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	k := newKafka(t, c, transports.KafkaConfig{Partitions: 1, ConsumerGroup: "n"})
	a := kafkaPublish(t, k, "t", []byte("a"), nil)
	b := kafkaPublish(t, k, "t", []byte("b"), nil)
	ch := kafkaSubscribe(t, k, "t")
	var got []string
	for range 3 {
		m := kafkaReceive(t, ch)
		got = append(got, string(m.Payload))
		if m.UUID != a.UUID && m.UUID != b.UUID {
			t.Fatalf("unknown UUID %s", m.UUID)
		}
		if len(got) == 1 {
			m.Nack()
		} else {
			m.Ack()
		}
	}
	if strings.Join(got, ",") != "a,a,b" {
		t.Fatalf("deliveries %v, want a (nacked), a, b", got)
	}
}

// TestKafkaResumesFromCommittedOffsets: a transport that acked the first
// half and closed leaves the group's offsets there; the next transport of
// the same group starts right after them.
func TestKafkaResumesFromCommittedOffsets(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	cfg := transports.KafkaConfig{Partitions: 1, ConsumerGroup: "resume"}
	k1 := newKafka(t, c, cfg)
	for i := range 10 {
		kafkaPublish(t, k1, "r", []byte(strconv.Itoa(i)), nil)
	}
	ch := kafkaSubscribe(t, k1, "r")
	for i := range 5 {
		m := kafkaReceive(t, ch)
		if string(m.Payload) != strconv.Itoa(i) {
			t.Fatalf("got %q, want %d", m.Payload, i)
		}
		m.Ack()
	}
	kafkaReceive(t, ch) // the sixth is in hand, never acked
	if err := k1.Close(); err != nil {
		t.Fatal(err)
	}
	if off := kafkaCommitted(t, kafkaAdmin(t, c), "resume", "r", 0); off != 5 {
		t.Fatalf("committed offset %d after acking 5 messages, want 5", off)
	}

	k2 := newKafka(t, c, cfg)
	ch2 := kafkaSubscribe(t, k2, "r")
	for i := 5; i < 10; i++ {
		m := kafkaReceive(t, ch2)
		if string(m.Payload) != strconv.Itoa(i) {
			t.Fatalf("after restart got %q, want %d", m.Payload, i)
		}
		m.Ack()
	}
}

// TestKafkaGroups: broadcast and direct topics are read by the queue's
// group, dead letters by the dead-letter queue's; a second queue on the same
// transport and a topic with no group are refused.
func TestKafkaGroups(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	k := newKafka(t, c, transports.KafkaConfig{Partitions: 1})
	if _, err := k.Subscribe(context.Background(), "author"); err == nil || !strings.Contains(err.Error(), "kafka.consumer_group") {
		t.Fatalf("subscribe before ReplicaSubscriptions: err = %v", err)
	}
	if _, err := k.ReplicaSubscriptions("g", "dead_letter_g", []string{"author"}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.ReplicaSubscriptions("other", "dead_letter_other", []string{"author"}); err == nil || !strings.Contains(err.Error(), `"g"`) {
		t.Fatalf("second queue on the same topic: err = %v", err)
	}
	if _, err := k.ReplicaSubscriptions("g", "dead_letter_g", []string{"a:b"}); err == nil || !strings.Contains(err.Error(), "a:b") {
		t.Fatalf("cqrs_id with ':': err = %v", err)
	}
	for _, key := range []string{"author", "cqrs.g.author", "cqrs.dead_letter_g.author"} {
		kafkaPublish(t, k, key, []byte(key), nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, key := range []string{"author", "cqrs.g.author", "cqrs.dead_letter_g.author"} {
		ch, err := k.Subscribe(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		m := kafkaReceive(t, ch)
		if string(m.Payload) != key || m.Metadata.Get(transports.MetaRoutingKey) != key {
			t.Fatalf("on %s got %q with routing key %q", key, m.Payload, m.Metadata.Get(transports.MetaRoutingKey))
		}
		m.Ack()
	}
	a := kafkaAdmin(t, c)
	testenv.WaitFor(t, 20*time.Second, "offsets committed under the right groups", func() bool {
		return kafkaCommitted(t, a, "g", "author", 0) == 1 && kafkaCommitted(t, a, "g", "cqrs.g.author", 0) == 1 &&
			kafkaCommitted(t, a, "dead_letter_g", "cqrs.dead_letter_g.author", 0) == 1
	})
	if off := kafkaCommitted(t, a, "g", "cqrs.dead_letter_g.author", 0); off != -1 {
		t.Errorf("queue group committed offset %d on the dead-letter topic", off)
	}
}

// TestKafkaPublishErrorsAndClose: a publish the brokers cannot take fails
// (so a relay keeps its rows); Close is idempotent and ends subscriptions.
func TestKafkaPublishErrorsAndClose(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	off := false
	k := newKafka(t, c, transports.KafkaConfig{AutoCreateTopics: &off, ConsumerGroup: "c"})
	if err := k.Publish("bad/topic", message.NewMessage(watermill.NewUUID(), []byte("x"))); err == nil || !strings.Contains(err.Error(), "bad/topic") {
		t.Fatalf("publish on an invalid topic: err = %v", err)
	}
	// Auto-creation off: a topic that does not exist takes no message.
	if err := k.Publish("missing", message.NewMessage(watermill.NewUUID(), []byte("x"))); err == nil {
		t.Fatal("publish to a missing topic with auto_create_topics off succeeded")
	}
	if err := kafkaAdmin(t, c).CreateTopic("present", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
		t.Fatal(err)
	}
	kafkaPublish(t, k, "present", []byte("x"), nil)
	ch, err := k.Subscribe(context.Background(), "present")
	if err != nil {
		t.Fatal(err)
	}
	kafkaReceive(t, ch).Ack()
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "subscription closed by Close", func() bool {
		select {
		case _, ok := <-ch:
			return !ok
		default:
			return false
		}
	})
	if err := k.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := k.Publish("present", message.NewMessage(watermill.NewUUID(), []byte("y"))); !errors.Is(err, transports.ErrKafkaClosed) {
		t.Fatalf("publish after Close: err = %v", err)
	}
	if _, err := k.Subscribe(context.Background(), "present"); !errors.Is(err, transports.ErrKafkaClosed) {
		t.Fatalf("subscribe after Close: err = %v", err)
	}
}

func TestKafkaNew(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	cfg := kafkaConfig(c, transports.KafkaConfig{})
	cfg.URL = " kafka://" + strings.Join(c.ListenAddrs(), " , ")
	tr, err := transports.New(context.Background(), cfg, kafkaDiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	k, ok := tr.(*transports.Kafka)
	if !ok || tr.Name() != "kafka" {
		t.Fatalf("New(kafka) = %T named %q", tr, tr.Name())
	}
	if got := k.Topic("author"); got != "author" {
		t.Fatalf("Topic(author) = %q without a prefix", got)
	}
	// A first publish creates its topic with the default partition count.
	if err := tr.Publisher().Publish("fresh", message.NewMessage(watermill.NewUUID(), []byte("1"))); err != nil {
		t.Fatal(err)
	}
	meta, err := kafkaAdmin(t, c).DescribeTopics([]string{"fresh"})
	if err != nil {
		t.Fatal(err)
	}
	if len(meta) != 1 || len(meta[0].Partitions) != transports.DefaultKafkaPartitions {
		t.Fatalf("topic created on publish: %+v, want %d partitions", meta, transports.DefaultKafkaPartitions)
	}
	// The Publisher/Subscriber views do not close the transport.
	if err := tr.Publisher().Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Subscriber().Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Publisher().Publish("x", message.NewMessage(watermill.NewUUID(), []byte("1"))); err != nil {
		t.Fatalf("publish after closing the Publisher view: %v", err)
	}
}

// TestKafkaProtocolVersions runs a consumer group at protocol versions on
// both sides of 2.4: with the Sarama that watermill-kafka pins, groups at
// 2.4 and later never got their partitions from kfake.
func TestKafkaProtocolVersions(t *testing.T) {
	t.Parallel()
	c := newKafkaCluster(t)
	for _, v := range []string{"2.1.0", "2.8.0", "3.6.0"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			k := newKafka(t, c, transports.KafkaConfig{Version: v, Partitions: 2, ConsumerGroup: "v" + v})
			topic := "version-" + v
			sent := kafkaPublish(t, k, topic, []byte(v), nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := k.Subscribe(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			m := kafkaReceive(t, ch)
			m.Ack()
			if m.UUID != sent.UUID {
				t.Fatalf("got message %s, want %s", m.UUID, sent.UUID)
			}
		})
	}
}
