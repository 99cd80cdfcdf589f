-- gocqrs outbox, version 1 (MySQL / MariaDB). {{table}} and the other {{...}}
-- names are replaced with validated, quoted identifiers before running.
-- Times are UTC (written with UTC_TIMESTAMP(6) by gocqrs).
CREATE TABLE IF NOT EXISTS {{table}} (
    id            BIGINT NOT NULL AUTO_INCREMENT,
    cqrs_id       VARCHAR(255) NOT NULL,
    entity_key    VARCHAR(512) NOT NULL,
    topic         VARCHAR(255) NOT NULL,
    body          LONGTEXT NOT NULL,
    headers       MEDIUMTEXT NULL,
    created_at    DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    claimed_by    VARCHAR(64) NULL,
    claimed_until DATETIME(6) NULL,
    attempts      INT NOT NULL DEFAULT 0,
    last_error    TEXT NULL,
    PRIMARY KEY (id),
    KEY {{entity_index}} (entity_key, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
