-- The registry's index is copied only when every spec it lists has the name and version of the
-- spec mirrored under that hash, so the ledger keeps them (JSON: {"<hash>": {"name", "version"}}
-- for the specs marked in_buildcache), and why a blob is no usable database. Rows from before
-- have neither: they read as unknown, so the index is fetched and judged again once.
ALTER TABLE source_indexes ADD COLUMN entries TEXT;
ALTER TABLE source_indexes ADD COLUMN problem TEXT;
