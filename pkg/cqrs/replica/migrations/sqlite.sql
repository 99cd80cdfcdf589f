-- gocqrs replica tombstones (SQLite). Times are fixed-width UTC text
-- ("2006-01-02 15:04:05.000000+00:00"), so they compare as strings.
CREATE TABLE IF NOT EXISTS {{table}} (
    cqrs_id    TEXT    NOT NULL,
    pk         TEXT    NOT NULL,
    revision   INTEGER NOT NULL,
    updated    TEXT    NOT NULL,
    deleted_at TEXT    NOT NULL,
    PRIMARY KEY (cqrs_id, pk)
);
CREATE INDEX IF NOT EXISTS {{index}} ON {{table}} (deleted_at);
