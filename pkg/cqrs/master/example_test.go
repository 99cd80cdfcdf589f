package master_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite" // the "sqlite" driver

	"github.com/gocqrs/gocqrs/pkg/cqrs/dialect"
	"github.com/gocqrs/gocqrs/pkg/cqrs/master"
	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
	"github.com/gocqrs/gocqrs/pkg/outbox"
)

// exampleClock is the fixed clock the examples run on, so that cqrs_updated
// and expires come out the same every time.
func exampleClock() time.Time { return time.Date(2026, 3, 1, 9, 30, 0, 123456789, time.UTC) }

// exampleMaster opens a SQLite file in a new temporary directory with an
// author table and the outbox, and returns a Master for it (fixed clock,
// messages expiring an hour after the change). done closes the database and
// removes the directory.
func exampleMaster(ctx context.Context, opts ...master.Option) (db *sqlx.DB, m *master.Master, done func(), err error) {
	dir, err := os.MkdirTemp("", "gocqrs-master-example-")
	if err != nil {
		return nil, nil, nil, err
	}
	db, err = sqlx.Open("sqlite", "file:"+filepath.Join(dir, "master.db")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	done = func() { db.Close(); os.RemoveAll(dir) }
	if _, err := db.ExecContext(ctx, `CREATE TABLE author (
		id INTEGER PRIMARY KEY,
		name VARCHAR(200) NOT NULL,
		birth_date DATE NULL,
		rating DECIMAL(6,2) NULL,
		cqrs_revision INTEGER NOT NULL DEFAULT 0,
		cqrs_updated DATETIME NULL)`); err != nil {
		done()
		return nil, nil, nil, err
	}
	d, err := dialect.Of(db)
	if err == nil {
		err = outbox.Migrate(ctx, db, d)
	}
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	reg := registry.New()
	if err := reg.RegisterMaster(registry.MasterModel{CQRSID: "author", Table: "author", TrackedFields: []string{"name", "rating"}}); err != nil {
		done()
		return nil, nil, nil, err
	}
	opts = append([]master.Option{master.WithClock(exampleClock), master.WithMessageTTL(time.Hour)}, opts...)
	if m, err = master.New(ctx, db, reg, opts...); err != nil {
		done()
		return nil, nil, nil, err
	}
	return db, m, done, nil
}

// printOutbox prints every outbox row: the routing key it will be published
// with, then the django-cqrs body, indented.
func printOutbox(ctx context.Context, db *sqlx.DB) error {
	rows, err := db.QueryxContext(ctx, "SELECT topic, body FROM cqrs_outbox ORDER BY id")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var topic, body string
		if err := rows.Scan(&topic, &body); err != nil {
			return err
		}
		var out bytes.Buffer
		if err := json.Indent(&out, []byte(body), "", "  "); err != nil {
			return err
		}
		fmt.Println("topic:", topic)
		fmt.Println(out.String())
	}
	return rows.Err()
}

// Insert adds a row at revision 0 and, in the same transaction, its SAVE
// message to the outbox. previous_data lists the tracked fields that are not
// null, each as null, as django-cqrs does on create.
func ExampleMaster_Insert() {
	ctx := context.Background()
	db, m, done, err := exampleMaster(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer done()

	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	id, err := m.Insert(ctx, tx, "author", map[string]any{"name": "Ann", "birth_date": "1990-05-17"})
	if err != nil {
		tx.Rollback()
		fmt.Println(err)
		return
	}
	if err := tx.Commit(); err != nil { // the row and its message, or neither
		fmt.Println(err)
		return
	}
	fmt.Println("inserted id", id)
	if err := printOutbox(ctx, db); err != nil {
		fmt.Println(err)
	}
	// Output:
	// inserted id 1
	// topic: author
	// {
	//   "signal_type": "SAVE",
	//   "cqrs_id": "author",
	//   "instance_data": {
	//     "cqrs_revision": 0,
	//     "cqrs_updated": "2026-03-01 09:30:00.123456+00:00",
	//     "id": 1,
	//     "name": "Ann",
	//     "birth_date": "1990-05-17",
	//     "rating": null
	//   },
	//   "previous_data": {
	//     "name": null
	//   },
	//   "instance_pk": 1,
	//   "correlation_id": null,
	//   "retries": 0,
	//   "expires": "2026-03-01T10:30:00+00:00",
	//   "meta": {}
	// }
}

// Update changes a row, bumps its revision and writes a SAVE whose
// previous_data holds the old values of the tracked fields that changed.
// Two updates of one row in one transaction make one message with the final
// state and one revision bump.
func ExampleMaster_Update() {
	ctx := context.Background()
	db, m, done, err := exampleMaster(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer done()
	// A row written earlier (by gocqrs, or by the service before it used gocqrs).
	if _, err := db.ExecContext(ctx, `INSERT INTO author (id, name, rating, cqrs_revision, cqrs_updated)
		VALUES (7, 'Ann', 4.5, 3, '2026-02-01 08:00:00')`); err != nil {
		fmt.Println(err)
		return
	}

	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	err = m.Update(ctx, tx, "author", 7, map[string]any{"name": "Ann B.", "birth_date": "1990-05-17"})
	if err == nil {
		err = m.Update(ctx, tx, "author", 7, map[string]any{"name": "Ann Smith"})
	}
	if err != nil {
		tx.Rollback()
		fmt.Println(err)
		return
	}
	if err := tx.Commit(); err != nil {
		fmt.Println(err)
		return
	}
	if err := printOutbox(ctx, db); err != nil {
		fmt.Println(err)
	}
	// Output:
	// topic: author
	// {
	//   "signal_type": "SAVE",
	//   "cqrs_id": "author",
	//   "instance_data": {
	//     "cqrs_revision": 4,
	//     "cqrs_updated": "2026-03-01 09:30:00.123456+00:00",
	//     "id": 7,
	//     "name": "Ann Smith",
	//     "birth_date": "1990-05-17",
	//     "rating": 4.5
	//   },
	//   "previous_data": {
	//     "name": "Ann"
	//   },
	//   "instance_pk": 7,
	//   "correlation_id": null,
	//   "retries": 0,
	//   "expires": "2026-03-01T10:30:00+00:00",
	//   "meta": {}
	// }
}

// Sync re-sends rows without changing them. Given a queue, the SYNC goes to
// that replica queue only: its routing key is cqrs.<queue>.<cqrs_id>, and the
// queue is not in the body. The correlation function sees the queue in the
// Event.
func ExampleMaster_Sync() {
	ctx := context.Background()
	db, m, done, err := exampleMaster(ctx, master.WithCorrelation(func(_ context.Context, ev registry.Event) any {
		return fmt.Sprintf("%s:%s:%v:%s", ev.Signal, ev.CQRSID, ev.PK, ev.Queue)
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer done()
	if _, err := db.ExecContext(ctx, `INSERT INTO author (id, name, cqrs_revision, cqrs_updated)
		VALUES (1, 'Ann', 2, '2026-02-01 08:00:00'), (2, 'Bob', 0, '2026-02-02 08:00:00')`); err != nil {
		fmt.Println(err)
		return
	}

	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	n, err := m.Sync(ctx, tx, "author", []any{2}, "replica_b")
	if err != nil {
		tx.Rollback()
		fmt.Println(err)
		return
	}
	if err := tx.Commit(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("messages:", n)
	if err := printOutbox(ctx, db); err != nil {
		fmt.Println(err)
	}
	// Output:
	// messages: 1
	// topic: cqrs.replica_b.author
	// {
	//   "signal_type": "SYNC",
	//   "cqrs_id": "author",
	//   "instance_data": {
	//     "cqrs_revision": 0,
	//     "cqrs_updated": "2026-02-02 08:00:00+00:00",
	//     "id": 2,
	//     "name": "Bob",
	//     "birth_date": null,
	//     "rating": null
	//   },
	//   "previous_data": null,
	//   "instance_pk": 2,
	//   "correlation_id": "SYNC:author:2:replica_b",
	//   "retries": 0,
	//   "expires": "2026-03-01T10:30:00+00:00",
	//   "meta": {}
	// }
}
