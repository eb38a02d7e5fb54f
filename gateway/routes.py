"""The route table: which service serves a path, and who may call it (contract §4).

First match wins, so the narrower patterns come first. Paths are matched on the raw (still
percent-encoded) path that is forwarded, so what is checked is exactly what the service sees.
"""

import re
from dataclasses import dataclass

from shopkit.openapi import Access


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    service: str | None  # None: nobody serves it, answered 404 once access is checked
    access: Access
    streaming: bool = False
    ends_sessions: bool = False  # a 200 from it means sessions of the caller are gone

    @property
    def needs_token(self) -> bool:
        return self.access is not Access.PUBLIC


def _route(
    pattern: str,
    service: str | None,
    access: Access,
    streaming: bool = False,
    ends_sessions: bool = False,
) -> Route:
    return Route(re.compile(pattern), service, access, streaming, ends_sessions)


_ID = r"[^/]+"

ROUTES: tuple[Route, ...] = (
    _route(r"^/api/users/(register|login)$", "auth", Access.PUBLIC),
    _route(r"^/api/admin/login$", "auth", Access.PUBLIC),
    _route(rf"^/api/users/(logout|logout-all|password|sessions/{_ID})$", "auth", Access.USER,
           ends_sessions=True),
    _route(r"^/api/users(/.*)?$", "auth", Access.USER),
    _route(rf"^/api/admin/orders/{_ID}/tracking$", "tracking", Access.ADMIN),
    _route(r"^/api/admin/(products|orders)(/.*)?$", "orders", Access.ADMIN),
    _route(r"^/api/admin(/.*)?$", None, Access.ADMIN),
    # Only read there: the catalogue is public, and changes go through /api/admin/products.
    _route(rf"^/api/products(/{_ID})?$", "orders", Access.PUBLIC),
    _route(r"^/api/addresses(/.*)?$", "orders", Access.USER),
    _route(rf"^/api/orders/{_ID}/tracking$", "tracking", Access.USER),
    _route(r"^/api/orders(/.*)?$", "orders", Access.USER),
    _route(r"^/api/notifications/stream$", "notifications", Access.USER, streaming=True),
    _route(r"^/api/notifications(/.*)?$", "notifications", Access.USER),
)

# Dot segments and encoded slashes could make a service see another path than the one matched.
_AMBIGUOUS_PATH = re.compile(r"(^|/)\.\.?(/|$)|%2[eEfF]|%5[cC]|\\")


def match_route(raw_path: str) -> Route | None:
    if _AMBIGUOUS_PATH.search(raw_path):
        return None
    for route in ROUTES:
        if route.pattern.match(raw_path):
            return route
    return None
