import pytest

from gateway.routes import Access, match_route

U = "3f2b8c1e-2d1a-4c55-9f0e-7a1b2c3d4e5f"


@pytest.mark.parametrize(
    ("path", "service", "access"),
    [
        ("/api/users/register", "auth", Access.PUBLIC),
        ("/api/users/login", "auth", Access.PUBLIC),
        ("/api/admin/login", "auth", Access.PUBLIC),
        ("/api/users/me", "auth", Access.USER),
        ("/api/users/logout-all", "auth", Access.USER),
        (f"/api/users/sessions/{U}", "auth", Access.USER),
        ("/api/products", "orders", Access.PUBLIC),
        (f"/api/products/{U}", "orders", Access.PUBLIC),
        ("/api/addresses", "orders", Access.USER),
        (f"/api/addresses/{U}/default", "orders", Access.USER),
        ("/api/orders", "orders", Access.USER),
        (f"/api/orders/{U}/cancel", "orders", Access.USER),
        (f"/api/orders/{U}/tracking", "tracking", Access.USER),
        ("/api/admin/products", "orders", Access.ADMIN),
        (f"/api/admin/products/{U}/stock", "orders", Access.ADMIN),
        ("/api/admin/orders", "orders", Access.ADMIN),
        (f"/api/admin/orders/{U}/status", "orders", Access.ADMIN),
        (f"/api/admin/orders/{U}/tracking", "tracking", Access.ADMIN),
        ("/api/admin/unknown", None, Access.ADMIN),
        ("/api/notifications", "notifications", Access.USER),
        (f"/api/notifications/{U}/read", "notifications", Access.USER),
        ("/api/notifications/read-all", "notifications", Access.USER),
        ("/api/notifications/stream", "notifications", Access.USER),
    ],
)
def test_every_contract_route_has_its_service_and_access(
    path: str, service: str | None, access: Access
) -> None:
    route = match_route(path)
    assert route is not None
    assert (route.service, route.access) == (service, access)


def test_only_the_stream_is_streamed() -> None:
    assert match_route("/api/notifications/stream").streaming  # type: ignore[union-attr]
    assert not match_route("/api/notifications").streaming  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "path",
    [
        "/api/products/../users/me",
        "/api/products/%2e%2e/users/me",
        "/api/products/x%2Fy",
        "/api/./users/me",
        "/internal/sessions/validate",
        "/health/ready",
        "/api/userss",
    ],
)
def test_ambiguous_internal_and_unknown_paths_match_nothing(path: str) -> None:
    assert match_route(path) is None
