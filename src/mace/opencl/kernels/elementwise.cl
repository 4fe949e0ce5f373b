// Broadcasting n-ary elementwise op: out[i] = EXPR(v0, v1, v2, v3), vK being input K at its broadcast offset.
// Defines: KERNEL_NAME; NUM_IN (1..4); storage tags T0..T3, TY; ACC_T, the compute type (float, or long when every
// operand is an integer); EXPR(v0, v1, v2, v3); SIZE (output elements); FLAT=1 when every input is laid out like the
// output, else RANK, SHAPE (collapsed output dims) and S0..S3 (each input's element strides over SHAPE, 0 where it
// broadcasts).

__kernel void KERNEL_NAME(__global const TYPE(T0)* in0,
#if NUM_IN > 1
                          __global const TYPE(T1)* in1,
#endif
#if NUM_IN > 2
                          __global const TYPE(T2)* in2,
#endif
#if NUM_IN > 3
                          __global const TYPE(T3)* in3,
#endif
                          __global TYPE(TY)* out)
{
    const int gid = get_global_id(0);
    if (gid >= SIZE) return;
#if FLAT
    const int o0 = gid, o1 = gid, o2 = gid, o3 = gid;
#else
    const int shape[RANK] = {SHAPE};
    const int s0[RANK] = {S0};
#if NUM_IN > 1
    const int s1[RANK] = {S1};
#endif
#if NUM_IN > 2
    const int s2[RANK] = {S2};
#endif
#if NUM_IN > 3
    const int s3[RANK] = {S3};
#endif
    int o0 = 0, o1 = 0, o2 = 0, o3 = 0;
    int rem = gid;
    for (int d = RANK - 1; d >= 0; --d) {
        const int idx = d > 0 ? rem % shape[d] : rem;
        rem /= shape[d];
        o0 += idx * s0[d];
#if NUM_IN > 1
        o1 += idx * s1[d];
#endif
#if NUM_IN > 2
        o2 += idx * s2[d];
#endif
#if NUM_IN > 3
        o3 += idx * s3[d];
#endif
    }
#endif
    const ACC_T v0 = LOAD(T0, in0, o0);
#if NUM_IN > 1
    const ACC_T v1 = LOAD(T1, in1, o1);
#else
    const ACC_T v1 = 0;
#endif
#if NUM_IN > 2
    const ACC_T v2 = LOAD(T2, in2, o2);
#else
    const ACC_T v2 = 0;
#endif
#if NUM_IN > 3
    const ACC_T v3 = LOAD(T3, in3, o3);
#else
    const ACC_T v3 = 0;
#endif
    STORE(TY, out, gid, EXPR(v0, v1, v2, v3));
}
