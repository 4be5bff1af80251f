-- Signed mirrors. Each published spec manifest records the fingerprint of the key that signed
-- it (NULL: unsigned; every manifest before this migration was unsigned). Each key whose public
-- part is published has a row; when another key (or none) takes over, the row records the run,
-- and the key's files stay published for one more run before they are removed.
ALTER TABLE specs ADD COLUMN signed_by TEXT;

CREATE TABLE signing_keys (
    fingerprint   TEXT    PRIMARY KEY,
    blob_path     TEXT    NOT NULL,   -- blobs/sha256/.. of the armored public key
    manifest_path TEXT    NOT NULL,   -- v3/manifests/key/<FINGERPRINT>.key.manifest.json
    first_run     INTEGER NOT NULL,
    retired_run   INTEGER             -- NULL: the key signing now
);

-- Each source's part of a run also counts the tags it ignored (older rows read as 0).
ALTER TABLE run_sources ADD COLUMN tags_ignored INTEGER NOT NULL DEFAULT 0;
