/* backend/cuda/attn_prefill.cu: attention for prompt rows over the paged KV
 * cache, which also attends to cached prefix blocks (so chunked prefill and
 * prefix caching work): a flash-attention kernel on tensor cores (bf16
 * cache, head_dim 64 or 128) and a float32 tiled kernel with online softmax
 * for the other shapes, the float32 cache and INFERD_CUDA_PREFILL=f32. */
#include <math.h>

#include "backend/cuda/attn_prefill.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/tape.cuh"

#define ATT_BK 32      /* keys per prefill attention tile (one per lane) */

static size_t prefill_smem(int dpl)
{
    int hdp = dpl * 32;
    return sizeof(float) * ((size_t)ATT_BQ * hdp + (size_t)ATT_BK * (hdp + 1) +
                            (size_t)ATT_BK * hdp + (size_t)ATT_BQ * ATT_BK);
}

/* Prefill: one block per (tile of ATT_BQ rows of one sequence, head). Key
 * tiles of ATT_BK go through shared memory; each warp keeps 4 rows' running
 * max, sum and output (online softmax), so the score matrix never exists.
 * Keys come from the paged cache, so cached prefix blocks count as context. */
template <typename T, int DPL>
__global__ void __launch_bounds__(128)
attn_prefill_kernel(const float *q, const T *kc, const T *vc, int heads, int kv_heads, int hd,
                    float scale, const int32_t *tiles, const int32_t *q_start,
                    const int32_t *block_table, int max_blocks, int block_size,
                    const int32_t *pos, float *out)
{
    dep_open();
    dep_wait();
    constexpr int HDP = DPL * 32, RPW = ATT_BQ / 4;
    extern __shared__ float smem[];
    float *Qs = smem, *Ks = Qs + ATT_BQ * HDP, *Vs = Ks + ATT_BK * (HDP + 1),
          *Ps = Vs + ATT_BK * HDP;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, h = blockIdx.y;
    const int s = tiles[2 * blockIdx.x], row0 = tiles[2 * blockIdx.x + 1];
    const int nrows = min(ATT_BQ, q_start[s + 1] - row0), kv_dim = kv_heads * hd;
    const int64_t koff = (int64_t)(h / (heads / kv_heads)) * hd;
    const int32_t *bt = block_table + (int64_t)s * max_blocks;
    int n_keys = 0;
    for (int r = 0; r < nrows; r++)
        n_keys = max(n_keys, pos[row0 + r] + 1);
    for (int i = threadIdx.x; i < ATT_BQ * HDP; i += blockDim.x) {
        int r = i / HDP, d = i % HDP;
        Qs[i] = r < nrows && d < hd ? q[((int64_t)(row0 + r) * heads + h) * hd + d] * scale
                                    : 0.0f;
    }
    int qpos[RPW];
    float m[RPW], l[RPW], acc[RPW][DPL];
#pragma unroll
    for (int rr = 0; rr < RPW; rr++) {
        int r = warp * RPW + rr;
        qpos[rr] = r < nrows ? pos[row0 + r] : -1;
        m[rr] = -INFINITY;
        l[rr] = 0.0f;
#pragma unroll
        for (int d = 0; d < DPL; d++)
            acc[rr][d] = 0.0f;
    }
    __shared__ int64_t slots[ATT_BK];
    for (int kb = 0; kb < n_keys; kb += ATT_BK) {
        __syncthreads(); /* the previous tile is consumed (and Qs is written) */
        if (threadIdx.x < ATT_BK) {
            int key = kb + threadIdx.x;
            slots[threadIdx.x] = key < n_keys ? ((int64_t)bt[key / block_size] * block_size +
                                                 key % block_size) * kv_dim + koff
                                              : -1;
        }
        __syncthreads();
        for (int i = threadIdx.x; i < ATT_BK * HDP; i += blockDim.x) {
            int j = i / HDP, d = i % HDP;
            int64_t base = slots[j];
            float kv = 0.0f, vv = 0.0f;
            if (base >= 0 && d < hd) {
                kv = to_f(kc[base + d]);
                vv = to_f(vc[base + d]);
            }
            Ks[j * (HDP + 1) + d] = kv;
            Vs[j * HDP + d] = vv;
        }
        __syncthreads();
        const int key = kb + lane;
#pragma unroll
        for (int rr = 0; rr < RPW; rr++) {
            if (qpos[rr] < 0 || kb > qpos[rr]) /* uniform across the warp */
                continue;
            const float *qv = Qs + (warp * RPW + rr) * HDP;
            float sc = -INFINITY;
            if (key <= qpos[rr]) {
                float dot = 0.0f;
                for (int d = 0; d < hd; d++)
                    dot += qv[d] * Ks[lane * (HDP + 1) + d];
                sc = dot;
            }
            float mn = fmaxf(m[rr], warp_max(sc)); /* finite: key kb is always allowed */
            float p = sc == -INFINITY ? 0.0f : expf(sc - mn);
            float corr = expf(m[rr] - mn);
            l[rr] = l[rr] * corr + warp_sum(p);
            float *pr = Ps + (warp * RPW + rr) * ATT_BK;
            pr[lane] = p;
            __syncwarp();
#pragma unroll
            for (int d = 0; d < DPL; d++)
                acc[rr][d] *= corr;
            for (int j = 0; j < ATT_BK; j++) {
                float pj = pr[j];
#pragma unroll
                for (int d = 0; d < DPL; d++)
                    acc[rr][d] += pj * Vs[j * HDP + lane + 32 * d];
            }
            __syncwarp();
            m[rr] = mn;
        }
    }
#pragma unroll
    for (int rr = 0; rr < RPW; rr++) {
        if (qpos[rr] < 0)
            continue;
        float inv = 1.0f / l[rr];
        int64_t o = ((int64_t)(row0 + warp * RPW + rr) * heads + h) * hd;
#pragma unroll
        for (int d = 0; d < DPL; d++) {
            int i = lane + 32 * d;
            if (i < hd)
                out[o + i] = acc[rr][d] * inv;
        }
    }
}

/* ---- prefill attention on tensor cores (bf16 cache, head_dim 64 or 128) ----
 * One block of 4 warps per (tile of FA_BQ rows of one sequence, head); each
 * warp owns 16 rows. S = Q K^T and O += P V are mma.sync m16n8k16 bf16
 * products with float32 accumulation; the score fragment of two key groups
 * is the P operand as it stands (no trip through shared memory). With
 * SPLIT, Q and P are each a bf16 high part plus a bf16 remainder (two
 * products each), so rounding them costs no more than the bf16 cache does;
 * without it (--matmul-precision bfloat16) one product each. */
#define FA_BK 64

__device__ __forceinline__ void mma_bf16_16816(float c[4], const uint32_t a[4], uint32_t b0,
                                               uint32_t b1)
{
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap(); /* prefill_mma does not launch it below sm_80 */
#endif
}

/* Two floats as packed bf16 (lo in the low half), and what rounding left. */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}
__device__ __forceinline__ uint32_t pack_bf16_rest(float lo, float hi, uint32_t packed)
{
    __nv_bfloat162 v = *(__nv_bfloat162 *)&packed;
    return pack_bf16(lo - __low2float(v), hi - __high2float(v));
}

template <int HD, int SPLIT>
__global__ void __launch_bounds__(128)
attn_prefill_mma_kernel(const float *q, const __nv_bfloat16 *kc, const __nv_bfloat16 *vc,
                        int heads, int kv_heads, float scale, const int32_t *tiles,
                        const int32_t *q_start, const int32_t *block_table, int max_blocks,
                        int block_size, const int32_t *pos, float *out)
{
    dep_open();
    dep_wait();
    constexpr int KP = HD + 8, VP = FA_BK + 8, KS = HD / 16, NT = FA_BK / 8, ON = HD / 8;
    __shared__ __align__(16) __nv_bfloat16 Ks[FA_BK * KP];
    __shared__ __align__(16) __nv_bfloat16 Vt[HD * VP];
    __shared__ int64_t slots[FA_BK];
    __shared__ int s_keys;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, s = tiles[2 * blockIdx.x], row0 = tiles[2 * blockIdx.x + 1];
    const int nrows = min(FA_BQ, q_start[s + 1] - row0), kv_dim = kv_heads * HD;
    const int64_t koff = (int64_t)(h / (heads / kv_heads)) * HD;
    const int32_t *bt = block_table + (int64_t)s * max_blocks;
    const int r0 = warp * 16 + g, r1 = r0 + 8;
    const int p0 = r0 < nrows ? pos[row0 + r0] : -1, p1 = r1 < nrows ? pos[row0 + r1] : -1;
    int wmax = max(p0, p1);
    for (int o = 16; o; o >>= 1)
        wmax = max(wmax, __shfl_xor_sync(0xffffffffu, wmax, o));
    if (tid == 0)
        s_keys = 0;
    __syncthreads();
    if (lane == 0)
        atomicMax(&s_keys, wmax + 1);
    __syncthreads();
    const int n_keys = s_keys;

    uint32_t qa[KS][4], ql[SPLIT ? KS : 1][4];
#pragma unroll
    for (int kk = 0; kk < KS; kk++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int r = (j & 1) ? r1 : r0, col = kk * 16 + 2 * t + ((j & 2) ? 8 : 0);
            float x0 = 0, x1 = 0;
            if (r < nrows) {
                const float *src = q + ((int64_t)(row0 + r) * heads + h) * HD + col;
                x0 = src[0] * scale;
                x1 = src[1] * scale;
            }
            qa[kk][j] = pack_bf16(x0, x1);
            if (SPLIT)
                ql[kk][j] = pack_bf16_rest(x0, x1, qa[kk][j]);
        }
    float o[ON][4];
#pragma unroll
    for (int i = 0; i < ON; i++)
        o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0, l1 = 0;

    for (int kb = 0; kb < n_keys; kb += FA_BK) {
        __syncthreads(); /* the previous tile is consumed */
        if (tid < FA_BK) {
            const int key = kb + tid;
            slots[tid] = key < n_keys ? ((int64_t)bt[key / block_size] * block_size +
                                         key % block_size) * kv_dim + koff
                                      : -1;
        }
        __syncthreads();
        /* consecutive threads take consecutive keys: conflict-free stores of
         * the transposed V */
        for (int i = tid; i < FA_BK * (HD / 8); i += blockDim.x) {
            const int j = i % FA_BK, c = i / FA_BK;
            const int64_t base = slots[j];
            uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
            if (base >= 0) {
                kv = *(const uint4 *)(kc + base + c * 8);
                vv = *(const uint4 *)(vc + base + c * 8);
            }
            *(uint4 *)(Ks + j * KP + c * 8) = kv;
            const __nv_bfloat16 *ve = (const __nv_bfloat16 *)&vv;
#pragma unroll
            for (int u = 0; u < 8; u++)
                Vt[(c * 8 + u) * VP + j] = ve[u];
        }
        __syncthreads();
        if (kb > wmax) /* no row of this warp sees these keys */
            continue;
        float sc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0;
            const __nv_bfloat16 *kr = Ks + (nt * 8 + g) * KP + 2 * t;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                const uint32_t b0 = *(const uint32_t *)(kr + kk * 16);
                const uint32_t b1 = *(const uint32_t *)(kr + kk * 16 + 8);
                mma_bf16_16816(sc[nt], qa[kk], b0, b1);
                if (SPLIT)
                    mma_bf16_16816(sc[nt], ql[kk], b0, b1);
            }
        }
        float mx0 = m0, mx1 = m1;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = kb + nt * 8 + 2 * t + (e & 1);
                if (key > ((e & 2) ? p1 : p0))
                    sc[nt][e] = -INFINITY;
                if (e & 2)
                    mx1 = fmaxf(mx1, sc[nt][e]);
                else
                    mx0 = fmaxf(mx0, sc[nt][e]);
            }
#pragma unroll
        for (int off = 1; off <= 2; off <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
        }
        /* a row that has seen no key yet keeps max -inf: use 0 there so
         * exp gives 0 and never NaN */
        const float b0 = mx0 == -INFINITY ? 0.0f : mx0, b1 = mx1 == -INFINITY ? 0.0f : mx1;
        const float c0 = expf(m0 - b0), c1 = expf(m1 - b1);
        m0 = mx0;
        m1 = mx1;
        l0 *= c0;
        l1 *= c1;
#pragma unroll
        for (int i = 0; i < ON; i++) {
            o[i][0] *= c0;
            o[i][1] *= c0;
            o[i][2] *= c1;
            o[i][3] *= c1;
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            sc[nt][0] = expf(sc[nt][0] - b0);
            sc[nt][1] = expf(sc[nt][1] - b0);
            sc[nt][2] = expf(sc[nt][2] - b1);
            sc[nt][3] = expf(sc[nt][3] - b1);
            l0 += sc[nt][0] + sc[nt][1];
            l1 += sc[nt][2] + sc[nt][3];
        }
#pragma unroll
        for (int kk = 0; kk < FA_BK / 16; kk++) {
            uint32_t pa[4], pl[4];
            pa[0] = pack_bf16(sc[2 * kk][0], sc[2 * kk][1]);
            pa[1] = pack_bf16(sc[2 * kk][2], sc[2 * kk][3]);
            pa[2] = pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
            pa[3] = pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
            if (SPLIT) {
                pl[0] = pack_bf16_rest(sc[2 * kk][0], sc[2 * kk][1], pa[0]);
                pl[1] = pack_bf16_rest(sc[2 * kk][2], sc[2 * kk][3], pa[1]);
                pl[2] = pack_bf16_rest(sc[2 * kk + 1][0], sc[2 * kk + 1][1], pa[2]);
                pl[3] = pack_bf16_rest(sc[2 * kk + 1][2], sc[2 * kk + 1][3], pa[3]);
            }
#pragma unroll
            for (int i = 0; i < ON; i++) {
                const __nv_bfloat16 *vr = Vt + (i * 8 + g) * VP + kk * 16 + 2 * t;
                const uint32_t v0 = *(const uint32_t *)vr, v1 = *(const uint32_t *)(vr + 8);
                mma_bf16_16816(o[i], pa, v0, v1);
                if (SPLIT)
                    mma_bf16_16816(o[i], pl, v0, v1);
            }
        }
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, off);
        l1 += __shfl_xor_sync(0xffffffffu, l1, off);
    }
    const float i0 = l0 > 0 ? 1.0f / l0 : 0.0f, i1 = l1 > 0 ? 1.0f / l1 : 0.0f;
#pragma unroll
    for (int i = 0; i < ON; i++) {
        const int col = i * 8 + 2 * t;
        if (r0 < nrows) {
            float *d = out + ((int64_t)(row0 + r0) * heads + h) * HD + col;
            d[0] = o[i][0] * i0;
            d[1] = o[i][1] * i0;
        }
        if (r1 < nrows) {
            float *d = out + ((int64_t)(row0 + r1) * heads + h) * HD + col;
            d[0] = o[i][2] * i1;
            d[1] = o[i][3] * i1;
        }
    }
}

/* ---- launches ---- */

int cu_prefill_mma_ok(const cu_backend *b, int hd)
{
    return cu_kv_bf16(b) && (hd == 64 || hd == 128) && !b->att_f32pre && b->cc_major >= 8;
}

int cu_prefill_mma(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                   int kv_heads, int hd, float scale, const be_attn_layout *l,
                   const int32_t *tiles, int n_tiles, float *out)
{
    if (!cu_prefill_mma_ok(b, hd))
        return 0;
    if (n_tiles == 0)
        return 1;
    dim3 grid((unsigned)n_tiles, (unsigned)heads);
    const __nv_bfloat16 *k = (const __nv_bfloat16 *)kc, *v = (const __nv_bfloat16 *)vc;
    const int *qs = cu_dev_idx(b, l->q_start), *btab = cu_dev_idx(b, l->block_table),
              *pos = cu_dev_idx(b, l->pos);
    prof_begin(b);
#define FA_LAUNCH(HD, SPLIT)                                                                       \
    launch(b, attn_prefill_mma_kernel<HD, SPLIT>, grid, 128, 0, q, k, v, heads, kv_heads, scale,   \
           tiles, qs, btab, l->max_blocks, l->block_size, pos, out)
    const int split = !cu_matmul_bf16(b);
    if (hd == 128 && split)
        FA_LAUNCH(128, 1);
    else if (hd == 128)
        FA_LAUNCH(128, 0);
    else if (split)
        FA_LAUNCH(64, 1);
    else
        FA_LAUNCH(64, 0);
#undef FA_LAUNCH
    LAUNCHED(b, "attn_prefill_mma_kernel");
    prof_end(b, P_ATT_PRE);
    return 1;
}

/* The float32 prefill kernel over the step's ATT_BQ-row tiles. */
template <typename T, int DPL> struct prefill_op {
    static void run(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                    int kv_heads, int hd, float scale, const be_attn_layout *l,
                    const int32_t *qs, const int32_t *btab, const int32_t *pos, float *out)
    {
        size_t smem = prefill_smem(DPL);
        if (smem > 48 * 1024 &&
            CK(b, cudaFuncSetAttribute(attn_prefill_kernel<T, DPL>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
            return;
        dim3 grid((unsigned)b->n_tiles, (unsigned)heads);
        prof_begin(b);
        launch(b, attn_prefill_kernel<T, DPL>, grid, 128, smem, q, (const T *)kc, (const T *)vc,
               heads, kv_heads, hd, scale, b->d_tiles, qs, btab, l->max_blocks, l->block_size,
               pos, out);
        LAUNCHED(b, "attn_prefill_kernel");
        prof_end(b, P_ATT_PRE);
    }
};

void cu_attn_prefill(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                     int kv_heads, int hd, float scale, const be_attn_layout *l,
                     const int32_t *qs, const int32_t *btab, const int32_t *pos, float *out)
{
    by_kv_dpl<prefill_op>(b, hd, b, q, kc, vc, heads, kv_heads, hd, scale, l, qs, btab, pos, out);
}
