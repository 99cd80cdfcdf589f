-- gocqrs outbox, version 1 (PostgreSQL). {{table}} and the other {{...}}
-- names are replaced with validated, quoted identifiers before running.
CREATE TABLE IF NOT EXISTS {{table}} (
    id            BIGSERIAL PRIMARY KEY,
    cqrs_id       TEXT NOT NULL,
    entity_key    TEXT NOT NULL,
    topic         TEXT NOT NULL,
    body          TEXT NOT NULL,
    headers       TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_by    TEXT,
    claimed_until TIMESTAMPTZ,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT
);

CREATE INDEX IF NOT EXISTS {{entity_index}} ON {{index_table}} (entity_key, id);
