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

// cpu_rowN(row, iw, sw, width): the n inputs row[iw + j * sw], j < n, zero where they fall outside [0, width) (the
// padding): one vector load at stride 1, two with the even lanes kept at stride 2 (2n <= 16), else lane by lane.
// Functions, not macros: one definition in the program; user functions are inlined (the builtins are not).
#define CPU_ROW_LANE(j) ((iw + (j) * sw >= 0 && iw + (j) * sw < width) ? row[iw + (j) * sw] : 0.0f)
static inline float4 cpu_row4(__global const float* row, int iw, int sw, int width)
{
    if (iw >= 0 && iw + sw * 4 <= width) {
        if (sw == 1) return CPU_VLOAD(4, row, iw);
        if (sw == 2) return CPU_VLOAD(8, row, iw).even;
    }
    return (float4)(CPU_LANES(4, CPU_ROW_LANE));
}
static inline float8 cpu_row8(__global const float* row, int iw, int sw, int width)
{
    if (iw >= 0 && iw + sw * 8 <= width) {
        if (sw == 1) return CPU_VLOAD(8, row, iw);
        if (sw == 2) return CPU_VLOAD(16, row, iw).even;
    }
    return (float8)(CPU_LANES(8, CPU_ROW_LANE));
}
static inline float16 cpu_row16(__global const float* row, int iw, int sw, int width)
{
    if (sw == 1 && iw >= 0 && iw + 16 <= width) return CPU_VLOAD(16, row, iw);
    return (float16)(CPU_LANES(16, CPU_ROW_LANE));
}
#undef CPU_ROW_LANE
#define CPU_ROW(n, row, iw, sw, width) CAT(cpu_row, n)(row, iw, sw, width)
