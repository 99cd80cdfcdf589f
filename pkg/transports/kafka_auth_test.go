package transports_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// TestKafkaSASL authenticates with each mechanism against a broker that
// requires SASL; a wrong password is refused, and the password shows in no
// error and no log line.
func TestKafkaSASL(t *testing.T) {
	t.Parallel()
	const pw = "s3cr3t-pw"
	c := newKafkaCluster(t, kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "plain-user", pw),
		kfake.Superuser("SCRAM-SHA-256", "scram256-user", pw),
		kfake.Superuser("SCRAM-SHA-512", "scram512-user", pw))
	for _, mech := range []struct{ name, user string }{
		{"PLAIN", "plain-user"}, {"scram-sha-256", "scram256-user"}, {"SCRAM-SHA-512", "scram512-user"},
	} {
		t.Run(mech.name, func(t *testing.T) {
			t.Parallel()
			logs := &testenv.SyncBuffer{}
			logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			kc := transports.KafkaConfig{ConsumerGroup: "sasl", Partitions: 1,
				SASL: transports.KafkaSASLConfig{Mechanism: mech.name, User: mech.user, Password: pw}}
			k, err := transports.NewKafka(context.Background(), kafkaConfig(c, kc), logger)
			if err != nil {
				t.Fatalf("good password refused: %v", err)
			}
			defer k.Close()
			topic := "sasl-" + strings.ToLower(mech.name)
			kafkaPublish(t, k, topic, []byte("hello"), nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := k.Subscribe(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			m := kafkaReceive(t, ch)
			m.Ack()
			if string(m.Payload) != "hello" {
				t.Fatalf("got %q", m.Payload)
			}

			kc.SASL.Password = "wrong-" + pw
			if _, err := transports.NewKafka(context.Background(), kafkaConfig(c, kc), logger); err == nil {
				t.Fatal("wrong password accepted")
			} else if strings.Contains(err.Error(), pw) {
				t.Fatalf("error shows the password: %v", err)
			}
			if !strings.Contains(logs.String(), mech.user) {
				t.Fatalf("the debug log does not show the connection (user %s): %s", mech.user, logs)
			}
			if strings.Contains(logs.String(), pw) {
				t.Fatalf("the log shows the password: %s", logs)
			}
		})
	}
}

// TestKafkaTLS connects to a TLS-only broker with its CA; without the CA the
// connection is refused.
func TestKafkaTLS(t *testing.T) {
	t.Parallel()
	cert, caFile := kafkaSelfSigned(t)
	c := newKafkaCluster(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	kc := transports.KafkaConfig{ConsumerGroup: "tls", Partitions: 1, TLS: transports.KafkaTLSConfig{CAFile: caFile}}
	k := newKafka(t, c, kc)
	kafkaPublish(t, k, "secure", []byte("over tls"), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := k.Subscribe(ctx, "secure")
	if err != nil {
		t.Fatal(err)
	}
	m := kafkaReceive(t, ch)
	m.Ack()
	if string(m.Payload) != "over tls" {
		t.Fatalf("got %q", m.Payload)
	}
	kc.TLS = transports.KafkaTLSConfig{Enabled: true} // system roots do not know the broker's CA
	if _, err := transports.NewKafka(context.Background(), kafkaConfig(c, kc), kafkaDiscardLogger()); err == nil {
		t.Fatal("a broker certificate from an unknown CA was accepted")
	}
}

// selfSigned returns a self-signed certificate for 127.0.0.1 and the path
// of its PEM file, to be used as the CA.
func kafkaSelfSigned(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kfake"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, path
}
