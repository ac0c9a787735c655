-- Paged snapshots send revocations in the order of
-- meshgate_wire::sync::revocation_hash (the filter shards them by its top
-- bits, so consecutive pages fill consecutive shards). `bucket` is that hash
-- with its top bit flipped, as a signed integer, so that SQL's order on it is
-- the hash's unsigned order. Rows written before this migration hold 0 until
-- the control plane's start-up backfill computes theirs.
ALTER TABLE revocations ADD COLUMN bucket BIGINT NOT NULL DEFAULT 0;
CREATE INDEX revocations_bucket ON revocations (bucket, kind, value);
