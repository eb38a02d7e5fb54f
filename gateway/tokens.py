"""Validated tokens, remembered briefly, so a hot token costs no call to auth.

How stale an answer can be is bounded twice:
- an entry lives at most `token_cache_seconds`, and never past its session's expiry;
- a logout evicts the user's entries at once on the gateway that served it, and on every other
  instance when it hears `auth.session_revoked` (gateway/revocations.py), milliseconds later.
While an instance cannot hear those events (RabbitMQ down, not yet connected) it does not use the
cache, and it empties the cache when it hears them again, since some may have been missed.

Only a hash of each token is kept. Each instance has its own cache; it is derived state that a
restart simply rebuilds from auth.
"""

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from shopkit.identity import Role
from shopkit.metrics import TOKEN_CACHE_LOOKUPS

# Bound once: each lookup then costs one increment, not a labels() call.
_HIT, _MISS, _OFF = (TOKEN_CACHE_LOOKUPS.labels(result) for result in ("hit", "miss", "off"))


@dataclass(frozen=True)
class Validated:
    """What auth said of a token."""

    role: Role
    user_id: UUID
    session_id: UUID
    expires_at: datetime  # the session's end, by auth's clock


@dataclass(frozen=True)
class _Entry:
    validated: Validated
    good_until: float  # monotonic


def token_key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenCache:
    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._by_user: dict[UUID, set[bytes]] = {}
        self._evictions = 0
        self.listening = False  # hearing revocations: set by the listener

    @property
    def in_use(self) -> bool:
        return self._ttl > 0 and self.listening

    @property
    def evictions(self) -> int:
        """Grows with every eviction; `put` refuses an answer asked for before one."""
        return self._evictions

    def get(self, token: str) -> Validated | None:
        if not self.in_use:
            _OFF.inc()
            return None
        key = token_key(token)
        entry = self._entries.get(key)
        if entry is None:
            _MISS.inc()
            return None
        if entry.good_until <= self._clock():
            self._drop(key)
            _MISS.inc()
            return None
        self._entries.move_to_end(key)
        _HIT.inc()
        return entry.validated

    def put(self, token: str, validated: Validated, evictions_before: int) -> None:
        """Remembers auth's answer unless a logout may have overtaken it: an eviction since
        the question was asked means the answer may already be stale."""
        if not self.in_use or evictions_before != self._evictions:
            return
        session_left = validated.expires_at.timestamp() - self._wall_clock()
        lifetime = min(self._ttl, session_left)
        if lifetime <= 0:
            return
        key = token_key(token)
        self._drop(key)
        self._entries[key] = _Entry(validated, self._clock() + lifetime)
        self._by_user.setdefault(validated.user_id, set()).add(key)
        while len(self._entries) > self._max_entries:
            self._drop(next(iter(self._entries)))

    def evict_users(self, user_ids: Iterable[UUID]) -> None:
        self._evictions += 1
        for user_id in user_ids:
            for key in self._by_user.pop(user_id, set()):
                self._entries.pop(key, None)

    def clear(self) -> None:
        self._evictions += 1
        self._entries.clear()
        self._by_user.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            keys = self._by_user.get(entry.validated.user_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_user[entry.validated.user_id]
