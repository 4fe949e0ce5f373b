"""--input-shape and --batch-sizes as the commands take them: fixed shapes, ranges, and lists of specializations."""

from __future__ import annotations

from mace.errors import MaceError
from mace.model.dynamic import DynamicModel
from mace.model.shapes import ShapeSpec


def parse_shape_args(items: list[str] | None) -> dict[str, list[int]]:
    """``NAME=1,3,224,224`` (or ``1x3x224x224``) per item: fixed shapes."""
    shapes: dict[str, list[int]] = {}
    for name, spec in parse_shape_specs(items).items():
        if not spec.fixed:
            raise MaceError(f"--input-shape {name}={','.join(d.text() for d in spec.dims)}: give fixed dimensions "
                            "here (ranges are for mace convert)")
        shapes[name] = list(spec.example())
    return shapes


def parse_shape_specs(items: list[str] | None) -> dict[str, ShapeSpec]:
    """``NAME=DIMS`` per item, each dimension a number, ``LO..HI``, ``LO..`` or ``?`` (model/shapes.py)."""
    specs: dict[str, ShapeSpec] = {}
    for item in items or []:
        name, sep, dims = item.rpartition("=")
        if not sep or not name or not dims.strip():
            raise MaceError(f"--input-shape {item!r}: expected NAME=1,3,224,224 (or ranges: NAME=1..8,3,32..1280)")
        text = dims if ".." in dims or "?" in dims else dims.replace("x", ",")
        try:
            spec = ShapeSpec.parse(name, ",".join(d for d in text.split(",") if d.strip()))
        except ValueError as exc:
            raise MaceError(f"--input-shape {item!r}: {exc}") from None
        zero = next((d for d in spec.dims if d.fixed and d.lo < 1), None)
        if zero is not None:
            raise MaceError(f"--input-shape {item!r}: dimension {zero.lo} is not a positive integer "
                            "(expected NAME=1,3,224,224)")
        specs[name] = spec
    return specs


def specializations(
    model: DynamicModel, items: list[str] | None, batch_sizes: str | None
) -> list[dict[str, tuple[int, ...]]]:
    """The concrete input shapes to build, one dict per specialization: each ``--input-shape NAME=DIMS`` adds a
    shape; naming an input again starts the next specialization (inputs named once carry over); ``--batch-sizes
    1,2,4`` repeats each with dimension 0 of every input set to each size. Every shape is checked against the model."""
    groups: list[dict[str, tuple[int, ...]]] = []
    current: dict[str, tuple[int, ...]] = {}
    for name, dims in _ordered_fixed(items):
        if name in current:
            groups.append(current)
            current = dict(current)
        current[name] = dims
    if current:
        groups.append(current)
    if not groups:
        if batch_sizes is None and not all(s.fixed for s in model.specs):
            varying = ", ".join(f"{s.input}{s.describe()}" for s in model.specs if not s.fixed)
            raise MaceError(f"{model.name} is a dynamic model ({varying}): name the shapes to build with "
                            "--input-shape NAME=DIMS (repeatable) and/or --batch-sizes")
        groups = [{s.input: s.example() for s in model.specs}]
    out = []
    for group in groups:
        full = {**{s.input: s.example() for s in model.specs}, **group}
        missing = [s.input for s in model.specs if not s.fixed and s.input not in group]
        if missing and group and len(model.specs) > 1:
            raise MaceError(f"--input-shape: no shape for input(s) {missing} in specialization {group}")
        batches: list[int | None] = [*_batches(batch_sizes)] or [None]
        for batch in batches:
            shapes = {n: ((batch, *dims[1:]) if batch is not None and dims else dims) for n, dims in full.items()}
            problem = model.check(shapes)
            if problem is not None:
                raise MaceError(f"--input-shape/--batch-sizes: {problem}")
            if shapes not in out:
                out.append(shapes)
    return out


def _ordered_fixed(items: list[str] | None) -> list[tuple[str, tuple[int, ...]]]:
    found = []
    for item in items or []:
        for name, dims in parse_shape_args([item]).items():
            found.append((name, tuple(dims)))
    return found


def _batches(text: str | None) -> list[int]:
    if text is None:
        return []
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MaceError(f"--batch-sizes {text!r}: expected positive integers such as 1,2,4,8") from None
    if not sizes or min(sizes) < 1:
        raise MaceError(f"--batch-sizes {text!r}: expected positive integers such as 1,2,4,8")
    return sizes
