"""The front end as people use it, in Chromium: a shopper and an admin at once, a double
click, an error in words, a revoked session, a stream that survives a restart."""

import re
from pathlib import Path

import aiohttp
import asyncpg
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import (
    PASSWORD,
    add_address,
    add_to_cart,
    admin_account,
    new_email,
    product,
    shoot,
    shopper_account,
    sign_in,
)
from tests.harness import System, call, login, walk_pages

SHELF = (("Oak side table", 8900), ("Wool throw", 5400), ("Stoneware vase", 2900),
         ("Brass candle holder", 1900), ("Cotton cushion", 2400), ("Reading chair", 24900))


async def orders_of(system: System, email: str) -> list[dict]:
    async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
        token = await login(client, email, password=PASSWORD)
        return await walk_pages(client, "/api/orders", token)


async def place_through_the_page(page: Page) -> str:
    """Places the cart's order; returns the order's id from the page it lands on."""
    await page.get_by_role("link", name="Cart").click()
    await page.get_by_role("button", name="Place order").click()
    await expect(page).to_have_url(re.compile(r"#/orders/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


async def test_a_shopper_sees_the_admins_changes_live(
    system: System, admin_db: asyncpg.Pool, context: BrowserContext,
    second_context: BrowserContext, screenshots: Path,
) -> None:
    base = system.gateway_url
    admin_email, admin_token = await admin_account(system, admin_db)
    await product(system, admin_token, "Walnut desk lamp", stock=20, price_cents=4500)
    await product(system, admin_token, "Linen lamp shade", stock=20, price_cents=1250)
    for name, price in SHELF:  # a fuller first page, for the screenshot
        await product(system, admin_token, name, stock=12, price_cents=price)

    shopper = await context.new_page()
    await shopper.goto(f"{base}/#/signup")
    await shopper.get_by_label("Name").fill("Robin Shopper")
    await shopper.get_by_label("Email").fill(new_email())
    await shopper.get_by_label("Password").fill(PASSWORD)
    await shopper.get_by_role("button", name="Create account").click()
    await expect(shopper.get_by_role("button", name="Sign out")).to_be_visible()
    await add_address(shopper)
    await shoot(shopper, screenshots, "addresses")
    await add_to_cart(shopper, "Walnut desk lamp", 1)
    await add_to_cart(shopper, "Linen lamp shade", 2)
    await expect(shopper.get_by_test_id("cart-count")).to_have_text("3")
    await shoot(shopper, screenshots, "products")
    await shopper.get_by_role("link", name="Cart").click()
    await expect(shopper.get_by_role("button", name="Place order")).to_be_visible()
    await shoot(shopper, screenshots, "cart")
    order_id = await place_through_the_page(shopper)
    await expect(shopper.get_by_test_id("order-status")).to_have_text("placed")
    await expect(shopper.get_by_role("list", name="Delivery timeline")).to_be_visible()
    await shopper.evaluate("window.notReloaded = true")

    admin = await second_context.new_page()
    await sign_in(admin, base, admin_email, staff=True)
    await admin.goto(f"{base}/#/admin/orders/{order_id}")
    await admin.get_by_label("New status").select_option("shipped")
    await admin.get_by_role("button", name="Move").click()
    await expect(admin.get_by_test_id("order-status")).to_have_text("shipped")
    await admin.get_by_label("Carrier").fill("Parcel Co")
    await admin.get_by_label("Checkpoint: location").fill("Leipzig hub")
    await admin.get_by_label("Checkpoint: note").fill("Sorted")
    await admin.get_by_role("button", name="Save delivery details").click()
    await expect(admin.get_by_role("list", name="Delivery timeline")).to_contain_text("Leipzig hub")
    await shoot(admin, screenshots, "admin-order")

    timeline = shopper.get_by_role("list", name="Delivery timeline")
    await expect(shopper.get_by_test_id("order-status")).to_have_text("shipped")
    await expect(timeline).to_contain_text("shipped")
    await expect(timeline).to_contain_text("Leipzig hub")
    await expect(shopper.get_by_text("Parcel Co")).to_be_visible()
    assert await shopper.evaluate("window.notReloaded") is True
    await expect(shopper.get_by_test_id("unread-count")).to_contain_text(re.compile(r"[1-9]"))
    await shoot(shopper, screenshots, "order")

    await admin.get_by_role("link", name="Operations").click()
    await expect(admin.get_by_role("table", name="Components")).to_contain_text("ready")
    await shoot(admin, screenshots, "operations")


async def test_a_double_click_orders_once(
    system: System, admin_token: str, context: BrowserContext
) -> None:
    await product(system, admin_token, "Double-click kettle", stock=10)
    email = await shopper_account(system)
    page = await context.new_page()
    await sign_in(page, system.gateway_url, email)
    await add_address(page)
    await add_to_cart(page, "Double-click kettle")
    await page.get_by_role("link", name="Cart").click()
    await page.get_by_role("button", name="Place order").dblclick()
    await expect(page).to_have_url(re.compile(r"#/orders/[0-9a-f-]{36}$"))
    assert len(await orders_of(system, email)) == 1


async def test_out_of_stock_is_said_in_words(
    system: System, admin_token: str, context: BrowserContext, screenshots: Path
) -> None:
    scarce = await product(system, admin_token, "Last teapot", stock=1)
    email = await shopper_account(system)
    page = await context.new_page()
    await sign_in(page, system.gateway_url, email)
    await add_address(page)
    await add_to_cart(page, "Last teapot", 2)
    await page.get_by_role("link", name="Cart").click()
    await page.get_by_role("button", name="Place order").click()
    alert = page.get_by_role("form", name="Place your order").get_by_role("alert")
    await expect(alert).to_contain_text(f"Not enough stock for: {scarce['sku']}.")
    await expect(alert).to_contain_text(f"{scarce['sku']}: you asked for 2, 1 left.")
    await shoot(page, screenshots, "out-of-stock")
    assert await orders_of(system, email) == []


async def test_a_revoked_session_is_sent_to_sign_in(
    system: System, context: BrowserContext, second_context: BrowserContext, screenshots: Path
) -> None:
    email = await shopper_account(system)
    first = await context.new_page()
    await sign_in(first, system.gateway_url, email)
    await first.get_by_role("link", name="Orders").click()
    await expect(first.locator("#live-state")).to_have_text("Live")

    second = await second_context.new_page()
    await sign_in(second, system.gateway_url, email)
    await second.get_by_role("link", name="Account").click()
    sessions = second.get_by_role("list", name="Sessions")
    await expect(sessions.get_by_role("listitem")).to_have_count(2)
    await shoot(second, screenshots, "account")
    await sessions.get_by_role("button", name=re.compile("^Revoke session")).click()
    await expect(sessions.get_by_role("listitem")).to_have_count(1)

    await expect(first).to_have_url(re.compile(r"#/signin$"))
    await expect(first.get_by_role("status").filter(has_text="session has ended")).to_be_visible()
    await expect(first.get_by_role("button", name="Sign in")).to_be_visible()


async def move(system: System, admin_token: str, order_id: str, status: str) -> None:
    async with aiohttp.ClientSession(base_url=system.gateway_url) as client:
        answer, body = await call(client, "POST", f"/api/admin/orders/{order_id}/status",
                                  admin_token, {"status": status})
    assert answer == 200, body


async def test_the_stream_recovers_after_notifications_restarts(
    system: System, admin_token: str, context: BrowserContext, screenshots: Path
) -> None:
    email = await shopper_account(system)
    page = await context.new_page()
    await sign_in(page, system.gateway_url, email)
    await add_address(page)
    await product(system, admin_token, "Restart-proof mug", stock=5)
    await add_to_cart(page, "Restart-proof mug")
    order_id = await place_through_the_page(page)
    await page.get_by_role("link", name="Notifications").click()
    notices = page.get_by_role("list", name="Notifications")
    await expect(page.locator("#live-state")).to_have_text("Live")
    await page.evaluate("window.notReloaded = true")
    await move(system, admin_token, order_id, "confirmed")
    await expect(notices).to_contain_text("Your order is confirmed")

    await system.stop("notifications")
    await expect(page.locator("#live-state")).to_have_text("Reconnecting…")
    await move(system, admin_token, order_id, "shipped")
    await system.start("notifications")

    await expect(page.locator("#live-state")).to_have_text("Live")
    await expect(notices).to_contain_text("Your order has shipped")
    await expect(page.get_by_test_id("unread-count")).to_contain_text("2")
    assert await page.evaluate("window.notReloaded") is True
    await shoot(page, screenshots, "notifications")


async def test_every_control_has_a_name_and_fits_a_phone(
    system: System, admin_token: str, browser_phone: Page, screenshots: Path
) -> None:
    email = await shopper_account(system)
    page = browser_phone
    await sign_in(page, system.gateway_url, email)
    for path in ("#/", "#/cart", "#/orders", "#/addresses", "#/notifications", "#/account"):
        await page.goto(f"{system.gateway_url}/{path}")
        await expect(page.get_by_role("heading", level=1)).to_be_visible()
        unnamed = await page.evaluate("""() => [...document.querySelectorAll(
            'input, select, textarea, button, a[href]')].filter((el) => {
              const labelled = el.labels && el.labels.length > 0;
              const named = (el.getAttribute('aria-label') || el.textContent || '').trim();
              return !labelled && !named;
            }).map((el) => el.outerHTML)""")
        assert unnamed == [], (path, unnamed)
        overflow = await page.evaluate(
            "() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
        if path == "#/":
            await shoot(page, screenshots, "phone")


async def test_the_keyboard_reaches_the_page_with_a_visible_focus(
    system: System, context: BrowserContext
) -> None:
    page = await context.new_page()
    await page.goto(f"{system.gateway_url}/#/signin")
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    # A page's heading takes the focus when it opens, so the next Tab is the form's first field.
    await page.keyboard.press("Tab")
    focused = await page.evaluate("""() => {
        const el = document.activeElement, style = getComputedStyle(el);
        return {name: el.name, outline: style.outlineStyle, width: style.outlineWidth};
    }""")
    assert focused["name"] == "email"
    assert focused["outline"] != "none" and focused["width"] != "0px", focused
    await page.keyboard.type("nobody@example.com")
    await page.keyboard.press("Tab")
    await page.keyboard.type("wrong password")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("alert")).to_contain_text("password")



async def test_the_api_docs_run_under_their_policy(system: System, context: BrowserContext) -> None:
    """Swagger UI, on the front end's origin, runs with no inline script and nothing blocked."""
    page = await context.new_page()
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text)
            if "Content Security Policy" in message.text else None)
    await page.goto(f"{system.gateway_url}/api/docs")
    await expect(page.get_by_text("/api/products/{product_id}").first).to_be_visible()
    assert blocked == []
