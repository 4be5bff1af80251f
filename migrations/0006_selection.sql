-- Selection and pruning. Each run counts what its selection chose, what the mirror holds at its
-- end and what it removed; the counts of older runs read as 0.
ALTER TABLE runs ADD COLUMN specs_selected INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN specs_mirrored INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN specs_pruned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN bytes_pruned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run_sources ADD COLUMN specs_selected INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run_sources ADD COLUMN specs_mirrored INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run_sources ADD COLUMN specs_pruned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run_sources ADD COLUMN bytes_pruned INTEGER NOT NULL DEFAULT 0;

-- When a published spec was first found wanted by no source (no longer listed, or no longer
-- selected nor needed by a selected spec); NULL while some source wants it. Pruning counts its
-- grace from here.
ALTER TABLE specs ADD COLUMN unwanted_since INTEGER;

-- What selection reads of each spec node seen in a registry's index or a fetched config
-- (name, version, arch, dependency edges), as JSON, so that a source is selected and closed
-- without a request per tag. The config's facts replace the index's.
CREATE TABLE spec_facts (
    hash  TEXT PRIMARY KEY,
    facts TEXT NOT NULL
);
