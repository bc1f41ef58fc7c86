-- The audit log of applied offset resets: who, when, what was asked, and
-- per partition the offsets before and after (JSON).

CREATE TABLE offset_resets (
    id          TEXT PRIMARY KEY,
    uuid        TEXT NOT NULL,
    time_ms     BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    request     TEXT NOT NULL,
    partitions  TEXT NOT NULL
);

CREATE INDEX offset_resets_by_mapping ON offset_resets (uuid, time_ms);
