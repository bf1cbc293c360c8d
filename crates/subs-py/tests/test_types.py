"""The Python <-> JSON mapping, both ways, through the helpers and through a
real delivery."""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

import pytest

import subs
from subs import ConversionError

# (python value, JSON text)
ROUND_TRIP = [
    (None, "null"),
    (True, "true"),
    (False, "false"),
    (0, "0"),
    (-(2**63), "-9223372036854775808"),
    (2**64 - 1, "18446744073709551615"),
    (1.5, "1.5"),
    (-0.25, "-0.25"),
    ("", '""'),
    ("naïve ✓", '"naïve ✓"'),
    ([1, "a", None], '[1,"a",null]'),
    ({"a": {"b": [True]}}, '{"a":{"b":[true]}}'),
]


@pytest.mark.parametrize(("value", "text"), ROUND_TRIP)
def test_round_trip(value: Any, text: str) -> None:
    assert subs.to_json(value) == text
    back = subs.from_json(text)
    assert back == value
    assert type(back) is type(value)


def test_bool_stays_bool_nested() -> None:
    out = subs.from_json(subs.to_json({"flags": [True, False], "n": 1}))
    assert out["flags"][0] is True and out["flags"][1] is False
    assert type(out["n"]) is int


def test_tuple_becomes_list() -> None:
    assert subs.to_json((1, (2, 3))) == "[1,[2,3]]"
    assert subs.from_json("[1,[2,3]]") == [1, [2, 3]]


def test_integral_float_stays_float() -> None:
    assert type(subs.from_json(subs.to_json(2.0))) is float


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"x": float("nan")}, "event.x: float nan is not valid JSON"),
        ({"x": [float("inf")]}, "event.x[0]: float inf is not valid JSON"),
        ({"x": -float("inf")}, "event.x: float -inf is not valid JSON"),
        ({"items": [0, 1, {"when": datetime.datetime(2024, 1, 1)}]}, "event.items[2].when: unsupported type datetime"),
        ({"price": decimal.Decimal("1.5")}, "event.price: unsupported type Decimal"),
        ({"tags": {"a", "b"}}, "event.tags: unsupported type set"),
        ({"raw": b"bytes"}, "event.raw: unsupported type bytes"),
        ({1: "one"}, "event: dict key 1 (int) is not a string"),
        ({"nested": {(1, 2): 3}}, "event.nested: dict key (1, 2) (tuple) is not a string"),
        ({"big": 2**64}, "event.big: integer 18446744073709551616 does not fit in 64 bits"),
        ({"small": -(2**63) - 1}, "event.small: integer -9223372036854775809 does not fit in 64 bits"),
    ],
)
def test_refused_with_path(value: Any, message: str) -> None:
    with pytest.raises(ConversionError) as error:
        subs.to_json(value, "event")
    assert str(error.value).startswith(message)
    assert isinstance(error.value, ValueError)


def test_cycles_are_refused() -> None:
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(ConversionError, match="nested deeper than"):
        subs.to_json(cyclic)


def test_matches_the_json_module_on_plain_data() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": -3}}
    assert json.loads(subs.to_json(value)) == value


async def test_publish_refuses_clearly() -> None:
    engine = subs.Engine(schema="type Query { a: Int } type Subscription { s: Int }")
    with pytest.raises(ConversionError, match=r"payload\.when: unsupported type date"):
        await engine.publish("s", {"when": datetime.date(2024, 1, 1)})
    with pytest.raises(ConversionError, match=r"payload: float nan"):
        engine.publish_sync("s", float("nan"))
