import uuid

import pytest

from shopkit.identity import (
    Identity,
    IdentityKey,
    InvalidIdentity,
    Role,
    sign_identity,
    verify_identity,
)

KEY = IdentityKey("orders", b"s" * 32)
USER = Identity(
    Role.USER, user_id=uuid.uuid4(), session_id=uuid.uuid4(), client_address="10.0.0.1",
    session_ends_at=2000.5,
)
TARGET = "/api/orders?status=placed"
BODY = b'{"a": 1}'


def _signed(now: float = 1000) -> str:
    return sign_identity(USER, KEY, "get", TARGET, BODY, now=now)


def test_a_signed_identity_verifies_to_itself() -> None:
    assert verify_identity(_signed(), KEY, "GET", TARGET, BODY, max_age=30, now=1010) == USER


def test_anonymous_identities_carry_no_user() -> None:
    anonymous = Identity(Role.ANONYMOUS, client_address="10.0.0.2")
    header = sign_identity(anonymous, KEY, "POST", "/api/users/login", b"{}", now=5)
    verified = verify_identity(header, KEY, "POST", "/api/users/login", b"{}", 30, now=5)
    assert verified == anonymous and not verified.is_authenticated


@pytest.mark.parametrize(
    ("key", "method", "target", "body", "now"),
    [
        (IdentityKey("orders", b"t" * 32), "GET", TARGET, BODY, 1000),  # another secret
        (IdentityKey("tracking", b"s" * 32), "GET", TARGET, BODY, 1000),  # another service
        (KEY, "POST", TARGET, BODY, 1000),  # another method
        (KEY, "GET", "/api/orders/1", BODY, 1000),  # another path
        (KEY, "GET", "/api/orders?status=shipped", BODY, 1000),  # another query
        (KEY, "GET", TARGET, b'{"a": 2}', 1000),  # another body
        (KEY, "GET", TARGET, BODY, 1031),  # too old
        (KEY, "GET", TARGET, BODY, 969),  # from the future
    ],
)
def test_an_identity_is_bound_to_its_service_request_body_and_time(
    key: IdentityKey, method: str, target: str, body: bytes, now: float
) -> None:
    with pytest.raises(InvalidIdentity):
        verify_identity(_signed(), key, method, target, body, max_age=30, now=now)


def test_tampering_with_the_payload_breaks_the_signature() -> None:
    signature = _signed().split(".")[1]
    admin = sign_identity(
        Identity(Role.ADMIN, user_id=USER.user_id), KEY, "GET", TARGET, BODY, now=1000
    )
    with pytest.raises(InvalidIdentity):
        verify_identity(
            f"{admin.split('.')[0]}.{signature}", KEY, "GET", TARGET, BODY, 30, now=1000
        )


@pytest.mark.parametrize("header", [None, "", "nodot", "a.b.c", "@@@.###"])
def test_malformed_headers_are_invalid(header: str | None) -> None:
    with pytest.raises(InvalidIdentity):
        verify_identity(header, KEY, "GET", "/", b"", max_age=30)
