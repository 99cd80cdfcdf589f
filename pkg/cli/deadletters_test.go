package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

const dlWait = 20 * time.Second

// dlBroker is a test's own exchange, replica queue and dead-letter queue on
// the test broker, deleted after the test, with a configuration file
// pointing at them (replica models author and book).
type dlBroker struct {
	url, exchange, queue, dlq string
	config                    string
	ch                        *amqp.Channel
}

// newDLBroker creates the names and the config file; extraConfig is appended
// to the YAML. With defaultDLQ the config leaves replica.dead_letter_queue
// out (dead_letter_<queue>). Nothing is declared on the broker.
func newDLBroker(t *testing.T, defaultDLQ bool, extraConfig string) *dlBroker {
	t.Helper()
	u := testenv.Need(t, testenv.EnvAMQP, "RabbitMQ")
	conn, err := amqp.Dial(u)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	b := &dlBroker{url: u, exchange: testenv.Name("gocqrs_dlx"), queue: testenv.Name("gocqrs_dlq_replica"), ch: ch}
	b.dlq = testenv.Name("gocqrs_dlq_dead")
	dlqLine := "  dead_letter_queue: " + b.dlq + "\n"
	if defaultDLQ {
		b.dlq, dlqLine = "dead_letter_"+b.queue, "  max_retries: 2\n"
	}
	t.Cleanup(func() {
		c, err := amqp.Dial(u)
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer c.Close()
		if cch, err := c.Channel(); err == nil {
			_, _ = cch.QueueDelete(b.queue, false, false, false)
			_, _ = cch.QueueDelete(b.dlq, false, false, false)
			_ = cch.ExchangeDelete(b.exchange, false, false)
		}
	})
	b.config = writeConfig(t, fmt.Sprintf(`transport: rabbitmq
url: '%s'
exchange: %s
queue: %s
replica:
%smodels:
  - {cqrs_id: author, role: replica, table: author_ref}
  - {cqrs_id: book, role: replica, table: book_ref}
%s`, u, b.exchange, b.queue, dlqLine, extraConfig))
	return b
}

// declare declares the topology as django-cqrs's consumer does, plus a
// dead-letter binding for each of extraIDs.
func (b *dlBroker) declare(t *testing.T, extraIDs ...string) {
	t.Helper()
	if err := b.ch.ExchangeDeclare(b.exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{b.queue, b.dlq} {
		if _, err := b.ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range append([]string{"author", "book"}, extraIDs...) {
		for _, bd := range [][2]string{{b.queue, id}, {b.queue, "cqrs." + b.queue + "." + id}, {b.dlq, "cqrs." + b.dlq + "." + id}} {
			if err := b.ch.QueueBind(bd[0], bd[1], b.exchange, false, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// seed publishes dead letters as django-cqrs's replica does (dead-letter
// routing key of the body's cqrs_id, or "author" for a body without one;
// persistent, text/plain, expiration 864000000) and waits until the
// dead-letter queue holds them.
func (b *dlBroker) seed(t *testing.T, bodies ...string) {
	t.Helper()
	before := b.depth(t, b.dlq)
	for _, body := range bodies {
		id := "author"
		if p, err := wire.Decode([]byte(body)); err == nil {
			id = p.CQRSID
		}
		err := b.ch.PublishWithContext(context.Background(), b.exchange, "cqrs."+b.dlq+"."+id, true, false, amqp.Publishing{
			ContentType: "text/plain", DeliveryMode: amqp.Persistent, Expiration: "864000000", Body: []byte(body),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, dlWait, "dead letters queued", func() bool { return b.depth(t, b.dlq) == before+len(bodies) })
}

// depth returns the ready messages of queue.
func (b *dlBroker) depth(t *testing.T, queue string) int {
	t.Helper()
	q, err := b.ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("inspect queue %q: %v", queue, err)
	}
	return q.Messages
}

// drain takes every message of queue, in order.
func (b *dlBroker) drain(t *testing.T, queue string) []amqp.Delivery {
	t.Helper()
	var out []amqp.Delivery
	for {
		d, ok, err := b.ch.Get(queue, true)
		if err != nil {
			t.Fatalf("get from %q: %v", queue, err)
		}
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

func (b *dlBroker) run(t *testing.T, args ...string) run {
	t.Helper()
	r := runCqrs(t, nil, append(append([]string{"dead-letters"}, args...), "--config", b.config)...)
	if u, err := url.Parse(b.url); err == nil {
		if pw, ok := u.User.Password(); ok && strings.Contains(r.stdout+r.stderr, ":"+pw+"@") {
			t.Errorf("credentials printed: %+v", r)
		}
	}
	return r
}

// fixtureBody returns the body of messages/<name>.json.
func fixtureBody(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testenv.FixturesDir(t), "messages", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Body string `json:"body"`
	}
	if err := json.Unmarshal(raw, &m); err != nil || m.Body == "" {
		t.Fatalf("%s: body not found (%v)", name, err)
	}
	return m.Body
}

// deadLetterSet is fixture-shaped dead letters: a django-cqrs dead letter
// (retries 2), one whose expires has passed (and instance_pk null), a body
// that is not JSON, a book DELETE, a message without TTL (expires null)
// and one full of escapes.
func deadLetterSet(t *testing.T) []string {
	t.Helper()
	past := fixtureBody(t, "22_bulk_create_without_pks__07")
	past = regexp.MustCompile(`"expires":"[^"]*"`).ReplaceAllString(past, `"expires":"2020-01-01T00:00:00+00:00"`)
	return []string{
		fixtureBody(t, "24_replica_fail_always_dead_letter__04"),
		past,
		"this is not JSON {",
		fixtureBody(t, "16_book_delete_custom_data"),
		fixtureBody(t, "35_nottl_author_create"),
		fixtureBody(t, "06_author_create_escaping"),
	}
}

var retriesExpires = regexp.MustCompile(`"retries":\d+,"expires":("[^"]*"|null)`)

// checkFreshExpires checks that body's expires is from..to + ttl (whole
// seconds) and returns it.
func checkFreshExpires(t *testing.T, body string, from, to time.Time, ttl time.Duration) string {
	t.Helper()
	p, err := wire.Decode([]byte(body))
	if err != nil || p.Expires == nil {
		t.Fatalf("requeued body %s: %v (expires %v)", body, err, p)
	}
	lo, hi := from.Add(ttl).Truncate(time.Second), to.Add(ttl)
	if p.Expires.Before(lo) || p.Expires.After(hi) {
		t.Errorf("expires %s, want between %s and %s", p.Expires, lo, hi)
	}
	return wire.FormatExpires(p.Expires.UTC())
}

func TestDeadLettersDumpLeavesQueue(t *testing.T) {
	t.Parallel()
	b := newDLBroker(t, false, "")
	b.declare(t)
	bodies := deadLetterSet(t)
	b.seed(t, bodies...)
	want := strings.Join(bodies, "\n") + "\n"
	for i := range 2 { // the second dump proves the first left the queue in order
		r := b.run(t, "dump")
		if r.code != ExitOK || r.stdout != want || r.stderr != "" {
			t.Fatalf("dump #%d: code %d\nstdout %q\nwant   %q\nstderr %q", i+1, r.code, r.stdout, want, r.stderr)
		}
		if n := b.depth(t, b.dlq); n != len(bodies) {
			t.Fatalf("dump #%d: dead-letter queue holds %d, want %d", i+1, n, len(bodies))
		}
	}
	var got []string
	for _, d := range b.drain(t, b.dlq) {
		got = append(got, string(d.Body))
		if d.Expiration != "864000000" {
			t.Errorf("dumped dead letter lost its expiration: %q", d.Expiration)
		}
	}
	if !slices.Equal(got, bodies) {
		t.Errorf("queue after dump:\n%q\nwant\n%q", got, bodies)
	}
}

func TestDeadLettersRetry(t *testing.T) {
	t.Parallel()
	b := newDLBroker(t, true, "") // default dead_letter_<queue>, default message TTL
	b.declare(t)
	bodies := deadLetterSet(t)
	b.seed(t, bodies...)

	from := time.Now()
	r := b.run(t, "retry")
	to := time.Now()
	if r.code != ExitFailure {
		t.Fatalf("retry with an undecodable dead letter: code %d, want 1: %+v", r.code, r)
	}
	if !strings.Contains(r.stderr, "dead letter 3/6") || !strings.Contains(r.stderr, "invalid JSON") ||
		!strings.Contains(r.stderr, "1 dead letter(s) not retried") || !strings.Contains(r.stderr, b.dlq) {
		t.Errorf("stderr does not name the undecodable dead letter: %s", r.stderr)
	}

	requeued := b.drain(t, b.queue)
	if len(requeued) != 5 {
		t.Fatalf("%d message(s) on the replica queue, want 5", len(requeued))
	}
	wantOut := "Total dead letters: 6\n"
	k := 0
	for i, orig := range bodies {
		wantOut += fmt.Sprintf("Retrying: %d/6\n", i+1)
		if i == 2 {
			continue // the undecodable one
		}
		d := requeued[k]
		k++
		got := string(d.Body)
		id := "author"
		if i == 3 {
			id = "book"
		}
		if d.RoutingKey != "cqrs."+b.queue+"."+id || d.Exchange != b.exchange {
			t.Errorf("message %d requeued to %q/%q, want cqrs.%s.%s", i+1, d.Exchange, d.RoutingKey, b.queue, id)
		}
		if d.ContentType != "text/plain" || d.DeliveryMode != amqp.Persistent || d.Expiration != "" || d.Headers != nil {
			t.Errorf("message %d properties: type %q mode %d expiration %q headers %v", i+1, d.ContentType, d.DeliveryMode, d.Expiration, d.Headers)
		}
		fresh := "null"
		if i != 4 { // 35_nottl keeps expires null
			fresh = `"` + checkFreshExpires(t, got, from, to, 24*time.Hour) + `"`
		}
		want := retriesExpires.ReplaceAllString(orig, `"retries":0,"expires":`+fresh)
		if got != want {
			t.Errorf("message %d requeued as\n%s\nwant\n%s", i+1, got, want)
		}
		wantOut += want + "\n"
	}
	if r.stdout != wantOut {
		t.Errorf("stdout\n%s\nwant\n%s", r.stdout, wantOut)
	}
	left := b.drain(t, b.dlq)
	if len(left) != 1 || string(left[0].Body) != bodies[2] || left[0].Expiration != "864000000" {
		t.Errorf("dead-letter queue after retry: %d message(s), first %q", len(left), func() string {
			if len(left) == 0 {
				return ""
			}
			return string(left[0].Body)
		}())
	}

	// Nothing left: retry succeeds and says so.
	if r := b.run(t, "retry"); r.code != ExitOK || r.stdout != "Total dead letters: 0\n" {
		t.Errorf("retry of an empty queue: %+v", r)
	}
}

func TestDeadLettersRetryLikeDjango(t *testing.T) {
	t.Parallel()
	b := newDLBroker(t, false, "master: {message_ttl: 3600}\n")
	b.declare(t, "ghost")
	bodies := []string{
		// Keys out of order, an extra key, no retries: printed in its own
		// order with retries appended, published in envelope order.
		`{"cqrs_id":"author","signal_type":"SAVE","instance_data":{"id":1},"instance_pk":1,"expires":"2020-01-01T00:00:00+00:00","extra":"x"}`,
		// No expires key: printed without, published with now + TTL.
		`{"signal_type":"SYNC","cqrs_id":"book","instance_data":{"id":2},"instance_pk":2,"retries":7}`,
		// No replica queue bound for cqrs_id ghost's requeue key: unroutable.
		`{"signal_type":"SAVE","cqrs_id":"ghost","instance_data":{},"instance_pk":3,"retries":1,"expires":null}`,
		// A bad retries value is overwritten before the payload is read.
		`{"signal_type":"SAVE","cqrs_id":"author","instance_data":{},"instance_pk":"4","retries":"many","expires":null}`,
	}
	// ghost has dead-letter bindings but no replica-queue binding on the requeue key.
	if err := b.ch.QueueUnbind(b.queue, "cqrs."+b.queue+".ghost", b.exchange, nil); err != nil {
		t.Fatal(err)
	}
	b.seed(t, bodies...)
	from := time.Now()
	r := b.run(t, "retry")
	to := time.Now()
	if r.code != ExitFailure || !strings.Contains(r.stderr, `dead letter 3/4 (cqrs_id "ghost", instance_pk 3)`) ||
		!strings.Contains(r.stderr, "unroutable") {
		t.Fatalf("retry with an unroutable dead letter: %+v", r)
	}
	requeued := b.drain(t, b.queue)
	if len(requeued) != 3 {
		t.Fatalf("%d requeued, want 3", len(requeued))
	}
	exp1 := checkFreshExpires(t, string(requeued[0].Body), from, to, time.Hour)
	exp2 := checkFreshExpires(t, string(requeued[1].Body), from, to, time.Hour)
	wantPub := []string{
		`{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"id":1},"previous_data":null,"instance_pk":1,"correlation_id":null,"retries":0,"expires":"` + exp1 + `","meta":null}`,
		`{"signal_type":"SYNC","cqrs_id":"book","instance_data":{"id":2},"previous_data":null,"instance_pk":2,"correlation_id":null,"retries":0,"expires":"` + exp2 + `","meta":null}`,
		`{"signal_type":"SAVE","cqrs_id":"author","instance_data":{},"previous_data":null,"instance_pk":"4","correlation_id":null,"retries":0,"expires":null,"meta":null}`,
	}
	for i, d := range requeued {
		if string(d.Body) != wantPub[i] {
			t.Errorf("published #%d\n%s\nwant\n%s", i+1, d.Body, wantPub[i])
		}
	}
	wantOut := "Total dead letters: 4\n" +
		"Retrying: 1/4\n" + `{"cqrs_id":"author","signal_type":"SAVE","instance_data":{"id":1},"instance_pk":1,"expires":"` + exp1 + `","extra":"x","retries":0}` + "\n" +
		"Retrying: 2/4\n" + `{"signal_type":"SYNC","cqrs_id":"book","instance_data":{"id":2},"instance_pk":2,"retries":0}` + "\n" +
		"Retrying: 3/4\n" +
		"Retrying: 4/4\n" + `{"signal_type":"SAVE","cqrs_id":"author","instance_data":{},"instance_pk":"4","retries":0,"expires":null}` + "\n"
	if r.stdout != wantOut {
		t.Errorf("stdout\n%s\nwant\n%s", r.stdout, wantOut)
	}
	if left := b.drain(t, b.dlq); len(left) != 1 || string(left[0].Body) != bodies[2] {
		t.Errorf("dead-letter queue after retry: %d message(s)", len(left))
	}
}

func TestDeadLettersPurge(t *testing.T) {
	t.Parallel()
	b := newDLBroker(t, false, "")
	b.declare(t)
	b.seed(t, deadLetterSet(t)[:3]...)
	if r := b.run(t, "purge"); r.code != ExitOK || r.stdout != "Total dead letters: 3\nPurged\n" {
		t.Fatalf("purge: %+v", r)
	}
	if n := b.depth(t, b.dlq); n != 0 {
		t.Errorf("dead-letter queue holds %d after purge", n)
	}
	if r := b.run(t, "purge"); r.code != ExitOK || r.stdout != "Total dead letters: 0\n" {
		t.Errorf("purge of an empty queue: %+v", r)
	}
	if r := b.run(t, "dump"); r.code != ExitOK || r.stdout != "" {
		t.Errorf("dump of an empty queue: %+v", r)
	}
}

func TestDeadLettersDeclaresOnFreshBroker(t *testing.T) {
	t.Parallel()
	b := newDLBroker(t, true, "")
	// Nothing declared: the command declares the exchange, both queues and
	// the replica queue's bindings (flags after the subcommand, too).
	if r := b.run(t, "dump"); r.code != ExitOK || r.stdout != "" || r.stderr != "" {
		t.Fatalf("dump on a fresh broker: %+v", r)
	}
	if n := b.depth(t, b.dlq); n != 0 {
		t.Errorf("dead-letter queue %q holds %d", b.dlq, n)
	}
	for _, key := range []string{"author", "cqrs." + b.queue + ".book"} {
		if err := b.ch.PublishWithContext(context.Background(), b.exchange, key, false, false, amqp.Publishing{Body: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, dlWait, "messages routed to the replica queue", func() bool { return b.depth(t, b.queue) == 2 })
}

func TestDeadLettersUsageAndTransport(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"dead-letters"},
		{"dead-letters", "frobnicate"},
		{"dead-letters", "retry", "extra"},
		{"dead-letters", "dump", "--bogus"},
	} {
		r := runCqrs(t, nil, args...)
		if r.code != ExitUsage {
			t.Errorf("%q: code %d, want 2: %+v", args, r.code, r)
		}
		if len(args) == 2 && !strings.Contains(r.stderr, `"frobnicate"`) {
			t.Errorf("unknown subcommand not named: %s", r.stderr)
		}
	}
	if r := runCqrs(t, nil, "dead-letters", "-h"); r.code != ExitOK || !strings.Contains(r.stderr, "retry|dump|purge") {
		t.Errorf("help: %+v", r)
	}
	if r := runCqrs(t, nil, "-h"); !strings.Contains(r.stderr, "dead-letters") {
		t.Errorf("dead-letters missing from the command list: %s", r.stderr)
	}

	memory := writeConfig(t, "transport: memory\nqueue: q\n")
	r := runCqrs(t, nil, "dead-letters", "retry", "--config", memory)
	if r.code != ExitFailure || !strings.Contains(r.stderr, "dead letters commands are available only for the rabbitmq transport") {
		t.Errorf("memory transport: %+v", r)
	}
	noQueue := writeConfig(t, "transport: rabbitmq\nurl: 'amqp://u:p@127.0.0.1:1/'\n")
	if r := runCqrs(t, nil, "dead-letters", "dump", "--config", noQueue); r.code != ExitFailure || !strings.Contains(r.stderr, "queue") {
		t.Errorf("no queue: %+v", r)
	}
}

func TestDeadLettersHidesCredentials(t *testing.T) {
	t.Parallel()
	unreachable := writeConfig(t, "transport: rabbitmq\nqueue: q\nurl: 'amqp://guest:s3cr3t-pw@127.0.0.1:1/'\n")
	r := runCqrs(t, nil, "dead-letters", "purge", "--config", unreachable)
	if r.code != ExitFailure || strings.Contains(r.stderr+r.stdout, "s3cr3t-pw") || !strings.Contains(r.stderr, "xxxxx") {
		t.Errorf("unreachable broker: %+v", r)
	}

	// The real broker refusing a wrong password.
	base, err := url.Parse(testenv.Need(t, testenv.EnvAMQP, "RabbitMQ"))
	if err != nil {
		t.Fatal(err)
	}
	base.User = url.UserPassword(base.User.Username(), "wr0ng-s3cr3t")
	wrong := writeConfig(t, "transport: rabbitmq\nqueue: q\nurl: '"+base.String()+"'\n")
	r = runCqrs(t, nil, "dead-letters", "dump", "--config", wrong)
	if r.code != ExitFailure || strings.Contains(r.stderr+r.stdout, "wr0ng-s3cr3t") {
		t.Errorf("wrong password: %+v", r)
	}
}
