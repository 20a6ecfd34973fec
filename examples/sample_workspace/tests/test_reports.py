from inventory import Item
from inventory.reports import build_report, low_stock_skus

ITEMS = [
    Item("A-1", "Widget", "tools", quantity=3, unit_price=2.5),
    Item("B-2", "Bolt", "hardware", quantity=10, unit_price=0.1),
    Item("C-3", "Hammer with an unusually long product name", "tools", quantity=0, unit_price=12),
]


def test_report_groups_by_category_and_totals():
    report = build_report(ITEMS)
    assert report.index("[hardware]") < report.index("[tools]")
    assert "TOTAL" in report
    assert "8.50" in report  # 3 x 2.50 + 10 x 0.10


def test_report_warns_about_low_and_empty_stock():
    report = build_report(ITEMS)
    assert "A-1 is low on stock" in report
    assert "C-3 is out of stock" in report
    assert "Hammer with an unusua..." in report


def test_empty_report():
    assert "(no items)" in build_report([])


def test_low_stock_skus():
    assert low_stock_skus(ITEMS) == ["A-1", "C-3"]
