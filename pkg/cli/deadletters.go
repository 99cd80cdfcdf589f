package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// defaultRetryTTL is the lifetime a retried dead letter gets when
// master.message_ttl is not set, or set to never expire: django-cqrs's
// DEFAULT_MASTER_MESSAGE_TTL, which its cqrs_dead_letters uses.
const defaultRetryTTL = 86400 * time.Second

// runDeadLetters is `cqrs dead-letters retry|dump|purge`, django-cqrs's
// cqrs_dead_letters on the rabbitmq transport: the replica's dead-letter
// queue (replica.dead_letter_queue, default dead_letter_<queue>) is
// retried, printed or emptied. It first declares the exchange, the queue,
// the dead-letter queue and their bindings for the registry's replica
// cqrs_ids, so that it works on a fresh broker.
func runDeadLetters(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "dead-letters", "cqrs dead-letters retry|dump|purge [--config FILE]\n\n"+
		"  retry  republish every dead letter to the replica queue (retries 0, fresh expires)\n"+
		"  dump   print every dead letter's body, one per line, leaving them in the queue\n"+
		"  purge  remove every dead letter")
	cfgPath := fs.String("config", "", "configuration file (YAML or JSON; default $CQRS_CONFIG)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("missing subcommand: retry, dump or purge")
	}
	sub := fs.Arg(0)
	switch sub {
	case "retry", "dump", "purge":
	default:
		return usagef("unknown subcommand %q (want retry, dump or purge)", sub)
	}
	if err := parse(fs, fs.Args()[1:]); err != nil { // flags after the subcommand
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		return err
	}
	if cfg.Transport != transports.RabbitMQName {
		return fmt.Errorf("dead letters commands are available only for the rabbitmq transport (config: transport is %q)", cfg.Transport)
	}
	if cfg.Queue == "" {
		return errors.New("config: queue: required: the dead-letter queue belongs to a replica queue (CQRS_QUEUE or `queue:` in the config file)")
	}
	dlq := cfg.Replica.DeadLetterQueue
	if dlq == "" {
		dlq = transports.DefaultDeadLetterQueue(cfg.Queue)
	}
	reg, err := registryFor(env, cfg)
	if err != nil {
		return err
	}
	logger, err := newLogger(env.Stderr, cfg.Log)
	if err != nil {
		return err
	}
	rmq, err := transports.NewRabbitMQ(ctx, cfg.TransportConfig(), logger)
	if err != nil {
		return err
	}
	defer rmq.Close()
	if err := rmq.DeclareReplicaQueues(cfg.Queue, dlq, reg.ReplicaIDs()); err != nil {
		return err
	}
	total, err := rmq.QueueLength(dlq)
	if err != nil {
		return err
	}
	dl := deadLetters{env: env, rmq: rmq, queue: cfg.Queue, dlq: dlq, total: total}
	switch sub {
	case "retry":
		ttl := cfg.Master.MessageTTL.D
		if ttl <= 0 {
			ttl = defaultRetryTTL
		}
		return dl.retry(ctx, ttl)
	case "dump":
		return dl.dump(ctx)
	}
	return dl.purge()
}

// deadLetters is one run of the dead-letters command on a dead-letter queue
// that held total messages when it started.
type deadLetters struct {
	env        Env
	rmq        *transports.RabbitMQ
	queue, dlq string
	total      int
}

// shortfall notes that the queue ran out before the count taken at the start.
func (dl *deadLetters) shortfall(got int) {
	fmt.Fprintf(dl.env.Stderr, "cqrs dead-letters: %q held %d dead letter(s), not %d: the others expired or another client took them\n", dl.dlq, got, dl.total)
}

// retry republishes each of the dead letters counted at the start on the
// requeue key cqrs.<queue>.<cqrs_id> with retries 0 and, when it has an
// expires, a fresh one (now + ttl), as django-cqrs does, and removes it
// from the dead-letter queue once the broker confirmed the copy. A dead
// letter that is not a valid message, or that the broker refuses
// (unroutable: no replica queue bound for its cqrs_id), stays in the
// dead-letter queue at its place; the command then fails at the end,
// naming them. Any other publish error stops the command at once.
func (dl *deadLetters) retry(ctx context.Context, ttl time.Duration) (err error) {
	out := dl.env.Stdout
	fmt.Fprintf(out, "Total dead letters: %d\n", dl.total)
	if dl.total == 0 {
		return nil
	}
	rd, err := dl.rmq.ReadQueue(dl.dlq)
	if err != nil {
		return err
	}
	defer func() {
		// Hands the dead letters left behind back to the queue, in place.
		if cerr := rd.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	var left []string
	for i := 1; i <= dl.total; i++ {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted after %d of %d dead letter(s): the rest stay in %q", i-1, dl.total, dl.dlq)
		}
		m, err := rd.Next()
		if err != nil {
			return fmt.Errorf("read dead letter %d/%d: %w", i, dl.total, err)
		}
		if m == nil {
			dl.shortfall(i - 1)
			break
		}
		fmt.Fprintf(out, "Retrying: %d/%d\n", i, dl.total)
		expires := wire.FormatExpires(time.Now().UTC().Add(ttl))
		printed, p, err := requeueCopy(m.Body, expires)
		if err != nil {
			what := fmt.Sprintf("dead letter %d/%d (%v)", i, dl.total, err)
			fmt.Fprintf(dl.env.Stderr, "cqrs dead-letters: %s: not retried, left in %q\n", what, dl.dlq)
			left = append(left, what)
			continue
		}
		what := fmt.Sprintf("dead letter %d/%d (cqrs_id %q, instance_pk %s)", i, dl.total, p.CQRSID, pkText(p.InstancePK))
		body, err := wire.Encode(p)
		if err != nil {
			return fmt.Errorf("%s: encode: %w (it stays in %q)", what, err, dl.dlq)
		}
		msg := message.NewMessage(watermill.NewUUID(), body)
		msg.SetContext(ctx)
		if err := dl.rmq.Publish(transports.DirectKey(dl.queue, p.CQRSID), msg); err != nil {
			if errors.Is(err, transports.ErrRejected) {
				fmt.Fprintf(dl.env.Stderr, "cqrs dead-letters: %s: not retried, left in %q: %v\n", what, dl.dlq, err)
				left = append(left, what)
				continue
			}
			if ctx.Err() != nil { // not wrapped: an interrupted retry is not a success
				return fmt.Errorf("interrupted at %s: it and the rest stay in %q", what, dl.dlq)
			}
			return fmt.Errorf("%s: not retried, it stays in %q: %w", what, dl.dlq, err)
		}
		fmt.Fprintf(out, "%s\n", printed)
		if err := rd.Remove(m); err != nil {
			return fmt.Errorf("%s: republished, but not removed from %q (a later retry sends it again): %w", what, dl.dlq, err)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("%d dead letter(s) not retried, left in %q: %s", len(left), dl.dlq, strings.Join(left, "; "))
	}
	return nil
}

// requeueCopy applies django-cqrs's retry to a dead letter's body: retries
// becomes 0 and a truthy expires becomes expires. It returns the changed
// body in its own key order (what django-cqrs prints) and the payload to
// publish (whose body has the envelope's key order, as django-cqrs
// publishes it). A body without an expires key gets expires too, as
// django-cqrs's TransportPayload.from_message gives it now + the message
// TTL.
func requeueCopy(body []byte, expires string) ([]byte, *wire.Payload, error) {
	f, err := wire.DecodeFields(body)
	if err != nil {
		return nil, nil, err
	}
	f.Set(wire.KeyRetries, 0)
	v, hasExpires := f.Get(wire.KeyExpires)
	if pyTruthy(v) {
		f.Set(wire.KeyExpires, expires)
	}
	printed, err := f.MarshalJSON()
	if err != nil {
		return nil, nil, err
	}
	p, err := wire.Decode(printed)
	if err != nil {
		return nil, nil, err
	}
	if !hasExpires {
		t, _, err := wire.ParseDateTime(expires)
		if err != nil {
			return nil, nil, err
		}
		p.Expires = &t
	}
	return printed, p, nil
}

// pyTruthy is Python's truth value of a decoded JSON value.
func pyTruthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		return err != nil || f != 0
	case []any:
		return len(x) > 0
	case *wire.Fields:
		return x.Len() > 0
	}
	return true
}

// pkText shows an instance_pk in messages.
func pkText(pk any) string {
	if pk == nil {
		return "null"
	}
	b, err := wire.MarshalValue(pk)
	if err != nil {
		return fmt.Sprint(pk)
	}
	return string(b)
}

// dump prints the body of each dead letter counted at the start, one per
// line, and hands them all back to the queue in their order.
func (dl *deadLetters) dump(ctx context.Context) (err error) {
	if dl.total == 0 {
		return nil
	}
	rd, err := dl.rmq.ReadQueue(dl.dlq)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := rd.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	for i := 1; i <= dl.total; i++ {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted after %d of %d dead letter(s)", i-1, dl.total)
		}
		m, err := rd.Next()
		if err != nil {
			return fmt.Errorf("read dead letter %d/%d: %w", i, dl.total, err)
		}
		if m == nil {
			dl.shortfall(i - 1)
			return nil
		}
		if err := writeBodyLine(dl.env.Stdout, m.Body); err != nil {
			return err
		}
	}
	return nil
}

// writeBodyLine writes b and a newline, unless b ends with one already (as
// Django's command output does).
func writeBodyLine(w io.Writer, b []byte) error {
	if len(b) == 0 || b[len(b)-1] != '\n' {
		b = append(b[:len(b):len(b)], '\n')
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// purge removes every dead letter.
func (dl *deadLetters) purge() error {
	fmt.Fprintf(dl.env.Stdout, "Total dead letters: %d\n", dl.total)
	if dl.total == 0 {
		return nil
	}
	if _, err := dl.rmq.PurgeQueue(dl.dlq); err != nil {
		return err
	}
	fmt.Fprintln(dl.env.Stdout, "Purged")
	return nil
}
