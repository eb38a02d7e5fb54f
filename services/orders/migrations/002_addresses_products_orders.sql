CREATE TABLE addresses (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    label text NOT NULL,
    recipient text NOT NULL,
    line1 text NOT NULL,
    line2 text,
    city text NOT NULL,
    postal_code text NOT NULL,
    country text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    phone text,
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Breaks ties between addresses created in the same microsecond: "newest" stays well defined.
    seq bigint GENERATED ALWAYS AS IDENTITY
);
-- Never two defaults for one user, whatever the code does; the code keeps it at exactly one.
CREATE UNIQUE INDEX addresses_one_default_idx ON addresses (user_id) WHERE is_default;
CREATE INDEX addresses_user_idx ON addresses (user_id, created_at DESC, seq DESC);

CREATE TABLE products (
    id uuid PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    name text NOT NULL,
    price_cents integer NOT NULL CHECK (price_cents >= 0),
    -- The last line of defence against overselling: no transaction can commit a negative stock.
    stock integer NOT NULL CHECK (stock >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    status text NOT NULL CHECK (status IN ('placed', 'confirmed', 'shipped', 'in_transit',
                                           'out_for_delivery', 'delivered', 'cancelled')),
    total_cents bigint NOT NULL CHECK (total_cents >= 0),
    shipping_address jsonb NOT NULL,
    note text,
    version integer NOT NULL DEFAULT 1,
    idempotency_key text,
    request_fingerprint bytea,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX orders_idempotency_idx ON orders (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX orders_user_idx ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX orders_created_idx ON orders (created_at DESC, id DESC);

CREATE TABLE order_items (
    order_id uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no smallint NOT NULL,
    product_id uuid NOT NULL REFERENCES products (id),
    sku text NOT NULL,
    name text NOT NULL,
    unit_price_cents integer NOT NULL,
    quantity integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    PRIMARY KEY (order_id, line_no)
);

-- Every status an order has had, written in the transaction that set it.
CREATE TABLE order_history (
    order_id uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    version integer NOT NULL,
    status text NOT NULL,
    note text,
    changed_by uuid NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (order_id, version)
);
