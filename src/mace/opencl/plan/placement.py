"""Concat placement: on GPU and CPU targets, values written straight into their slice of a channel Concat's output
instead of being copied there. A prepass: it runs before any node is lowered and fills ``Planner.placement`` (value ->
buffer, element offset, batch stride), which the writers (gemm_tiled.py, block.py; on CPU targets gemm_cpu.py and
conv.py's conv_cpu.cl) and the Concat lowering (indexing.py) read.

Its own module so the dependency is one-way: placement asks conv.py which convs' kernels can write a slice
(conv.writes_slices); neither conv.py nor indexing.py imports it.
"""

from __future__ import annotations

from mace.opencl.plan.conv import writes_slices
from mace.opencl.plan.planner import Planner, positive_axis, prepass
from mace.opencl.plan.templates import prod


@prepass
def place_concat_operands(p: Planner) -> None:
    """GPU targets (with ``policy.gpu_concat_in_place``) and CPU targets (``policy.cpu_concat_in_place``): a Conv
    whose kernel can write a slice (conv.writes_slices) and whose output only a channel Concat
    reads writes it straight into its slice of the Concat's output, which saves the copy (and its launch); so does a
    channel Concat whose output only an outer one reads (Inception's nested branches), with its own operands. Sets
    ``p.placement``."""
    if not ((p.gpu and p.policy.gpu_concat_in_place) or (p.cpu and p.policy.cpu_concat_in_place)):
        return
    producers = {out: node for node in p.graph.nodes for out in node.outputs}
    for node in reversed(p.graph.nodes):  # an outer Concat comes later: its placement is known first
        y = node.outputs[0] if node.op == "Concat" else ""
        shape = p.shape(y) if y else ()
        if len(shape) < 3 or positive_axis(int(node.attrs["axis"]), len(shape)) != 1:
            continue
        root, base, bstride = p.placement.get(y, (y, 0, prod(shape[1:])))
        inputs = [x for x in node.inputs if x]
        offset = base
        for x in inputs:
            src = producers.get(x)
            sole = [n.name for n in p.consumers.get(x, [])] == [node.name] and x not in p.graph_outputs
            writer = src is not None and (src.op == "Concat" or (src.op == "Conv" and writes_slices(p, src)))
            if writer and sole and inputs.count(x) == 1 and p.tag(x) == p.tag(y):
                p.placement[x] = (root, offset, bstride)
            offset += prod(p.shape(x)[1:])
