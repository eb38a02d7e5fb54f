-- Sessions revoked, as auth.session_revoked reported them: a stream on one of them ends. The
-- hubs are told only the event's id (NOTIFY), and read the rest from here, so no notice is
-- too large for NOTIFY and no other database role can end a stream by a made-up notice.
CREATE TABLE revoked_sessions (
    event_id uuid NOT NULL,
    session_id uuid NOT NULL,
    user_id uuid NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, session_id)
);
CREATE INDEX revoked_sessions_at_idx ON revoked_sessions (revoked_at);
-- A stream opening checks that its session was not revoked while the request came through.
CREATE INDEX revoked_sessions_session_idx ON revoked_sessions (session_id);

-- The event streams open now, on every instance: what the per-user cap counts. Each instance
-- renews its own rows' leases; a row whose lease ran out (its instance died) no longer counts.
CREATE TABLE open_streams (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    instance_id uuid NOT NULL,
    opened_at timestamptz NOT NULL DEFAULT now(),
    lease_ends_at timestamptz NOT NULL
);
CREATE INDEX open_streams_user_idx ON open_streams (user_id);
CREATE INDEX open_streams_instance_idx ON open_streams (instance_id);
