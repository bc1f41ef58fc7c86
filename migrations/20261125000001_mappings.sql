-- Specs (what users saved) and statuses (what the engine observed) live in
-- separate tables: the API and console write specs, only the engine side
-- writes statuses. Portable SQL: the same file serves SQLite and PostgreSQL.

CREATE TABLE mappings (
    uuid        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,      -- MappingSpec as JSON, AWS field names
    version     BIGINT NOT NULL,    -- bumped by every change to the spec
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);

CREATE TABLE mapping_status (
    uuid                    TEXT PRIMARY KEY,
    state                   TEXT NOT NULL,
    state_transition_reason TEXT NOT NULL,
    last_processing_result  TEXT NOT NULL,
    updated_ms              BIGINT NOT NULL
);
