-- gocqrs outbox, version 1 (SQLite). {{table}} and the other {{...}}
-- names are replaced with validated, quoted identifiers before running.
-- Times are UTC text 'YYYY-MM-DD HH:MM:SS.SSS', which sorts as it compares.
CREATE TABLE IF NOT EXISTS {{table}} (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    cqrs_id       TEXT NOT NULL,
    entity_key    TEXT NOT NULL,
    topic         TEXT NOT NULL,
    body          TEXT NOT NULL,
    headers       TEXT,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    claimed_by    TEXT,
    claimed_until TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT
);

CREATE INDEX IF NOT EXISTS {{entity_index}} ON {{index_table}} (entity_key, id);
