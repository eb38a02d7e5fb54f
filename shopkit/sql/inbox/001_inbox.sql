-- Events already applied, per consuming queue: written in the transaction of the effect, so a
-- redelivered or republished event finds its row and changes nothing.
CREATE TABLE inbox (
    consumer text NOT NULL,
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
