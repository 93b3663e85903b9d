-- PAKKT schema, SQLite. Times are microseconds since the Unix epoch
-- (metric buckets: seconds); booleans are 0/1; IDs are ULID text.

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    suspended   INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    hash        BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE INDEX api_keys_account ON api_keys(account_id);

CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    token_hash    BLOB NOT NULL UNIQUE,
    hostname      TEXT,
    iface         TEXT,
    version       TEXT,
    mode          TEXT,
    last_seen_at  INTEGER,
    created_at    INTEGER NOT NULL,
    revision      INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX agents_account ON agents(account_id, created_at);

CREATE TABLE engine_rules (
    id              TEXT PRIMARY KEY,
    agent_id        TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    protocol        INTEGER NOT NULL,
    port_start      INTEGER NOT NULL,
    port_end        INTEGER NOT NULL,
    rule_type       INTEGER NOT NULL,
    max_pps         INTEGER NOT NULL,
    max_port_pps    INTEGER NOT NULL,
    min_pkt_size    INTEGER NOT NULL,
    max_pkt_size    INTEGER NOT NULL,
    slot            INTEGER,
    status          TEXT NOT NULL,
    status_message  TEXT,
    created_at      INTEGER NOT NULL,
    loaded_at       INTEGER
);
-- The engine has one rule per slot: a second line of defence behind the
-- admission transaction.
CREATE UNIQUE INDEX engine_rules_slot ON engine_rules(agent_id, slot) WHERE slot IS NOT NULL;
CREATE INDEX engine_rules_agent ON engine_rules(agent_id, id);

CREATE TABLE ip_entries (
    id              TEXT PRIMARY KEY,
    agent_id        TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    list_type       TEXT NOT NULL,
    cidr            TEXT NOT NULL,
    reason          TEXT,
    expires_at      INTEGER,
    status          TEXT NOT NULL,
    status_message  TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX ip_entries_agent ON ip_entries(agent_id, id);
CREATE INDEX ip_entries_expiry ON ip_entries(agent_id, expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE firewall_rules (
    id              TEXT PRIMARY KEY,
    agent_id        TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    chain           TEXT NOT NULL,
    protocol        TEXT NOT NULL,
    port_start      INTEGER,
    port_end        INTEGER,
    action          TEXT NOT NULL,
    limit_rate      INTEGER,
    limit_unit      TEXT,
    conntrack       TEXT,
    system_role     TEXT,
    -- 0..2 for system rules in install order, 3 for user rules.
    position        INTEGER NOT NULL,
    status          TEXT NOT NULL,
    status_message  TEXT,
    created_at      INTEGER NOT NULL,
    packets_total   INTEGER NOT NULL DEFAULT 0,
    bytes_total     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX firewall_rules_agent ON firewall_rules(agent_id, position, created_at, id);

CREATE TABLE metric_reports (
    agent_id     TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    report_id    TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (agent_id, report_id)
);
CREATE INDEX metric_reports_received ON metric_reports(received_at);

-- Metric tables carry no index on bucket alone in SQLite: pruning (once a
-- minute) scans instead, which keeps every ingested row to one B-tree write.
CREATE TABLE metrics_1m (
    agent_id         TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    bucket           INTEGER NOT NULL,
    port             INTEGER NOT NULL,
    packets_passed   INTEGER NOT NULL,
    packets_dropped  INTEGER NOT NULL,
    bytes_passed     INTEGER NOT NULL,
    bytes_dropped    INTEGER NOT NULL,
    PRIMARY KEY (agent_id, bucket, port)
) WITHOUT ROWID;

CREATE TABLE metrics_5m (
    agent_id         TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    bucket           INTEGER NOT NULL,
    port             INTEGER NOT NULL,
    packets_passed   INTEGER NOT NULL,
    packets_dropped  INTEGER NOT NULL,
    bytes_passed     INTEGER NOT NULL,
    bytes_dropped    INTEGER NOT NULL,
    PRIMARY KEY (agent_id, bucket, port)
) WITHOUT ROWID;

CREATE TABLE metrics_1h (
    agent_id         TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    bucket           INTEGER NOT NULL,
    port             INTEGER NOT NULL,
    packets_passed   INTEGER NOT NULL,
    packets_dropped  INTEGER NOT NULL,
    bytes_passed     INTEGER NOT NULL,
    bytes_dropped    INTEGER NOT NULL,
    PRIMARY KEY (agent_id, bucket, port)
) WITHOUT ROWID;
