package cqrs

import (
	"testing"

	"github.com/gocqrs/gocqrs/pkg/transports"
)

// The RabbitMQ keys reach the transport configuration: tls as given, and
// the prefetch from replica.delay_queue_max_size + 1 as in django-cqrs.
func TestTransportConfigRabbitMQKeys(t *testing.T) {
	cfg, err := DecodeConfig(map[string]any{
		"transport": "rabbitmq",
		"url":       "amqps://u:p@broker:5671/vh",
		"tls":       map[string]any{"ca_file": "/etc/ca.pem", "server_name": "broker.internal"},
		"replica":   map[string]any{"delay_queue_max_size": 50},
	})
	if err != nil {
		t.Fatal(err)
	}
	tc := cfg.TransportConfig()
	if tc.Prefetch != 51 || tc.TLS.CAFile != "/etc/ca.pem" || tc.TLS.ServerName != "broker.internal" || tc.Exchange != "cqrs" {
		t.Fatalf("transport config %+v", tc)
	}
	def, err := DecodeConfig(map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if got := def.TransportConfig().Prefetch; got != transports.DefaultPrefetch {
		t.Fatalf("default prefetch %d, want %d", got, transports.DefaultPrefetch)
	}
	if _, err := DecodeConfig(map[string]any{"tls": map[string]any{"ca_fil": "x"}}); err == nil {
		t.Fatal("misspelt tls key accepted")
	}
}
