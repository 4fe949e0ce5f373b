"""Work per work item: the tiling policy (TilingPolicy, GemmTile), the device class it plans for (DeviceTarget),
the blocking of the portable kernels (gemm.cl, conv.cl, depthwise.cl) and the tuner's variants of them all. The
choices for GPU targets' work-group tiles are in tiling_gpu.py, for CPU targets' kernels in tiling_cpu.py.

One place for these choices, so a tuner can replace them. They depend on the graph, the device class (DeviceTarget)
and its tiling policy (TilingPolicy, data: nothing here reads a module global that a caller may change) only: the
program source, and so the cached binary, follow from them. Big blocks let CPU drivers (pocl) use SIMD and reuse
loads; GPUs want many work items. So each op takes the biggest block that still leaves ``policy.min_work_items`` work
items: big layers get big blocks (good everywhere), small layers (7x7 maps at batch 1) small ones, which keeps a GPU
busy. On an H200 this is within 5% of the best fixed blocking per model, where the biggest blocks everywhere are up to
1.9x slower; pocl on 16 cores is indifferent, but pocl on 2 cores runs 2x faster with the biggest blocks everywhere
(``min_work_items=0``): a per-device value is the tuner's to pick.

A GPU target (DeviceTarget.tiled) instead runs matrix products and group-1 convolutions on work-group tiles through
local memory (tiling_gpu.gpu_gemm_tile, gemv_blocking), 3-6x faster than the portable kernels on an H200
(benchmarks/gpu_kernels.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from mace.opencl.plan.gemm_shape import GemmShape
from mace.opencl.plan.templates import prod

_Block = TypeVar("_Block")


def _biggest(candidates: Sequence[_Block], work_items: Callable[[_Block], int], least: int) -> _Block:
    return next((c for c in candidates if work_items(c) >= least), candidates[-1])


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --- the policy -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GemmTile:
    """gemm_tiled.cl's blocking: an LM x LN work-group computes a BM x BN block of the output, TM x TN per work item,
    stepping k by BK through local memory; ``splits`` work-groups share the k range of one block (KS each) and a
    second kernel sums their partial results. ``vlds``: each work item reads its TM (TN) operands from local memory
    as vectors (of up to 4). ``max_splits`` (0: any) caps the k splits gpu_gemm_tile may give this tile, so it is
    only chosen where its blocks, split at most that often, fill the GPU (the big register-blocked tiles: split
    further, their partial sums cost more than the smaller tiles lose)."""

    lm: int
    ln: int
    tm: int
    tn: int
    bk: int = 16
    vlds: bool = True
    splits: int = 1
    ks: int = 0  # k per split (a multiple of bk); 0 means all of K
    max_splits: int = 0
    # whole waves before pieces (gpu_gemm_tile's _tail_split, NVIDIA targets): the blocks before split_from are
    # whole and each later one is ``splits`` pieces, summed by the last of them (gemm_tiled.cl SPLIT_SUM)
    split_from: int = 0
    # work-groups of this tile a compute unit holds at once (its registers, from ptxas on an H200; 0: not known, and
    # then its blocks are split only as gpu_groups_per_cu says)
    per_cu: int = 0
    # its k step's loop unrolled, and blocks wholly inside M and N load without bounds checks (gemm_tiled.cl
    # UNROLL_STEP). Measured on an H200 (kernels, batch 32) for the 128 x 128 block: ViT-B/16 36242 -> 33343 us,
    # BERT-base 22843 -> 19811, ResNet-50 8672 -> 8749 (each alone: ViT +1 % and +3 %, BERT -4 % and -7 %). On
    # every tile (the tensor-core one's loads included) ResNet-50 at batch 32 gained 4 % but batch 1 lost (ResNet-50
    # 922 -> 1006, MobileNet-v2 367 -> 385 us).
    unroll: bool = False
    products_only: bool = False  # chosen for matrix products, not for convolutions (whose gathered B it slows)
    mma: bool = False  # the tensor cores (mma.sync, 3xTF32 or TF32; gemm_tiled.cl MMA): only on tensor_cores

    def __post_init__(self) -> None:
        # gemm_tiled.cl's MMA form: one warp per 32 x 32 piece of the block, k in steps of 8
        if self.mma and (self.bm % 32 or self.bn % 32 or self.bk % 8 or self.lm * self.ln * 32 != self.bm * self.bn):
            raise ValueError(f"{self} cannot take the MMA form: BM, BN multiples of 32, BK of 8, one warp per 32 x 32")

    @property
    def bm(self) -> int:
        return self.lm * self.tm

    @property
    def bn(self) -> int:
        return self.ln * self.tn

    @property
    def local_bytes(self) -> int:
        """The most local memory its work-groups take (both tiles, rows padded)."""
        if self.mma:
            return 4 * self.bk * (self.bm + 8 + self.bn + 8)
        return 4 * self.bk * (self.bm + self.tm + self.bn + self.tn)

    def groups(self, m: int, n: int, batch: int) -> int:
        return ceil_div(m, self.bm) * ceil_div(n, self.bn) * batch

    def fill(self, m: int, n: int) -> float:
        """The useful fraction of the blocks (the rest is padding past M and N)."""
        return m * n / (ceil_div(m, self.bm) * self.bm * ceil_div(n, self.bn) * self.bn)


# gemm_tiled.cl's tensor-core tiles (TilingPolicy.gpu_mma_tiles): 64 x 64 blocks on 4 warps, 32 x 32 each, BK 16.
# Measured on an H200 (ResNet-50 at batch 32, kernels, an earlier split): BK 16 9.71 ms, BK 32 10.24, 128 x 64 blocks
# on 8 warps 11.87. Its inner blocks load unchecked (unroll: benchmarks/RESULTS.md, session 12). Then 32 x 128
# blocks, for convolutions of 32 or 96 output channels, where a 64-row block is mostly padding (gpu_min_fill) and
# the SIMT tiles ran at half the rate: Inception-v3 at batch 32, kernels 14217 -> 12999 us (Conv2d_2a_3x3, M 32,
# 750 -> 426 us; the 96-channel 3 x 3 ones 383 -> 212, 258 -> 157), where 32 x 64 blocks on 2 warps gave 13111;
# equal sizes keep this order, so M 64, 128, ... stay on the 64 x 64 block.
MMA_TILES: Final = (
    GemmTile(8, 16, 8, 4, bk=16, max_splits=4, per_cu=3, unroll=True, mma=True),
    GemmTile(4, 32, 8, 4, bk=16, max_splits=4, per_cu=3, unroll=True, mma=True),
)


@dataclass(frozen=True)
class TilingPolicy:
    """Every knob of the tiling choices, as data: the device target carries one (``DeviceTarget.policy``) and
    ``plan_graph`` takes one, so a policy that changes the generated source changes the program's cache key with it.
    The defaults are the measured ones; a sweep or a test plans with ``dataclasses.replace(DEFAULT_POLICY, ...)``.

        >>> TilingPolicy(min_work_items=0).gpu_tile_variants
        6
    """

    # the portable kernels (conv.cl, depthwise.cl, gemm.cl): the biggest block that leaves this many work items
    min_work_items: int = 8192
    # gemm_tiled.cl, biggest first. Each satisfies what its loaders assume: (LM * LN) % BM == 0, (LM * LN) % BN == 0,
    # and BK a multiple of both quotients. Measured on an H200 (132 CUs) over the layers of MobileNet-v2, ResNet-50
    # and Inception-v3: 64x64 blocks of 4x4 win wherever they (and k splits) give enough work-groups; small blocks
    # win on layers with little k (nothing to split). 128x128 blocks of 8x8 (BK 8; at most 4 k splits) only pay on
    # big layers (ResNet-50 at batch 32: 11.56 -> 10.64 ms of kernels; BK 16, 128x64 and 64x128 lost), so they
    # are tried first (gpu_gemm_tile goes biggest first) but only where they fill the GPU with at most 4 k splits
    # (more lost on ViT-B/16's projections). 64x128 blocks of 8x8 on 128-item work-groups (BK 16) pay on matrix
    # products whose 64x64 blocks leave the GPU short (ViT-B/16's qkv projections, M 197 N 2304: 69 -> 52 us, k split
    # 3; the model's device time 3956 -> 3545 us) but lost on every convolution they were tried on (ResNet-50 at
    # batch 32: +81 us on each 3x3 layer of M 64), so products_only. Listed in the order they were added: tuned
    # variant i means gpu_tiles[i - 1], and files tuned before a tile existed keep meaning the same tiles.
    gpu_tiles: tuple[GemmTile, ...] = (
        GemmTile(16, 16, 4, 4),
        GemmTile(16, 16, 2, 2),
        GemmTile(8, 8, 2, 2),
        GemmTile(16, 16, 8, 8, bk=8, max_splits=4, per_cu=2, unroll=True),
        GemmTile(8, 16, 8, 8, bk=16, max_splits=4, per_cu=4, products_only=True),
    )
    # gemm_tiled.cl on tensor cores (DeviceTarget.tensor_cores), preferred there over gpu_tiles for convolutions of
    # at least gpu_mma_min_k terms (and for matrix products too with gpu_mma_products) whose blocks alone make
    # gpu_mma_min_groups_per_cu work-groups per compute unit, of at least gpu_mma_min_macs multiply-adds; () turns it
    # off. With the images side by side along n (gpu_fold_images) and k channels inner (gpu_channels_inner),
    # measured on an H200 (kernels, one lease, against the SIMT tiles): ResNet-50 at batch 32 10157 -> 9027 us (its
    # tensor-core layers 9153 -> 8152, at 30-36 TFLOP/s), Inception-v3 at batch 32 18766 -> 17679. At batch 1 the
    # layers that need k splits to fill the GPU lose (ResNet-50's 3 x 3 ones 40 -> 43 us), hence the groups bound;
    # those that fill it gain a few us (Inception-v3's two: 40.7 -> 31.7, 63.1 -> 53.2), but a tensor-core
    # specialization costs about a second of cold build (those two: 6.2 -> 8.1 s), hence the floor of multiply-adds,
    # which leaves the benchmark models' batch-1 programs on the SIMT tiles. Measured again in session 13 (H200,
    # cold builds, driver caches off): without the floor Inception-v3 at batch 1 takes 3 stem layers onto the tensor
    # cores, kernels 1650 -> 1599 us, cold build 5.2-6.1 -> 5.7-6.6 s; ResNet-50 one, 922 -> 917 us, 2.3-2.5 ->
    # 2.6 s: kept.
    # Before the fold and C_INNER, the held split was only as fast as the SIMT tiles, kernels:
    # ResNet-50 at batch 32 10.62 -> 10.53-10.62 ms held
    # (9.99-10.07 without the hold, which gave NaN for an infinite operand; 2.4e-5 -> 2.2e-5 from onnxruntime),
    # ResNet-50 1024 -> 941-1000 us and Inception-v3 1646-1877 -> 1624-1932 us, within lease noise. Without the
    # hold, per layer: K >= 128 10-30 % faster, the 1 x 1 layers of K 64 slower (176 -> 222 us against the 128 x
    # 128 SIMT tile). Products: ViT-B/16's qkv projections (M 197 N 2304) 54 -> 48 us but its MLP's first (N 3072,
    # k split 2) 55 -> 71, hence gpu_mma_products off.
    gpu_mma_tiles: tuple[GemmTile, ...] = MMA_TILES
    gpu_mma_min_k: int = 128
    gpu_mma_min_groups_per_cu: int = 1
    gpu_mma_min_macs: int = 1 << 30
    # ... the 32 x 128 block before the 64 x 64 one where its blocks are more than this much fuller: it runs at ~0.8 of
    # the bigger one's rate per useful multiply-add (Inception-v3 at batch 32 on an H200: Conv2d_2a_3x3, M 32, 426 us
    # against Conv2d_2b_3x3, M 64 of the same N and K, 679), so M 96 (fill 1 against 0.75) takes it, M 48 and 160 not
    gpu_mma_fill_gain: float = 1.25
    # ... their tiles copied from global to local memory by cp.async into two stages (gemm_tiled.cl MMA_ASYNC), on
    # float operands with k channels inner. Off: measured on an H200 (kernels, batch 32, one lease) ResNet-50 9101 ->
    # 8946 us and Inception-v3 17865 -> 17144, but cold builds 5.8 -> 6.2 s and 10.8 -> 13.6 (one build each, which
    # move 17 % alone); the 3 x 3 layers stay at 35 TFLOP/s, so the copies were not what bounds them.
    gpu_mma_async: bool = False
    gpu_mma_products: bool = False
    gpu_groups_per_cu: int = 2  # work-groups (k splits included) wanted per compute unit, convolutions
    # ... and matrix products: ViT-B/16 device time 3599 -> 3378 us with 4 (more k splits), where 4 for the
    # convolutions too lost (ResNet-50 at batch 32: 10630 -> 11316 us; Inception-v3 1875 -> 1945)
    gpu_product_groups_per_cu: int = 4
    # ... of which a product's k split takes, of the two nearest that many (rounded down and up), the one whose last
    # wave of work-groups leaves the fewest slots idle (where there is more than one wave), a compute unit holding
    # this many work items at once (an H200 holds two 256-item 8x8 blocks: ptxas gives them 123-127 registers each);
    # ties take fewer splits. Measured on an H200 (kernels, batch 32): ViT-B/16's MLP output product (M 6304 N 768
    # K 3072: 300 blocks of 128 x 128, 264 slots) 1111 -> 929 us split in 2 (+ 25 us of ksum), the model 40774 ->
    # 38969 us; BERT-base's (192 blocks) stays at 2 splits (3: the same idle slots, 584 -> 631 us). 0 turns it off
    # (rounded down, as convolutions are).
    gpu_product_resident_items_per_cu: int = 512
    gpu_min_fill: float = 0.75  # a tile whose blocks are mostly padding (M or N far below BM or BN) is skipped
    gpu_split_min_ktiles: int = 4  # a k split gets at least this many BK steps (and a split costs a launch)
    # Where a product's blocks alone make more than gpu_tail_min_waves waves (all the work-groups its tile's
    # GemmTile.per_cu lets the compute units hold at once) on an NVIDIA target (the pieces summed in the kernel,
    # SPLIT_SUM), whole waves of blocks come first and the blocks left over are split into pieces (at most
    # gpu_tail_most_splits) that fill the last waves, where _tail_split's model of the waves says that saves at least
    # gpu_tail_min_gain of the time (with no whole wave, every block split, the sum as for other k splits). A compute
    # unit running fewer work-groups than it holds runs each faster: one alone takes gpu_lone_time of a full wave's
    # time; a piece costs gpu_piece_steps BK steps more than its share of k (its prologue, its partial sums stored, its
    # arrival), and the last piece of a block half a step a piece to sum them. Fitted on an H200 (kernels, the 128 x 128
    # SIMT block, 264 slots): ViT-B/16 at batch 32, its MLP's output product (300 blocks, K 3072) 1111 us whole, 904 in
    # 2 uniform splits (+ 23 us of ksum), 866 as 264 whole + 36 in 7 pieces; the attention's (K 768) 246 + 23 -> 238;
    # the MLP's first (1200 blocks) 975 -> 949 in 5 pieces; but the qkv product (900 blocks, 108 left over) 656 -> 671
    # in 6; BERT-base's qkv (576) 465 -> 440. Below one wave: ResNet-50's layer4 3 x 3 convs at batch 32 (200
    # tensor-core blocks, 396 slots) 303 -> 215 + 8 us in 5, Inception-v3's Mixed_7a 3 x 3 (160) 115 -> 84 in 2; the
    # floor of a quarter wave leaves the batch-1 plans of the benchmark models as they were. Models, kernels at batch
    # 32: ViT-B/16 37981 -> 36252 us, BERT-base 23363 -> 22809, ResNet-50 9006 -> 8695, Inception-v3 17888 -> 16633.
    gpu_tail_split: bool = True
    gpu_tail_min_waves: float = 0.25
    gpu_tail_most_splits: int = 8
    gpu_tail_min_gain: float = 0.02
    gpu_lone_time: float = 0.6
    gpu_piece_steps: int = 8
    gpu_split_round_up: bool = False  # split k into ceil (not floor) of wanted / blocks: at least `want` work-groups
    # The last work-group of a block sums its k splits (gemm_tiled.cl SPLIT_SUM), not a second launch (SPLIT_K_SUM),
    # where each of its work items adds at most this many partial sums (SPLITS x TM x TN; 0: never), on
    # DeviceTarget.nvidia_ptx targets (the only ones with a device-scope fence). Measured on an H200 over the k-split
    # layers of MobileNet-v2, ResNet-50 and Inception-v3 at batch 1: 2-5 us faster each up to 52 sums (2x2 blocks,
    # k split 2-13 ways), even at 64, and 1-14 us slower from 80 on (4x4 blocks split 5-42 ways: that one
    # work-group's serial adds).
    gpu_split_sum_most: int = 64
    # A depthwise conv whose only reader is a 1x1 conv on gemm_tiled.cl is computed by that GEMM's B loader (CONV 2;
    # conv.fuse_depthwise), and that product wants gpu_fused_groups_per_cu work-groups per compute unit, k split into
    # as few as gpu_fused_split_min_ktiles BK steps: enough work-groups to hide the loader's taps. Measured on an H200
    # (MobileNet-v2's 17 depthwise + 1x1 pairs, kernels): batch 1 580 us unfused -> 635 fused with the 2 work-groups
    # per CU of other convolutions -> 431 with 4 (496 with 8 or 16); batch 32 3909 -> 2728 -> 2629 (2546, 2370).
    gpu_fuse_depthwise: bool = True
    gpu_fused_groups_per_cu: int = 4
    gpu_fused_split_min_ktiles: int = 1
    # An inverted residual block (1x1 expand conv -> depthwise conv -> 1x1 project conv, each read only by the next)
    # runs as one launch of block.cl (conv.fuse_blocks) where gpu_block_tile finds a blocking: tiles of at most
    # gpu_block_most_positions outputs, work items holding at most gpu_block_most_accumulators sums, and the
    # expanded channels split until there are gpu_block_groups_per_cu work-groups per CU. Only where each work-group
    # then takes at most gpu_block_most_chunks chunks of expanded channels (its loads, unpipelined, wait a round
    # trip to memory per chunk), and the last one adds at most gpu_block_most_sums partial sums a work item (its
    # serial adds, as gpu_split_sum_most): measured on an H200 over MobileNet-v2's 16 blocks (kernels, against the
    # two launches of the expand product and the projection with the depthwise conv in its loader), at batch 1 the
    # 28 x 28 blocks (one chunk, 35-42 sums) 22-25 -> 14-18 us, the 14 x 14 ones (one chunk, 156-228 sums) 21-29 ->
    # 19-25, but the 7 x 7 ones (930-2100 sums) 25-29 -> 54-71 and the 56 x 56 ones with 3 chunks 21-23 -> 25-30
    # (one chunk, with 4 work-groups per CU: 23-27 -> 17-28); the model 456 -> 410 us, 42 -> 32 launches. At batch 32
    # (1-8 chunks) 5 blocks faster and 11 slower, by no rule of their shapes: 2611 -> 3029 us all fused.
    gpu_fuse_blocks: bool = True
    gpu_block_work_items: int = 256
    gpu_block_most_positions: int = 64
    gpu_block_most_accumulators: int = 64
    gpu_block_local_bytes: int = 48 * 1024
    gpu_block_groups_per_cu: int = 4
    gpu_block_most_chunks: int = 1
    gpu_block_most_sums: int = 256
    gpu_concat_in_place: bool = True  # convs write straight into their slice of a channel Concat (placement.py)
    # a product whose rows only a Reshape and a Transpose to [Q, R, N] read stores them permuted, with the residual
    # Add after it (gemm.fold_output_transposes): ViT-B/16 at batch 32 on an H200, kernels 33345 -> 33171 us
    gpu_fold_output_transposes: bool = True
    # A convolution of several images on gemm_tiled.cl is one product with the images side by side along n (FOLD),
    # not one per image: a 7 x 7 map's 49 positions no longer pad a 64-wide block to 77 % full. Measured on an H200
    # at batch 32 (kernels): ResNet-50 10631 -> 10184 us, MobileNet-v2 2617 -> 2270, Inception-v3 20142 -> 18958.
    gpu_fold_images: bool = True
    # gemm_tiled.cl's convolutions on tensor-core tiles take k with the channels inner (C_INNER) where C is a
    # multiple of BK and the weights are constant or 1 x 1: a work item then finds its input element and its bounds
    # once a BK step, not for every element it loads (ResNet-50 at batch 32 on an H200, kernels: 9485 -> 9027 us,
    # Inception-v3 18057 -> 17679). The SIMT tiles lose by it (gpu_channels_inner_simt; Inception-v3 at batch 1
    # 1722 -> 1936 us, ResNet-50 938 -> 1031): their loads, cheaper than the tensor cores' products, are not the
    # bound there, and k in window order keeps a step's loads on a few input rows (cache lines shared between taps).
    gpu_channels_inner: bool = True
    gpu_channels_inner_simt: bool = False
    gpu_work_items_per_cu: int = 512  # the direct kernels (depthwise.cl, conv.cl) on a GPU: min_work_items per CU
    # attention.cl on a GPU: 32 query rows per work-group where that makes this many work-groups per compute unit,
    # else 16
    gpu_attention_groups_per_cu: int = 1
    gemv_k_lanes: int = 64  # gemv.cl with k-contiguous B: work items sharing one output column
    gemv_n_lanes: tuple[int, int] = (32, 8)  # gemv.cl with n-contiguous B: (columns, k slices) per work-group
    # CPU targets (pocl): gemm_cpu.cl and depthwise_cpu.cl (cpu.h says what pocl compiles well), and the work-group
    # of every launch that does not fix its own (cpu_local_size: pocl's own choice is often the whole grid, which
    # one thread runs). Measured on 2 cores of an AVX-512 Xeon (pocl 3.0): see cpu_gemm_blocking.
    cpu_vector: int = 16  # floats per vector of a work item's block: columns (gemm_cpu.cl), outputs (depthwise_cpu.cl)
    cpu_gemm_rows: int = 8  # gemm_cpu.cl: rows per work item, each a vector accumulator
    cpu_depthwise_rows: int = 4  # depthwise_cpu.cl: output rows per work item, each a vector accumulator
    cpu_groups_per_core: int = 4  # work-groups wanted per compute unit, for the threads to balance
    # gemm_cpu.cl: a work-group takes all row blocks of a panel of B's columns of at most this many bytes, so that
    # panel is read from memory once and then from L2 (cpu_gemm_local_size)
    cpu_gemm_panel_bytes: int = 512 * 1024
    cpu_concat_in_place: bool = True  # convs on gemm_cpu.cl / conv_cpu.cl write their slice of a channel Concat

    @property
    def gpu_tile_variants(self) -> int:
        """How many gemm_tiled.cl variants a node offers: the policy's choice, or one of ``gpu_tiles``."""
        return 1 + len(self.gpu_tiles)


DEFAULT_POLICY: Final = TilingPolicy()


@dataclass(frozen=True)
class DeviceTarget:
    """The device class a program is specialized for, and the tiling policy it plans with. Only GPUs change the
    kernels chosen (``is_gpu``): matrix products and group-1 convolutions then run on work-group tiled kernels
    (gemm_tiled.cl, gemv.cl) sized for ``compute_units``; any other target plans exactly as
    ``plan_graph(graph, policy=target.policy)`` does. Part of the program cache key through the source it produces,
    so it holds only what the plan reads.

        >>> DeviceTarget(is_gpu=True, compute_units=132, local_mem_bytes=49152, max_work_group_size=1024).is_gpu
        True
    """

    is_gpu: bool
    compute_units: int
    local_mem_bytes: int
    max_work_group_size: int
    policy: TilingPolicy = DEFAULT_POLICY
    # fp16_fp32 stores float tensors as half only on a GPU with cl_khr_fp16. Without it (NVIDIA's OpenCL, pocl)
    # every half is converted on load and store, and half storage measured slower everywhere on an H200 (device time
    # MobileNet-v2 606 vs 621 us, ResNet-50 1094 vs 970, ViT-B/16 4746 vs 3883; wall time +0.45 ms more for the
    # host's float16 conversions of inputs and outputs), and on pocl the CPU kernels are float only: there
    # fp16_fp32 plans as fp32 (the .mace file keeps its half weights; they widen on upload).
    half_storage: bool = True
    # mma.sync on TF32 through inline PTX (gemm_tiled.cl MMA): NVIDIA's OpenCL compiler takes PTX, sm_80 and later
    # have the instruction
    tensor_cores: bool = False
    # the tensor cores' products in one TF32 pass (operands rounded to 10 mantissa bits, as PyTorch's default
    # cuDNN convolutions do: about 2^-11 of a product lost) instead of fp32 accuracy's three (gemm_tiled.cl
    # MMA_PASSES); asked for by the user (GPUContextBuilder.set_tf32, MACE_TF32), only where tensor_cores
    tf32: bool = False
    # NVIDIA's OpenCL compiler, which takes inline PTX: membar.gl, the device-scope fence that lets the last
    # work-group of a block sum the k splits (gemm_tiled.cl SPLIT_SUM)
    nvidia_ptx: bool = False
    # a CPU device's floats per SIMD register (OpenCL's native vector width: 8 with AVX2, 16 with AVX-512), the
    # widest vector of the CPU kernels' blocks (Planner.cpu_vector; cpu_gemm_blocking says why); GPUs keep 16
    cpu_simd_floats: int = 16

    @classmethod
    def from_device(cls, device: Any, policy: TilingPolicy = DEFAULT_POLICY, tf32: bool = False) -> DeviceTarget:
        """The target of a ``pyopencl.Device``, planning with ``policy``; ``tf32`` where it has the tensor cores."""
        import pyopencl as cl  # only here: planning needs no OpenCL installation

        tensor_cores, gpu = _nvidia_sm80(device), bool(int(device.type) & int(cl.device_type.GPU))
        return cls(
            is_gpu=gpu,
            compute_units=int(device.max_compute_units),
            local_mem_bytes=int(device.local_mem_size),
            max_work_group_size=int(device.max_work_group_size),
            policy=policy,
            half_storage=gpu and "cl_khr_fp16" in device.extensions,
            tensor_cores=tensor_cores,
            tf32=tf32 and tensor_cores,
            nvidia_ptx=_nvidia(device),
            cpu_simd_floats=16 if gpu else int(device.native_vector_width_float) or 16,
        )

    @property
    def tiled(self) -> bool:
        """Whether the tiled GPU kernels apply: a GPU with room for their work-groups and local tiles."""
        return self.is_gpu and self.max_work_group_size >= 256 and self.local_mem_bytes >= 16 * 1024


def _nvidia(device: Any) -> bool:
    """A device of NVIDIA's OpenCL driver (the only one with cl_nv_device_attribute_query)."""
    return "cl_nv_device_attribute_query" in str(device.extensions)


def _nvidia_sm80(device: Any) -> bool:
    """An NVIDIA device of compute capability 8.0 or later (cl_nv_device_attribute_query says which)."""
    if not _nvidia(device):
        return False
    try:
        return int(device.compute_capability_major_nv) >= 8
    except Exception:  # an ICD that lists the extension but answers no query: no tensor cores, the SIMT tiles
        return False


# --- the portable kernels ---------------------------------------------------------------------------------------------


def gemm_tiling(g: GemmShape, floats: bool, least: int) -> tuple[int, int, int, int]:
    """(TM, TN, VEC_N, VEC_K) for gemm.cl: vectors along whichever of n or k is contiguous in memory; the biggest
    tile that leaves ``least`` work items."""
    batch = prod(g.batch)

    def items(tile: tuple[int, int, int, int]) -> int:
        return ceil_div(g.m, tile[0]) * ceil_div(g.n, tile[1]) * batch

    if floats and g.b_strides[1] == 1 and g.n >= 4:
        tiles = [(4, 8, 8, 1), (4, 4, 4, 1), (2, 4, 4, 1), (1, 4, 4, 1)] if g.n >= 8 else [(4, 4, 4, 1), (1, 4, 4, 1)]
        tm, tn, vec_n, vec_k = _biggest(tiles, items, least)
        return min(tm, g.m), tn, vec_n, vec_k
    if floats and g.a_strides[1] == 1 and g.b_strides[0] == 1 and g.k >= 8:
        return min(4, g.m), min(4, g.n), 1, 8
    return min(4, g.m), min(4, g.n), 1, 1


def conv_tiling(n: int, oc_per_group: int, groups: int, out_spatial: Sequence[int], least: int) -> tuple[int, int]:
    """(OCB, PB) for conv.cl: output channels per work item (a vector width dividing the group) and columns; the
    biggest block that leaves ``least`` work items."""
    ow, rows = out_spatial[-1], prod(out_spatial[:-1])
    blocks = [(b, min(p, ow)) for b, p in ((8, 4), (4, 4), (4, 2), (2, 2), (1, 1)) if oc_per_group % b == 0]
    return _biggest(blocks, lambda c: n * groups * (oc_per_group // c[0]) * rows * ceil_div(ow, c[1]), least)


def depthwise_tiling(n: int, oc: int, oh: int, ow: int, least: int) -> int:
    """PB for depthwise.cl: output columns per work item, a vector width; the widest that leaves ``least`` work
    items."""
    widths = [v for v in (8, 4, 2, 1) if v <= ow]
    return _biggest(widths, lambda v: n * oc * oh * ceil_div(ow, v), least)


# --- kernel variants: the tuner's choices -----------------------------------------------------------------------------
# A variant is a small integer per node that replaces one of the policy's choices; 0 is the policy itself. `mace tune`
# (variants.py) builds the model once per variant, times every node's launches and keeps the fastest per node; the
# choices are stored in the tuned-parameters file and planned in at the next start (a different source, so a
# different cached program). A variant a lowering does not offer plans as 0.

# conv.cl, depthwise.cl and gemm.cl: the policy's work-item floor, no floor (the biggest blocks), 4x the floor
WORK_ITEM_FLOOR_VARIANTS: Final = 3


def variant_floor(variant: int, floor: int) -> int:
    """The work-item floor (``least``) of a direct-kernel variant, ``floor`` being the policy's."""
    return (floor, 0, 4 * floor)[variant]


# gemm_cpu.cl, conv_cpu.cl and depthwise_cpu.cl: the policy's rows per work item, twice as many, half as many
CPU_ROW_VARIANTS: Final = 3


def variant_rows(variant: int, rows: int) -> int:
    """Rows per work item of a CPU-kernel variant, ``rows`` being the policy's (the kernels take up to 16)."""
    return (rows, min(16, 2 * rows), max(1, rows // 2))[variant]


# attention.cl on a GPU: the policy's rows per work-group, the other ones, the per-row form
ATTENTION_VARIANTS: Final = 3

# gemm_tiled.cl: the policy's tile, or one of policy.gpu_tiles (TilingPolicy.gpu_tile_variants in all)


def variant_tile(variant: int, policy: TilingPolicy) -> GemmTile | None:
    """The tile a gemm_tiled.cl variant forces (None: the policy's choice)."""
    return policy.gpu_tiles[variant - 1] if variant else None
