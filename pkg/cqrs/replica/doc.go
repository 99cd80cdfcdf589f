// Package replica applies django-cqrs messages to replica tables: the revision
// rules of django-cqrs's ReplicaMixin (create, update, skip stale and
// duplicate SAVEs, apply every SYNC, delete unconditionally), the
// master→replica mapping, custom hooks, raw (table-less) replicas, metadata
// delivery, select-for-update and only-direct-syncs.
//
// # One message, one transaction — or a batch
//
// [Engine.Apply] runs each message in its own replica transaction;
// [Engine.ApplyTx] runs it inside a transaction the caller owns.
// [Engine.ApplyBatch] applies many messages in one transaction with the
// same results as Apply one after the other: for a table model without
// hooks it reads the stored revisions and tombstones of all pks of the
// batch at once, decides every message in memory with the rules below, and
// writes with multi-row DELETEs and revision-guarded upserts
// (PostgreSQL/SQLite INSERT … ON CONFLICT (pk) DO UPDATE … WHERE
// <rev> < excluded.<rev>; MySQL INSERT … ON DUPLICATE KEY UPDATE with IF()
// guards; a SYNC's upsert is unguarded, as SYNCs apply whatever the
// revision). The guard only protects against a writer outside the engine:
// a guarded upsert that writes fewer rows than decided makes the group
// apply one message at a time. A message the database rejects (a CHECK, a
// numeric overflow) is found by splitting its group under savepoints, and
// fails alone with Apply's error.
// A returned error always means "not applied, retry later", except
// [ErrUnknownModel]: the cqrs_id has no replica model and the consumer drops
// the message. Errors for bad messages reuse django-cqrs's wording ("Bad
// signal type", "CQRS sync fields are not provided", "Not all required CQRS
// fields are provided", "Bad master-replica mapping for <key>") and name the
// cqrs_id, the pk and the column; they wrap the sentinels of this package so
// callers can test them with errors.Is.
//
// # Revision rules
//
//	incoming vs stored   SAVE                                 SYNC
//	no row               create                               create
//	older revision       skip (OutcomeSkippedStale)           apply, Result.Downgrade
//	same revision        skip (OutcomeSkippedDuplicate)       apply
//	newer by 1           update                               apply
//	newer by more        update, Result.Gap = lost packages   apply
//
// As in django-cqrs, a SAVE or SYNC is checked before anything is read:
// cqrs_revision and cqrs_updated present, every key of the Mapping present
// (without a Mapping, keys named like the replica's columns are taken and
// the rest ignored), the pk present, and every NOT NULL column without a
// default present — on updates too, as django-cqrs checks before it knows
// whether the row exists. An update writes only the columns present.
//
// DELETE takes the pk from instance_data "id" (always that key, as
// django-cqrs's _map_delete_data does, whatever the replica's pk column is
// called and whatever the Mapping says), requires cqrs_revision and
// cqrs_updated, and deletes without comparing revisions; a missing row is
// [OutcomeDeleteMissing]. A delete hook is called even when the row is
// missing.
//
// # Tombstones
//
// django-cqrs keeps nothing after a DELETE, so a SAVE that arrives late (a
// retry, a reordered message) brings the deleted row back. Unless
// [Options.DjangoCompat] is set, the engine records a tombstone per deleted
// (cqrs_id, pk) in [Options.TombstoneTable] (create it with [Migrate]) holding
// the highest revision and cqrs_updated seen by a DELETE. A SAVE or SYNC for a
// pk that has no row but a tombstone is skipped ([OutcomeSkippedTombstone])
// when its revision is not above the tombstone's AND its cqrs_updated is not
// after the tombstone's. A row genuinely re-created on the master (its
// revision restarts at 0 but its cqrs_updated is later) is applied and
// clears the tombstone. [Engine.PruneTombstones] removes old tombstones.
//
// # Values
//
// Values are converted per column kind (registry.Field.Kind, filled in from
// the table by registry.Registry.Bind): datetimes in every form Python and
// django-cqrs write (space or "T", "Z", offsets, no fraction, naive = UTC)
// become UTC times (MySQL/MariaDB get a UTC "YYYY-MM-DD hh:mm:ss.ffffff"
// string, right for DATETIME columns; a TIMESTAMP column needs the session
// time_zone '+00:00'. SQLite gets a fixed-width UTC string with "+00:00");
// dates are checked
// and bound as "YYYY-MM-DD"; decimals are bound as the text of the number so
// the database rounds (PostgreSQL numeric(6,2) stores 2.675 as 2.68 and fails
// on 12345.678 — on SQLite, which has no fixed-point type, the engine rounds
// half away from zero and checks the precision itself when the column is
// declared decimal(p,s) or numeric(p,s)); UUIDs are normalized to the
// lowercase hyphenated form; JSON columns get JSON text; string columns get
// numbers as their JSON text and objects or arrays as JSON text.
//
// # Hooks and raw replicas
//
// registry.ReplicaHooks replace the default SQL of one step (create, update,
// delete); the revision checks still run first. [DefaultCreate],
// [DefaultUpdate] and [DefaultDelete] are the default steps, for hooks that
// want to wrap them (as a django-cqrs cqrs_create override calls super()).
// A raw replica (registry.RawHandlers) gets every message unmapped and
// unchecked; the engine runs no SQL and opens no transaction for it, so its
// ApplyContext.Tx is nil even under [Engine.ApplyTx].
package replica
