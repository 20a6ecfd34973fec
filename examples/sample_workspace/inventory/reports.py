"""Plain-text stock reports."""

from __future__ import annotations

from inventory.models import LOW_STOCK_THRESHOLD, Item


def build_report(items: list[Item], title: str = "Stock report", show_empty: bool = True) -> str:
    """The full stock report: items grouped by category, totals and warnings."""
    lines = []
    lines.append(title)
    lines.append("=" * len(title))
    lines.append("")
    if not items:
        lines.append("(no items)")
        return "\n".join(lines) + "\n"
    categories = {}
    for item in items:
        if item.category not in categories:
            categories[item.category] = []
        categories[item.category].append(item)
    total_value = 0.0
    total_units = 0
    low = []
    empty = []
    for category in sorted(categories):
        lines.append(f"[{category}]")
        category_value = 0.0
        category_units = 0
        for item in sorted(categories[category], key=lambda i: i.sku):
            if item.quantity == 0 and not show_empty:
                continue
            value = item.quantity * item.unit_price
            category_value += value
            category_units += item.quantity
            marker = ""
            if item.quantity == 0:
                marker = " (empty)"
                empty.append(item.sku)
            elif item.quantity < LOW_STOCK_THRESHOLD:
                marker = " (low)"
                low.append(item.sku)
            name = item.name
            if len(name) > 24:
                name = name[:21] + "..."
            lines.append(
                f"  {item.sku:<8} {name:<24} {item.quantity:>6} x {item.unit_price:>8.2f}"
                f" = {value:>10.2f}{marker}"
            )
        lines.append(f"  {'subtotal':<33} {category_units:>6} {'':>11} {category_value:>10.2f}")
        lines.append("")
        total_value += category_value
        total_units += category_units
    lines.append(f"{'TOTAL':<35} {total_units:>6} {'':>11} {total_value:>10.2f}")
    if low or empty:
        lines.append("")
        lines.append("Warnings:")
        # TODO: sort warnings by urgency rather than alphabetically.
        for sku in sorted(low):
            lines.append(f"  - {sku} is low on stock")
        for sku in sorted(empty):
            lines.append(f"  - {sku} is out of stock")
    return "\n".join(lines) + "\n"


def low_stock_skus(items: list[Item]) -> list[str]:
    return sorted(item.sku for item in items if item.low_stock)
