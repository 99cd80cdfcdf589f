// Package outbox is gocqrs's transactional outbox: the table that holds
// messages written in the same SQL transaction as the change they describe,
// and the relay that publishes them through a Watermill publisher.
//
// The three parts:
//
//   - [Migrate] creates the outbox table (embedded, versioned migrations per
//     dialect; the applied versions are kept in "<table>_migrations").
//   - [Insert] and [Replace] write rows inside the caller's transaction:
//     rollback means no row and no message.
//   - [Relay] claims rows with a lease, publishes them and deletes the ones
//     the broker confirmed, in one statement per batch. Several relays may
//     run at once against one table: a row is claimed by one relay at a time,
//     and rows of one entity (entity_key) are never published out of id
//     order, even by two relays. (One exception, by the broker's doing: when
//     it refuses a message and takes a later one of the same entity in the
//     same call, the later row is published again after the refused one, so
//     the entity's last message is still its latest.)
//
// Publishing is batched: a claimed batch goes out in few Publish calls
// (grouped by topic, in lanes by entity, several calls in flight; see
// batch.go), and outcomes come back per message
// ([transports.PublishError]), so one refused message sets aside only its
// row and holds back only its entity. While there is a backlog, [Relay.Run]
// claims and checks the next batches and deletes the previous one while a
// batch is being published (up to two batches in flight and a third ready),
// so that the broker's pace, not the database round trips, bounds the
// relay.
//
// Wake-up: on PostgreSQL, migration 2 adds a trigger that NOTIFYs on insert
// and Run LISTENs (see notify.go), so an idle relay publishes new rows at
// once; since migration 3 a transaction notifies only while a relay waits
// idle, so that writers pay nothing for it while relays are busy or absent
// (notify_wait.go); everywhere, Run polls adaptively (PollMin to PollMax).
//
// Delivery is at least once. A relay that dies between publishing and
// deleting leaves its claimed rows behind; they are published again when the
// lease (RelayOptions.ClaimTTL) expires. Replicas absorb the duplicates with
// their revision check. A publish error never loses a row: the row stays in
// the table with attempts and last_error set and is retried.
//
// The relay never keeps a high-water mark: each claim scans from the lowest
// unpublished id, so a row whose transaction commits late (a lower id that
// becomes visible after higher ones were published) is still published.
//
// Claims: PostgreSQL uses one UPDATE over a SELECT ... FOR UPDATE SKIP LOCKED;
// MySQL/MariaDB a short READ COMMITTED transaction (SELECT ... FOR UPDATE SKIP
// LOCKED, then UPDATE); SQLite one UPDATE ... RETURNING, atomic because SQLite
// serialises writers. After claiming, a relay hands back every claimed row of
// an entity that has a lower row it does not hold, so relays sharing hot
// entities mostly take turns; relays scale with the number of distinct
// entities in the backlog. Relays' claims, deletes and releases can
// deadlock each other (InnoDB in particular); a statement the database
// rolls back as the deadlock victim is run again, up to three times,
// before the cycle counts as failed.
//
// On SQLite open the database with a busy timeout and WAL (see
// internal/testenv.SQLiteDSN) so that relays and writers wait for each other
// instead of failing with SQLITE_BUSY.
package outbox
