"""Lowers a mace IR graph to ONE OpenCL program for the whole model plus a launch plan.

Every node becomes one or more launches of a kernel template from ``kernels/*.cl``, specialized with compile-time
constants (shapes, strides, storage types, fused activation and residual): each distinct specialization is emitted
once as ``#define KERNEL_NAME conv_3`` + its constants, the template text, then ``#undef``s. The source depends only on
the graph and the device class (``DeviceTarget``: GPUs get work-group tiled matrix kernels, everything else the
portable ones) and its tiling policy (``TilingPolicy``, data carried by the target or passed to ``plan_graph``),
never on one device, so it can be compiled ahead of time and cached.

    >>> plan = plan_graph(graph, DeviceTarget.from_device(device))  # doctest: +SKIP
    >>> program = cl.Program(ctx, plan.source).build(options=plan.build_options)  # doctest: +SKIP

Ops that move no data (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout, same-type Cast) become aliases: the
output shares its input's buffer. Weights that a kernel wants in another layout (conv weights blocked by output
channel, folded BatchNorm, resize tap tables) are prepared here on the host and listed in ``constants``.

Where things are: ``planner.py`` the plan, the planner core and the op registry; ``templates.py`` storage types, C
literals and stride helpers; ``tiling.py`` the device target, the tiling policy and the work per work item;
``gemm_shape.py`` how a matrix product addresses its operands; then one module per op family, named like the kernel
file it mostly emits: ``elementwise``, ``conv`` (Conv, ConvTranspose, depthwise), ``gemm`` (Gemm, MatMul),
``pooling``, ``reduce`` (Reduce*, ArgMax, CumSum, TopK, Softmax), ``norm``, ``resize`` (and GridSample),
``indexing`` (Transpose, Slice, Concat, Split, Gather, Scatter*, OneHot, Pad, Trilu, ...), ``shape`` (aliases,
Shape/Size, Cast), ``recurrent`` (LSTM, GRU, RNN); ``gemm_tiled`` the GPU target's matrix products;
``block`` its inverted residual blocks in one kernel;
``placement`` the prepass that lets convs write into their slice of a Concat on GPU targets.

The tiling: ``tiling`` the policy, the device class, the portable kernels' blocking and the tuner's variants;
``tiling_gpu`` GPU targets' work-group tiles, ``tiling_cpu`` CPU targets' blocking.

The imports go one way: templates <- gemm_shape <- tiling <- tiling_gpu, tiling_cpu <- planner <- the family
modules (gemm_tiled <- gemm <- conv <- placement; gemm_tiled <- block <- conv; elementwise <- norm, shape; reduce <-
pooling); no module here imports this package's ``__init__``.
"""

# The family modules register their lowerings on import.
from mace.opencl.plan import (  # noqa: F401
    attention,
    conv,
    elementwise,
    gemm,
    indexing,
    norm,
    placement,
    pooling,
    recurrent,
    reduce,
    resize,
    shape,
)
from mace.opencl.plan.gemm_shape import GemmShape
from mace.opencl.plan.planner import BUILD_OPTIONS, Arg, Buffer, Launch, ProgramPlan, plan_graph, supported_ops
from mace.opencl.plan.resize import resize_taps
from mace.opencl.plan.templates import FLOAT_TAGS, TAG_DTYPES, c_float, storage_tag
from mace.opencl.plan.tiling import (
    DEFAULT_POLICY,
    DeviceTarget,
    GemmTile,
    TilingPolicy,
    conv_tiling,
    depthwise_tiling,
    gemm_tiling,
)

__all__ = [
    "BUILD_OPTIONS",
    "DEFAULT_POLICY",
    "FLOAT_TAGS",
    "TAG_DTYPES",
    "Arg",
    "Buffer",
    "DeviceTarget",
    "GemmShape",
    "GemmTile",
    "Launch",
    "ProgramPlan",
    "TilingPolicy",
    "c_float",
    "conv_tiling",
    "depthwise_tiling",
    "gemm_tiling",
    "plan_graph",
    "resize_taps",
    "storage_tag",
    "supported_ops",
]
