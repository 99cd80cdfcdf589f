package transports

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

// Defaults of [KafkaConfig].
const (
	// DefaultKafkaPartitions is the partition count of the topics the kafka
	// transport creates.
	DefaultKafkaPartitions = 8
	// DefaultKafkaReplicationFactor asks the broker for its
	// default.replication.factor (needs Kafka 2.4 or later).
	DefaultKafkaReplicationFactor = -1
	// DefaultKafkaClientID is the client id the kafka transport announces.
	DefaultKafkaClientID = "gocqrs"
	// DefaultKafkaVersion is the Kafka protocol version spoken by default.
	DefaultKafkaVersion = "2.8.0"
	// DefaultKafkaNackResendDelay is how long a nacked message waits before
	// it is delivered again.
	DefaultKafkaNackResendDelay = 100 * time.Millisecond
)

// Kafka initial offsets: where a consumer group with no committed offset
// starts reading.
const (
	// KafkaOffsetOldest starts a new consumer group at the oldest retained
	// message, so that messages published before the replica first ran are
	// not skipped.
	KafkaOffsetOldest = "oldest"
	// KafkaOffsetNewest starts a new consumer group after the last message.
	KafkaOffsetNewest = "newest"
)

// SASL mechanisms the kafka transport speaks.
const (
	SASLPlain       = "PLAIN"
	SASLSCRAMSHA256 = "SCRAM-SHA-256"
	SASLSCRAMSHA512 = "SCRAM-SHA-512"
)

// KafkaConfig configures the kafka transport (config key "kafka"). The
// brokers come from Config.URL (a comma-separated host:port list) or from
// Brokers, not both.
type KafkaConfig struct {
	// Brokers lists the bootstrap brokers (host:port). Empty means
	// Config.URL split at commas.
	Brokers []string `mapstructure:"brokers"`
	// TopicPrefix is put in front of every routing key to name its topic
	// ("prod." makes the topic of routing key "author" "prod.author").
	// Delivered messages carry the routing key without the prefix.
	TopicPrefix string `mapstructure:"topic_prefix"`
	// AutoCreateTopics creates missing topics with Partitions and
	// ReplicationFactor: a replica's topics when its consumer starts, any
	// other topic on its first publish. nil means true. When false the
	// topics must exist (and brokers are asked not to auto-create them).
	AutoCreateTopics *bool `mapstructure:"auto_create_topics"`
	// Partitions is the partition count of created topics; 0 means
	// [DefaultKafkaPartitions]. Existing topics are used as they are.
	Partitions int32 `mapstructure:"partitions"`
	// ReplicationFactor of created topics; 0 means the broker's default
	// (-1, Kafka 2.4 or later).
	ReplicationFactor int16 `mapstructure:"replication_factor"`
	// ConsumerGroup replaces the replica queue name as the consumer group of
	// the replica's broadcast and direct topics. Dead-letter topics are read
	// with the dead-letter queue name as group.
	ConsumerGroup string `mapstructure:"consumer_group"`
	// InitialOffset is where a consumer group without committed offsets
	// starts: "oldest" (default) or "newest".
	InitialOffset string `mapstructure:"initial_offset"`
	// Workers caps how many delivered messages the transport's
	// subscriptions hold at once (neither acked nor detached), over all
	// partitions and topics; 0 means no cap beyond one message per assigned
	// partition. Each partition delivers one message at a time whatever the
	// cap, so the order of each entity is kept.
	Workers int `mapstructure:"workers"`
	// Version is the Kafka protocol version to speak ("2.8.0" by default;
	// at least 0.11.0, which idempotent producing needs).
	Version string `mapstructure:"version"`
	// ClientID is announced to the brokers; "" means "gocqrs".
	ClientID string `mapstructure:"client_id"`
	// SASL authenticates to the brokers.
	SASL KafkaSASLConfig `mapstructure:"sasl"`
	// TLS encrypts the connections to the brokers.
	TLS KafkaTLSConfig `mapstructure:"tls"`
	// Tune, when set, is called last on every Sarama configuration the
	// transport builds (Go only; not a config key). It may change anything,
	// including what the transport's guarantees rest on.
	Tune func(*sarama.Config) `mapstructure:"-"`
}

// KafkaSASLConfig is the SASL part of [KafkaConfig]. Its password is never
// logged: String and LogValue hide it.
type KafkaSASLConfig struct {
	// Mechanism is "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512"; "" means
	// PLAIN when User is set and no SASL otherwise.
	Mechanism string `mapstructure:"mechanism"`
	// User is the SASL user name.
	User string `mapstructure:"user"`
	// Password is the SASL password.
	Password string `mapstructure:"password"`
}

// String renders c with the password hidden.
func (c KafkaSASLConfig) String() string {
	pw := ""
	if c.Password != "" {
		pw = "[hidden]"
	}
	return fmt.Sprintf("{Mechanism:%s User:%s Password:%s}", c.Mechanism, c.User, pw)
}

// LogValue renders c for log/slog with the password hidden.
func (c KafkaSASLConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("mechanism", c.Mechanism), slog.String("user", c.User),
		slog.Bool("password_set", c.Password != ""))
}

// KafkaTLSConfig is the TLS part of [KafkaConfig].
type KafkaTLSConfig struct {
	// Enabled turns TLS on; setting any file below turns it on as well.
	Enabled bool `mapstructure:"enabled"`
	// CAFile is a PEM file of the CAs that sign the brokers' certificates;
	// "" means the system's roots.
	CAFile string `mapstructure:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// brokers that authenticate clients by certificate. Both or neither.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// ServerName overrides the name checked in the brokers' certificates.
	ServerName string `mapstructure:"server_name"`
	// InsecureSkipVerify accepts any broker certificate (tests only).
	InsecureSkipVerify bool `mapstructure:"insecure_skip_verify"`
}

func (c KafkaTLSConfig) enabled() bool {
	return c.Enabled || c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
}

// kafkaSettings is a checked KafkaConfig with its defaults applied.
type kafkaSettings struct {
	brokers     []string
	prefix      string
	autoCreate  bool
	partitions  int32
	replication int16
	group       string
	initial     int64
	workers     int
	version     sarama.KafkaVersion
	clientID    string
	sasl        KafkaSASLConfig
	tls         *tls.Config
	tune        func(*sarama.Config)
}

// kafkaSettingsFrom checks cfg's kafka part; errors name the config key.
func kafkaSettingsFrom(cfg Config) (*kafkaSettings, error) {
	kc := cfg.Kafka
	s := &kafkaSettings{
		prefix:      kc.TopicPrefix,
		autoCreate:  kc.AutoCreateTopics == nil || *kc.AutoCreateTopics,
		partitions:  kc.Partitions,
		replication: kc.ReplicationFactor,
		group:       kc.ConsumerGroup,
		workers:     kc.Workers,
		clientID:    kc.ClientID,
		sasl:        kc.SASL,
		tune:        kc.Tune,
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("transports: kafka: "+format, args...))
	}

	var err error
	if s.brokers, err = kafkaBrokers(cfg.URL, kc.Brokers); err != nil {
		errs = append(errs, err)
	}
	if s.prefix != "" {
		if err := checkKafkaTopic(s.prefix); err != nil {
			bad("config key kafka.topic_prefix: %v", err)
		}
	}
	switch {
	case s.partitions == 0:
		s.partitions = DefaultKafkaPartitions
	case s.partitions < 0:
		bad("config key kafka.partitions: must be positive, got %d", s.partitions)
	}
	switch {
	case s.replication == 0:
		s.replication = DefaultKafkaReplicationFactor
	case s.replication < -1:
		bad("config key kafka.replication_factor: must be positive (or -1 for the broker's default), got %d", s.replication)
	}
	if s.group != "" {
		if err := checkGroupName(s.group); err != nil {
			bad("config key kafka.consumer_group: %v", err)
		}
	}
	switch strings.ToLower(kc.InitialOffset) {
	case "", KafkaOffsetOldest:
		s.initial = sarama.OffsetOldest
	case KafkaOffsetNewest:
		s.initial = sarama.OffsetNewest
	default:
		bad("config key kafka.initial_offset: %q is not %q or %q", kc.InitialOffset, KafkaOffsetOldest, KafkaOffsetNewest)
	}
	if s.workers < 0 {
		bad("config key kafka.workers: must not be negative, got %d", s.workers)
	}
	version := kc.Version
	if version == "" {
		version = DefaultKafkaVersion
	}
	if s.version, err = sarama.ParseKafkaVersion(version); err != nil {
		bad("config key kafka.version: %q is not a Kafka version like 2.8.0", kc.Version)
	} else if !s.version.IsAtLeast(sarama.V0_11_0_0) {
		bad("config key kafka.version: %q is older than 0.11.0, which idempotent producing needs", kc.Version)
	}
	if s.clientID == "" {
		s.clientID = DefaultKafkaClientID
	}
	if s.sasl.Mechanism == "" && s.sasl.User != "" {
		s.sasl.Mechanism = SASLPlain
	}
	switch s.sasl.Mechanism = strings.ToUpper(s.sasl.Mechanism); s.sasl.Mechanism {
	case "":
		if s.sasl.Password != "" {
			bad("config key kafka.sasl.password: set without kafka.sasl.user")
		}
	case SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512:
		if s.sasl.User == "" {
			bad("config key kafka.sasl.user: required with mechanism %s", s.sasl.Mechanism)
		}
	default:
		bad("config key kafka.sasl.mechanism: %q is not one of %s, %s, %s", kc.SASL.Mechanism, SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512)
	}
	if kc.TLS.enabled() {
		if s.tls, err = kafkaTLS(kc.TLS); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// kafkaBrokers returns the broker list of url (comma-separated) or list.
func kafkaBrokers(url string, list []string) ([]string, error) {
	key := "kafka.brokers"
	if len(list) == 0 {
		key = "url"
		for _, b := range strings.Split(url, ",") {
			if b = strings.TrimSpace(b); b != "" {
				list = append(list, b)
			}
		}
	} else if strings.TrimSpace(url) != "" {
		return nil, errors.New("transports: kafka: config keys url and kafka.brokers are both set; set one of them")
	}
	if len(list) == 0 {
		return nil, errors.New("transports: kafka: no brokers: set url to a comma-separated host:port list, or kafka.brokers")
	}
	out := make([]string, 0, len(list))
	for i, b := range list {
		b = strings.TrimPrefix(strings.TrimSpace(b), "kafka://")
		host, port, err := net.SplitHostPort(b)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("transports: kafka: config key %s: broker %d %q is not host:port", key, i+1, list[i])
		}
		out = append(out, b)
	}
	return out, nil
}

// kafkaTLS builds the TLS configuration of c.
func kafkaTLS(c KafkaTLSConfig) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // opt-in, documented as tests only
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("transports: kafka: config key kafka.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("transports: kafka: config key kafka.tls.ca_file: %s holds no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("transports: kafka: config keys kafka.tls.cert_file and kafka.tls.key_file: set both or neither")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("transports: kafka: config keys kafka.tls.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// sarama returns a new Sarama configuration for one client. Every client
// gets its own, so that no two share a mutable *sarama.Config.
func (s *kafkaSettings) sarama() *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = s.clientID
	c.Version = s.version
	c.Metadata.AllowAutoTopicCreation = false // topics are created with our partition count, or exist

	// Idempotent producer, acknowledged by every in-sync replica; Sarama
	// needs one request in flight per broker for idempotence.
	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Net.MaxOpenRequests = 1
	c.Producer.Retry.Max = 10
	c.Producer.Retry.Backoff = 100 * time.Millisecond
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	// The Java client's partitioner: the same key lands in the same
	// partition whichever client produced it.
	c.Producer.Partitioner = sarama.NewMurmur2Partitioner

	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = s.initial
	c.Consumer.Offsets.AutoCommit.Enable = true

	if s.sasl.Mechanism != "" {
		c.Net.SASL.Enable = true
		c.Net.SASL.Handshake = true
		c.Net.SASL.User = s.sasl.User
		c.Net.SASL.Password = s.sasl.Password
		switch s.sasl.Mechanism {
		case SASLPlain:
			c.Net.SASL.Mechanism = sarama.SASLTypePlaintext
		case SASLSCRAMSHA256:
			c.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
			c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return newSCRAMClient(scramSHA256) }
		case SASLSCRAMSHA512:
			c.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
			c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return newSCRAMClient(scramSHA512) }
		}
	}
	if s.tls != nil {
		c.Net.TLS.Enable = true
		c.Net.TLS.Config = s.tls.Clone()
	}
	if s.tune != nil {
		s.tune(c)
	}
	return c
}

// checkKafkaTopic reports why name cannot be (part of) a Kafka topic name.
func checkKafkaTopic(name string) error {
	if name == "" {
		return errors.New("empty")
	}
	if len(name) > 249 {
		return fmt.Errorf("%d characters, Kafka allows 249", len(name))
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%q is not allowed", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%q holds %q; Kafka topic names allow only ASCII letters, digits, '.', '_' and '-'", name, r)
		}
	}
	return nil
}

// checkGroupName reports why name cannot be a consumer group id.
func checkGroupName(name string) error {
	if strings.TrimSpace(name) == "" {
		return errors.New("empty")
	}
	return nil
}
