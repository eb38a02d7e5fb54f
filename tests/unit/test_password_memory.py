"""Hashing passwords leaves no argon2 buffer resident: auth's memory at rest stays small."""

import subprocess
import sys

# Run in a fresh interpreter: the allocator's state is per process, and this one's has been
# shaped by every test before.
GROWTH_AFTER_HASHING = """
import asyncio
from pathlib import Path

from services.auth.passwords import Passwords
from services.auth.settings import AuthSettings
from shopkit.tuning import return_large_buffers_to_the_os


def resident_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


async def main() -> None:
    settings = AuthSettings.model_construct(
        argon2_memory_kib=19 * 1024, argon2_time_cost=2, argon2_parallelism=1
    )
    return_large_buffers_to_the_os()  # as the auth service does when it starts
    passwords = Passwords(settings)
    before = resident_kib()
    for _ in range(3):  # every worker thread hashes, more than once
        await asyncio.gather(*(passwords.hash("correct horse") for _ in range(8)))
    print(resident_kib() - before)
    passwords.close()


asyncio.run(main())
"""


def test_hashing_returns_its_memory() -> None:
    growth_kib = int(
        subprocess.run(
            [sys.executable, "-c", GROWTH_AFTER_HASHING], capture_output=True, text=True,
            check=True,
        ).stdout
    )
    # One hash's 19 MiB staying resident would fail this; so would one per worker thread.
    assert growth_kib < 8 * 1024
