"""The front end in a real browser: Debian's Chromium (scripts/ensure-browser), driven by
Playwright for Python with the system's browser, against the test system's gateway.

Screenshots of the main pages are taken on the way; `make screenshots` keeps them in
docs/screenshots (SHOP_SCREENSHOTS names the folder), otherwise they go to a temporary one.
"""

import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.conftest import admin_token_for
from tests.harness import System, call, register

PASSWORD = "correct horse battery"
# Answers the page waits for (the shop's own latency plus a browser's), never a fixed sleep.
expect.set_options(timeout=15_000)


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "the browser tests need Debian's chromium: scripts/ensure-browser installs it"
    return found


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path())
        yield launched
        await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A browser profile of its own: its own storage, so its own session."""
    opened = await browser.new_context(viewport={"width": 1100, "height": 900})
    yield opened
    await opened.close()


@pytest.fixture
async def second_context(browser: Browser) -> AsyncIterator[BrowserContext]:
    opened = await browser.new_context(viewport={"width": 1100, "height": 900})
    yield opened
    await opened.close()


@pytest.fixture
async def browser_phone(browser: Browser) -> AsyncIterator[Page]:
    """A page on a phone-sized screen."""
    opened = await browser.new_context(viewport={"width": 375, "height": 667}, is_mobile=True,
                                       has_touch=True)
    yield await opened.new_page()
    await opened.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("SHOP_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def shoot(page: Page, folder: Path, name: str) -> None:
    await page.screenshot(path=folder / f"{name}.png", full_page=True)


def new_email() -> str:
    return f"shopper-{secrets.token_hex(5)}@example.com"


async def shopper_account(system: System) -> str:
    """A registered shopper's email (password PASSWORD)."""
    email = new_email()
    async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
        await register(client, email, password=PASSWORD, name="Robin Shopper")
    return email


async def admin_account(system: System, admin_db: asyncpg.Pool) -> tuple[str, str]:
    """An admin's email and password, for the admin login page, and a token of theirs."""
    async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
        email = new_email()
        await register(client, email, password=PASSWORD, name="Alex Admin")
        await admin_db.execute("UPDATE auth.users SET role = 'admin' WHERE email = $1", email)
    return email, await admin_token_for(system.gateway_url, admin_db)


async def product(system: System, admin_token: str, name: str, stock: int,
                  price_cents: int = 1999) -> dict[str, Any]:
    """A product whose SKU sorts first, so it is on the catalogue's first page."""
    async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
        status, body = await call(client, "POST", "/api/admin/products", admin_token, {
            "sku": f"00-{secrets.token_hex(4)}", "name": name, "priceCents": price_cents,
            "stock": stock,
        })
    assert status == 201, body
    return body["data"]


async def sign_in(page: Page, base_url: str, email: str, *, staff: bool = False) -> None:
    await page.goto(f"{base_url}/#/{'admin/' if staff else ''}signin")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def add_to_cart(page: Page, name: str, quantity: int = 1) -> None:
    await page.goto(page.url.split("#")[0] + "#/")
    card = page.get_by_role("listitem").filter(has=page.get_by_role("heading", name=name))
    await card.get_by_label("Quantity").fill(str(quantity))
    await card.get_by_role("button", name="Add to cart").click()


async def add_address(page: Page, label: str = "Home") -> None:
    await page.get_by_role("link", name="Addresses").click()
    form = page.get_by_role("form", name="Add an address")
    await form.get_by_label("Label").fill(label)
    await form.get_by_label("Recipient").fill("Robin Shopper")
    await form.get_by_label("Address line 1").fill("1 Long Street")
    await form.get_by_label("City").fill("Springfield")
    await form.get_by_label("Postal code").fill("12345")
    await form.get_by_label("Country").fill("US")
    await form.get_by_role("button", name="Save address").click()
    await expect(page.get_by_role("list", name="Addresses")).to_contain_text("1 Long Street")
