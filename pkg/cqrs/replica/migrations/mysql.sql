-- gocqrs replica tombstones (MySQL/MariaDB). Times are UTC.
CREATE TABLE IF NOT EXISTS {{table}} (
    cqrs_id    VARCHAR(191) NOT NULL,
    pk         VARCHAR(191) NOT NULL,
    revision   BIGINT       NOT NULL,
    updated    DATETIME(6)  NOT NULL,
    deleted_at DATETIME(6)  NOT NULL,
    PRIMARY KEY (cqrs_id, pk),
    KEY {{index}} (deleted_at)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
