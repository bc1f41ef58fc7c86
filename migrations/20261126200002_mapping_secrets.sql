-- Secrets of a mapping's SourceAccessConfigurations (SASL passwords, TLS
-- private keys), apart from the spec and encrypted (ChaCha20-Poly1305) with
-- the node's secret key: the stored spec never holds them.

CREATE TABLE mapping_secrets (
    uuid    TEXT PRIMARY KEY,
    sealed  TEXT NOT NULL
);
