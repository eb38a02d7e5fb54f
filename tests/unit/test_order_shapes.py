"""The shapes the orders statements write JSON from (orders.domain) name things as the
contract's events and the API's models do, and are written as shopkit.sqljson says."""

import pytest
from pydantic import BaseModel

from services.orders.addresses.domain import ADDRESS_FIELDS
from services.orders.addresses.routes import Address
from services.orders.orders import domain
from services.orders.orders.routes import HistoryEntry, Item
from shopkit.sqljson import json_object


def _api_names(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def test_the_event_shapes_are_the_contracts() -> None:
    assert list(domain.CREATED) == ["orderId", "userId", "status", "totalCents", "items",
                                    "version"]
    assert list(domain.STATUS_CHANGED) == ["orderId", "userId", "from", "to", "note",
                                           "version"]


def test_items_and_history_entries_are_written_as_the_api_reads_them() -> None:
    assert list(domain.ITEM) == _api_names(Item)
    assert list(domain.HISTORY_ENTRY) == _api_names(HistoryEntry)


def test_an_order_keeps_every_field_of_its_address_under_the_api_name() -> None:
    kept = set(_api_names(Address)) - {"isDefault", "createdAt"}
    assert set(domain.SHIPPING_ADDRESS) == kept
    assert set(domain.SHIPPING_ADDRESS.values()) == {"id", *ADDRESS_FIELDS}


def test_json_object_names_each_column_under_its_key() -> None:
    assert json_object("o", {"orderId": "id", "to": "status"}) == (
        "jsonb_build_object('orderId', o.id, 'to', o.status)"
    )


@pytest.mark.parametrize("bad", ["o'; DROP", "1o", "o.id", ""])
def test_json_object_takes_only_plain_names(bad: str) -> None:
    for row, shape in ((bad, {"k": "c"}), ("o", {bad: "c"}), ("o", {"k": bad})):
        with pytest.raises(ValueError):
            json_object(row, shape)
