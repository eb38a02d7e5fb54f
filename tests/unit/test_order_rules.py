"""The order status rules that the status-change statement is given."""

from services.orders.orders.domain import OrderStatus, gives_stock_back, reachable_from

S = OrderStatus


def test_an_order_is_cancelled_only_from_placed_or_confirmed() -> None:
    assert reachable_from(S.CANCELLED) == [S.PLACED, S.CONFIRMED]


def test_an_order_moves_forward_from_every_earlier_status_and_never_back() -> None:
    assert reachable_from(S.SHIPPED) == [S.PLACED, S.CONFIRMED]
    assert reachable_from(S.DELIVERED) == [
        S.PLACED, S.CONFIRMED, S.SHIPPED, S.IN_TRANSIT, S.OUT_FOR_DELIVERY
    ]
    assert reachable_from(S.PLACED) == []


def test_only_a_cancellation_gives_stock_back() -> None:
    assert [s for s in OrderStatus if gives_stock_back(s)] == [S.CANCELLED]
