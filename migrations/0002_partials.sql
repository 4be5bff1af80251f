-- Interrupted blob downloads kept in the staging directory, so the next attempt (in the same
-- run or after a restart) resumes with a Range request instead of starting over.
CREATE TABLE partials (
    digest     TEXT    PRIMARY KEY,   -- sha256:<hex> of the whole blob
    path       TEXT    NOT NULL,      -- the staged file
    offset     INTEGER NOT NULL,      -- bytes kept when last interrupted
    updated_at INTEGER NOT NULL
);
