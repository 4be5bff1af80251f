-- Several sources feed one mirror. Tags are known per source; specs, the registry's index and
-- each run's counts say which source they belong to. Rows from before carry the source ''
-- (their tags are looked at again once, under the source's name; no blob is fetched twice).
CREATE TABLE source_tags (
    source          TEXT    NOT NULL,
    tag             TEXT    NOT NULL,
    kind            TEXT    NOT NULL,   -- spec | index | other
    manifest_digest TEXT,
    spec_hash       TEXT,
    first_seen_run  INTEGER NOT NULL,
    last_seen_run   INTEGER NOT NULL,
    PRIMARY KEY (source, tag)
);
INSERT INTO source_tags (source, tag, kind, manifest_digest, spec_hash, first_seen_run, last_seen_run)
    SELECT '', tag, kind, manifest_digest, spec_hash, first_seen_run, last_seen_run FROM tags;
DROP TABLE tags;

ALTER TABLE specs ADD COLUMN source TEXT NOT NULL DEFAULT '';

CREATE TABLE source_indexes (
    source          TEXT    PRIMARY KEY,
    manifest_digest TEXT    NOT NULL,
    blob_digest     TEXT    NOT NULL,
    blob_size       INTEGER NOT NULL,
    db_version      TEXT,
    in_buildcache   TEXT    NOT NULL
);
INSERT INTO source_indexes (source, manifest_digest, blob_digest, blob_size, db_version, in_buildcache)
    SELECT '', manifest_digest, blob_digest, blob_size, db_version, in_buildcache FROM registry_index;
DROP TABLE registry_index;

-- Per run and source: what that source contributed, and why it failed if it did.
CREATE TABLE run_sources (
    run_id        INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    source        TEXT    NOT NULL,
    url           TEXT    NOT NULL,
    specs_total   INTEGER NOT NULL DEFAULT 0,
    specs_fetched INTEGER NOT NULL DEFAULT 0,
    specs_failed  INTEGER NOT NULL DEFAULT 0,
    specs_skipped INTEGER NOT NULL DEFAULT 0,
    blobs_fetched INTEGER NOT NULL DEFAULT 0,
    bytes_fetched INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    PRIMARY KEY (run_id, source)
);

ALTER TABLE run_problems ADD COLUMN source TEXT NOT NULL DEFAULT '';
