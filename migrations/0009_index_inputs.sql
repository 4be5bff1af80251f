-- What the synthesized index in place was made of: a digest over the specs it lists (hash,
-- name, version, spec blob), with the digests of its blob and manifest. A run whose specs are the same
-- leaves the index as it is, without synthesizing it again. `inputs` is NULL when the index
-- is the registry's own copy.
CREATE TABLE index_inputs (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    inputs          TEXT,
    blob_digest     TEXT NOT NULL,
    manifest_digest TEXT NOT NULL
);
