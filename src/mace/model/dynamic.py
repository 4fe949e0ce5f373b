"""A model whose input shapes vary: the source model and the admissible shapes, specialized per concrete shape.

mace specializes everything to static shapes (the converter folds shape arithmetic, the planner emits one program
per shape), so a model converted without fixing every input dimension is kept as its source (the ONNX bytes) with a
``ShapeSpec`` per input. The engine converts it for each concrete shape it meets (``mace.converter.specialize``),
keeps a bounded number of specializations in memory, and their programs in the program cache like any other.

    >>> from mace.model.shapes import ShapeSpec
    >>> m = DynamicModel("net", "fp32_fp32", [ShapeSpec.parse("x", "1..4,3,?,?")], {"x": "float32"}, ["y"], b"...")
    >>> m.check({"x": (2, 3, 64, 48)})
    >>> m.check({"x": (2, 3, 64)})
    "input 'x' has 3 dimensions [2, 3, 64], expected 4: [1..4, 3, 1.., 1..]"
    >>> m.specialization_key({"x": (2, 3, 64, 48)})
    'x=2x3x64x48'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mace.model.shapes import ShapeSpec

Shapes = Mapping[str, Sequence[int]]


@dataclass
class DynamicModel:
    name: str
    data_type: str
    specs: list[ShapeSpec]  # one per graph input, in input order (fixed inputs have fixed specs)
    dtypes: dict[str, str]  # input name -> numpy dtype name
    outputs: list[str]  # output names
    source: bytes  # the serialized ONNX model
    output_names: list[str] | None = None  # the outputs chosen at convert time (None: the model's own)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [s.input for s in self.specs]

    def check(self, shapes: Shapes) -> str | None:
        """Why these input shapes cannot be used (naming the input, expected and actual), or None."""
        for spec in self.specs:
            if spec.input in shapes:
                problem = spec.check(shapes[spec.input])
                if problem is not None:
                    return problem
        return None

    def specialization_key(self, shapes: Shapes) -> str:
        """``x=1x3x224x224;mask=1x128``: the concrete shapes, in input order; names a specialization everywhere."""
        return ";".join(f"{s.input}={'x'.join(str(int(v)) for v in shapes[s.input])}" for s in self.specs)
