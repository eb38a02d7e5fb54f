"""argon2id hashing, run in worker threads so one sign-in never stalls the event loop.

argon2-cffi releases the GIL while hashing, so the threads hash in parallel with the loop.
Each hash takes a core for tens of milliseconds: the work is admitted by turns (`turn`), at most
one per worker thread plus `password_hash_queue` waiting, and refused with 503 past that, so a
flood of sign-ins or registrations never builds a queue that delays everyone's for long.
"""

import asyncio
import contextlib
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from services.auth.settings import AuthSettings
from shopkit import errors


class HashingBusy(errors.ServiceUnavailable):
    message = "Too many passwords are being checked right now; try again shortly."


class Passwords:
    def __init__(self, settings: AuthSettings) -> None:
        workers = os.cpu_count() or 2
        self._capacity = workers + settings.password_hash_queue
        self._turns_taken = 0
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        # Checked against when the account does not exist, so an unknown email costs the same
        # time as a wrong password and the two cannot be told apart.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Admits one request's hashing (raises HashingBusy when every turn is taken). A turn
        is held for the hashing alone, never while waiting on the database; a refused request
        gives back what it counted (a sign-in attempt, a registration), so a refusal costs the
        caller nothing but a retry."""
        if self._turns_taken >= self._capacity:
            raise HashingBusy()
        self._turns_taken += 1
        try:
            yield
        finally:
            self._turns_taken -= 1

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        return await self._run(self._verify, stored_hash, password)

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(stored_hash or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return stored_hash is not None

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
