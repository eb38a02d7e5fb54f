"""Logs: one JSON object per line, with the request id, and never a token, password or secret."""

import io
import logging
from collections.abc import Iterator

import aiohttp
import orjson
import pytest

from shopkit.bootstrap import ServiceDatabase
from shopkit.logs import json_handler
from tests.conftest import unique_email
from tests.harness import IDENTITY_SECRETS, bearer, call, login, place_order, register


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = json_handler("test", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_logs_are_json_with_request_ids_and_keep_secrets_out(
    captured_logs: io.StringIO, client: aiohttp.ClientSession, admin_token: str,
    databases: dict[str, ServiceDatabase],
) -> None:
    email, password = unique_email(), "a very secret passphrase"
    await register(client, email, password=password)
    await call(client, "POST", "/api/users/login", None, {"email": email, "password": "wrong!"})
    token = await login(client, email, password=password)
    await call(client, "GET", "/api/users/me", token, **{"X-Request-Id": "trace-me-1"})
    order = await place_order(client, token, admin_token)
    await call(client, "POST", f"/api/admin/orders/{order['id']}/status", admin_token,
               {"status": "confirmed"})
    async with client.get("/api/users/me", headers=bearer("x" * 43)) as response:
        assert response.status == 401
    await call(client, "POST", "/api/users/logout", token)

    lines = [line for line in captured_logs.getvalue().splitlines() if line]
    records = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert len(records) > 10
    traced = [r for r in records if r.get("request_id") == "trace-me-1"]
    assert {r["component"] for r in traced} and any(r.get("path") == "/api/users/me"
                                                    for r in traced)
    assert all(r.get("request_id") for r in records if r.get("logger") == "shopkit.access")

    everything = captured_logs.getvalue()
    secrets = [token, admin_token, password, "wrong!", *IDENTITY_SECRETS.values()]
    secrets += [d.password for d in databases.values() if d.password]
    for secret in secrets:
        assert secret not in everything
    assert "Bearer" not in everything and "password_hash" not in everything


async def test_a_request_is_one_access_line_at_the_edge_and_more_only_at_debug(
    captured_logs: io.StringIO, client: aiohttp.ClientSession,
) -> None:
    email = unique_email()
    await register(client, email)
    token = await login(client, email)

    def access_lines(request_id: str) -> list[dict]:
        records = [orjson.loads(line) for line in captured_logs.getvalue().splitlines() if line]
        return [r for r in records
                if r.get("logger") == "shopkit.access" and r.get("request_id") == request_id]

    logging.getLogger().setLevel(logging.INFO)  # the fixture puts the level back
    await call(client, "GET", "/api/users/me", token, **{"X-Request-Id": "at-info"})
    logging.getLogger().setLevel(logging.DEBUG)
    await call(client, "GET", "/api/users/me", token, **{"X-Request-Id": "at-debug"})

    at_info = access_lines("at-info")
    assert len(at_info) == 1 and at_info[0]["level"] == "INFO", at_info
    assert at_info[0]["path"] == "/api/users/me" and at_info[0]["status"] == 200
    # At DEBUG the service behind the gateway adds its own line for the same request.
    assert sorted(r["level"] for r in access_lines("at-debug")) == ["DEBUG", "INFO"]
