-- Key states as a log (unseen-store-postgres, src/lib.rs): each commit appends one row
-- holding every key state and image index entry it changed (a forget: tombstones),
-- instead of one upsert per key, so that a sighting of a known key writes no row of its
-- own. Replicas read the rows they have not seen; every FOLD_ROWS rows, the committing
-- replica folds them into unseen_keys and unseen_image_index (each once) and deletes the
-- rows of the fold before.

CREATE TABLE unseen_state_log (
    seq    bigint PRIMARY KEY,
    -- Entries: kind byte, u32 length, key bytes, then 16 bytes of state
    -- (unseen_store::state_log).
    states bytea NOT NULL
);

INSERT INTO unseen_meta (name, value) VALUES
    ('state_seq', 0), ('folded_seq', 0), ('log_start', 0)
ON CONFLICT (name) DO NOTHING;
