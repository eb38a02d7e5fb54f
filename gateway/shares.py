"""Each client's share of the gateway: how many of its requests may be in flight at once.

Requests wait on the services (a slow statement, a lock); a client that sends many at once
would otherwise hold the connections to the services that everyone's requests need. Past its
share, a client's next request is refused at once (429) until one of its own is answered. Event
streams are not counted here: they have caps of their own (per user, per instance).
"""

import contextlib
from collections.abc import Iterator

from shopkit import errors

# How soon a client refused for its share may try again: its requests in flight end in
# UPSTREAM_TIMEOUT_SECONDS at most, most of them far sooner.
RETRY_SECONDS = 1


class ClientShares:
    def __init__(self, share: int) -> None:
        self._share = share
        self._in_flight: dict[str, int] = {}

    @contextlib.contextmanager
    def turn(self, address: str) -> Iterator[None]:
        held = self._in_flight.get(address, 0)
        if held >= self._share:
            raise errors.TooManyRequests(
                RETRY_SECONDS, f"You have {held} requests in flight; wait for their answers."
            )
        self._in_flight[address] = held + 1
        try:
            yield
        finally:
            left = self._in_flight[address] - 1
            if left:
                self._in_flight[address] = left
            else:
                del self._in_flight[address]
