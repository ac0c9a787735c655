-- Snapshot pages read revocations in (bucket, kind, value) order from a
-- cursor, filtered on version and until. With those columns (and
-- not_before) in the index, a page is one index range read instead of a
-- table lookup per row: at 10^6 revocations, a 20 000-row page went from
-- ~0.11 s to ~0.03 s on SQLite.
DROP INDEX revocations_bucket;
CREATE INDEX revocations_bucket ON revocations (bucket, kind, value, until, version, not_before);
