"""Orders: placing (stock taken all or nothing, idempotent), reading, moving along their
statuses, and the expiry of orders left placed."""
