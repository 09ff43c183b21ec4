-- The state of unseen serve, shared by its replicas (unseen-store-postgres).
-- Applied once per schema, in order, under an advisory lock (see src/migrate.rs).

CREATE TABLE unseen_meta (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);

-- One row per key: (host, cluster, node, image) encoded as four length-prefixed parts.
CREATE TABLE unseen_keys (
    key           bytea PRIMARY KEY,
    last_seen     bigint NOT NULL,
    episode_start bigint NOT NULL
);
CREATE INDEX unseen_keys_last_seen ON unseen_keys (last_seen);

-- The outbox: records until every sink has delivered them.
CREATE TABLE unseen_log (
    seq    bigint PRIMARY KEY,
    record bytea NOT NULL
);

-- The query API's history: every record, pruned by age.
CREATE TABLE unseen_history (
    seq         bigint PRIMARY KEY,
    detected_at bigint NOT NULL,
    record      bytea NOT NULL
);

CREATE TABLE unseen_sinks (
    name   text PRIMARY KEY,
    cursor bigint NOT NULL
);

-- Which replica delivers a sink's records now, until when (a lease).
CREATE TABLE unseen_sink_leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- The triage state (default mode): image index, open incidents, risk ledgers.
CREATE TABLE unseen_image_index (
    key           bytea PRIMARY KEY,
    last_seen     bigint NOT NULL,
    episode_start bigint NOT NULL
);
-- Group names hold NUL separators: bytea, not text.
CREATE TABLE unseen_open_incidents (
    grp      bytea PRIMARY KEY,
    incident bytea NOT NULL
);
CREATE TABLE unseen_risk_ledger (
    object bytea PRIMARY KEY,
    ledger bytea NOT NULL
);

CREATE TABLE unseen_bound_settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE unseen_audit (
    seq   bigint PRIMARY KEY,
    entry bytea NOT NULL
);

INSERT INTO unseen_meta (name, value) VALUES
    ('last_seq', 0), ('key_count', 0), ('triage_version', 0);
