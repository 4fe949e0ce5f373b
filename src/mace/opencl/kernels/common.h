// Shared by every kernel template; emitted once at the top of a model's program.
//
// A buffer's element type is named by a storage tag (F32, F16, I64, I32, I8, U8, BOOL) that codegen defines per kernel
// argument (X_T, W_T, Y_T, ...). Kernels compute in float (or long for integer-only arithmetic) and go through
// LOAD/STORE, so one template serves fp32 storage and fp16 storage: half is only ever touched through
// vload_half/vstore_half, which OpenCL 1.2 provides without cl_khr_fp16.

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#define TYPE(t) CAT(TYPE_, t)
#define BITS(t) CAT(BITS_, t)
#define LOAD(t, p, i) CAT(LOAD_, t)(p, i)
#define STORE(t, p, i, v) CAT(STORE_, t)(p, i, v)

#define TYPE_F32 float
#define TYPE_F16 half
#define TYPE_I64 long
#define TYPE_I32 int
#define TYPE_I16 short
#define TYPE_I8 char
#define TYPE_U64 ulong
#define TYPE_U32 uint
#define TYPE_U16 ushort
#define TYPE_U8 uchar
#define TYPE_BOOL uchar

// Raw element types for copies (transpose, slice, concat, ...): bits move unchanged, whatever the tag.
#define BITS_F32 uint
#define BITS_F16 ushort
#define BITS_I64 long
#define BITS_I32 int
#define BITS_I16 short
#define BITS_I8 char
#define BITS_U64 ulong
#define BITS_U32 uint
#define BITS_U16 ushort
#define BITS_U8 uchar
#define BITS_BOOL uchar

#define LOAD_F32(p, i) ((p)[i])
#define LOAD_F16(p, i) vload_half((i), (p))
#define LOAD_I64(p, i) ((p)[i])
#define LOAD_I32(p, i) ((p)[i])
#define LOAD_I16(p, i) ((p)[i])
#define LOAD_I8(p, i) ((p)[i])
#define LOAD_U64(p, i) ((p)[i])
#define LOAD_U32(p, i) ((p)[i])
#define LOAD_U16(p, i) ((p)[i])
#define LOAD_U8(p, i) ((p)[i])
#define LOAD_BOOL(p, i) ((p)[i])

#define STORE_F32(p, i, v) ((p)[i] = (float)(v))
#define STORE_F16(p, i, v) vstore_half_rte((float)(v), (i), (p))
#define STORE_I64(p, i, v) ((p)[i] = (long)(v))
#define STORE_I32(p, i, v) ((p)[i] = (int)(v))
#define STORE_I16(p, i, v) ((p)[i] = (short)(v))
#define STORE_I8(p, i, v) ((p)[i] = (char)(v))
#define STORE_U64(p, i, v) ((p)[i] = (ulong)(v))
#define STORE_U32(p, i, v) ((p)[i] = (uint)(v))
#define STORE_U16(p, i, v) ((p)[i] = (ushort)(v))
#define STORE_U8(p, i, v) ((p)[i] = (uchar)(v))
#define STORE_BOOL(p, i, v) ((p)[i] = (uchar)((v) != 0))

// Floor modulo (ONNX Mod with fmod=0, numpy's mod): the result takes the divisor's sign; inf divisors keep a.
#define MOD_FLOOR(a, b) \
    ((fmod((a), (b)) != 0.0f && ((fmod((a), (b)) < 0.0f) != ((b) < 0.0f))) ? fmod((a), (b)) + (b) : fmod((a), (b)))

// Matrix products over broadcast batch dims (gemm.cl, gemm_tiled.cl, gemv.cl): adds the element offsets of batch index
// `batch` in A, B and C to aoff, boff and coff (declared by the caller). Use under `#if BATCH_RANK > 0`, with codegen's
// BATCH_SHAPE, A_BSTRIDES, B_BSTRIDES and C_BSTRIDES defined; the first dim takes what is left of the index.
#define BATCH_OFFSETS(batch)                                   \
    {                                                          \
        const int bshape_[BATCH_RANK] = {BATCH_SHAPE};         \
        const int bsa_[BATCH_RANK] = {A_BSTRIDES};             \
        const int bsb_[BATCH_RANK] = {B_BSTRIDES};             \
        const int bsc_[BATCH_RANK] = {C_BSTRIDES};             \
        int rem_ = (batch);                                    \
        for (int d_ = BATCH_RANK - 1; d_ >= 0; --d_) {         \
            const int idx_ = d_ > 0 ? rem_ % bshape_[d_] : rem_; \
            rem_ /= bshape_[d_];                               \
            aoff += idx_ * bsa_[d_];                           \
            boff += idx_ * bsb_[d_];                           \
            coff += idx_ * bsc_[d_];                           \
        }                                                      \
    }

// NaN-propagating max / min (IEEE maximum/minimum, numpy's np.maximum, ONNX Max/Min, MaxPool, ReduceMax): a NaN
// operand gives NaN. fmax/fmin return the other operand instead (fmax(NaN, 0) = 0), so they never serve ONNX ops.
// AT_LEAST / AT_MOST bound v by a non-NaN bound and keep a NaN v (Relu, Clip, HardSigmoid).
#define MAXNAN(a, b) ((a) > (b) || isnan(a) ? (a) : (b))
#define MINNAN(a, b) ((a) < (b) || isnan(a) ? (a) : (b))
#define AT_LEAST(v, lo) ((v) < (lo) ? (lo) : (v))
#define AT_MOST(v, hi) ((v) > (hi) ? (hi) : (v))

// Fused activations (ir.ACTIVATIONS); codegen defines ACTIVATE(v) from these. NaN in, NaN out (as onnxruntime).
#define ACT_NONE(v) (v)
#define ACT_RELU(v) AT_LEAST((v), 0.0f)
#define ACT_CLIP(v, lo, hi) AT_MOST(AT_LEAST((v), (lo)), (hi))
#define ACT_LEAKY_RELU(v, alpha) ((v) >= 0.0f ? (v) : (v) * (alpha))
#define ACT_SIGMOID(v) (1.0f / (1.0f + exp(-(v))))
#define ACT_HARD_SIGMOID(v, alpha, beta) AT_MOST(AT_LEAST((alpha) * (v) + (beta), 0.0f), 1.0f)
#define ACT_HARD_SWISH(v) ((v) * AT_MOST(AT_LEAST((v) * (1.0f / 6.0f) + 0.5f, 0.0f), 1.0f))
#define ACT_TANH(v) tanh(v)
#define ACT_SILU(v) ((v) / (1.0f + exp(-(v))))
// Gelu (erf form): s = 1/sqrt(2); GeluTanh: s = sqrt(2/pi), c = 0.044715 (the constants come from model/rules.py).
#define ACT_GELU(v, s) (0.5f * (v) * (1.0f + erf((v) * (s))))
#define ACT_GELU_TANH(v, s, c) (0.5f * (v) * (1.0f + tanh((s) * ((v) + (c) * (v) * (v) * (v)))))

// Vectors of n = 1, 2, 4 or 8 floats: vector arithmetic is what CPU drivers (pocl) turn into SIMD; GPUs split it
// into scalar registers at no cost. VLOADN reads n consecutive float-tensor elements from element i (any alignment).
#define VTYPE(n) CAT(VTYPE_, n)
#define VTYPE_1 float
#define VTYPE_2 float2
#define VTYPE_4 float4
#define VTYPE_8 float8
#define VLOADN(t, n, p, i) CAT(CAT(VLOAD_, t), CAT(_, n))(p, i)
#define VLOAD_F32_1(p, i) ((p)[i])
#define VLOAD_F32_2(p, i) vload2(0, (p) + (i))
#define VLOAD_F32_4(p, i) vload4(0, (p) + (i))
#define VLOAD_F32_8(p, i) vload8(0, (p) + (i))
#define VLOAD_F16_1(p, i) vload_half((i), (p))
#define VLOAD_F16_2(p, i) vload_half2(0, (p) + (i))
#define VLOAD_F16_4(p, i) vload_half4(0, (p) + (i))
#define VLOAD_F16_8(p, i) vload_half8(0, (p) + (i))
// Aligned vector k of a row (elements k * n .. k * n + n - 1) starting at p, n = 1, 2 or 4: the row kernels'
// (norm.cl, softmax.cl) loads and stores, whose rows are vector-aligned (ROW_LEN % VEC == 0).
#define ROW_VLOAD(t, n, p, k) CAT(CAT(ROW_VLOAD_, t), CAT(_, n))(p, k)
#define ROW_VLOAD_F32_1(p, k) ((p)[k])
#define ROW_VLOAD_F32_2(p, k) (((__global const float2*)(p))[k])
#define ROW_VLOAD_F32_4(p, k) (((__global const float4*)(p))[k])
#define ROW_VLOAD_F16_1(p, k) vload_half((k), (p))
#define ROW_VLOAD_F16_2(p, k) vload_half2((k), (p))
#define ROW_VLOAD_F16_4(p, k) vload_half4((k), (p))
#define ROW_VSTORE(t, n, p, k, v) CAT(CAT(ROW_VSTORE_, t), CAT(_, n))(p, k, v)
#define ROW_VSTORE_F32_1(p, k, v) ((p)[k] = (v))
#define ROW_VSTORE_F32_2(p, k, v) (((__global float2*)(p))[k] = (v))
#define ROW_VSTORE_F32_4(p, k, v) (((__global float4*)(p))[k] = (v))
#define ROW_VSTORE_F16_1(p, k, v) vstore_half_rte((v), (k), (p))
#define ROW_VSTORE_F16_2(p, k, v) vstore_half2_rte((v), (k), (p))
#define ROW_VSTORE_F16_4(p, k, v) vstore_half4_rte((v), (k), (p))
// Spills a vector into a private float array t[n] (for per-element epilogues).
#define VSPILL(n, v, t) CAT(VSPILL_, n)(v, t)
#define VSPILL_1(v, t) ((t)[0] = (v))
#define VSPILL_2(v, t) vstore2((v), 0, (t))
#define VSPILL_4(v, t) vstore4((v), 0, (t))
#define VSPILL_8(v, t) vstore8((v), 0, (t))
// Sum of a vector's lanes.
#define VSUM(n, v) CAT(VSUM_, n)(v)
#define VSUM_1(v) (v)
#define VSUM_2(v) ((v).s0 + (v).s1)
#define VSUM_4(v) dot((v), (float4)(1.0f))
#define VSUM_8(v) dot((v).lo + (v).hi, (float4)(1.0f))

// SPLIT_SUM (gemm_tiled.cl, block.cl): SPLITS work-groups each wrote their partial sums of one output block to
// global memory, and the last of them to finish sums them all. SPLITS_ARRIVE sets `last` in that one: each
// work-group counts its arrival in counts[block] (atomic_inc) after a device-scope fence, membar.gl in inline PTX,
// and the last sets the count back to zero for the next launch and fences again before it reads the others' sums
// (through a volatile pointer: this compute unit's L1 may hold stale lines of them). OpenCL 1.2 has no portable
// fence of that scope: NVIDIA compiles mem_fence(CLK_GLOBAL_MEM_FENCE) to membar.cta, and on an H200 that version
// read stale partial sums in a few runs out of hundreds. `arrived` is the caller's __local uint.
#define SPLITS_ARRIVE(counts, block, arrived, tid, last)            \
    asm volatile("membar.gl;" ::: "memory");                        \
    barrier(CLK_LOCAL_MEM_FENCE);                                   \
    if ((tid) == 0) (arrived) = atomic_inc((counts) + (block));     \
    barrier(CLK_LOCAL_MEM_FENCE);                                   \
    const bool last = (arrived) == SPLITS - 1;                      \
    if (last) {                                                     \
        if ((tid) == 0) (counts)[block] = 0;                        \
        asm volatile("membar.gl;" ::: "memory");                    \
    }
// ... and then, in that last work-group (`if (last)`), SPLITS_TOTALS sums outputs e = tid, tid + NT, ... below
// `count`, each over its SPLITS partial sums in ksum's order, four outputs at a time so that their loads are in flight
// together (one at a time, every work item waited a round trip to memory per output), and gives each total to
// DONE(e, total). The caller's macros say which outputs there are (VALID(e), e < count implied) and where partial
// sum s of output e is (AT(s, e), an index into `sums`: the partial sums through a volatile pointer).
#define SPLITS_TOTALS(count, sums, VALID, AT, DONE)                                                     \
    for (int e0_ = tid; e0_ < (count); e0_ += 4 * NT) {                                               \
        float t0_ = 0.0f, t1_ = 0.0f, t2_ = 0.0f, t3_ = 0.0f;                                         \
        const bool v0_ = VALID(e0_), v1_ = e0_ + NT < (count) && VALID(e0_ + NT);                    \
        const bool v2_ = e0_ + 2 * NT < (count) && VALID(e0_ + 2 * NT);                              \
        const bool v3_ = e0_ + 3 * NT < (count) && VALID(e0_ + 3 * NT);                              \
        for (int s_ = 0; s_ < SPLITS; ++s_) {                                                         \
            if (v0_) t0_ += (sums)[AT(s_, e0_)];                                                      \
            if (v1_) t1_ += (sums)[AT(s_, e0_ + NT)];                                                 \
            if (v2_) t2_ += (sums)[AT(s_, e0_ + 2 * NT)];                                             \
            if (v3_) t3_ += (sums)[AT(s_, e0_ + 3 * NT)];                                             \
        }                                                                                              \
        if (v0_) DONE(e0_, t0_);                                                                      \
        if (v1_) DONE(e0_ + NT, t1_);                                                                 \
        if (v2_) DONE(e0_ + 2 * NT, t2_);                                                             \
        if (v3_) DONE(e0_ + 3 * NT, t3_);                                                             \
    }
