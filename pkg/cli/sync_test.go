package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/transports"
)

// published decodes the messages the memory transport holds for topic.
func published(t *testing.T, mem *transports.Memory, topic string) []*wire.Payload {
	t.Helper()
	var out []*wire.Payload
	for _, msg := range mem.Peek(topic) {
		p, err := wire.Decode(msg.Payload)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// dumpLines maps the fixture dump's rows by id.
func dumpLines(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(fixture(t, "cqrs_bulk_dump_author.stdout"), "\n")[1:] {
		f, err := wire.DecodeFields([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		id, _ := f.Get("id")
		out[keyOf(id)] = line
	}
	return out
}

func TestSyncFilterQueueAndPublish(t *testing.T) {
	eachDB(t, func(t *testing.T, m, _ *side) {
		loadMasterFixture(t, m)
		rows := dumpLines(t)
		ctx, mem := memoryTransport(t)

		res := m.runCtx(ctx, "", "sync", "--cqrs-id", "author", "-f", `{"id__in": [1, 3]}`)
		if res.code != ExitOK || res.stdout != "Done!\n2 instance(s) synced.\n2 instance(s) processed.\n" {
			t.Fatalf("sync: %+v", res)
		}
		if n := m.outboxCount(); n != 0 {
			t.Errorf("outbox holds %d rows after sync", n)
		}
		msgs := published(t, mem, "author")
		if len(msgs) != 2 {
			t.Fatalf("%d broadcast messages, want 2", len(msgs))
		}
		for i, id := range []string{"1", "3"} {
			data, _ := msgs[i].InstanceData.MarshalJSON()
			if msgs[i].SignalType != wire.SignalSync || string(data) != rows[id] {
				t.Errorf("message %d: %s %s\n want instance_data %s", i, msgs[i].SignalType, data, rows[id])
			}
		}

		// Every row, to one queue, in batches of 2.
		res = m.runCtx(ctx, "", "sync", "-cid", "author", "-f", "{}", "-q", "fixture_replica", "-b", "2")
		if res.code != ExitOK || res.stdout != "Done!\n5 instance(s) synced.\n5 instance(s) processed.\n" {
			t.Fatalf("sync to a queue: %+v", res)
		}
		if n := len(published(t, mem, "cqrs.fixture_replica.author")); n != 5 {
			t.Errorf("%d direct messages, want 5", n)
		}

		// django-cqrs syncs nothing without a filter.
		res = m.runCtx(ctx, "", "sync", "--cqrs-id", "author")
		if res.code != ExitOK || res.stdout != "No objects found for filter!\n" || !strings.Contains(res.stderr, "-f '{}'") {
			t.Errorf("sync without a filter: %+v", res)
		}
		res = m.runCtx(ctx, "", "sync", "--cqrs-id", "author", "-f", `{"id": 999}`)
		if res.code != ExitOK || res.stdout != "No objects found for filter!\n" {
			t.Errorf("sync, no match: %+v", res)
		}
		if n := len(published(t, mem, "author")); n != 2 {
			t.Errorf("%d broadcast messages after syncs of nothing, want 2", n)
		}

		// --no-publish leaves the message in the outbox.
		res = m.runCtx(ctx, "", "sync", "--cqrs-id", "author", "-f", `{"pk": 5}`, "--no-publish")
		if res.code != ExitOK || !strings.Contains(res.stderr, "1 message(s) written to the outbox") {
			t.Errorf("--no-publish: %+v", res)
		}
		if n := m.outboxCount(); n != 1 {
			t.Errorf("outbox holds %d rows after --no-publish, want 1", n)
		}
	})
}

// diff-sync fed django-cqrs's diff-replica stream sends the messages
// django-cqrs sent, byte for byte (but for the expiry time), with the same
// correlation and meta functions as the fixture's master.
func TestSyncDiffSyncMatchesDjangoMessages(t *testing.T) {
	reg := registry.New()
	err := reg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author", TrackedFields: []string{"name", "rating"},
		Correlation: func(_ context.Context, ev registry.Event) any {
			return fmt.Sprintf("corr:%s:%s:%v:%s", ev.Signal, ev.CQRSID, ev.PK, ev.Queue)
		},
		Meta: func(context.Context, registry.Event, *wire.Fields) any { return wire.FieldsOf("source", "master") },
	})
	if err != nil {
		t.Fatal(err)
	}
	m := newSide(t, testenv.SQLite(t), "author", "")
	loadMasterFixture(t, m)
	m.reg = reg
	ctx, mem := memoryTransport(t)
	res := m.runCtx(ctx, fixture(t, "cqrs_diff_replica.stdout"), "diff-sync")
	if res.code != ExitOK || res.stdout != fixture(t, "cqrs_diff_sync.stdout") {
		t.Fatalf("diff-sync: %+v", res)
	}
	var want []struct {
		RoutingKey string `json:"routing_key"`
		Body       string `json:"body"`
	}
	if err := json.Unmarshal([]byte(fixture(t, "cqrs_diff_sync_messages.json")), &want); err != nil {
		t.Fatal(err)
	}
	got := mem.Peek(want[0].RoutingKey)
	if len(got) != len(want) {
		t.Fatalf("%d messages on %s, want %d", len(got), want[0].RoutingKey, len(want))
	}
	for i := range want {
		wp, err := wire.Decode([]byte(want[i].Body))
		if err != nil {
			t.Fatal(err)
		}
		gp, err := wire.Decode(got[i].Payload)
		if err != nil {
			t.Fatal(err)
		}
		gp.Expires = wp.Expires
		body, err := wire.Encode(gp)
		if err != nil {
			t.Fatal(err)
		}
		if string(body) != want[i].Body {
			t.Errorf("message %d:\n got  %s\n want %s", i, body, want[i].Body)
		}
	}
}

// A row that cannot be synced is reported and the others still go out.
func TestSyncRowFailuresAreReported(t *testing.T) {
	reg := registry.New()
	err := reg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author",
		Serialize: func(_ context.Context, _ *sqlx.Tx, row *wire.Fields) (*wire.Fields, error) {
			if id, _ := row.Get("id"); keyOf(id) == "2" {
				return nil, errors.New("cannot serialise Bob")
			}
			return row, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := newSide(t, testenv.SQLite(t), "author", "")
	loadMasterFixture(t, m)
	m.reg = reg
	ctx, mem := memoryTransport(t)
	res := m.runCtx(ctx, "", "sync", "--cqrs-id", "author", "-f", "{}", "--progress")
	if res.code != ExitFailure || res.stdout != "Done!\n4 instance(s) synced.\n5 instance(s) processed.\n" {
		t.Fatalf("sync: %+v", res)
	}
	for _, want := range []string{"Sync record failed for pk=2: ", "cannot serialise Bob", "1 row(s) could not be synced",
		"Processing 5 records with batch size 10000\n", "5 of 5 processed - 100% with rate "} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, res.stderr)
		}
	}
	if n := len(published(t, mem, "author")); n != 4 {
		t.Errorf("%d messages published, want 4", n)
	}
	// bulk-dump reports the row the same way and dumps the rest.
	res = m.run("", "bulk-dump", "--cqrs-id", "author", "-o", "-")
	if res.code != ExitOK || strings.Count(res.stdout, "\n") != 4 ||
		!strings.Contains(res.stderr, "Dump record failed for pk=2: serializer: cannot serialise Bob\nDone!\n4 instance(s) saved.\n5 instance(s) processed.\n") {
		t.Errorf("bulk-dump: %+v", res)
	}
}

func TestSyncUsageErrors(t *testing.T) {
	m := newMasterSide(t, testenv.SQLite(t))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"sync", "-f", "{}"}, "--cqrs-id is required"},
		{[]string{"sync", "--cqrs-id", "book", "-f", "{}"}, `--cqrs-id: no master model with cqrs_id "book" (known: author)`},
		{[]string{"sync", "--cqrs-id", "author", "-f", "{}", "-q", "a b"}, `--queue "a b"`},
		{[]string{"sync", "--cqrs-id", "author", "-f", "[1]"}, "--filter: want a JSON object"},
		{[]string{"sync", "--cqrs-id", "author", "-f", "{"}, "--filter: not valid JSON"},
		{[]string{"sync", "--cqrs-id", "author", "-f", `{"id__contains": 1}`}, `--filter: key "id__contains": lookup "contains" is not supported`},
		{[]string{"sync", "--cqrs-id", "author", "-f", "{}", "extra"}, `unexpected argument "extra"`},
		{[]string{"sync", "--cqrs-id", "author", "--bogus"}, "bogus"},
	} {
		res := m.run("", c.args...)
		if res.code != ExitUsage || !strings.Contains(res.stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q lacks %q", c.args, res.code, res.stderr, c.want)
		}
	}
	if n := m.outboxCount(); n != 0 {
		t.Errorf("usage errors wrote %d outbox rows", n)
	}
}

// A message the broker refuses stays in the outbox and fails the command
// at once, instead of waiting for it.
func TestSyncRejectedMessageFailsFast(t *testing.T) {
	m := newMasterSide(t, testenv.SQLite(t))
	loadMasterFixture(t, m)
	mem, err := transports.NewMemory(transports.MemoryConfig{MaxPending: 3}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	res := m.runCtx(withTransport(context.Background(), mem), "", "sync", "--cqrs-id", "author", "-f", "{}")
	if res.code != ExitFailure || res.stdout != "Done!\n5 instance(s) synced.\n5 instance(s) processed.\n" ||
		!strings.Contains(res.stderr, "topic full") || !strings.Contains(res.stderr, "3 published; 2 message(s) stay in the outbox") {
		t.Errorf("sync: %+v", res)
	}
	if n := m.outboxCount(); n != 2 {
		t.Errorf("outbox holds %d rows, want the 2 rejected", n)
	}
}
