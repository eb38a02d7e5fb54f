-- The relay's claim checks a batch's aggregates against the batch itself, not against the
-- table, so this index has no reader left; each insert and each publication paid for it.
DROP INDEX outbox_pending_aggregate_idx;
