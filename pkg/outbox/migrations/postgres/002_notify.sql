-- gocqrs outbox, version 2 (PostgreSQL): wake relays when rows are written.
-- {{...}} names are replaced with validated, quoted identifiers before running.
--
-- A statement-level trigger NOTIFYs the channel
-- 'gocqrs_' || md5('<schema>.<table>') (the table's real schema, so that
-- outbox tables of one name in two schemas do not wake each other's relays).
-- PostgreSQL delivers the notification on commit, one per transaction.
--
-- Only one open transaction at a time notifies: the one holding a
-- transaction-level advisory lock on (1734570354, the table's oid), taken
-- without waiting. A committing transaction that notifies holds a lock that
-- serialises all notifying commits of the cluster (fsync included), which
-- halves the commit rate of concurrent writers; with the token only the
-- holder pays it. A transaction that did not get the token relies on the
-- holder's notification (its commit is usually moments later, found by the
-- relay's short polls after a wake-up) or on the relay's polling.
CREATE OR REPLACE FUNCTION {{notify_function}}() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN IF pg_try_advisory_xact_lock(1734570354, TG_RELID::int4) THEN PERFORM pg_notify('gocqrs_' || md5(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME), ''); END IF; RETURN NULL; END$$;

DROP TRIGGER IF EXISTS {{notify_trigger}} ON {{table}};

CREATE TRIGGER {{notify_trigger}} AFTER INSERT ON {{table}} FOR EACH STATEMENT EXECUTE FUNCTION {{notify_function}}();
