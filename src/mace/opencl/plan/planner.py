"""The plan and the planner core: what a lowering can ask for (values, buffers, kernel specializations, launches) and
the registry that maps each op to its lowering in the family modules.

A lowering is ``fn(planner, node)``, registered with ``@lowers("Op", ...)``; it reads shapes and storage tags, asks
for a specialization of a kernel template (``planner.kernel``) and appends launches (``planner.launch``). Buffers are
named after the values they hold, so a launch's arguments are names, resolved to device buffers by the executor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mace.errors import DeviceError
from mace.model.ir import Graph, Node, TensorInfo, fresh_name
from mace.opencl.plan.templates import FAMILIES, TAG_DTYPES, activation_macro, c_value, storage_tag, template
from mace.opencl.plan.tiling import DEFAULT_POLICY, DeviceTarget, TilingPolicy
from mace.opencl.plan.tiling_cpu import cpu_local_size
from mace.opencl.plan.tiling_gpu import BlockTile, BlockWindow

# Deterministic, and valid for every OpenCL 1.2+ device: the cached binary is keyed on these.
BUILD_OPTIONS = "-cl-std=CL1.2 -cl-mad-enable"

Arg = str | np.int32 | np.float32  # a buffer name (key of ProgramPlan.buffers) or a scalar


@dataclass(frozen=True)
class Launch:
    """One kernel enqueue. ``local_size`` None lets the driver choose (the tuner may set it later); a given one is
    the kernel's own (``reqd_work_group_size``), unless ``tunable_local``: the plan's default, which the tuner may
    replace (CPU targets, tiling_cpu.cpu_local_size)."""

    kernel: str
    node: str
    op: str
    global_size: tuple[int, ...]
    args: tuple[Arg, ...]
    local_size: tuple[int, ...] | None = None
    tunable_local: bool = False


@dataclass(frozen=True)
class Buffer:
    """A device buffer: a graph value (input, weight, intermediate, output) or a host-prepared constant."""

    name: str
    dtype: np.dtype  # storage dtype on the device
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class View:
    """A value no launch computes: element ``i`` (row-major over the value's shape) is element ``offset + sum(i_d *
    strides[d])`` of ``source``'s buffer, ``source`` being a value with a buffer (or an alias of one)."""

    source: str
    strides: tuple[int, ...]
    offset: int = 0


@dataclass
class ProgramPlan:
    source: str
    build_options: str
    launches: list[Launch]
    buffers: dict[str, Buffer]  # every buffer the launches and the graph's inputs/outputs touch
    constants: dict[str, np.ndarray]  # buffer name -> data to upload once, in storage dtype and kernel layout
    aliases: dict[str, str]  # value -> buffer it shares with the value it was computed from
    # node -> how many kernel variants its lowering offers (only nodes with more than one); and the variants used
    # (only those other than 0). See tiling.py, "kernel variants".
    variant_counts: dict[str, int] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)
    # constants the launches also write (Planner.counters): uploaded once, writable, each launch leaves them as found
    writable: frozenset[str] = frozenset()

    def buffer_of(self, value: str) -> str:
        return self.aliases.get(value, value)


# --- the registry --------------------------------------------------------------------------------------------------

Lowering = Callable[["Planner", Node], None]
_LOWERINGS: dict[str, Lowering] = {}


def lowers(*ops: str) -> Callable[[Lowering], Lowering]:
    """Registers the decorated function as the lowering of ``ops``."""

    def register(fn: Lowering) -> Lowering:
        for op in ops:
            _LOWERINGS[op] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    return sorted(_LOWERINGS)


Prepass = Callable[["Planner"], None]
_PREPASSES: list[Prepass] = []


def prepass(fn: Prepass) -> Prepass:
    """Registers the decorated function to run on the planner before any node is lowered (in registration order)."""
    _PREPASSES.append(fn)
    return fn


# --- the planner ---------------------------------------------------------------------------------------------------


class Planner:
    def __init__(
        self,
        graph: Graph,
        target: DeviceTarget | None = None,
        variants: Mapping[str, int] | None = None,
        policy: TilingPolicy | None = None,
    ) -> None:
        self.graph = graph
        self.target = target
        # every tiling choice reads this (tiling.py): the one given, else the target's, else the default
        self.policy = policy if policy is not None else target.policy if target is not None else DEFAULT_POLICY
        self.variants = dict(variants or {})
        self.variant_counts: dict[str, int] = {}
        self.variants_used: dict[str, int] = {}
        # GPU targets take the work-group tiled kernels (gemm_tiled.py); everything else plans as with no target
        self.gpu = target is not None and target.tiled
        # CPU targets take the *_cpu.cl kernels where they apply, and every launch a work-group (tiling_cpu.py)
        self.cpu = target is not None and not target.is_gpu
        # the widest vector of the CPU kernels' blocks, in floats: the policy's, at most the device's SIMD register
        self.cpu_vector = min(self.policy.cpu_vector, target.cpu_simd_floats if target is not None else 16)
        # the storage the tensors get: fp16_fp32 keeps float tensors float where the target gains nothing by half
        float_storage = graph.data_type == "fp16_fp32" and target is not None and not target.half_storage
        self.data_type = "fp32_fp32" if float_storage else graph.data_type
        self.specializations: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self.family_counts: dict[str, int] = {}
        self.chunks: list[str] = []
        self.launches: list[Launch] = []
        self.buffers: dict[str, Buffer] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.writable: set[str] = set()  # constants the launches write too (counters)
        self._own: dict[str, str] = {}  # planning's own constants (derived, counters): what they are -> buffer name
        self.aliases: dict[str, str] = {}
        self.consumers = graph.consumers()
        self.graph_outputs = {t.name for t in graph.outputs}
        # value -> (buffer, element offset, batch stride): values written straight into a slice of another value's
        # buffer (a Concat's inputs, on GPU targets; set by placement.py)
        self.placement: dict[str, tuple[str, int, int]] = {}
        # values no launch computes, read through strides by every consumer (a Transpose that only MatMuls read, set
        # by gemm.fold_transposes; the operands of attention, set by attention.view_attention_operands)
        self.views: dict[str, View] = {}
        self.extra_tensors: dict[str, TensorInfo] = {}  # see intermediate()
        # nodes whose output another node's launch writes (the Transpose after an attention) or computes where it
        # reads it (a depthwise conv in its pointwise reader's loader), lowered to nothing
        self.absorbed: set[str] = set()
        # product output -> (the value its launch writes instead, Q, a residual it adds): a [R * Q, N] product whose
        # rows reach the rest of the graph only through a Reshape to [R, Q, N], a Transpose to [Q, R, N] and maybe
        # an Add, which are lowered to nothing (set by gemm.fold_output_transposes)
        self.permuted_outputs: dict[str, tuple[str, int, str | None]] = {}
        # pointwise Conv -> the depthwise Conv whose output its GEMM's loader computes (set by conv.fuse_depthwise)
        self.fused_depthwise: dict[str, Node] = {}
        # pointwise Conv -> the expand Conv before its fused depthwise conv, the block's shape and blocking: the three
        # are one launch of block.cl (set by conv.fuse_blocks)
        self.fused_blocks: dict[str, tuple[Node, BlockWindow, BlockTile]] = {}

    # values and buffers

    def intermediate(self, name: str, shape: Sequence[int], dtype: str = "float32") -> str:
        """A value no graph node names, that one lowering computes and reads (an attention's scores on a CPU
        target): it has a shape and a dtype like the graph's values, and its buffer is planned like theirs. Named
        ``name`` unless a value or a buffer has that name already (_fresh)."""
        name = self._fresh(name)
        self.extra_tensors[name] = TensorInfo(name, tuple(int(d) for d in shape), dtype)
        return name

    def shape(self, value: str) -> tuple[int, ...]:
        if value in self.extra_tensors:
            return self.extra_tensors[value].shape
        if value in self.graph.tensors:
            return tuple(self.graph.tensors[value].shape)
        if value in self.graph.constants:
            return tuple(self.graph.constants[value].shape)
        raise DeviceError(f"tensor {value!r} has no TensorInfo")

    def tag(self, value: str) -> str:
        if value in self.extra_tensors:
            dtype = self.extra_tensors[value].dtype
        elif value in self.graph.tensors:
            dtype = self.graph.tensors[value].dtype
        elif value in self.graph.constants:
            dtype = str(self.graph.constants[value].dtype)
        else:
            raise DeviceError(f"tensor {value!r} has no TensorInfo")
        if dtype == "float16" and self.graph.data_type == "fp16_fp32":
            dtype = "float32"  # a float tensor the converter made half: its storage follows self.data_type
        return storage_tag(dtype, self.data_type)

    def is_const(self, value: str) -> bool:
        return value in self.graph.constants

    def const(self, value: str, what: str, node: Node) -> np.ndarray:
        """A constant input read at plan time (Clip bounds, Slice starts, Resize scales, ...)."""
        if value not in self.graph.constants:
            raise DeviceError(f"OpenCL runtime needs {what} of node {node.name} ({node.op}) to be a constant")
        return self.graph.float_constant(value)

    def is_used(self, value: str) -> bool:
        return bool(value) and (value in self.consumers or value in self.graph_outputs)

    def use(self, value: str) -> str:
        """The buffer to read ``value`` from, uploading it first if it is a weight."""
        root = self.aliases.get(value, value)
        if root not in self.buffers:
            if root not in self.graph.constants:
                raise DeviceError(f"tensor {value!r} is read before it is computed")
            tag = self.tag(root)
            data = np.ascontiguousarray(self.graph.constants[root].astype(TAG_DTYPES[tag], copy=False))
            self.constants[root] = data
            self.buffers[root] = Buffer(root, TAG_DTYPES[tag], tuple(data.shape))
        return root

    def define(self, value: str) -> str:
        """The buffer a node writes ``value`` into."""
        tag = self.tag(value)
        self.buffers[value] = Buffer(value, TAG_DTYPES[tag], self.shape(value))
        return value

    def known(self, value: str, data: np.ndarray) -> str:
        """A graph value whose data planning knows (Shape, Size, a Dropout's mask): uploaded under its own name, not
        computed."""
        return self._upload(value, data, self.tag(value))

    def derived(self, name: str, data: np.ndarray, tag: str) -> str:
        """A host-prepared constant (weights in kernel layout, folded parameters, tap tables), made once per ``name``
        (``w@oc8``: the same relayout for every reader). Its buffer is named ``name`` unless a graph value has that
        name (fresh_name)."""
        if name not in self._own:
            self._own[name] = self._upload(self._fresh(name), data, tag)
        return self._own[name]

    def counters(self, count: int) -> str:
        """A buffer of at least ``count`` uint counters, zero when the program starts, that a launch may count in as
        long as it leaves them zero (gemm_tiled.cl SPLIT_SUM). One buffer for all launches: they run one at a time."""
        if "@counters" not in self._own:
            self._own["@counters"] = self._fresh("@counters")
        name = self._own["@counters"]
        if name not in self.buffers or self.buffers[name].shape[0] < count:
            self._upload(name, np.zeros(count, np.uint32), "U32")
            self.writable.add(name)
        return name

    def scratch(self, name: str, shape: Sequence[int], tag: str) -> str:
        """A device buffer that no graph value names (an output the graph does not use, written anyway): ``name``, or
        where a value or another buffer has that, a fresh one."""
        name = self._fresh(name)
        self.buffers[name] = Buffer(name, TAG_DTYPES[tag], tuple(shape))
        return name

    def _upload(self, name: str, data: np.ndarray, tag: str) -> str:
        data = np.ascontiguousarray(data.astype(TAG_DTYPES[tag], copy=False))
        self.constants[name] = data
        self.buffers[name] = Buffer(name, TAG_DTYPES[tag], tuple(data.shape))
        return name

    def _fresh(self, name: str) -> str:
        """``name`` for a value or buffer of planning's own, unless a graph value or another buffer has it
        (fresh_name)."""
        return fresh_name(name, {*self.graph.iter_values(), *self.graph.tensors, *self.buffers, *self.extra_tensors})

    def alias(self, out: str, src: str) -> None:
        self.aliases[out] = self.use(src)

    # kernels and launches

    def kernel(self, family: str, defines: dict[str, Any]) -> str:
        """The name of the specialization of ``family``'s template with ``defines``, emitting it on first use."""
        filename, selector = FAMILIES[family]
        if selector:
            defines = {selector: 1, **defines}
        items = tuple((k, c_value(v)) for k, v in defines.items())
        key = (family, items)
        if key in self.specializations:
            return self.specializations[key]
        index = self.family_counts.get(family, 0)
        self.family_counts[family] = index + 1
        name = f"{family}_{index}"
        lines = [f"// ---- {name} ----", f"#define KERNEL_NAME {name}"]
        lines += [f"#define {k} {v}" for k, v in items]
        lines.append(template(filename))
        lines += ["#undef KERNEL_NAME"] + [f"#undef {k.split('(')[0]}" for k, _ in items]
        self.chunks.append("\n".join(lines))
        self.specializations[key] = name
        return name

    def launch(
        self,
        node: Node,
        kernel: str,
        global_size: Sequence[int],
        args: Sequence[Arg],
        local_size: Sequence[int] | None = None,
        cpu_local: Sequence[int] | None = None,
    ) -> None:
        """Appends a launch; a kernel that needs its work-group size (``reqd_work_group_size``) passes it as
        ``local_size``, and every global size must then be a multiple of it (-cl-std=CL1.2: uniform work-groups). On
        a CPU target every other launch gets ``cpu_local`` (a CPU kernel's own choice) or else
        ``tiling_cpu.cpu_local_size``, as a default the tuner may replace."""
        if all(int(g) > 0 for g in global_size):
            local = None if local_size is None else tuple(int(v) for v in local_size)
            tunable = local is None and self.cpu
            if tunable:
                assert self.target is not None
                local = tuple(int(v) for v in cpu_local) if cpu_local is not None else cpu_local_size(
                    global_size, self.target, self.policy)
            if local is not None and any(g % v for g, v in zip(global_size, local)):
                raise DeviceError(f"global size {tuple(global_size)} is not a multiple of local size {local}")
            glob = tuple(int(g) for g in global_size)
            self.launches.append(Launch(kernel, node.name, node.op, glob, tuple(args), local, tunable))

    def epilogue(self, node: Node, defines: dict[str, Any], args: list[Arg], residual: str | None) -> None:
        """The fused residual and activation (ir.py) of Conv, ConvTranspose, Gemm and MatMul."""
        defines["HAS_RESIDUAL"] = residual is not None
        if residual is not None:
            defines["R_T"] = self.tag(residual)
            args.append(self.use(residual))
        defines["ACTIVATE(v)"] = activation_macro(node.attrs)

    def variant(self, node: Node, count: int) -> int:
        """The kernel variant ``node`` is planned with, out of the ``count`` its lowering offers: the requested one
        where it is in range, else 0 (the default policy). Recorded, so a tuner knows what there is to try."""
        if count > 1:
            self.variant_counts[node.name] = count
        chosen = self.variants.get(node.name, 0)
        chosen = chosen if 0 <= chosen < count else 0
        if chosen:
            self.variants_used[node.name] = chosen
        return chosen

    def lower(self, node: Node) -> None:
        if (node.outputs and all(out in self.views for out in node.outputs)) or node.name in self.absorbed:
            return  # its consumers read its input through strides, or its producer writes its output
        lowering = _LOWERINGS.get(node.op)
        if lowering is None:
            raise DeviceError(f"OpenCL runtime has no kernel for {node.op} (node {node.name})")
        lowering(self, node)

    def finish(self) -> ProgramPlan:
        for out in self.graph.outputs:
            self.use(out.name)
        # cpu.h only where a CPU kernel (*_cpu.cl) is used: other CPU plans keep the portable source
        cpu_kernels = any(FAMILIES[family][0].endswith("_cpu.cl") for family in self.family_counts)
        headers = [template("common.h"), *([template("cpu.h")] if cpu_kernels else [])]
        source = "\n\n".join([*headers, *self.chunks]) + "\n"
        return ProgramPlan(source, build_options(self.graph), self.launches, self.buffers, self.constants,
                           self.aliases, self.variant_counts, self.variants_used,
                           frozenset(self.writable))


def build_options(graph: Graph) -> str:
    """BUILD_OPTIONS, and for a dynamic model's specialization its input shapes as a define that no kernel reads: the
    shapes are already in the source (and so in the program key); the define shows them in `mace cache inspect`."""
    shapes = graph.metadata.get("specialization")
    if not isinstance(shapes, str) or not shapes:
        return BUILD_OPTIONS
    safe = "".join(c if c.isalnum() or c in "_=x;.," else "_" for c in shapes).replace("=", ":").replace(";", ",")
    return f"{BUILD_OPTIONS} -DMACE_INPUT_SHAPES={safe}"


def plan_graph(
    graph: Graph,
    target: DeviceTarget | None = None,
    variants: Mapping[str, int] | None = None,
    policy: TilingPolicy | None = None,
) -> ProgramPlan:
    """Lowers ``graph`` to one program source and the launches that run it, in node order. ``target`` (see
    ``DeviceTarget.from_device``) specializes the kernels for a device class; None, or a target that is no GPU, gives
    the portable plan. ``policy`` is the tiling policy (tiling.TilingPolicy), by default the target's (with no
    target, tiling.DEFAULT_POLICY); ``variants`` (node name -> kernel variant, tuned) replace its choices where a
    node's lowering offers them. The same graph, target, policy and variants always give the same source (the program
    cache's key), and nothing else changes it."""
    planner = Planner(graph, target, variants, policy)
    for info in graph.inputs:
        planner.define(info.name)
    for run in _PREPASSES:
        run(planner)
    for node in graph.nodes:
        try:
            planner.lower(node)
        except DeviceError as exc:
            if node.name in str(exc):
                raise
            raise DeviceError(f"node {node.name} ({node.op}): {exc}") from exc
    return planner.finish()


# --- node helpers the lowerings share ------------------------------------------------------------------------------


def epilogue_split(node: Node) -> tuple[list[str], str | None]:
    """(core inputs, residual): a fused residual is the node's last input."""
    if node.attrs.get("residual"):
        return node.inputs[:-1], node.inputs[-1]
    return list(node.inputs), None


def optional(inputs: Sequence[str], index: int) -> str | None:
    """An optional input: None where it is absent or the empty string."""
    return inputs[index] if len(inputs) > index and inputs[index] else None


def ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def positive_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis
