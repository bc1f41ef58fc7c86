-- Each API token's AWS-style access key id (#18): requests signed with
-- SigV4 under it act as the token. The secret access key is never stored:
-- it is derived from the node key, the key id and the token's digest.
ALTER TABLE api_tokens ADD COLUMN access_key_id TEXT;
CREATE UNIQUE INDEX api_tokens_by_access_key ON api_tokens (access_key_id);

-- Tags on mappings (AWS TagResource / ListTags / UntagResource).
CREATE TABLE mapping_tags (
    uuid        TEXT NOT NULL,
    tag_key     TEXT NOT NULL,
    tag_value   TEXT NOT NULL,
    PRIMARY KEY (uuid, tag_key)
);
