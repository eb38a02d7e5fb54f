-- How many orders each user has in `placed`, kept by the statements that place orders and
-- move them on: placing reads and raises it under the row's lock, which is how the cap on
-- open orders holds under concurrent placements (a count of the orders themselves would be
-- read from a snapshot, blind to an order committed meanwhile).
CREATE TABLE open_orders (
    user_id uuid PRIMARY KEY,
    placed integer NOT NULL CHECK (placed >= 0)
);
INSERT INTO open_orders (user_id, placed)
SELECT user_id, count(*) FROM orders WHERE status = 'placed' GROUP BY user_id;

-- The system cancels orders left `placed` too long: such a change has no person behind it.
ALTER TABLE order_history ALTER COLUMN changed_by DROP NOT NULL;
CREATE INDEX orders_placed_since_idx ON orders (created_at) WHERE status = 'placed';
