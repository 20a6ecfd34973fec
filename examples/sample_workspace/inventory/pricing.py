"""Prices: volume discounts, tax and order totals."""

from __future__ import annotations

from inventory.models import Item

VAT_RATE = 0.2
# (minimum quantity, discount) from the largest tier down
VOLUME_TIERS = [(100, 0.15), (50, 0.10), (10, 0.05)]


def volume_discount(quantity: int) -> float:
    """The discount rate for ordering ``quantity`` units at once."""
    for minimum, rate in VOLUME_TIERS:
        if quantity >= minimum:
            return rate
    return 0.0


def with_tax(amount: float, rate: float = VAT_RATE) -> float:
    """``amount`` plus tax, rounded to cents."""
    return round(amount * (1 + rate), 2)


def order_total(item: Item, quantity: int) -> float:
    # FIXME: rounding per line and again on the total can be off by a cent on large orders.
    net = item.unit_price * quantity * (1 - volume_discount(quantity))
    return with_tax(round(net, 2))
