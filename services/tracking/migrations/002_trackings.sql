CREATE TABLE trackings (
    order_id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    status text NOT NULL,
    -- The order version the status comes from: an older or equal one is ignored.
    version integer NOT NULL,
    carrier text,
    tracking_number text,
    estimated_delivery date,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Status entries (one per order version) and admin checkpoints (no version), oldest first.
CREATE TABLE timeline (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id uuid NOT NULL REFERENCES trackings (order_id) ON DELETE CASCADE,
    version integer,
    status text NOT NULL,
    note text,
    location text,
    occurred_at timestamptz NOT NULL,
    UNIQUE (order_id, version)
);
CREATE INDEX timeline_order_idx ON timeline (order_id, occurred_at, id);
