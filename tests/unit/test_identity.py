import uuid

import pytest

from shopkit.identity import Identity, InvalidIdentity, Role, sign_identity, verify_identity

SECRET = b"s" * 32
USER = Identity(Role.USER, user_id=uuid.uuid4(), session_id=uuid.uuid4(), client_address="10.0.0.1")


def test_a_signed_identity_verifies_to_itself() -> None:
    header = sign_identity(USER, SECRET, "get", "/api/orders", now=1000)
    assert verify_identity(header, SECRET, "GET", "/api/orders", max_age=30, now=1010) == USER


def test_anonymous_identities_carry_no_user() -> None:
    anonymous = Identity(Role.ANONYMOUS, client_address="10.0.0.2")
    header = sign_identity(anonymous, SECRET, "POST", "/api/users/login", now=5)
    verified = verify_identity(header, SECRET, "POST", "/api/users/login", max_age=30, now=5)
    assert verified == anonymous and not verified.is_authenticated


@pytest.mark.parametrize(
    ("secret", "method", "path", "now"),
    [
        (b"t" * 32, "GET", "/api/orders", 1000),  # another secret
        (SECRET, "POST", "/api/orders", 1000),  # another method
        (SECRET, "GET", "/api/orders/1", 1000),  # another path
        (SECRET, "GET", "/api/orders", 1031),  # too old
        (SECRET, "GET", "/api/orders", 969),  # from the future
    ],
)
def test_an_identity_is_bound_to_secret_request_and_time(
    secret: bytes, method: str, path: str, now: float
) -> None:
    header = sign_identity(USER, SECRET, "GET", "/api/orders", now=1000)
    with pytest.raises(InvalidIdentity):
        verify_identity(header, secret, method, path, max_age=30, now=now)


def test_tampering_with_the_payload_breaks_the_signature() -> None:
    header = sign_identity(USER, SECRET, "GET", "/api/orders", now=1000)
    signature = header.split(".")[1]
    admin = sign_identity(
        Identity(Role.ADMIN, user_id=USER.user_id), SECRET, "GET", "/api/orders", now=1000
    )
    with pytest.raises(InvalidIdentity):
        verify_identity(
            f"{admin.split('.')[0]}.{signature}", SECRET, "GET", "/api/orders", 30, now=1000
        )


@pytest.mark.parametrize("header", [None, "", "nodot", "a.b.c", "@@@.###"])
def test_malformed_headers_are_invalid(header: str | None) -> None:
    with pytest.raises(InvalidIdentity):
        verify_identity(header, SECRET, "GET", "/", max_age=30)
