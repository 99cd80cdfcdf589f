package transports

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// A SCRAM client (RFC 5802, RFC 7677) for Sarama's SASL/SCRAM, which asks
// for one instead of shipping its own.

type scramHash struct {
	name string
	new  func() hash.Hash
}

var (
	scramSHA256 = scramHash{"SHA-256", sha256.New}
	scramSHA512 = scramHash{"SHA-512", sha512.New}
)

// scramMinIterations is the fewest PBKDF2 iterations a server may ask for
// (RFC 7677 recommends at least 4096).
const scramMinIterations = 4096

// scramClient runs one SCRAM exchange: Step("") gives the client-first
// message, Step(server-first) the client-final one, Step(server-final)
// checks the server's signature and ends the exchange.
type scramClient struct {
	h     scramHash
	user  string
	pass  string
	authz string

	step        int
	nonce       string
	clientFirst string // client-first-message-bare
	serverSig   []byte
	done        bool
}

func newSCRAMClient(h scramHash) *scramClient { return &scramClient{h: h} }

// Begin starts an exchange for user.
func (c *scramClient) Begin(user, password, authzID string) error {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("scram: nonce: %w", err)
	}
	*c = scramClient{h: c.h, user: user, pass: password, authz: authzID, nonce: base64.RawStdEncoding.EncodeToString(b)}
	return nil
}

// Step takes the server's last message and returns the next one to send.
func (c *scramClient) Step(challenge string) (string, error) {
	c.step++
	switch c.step {
	case 1:
		c.clientFirst = "n=" + scramName(c.user) + ",r=" + c.nonce
		return c.gs2Header() + c.clientFirst, nil
	case 2:
		return c.final(challenge)
	case 3:
		c.done = true
		attrs := scramAttrs(challenge)
		if e, ok := attrs["e"]; ok {
			return "", fmt.Errorf("scram: server refused the authentication: %s", e)
		}
		sig, err := base64.StdEncoding.DecodeString(attrs["v"])
		if err != nil || !hmac.Equal(sig, c.serverSig) {
			return "", errors.New("scram: the server's signature does not match (not the server that holds the credentials)")
		}
		return "", nil
	}
	return "", errors.New("scram: exchange already finished")
}

// Done reports whether the exchange is over.
func (c *scramClient) Done() bool { return c.done }

func (c *scramClient) gs2Header() string {
	if c.authz == "" {
		return "n,,"
	}
	return "n,a=" + scramName(c.authz) + ","
}

// final answers the server-first message with the client proof.
func (c *scramClient) final(serverFirst string) (string, error) {
	attrs := scramAttrs(serverFirst)
	if e, ok := attrs["e"]; ok {
		return "", fmt.Errorf("scram: server refused the authentication: %s", e)
	}
	nonce := attrs["r"]
	if !strings.HasPrefix(nonce, c.nonce) || len(nonce) == len(c.nonce) {
		return "", errors.New("scram: the server's nonce does not extend ours")
	}
	salt, err := base64.StdEncoding.DecodeString(attrs["s"])
	if err != nil || len(salt) == 0 {
		return "", errors.New("scram: the server sent no valid salt")
	}
	iter, err := strconv.Atoi(attrs["i"])
	if err != nil || iter < scramMinIterations {
		return "", fmt.Errorf("scram: the server asked for %q iterations; want at least %d", attrs["i"], scramMinIterations)
	}
	salted, err := pbkdf2.Key(c.h.new, c.pass, salt, iter, c.h.new().Size())
	if err != nil {
		return "", fmt.Errorf("scram: salt password: %w", err)
	}
	withoutProof := "c=" + base64.StdEncoding.EncodeToString([]byte(c.gs2Header())) + ",r=" + nonce
	authMessage := []byte(c.clientFirst + "," + serverFirst + "," + withoutProof)

	clientKey := c.hmac(salted, []byte("Client Key"))
	sum := c.h.new()
	sum.Write(clientKey)
	storedKey := sum.Sum(nil)
	proof := c.hmac(storedKey, authMessage)
	for i := range proof {
		proof[i] ^= clientKey[i]
	}
	c.serverSig = c.hmac(c.hmac(salted, []byte("Server Key")), authMessage)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

func (c *scramClient) hmac(key, data []byte) []byte {
	m := hmac.New(c.h.new, key)
	m.Write(data)
	return m.Sum(nil)
}

// scramName escapes a SCRAM user name ('=' and ',').
func scramName(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

// scramAttrs splits a SCRAM message into its attributes.
func scramAttrs(msg string) map[string]string {
	out := map[string]string{}
	for _, part := range strings.Split(msg, ",") {
		if k, v, ok := strings.Cut(part, "="); ok && len(k) == 1 {
			out[k] = v
		}
	}
	return out
}
