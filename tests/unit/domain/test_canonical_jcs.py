"""Canonical JSON is RFC 8785 (JCS): the RFC's own examples, and our pre-mapping of the values
JSON has no type for (exact decimals, ids, times, integers beyond a double's exact range)."""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from agent_engine.domain.canonical import canonical_json, content_hash, to_json_value


def _double(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


# RFC 8785 Appendix B: IEEE 754 doubles (as hex bits) and their canonical text.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), APPENDIX_B)
def test_numbers_are_written_as_rfc_8785_appendix_b_says(bits: str, text: str) -> None:
    assert canonical_json(_double(bits)) == text.encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinities_are_refused(bits: str) -> None:
    with pytest.raises(ValueError, match="not representable"):
        canonical_json({"x": [1, _double(bits)]})


def test_the_rfcs_worked_example_is_reproduced() -> None:
    # RFC 8785 §3.2.2 and §3.2.4: the input as a JSON text, parsed, then canonicalized.
    source = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(json.loads(source)) == expected.encode("utf-8")


def test_object_keys_are_sorted_by_their_utf16_code_units() -> None:
    # RFC 8785 §3.2.3: the emoji (a surrogate pair, D83D…) sorts before U+FB33.
    source = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(canonical_json(source)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_decimals_uuids_and_times_are_mapped_to_text_first() -> None:
    run_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    at = datetime(2026, 12, 1, 13, 0, 0, 250000, tzinfo=UTC)
    document = {"cost": Decimal("0.000120000"), "id": run_id, "at": at, 7: "int key"}
    assert to_json_value(document) == {
        "cost": "0.000120000",  # exact text, trailing zeros kept: never through a float
        "id": "12345678-1234-5678-1234-567812345678",
        "at": "2026-12-01T13:00:00.250000+00:00",
        "7": "int key",
    }
    expected = (
        '{"7":"int key","at":"2026-12-01T13:00:00.250000+00:00","cost":"0.000120000",'
        '"id":"12345678-1234-5678-1234-567812345678"}'
    )
    assert canonical_json(document) == expected.encode()
    assert content_hash(document) == hashlib.sha256(expected.encode()).hexdigest()


def test_a_decimal_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json({"cost": Decimal("NaN")})


def test_integers_beyond_the_exact_range_hash_as_the_double_they_parse_to() -> None:
    # What a JCS implementation in any language computes from the stored JSON text.
    assert canonical_json(2**53 - 1) == b"9007199254740991"
    assert canonical_json(-(2**53 - 1)) == b"-9007199254740991"
    assert canonical_json(2**53 + 1) == b"9007199254740992"
    assert canonical_json(10**30) == b"1e+30"
    assert content_hash({"n": 10**30}) == content_hash(json.loads('{"n": 1e30}'))


def test_an_integer_no_double_can_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="beyond what a JSON number can hold"):
        canonical_json({"n": 10**400})


def test_the_hash_does_not_depend_on_key_order_or_whitespace() -> None:
    assert content_hash(json.loads('{"b": [1, 2.0], "a": "x"}')) == content_hash(
        {"a": "x", "b": [1, 2]}
    )  # 2.0 and 2 are the same JSON number: both are written "2"
