import pytest

from inventory import Item, Store


@pytest.fixture
def store():
    s = Store()
    s.add(Item("B-2", "Bolt", "hardware", quantity=10, unit_price=0.1))
    s.add(Item("A-1", "Widget", "tools", quantity=3, unit_price=2.5))
    return s


def test_items_are_sorted_by_sku(store):
    assert [item.sku for item in store.items()] == ["A-1", "B-2"]


def test_duplicate_sku_is_refused(store):
    with pytest.raises(KeyError):
        store.add(Item("A-1", "Other", "tools"))


def test_receive_and_ship_move_stock(store):
    assert store.receive("A-1", 5) == 8
    assert store.ship("A-1", 8) == 0
    with pytest.raises(ValueError):
        store.ship("A-1", 1)


def test_save_and_load_round_trip(store, tmp_path):
    path = tmp_path / "inventory.json"
    store.save(path)
    assert Store.load(path).items() == store.items()
