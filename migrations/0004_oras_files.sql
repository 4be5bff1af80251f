-- The oras-files layout: each artifact (a repository below the source's url) publishes one
-- file per layer. Its manifest digest lives in source_tags (kind 'oras', tag = the repository
-- relative to the url); these rows say which paths it wrote, so an unchanged artifact whose
-- files are intact costs no request.
CREATE TABLE oras_files (
    source     TEXT NOT NULL,
    repository TEXT NOT NULL,   -- relative to the source's url, e.g. build_cache/<file>
    path       TEXT NOT NULL,   -- relative to the mirror root; also a row of files
    PRIMARY KEY (source, repository, path)
);
