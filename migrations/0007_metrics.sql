-- Visibility. Each run counts the requests it retried and the 429 answers it got (older runs
-- read as 0). The daemon records itself and its next scheduled run, for `status` and the
-- metrics; a row whose pid is gone is read as no daemon.
ALTER TABLE runs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN rate_limited INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run_sources ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run_sources ADD COLUMN rate_limited INTEGER NOT NULL DEFAULT 0;

CREATE TABLE daemon (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    pid         INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    next_run_at INTEGER,            -- NULL: the schedule never fires again
    updated_at  INTEGER NOT NULL
);
