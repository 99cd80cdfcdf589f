package cqrs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"go.yaml.in/yaml/v3"

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// Config is gocqrs's whole configuration. Key names follow django-cqrs's CQRS
// settings dict where one exists. It is decoded from YAML or JSON files,
// environment variables (CQRS_<KEY>, nested keys joined with "_", e.g.
// CQRS_REPLICA_MAX_RETRIES) and Go maps; unknown keys and bad values are
// errors that name the key.
type Config struct {
	// Transport is "memory", "rabbitmq" or "kafka".
	Transport string `mapstructure:"transport"`
	// URL is the broker URL (rabbitmq: amqp:// or amqps://; kafka: comma-separated brokers).
	URL string `mapstructure:"url"`
	// Exchange is the RabbitMQ topic exchange (default "cqrs").
	Exchange string `mapstructure:"exchange"`
	// TLS configures amqps:// RabbitMQ connections (CA file, client
	// certificate, server name).
	TLS transports.RabbitMQTLSConfig `mapstructure:"tls"`
	// Queue is this replica's queue name.
	Queue string `mapstructure:"queue"`
	// Memory configures the memory transport.
	Memory transports.MemoryConfig `mapstructure:"memory"`
	// Kafka configures the kafka transport (brokers may also come from url).
	Kafka transports.KafkaConfig `mapstructure:"kafka"`
	// Database is where this service's tables (and the outbox) live.
	Database DatabaseConfig `mapstructure:"database"`
	// Master configures the writing side.
	Master MasterConfig `mapstructure:"master"`
	// Replica configures the consuming side.
	Replica ReplicaConfig `mapstructure:"replica"`
	// Models declares table-only models (no Go code needed).
	Models []ModelConfig `mapstructure:"models"`
	// Log configures log/slog output.
	Log LogConfig `mapstructure:"log"`
	// Metrics configures the /metrics, /healthz and /readyz endpoints of
	// cqrs-consume and cqrs relay.
	Metrics MetricsConfig `mapstructure:"metrics"`
}

// DatabaseConfig names the SQL database.
type DatabaseConfig struct {
	// Driver is "postgres", "mysql" or "sqlite".
	Driver string `mapstructure:"driver"`
	// DSN is the driver's data source name (PostgreSQL URL, go-sql-driver DSN, SQLite path or file: URI).
	DSN string `mapstructure:"dsn"`
}

// MasterConfig is the master block (django-cqrs's CQRS["master"]).
type MasterConfig struct {
	// MessageTTL is how long a message lives (seconds, or a Go duration like
	// "24h"); null or 0 means never expires. Default 86400 s.
	MessageTTL Duration `mapstructure:"message_ttl"`
	// OutboxTable names the outbox table (default cqrs_outbox).
	OutboxTable string `mapstructure:"outbox_table"`
	// RelayBatchSize is how many outbox rows the relay claims at once (default 1000).
	RelayBatchSize int `mapstructure:"relay_batch_size"`
}

// ReplicaConfig is the replica block (django-cqrs's CQRS["replica"]).
type ReplicaConfig struct {
	// MaxRetries before a failing message is dead-lettered (default 30).
	MaxRetries *int `mapstructure:"max_retries"`
	// RetryDelay between retries (seconds or duration; default 2 s).
	RetryDelay Duration `mapstructure:"retry_delay"`
	// DelayQueueMaxSize bounds messages held for retry; it also sets the
	// RabbitMQ prefetch (default 1000).
	DelayQueueMaxSize int `mapstructure:"delay_queue_max_size"`
	// DeadLetterQueue names the dead-letter queue (default dead_letter_<queue>).
	DeadLetterQueue string `mapstructure:"dead_letter_queue"`
	// DeadMessageTTL is the expiration of dead letters (default 864000 s).
	DeadMessageTTL Duration `mapstructure:"dead_message_ttl"`
	// BatchSize > 1 applies up to that many messages per replica transaction
	// (default 1: one message per transaction, as django-cqrs).
	BatchSize int `mapstructure:"batch_size"`
	// BatchWait is how long a batch waits for more messages (default 20 ms).
	BatchWait Duration `mapstructure:"batch_wait"`
	// BatchMaxInFlight bounds the messages collected for batches and not yet
	// settled (default 3 × batch_size).
	BatchMaxInFlight int `mapstructure:"batch_max_in_flight"`
	// DjangoCompat turns tombstones off: a DELETE leaves nothing behind and a
	// late SAVE brings the row back, as in django-cqrs.
	DjangoCompat bool `mapstructure:"django_compat"`
}

// ModelConfig declares one model in configuration.
type ModelConfig struct {
	// CQRSID names the entity type.
	CQRSID string `mapstructure:"cqrs_id"`
	// Role is "master" or "replica".
	Role string `mapstructure:"role"`
	// Table is the SQL table.
	Table string `mapstructure:"table"`
	// PK is the primary key column (default "id").
	PK string `mapstructure:"pk"`
	// Columns lists the fields; empty means every column of the table.
	// Each is a name, or "name:type" (types: int, float, decimal, string,
	// bool, date, datetime, uuid, json, bytes).
	Columns []string `mapstructure:"columns"`
	// Mapping maps master keys to replica columns (replica only).
	Mapping map[string]string `mapstructure:"mapping"`
	// TrackedFields go into previous_data (master only).
	TrackedFields []string `mapstructure:"tracked_fields"`
	// OnlyDirectSyncs applies only SYNCs aimed at this replica's queue.
	OnlyDirectSyncs bool `mapstructure:"only_direct_syncs"`
	// SelectForUpdate locks the replica row while applying.
	SelectForUpdate bool `mapstructure:"select_for_update"`
}

// LogConfig configures logging.
type LogConfig struct {
	// Level is debug, info, warn or error (default info).
	Level string `mapstructure:"level"`
	// Format is text or json (default text).
	Format string `mapstructure:"format"`
}

// MetricsConfig configures the metrics and health endpoints.
type MetricsConfig struct {
	// Address is host:port to serve /metrics, /healthz and /readyz on;
	// empty (the default) serves nothing.
	Address string `mapstructure:"address"`
}

// Duration is a time.Duration that decodes from seconds (a number, as
// django-cqrs's settings are) or from a Go duration string ("2s", "24h").
// Null is recorded as explicitly unset.
type Duration struct {
	D   time.Duration
	Set bool // present in the configuration (possibly as null or 0)
}

// Or returns the duration, or def when the key was not given.
func (d Duration) Or(def time.Duration) time.Duration {
	if !d.Set {
		return def
	}
	return d.D
}

// DefaultConfig returns the configuration used when nothing is given: the
// memory transport, exchange "cqrs", django-cqrs's defaults elsewhere.
func DefaultConfig() Config {
	return Config{Transport: "memory", Exchange: "cqrs"}
}

// LoadConfig reads a YAML or JSON file (path may be empty), overlays CQRS_*
// environment variables and decodes the result over DefaultConfig.
func LoadConfig(path string) (*Config, error) {
	raw := map[string]any{}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := yaml.Unmarshal(b, &raw); err != nil {
			return nil, fmt.Errorf("config: %s: %w", path, err)
		}
		if raw == nil {
			raw = map[string]any{}
		}
	}
	if err := applyEnv(raw, os.Environ()); err != nil {
		return nil, err
	}
	cfg, err := DecodeConfig(raw)
	if err != nil && path != "" {
		return nil, fmt.Errorf("%w (in %s or the environment)", err, path)
	}
	return cfg, err
}

// DecodeConfig decodes a map (as from YAML or JSON) over DefaultConfig and
// validates it.
func DecodeConfig(raw map[string]any) (*Config, error) {
	cfg := DefaultConfig()
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:      &cfg,
		ErrorUnused: true,
		DecodeNil:   true,
		DecodeHook:  durationHook,
	})
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := dec.Decode(raw); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

var durationType = reflect.TypeOf(Duration{})

func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	switch v := data.(type) {
	case nil:
		return Duration{Set: true}, nil
	case map[string]any:
		if len(v) == 0 { // how mapstructure hands over a YAML null with DecodeNil
			return Duration{Set: true}, nil
		}
	case Duration:
		return v, nil
	case int:
		return Duration{D: time.Duration(v) * time.Second, Set: true}, nil
	case int64:
		return Duration{D: time.Duration(v) * time.Second, Set: true}, nil
	case uint64:
		return Duration{D: time.Duration(v) * time.Second, Set: true}, nil
	case float64:
		return Duration{D: time.Duration(v * float64(time.Second)), Set: true}, nil
	case json.Number:
		f, err := v.Float64()
		if err != nil {
			return nil, fmt.Errorf("%q is not a number of seconds", v)
		}
		return Duration{D: time.Duration(f * float64(time.Second)), Set: true}, nil
	case string:
		s := strings.TrimSpace(v)
		if s == "" || s == "null" || s == "none" || s == "None" {
			return Duration{Set: true}, nil
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return Duration{D: time.Duration(f * float64(time.Second)), Set: true}, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither seconds nor a duration like 2s or 24h", v)
		}
		return Duration{D: d, Set: true}, nil
	}
	return nil, fmt.Errorf("%v (%T) is not a duration", data, data)
}

// Validate checks values that decoding cannot: known transport and driver,
// non-negative numbers, model declarations.
func (c *Config) Validate() error {
	var errs []error
	switch c.Transport {
	case "memory", "rabbitmq", "kafka":
	default:
		errs = append(errs, fmt.Errorf("config: transport: %q is not one of memory, rabbitmq, kafka", c.Transport))
	}
	if c.Database.Driver != "" {
		if _, err := dialect.For(c.Database.Driver); err != nil {
			errs = append(errs, fmt.Errorf("config: database.driver: %w", err))
		}
	}
	if c.Master.MessageTTL.D < 0 {
		errs = append(errs, fmt.Errorf("config: master.message_ttl: %s is negative", c.Master.MessageTTL.D))
	}
	if c.Replica.MaxRetries != nil && *c.Replica.MaxRetries < 0 {
		errs = append(errs, fmt.Errorf("config: replica.max_retries: %d is negative", *c.Replica.MaxRetries))
	}
	if c.Replica.RetryDelay.D < 0 {
		errs = append(errs, fmt.Errorf("config: replica.retry_delay: %s is negative", c.Replica.RetryDelay.D))
	}
	if c.Replica.DelayQueueMaxSize < 0 {
		errs = append(errs, fmt.Errorf("config: replica.delay_queue_max_size: %d is negative", c.Replica.DelayQueueMaxSize))
	}
	if c.Replica.BatchSize < 0 || c.Replica.BatchMaxInFlight < 0 || c.Replica.BatchWait.D < 0 {
		errs = append(errs, fmt.Errorf("config: replica.batch_size, batch_wait and batch_max_in_flight must not be negative"))
	}
	if c.Replica.BatchSize > 1 && c.Replica.BatchMaxInFlight != 0 && c.Replica.BatchMaxInFlight < c.Replica.BatchSize {
		errs = append(errs, fmt.Errorf("config: replica.batch_max_in_flight: %d is below batch_size %d", c.Replica.BatchMaxInFlight, c.Replica.BatchSize))
	}
	if c.Master.RelayBatchSize < 0 {
		errs = append(errs, fmt.Errorf("config: master.relay_batch_size: %d is negative", c.Master.RelayBatchSize))
	}
	switch strings.ToLower(c.Log.Level) {
	case "", "debug", "info", "warn", "warning", "error":
	default:
		errs = append(errs, fmt.Errorf("config: log.level: %q is not debug, info, warn or error", c.Log.Level))
	}
	switch strings.ToLower(c.Log.Format) {
	case "", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("config: log.format: %q is not text or json", c.Log.Format))
	}
	for i, m := range c.Models {
		if _, _, err := m.model(); err != nil {
			errs = append(errs, fmt.Errorf("config: models[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// model turns a declaration into a registry model (exactly one of the two is set).
func (mc ModelConfig) model() (*registry.MasterModel, *registry.ReplicaModel, error) {
	if mc.CQRSID == "" {
		return nil, nil, errors.New("cqrs_id: required")
	}
	if mc.Table == "" {
		return nil, nil, fmt.Errorf("model %q: table: required", mc.CQRSID)
	}
	var fields []registry.Field
	for j, c := range mc.Columns {
		name, typ, _ := strings.Cut(c, ":")
		k, err := dialect.ParseKind(typ)
		if err != nil {
			return nil, nil, fmt.Errorf("model %q: columns[%d]: %w", mc.CQRSID, j, err)
		}
		fields = append(fields, registry.Field{Name: strings.TrimSpace(name), Kind: k})
	}
	switch mc.Role {
	case "master":
		if len(mc.Mapping) > 0 {
			return nil, nil, fmt.Errorf("model %q: mapping: only replica models have a mapping", mc.CQRSID)
		}
		return &registry.MasterModel{CQRSID: mc.CQRSID, Table: mc.Table, PK: mc.PK, Fields: fields, TrackedFields: mc.TrackedFields}, nil, nil
	case "replica":
		if len(mc.TrackedFields) > 0 {
			return nil, nil, fmt.Errorf("model %q: tracked_fields: only master models track fields", mc.CQRSID)
		}
		var mapping []registry.Mapping
		for _, from := range sortedKeys(mc.Mapping) {
			mapping = append(mapping, registry.Mapping{From: from, To: mc.Mapping[from]})
		}
		return nil, &registry.ReplicaModel{CQRSID: mc.CQRSID, Table: mc.Table, PK: mc.PK, Fields: fields, Mapping: mapping,
			OnlyDirectSyncs: mc.OnlyDirectSyncs, SelectForUpdate: mc.SelectForUpdate}, nil
	}
	return nil, nil, fmt.Errorf("model %q: role: %q is not master or replica", mc.CQRSID, mc.Role)
}

// Register adds the configuration's models to reg.
func (c *Config) Register(reg *registry.Registry) error {
	for i, mc := range c.Models {
		mm, rm, err := mc.model()
		if err != nil {
			return fmt.Errorf("config: models[%d]: %w", i, err)
		}
		if mm != nil {
			err = reg.RegisterMaster(*mm)
		} else {
			err = reg.RegisterReplica(*rm)
		}
		if err != nil {
			return fmt.Errorf("config: models[%d]: %w", i, err)
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// envKeys lists the scalar configuration paths reachable through environment
// variables, e.g. "replica.max_retries" ↔ CQRS_REPLICA_MAX_RETRIES.
func envKeys() map[string]reflect.Kind {
	out := map[string]reflect.Kind{}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("mapstructure")
			if tag == "" || tag == "-" {
				continue
			}
			path := prefix + tag
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != durationType {
				walk(ft, path+".")
				continue
			}
			if ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map {
				continue
			}
			out[path] = ft.Kind()
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return out
}

// applyEnv overlays CQRS_* variables on raw. Values are parsed as YAML
// scalars, so CQRS_REPLICA_MAX_RETRIES=3 is a number.
func applyEnv(raw map[string]any, environ []string) error {
	byName := map[string]string{}
	kinds := envKeys()
	for k := range kinds {
		byName["CQRS_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_"))] = k
	}
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "CQRS_") {
			continue
		}
		path, known := byName[name]
		if !known {
			continue // other CQRS_* variables (tests, tools) are not configuration
		}
		var v any = val
		if kinds[path] != reflect.String {
			var parsed any
			if err := yaml.Unmarshal([]byte(val), &parsed); err != nil {
				return fmt.Errorf("config: %s (%s): %q: %w", name, path, val, err)
			}
			v = parsed
		}
		cur := raw
		parts := strings.Split(path, ".")
		for _, p := range parts[:len(parts)-1] {
			next, ok := cur[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[p] = next
			}
			cur = next
		}
		cur[parts[len(parts)-1]] = v
	}
	return nil
}
