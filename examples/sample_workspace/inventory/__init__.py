"""Stock keeping: items, a JSON-backed store, pricing and reports."""

from inventory.models import Item, LOW_STOCK_THRESHOLD
from inventory.store import Store

__all__ = ["Item", "LOW_STOCK_THRESHOLD", "Store"]
__version__ = "0.3.0"
