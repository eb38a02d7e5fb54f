-- The relay now holds the aggregates it claims (an advisory lock) instead of looking for an
-- aggregate's earlier pending rows, so this index has no reader left; each insert and each
-- publication paid for keeping it.
DROP INDEX outbox_pending_aggregate_idx;
