-- The failure ledger: every record a mapping gave up on, by its
-- coordinates (never its payload), and the last redrive of each.
CREATE TABLE failed_records (
    uuid                TEXT NOT NULL,
    part                INTEGER NOT NULL,
    record_offset       BIGINT NOT NULL,
    record_key          TEXT,
    record_ts           BIGINT NOT NULL,
    condition           TEXT NOT NULL,
    attempts            INTEGER NOT NULL,
    error               TEXT NOT NULL,
    destination         TEXT NOT NULL,
    destination_message TEXT,
    failed_ms           BIGINT NOT NULL,
    node                TEXT NOT NULL,
    redrive_ms          BIGINT,
    redrive_by          TEXT,
    redrive_result      TEXT,
    redrive_job         TEXT,
    PRIMARY KEY (uuid, part, record_offset)
);

CREATE INDEX failed_records_newest ON failed_records (uuid, failed_ms);

-- Redrives: one row per job, and each record's result in it.
CREATE TABLE redrive_jobs (
    id          TEXT PRIMARY KEY,
    uuid        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    started_ms  BIGINT NOT NULL,
    finished_ms BIGINT,
    total       BIGINT NOT NULL,
    succeeded   BIGINT NOT NULL,
    failed      BIGINT NOT NULL,
    gone        BIGINT NOT NULL,
    error       TEXT,
    node        TEXT NOT NULL
);

CREATE INDEX redrive_jobs_by_mapping ON redrive_jobs (uuid, started_ms);

CREATE TABLE redrive_results (
    job           TEXT NOT NULL,
    part          INTEGER NOT NULL,
    record_offset BIGINT NOT NULL,
    result        TEXT NOT NULL,
    error         TEXT,
    at_ms         BIGINT NOT NULL,
    PRIMARY KEY (job, part, record_offset)
);
