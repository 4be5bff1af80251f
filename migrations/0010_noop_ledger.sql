-- A run that finds nothing changed writes no row per listed tag, and reads the spec rows it
-- decides on without the pages of their JSON.
--
-- `listed` says whether a tag was in its source's latest listing, whose run `source_listings`
-- keeps: such a tag was last seen by that run. `last_seen_run` is brought up to date when a
-- tag leaves the listing (or changes kind), so it stays the last run that saw it.
ALTER TABLE source_tags ADD COLUMN listed INTEGER NOT NULL DEFAULT 1;
CREATE TABLE source_listings (
    source TEXT    PRIMARY KEY,
    run_id INTEGER NOT NULL
);
INSERT INTO source_listings (source, run_id)
    SELECT source, MAX(last_seen_run) FROM source_tags GROUP BY source;
UPDATE source_tags SET listed = 0
    WHERE last_seen_run < (SELECT run_id FROM source_listings l WHERE l.source = source_tags.source);

-- Every column of a spec row but its JSON, in the order a run reads them: scanning this index
-- instead of the table skips the JSON (large for real specs, and stored in the row).
CREATE INDEX specs_rows ON specs (name, version, hash, arch, tag, manifest_path, tarball_digest,
    spec_digest, requires, source, signed_by, unwanted_since);
