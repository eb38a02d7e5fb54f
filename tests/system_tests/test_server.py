"""The server the real processes run (shopkit/runner.py), not the test servers of the
integration tests: what only it can show."""

import aiohttp
import pytest

from tests.processes import LaunchedSystem

pytestmark = pytest.mark.system


async def test_requests_the_parser_refuses_are_400_in_the_envelope_from_the_real_processes(
    launched: LaunchedSystem,
) -> None:
    async with aiohttp.ClientSession() as client:
        for url in (launched.gateway_url, launched.url("orders")):
            async with client.get(
                f"{url}/api/products", headers={"X-Big": "a" * 9000}
            ) as response:
                assert response.status == 400
                assert response.content_type == "application/json"
                body = await response.json()
            assert body["success"] is False and body["code"] == "bad_request", body
            assert body["requestId"]
