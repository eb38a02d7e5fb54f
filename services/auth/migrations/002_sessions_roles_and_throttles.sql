-- A session's own role: 'admin' only for one opened through the admin sign-in by an admin.
-- Sessions opened before this change keep working with a user's rights; an admin signs in
-- through the admin sign-in again for admin rights.
ALTER TABLE sessions ADD COLUMN role text NOT NULL DEFAULT 'user'
    CHECK (role IN ('user', 'admin'));
-- When the session was last used (to the precision SESSION_TOUCH_INTERVAL_SECONDS): it ends
-- once unused for SESSION_IDLE_SECONDS, and past MAX_SESSIONS_PER_USER the least recently
-- used one goes. Existing sessions count as used now.
ALTER TABLE sessions ADD COLUMN last_seen_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX sessions_user_seen_idx ON sessions (user_id, last_seen_at DESC);

-- Fixed-window counters shared by every instance (registrations per client address).
CREATE TABLE rate_windows (
    key text PRIMARY KEY,
    hits integer NOT NULL,
    window_started_at timestamptz NOT NULL
);
