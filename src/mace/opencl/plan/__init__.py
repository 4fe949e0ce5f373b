"""Lowers a mace IR graph to ONE OpenCL program for the whole model plus a launch plan.

Every node becomes one or more launches of a kernel template from ``kernels/*.cl``, specialized with compile-time
constants (shapes, strides, storage types, fused activation and residual): each distinct specialization is emitted
once as ``#define KERNEL_NAME conv_3`` + its constants, the template text, then ``#undef``s. The source depends only on
the graph and the device class (``DeviceTarget``: GPUs get work-group tiled matrix kernels, everything else the
portable ones), never on one device, so it can be compiled ahead of time and cached.

    >>> plan = plan_graph(graph, DeviceTarget.from_device(device))  # doctest: +SKIP
    >>> program = cl.Program(ctx, plan.source).build(options=plan.build_options)  # doctest: +SKIP

Ops that move no data (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout, same-type Cast) become aliases: the
output shares its input's buffer. Weights that a kernel wants in another layout (conv weights blocked by output
channel, folded BatchNorm, resize tap tables) are prepared here on the host and listed in ``constants``.

Where things are: ``plan.py`` the plan, the planner core and the op registry; ``templates.py`` storage types, C
literals and stride helpers; ``tiling.py`` the work per work item; then one module per op family, named like the
kernel file it mostly emits: ``elementwise``, ``conv`` (Conv, ConvTranspose, depthwise), ``gemm`` (Gemm, MatMul),
``pooling``, ``reduce`` (Reduce*, ArgMax, Softmax), ``norm``, ``resize``, ``indexing`` (Transpose, Slice, Concat,
Split, Gather, Pad, ...), ``shape`` (aliases, Shape/Size, Cast); ``gemm_tiled`` the GPU target's matrix products.
"""

# The family modules register their lowerings on import.
from mace.opencl.plan import conv, elementwise, gemm, indexing, norm, pooling, reduce, resize, shape  # noqa: F401
from mace.opencl.plan.gemm import GemmShape
from mace.opencl.plan.planner import BUILD_OPTIONS, Arg, Buffer, Launch, ProgramPlan, plan_graph, supported_ops
from mace.opencl.plan.resize import resize_taps
from mace.opencl.plan.templates import FLOAT_TAGS, TAG_DTYPES, c_float, storage_tag
from mace.opencl.plan.tiling import MIN_WORK_ITEMS, DeviceTarget, conv_tiling, depthwise_tiling, gemm_tiling

__all__ = [
    "BUILD_OPTIONS",
    "FLOAT_TAGS",
    "MIN_WORK_ITEMS",
    "TAG_DTYPES",
    "Arg",
    "Buffer",
    "DeviceTarget",
    "GemmShape",
    "Launch",
    "ProgramPlan",
    "c_float",
    "conv_tiling",
    "depthwise_tiling",
    "gemm_tiling",
    "plan_graph",
    "resize_taps",
    "storage_tag",
    "supported_ops",
]
