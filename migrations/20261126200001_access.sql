-- Access control: users (argon2 password hashes), browser sessions and API
-- tokens (stored as SHA-256 of the secret, never the secret), and the audit
-- log of every change.

CREATE TABLE users (
    username    TEXT PRIMARY KEY,
    password    TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    token_hash  TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    last_used_ms BIGINT
);

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    time_ms     BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    status      INTEGER NOT NULL,
    detail      TEXT NOT NULL
);

CREATE INDEX audit_log_by_time ON audit_log (time_ms);
