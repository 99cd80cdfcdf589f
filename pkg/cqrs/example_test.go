package cqrs_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite" // the "sqlite" driver

	"github.com/gocqrs/gocqrs/pkg/cqrs"
	"github.com/gocqrs/gocqrs/pkg/cqrs/consumer"
	"github.com/gocqrs/gocqrs/pkg/cqrs/replica"
	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// openSQLite opens (creating it) a SQLite file with the settings gocqrs
// recommends: WAL journal, a busy timeout, immediate write transactions.
func openSQLite(path string) (*sqlx.DB, error) {
	return sqlx.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
}

// waitUntil polls cond every few milliseconds until it holds or timeout
// passes.
func waitUntil(timeout time.Duration, cond func() bool) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			return fmt.Errorf("still waiting after %s", timeout)
		}
	}
	return nil
}

// printRows prints the result of a query, one row per line.
func printRows(ctx context.Context, db *sqlx.DB, query string) error {
	rows, err := db.QueryxContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := rows.SliceScan()
		if err != nil {
			return err
		}
		fmt.Println(vals...)
	}
	return rows.Err()
}

// The whole flow on one machine with nothing to install: a master and a
// replica, each a SQLite file, joined by the memory transport. The master
// changes rows in its own transactions; each change's message is written to
// the outbox in that transaction, the relay publishes it, and the consumer
// applies it to the replica's table.
func Example() {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	dir, err := os.MkdirTemp("", "gocqrs-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	mdb, err := openSQLite(filepath.Join(dir, "master.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mdb.Close()
	rdb, err := openSQLite(filepath.Join(dir, "replica.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rdb.Close()
	// Both tables carry the two sync columns cqrs_revision and cqrs_updated;
	// Migrate adds the outbox and the tombstones.
	const columns = `(id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL,
		cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME NULL)`
	for _, s := range []struct {
		db    *sqlx.DB
		table string
	}{{mdb, "author"}, {rdb, "author_copy"}} {
		if _, err := s.db.ExecContext(ctx, "CREATE TABLE "+s.table+" "+columns); err != nil {
			fmt.Println(err)
			return
		}
		if err := cqrs.Migrate(ctx, s.db); err != nil {
			fmt.Println(err)
			return
		}
	}

	// The master service: the author table is published as cqrs_id "author".
	mreg := cqrs.NewRegistry()
	if err := mreg.RegisterMaster(cqrs.MasterModel{CQRSID: "author", Table: "author", TrackedFields: []string{"name"}}); err != nil {
		fmt.Println(err)
		return
	}
	m, err := cqrs.NewMaster(ctx, mdb, mreg)
	if err != nil {
		fmt.Println(err)
		return
	}

	// The replica service: "author" lands in its author_copy table.
	rreg := cqrs.NewRegistry()
	if err := rreg.RegisterReplica(cqrs.ReplicaModel{CQRSID: "author", Table: "author_copy"}); err != nil {
		fmt.Println(err)
		return
	}
	eng, err := cqrs.NewEngine(ctx, rdb, rreg, replica.Options{Queue: "example"})
	if err != nil {
		fmt.Println(err)
		return
	}

	// The broker: the in-process memory transport (the default configuration).
	cfg := cqrs.DefaultConfig()
	tr, err := cqrs.NewTransport(ctx, &cfg, quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tr.Close()
	cons, err := cqrs.NewConsumer(tr, rreg, eng, consumer.Options{Queue: "example", Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	relay, err := cqrs.NewRelay(mdb, tr.Publisher(), outbox.RelayOptions{PollMin: time.Millisecond, PollMax: 20 * time.Millisecond, Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	errc := make(chan error, 2)
	go func() { errc <- cons.Run(runCtx) }()
	go func() { errc <- relay.Run(runCtx) }()
	defer func() {
		stop()
		for range 2 {
			if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
				fmt.Println(err)
			}
		}
	}()
	select {
	case <-cons.Running():
	case err := <-errc:
		fmt.Println(err)
		return
	}

	// Each change happens in the master's own transaction.
	change := func(fn func(tx *sqlx.Tx) error) error {
		tx, err := mdb.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if err := fn(tx); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	steps := []func(tx *sqlx.Tx) error{
		func(tx *sqlx.Tx) error {
			if _, err := m.Insert(ctx, tx, "author", map[string]any{"id": 1, "name": "Ann"}); err != nil {
				return err
			}
			_, err := m.Insert(ctx, tx, "author", map[string]any{"id": 2, "name": "Bob"})
			return err
		},
		func(tx *sqlx.Tx) error {
			return m.Update(ctx, tx, "author", 1, map[string]any{"name": "Ann Smith"})
		},
		func(tx *sqlx.Tx) error { return m.Delete(ctx, tx, "author", 2) },
	}
	for _, step := range steps {
		if err := change(step); err != nil {
			fmt.Println(err)
			return
		}
	}

	// Four messages: two creates, an update and a delete.
	if err := waitUntil(10*time.Second, func() bool { return cons.Stats().Done() >= 4 }); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("applied:", cons.Stats().Applied)
	if err := printRows(ctx, rdb, "SELECT id, name, cqrs_revision FROM author_copy ORDER BY id"); err != nil {
		fmt.Println(err)
	}
	// Output:
	// applied: 4
	// 1 Ann Smith 1
}

// DecodeConfig reads the configuration from a map, as decoded from YAML or
// JSON. Models declared there are table-only: a replica of a plain table
// needs no Go code. Register adds them to a registry.
func ExampleDecodeConfig() {
	cfg, err := cqrs.DecodeConfig(map[string]any{
		"queue": "library",
		"replica": map[string]any{
			"max_retries": 5,
			"retry_delay": "500ms",
		},
		"models": []any{
			map[string]any{
				"cqrs_id": "author",
				"role":    "replica",
				"table":   "author_ref",
				"columns": []any{"id", "full_name:string"},
				"mapping": map[string]any{"id": "id", "name": "full_name"},
			},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("transport:", cfg.Transport, "queue:", cfg.Queue)
	fmt.Println("max retries:", *cfg.Replica.MaxRetries, "retry delay:", cfg.Replica.RetryDelay.Or(2*time.Second))
	reg := cqrs.NewRegistry()
	if err := cfg.Register(reg); err != nil {
		fmt.Println(err)
		return
	}
	rm, _ := reg.Replica("author")
	fmt.Println("replica models:", reg.ReplicaIDs(), "table:", rm.Table, "mapping:", rm.Mapping)

	// Bad keys and values are errors naming the key.
	_, err = cqrs.DecodeConfig(map[string]any{"replica": map[string]any{"max_retires": 5}})
	fmt.Println(err)
	// Output:
	// transport: memory queue: library
	// max retries: 5 retry delay: 500ms
	// replica models: [author] table: author_ref mapping: [{id id} {name full_name}]
	// config: decoding failed due to the following error(s):
	//
	// 'replica' has invalid keys: max_retires
}

// LoadConfig reads a YAML (or JSON) file. Here a table-only replica declared
// in the file applies a django-cqrs message: no Go code describes the table.
func ExampleLoadConfig() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "gocqrs-config-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "cqrs.yaml")
	if err := os.WriteFile(path, []byte(`
transport: memory
models:
  - cqrs_id: author
    role: replica
    table: author_ref
    mapping: {id: id, name: full_name}
`), 0o600); err != nil {
		fmt.Println(err)
		return
	}
	cfg, err := cqrs.LoadConfig(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	reg := cqrs.NewRegistry()
	if err := cfg.Register(reg); err != nil {
		fmt.Println(err)
		return
	}

	db, err := openSQLite(filepath.Join(dir, "replica.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE author_ref (id INTEGER PRIMARY KEY, full_name TEXT NOT NULL,
		cqrs_revision INTEGER NOT NULL, cqrs_updated DATETIME NOT NULL)`); err != nil {
		fmt.Println(err)
		return
	}
	if err := cqrs.Migrate(ctx, db); err != nil {
		fmt.Println(err)
		return
	}
	eng, err := cqrs.NewEngine(ctx, db, reg, replica.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	// A SAVE as a django-cqrs master sends it.
	p, err := wire.Decode([]byte(`{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"cqrs_revision":0,` +
		`"cqrs_updated":"2026-03-01 09:30:00.123456+00:00","id":1,"name":"Ann","birth_date":null},` +
		`"previous_data":{"name":null},"instance_pk":1,"correlation_id":null,"retries":0,"expires":null,"meta":{}}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := eng.Apply(ctx, replica.Delivery{Payload: p})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Outcome)
	if err := printRows(ctx, db, "SELECT id, full_name, cqrs_revision FROM author_ref"); err != nil {
		fmt.Println(err)
	}
	// Output:
	// created
	// 1 Ann 0
}

// A replica model's hooks replace the default SQL of a step (here: create,
// which logs and then calls the default), and a raw replica has no table at
// all: its handlers get every message as it came.
func ExampleNewEngine_hooks() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "gocqrs-hooks-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	db, err := openSQLite(filepath.Join(dir, "replica.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE author_copy (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
		cqrs_revision INTEGER NOT NULL, cqrs_updated DATETIME NOT NULL)`); err != nil {
		fmt.Println(err)
		return
	}
	if err := cqrs.Migrate(ctx, db); err != nil {
		fmt.Println(err)
		return
	}

	reg := cqrs.NewRegistry()
	err = reg.RegisterReplica(cqrs.ReplicaModel{
		CQRSID:      "author",
		Table:       "author_copy",
		DeliverMeta: true,
		Hooks: cqrs.ReplicaHooks{
			// data holds the replica's columns, sync columns included.
			Create: func(ctx context.Context, ac *cqrs.ApplyContext, data *cqrs.Fields) error {
				b, _ := wire.MarshalValue(data)
				meta, _ := wire.MarshalValue(ac.Meta)
				fmt.Printf("create hook: %s meta=%s\n", b, meta)
				return replica.DefaultCreate(ctx, ac, data)
			},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	err = reg.RegisterReplica(cqrs.ReplicaModel{
		CQRSID: "event",
		Raw: cqrs.RawHandlers{
			Save: func(_ context.Context, ac *cqrs.ApplyContext) error {
				b, _ := wire.MarshalValue(ac.Payload.InstanceData)
				fmt.Printf("raw save: %s pk=%v sync=%v %s\n", ac.Payload.SignalType, ac.Payload.InstancePK, ac.Sync, b)
				return nil
			},
			Delete: func(_ context.Context, ac *cqrs.ApplyContext) error {
				fmt.Printf("raw delete: pk=%v\n", ac.Payload.InstancePK)
				return nil
			},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	eng, err := cqrs.NewEngine(ctx, db, reg, replica.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}

	for _, body := range []string{
		`{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"cqrs_revision":0,"cqrs_updated":"2026-03-01 09:30:00+00:00","id":1,"name":"Ann","rating":4.5},"previous_data":null,"instance_pk":1,"correlation_id":null,"retries":0,"expires":null,"meta":{"source":"crm"}}`,
		`{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"cqrs_revision":1,"cqrs_updated":"2026-03-01 09:31:00+00:00","id":1,"name":"Ann Smith","rating":4.5},"previous_data":{"name":"Ann"},"instance_pk":1,"correlation_id":null,"retries":0,"expires":null,"meta":{}}`,
		`{"signal_type":"SAVE","cqrs_id":"event","instance_data":{"cqrs_revision":0,"cqrs_updated":"2026-03-01 09:30:00+00:00","id":"ev-1","kind":"login"},"previous_data":null,"instance_pk":"ev-1","correlation_id":null,"retries":0,"expires":null,"meta":{}}`,
		`{"signal_type":"SYNC","cqrs_id":"event","instance_data":{"cqrs_revision":0,"cqrs_updated":"2026-03-01 09:30:00+00:00","id":"ev-1","kind":"login"},"previous_data":null,"instance_pk":"ev-1","correlation_id":null,"retries":0,"expires":null,"meta":{}}`,
		`{"signal_type":"DELETE","cqrs_id":"event","instance_data":{"id":"ev-1","cqrs_revision":1,"cqrs_updated":"2026-03-01 09:32:00+00:00"},"previous_data":null,"instance_pk":"ev-1","correlation_id":null,"retries":0,"expires":null,"meta":{}}`,
	} {
		p, err := wire.Decode([]byte(body))
		if err != nil {
			fmt.Println(err)
			return
		}
		res, err := eng.Apply(ctx, replica.Delivery{Payload: p})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("->", res.Outcome)
	}
	if err := printRows(ctx, db, "SELECT id, name, cqrs_revision FROM author_copy"); err != nil {
		fmt.Println(err)
	}
	// Output:
	// create hook: {"cqrs_revision":0,"cqrs_updated":"2026-03-01 09:30:00+00:00","id":1,"name":"Ann"} meta={"source":"crm"}
	// -> created
	// -> updated
	// raw save: SAVE pk=ev-1 sync=false {"cqrs_revision":0,"cqrs_updated":"2026-03-01 09:30:00+00:00","id":"ev-1","kind":"login"}
	// -> raw
	// raw save: SYNC pk=ev-1 sync=true {"cqrs_revision":0,"cqrs_updated":"2026-03-01 09:30:00+00:00","id":"ev-1","kind":"login"}
	// -> raw
	// raw delete: pk=ev-1
	// -> raw
	// 1 Ann Smith 1
}
