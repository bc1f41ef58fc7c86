-- Tokens deleted by an admin, by digest: the bootstrap token from
-- SLUICE_BOOTSTRAP_TOKEN is not seeded again once revoked.
CREATE TABLE revoked_tokens (
    token_hash  TEXT PRIMARY KEY,
    revoked_ms  BIGINT NOT NULL
);
