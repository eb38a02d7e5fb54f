"""Each client's share of the gateway: how many of its requests may be in flight at once.

Requests wait on the services (a slow statement, a lock); a client that sends many at once
would otherwise hold the connections to the services that everyone's requests need. Past its
share, a client's next request is refused at once (429) until one of its own is answered. An
event stream counts while it is being opened (its token checked, the service asked), and stops
counting once it is open: open streams have caps of their own (per user, per instance).
"""

from shopkit import errors

# How soon a client refused for its share may try again: its requests in flight end in
# UPSTREAM_TIMEOUT_SECONDS at most, most of them far sooner.
RETRY_SECONDS = 1


class Turn:
    """One request's place in its client's share, held for a `with` block; given back once,
    early (`give_back`) or at the block's end. A plain class: one is made per request."""

    def __init__(self, shares: "ClientShares", bucket: str) -> None:
        self._shares: ClientShares | None = shares
        self._bucket = bucket

    def give_back(self) -> None:
        if self._shares is not None:
            shares, self._shares = self._shares, None
            shares._release(self._bucket)

    def __enter__(self) -> "Turn":
        return self

    def __exit__(self, *_: object) -> None:
        self.give_back()


class ClientShares:
    def __init__(self, share: int) -> None:
        self._share = share
        self._in_flight: dict[str, int] = {}

    def turn(self, bucket: str) -> Turn:
        """`bucket`: the client's address as shopkit.clients.client_bucket groups it."""
        held = self._in_flight.get(bucket, 0)
        if held >= self._share:
            raise errors.TooManyRequests(
                RETRY_SECONDS, f"You have {held} requests in flight; wait for their answers."
            )
        self._in_flight[bucket] = held + 1
        return Turn(self, bucket)

    def _release(self, bucket: str) -> None:
        left = self._in_flight[bucket] - 1
        if left:
            self._in_flight[bucket] = left
        else:
            del self._in_flight[bucket]
