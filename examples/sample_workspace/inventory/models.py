"""The item model and its validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass

LOW_STOCK_THRESHOLD = 5


@dataclass
class Item:
    """One stock-keeping unit: what it is, how many we hold and what one costs."""

    sku: str
    name: str
    category: str
    quantity: int = 0
    unit_price: float = 0.0

    def __post_init__(self) -> None:
        if not self.sku:
            raise ValueError("sku must not be empty")
        if self.quantity < 0:
            raise ValueError(f"quantity of {self.sku} cannot be negative")
        if self.unit_price < 0:
            raise ValueError(f"unit_price of {self.sku} cannot be negative")

    @property
    def value(self) -> float:
        """Stock value of this item: quantity times unit price."""
        return self.quantity * self.unit_price

    @property
    def low_stock(self) -> bool:
        """Whether the item should be reordered soon."""
        return self.quantity < LOW_STOCK_THRESHOLD

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Item:
        """Build an item from a dict as written by :meth:`to_dict`."""
        return cls(
            sku=data["sku"],
            name=data["name"],
            category=data.get("category", "misc"),
            quantity=int(data.get("quantity", 0)),
            unit_price=float(data.get("unit_price", 0.0)),
        )
