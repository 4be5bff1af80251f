-- A run that finds its sources listing what they listed when the mirror was last settled, with
-- the same configuration and a ledger nobody wrote to since, has nothing to do (see
-- ARCHITECTURE.md, "The settled fast path").
--
-- `ledger_generation` counts every change to what a run decides on: each insert, update or
-- delete of a row of the tables below moves it on. `settled` holds the one mirror state known
-- to be complete: the run that left it, the generation then, and the digest of the
-- configuration and the sources' listings it was made from.
CREATE TABLE ledger_generation (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    n  INTEGER NOT NULL
);
INSERT INTO ledger_generation (id, n) VALUES (0, 0);
CREATE TABLE settled (
    id          INTEGER PRIMARY KEY CHECK (id = 0),
    run_id      INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    fingerprint TEXT    NOT NULL
);

CREATE TRIGGER files_insert_generation AFTER INSERT ON files
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER files_update_generation AFTER UPDATE ON files
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER files_delete_generation AFTER DELETE ON files
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER specs_insert_generation AFTER INSERT ON specs
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER specs_update_generation AFTER UPDATE ON specs
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER specs_delete_generation AFTER DELETE ON specs
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER source_tags_insert_generation AFTER INSERT ON source_tags
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER source_tags_update_generation AFTER UPDATE ON source_tags
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER source_tags_delete_generation AFTER DELETE ON source_tags
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER source_indexes_insert_generation AFTER INSERT ON source_indexes
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER source_indexes_update_generation AFTER UPDATE ON source_indexes
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER source_indexes_delete_generation AFTER DELETE ON source_indexes
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER partials_insert_generation AFTER INSERT ON partials
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER partials_update_generation AFTER UPDATE ON partials
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER partials_delete_generation AFTER DELETE ON partials
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER oras_files_insert_generation AFTER INSERT ON oras_files
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER oras_files_update_generation AFTER UPDATE ON oras_files
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER oras_files_delete_generation AFTER DELETE ON oras_files
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER spec_facts_insert_generation AFTER INSERT ON spec_facts
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER spec_facts_update_generation AFTER UPDATE ON spec_facts
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER spec_facts_delete_generation AFTER DELETE ON spec_facts
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER signing_keys_insert_generation AFTER INSERT ON signing_keys
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER signing_keys_update_generation AFTER UPDATE ON signing_keys
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER signing_keys_delete_generation AFTER DELETE ON signing_keys
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER index_inputs_insert_generation AFTER INSERT ON index_inputs
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER index_inputs_update_generation AFTER UPDATE ON index_inputs
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
CREATE TRIGGER index_inputs_delete_generation AFTER DELETE ON index_inputs
    BEGIN UPDATE ledger_generation SET n = n + 1; END;
