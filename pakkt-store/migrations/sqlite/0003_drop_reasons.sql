-- Drops by reason (DESIGN §4): one counter per reason on every metrics
-- table, in the order of pakkt-core's `DropReason::ALL`, beside
-- packets_dropped and saturating like it. Rows written before this
-- migration, and reports from agents that count no reasons, read 0.
--
-- And how an agent's engine attached its egress program ("tcx" or
-- "clsact"), as the agent reports it; NULL until it does.

ALTER TABLE metrics_1m ADD COLUMN dropped_blacklist INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1m ADD COLUMN dropped_rule INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1m ADD COLUMN dropped_rate INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1m ADD COLUMN dropped_size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1m ADD COLUMN dropped_unverified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1m ADD COLUMN dropped_reflection INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1m ADD COLUMN dropped_out_of_state INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1m ADD COLUMN dropped_fragment INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1m ADD COLUMN dropped_malformed INTEGER NOT NULL DEFAULT 0;

ALTER TABLE metrics_5m ADD COLUMN dropped_blacklist INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_5m ADD COLUMN dropped_rule INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_5m ADD COLUMN dropped_rate INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_5m ADD COLUMN dropped_size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_5m ADD COLUMN dropped_unverified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_5m ADD COLUMN dropped_reflection INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_5m ADD COLUMN dropped_out_of_state INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_5m ADD COLUMN dropped_fragment INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_5m ADD COLUMN dropped_malformed INTEGER NOT NULL DEFAULT 0;

ALTER TABLE metrics_1h ADD COLUMN dropped_blacklist INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1h ADD COLUMN dropped_rule INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1h ADD COLUMN dropped_rate INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1h ADD COLUMN dropped_size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1h ADD COLUMN dropped_unverified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1h ADD COLUMN dropped_reflection INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1h ADD COLUMN dropped_out_of_state INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1h ADD COLUMN dropped_fragment INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics_1h ADD COLUMN dropped_malformed INTEGER NOT NULL DEFAULT 0;

ALTER TABLE agents ADD COLUMN egress_mode TEXT;
