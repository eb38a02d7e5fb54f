"""The gateway has no database, so it does not load the database driver (10 MiB resident)."""

import subprocess
import sys

# A fresh interpreter: this one has loaded asyncpg for the other tests long ago.
LOADED_DRIVER = "import sys, gateway.app, shopkit.runner; print('asyncpg' in sys.modules)"


def test_the_gateway_does_not_load_asyncpg() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED_DRIVER], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "False"
