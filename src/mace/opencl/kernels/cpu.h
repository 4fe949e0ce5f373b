// Shared by the CPU kernels (*_cpu.cl); emitted after common.h in programs planned for a CPU target only.
//
// What pocl's CPU device compiles well, measured on its pthread device (a work-group runs as a loop over work items):
// - operators, not builtins: vloadn, mad, ... stay calls in the compiled work-group (they are not inlined), while
//   `a * b + c` contracts to an FMA under -cl-mad-enable. Loads go through a 4-byte aligned vector type, valid at
//   any float offset (one unaligned vector load).
// - no private arrays: pocl keeps them in per-work-item context memory, so an accumulator array lives in memory.
//   Register blocks are named variables, spelled out by CPU_ROWS (statements) and CPU_LANES (comma-separated
//   lists). Every name here is prefixed: a kernel chunk #undefs its defines after it, and a ROWS define would
//   take a macro of that name with it.

typedef float cpu_floatu4 __attribute__((ext_vector_type(4), aligned(4)));
typedef float cpu_floatu8 __attribute__((ext_vector_type(8), aligned(4)));
typedef float cpu_floatu16 __attribute__((ext_vector_type(16), aligned(4)));

#define CPU_VTYPE(n) CAT(float, n)
#define CPU_VLOAD(n, p, i) (*(__global const CAT(cpu_floatu, n)*)((p) + (i)))
#define CPU_VSTORE(n, p, i, v) (*(__global CAT(cpu_floatu, n)*)((p) + (i)) = (v))

#define CPU_ROWS(n, X) CAT(CPU_ROWS_, n)(X)
#define CPU_ROWS_1(X) X(0)
#define CPU_ROWS_2(X) X(0) X(1)
#define CPU_ROWS_4(X) CPU_ROWS_2(X) X(2) X(3)
#define CPU_ROWS_8(X) CPU_ROWS_4(X) X(4) X(5) X(6) X(7)
#define CPU_ROWS_16(X) CPU_ROWS_8(X) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

#define CPU_LANES(n, X) CAT(CPU_LANES_, n)(X)
#define CPU_LANES_4(X) X(0), X(1), X(2), X(3)
#define CPU_LANES_8(X) CPU_LANES_4(X), X(4), X(5), X(6), X(7)
#define CPU_LANES_16(X) CPU_LANES_8(X), X(8), X(9), X(10), X(11), X(12), X(13), X(14), X(15)

// cpu_rowN(x, row, iw, sw, width, size, fill): the n inputs x[row + iw + j * sw], j < n, of the row at element
// ``row`` of a tensor of ``size`` elements, ``fill`` where they fall outside [0, width) (the padding: 0 for
// convolutions and sums, -INFINITY for max pools): inside the row, one vector load at stride 1, two with the even
// lanes kept at stride 2 (2n <= 16); across its edge the same load wherever it stays inside the tensor, the lanes
// outside the row then replaced by ``fill`` (on a 13-wide map 2 of a conv's 6 taps per row are edges, which lane by
// lane took most of its time); else lane by lane.
// Functions, not macros: one definition in the program; user functions are inlined (the builtins are not).
#define CPU_ROW_LANE(j) ((iw + (j) * sw >= 0 && iw + (j) * sw < width) ? r[iw + (j) * sw] : fill)
#define CPU_ROW_INDEX(j) j
#define CPU_ROW_EDGE(n, v)                                                                  \
    {                                                                                       \
        const CAT(int, n) at = (CAT(int, n))(CPU_LANES(n, CPU_ROW_INDEX)) * sw + iw;        \
        return ((at >= 0) & (at < width)) ? (v) : (CPU_VTYPE(n))(fill);                     \
    }
// cpu_row4 and cpu_row8: stride 1 is one vector load, stride 2 the even lanes of one twice as wide
#define CPU_ROW_FN(n, n2)                                                                                 \
    static inline CAT(float, n) CAT(cpu_row, n)(__global const float* x, int row, int iw, int sw, int width, \
                                                int size, float fill)                                     \
    {                                                                                                     \
        __global const float* r = x + row;                                                                \
        const bool inside = iw >= 0 && iw + sw * n <= width, held = row + iw >= 0 && row + iw + sw * n <= size; \
        if (sw == 1 && (inside || held)) {                                                                \
            if (inside) return CPU_VLOAD(n, r, iw);                                                       \
            CPU_ROW_EDGE(n, CPU_VLOAD(n, r, iw))                                                          \
        }                                                                                                 \
        if (sw == 2 && (inside || held)) {                                                                \
            if (inside) return CPU_VLOAD(n2, r, iw).even;                                                 \
            CPU_ROW_EDGE(n, CPU_VLOAD(n2, r, iw).even)                                                    \
        }                                                                                                 \
        return (CAT(float, n))(CPU_LANES(n, CPU_ROW_LANE));                                               \
    }
CPU_ROW_FN(4, 8)
CPU_ROW_FN(8, 16)
#undef CPU_ROW_FN
static inline float16 cpu_row16(__global const float* x, int row, int iw, int sw, int width, int size, float fill)
{
    __global const float* r = x + row;
    if (sw == 1 && iw >= 0 && iw + 16 <= width) return CPU_VLOAD(16, r, iw);
    if (sw == 1 && row + iw >= 0 && row + iw + 16 <= size) CPU_ROW_EDGE(16, CPU_VLOAD(16, r, iw))
    return (float16)(CPU_LANES(16, CPU_ROW_LANE));
}
#undef CPU_ROW_LANE
#undef CPU_ROW_INDEX
#undef CPU_ROW_EDGE
#define CPU_ROW(n, x, row, iw, sw, width, size) CAT(cpu_row, n)(x, row, iw, sw, width, size, 0.0f)
#define CPU_ROW_FILL(n, x, row, iw, sw, width, size, fill) CAT(cpu_row, n)(x, row, iw, sw, width, size, fill)

// The same for 4-byte elements moved as bits (copy_cpu.cl): unaligned uint vectors.
typedef uint cpu_uintu4 __attribute__((ext_vector_type(4), aligned(4)));
typedef uint cpu_uintu8 __attribute__((ext_vector_type(8), aligned(4)));
typedef uint cpu_uintu16 __attribute__((ext_vector_type(16), aligned(4)));
#define CPU_UVTYPE(n) CAT(uint, n)
#define CPU_UVLOAD(n, p, i) (*(__global const CAT(cpu_uintu, n)*)((p) + (i)))
#define CPU_UVSTORE(n, p, i, v) (*(__global CAT(cpu_uintu, n)*)((p) + (i)) = (v))

// Lane j of a vector (j < 16), and statements over every lane (stores scattered lane by lane).
#define CPU_LANE(v, j) (v).CAT(s, CAT(CPU_HEX_, j))
#define CPU_HEX_0 0
#define CPU_HEX_1 1
#define CPU_HEX_2 2
#define CPU_HEX_3 3
#define CPU_HEX_4 4
#define CPU_HEX_5 5
#define CPU_HEX_6 6
#define CPU_HEX_7 7
#define CPU_HEX_8 8
#define CPU_HEX_9 9
#define CPU_HEX_10 a
#define CPU_HEX_11 b
#define CPU_HEX_12 c
#define CPU_HEX_13 d
#define CPU_HEX_14 e
#define CPU_HEX_15 f

// The largest lane and the sum of the lanes of a float vector of n = 4, 8 or 16, by halves (operators, no calls).
// (cpu_hmax is for vectors without NaN lanes: a max kept as `v > m ? v : m` from -INFINITY has none.)
static inline float cpu_hmax4(float4 v)
{
    const float2 h = v.lo > v.hi ? v.lo : v.hi;
    return h.x > h.y ? h.x : h.y;
}
static inline float cpu_hmax8(float8 v) { return cpu_hmax4(v.lo > v.hi ? v.lo : v.hi); }
static inline float cpu_hmax16(float16 v) { return cpu_hmax8(v.lo > v.hi ? v.lo : v.hi); }
static inline float cpu_hsum4(float4 v)
{
    const float2 h = v.lo + v.hi;
    return h.x + h.y;
}
static inline float cpu_hsum8(float8 v) { return cpu_hsum4(v.lo + v.hi); }
static inline float cpu_hsum16(float16 v) { return cpu_hsum8(v.lo + v.hi); }
#define CPU_HMAX(n, v) CAT(cpu_hmax, n)(v)
#define CPU_HSUM(n, v) CAT(cpu_hsum, n)(v)
