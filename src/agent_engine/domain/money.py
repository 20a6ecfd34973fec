"""Money is exact: ``Decimal`` at nine decimal places, as the database stores it."""

from __future__ import annotations

from decimal import Decimal

MONEY_SCALE = 9
_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)


def quantize_money(value: Decimal) -> Decimal:
    """Money to the stored scale (9 decimal places)."""
    return value.quantize(_QUANTUM)
