-- The sync feed's delta floor: a delta can only be built from a `since` at
-- or above this version. Raised when rows a filter may hold are deleted
-- (housekeeping purging expired signing keys), so older filters get a
-- snapshot instead of a delta that cannot express the deletion.
INSERT INTO counters (name, value) VALUES ('sync_floor', 0);
