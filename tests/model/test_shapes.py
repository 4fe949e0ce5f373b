"""ShapeSpec: parsing the command-line form, JSON round trips, and the errors for shapes outside the spec."""

from __future__ import annotations

import pytest

from mace.model.shapes import Dim, ShapeSpec


def test_parse_forms() -> None:
    spec = ShapeSpec.parse("x", "1..8, 3, ..1280, 32.., ?", names=["batch", "", "h", "w", "t"])
    assert spec.dims == (Dim(1, 8, "batch"), Dim(3, 3), Dim(1, 1280, "h"), Dim(32, None, "w"), Dim(1, None, "t"))
    assert spec.describe() == "[1..8, 3, 1..1280, 32.., 1..]"
    assert not spec.fixed and ShapeSpec.parse("x", "1,3,224,224").fixed


@pytest.mark.parametrize(("text", "message"), [
    ("1,-5,2", "input 'x' dimension 1 '-5' is negative"),
    ("1,8..2", "input 'x' dimension 1 '8..2': the range 8..2 is empty or negative"),
    ("1,a", "input 'x' dimension 1 'a' is not N, LO..HI or ?"),
    ("1,2..b", "input 'x' dimension 1 '2..b' is not N, LO..HI or ?"),
])
def test_parse_errors_name_input_dimension_and_text(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        ShapeSpec.parse("x", text)
    assert str(info.value) == message


def test_check_bounds_and_rank() -> None:
    spec = ShapeSpec.parse("tokens", "1..4,8..512", names=["batch", "sequence"])
    assert spec.check((4, 512)) is None and spec.check([1, 8]) is None
    assert spec.check((5, 16)) == ("input 'tokens' dimension 0 (batch) is 5, expected 1..4 (shape [5, 16], "
                                   "expected [1..4, 8..512])")
    assert spec.check((1, 7)) is not None and spec.check((1, 513)) is not None
    assert spec.check((1, 8, 1)) == "input 'tokens' has 3 dimensions [1, 8, 1], expected 2: [1..4, 8..512]"


def test_json_round_trip_and_bad_json() -> None:
    spec = ShapeSpec.parse("x", "1..8,3,32..,?", names=["n", "", "h", "w"])
    assert ShapeSpec.from_json("x", spec.to_json()) == spec
    assert spec.to_json()[1] == 3
    for bad in ([{"min": 4, "max": 2}], [{"min": -1}], ["3"], [True], "1,2"):
        with pytest.raises(ValueError):
            ShapeSpec.from_json("x", bad)
