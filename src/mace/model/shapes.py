"""Input shapes that may vary: each dimension is fixed or a named range, and a concrete shape is checked against them.

A model converted without fixing every input dimension keeps a ``ShapeSpec`` per input (in the .mace file); the
engine specializes the model to each concrete shape it is given. The spec is written ``1..8,3,32..1280,32..1280``
on the command line (a number is fixed, ``lo..hi`` a range, ``..hi`` from 1, ``lo..`` unbounded above, ``?`` any).

    >>> spec = ShapeSpec.parse("x", "1..8,3,32..1280,32..1280")
    >>> spec.describe()
    '[1..8, 3, 32..1280, 32..1280]'
    >>> spec.check((2, 3, 640, 480))
    >>> spec.check((2, 3, 16, 480))
    "input 'x' dimension 2 is 16, expected 32..1280 (shape [2, 3, 16, 480], expected [1..8, 3, 32..1280, 32..1280])"
    >>> spec.check((2, 3, 640))
    "input 'x' has 3 dimensions [2, 3, 640], expected 4: [1..8, 3, 32..1280, 32..1280]"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

UNBOUNDED = None  # an upper bound that is not there


@dataclass(frozen=True)
class Dim:
    """One dimension: ``lo == hi`` is fixed; ``hi`` None has no upper bound. ``name`` is the ONNX dim_param, if any."""

    lo: int
    hi: int | None
    name: str = ""

    @property
    def fixed(self) -> bool:
        return self.hi == self.lo

    def admits(self, value: int) -> bool:
        return self.lo <= value and (self.hi is None or value <= self.hi)

    def text(self) -> str:
        if self.fixed:
            return str(self.lo)
        return f"{self.lo}..{'' if self.hi is None else self.hi}"

    def to_json(self) -> Any:
        """A fixed dim is its int; a range is {"min", "max" (null: unbounded), "name"}."""
        if self.fixed and not self.name:
            return self.lo
        return {"min": self.lo, "max": self.hi, "name": self.name}

    @classmethod
    def from_json(cls, value: Any) -> Dim:
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value, value)
        if isinstance(value, dict):
            lo, hi, name = value.get("min", 1), value.get("max"), value.get("name", "")
            if (isinstance(lo, int) and not isinstance(lo, bool) and (hi is None or isinstance(hi, int))
                    and isinstance(name, str)):
                return _checked(lo, hi, name, f"dimension {value!r}")
        raise ValueError(f"dimension {value!r} is neither an int nor {{min, max, name}}")


def _checked(lo: int, hi: int | None, name: str, what: str) -> Dim:
    if lo < 0 or (hi is not None and hi < lo):
        raise ValueError(f"{what}: the range {lo}..{'' if hi is None else hi} is empty or negative")
    return Dim(lo, hi, name)


@dataclass(frozen=True)
class ShapeSpec:
    """The admissible shapes of one input."""

    input: str
    dims: tuple[Dim, ...]

    @property
    def fixed(self) -> bool:
        return all(d.fixed for d in self.dims)

    def example(self) -> tuple[int, ...]:
        """The smallest admissible shape (a range's lower bound, at least 1): what a caller without inputs uses."""
        return tuple(max(d.lo, 1) for d in self.dims)

    def describe(self) -> str:
        return "[" + ", ".join(d.text() for d in self.dims) + "]"

    def check(self, shape: Sequence[int]) -> str | None:
        """Why ``shape`` is not admissible (one sentence naming the input, expected and actual), or None."""
        shape = tuple(int(v) for v in shape)
        if len(shape) != len(self.dims):
            return (f"input {self.input!r} has {len(shape)} dimensions {list(shape)}, expected {len(self.dims)}: "
                    f"{self.describe()}")
        for axis, (value, dim) in enumerate(zip(shape, self.dims)):
            if not dim.admits(value):
                return (f"input {self.input!r} dimension {axis}{f' ({dim.name})' if dim.name else ''} is {value}, "
                        f"expected {dim.text()} (shape {list(shape)}, expected {self.describe()})")
        return None

    def to_json(self) -> list[Any]:
        return [d.to_json() for d in self.dims]

    @classmethod
    def from_json(cls, name: str, value: Any) -> ShapeSpec:
        if not isinstance(value, list):
            raise ValueError(f"input {name!r}: shape spec {value!r} is not a list")
        return cls(name, tuple(Dim.from_json(v) for v in value))

    @classmethod
    def parse(cls, name: str, text: str, names: Sequence[str] = ()) -> ShapeSpec:
        """``1..8,3,32..1280,?``; ``names`` gives the ONNX dim_params to keep with the ranges."""
        dims = []
        for axis, item in enumerate(text.split(",")):
            item = item.strip()
            label = names[axis] if axis < len(names) else ""
            what = f"input {name!r} dimension {axis} {item!r}"
            try:
                if item in ("?", "", ".."):
                    dims.append(Dim(1, None, label))
                elif ".." in item:
                    lo_text, hi_text = item.split("..", 1)
                    dims.append(_checked(int(lo_text) if lo_text else 1, int(hi_text) if hi_text else None,
                                         label, what))
                else:
                    value = int(item)
                    if value < 0:
                        raise ValueError(f"{what} is negative")
                    dims.append(Dim(value, value))
            except ValueError as exc:
                message = str(exc) if str(exc).startswith("input ") else f"{what} is not N, LO..HI or ?"
                raise ValueError(message) from None
        return cls(name, tuple(dims))
