"""An in-memory store of items that can be saved to and loaded from a JSON file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from inventory.models import Item


class Store:
    """Items by SKU, with stock movements that never go below zero."""

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}

    def add(self, item: Item) -> None:
        """Add a new item; adding a SKU twice is an error."""
        if item.sku in self._items:
            raise KeyError(f"duplicate sku {item.sku}")
        self._items[item.sku] = item

    def get(self, sku: str) -> Item:
        return self._items[sku]

    def remove(self, sku: str) -> Item:
        """Remove an item and return it."""
        return self._items.pop(sku)

    def items(self) -> list[Item]:
        """All items, sorted by SKU."""
        return [self._items[sku] for sku in sorted(self._items)]

    def receive(self, sku: str, quantity: int) -> int:
        """Book incoming stock and return the new quantity."""
        if quantity <= 0:
            raise ValueError("received quantity must be positive")
        item = self._items[sku]
        item.quantity += quantity
        return item.quantity

    def ship(self, sku: str, quantity: int) -> int:
        """Book outgoing stock and return the new quantity."""
        item = self._items[sku]
        # TODO: support back-orders instead of refusing the shipment outright.
        if quantity > item.quantity:
            raise ValueError(f"only {item.quantity} of {sku} in stock")
        item.quantity -= quantity
        return item.quantity

    def save(self, path: Path) -> None:
        """Write every item to ``path`` as JSON."""
        payload = [item.to_dict() for item in self.items()]
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Store:
        """Read a store written by :meth:`save`."""
        store = cls()
        for row in json.loads(path.read_text(encoding="utf-8")):
            store.add(Item.from_dict(row))
        return store
