"""The shared lenient JSON parser of the decoders."""

from __future__ import annotations

import pytest

from fleetstream.errors import DecodeError
from fleetstream.normalize.base import loads_lenient, scale


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'[{"a": 1,},]', [{"a": 1}]),
        (b'[{"a": "x,]", "b": 2 ,\n}\n,\n]', [{"a": "x,]", "b": 2}]),
        (b'{"q": "say \\"hi\\",}", "k": [1, 2,],}', {"q": 'say "hi",}', "k": [1, 2]}),
    ],
)
def test_trailing_commas_outside_strings_are_dropped(payload: bytes, expected: object) -> None:
    """Trailing commas before ] or } are accepted; commas inside strings are untouched."""
    assert expected == loads_lenient(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"[" + b'"\\' * 100_000 + b",]",
        b"[" + b'"' * 200_000 + b",]",
        b"[" + b", " * 200_000 + b"x]",
    ],
    ids=["escaped-quotes", "quotes", "commas"],
)
def test_hostile_bodies_fail_fast_with_decode_error(payload: bytes) -> None:
    """Bodies built to make a backtracking repair quadratic end in a DecodeError at once (the
    earlier regex needed hours for the first one, holding the event loop)."""
    with pytest.raises(DecodeError) as raised:
        loads_lenient(payload)
    assert "invalid_json" == raised.value.reason


def test_scale_is_exact_and_has_no_negative_zero() -> None:
    """Decimal scaling gives the exact decimal result and never -0.0."""
    expected = ("0.36", "85000.0", "0.0", "15.0")
    actual = tuple(
        repr(v)
        for v in (
            scale(0.1, "3.6"),
            scale(-85000000, "-0.001"),
            scale(0, "-0.001"),
            scale(15000, "0.001"),
        )
    )
    assert expected == actual
