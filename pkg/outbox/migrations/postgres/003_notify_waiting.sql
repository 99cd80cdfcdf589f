-- gocqrs outbox, version 3 (PostgreSQL): notify only while a relay waits.
-- {{...}} names are replaced with validated, quoted identifiers before running.
--
-- Version 2 notified on the commit of every transaction that wrote to the
-- outbox (one open transaction at a time), although a relay that is busy
-- publishing a backlog needs no notification: with a single writer every
-- commit paid for one. Now the trigger notifies only while a relay waits
-- idle. Two advisory locks keyed on (class, the table's oid) tell:
--
--   (1734570355, oid), "writing": every transaction that writes to the
--       outbox takes it SHARED here, without waiting, and holds it until it
--       ends. A relay about to wait takes it EXCLUSIVE for a moment, which
--       waits for the transactions that wrote before.
--   (1734570356, oid), "waiting": held SHARED (session level) by every
--       relay that waits idle; probed here EXCLUSIVE, without waiting, and
--       released at once.
--
-- A transaction notifies when the writing lock is not available (a relay is
-- about to wait and will not see its row) or when the waiting lock is held
-- (a relay waits). Otherwise no relay waits and it does not notify: a busy
-- relay claims its row on its own, and a relay that goes idle takes the
-- waiting lock and then the writing lock (waiting for this transaction to
-- end) before its last claim. The relay side and the argument that no
-- commit is missed are in notify.go. Every transaction that notifies does,
-- so a rolled-back one cannot swallow another's wake-up (the token of
-- version 2 is not used any more). A relay of an older gocqrs does not take
-- the waiting lock: against this version it is woken by polling only.
CREATE OR REPLACE FUNCTION {{notify_function}}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(1734570355, TG_RELID::int4) THEN
        PERFORM pg_notify('gocqrs_' || md5(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME), '');
    ELSIF pg_try_advisory_lock(1734570356, TG_RELID::int4) THEN
        PERFORM pg_advisory_unlock(1734570356, TG_RELID::int4);
    ELSE
        PERFORM pg_notify('gocqrs_' || md5(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME), '');
    END IF;
    RETURN NULL;
END
$$;
