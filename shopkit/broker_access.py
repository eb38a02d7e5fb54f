"""Who may do what on RabbitMQ: one user per component, with the rights it needs and no more.

RabbitMQ checks three rights on names (exchanges and queues): configure (declare, delete),
write (publish to an exchange, bind to a queue) and read (consume, get, bind from an exchange);
and, on a topic exchange, the routing keys a user may publish with or bind to. With those:
- a service may publish to `shop.events` with its own event types only (`order.*` for orders),
  and to its subscriptions' requeue exchanges (its retry queues and DLQs); never to the default
  exchange, which would reach every queue;
- a service may read its own queues and DLQs only;
- the gateway may make its own `gateway.revocations.*` queues and bind them to
  `shop.events` for `auth.session_revoked` alone, and publish nothing;
- nobody but the administrator (the bootstrap) configures anything else. A component checks
  that what it uses exists (a passive declare, which needs no right).

The bootstrap makes the users (from the user and password in each component's RabbitMQ URL,
as it makes database roles from their URLs) through RabbitMQ's management HTTP API.
"""

import re
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp

from shopkit.broker import first_node
from shopkit.events import EVENT_OWNERS, EXCHANGE, SESSION_REVOKED

if TYPE_CHECKING:  # the gateway reads this module too, and never loads the consumer's driver
    from shopkit.consumer import Subscription

GATEWAY_QUEUE_PREFIX = "gateway.revocations."
NOTHING = "^$"
MANAGEMENT_PORT = 15672


@dataclass(frozen=True)
class BrokerAccess:
    """A user's rights: regular expressions over names, and over `shop.events` routing keys."""

    configure: str
    write: str
    read: str
    topic_write: str
    topic_read: str


def _any_of(names: Sequence[str]) -> str:
    return "^(" + "|".join(re.escape(name) for name in names) + ")$" if names else NOTHING


def service_access(service: str, subscriptions: Sequence["Subscription"]) -> BrokerAccess:
    prefixes = [prefix for prefix, owner in EVENT_OWNERS.items() if owner == service]
    publishes = [EXCHANGE] if prefixes else []
    return BrokerAccess(
        configure=NOTHING,
        write=_any_of([*publishes, *(s.requeue_exchange for s in subscriptions)]),
        read=_any_of([name for s in subscriptions for name in (s.queue, s.dead_letters)]),
        topic_write="^(" + "|".join(re.escape(p) for p in prefixes) + r")\." if prefixes
        else NOTHING,
        topic_read=NOTHING,
    )


def gateway_access() -> BrokerAccess:
    own_queues = re.escape(GATEWAY_QUEUE_PREFIX) + ".+"
    return BrokerAccess(
        configure=f"^{own_queues}$",
        write=f"^{own_queues}$",
        read=f"^({re.escape(EXCHANGE)}|{own_queues})$",
        topic_write=NOTHING,
        topic_read=_any_of([SESSION_REVOKED]),
    )


@dataclass(frozen=True)
class BrokerUser:
    name: str
    password: str
    access: BrokerAccess

    @classmethod
    def from_url(cls, url: str, access: BrokerAccess) -> "BrokerUser":
        parts = urlsplit(first_node(url))
        if not parts.username or parts.password is None:
            raise ValueError("a component's RabbitMQ URL must name its user and password")
        return cls(unquote(parts.username), unquote(parts.password), access)


def vhost_of(url: str) -> str:
    """The virtual host an AMQP URL names (`/` when it names none)."""
    return unquote(urlsplit(first_node(url)).path[1:]) or "/"


def management_url_for(amqp_url: str) -> str:
    """RabbitMQ's management API beside an AMQP URL (its first node): same host and
    credentials, its port."""
    parts = urlsplit(first_node(amqp_url))
    credentials = f"{parts.username or 'guest'}:{parts.password or 'guest'}@"
    return f"http://{credentials}{parts.hostname or '127.0.0.1'}:{MANAGEMENT_PORT}"


async def ensure_vhost(management_url: str, vhost: str) -> None:
    """Creates `vhost` when it does not exist yet. RabbitMQ gives the user who creates a
    virtual host every right on it, so the administrator can then declare the queues."""
    async with _management(management_url) as (http, base):
        await _put(http, f"{base}/vhosts/{quote(vhost, safe='')}", {})


async def drop_vhost(management_url: str, vhost: str) -> None:
    """Deletes `vhost` and everything in it, when it exists."""
    async with _management(management_url) as (http, base), http.delete(
        f"{base}/vhosts/{quote(vhost, safe='')}"
    ) as response:
        if response.status not in (204, 404):
            raise RuntimeError(f"RabbitMQ's management API refused to delete a virtual host:"
                               f" {response.status}")


async def ensure_users(management_url: str, vhost: str, users: Sequence[BrokerUser]) -> None:
    """Creates each user (or sets its password) with exactly its rights on `vhost`."""
    host = quote(vhost, safe="")
    async with _management(management_url) as (http, base):
        for user in users:
            name = quote(user.name, safe="")
            rights = user.access
            await _put(http, f"{base}/users/{name}", {"password": user.password, "tags": ""})
            await _put(http, f"{base}/permissions/{host}/{name}", {
                "configure": rights.configure, "write": rights.write, "read": rights.read,
            })
            await _put(http, f"{base}/topic-permissions/{host}/{name}", {
                "exchange": EXCHANGE, "write": rights.topic_write, "read": rights.topic_read,
            })


@dataclass(frozen=True)
class ShopBroker:
    """What of a broker is a shop's: in its virtual host, the queues and exchanges its
    bootstrap declares (shopkit.topology.declared), and its components' users."""

    vhost: str
    users: frozenset[str]
    queues: frozenset[str]
    exchanges: frozenset[str]

    def policy_applies(self, policy: dict[str, Any]) -> bool:
        """Whether a policy's pattern matches a queue or exchange of the shop's (RabbitMQ
        searches the name with it). One Python cannot read is kept rather than lost."""
        try:
            pattern = re.compile(policy.get("pattern", ""))
        except re.error:
            return True
        return any(pattern.search(name) for name in self.queues | self.exchanges)


# Kept from the vhost's runtime parameters: its limits. A shovel's or a federation upstream's
# URI may hold a password in clear.
_KEPT_PARAMETERS = frozenset({"vhost-limits"})
_IN_VHOST = ("permissions", "topic_permissions", "policies", "queues", "exchanges", "bindings",
             "parameters")


def shop_definitions(everything: dict[str, Any], shop: ShopBroker) -> dict[str, Any]:
    """Of a whole broker's definitions (`GET /api/definitions`), the shop's, for its
    backups. The vhost may be `/`, shared with others: their queues, exchanges and users stay
    out, and so do the administrator and the gateways' revocation queues (exclusive, each
    made by its gateway as it starts). Users carry RabbitMQ's salted password hashes, never a
    password."""
    inside = {key: [item for item in everything.get(key, []) if item.get("vhost") == shop.vhost]
              for key in _IN_VHOST}
    return {
        "users": [u for u in everything.get("users", []) if u["name"] in shop.users],
        "vhosts": [v for v in everything.get("vhosts", []) if v["name"] == shop.vhost],
        "permissions": [p for p in inside["permissions"] if p["user"] in shop.users],
        "topic_permissions": [p for p in inside["topic_permissions"] if p["user"] in shop.users],
        "queues": [q for q in inside["queues"] if q["name"] in shop.queues],
        "exchanges": [e for e in inside["exchanges"] if e["name"] in shop.exchanges],
        "bindings": [b for b in inside["bindings"] if b["source"] in shop.exchanges
                     and b["destination_type"] == "queue" and b["destination"] in shop.queues],
        "policies": [p for p in inside["policies"] if shop.policy_applies(p)],
        "parameters": [p for p in inside["parameters"] if p.get("component") in _KEPT_PARAMETERS],
    }


def moved_to(definitions: dict[str, Any], vhost: str) -> dict[str, Any]:
    """A shop's definitions, as they would be in `vhost` (a shop restored under another
    name)."""
    moved = {key: [{**item, "vhost": vhost} for item in definitions.get(key, [])]
             for key in _IN_VHOST}
    moved["users"] = list(definitions.get("users", []))
    moved["vhosts"] = [{**v, "name": vhost} for v in definitions.get("vhosts", [])]
    return moved


async def export_definitions(management_url: str, shop: ShopBroker) -> dict[str, Any]:
    """The shop's definitions (`shop_definitions`), as the broker has them now."""
    async with _management(management_url) as (http, base), http.get(
        f"{base}/definitions"
    ) as response:
        if response.status != 200:
            raise RuntimeError(f"RabbitMQ's management API refused the definitions:"
                               f" {response.status}")
        return shop_definitions(await response.json(), shop)


async def import_definitions(
    management_url: str, vhost: str, definitions: dict[str, Any]
) -> None:
    """Adds a shop's definitions to the broker, in `vhost`."""
    async with _management(management_url) as (http, base), http.post(
        f"{base}/definitions", json=moved_to(definitions, vhost)
    ) as response:
        if response.status not in (200, 201, 204):
            raise RuntimeError(f"RabbitMQ's management API refused the definitions:"
                               f" {response.status} {await response.text()}")


async def messages_waiting(management_url: str, vhost: str) -> dict[str, int] | None:
    """Each queue of `vhost` with the messages it holds (ready or unacknowledged), or None
    when there is no such virtual host. The management API's counts of a quorum queue are a
    few seconds old: enough to tell a vhost in use from an empty one."""
    host = quote(vhost, safe="")
    async with _management(management_url) as (http, base):
        async with http.get(f"{base}/vhosts/{host}") as response:
            if response.status == 404:
                return None
            if response.status != 200:
                raise RuntimeError(f"RabbitMQ's management API refused a virtual host:"
                                   f" {response.status}")
        async with http.get(
            f"{base}/queues/{host}", params={"columns": "name,messages"}
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"RabbitMQ's management API refused the queues:"
                                   f" {response.status}")
            return {q["name"]: q.get("messages") or 0 for q in await response.json()}


async def delete_queues(management_url: str, vhost: str, names: Collection[str]) -> None:
    """Deletes these queues of `vhost`, with what they hold, those that exist."""
    host = quote(vhost, safe="")
    async with _management(management_url) as (http, base):
        for name in names:
            async with http.delete(f"{base}/queues/{host}/{quote(name, safe='')}") as response:
                if response.status not in (204, 404):
                    raise RuntimeError(f"RabbitMQ's management API refused to delete queue"
                                       f" {name}: {response.status}")


@asynccontextmanager
async def _management(management_url: str) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """A session logged in to the management API, and the API's base URL."""
    parts = urlsplit(management_url)
    base = f"{parts.scheme}://{parts.hostname}:{parts.port or MANAGEMENT_PORT}/api"
    login = aiohttp.encode_basic_auth(unquote(parts.username or ""), unquote(parts.password or ""))
    async with aiohttp.ClientSession(
        headers={"Authorization": login}, timeout=aiohttp.ClientTimeout(total=30)
    ) as http:
        yield http, base


async def _put(http: aiohttp.ClientSession, url: str, body: dict[str, str]) -> None:
    async with http.put(url, json=body) as response:
        if response.status not in (201, 204):
            # The URL names the user; the body may hold a password: neither is repeated.
            raise RuntimeError(
                f"RabbitMQ's management API refused {url.split('/api/', 1)[1].split('/')[0]}:"
                f" {response.status} {await response.text()}"
            )
