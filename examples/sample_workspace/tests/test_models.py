import pytest

from inventory.models import Item


def test_value_is_quantity_times_price():
    assert Item("A-1", "Widget", "tools", quantity=4, unit_price=2.5).value == 10.0


def test_low_stock_below_threshold():
    assert Item("A-1", "Widget", "tools", quantity=2).low_stock
    assert not Item("A-1", "Widget", "tools", quantity=50).low_stock


@pytest.mark.parametrize("field", [{"sku": ""}, {"quantity": -1}, {"unit_price": -0.5}])
def test_invalid_items_are_refused(field):
    data = {"sku": "A-1", "name": "Widget", "category": "tools", **field}
    with pytest.raises(ValueError):
        Item(**data)


def test_round_trip_through_dict():
    item = Item("B-2", "Bolt", "hardware", quantity=7, unit_price=0.1)
    assert Item.from_dict(item.to_dict()) == item
