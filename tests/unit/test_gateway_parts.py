"""The gateway's pieces that need no network: whose address a request comes from, and answers
reused for a short while."""

import asyncio

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.recent import Recent
from gateway.upstream import client_address
from shopkit.clients import client_bucket


def _request(*forwarded: str) -> object:
    headers = CIMultiDict(("X-Forwarded-For", line) for line in forwarded)
    return make_mocked_request("GET", "/", headers=headers)


@pytest.mark.parametrize(("lines", "trusted", "address"), [
    ((), 0, None),
    (("6.6.6.6",), 0, None),  # trusting nobody: the peer
    (("10.0.0.7",), 1, "10.0.0.7"),
    (("6.6.6.6, 10.0.0.7",), 1, "10.0.0.7"),
    (("6.6.6.6", "10.0.0.7"), 1, "10.0.0.7"),  # a line the client wrote before the proxy's
    (("6.6.6.6", "10.0.0.7, 10.0.0.1"), 2, "10.0.0.7"),
    (("10.0.0.7",), 2, "10.0.0.7"),  # fewer entries than proxies: the outermost there is
    (("2001:db8::1",), 1, "2001:db8::1"),
    # What proxies write besides a bare address: ports, brackets.
    (("192.0.2.7:4431",), 1, "192.0.2.7"),
    (("[2001:db8::1]:443",), 1, "2001:db8::1"),
    (("[2001:db8::1]",), 1, "2001:db8::1"),
    # Not an address: kept as written, so each client stays apart from the others.
    (("unknown",), 1, "unknown"),
    (("_hidden",), 1, "_hidden"),
])
def test_the_client_address_is_read_from_the_right(
    lines: tuple[str, ...], trusted: int, address: str | None
) -> None:
    request = _request(*lines)
    expected = address if address is not None else (request.remote or "unknown")
    assert client_address(request, trusted) == expected


@pytest.mark.parametrize(("address", "bucket"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),  # the same host's /64: one client
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("unknown", "unknown"),
])
def test_limits_count_an_ipv6_client_by_its_64(address: str, bucket: str) -> None:
    assert client_bucket(address) == bucket


async def test_an_answer_is_made_once_per_period_and_shared() -> None:
    made = 0
    now = [0.0]

    async def make() -> int:
        nonlocal made
        made += 1
        await asyncio.sleep(0)
        return made

    recent = Recent(make, max_age=1.0, clock=lambda: now[0])
    assert await asyncio.gather(*(recent.get() for _ in range(10))) == [1] * 10
    now[0] = 0.9
    assert await recent.get() == 1
    now[0] = 2.0
    assert await recent.get() == 2


async def test_a_failure_is_shared_like_an_answer() -> None:
    calls = 0
    now = [0.0]

    async def fail() -> int:
        nonlocal calls
        calls += 1
        raise RuntimeError("down")

    recent = Recent(fail, max_age=1.0, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await recent.get()
    assert calls == 1
    now[0] = 5.0
    with pytest.raises(RuntimeError):
        await recent.get()
    assert calls == 2


async def test_the_upstream_session_keeps_no_cookie_one_client_could_pass_to_another() -> None:
    from gateway.app import _client
    from tests.harness import gateway_settings

    settings = gateway_settings({name: "http://127.0.0.1:9" for name in
                                 ("auth", "orders", "tracking", "notifications")})
    session = _client(4, settings)
    try:
        session.cookie_jar.update_cookies({"session": "a client's"})
        assert len(session.cookie_jar) == 0
    finally:
        await session.close()
