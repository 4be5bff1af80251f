-- Schema v1 of the spack-mirrord ledger. Append-only: never edit a released migration;
-- add migrations/NNNN_name.sql instead. Times are integer unix seconds (UTC).

-- One row per sync run, written by the run's process (daemon or `sync --now`).
CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    trigger         TEXT    NOT NULL,               -- manual | schedule | start
    pid             INTEGER NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    outcome         TEXT    NOT NULL DEFAULT 'running',  -- running | success | partial | failed | cancelled
    error           TEXT,
    specs_total     INTEGER NOT NULL DEFAULT 0,     -- spec tags listed by the registry
    specs_fetched   INTEGER NOT NULL DEFAULT 0,     -- specs newly published by this run
    specs_failed    INTEGER NOT NULL DEFAULT 0,
    specs_skipped   INTEGER NOT NULL DEFAULT 0,     -- configs without a usable spec
    tags_ignored    INTEGER NOT NULL DEFAULT 0,     -- tags that are neither specs nor the index
    blobs_fetched   INTEGER NOT NULL DEFAULT 0,
    bytes_fetched   INTEGER NOT NULL DEFAULT 0
);

-- Items of a run that failed or were skipped, with the reason.
CREATE TABLE run_problems (
    run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    tag     TEXT    NOT NULL,
    kind    TEXT    NOT NULL,   -- failed | skipped
    message TEXT    NOT NULL
);
CREATE INDEX run_problems_run ON run_problems(run_id);

-- Every registry tag seen, with the manifest digest it pointed at.
CREATE TABLE tags (
    tag             TEXT    PRIMARY KEY,
    kind            TEXT    NOT NULL,   -- spec | index | other
    manifest_digest TEXT,
    spec_hash       TEXT,               -- for spec tags once published
    first_seen_run  INTEGER NOT NULL,
    last_seen_run   INTEGER NOT NULL
);

-- Every spec published in the mirror.
CREATE TABLE specs (
    hash            TEXT    PRIMARY KEY,   -- Spack dag hash
    name            TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    arch            TEXT    NOT NULL,
    tag             TEXT    NOT NULL,
    manifest_path   TEXT    NOT NULL,      -- relative to the mirror root
    tarball_digest  TEXT    NOT NULL,
    spec_digest     TEXT    NOT NULL,
    spec_json       TEXT    NOT NULL,      -- the config's "spec" value, verbatim
    requires        TEXT    NOT NULL,      -- dag hashes of its non-external link/run closure, space-separated
    run_id          INTEGER NOT NULL
);

-- Every file spack-mirrord wrote under the mirror root. Pruning and verification touch only these.
CREATE TABLE files (
    path        TEXT    PRIMARY KEY,   -- relative to the mirror root
    kind        TEXT    NOT NULL,      -- tarball | spec_blob | spec_manifest | index_blob | index_manifest | layout
    digest      TEXT    NOT NULL,      -- sha256 of the content
    size        INTEGER NOT NULL,
    run_id      INTEGER NOT NULL,
    written_at  INTEGER NOT NULL,
    verified_at INTEGER NOT NULL
);
CREATE INDEX files_kind ON files(kind);

-- The registry's own index (index.spack) as last seen, so an unchanged one is not fetched again.
CREATE TABLE registry_index (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    manifest_digest TEXT NOT NULL,
    blob_digest     TEXT NOT NULL,
    blob_size       INTEGER NOT NULL,
    db_version      TEXT,              -- NULL when it did not parse
    in_buildcache   TEXT NOT NULL      -- sorted dag hashes marked in_buildcache, space-separated
);
