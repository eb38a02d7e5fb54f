"""The caller's identity as the gateway vouches for it, and how a service checks that vouching.

The gateway signs `X-Shop-Identity` with HMAC-SHA256 under a key it shares with one service
only: each service holds its own key and no other, and the gateway holds them all. The
signature covers the identity, the service it is meant for (its audience), the time it was
issued, and the request's method, path, query and a digest of its body. So a header cannot be
forged, replayed later than `max_age`, moved onto another request (another path, query or body)
or onto another service; and a service, holding only its own key, cannot vouch for a caller to
any other service. Every request reaching a service carries one, public routes included (as
`anonymous`): a missing or bad identity is always 401, never "anonymous" (see Ory Oathkeeper
GHSA-w9mr-28mw-j8hg).
"""

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

import orjson

IDENTITY_HEADER = "X-Shop-Identity"


class Role(StrEnum):
    ANONYMOUS = "anonymous"
    USER = "user"
    ADMIN = "admin"


class InvalidIdentity(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Identity:
    role: Role
    user_id: UUID | None = None
    session_id: UUID | None = None
    client_address: str | None = None
    # When the caller's session ends (Unix time), as auth knew it when the gateway asked: a
    # request that lasts (an event stream) ends then.
    session_ends_at: float | None = None

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None


@dataclass(frozen=True, slots=True)
class IdentityKey:
    """The key the gateway and one service share, and that service's name (the audience)."""

    audience: str
    secret: bytes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: str) -> str:
    # hmac.digest: OpenSSL's one-shot HMAC, with no HMAC object and its two hash copies.
    return _b64(hmac.digest(secret, payload.encode(), "sha256"))


def body_digest(body: bytes) -> str:
    return _b64(hashlib.sha256(body).digest()) if body else _EMPTY_BODY_DIGEST


_EMPTY_BODY_DIGEST = _b64(hashlib.sha256(b"").digest())  # most requests are reads


def sign_identity(
    identity: Identity,
    key: IdentityKey,
    method: str,
    target: str,
    body: bytes = b"",
    now: float | None = None,
) -> str:
    """`target` is the raw path and query exactly as the service will receive them."""
    claims = {
        "r": identity.role.value,
        "u": str(identity.user_id) if identity.user_id else None,
        "s": str(identity.session_id) if identity.session_id else None,
        "a": identity.client_address,
        "e": identity.session_ends_at,
        "aud": key.audience,
        "t": int(now if now is not None else time.time()),
        "m": method.upper(),
        "p": target,
        "b": body_digest(body),
    }
    payload = _b64(orjson.dumps(claims))
    return f"{payload}.{_mac(key.secret, payload)}"


def verify_identity(
    header: str | None,
    key: IdentityKey,
    method: str,
    target: str,
    body: bytes,
    max_age: float,
    now: float | None = None,
) -> Identity:
    if not header or header.count(".") != 1:
        raise InvalidIdentity("missing or malformed identity")
    payload, signature = header.split(".")
    if not hmac.compare_digest(_mac(key.secret, payload), signature):
        raise InvalidIdentity("bad signature")
    try:
        claims = orjson.loads(_unb64(payload))
        issued_at = float(claims["t"])
        bound_to = (claims["aud"], claims["m"], claims["p"], claims["b"])
        ends_at = claims["e"]
        identity = Identity(
            role=Role(claims["r"]),
            user_id=UUID(claims["u"]) if claims["u"] else None,
            session_id=UUID(claims["s"]) if claims["s"] else None,
            client_address=claims["a"],
            session_ends_at=float(ends_at) if ends_at is not None else None,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidIdentity("unreadable identity") from exc
    if bound_to != (key.audience, method.upper(), target, body_digest(body)):
        raise InvalidIdentity("identity was issued for another service or request")
    current = now if now is not None else time.time()
    if abs(current - issued_at) > max_age:
        raise InvalidIdentity("identity expired")
    if (identity.role is Role.ANONYMOUS) != (identity.user_id is None):
        raise InvalidIdentity("inconsistent identity")
    return identity
