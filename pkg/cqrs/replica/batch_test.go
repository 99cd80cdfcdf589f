package replica_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// seqGen makes random message sequences over a few pks, the way masters,
// retries and reordering produce them: SAVEs in order, with gaps,
// duplicates and stale copies, SYNCs of any revision, DELETEs, re-creations
// after a DELETE, partial column sets, and a few bad messages.
type seqGen struct {
	r     *rand.Rand
	rev   map[int]int // the master's revision per pk, -1 when deleted or never created
	sent  []*wire.Payload
	clock time.Time
	bad   bool // include bad messages
}

func newSeqGen(seed uint64, bad bool) *seqGen {
	return &seqGen{r: rand.New(rand.NewPCG(seed, 7)), rev: map[int]int{}, bad: bad,
		clock: time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)}
}

func (g *seqGen) tick() string {
	g.clock = g.clock.Add(time.Duration(1+g.r.IntN(3000)) * time.Millisecond)
	return g.clock.Format("2006-01-02 15:04:05.000000+00:00")
}

func (g *seqGen) saveData(pk, rev int, upd string) string {
	s := fmt.Sprintf(`{"cqrs_revision":%d,"cqrs_updated":%q,"id":%d,"name":"n%d-%d-%d","active":%t`,
		rev, upd, pk, pk, rev, g.r.IntN(1000), g.r.IntN(2) == 0)
	if g.r.IntN(2) == 0 {
		s += fmt.Sprintf(`,"rating":"%d.%02d","birth_date":"19%02d-0%d-1%d"`, g.r.IntN(1000), g.r.IntN(100), g.r.IntN(100), 1+g.r.IntN(9), g.r.IntN(10))
	}
	if g.r.IntN(3) == 0 {
		s += `,"payload":{"k":[1,2,"x"]},"created_at":"2025-12-31T23:59:59.5Z"`
	}
	if g.bad {
		switch g.r.IntN(50) {
		case 0:
			s += `,"rating":"abc"` // not a number: fails when written
		case 1:
			s += `,"rating":12345.678` // overflows decimal(6,2): fails in SQL (engine check on SQLite)
		case 2:
			s = strings.Replace(s, `"name"`, `"nom"`, 1) // required column missing: fails before reading
		case 3:
			s = strings.Replace(s, fmt.Sprintf(`"id":%d,`, pk), "", 1) // no pk
		}
	}
	return s + "}"
}

func (g *seqGen) next(t *testing.T) *wire.Payload {
	pk := 1 + g.r.IntN(4)
	cur, known := g.rev[pk]
	if !known {
		cur = -1
	}
	var p *wire.Payload
	switch k := g.r.IntN(20); {
	case k < 3 && len(g.sent) > 0: // a duplicate or stale copy of an earlier message
		old := g.sent[g.r.IntN(len(g.sent))]
		cp := *old
		cp.Retries = g.r.IntN(2)
		return &cp
	case k < 5: // SYNC of any revision around the current one
		rev := max(0, cur-1+g.r.IntN(3))
		p = msg(t, "SYNC", "author", g.saveData(pk, rev, g.tick()))
	case k < 7 && cur >= 0: // DELETE
		g.rev[pk] = -1
		p = msg(t, "DELETE", "author", del(pk, cur+1, g.tick()))
	case k < 8 && cur < 0 && known: // re-created on the master: revision 0 again
		g.rev[pk] = 0
		p = msg(t, "SAVE", "author", g.saveData(pk, 0, g.tick()))
	default: // the next SAVE, sometimes after lost ones
		rev := cur + 1
		if g.r.IntN(5) == 0 {
			rev += 1 + g.r.IntN(3)
		}
		g.rev[pk] = rev
		p = msg(t, "SAVE", "author", g.saveData(pk, rev, g.tick()))
	}
	g.sent = append(g.sent, p)
	return p
}

// dump reads a table as text rows ordered by its first column, for comparing
// two databases of one dialect.
func dump(t *testing.T, db *testenv.DB, query string) []string {
	t.Helper()
	rows, err := db.QueryxContext(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.SliceScan()
		if err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, v := range vals {
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			if tm, ok := v.(time.Time); ok {
				v = tm.UTC().Format(time.RFC3339Nano)
			}
			parts = append(parts, fmt.Sprint(v))
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

const (
	authorDump = "SELECT id, cqrs_revision, cqrs_updated, name, birth_date, rating, active, external_uuid, payload, created_at FROM author_ref ORDER BY id"
	tombDump   = "SELECT pk, cqrs_id, revision, updated FROM cqrs_tombstones ORDER BY pk"
)

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestBatchEqualsOneAtATime applies random sequences one message at a time
// on one database and in batches of random sizes on another, and compares
// every Result and error and the final rows and tombstones.
func TestBatchEqualsOneAtATime(t *testing.T) {
	for _, name := range testenv.Dialects {
		t.Run(string(name), func(t *testing.T) {
			t.Parallel()
			one, batched := freshDB(t, testenv.Open(t, name)), freshDB(t, testenv.Open(t, name))
			ctx := context.Background()
			for seed := uint64(1); seed <= 4; seed++ {
				compat := seed == 4 // tombstones off: DjangoCompat
				t.Run(fmt.Sprintf("compat=%v/seed=%d", compat, seed), func(t *testing.T) {
					for _, db := range []*testenv.DB{one, batched} {
						for _, table := range []string{"author_ref", replica.DefaultTombstoneTable} {
							if _, err := db.ExecContext(ctx, "DELETE FROM "+table); err != nil {
								t.Fatal(err)
							}
						}
					}
					opts := replica.Options{DjangoCompat: compat}
					engOne, engBatch := authorEngine(t, one, opts, nil), authorEngine(t, batched, opts, nil)
					g := newSeqGen(seed*10+uint64(len(name)), true)
					r := rand.New(rand.NewPCG(seed, 99))
					var dls []replica.Delivery
					for range 160 {
						dls = append(dls, replica.Delivery{Payload: g.next(t)})
					}
					var wantRes, gotRes []replica.Result
					var wantErr, gotErr []string
					for _, dl := range dls {
						res, err := engOne.Apply(ctx, dl)
						wantRes, wantErr = append(wantRes, res), append(wantErr, errText(err))
					}
					for start := 0; start < len(dls); {
						n := min(len(dls)-start, 1+r.IntN(24))
						res, errs, err := engBatch.ApplyBatch(ctx, dls[start:start+n])
						if err != nil {
							t.Fatalf("batch at %d: %v", start, err)
						}
						if len(res) != n || len(errs) != n {
							t.Fatalf("batch of %d: %d results, %d errors", n, len(res), len(errs))
						}
						for i := range n {
							gotRes, gotErr = append(gotRes, res[i]), append(gotErr, errText(errs[i]))
						}
						start += n
					}
					failures := 0
					for i := range dls {
						if wantErr[i] != "" {
							failures++
						}
						if !reflect.DeepEqual(gotRes[i], wantRes[i]) || gotErr[i] != wantErr[i] {
							t.Errorf("message %d (%s %s): batched %+v %q, one at a time %+v %q", i,
								dls[i].Payload.SignalType, dls[i].Payload.InstanceData.Map(), gotRes[i], gotErr[i], wantRes[i], wantErr[i])
						}
					}
					if failures == 0 {
						t.Errorf("the sequence has no failing message: the test proves less than it should")
					}
					for _, q := range []string{authorDump, tombDump} {
						w, g := dump(t, one, q), dump(t, batched, q)
						if !reflect.DeepEqual(w, g) {
							t.Errorf("%s:\n batched      %q\n one at a time %q", q, g, w)
						}
					}
				})
			}
		})
	}
}

// TestBatchAllInOneEqualsOneAtATime: every message of a sequence in a
// single batch.
func TestBatchAllInOneEqualsOneAtATime(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, one *testenv.DB) {
		freshDB(t, one)
		batched := freshDB(t, testenv.Open(t, one.Dialect.Name()))
		ctx := context.Background()
		engOne, engBatch := authorEngine(t, one, replica.Options{}, nil), authorEngine(t, batched, replica.Options{}, nil)
		g := newSeqGen(42, false)
		var dls []replica.Delivery
		for range 300 {
			dls = append(dls, replica.Delivery{Payload: g.next(t)})
		}
		outcomes := map[replica.Outcome]int{}
		var want []replica.Result
		for _, dl := range dls {
			res, err := engOne.Apply(ctx, dl)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, res)
			outcomes[res.Outcome]++
		}
		got, errs, err := engBatch.ApplyBatch(ctx, dls)
		if err != nil {
			t.Fatal(err)
		}
		for i := range dls {
			if errs[i] != nil || got[i] != want[i] {
				t.Errorf("message %d: batched %+v %v, one at a time %+v", i, got[i], errs[i], want[i])
			}
		}
		for _, o := range []replica.Outcome{replica.OutcomeCreated, replica.OutcomeUpdated, replica.OutcomeDeleted,
			replica.OutcomeSkippedStale, replica.OutcomeSkippedDuplicate, replica.OutcomeSkippedTombstone} {
			if outcomes[o] == 0 {
				t.Errorf("the sequence never gives %s: %v", o, outcomes)
			}
		}
		for _, q := range []string{authorDump, tombDump} {
			if w, g := dump(t, one, q), dump(t, batched, q); !reflect.DeepEqual(w, g) {
				t.Errorf("%s:\n batched      %q\n one at a time %q", q, g, w)
			}
		}
	})
}

// checkTable is a replica table whose CHECK constraint rejects one value,
// so that a message fails in SQL, not in the engine's checks.
var checkTable = map[dialect.Name]string{
	dialect.Postgres: `CREATE TABLE item (id integer PRIMARY KEY, name varchar(50) NOT NULL CHECK (name <> 'bad'),
		cqrs_revision integer NOT NULL, cqrs_updated timestamptz NOT NULL)`,
	dialect.MySQL: "CREATE TABLE item (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL CHECK (name <> 'bad')," +
		" cqrs_revision INT NOT NULL, cqrs_updated DATETIME(6) NOT NULL)",
	dialect.SQLite: `CREATE TABLE item (id integer PRIMARY KEY, name varchar(50) NOT NULL CHECK (name <> 'bad'),
		cqrs_revision integer NOT NULL, cqrs_updated datetime NOT NULL)`,
}
