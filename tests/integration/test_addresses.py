"""Addresses: CRUD, exactly one default per user (also under concurrency), others' are 404."""

import asyncio

import aiohttp
import asyncpg

from tests.conftest import unique_email
from tests.harness import address_payload, call, create_address, login, register, walk_pages


async def _defaults(client: aiohttp.ClientSession, token: str) -> list[str]:
    status, body = await call(client, "GET", "/api/addresses?limit=100", token)
    assert status == 200
    return [a["id"] for a in body["data"]["items"] if a["isDefault"]]


async def test_the_first_address_is_default_and_the_default_can_move(
    client: aiohttp.ClientSession, user_token: str
) -> None:
    first = await create_address(client, user_token, label="First")
    assert first["isDefault"] is True
    assert set(first) == {
        "id", "label", "recipient", "line1", "line2", "city", "postalCode", "country", "phone",
        "isDefault", "createdAt",
    }
    second = await create_address(client, user_token, label="Second")
    assert second["isDefault"] is False
    assert await _defaults(client, user_token) == [first["id"]]

    third = await create_address(client, user_token, label="Third", isDefault=True)
    assert third["isDefault"] is True
    assert await _defaults(client, user_token) == [third["id"]]

    status, body = await call(client, "POST", f"/api/addresses/{second['id']}/default", user_token)
    assert status == 200 and body["data"]["isDefault"] is True
    assert await _defaults(client, user_token) == [second["id"]]

    status, body = await call(
        client, "PUT", f"/api/addresses/{first['id']}", user_token,
        address_payload(label="First again", isDefault=True),
    )
    assert status == 200 and body["data"]["label"] == "First again"
    assert await _defaults(client, user_token) == [first["id"]]

    # isDefault false on the default cannot leave the user without one.
    status, body = await call(
        client, "PUT", f"/api/addresses/{first['id']}", user_token,
        address_payload(isDefault=False),
    )
    assert status == 200 and body["data"]["isDefault"] is True


async def test_deleting_the_default_promotes_the_newest_remaining(
    client: aiohttp.ClientSession, user_token: str
) -> None:
    oldest = await create_address(client, user_token, label="Oldest")
    middle = await create_address(client, user_token, label="Middle")
    newest = await create_address(client, user_token, label="Newest")
    status, _ = await call(client, "DELETE", f"/api/addresses/{middle['id']}", user_token)
    assert status == 200
    assert await _defaults(client, user_token) == [oldest["id"]]

    status, _ = await call(client, "DELETE", f"/api/addresses/{oldest['id']}", user_token)
    assert status == 200
    assert await _defaults(client, user_token) == [newest["id"]]

    status, _ = await call(client, "DELETE", f"/api/addresses/{newest['id']}", user_token)
    assert status == 200
    assert await _defaults(client, user_token) == []
    status, _ = await call(client, "GET", f"/api/addresses/{newest['id']}", user_token)
    assert status == 404


async def test_parallel_default_changes_leave_exactly_one_default(
    client: aiohttp.ClientSession, user_token: str, admin_db: asyncpg.Pool
) -> None:
    addresses = [await create_address(client, user_token, label=f"A{i}") for i in range(6)]
    calls = [
        call(client, "POST", f"/api/addresses/{addresses[i % 6]['id']}/default", user_token)
        for i in range(24)
    ]
    calls += [
        call(client, "POST", "/api/addresses", user_token, address_payload(isDefault=True))
        for _ in range(4)
    ]
    calls += [
        call(client, "PUT", f"/api/addresses/{addresses[i]['id']}", user_token,
             address_payload(isDefault=True))
        for i in range(4)
    ]
    results = await asyncio.gather(*calls)
    assert sorted({status for status, _ in results}) == [200, 201]
    assert len(await _defaults(client, user_token)) == 1

    # And concurrent deletions of whichever is default still leave one behind.
    listing = (await call(client, "GET", "/api/addresses?limit=100", user_token))[1]["data"]
    survivors = listing["items"]
    doomed = survivors[: len(survivors) - 3]
    # The default must be among the deleted, so the promotion itself runs under concurrency.
    await call(client, "POST", f"/api/addresses/{doomed[0]['id']}/default", user_token)
    await asyncio.gather(
        *(call(client, "DELETE", f"/api/addresses/{a['id']}", user_token) for a in doomed)
    )
    assert len(await _defaults(client, user_token)) == 1
    user_id = await admin_db.fetchval(
        "SELECT user_id FROM orders.addresses WHERE id = $1", survivors[-1]["id"]
    )
    per_user = await admin_db.fetchval(
        "SELECT count(*) FILTER (WHERE is_default) FROM orders.addresses WHERE user_id = $1",
        user_id,
    )
    assert per_user == 1


async def test_invalid_addresses_are_422_and_create_nothing(
    client: aiohttp.ClientSession, user_token: str
) -> None:
    cases = {
        "country": address_payload(country="XX"),
        "recipient": address_payload(recipient="  "),
        "postalCode": address_payload(postalCode="1" * 21),
        "phone": address_payload(phone="call me"),
        "line1": {k: v for k, v in address_payload().items() if k != "line1"},
    }
    for field, payload in cases.items():
        status, body = await call(client, "POST", "/api/addresses", user_token, payload)
        assert status == 422, field
        assert body["code"] == "validation_error"
        assert [d["field"] for d in body["details"]] == [field]
    status, body = await call(client, "GET", "/api/addresses", user_token)
    assert body["data"] == {"items": [], "nextCursor": None}

    lower = await create_address(client, user_token, country="de")
    assert lower["country"] == "DE"


async def test_addresses_page_with_a_cursor(
    client: aiohttp.ClientSession, user_token: str
) -> None:
    created = [await create_address(client, user_token, label=f"P{i}") for i in range(5)]
    seen = [a["id"] for a in await walk_pages(client, "/api/addresses", user_token)]
    assert seen == [a["id"] for a in reversed(created)]
    for bad in ("limit=0", "limit=101", "limit=x", "cursor=%%%", "cursor=WzEsMiwzXQ"):
        status, body = await call(client, "GET", f"/api/addresses?{bad}", user_token)
        assert status == 422 and body["details"][0]["field"] in ("limit", "cursor"), bad


async def test_another_users_address_is_404_everywhere(
    client: aiohttp.ClientSession, user_token: str, admin_token: str
) -> None:
    owner = unique_email()
    await register(client, owner)
    owner_token = await login(client, owner)
    theirs = await create_address(client, owner_token)
    path = f"/api/addresses/{theirs['id']}"
    for method, suffix, payload in [
        ("GET", "", None),
        ("PUT", "", address_payload(isDefault=True)),
        ("POST", "/default", None),
        ("DELETE", "", None),
    ]:
        status, body = await call(client, method, path + suffix, user_token, payload)
        assert status == 404 and body["code"] == "not_found", method
    status, _ = await call(client, "GET", path, owner_token)
    assert status == 200
    status, _ = await call(client, "GET", "/api/addresses/not-a-uuid", user_token)
    assert status == 404
