"""Calls from the gateway to the services: token validation, proxying, the operations panel's
parts.

Requests share one pooled keep-alive ClientSession; event streams have a session of their own,
with its own connections and a ceiling, so that no number of open streams can take the
connections requests need. Every call carries the request id and a freshly signed identity
bound to that call's service, method and path.
"""

import asyncio
import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError
from yarl import URL

from gateway.revocations import TOKEN_CACHE_KEY
from gateway.routes import Route
from gateway.settings import GatewaySettings, Upstream
from gateway.tokens import Validated
from shopkit import errors, tracing
from shopkit.identity import IDENTITY_HEADER, Identity, Role, sign_identity
from shopkit.openapi import Access
from shopkit.operations import OPERATIONS_PATH, ServiceOperations, ServiceOperationsAnswer
from shopkit.web import REQUEST_ID_HEADER, read_body, request_id

HTTP_KEY = web.AppKey("http", aiohttp.ClientSession)
STREAM_HTTP_KEY = web.AppKey("stream_http", aiohttp.ClientSession)
SETTINGS_KEY = web.AppKey("gateway_settings", GatewaySettings)
UPSTREAMS_KEY = web.AppKey("upstreams", dict)

VALIDATE_PATH = "/internal/sessions/validate"
# How long the operations panel waits for a service's part: longer than a service gives its
# own dependencies (shopkit.operations.PART_TIMEOUT_SECONDS), short enough for a panel.
OPERATIONS_TIMEOUT_SECONDS = 2.0

# Never forwarded in either direction (RFC 9110 §7.6.1), nor anything a Connection header names:
# a client must not be able to make the gateway drop or pass a header by listing it there.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
        "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Connection",
    )
)
# Set by the gateway alone: whatever a client sends under these names is dropped.
GATEWAY_OWNED = frozenset(
    h.lower()
    for h in (
        "Host", "Content-Length", "Authorization", IDENTITY_HEADER, REQUEST_ID_HEADER,
        # aiohttp has already decoded a compressed request body; it is forwarded as it is now.
        "Content-Encoding",
        "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "Forwarded",
        # A client's trace context is the gateway's to read (shopkit.tracing: its trace id is
        # kept, its sampling is not); each call sends the gateway's own, when tracing is on.
        tracing.TRACEPARENT, "Tracestate", "Baggage",
    )
)


@dataclass
class StreamSlots:
    """Event streams this instance proxies now, up to `ceiling` (settings.max_streams)."""

    ceiling: int
    open: int = 0


STREAM_SLOTS_KEY = web.AppKey("stream_slots", StreamSlots)


_NOT_FORWARDED = HOP_BY_HOP | GATEWAY_OWNED
_NOT_RETURNED = HOP_BY_HOP | {"content-length", "date", "server"}


def _dropped(headers: CIMultiDictProxy[str], always: frozenset[str]) -> frozenset[str]:
    """`always`, and the headers a Connection header names (hop-by-hop too)."""
    if "Connection" not in headers:
        return always
    return always | {
        name.strip().lower()
        for value in headers.getall("Connection", [])
        for name in value.split(",")
    }


def upstream_request_headers(
    request: web.Request, caller: Identity, upstream: Upstream, body: bytes
) -> CIMultiDict:
    dropped = _dropped(request.headers, _NOT_FORWARDED)
    headers = CIMultiDict(
        [(name, value) for name, value in request.headers.items() if name.lower() not in dropped]
    )
    headers[REQUEST_ID_HEADER] = request_id(request)
    headers[IDENTITY_HEADER] = sign_identity(
        caller, upstream.key, request.method, request.rel_url.raw_path_qs, body
    )
    if caller.client_address:
        headers["X-Forwarded-For"] = caller.client_address
    return headers


def response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict:
    dropped = _dropped(upstream.headers, _NOT_RETURNED)
    return CIMultiDict(
        [(name, value) for name, value in upstream.headers.items() if name.lower() not in dropped]
    )


def client_address(request: web.Request, trusted_proxies: int) -> str:
    """The client's address: the socket's peer, or, behind `trusted_proxies` proxies, the
    entry the outermost of them appended to X-Forwarded-For.

    Each proxy appends the address it was called from, so the entries are read from the right:
    the last `trusted_proxies` were written by the proxies, and the leftmost of those names
    the client. Whatever the client wrote itself stands further left, on the same line or on
    lines of its own (all lines are read, in order), and is never taken.
    """
    if trusted_proxies:
        hops = [
            hop.strip()
            for line in request.headers.getall("X-Forwarded-For", [])
            for hop in line.split(",")
            if hop.strip()
        ]
        if hops:
            entry = hops[-min(trusted_proxies, len(hops))]
            # What the proxy wrote, however it wrote it: each client stays apart from the others.
            return _address_in(entry) or entry[:MAX_ADDRESS_TEXT]
    return request.remote or "unknown"


# An entry that names no address is kept as text, this long at most.
MAX_ADDRESS_TEXT = 64


def _address_in(entry: str) -> str | None:
    """The address in an X-Forwarded-For entry, with a port or IPv6 brackets or not."""
    text = entry
    if text.startswith("["):  # [2001:db8::1] or [2001:db8::1]:443
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


async def admit(request: web.Request, access: Access, address: str) -> Identity:
    """The caller as `access` needs it: anonymous where anyone may call; else the token's
    holder (401 without a valid token), who must be an admin where `access` says so (403)."""
    if access is Access.PUBLIC:
        return Identity(Role.ANONYMOUS, client_address=address)
    caller = await authenticate(request, address)
    if access is Access.ADMIN and caller.role is not Role.ADMIN:
        raise errors.Forbidden()
    return caller


def vouching_headers(
    request: web.Request, caller: Identity, upstream: Upstream, method: str, target: str,
    body: bytes = b"",
) -> dict[str, str]:
    """For a call the gateway makes of its own: the request id, and `caller` vouched for to
    that service, bound to that call (method, path, body)."""
    return {
        REQUEST_ID_HEADER: request_id(request),
        IDENTITY_HEADER: sign_identity(caller, upstream.key, method, target, body),
    }


async def authenticate(request: web.Request, address: str) -> Identity:
    """The caller's identity, from the token cache or else from auth; 401 / 503 otherwise."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise errors.Unauthorized()
    cache = request.app[TOKEN_CACHE_KEY]
    with tracing.span("token check"):  # a call to auth within it when the cache had no answer
        validated = cache.get(token)
        if validated is None:
            evictions_before = cache.evictions
            validated = await _validate(request, token, address)
            cache.put(token, validated, evictions_before)
    return Identity(
        role=validated.role,
        user_id=validated.user_id,
        session_id=validated.session_id,
        client_address=address,
        session_ends_at=validated.expires_at.timestamp(),
    )


async def _validate(request: web.Request, token: str, address: str) -> Validated:
    """Asks auth whose bearer token this is."""
    settings = request.app[SETTINGS_KEY]
    auth: Upstream = request.app[UPSTREAMS_KEY]["auth"]
    anonymous = Identity(Role.ANONYMOUS, client_address=address)
    body = orjson.dumps({"token": token})
    headers = {
        **vouching_headers(request, anonymous, auth, "POST", VALIDATE_PATH, body),
        "Content-Type": "application/json",
    }
    try:
        async with request.app[HTTP_KEY].post(
            auth.url + VALIDATE_PATH, data=body, headers=headers, timeout=_timeout(settings)
        ) as response:
            if 400 <= response.status < 500:  # any refusal: the token is not valid
                raise errors.Unauthorized()
            if response.status != 200:
                raise errors.ServiceUnavailable("The auth service cannot check tokens right now.")
            data = (await response.json())["data"]
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise errors.ServiceUnavailable("The auth service is unavailable.") from exc
    return Validated(
        role=Role(data["role"]),
        user_id=UUID(data["userId"]),
        session_id=UUID(data["sessionId"]),
        expires_at=datetime.fromisoformat(data["expiresAt"]),
    )


def _timeout(settings: GatewaySettings) -> aiohttp.ClientTimeout:
    return _client_timeout(settings.upstream_timeout_seconds,
                           settings.upstream_connect_timeout_seconds)


@functools.cache
def _client_timeout(total: float, connect: float) -> aiohttp.ClientTimeout:
    """One object per pair of timeouts, not one per request."""
    return aiohttp.ClientTimeout(total=total, sock_connect=connect)


async def operations_of(
    request: web.Request, caller: Identity, service: str
) -> ServiceOperations | None:
    """The service's own part of the operations panel, asked with the (admin) caller's
    identity; None when it does not give one within OPERATIONS_TIMEOUT_SECONDS."""
    upstream: Upstream = request.app[UPSTREAMS_KEY][service]
    settings = request.app[SETTINGS_KEY]
    try:
        async with request.app[HTTP_KEY].get(
            upstream.url + OPERATIONS_PATH,
            headers=vouching_headers(request, caller, upstream, "GET", OPERATIONS_PATH),
            timeout=_client_timeout(OPERATIONS_TIMEOUT_SECONDS,
                                    settings.upstream_connect_timeout_seconds),
        ) as response:
            if response.status != 200:
                return None
            return ServiceOperationsAnswer.model_validate_json(await response.read()).data
    except (aiohttp.ClientError, TimeoutError, ValidationError):
        return None


async def forward(request: web.Request, route: Route, caller: Identity) -> web.StreamResponse:
    assert route.service is not None
    settings = request.app[SETTINGS_KEY]
    try:
        async with await _send(
            request, request.app[HTTP_KEY], route, caller, _timeout(settings)
        ) as upstream:
            if upstream.content_type == "text/event-stream":
                return await _relay(request, upstream)
            payload = await upstream.read()
    except TimeoutError as exc:
        raise errors.GatewayTimeout(f"The {route.service} service did not answer in time.") from exc
    except aiohttp.ClientError as exc:
        raise errors.ServiceUnavailable(f"The {route.service} service is unavailable.") from exc
    return web.Response(status=upstream.status, body=payload, headers=response_headers(upstream))


async def forward_stream(
    request: web.Request, route: Route, caller: Identity, opened: Callable[[], None]
) -> web.StreamResponse:
    """An event stream, on the streams' own connections, while this instance has room for
    one more (503 otherwise). The service must answer within UPSTREAM_TIMEOUT_SECONDS; then
    `opened` is called, and the stream stays open as long as both ends do."""
    slots = request.app[STREAM_SLOTS_KEY]
    if slots.open >= slots.ceiling:
        raise errors.ServiceUnavailable("Too many event streams are open here; try again shortly.")
    settings = request.app[SETTINGS_KEY]
    slots.open += 1
    try:
        async with asyncio.timeout(settings.upstream_timeout_seconds):
            upstream = await _send(
                request, request.app[STREAM_HTTP_KEY], route, caller,
                aiohttp.ClientTimeout(sock_connect=settings.upstream_connect_timeout_seconds),
            )
        async with upstream:
            opened()
            return await _relay(request, upstream)
    except TimeoutError as exc:
        raise errors.GatewayTimeout(f"The {route.service} service did not answer in time.") from exc
    except aiohttp.ClientError as exc:
        raise errors.ServiceUnavailable(f"The {route.service} service is unavailable.") from exc
    finally:
        slots.open -= 1


async def _send(
    request: web.Request, session: aiohttp.ClientSession, route: Route, caller: Identity,
    timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's own, per request)
) -> aiohttp.ClientResponse:
    assert route.service is not None
    upstream: Upstream = request.app[UPSTREAMS_KEY][route.service]
    body = await read_body(request)
    url = URL(upstream.url + request.rel_url.raw_path_qs, encoded=True)
    return await session.request(
        request.method, url, data=body or None,
        headers=upstream_request_headers(request, caller, upstream, body),
        timeout=timeout, allow_redirects=False,
    )


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """Passes the body on chunk by chunk as it comes (Server-Sent Events), never buffered."""
    response = web.StreamResponse(status=upstream.status, headers=response_headers(upstream))
    response.headers[REQUEST_ID_HEADER] = request_id(request)
    await response.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except (aiohttp.ClientError, ConnectionResetError):
        pass  # the upstream or the client went away mid-stream: the stream just ends
    return response
