package transports

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// RabbitMQName is the rabbitmq transport's name in configuration.
const RabbitMQName = "rabbitmq"

// DefaultPrefetch is the rabbitmq subscriber's default prefetch count:
// django-cqrs's delay_queue_max_size (1000) + 1.
const DefaultPrefetch = 1001

// RabbitMQTLSConfig configures TLS for amqps:// URLs (config key "tls").
// Server certificates are checked against the system roots plus CAFile.
type RabbitMQTLSConfig struct {
	// CAFile is a PEM file of extra CA certificates to trust.
	CAFile string `mapstructure:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// brokers that require client certificates. Set both or neither.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// ServerName overrides the host name checked against the server's
	// certificate (default: the URL's host).
	ServerName string `mapstructure:"server_name"`
	// InsecureSkipVerify turns certificate checks off. For tests only.
	InsecureSkipVerify bool `mapstructure:"insecure_skip_verify"`
}

func (c RabbitMQTLSConfig) isZero() bool { return c == RabbitMQTLSConfig{} }

// rabbitSettings is a checked rabbitmq configuration.
type rabbitSettings struct {
	url      string // with credentials: never log it
	redacted string
	exchange string
	prefetch int
	amqp     amqp.Config
}

// uriTLSParams are amqp091's TLS query parameters, which the rabbitmq
// transport refuses in favour of the tls block.
var uriTLSParams = []string{"certfile", "keyfile", "cacertfile", "server_name_indication"}

func rabbitSettingsFrom(cfg Config) (*rabbitSettings, error) {
	cfg = cfg.WithDefaults()
	s := &rabbitSettings{
		url:      cfg.URL,
		redacted: RedactURL(cfg.URL),
		exchange: cfg.Exchange,
		prefetch: cfg.Prefetch,
	}
	if cfg.URL == "" {
		return nil, errors.New("transports: rabbitmq: config key url: required (amqp://user:password@host:5672/vhost)")
	}
	uri, err := amqp.ParseURI(cfg.URL)
	if err != nil {
		// url.Error repeats the whole URL, password included: keep its cause only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("transports: rabbitmq: config key url: %s is not an AMQP URL: %v", s.redacted, err)
	}
	if q, err := url.Parse(cfg.URL); err == nil {
		for _, p := range uriTLSParams {
			if q.Query().Has(p) {
				return nil, fmt.Errorf("transports: rabbitmq: config key url: query parameter %q is not supported; use the tls block (tls.ca_file, tls.cert_file, tls.key_file, tls.server_name)", p)
			}
		}
	}
	if err := checkExchangeName(cfg.Exchange); err != nil {
		return nil, err
	}
	if cfg.Prefetch < 0 || cfg.Prefetch > 65535 {
		return nil, fmt.Errorf("transports: rabbitmq: config key prefetch: %d is outside 0..65535", cfg.Prefetch)
	}
	s.amqp = amqp.Config{
		Heartbeat:  10 * time.Second,
		Locale:     "en_US",
		Properties: amqp.Table{"connection_name": "gocqrs"},
	}
	switch uri.Scheme {
	case "amqps":
		tc, err := rabbitTLS(cfg.TLS, uri.Host)
		if err != nil {
			return nil, err
		}
		s.amqp.TLSClientConfig = tc
	default:
		if !cfg.TLS.isZero() {
			return nil, fmt.Errorf("transports: rabbitmq: config key tls: set, but url %s is not amqps://", s.redacted)
		}
	}
	return s, nil
}

// rabbitTLS builds the TLS configuration of an amqps:// connection.
func rabbitTLS(c RabbitMQTLSConfig, host string) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		RootCAs:            pool,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // opt-in, documented as tests only
	}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("transports: rabbitmq: config key tls.ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("transports: rabbitmq: config key tls.ca_file: %s holds no PEM certificate", c.CAFile)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("transports: rabbitmq: config keys tls.cert_file and tls.key_file: set both or neither")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("transports: rabbitmq: config keys tls.cert_file/tls.key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// RedactURL returns raw with its password replaced by "xxxxx", for logs and
// errors. When raw does not parse as a URL, everything between "://" and the
// last "@" is replaced, so a malformed URL does not leak its credentials
// either.
func RedactURL(raw string) string {
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 {
		start = i + 3
	}
	u, err := url.Parse(raw)
	if err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			return u.Redacted()
		}
		return raw
	}
	// Unparsable, or an '@' that net/url did not read as the end of the
	// user info (an unescaped '/', '?' or '#' in a password): cut up to
	// the last '@'.
	if at := strings.LastIndex(raw[start:], "@"); at >= 0 {
		return raw[:start] + "xxxxx@" + raw[start+at+1:]
	}
	return raw
}

// checkExchangeName rejects exchange names RabbitMQ would refuse.
func checkExchangeName(name string) error {
	if len(name) > 255 {
		return fmt.Errorf("transports: rabbitmq: config key exchange: %q is longer than 255 bytes", name)
	}
	if strings.HasPrefix(name, "amq.") {
		return fmt.Errorf("transports: rabbitmq: config key exchange: %q uses the reserved prefix \"amq.\"", name)
	}
	return nil
}

// checkRoutingPart rejects queue names and cqrs_ids that would not make a
// literal routing key: '*' and '#' are wildcards in topic bindings, and
// names and keys are limited to 255 bytes.
func checkRoutingPart(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty %s", what)
	case len(name) > 255-len("cqrs.."):
		return fmt.Errorf("%s %q is too long for a routing key", what, name)
	case strings.ContainsAny(name, "*# \t\r\n"):
		return fmt.Errorf("%s %q must not contain '*', '#' or white space (binding wildcards)", what, name)
	}
	return nil
}
