"""Rules of sign-in and sessions, free of HTTP and SQL."""

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from shopkit.clients import client_bucket
from shopkit.events import SESSION_REVOKED, Event

SOURCE = "auth"
TOKEN_BYTES = 32  # 256 bits from the OS CSPRNG
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    """What is stored instead of the token: a leaked table cannot be replayed as sessions."""
    return hashlib.sha256(token.encode()).digest()


def looks_like_token(token: str) -> bool:
    return bool(_TOKEN_SHAPE.match(token))


def sessions_revoked(user_id: UUID, session_ids: Sequence[UUID]) -> Event:
    """What every component hears when sessions end before their time: token caches forget
    them, notification streams on them close."""
    return Event(
        type=SESSION_REVOKED,
        source=SOURCE,
        data={"userId": str(user_id), "sessionIds": [str(s) for s in session_ids]},
    )


def address_key(address: str) -> str:
    """Failed sign-ins are counted per client as shopkit.clients.client_bucket groups addresses."""
    return f"address:{client_bucket(address)}"


def registration_key(address: str) -> str:
    return f"register:{client_bucket(address)}"


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int
    window: timedelta
    step: timedelta
    cap: timedelta

    def locks(self, failures: int) -> bool:
        return failures > self.max_failures

    def locked_until(self, failures: int, now: datetime) -> datetime | None:
        """Past the limit each further failure adds a step, so guessing slows down steadily
        while one stray typo never locks anybody out."""
        if not self.locks(failures):
            return None
        return now + min(self.step * (failures - self.max_failures), self.cap)

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

    def given_back(self, policy: LockoutPolicy) -> "AttemptCounter":
        """The attempt counted before the password was checked, given back: the lock it set
        (if it was the one that passed the limit) goes with it; one set earlier stays."""
        failures = max(self.failures - 1, 0)
        locked_until = self.locked_until if policy.locks(failures) else None
        return AttemptCounter(self.key, failures, self.window_started_at, locked_until)


@dataclass(frozen=True)
class SignInCounters:
    """What a sign-in attempt is counted against: the account from this client address (the
    limit one guesser meets), the account from everywhere (a much higher ceiling, against a
    guess spread over many addresses) and the address over every account.

    A guesser who fails again and again from one address locks the account for that address
    only: its owner, from an address that has not failed, still gets in. Only a guess from
    many addresses reaches the account's own ceiling."""

    account: AttemptCounter
    pair: AttemptCounter
    address: AttemptCounter
    now: datetime

    def retry_after(self) -> timedelta | None:
        """How long to wait when any counter is locked; None when the attempt may go on."""
        waits = [w for c in (self.account, self.pair, self.address)
                 if (w := c.retry_after(self.now)) is not None]
        return max(waits) if waits else None


@dataclass(frozen=True)
class SignInPolicies:
    account: LockoutPolicy
    pair: LockoutPolicy
    address: LockoutPolicy

    def giving_back(
        self, counters: SignInCounters, success: bool
    ) -> tuple[dict[str, LockoutPolicy], str | None]:
        """What an attempt given back changes: the counters that get it back, with their
        policies, and the one that starts afresh (None if none). A success gives back the
        account's and the address's attempt, and the account starts afresh from this address;
        an attempt that was never made (no turn to hash) gives back all three."""
        given_back = {counters.account.key: self.account, counters.address.key: self.address}
        if success:
            return given_back, counters.pair.key
        return {**given_back, counters.pair.key: self.pair}, None

    def count_attempt(self, counters: SignInCounters) -> list[AttemptCounter]:
        """Every counter with this attempt counted as failed (a success gives it back)."""
        return [
            counter.count_attempt(policy, counters.now)
            for counter, policy in ((counters.account, self.account),
                                    (counters.pair, self.pair),
                                    (counters.address, self.address))
        ]
