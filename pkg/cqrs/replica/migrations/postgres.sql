-- gocqrs replica tombstones (PostgreSQL). {{table}} and {{index}} are
-- replaced by the quoted table and index names.
CREATE TABLE IF NOT EXISTS {{table}} (
    cqrs_id    text        NOT NULL,
    pk         text        NOT NULL,
    revision   bigint      NOT NULL,
    updated    timestamptz NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cqrs_id, pk)
);
CREATE INDEX IF NOT EXISTS {{index}} ON {{table}} (deleted_at);
