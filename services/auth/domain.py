"""Rules of sign-in and sessions, free of HTTP and SQL."""

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

TOKEN_BYTES = 32  # 256 bits from the OS CSPRNG
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    """What is stored instead of the token: a leaked table cannot be replayed as sessions."""
    return hashlib.sha256(token.encode()).digest()


def looks_like_token(token: str) -> bool:
    return bool(_TOKEN_SHAPE.match(token))


def address_key(address: str) -> str:
    return f"address:{address}"


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int
    window: timedelta
    step: timedelta
    cap: timedelta

    def locked_until(self, failures: int, now: datetime) -> datetime | None:
        """Past the limit each further failure adds a step, so guessing slows down steadily
        while one stray typo never locks anybody out."""
        over = failures - self.max_failures
        if over <= 0:
            return None
        return now + min(self.step * over, self.cap)

    def window_expired(self, window_started_at: datetime, now: datetime) -> bool:
        return now - window_started_at > self.window


@dataclass(frozen=True)
class AttemptCounter:
    """Sign-in attempts counted under one key within the current window."""

    key: str
    failures: int
    window_started_at: datetime
    locked_until: datetime | None

    def retry_after(self, now: datetime) -> timedelta | None:
        if self.locked_until is not None and self.locked_until > now:
            return self.locked_until - now
        return None

    def count_attempt(self, policy: LockoutPolicy, now: datetime) -> "AttemptCounter":
        """Counts an attempt as failed before the password is checked (a success undoes it).

        Counting first is what bounds guessing under concurrency: once the limit is passed, the
        attempt that passes it also sets the lock, so parallel attempts are refused at once
        instead of all slipping through before any failure was recorded.
        """
        if policy.window_expired(self.window_started_at, now):
            failures, started = 1, now
        else:
            failures, started = self.failures + 1, self.window_started_at
        return AttemptCounter(self.key, failures, started, policy.locked_until(failures, now))
