// Strided copy on a CPU target, 4-byte elements moved as bits: indexing.cl's STRIDED_COPY contract, written for pocl
// (cpu.h). The view is ROWS rows of INNER elements (its last dim; the planner folds the others into the row offset
// expressions SRC_ROW(r) and DST_ROW(r), so no work item divides per dim or reads a shape array). One work item moves
// VW consecutive elements of a row: one vector load where the source is contiguous along the row (SRC_IS == 1), else
// lane by lane, and one vector store where the destination is (DST_IS == 1). The last block of a row is shifted
// back to end at INNER (VW <= INNER), rewriting the same values, as in gemm_cpu.cl.
// Defines: KERNEL_NAME; ROWS INNER VW (1, 4, 8 or 16); SRC_BASE SRC_IS SRC_ROW(r); DST_BASE DST_IS DST_ROW(r).
// Global size: (ceil(INNER / VW), ROWS).

__kernel void KERNEL_NAME(__global const uint* src, __global uint* dst)
{
    const int ib = get_global_id(0) * VW, r = get_global_id(1);
    const int i0 = ib < INNER - VW ? ib : INNER - VW;
    __global const uint* s = src + (SRC_BASE + SRC_ROW(r) + i0 * SRC_IS);
    __global uint* d = dst + (DST_BASE + DST_ROW(r) + i0 * DST_IS);
#if VW == 1
    d[0] = s[0];
#else
#if SRC_IS == 1
    const CPU_UVTYPE(VW) v = CPU_UVLOAD(VW, s, 0);
#else
#define COPY_CPU_LANE(j) s[(j) * SRC_IS]
    const CPU_UVTYPE(VW) v = (CPU_UVTYPE(VW))(CPU_LANES(VW, COPY_CPU_LANE));
#undef COPY_CPU_LANE
#endif
#if DST_IS == 1
    CPU_UVSTORE(VW, d, 0, v);
#else
#define COPY_CPU_STORE(j) d[(j) * DST_IS] = CPU_LANE(v, j);
    CPU_ROWS(VW, COPY_CPU_STORE)
#undef COPY_CPU_STORE
#endif
#endif
}
