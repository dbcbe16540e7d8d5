/* backend/cuda/attn_decode.cu: attention for decode rows (one query row of
 * a sequence) over the paged KV cache, split-KV (flash-decoding): each
 * row's keys are split over enough blocks to fill the GPU and the splits
 * merged. attn_decode_tile_kernel (bf16 cache, head_dim 64 or 128, 1-8
 * query heads per KV head) is the default; the one-key-at-a-time kernels
 * serve the other shapes, the float32 cache and INFERD_CUDA_ATT=split. */
#include <math.h>

#include "backend/cuda/attn_decode.cuh"
#include "backend/cuda/backend.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/tape.cuh"

/* The sequence that owns row t: the last s with q_start[s] <= t. */
__device__ __forceinline__ int seq_of_row(const int32_t *q_start, int n_seqs, int t)
{
    int lo = 0, hi = n_seqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (q_start[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Decode, split-KV (flash-decoding): one block per (row, head, split); the
 * split takes a contiguous range of the row's keys, its ATT_SPLIT_WARPS
 * warps an online softmax each over every 4th key of the range, merged in
 * shared memory. With one split the block writes the output; otherwise it
 * writes its running max, sum and unnormalised output to part[] and
 * attn_merge_kernel combines the splits. The split count comes from the
 * host (enough blocks to fill the GPU); the ranges from pos on the device. */
#define ATT_SPLIT_WARPS 4
template <typename T, int DPL>
__global__ void __launch_bounds__(ATT_SPLIT_WARPS * 32)
attn_split_kernel(const float *q, const T *kc, const T *vc, int heads, int kv_heads, int hd,
                  float scale, const int32_t *q_start, int n_seqs, const int32_t *block_table,
                  int max_blocks, int block_size, const int32_t *pos, float *out, float *part)
{
    dep_open();
    dep_wait();
    __shared__ float sm_m[ATT_SPLIT_WARPS], sm_l[ATT_SPLIT_WARPS];
    __shared__ float sm_acc[ATT_SPLIT_WARPS][DPL * 32];
    const int t = blockIdx.x, h = blockIdx.y, sp = blockIdx.z, n_split = gridDim.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int32_t *bt = block_table + (int64_t)seq_of_row(q_start, n_seqs, t) * max_blocks;
    const int n_keys = pos[t] + 1, kv_dim = kv_heads * hd;
    const int chunk = (n_keys + n_split - 1) / n_split;
    const int k_begin = sp * chunk, k_end = min(n_keys, k_begin + chunk);
    const int64_t koff = (int64_t)(h / (heads / kv_heads)) * hd;
    float qr[DPL], acc[DPL];
#pragma unroll
    for (int d = 0; d < DPL; d++) {
        int i = lane + 32 * d;
        qr[d] = i < hd ? q[((int64_t)t * heads + h) * hd + i] * scale : 0.0f;
        acc[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
#pragma unroll 2
    for (int j = k_begin + warp; j < k_end; j += ATT_SPLIT_WARPS) {
        int64_t slot = (int64_t)bt[j / block_size] * block_size + j % block_size;
        const T *kr = kc + slot * kv_dim + koff, *vr = vc + slot * kv_dim + koff;
        float kv[DPL], vv[DPL];
#pragma unroll
        for (int d = 0; d < DPL; d++) { /* every load before the first use */
            int i = lane + 32 * d;
            kv[d] = i < hd ? to_f(kr[i]) : 0.0f;
            vv[d] = i < hd ? to_f(vr[i]) : 0.0f;
        }
        float dot = 0.0f;
#pragma unroll
        for (int d = 0; d < DPL; d++)
            dot += qr[d] * kv[d];
        dot = warp_sum(dot);
        float mn = fmaxf(m, dot), corr = expf(m - mn), p = expf(dot - mn);
        l = l * corr + p;
#pragma unroll
        for (int d = 0; d < DPL; d++)
            acc[d] = acc[d] * corr + p * vv[d];
        m = mn;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int d = 0; d < DPL; d++)
        sm_acc[warp][lane + 32 * d] = acc[d];
    __syncthreads();
    float mx = -INFINITY;
    for (int w = 0; w < ATT_SPLIT_WARPS; w++)
        mx = fmaxf(mx, sm_m[w]);
    float sum = 0.0f;
    for (int w = 0; w < ATT_SPLIT_WARPS; w++)
        sum += sm_m[w] == -INFINITY ? 0.0f : sm_l[w] * expf(sm_m[w] - mx);
    const int64_t th = (int64_t)t * heads + h;
    float *pp = part ? part + (th * n_split + sp) * (int64_t)(hd + 2) : NULL;
    if (pp && threadIdx.x == 0) {
        pp[0] = mx; /* -inf: an empty split (fewer keys than splits) */
        pp[1] = sum;
    }
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < ATT_SPLIT_WARPS; w++)
            if (sm_m[w] != -INFINITY)
                o += sm_acc[w][i] * expf(sm_m[w] - mx);
        if (pp)
            pp[2 + i] = o;
        else
            out[th * hd + i] = o / sum;
    }
}

/* The same split-KV decode for grouped-query attention: one block per (row,
 * KV head, split) serves the G query heads that share the KV head, so each
 * key and value row is read once per step instead of G times (with many
 * running sequences these reads are most of a decode step). Per query head
 * the arithmetic and its order are those of attn_split_kernel. */
template <typename T, int DPL, int GMAX>
__global__ void __launch_bounds__(ATT_SPLIT_WARPS * 32)
attn_split_gqa_kernel(const float *q, const T *kc, const T *vc, int heads, int kv_heads, int hd,
                      float scale, const int32_t *q_start, int n_seqs,
                      const int32_t *block_table, int max_blocks, int block_size,
                      const int32_t *pos, float *out, float *part)
{
    dep_open();
    dep_wait();
    __shared__ float sm_m[ATT_SPLIT_WARPS][GMAX], sm_l[ATT_SPLIT_WARPS][GMAX];
    __shared__ float sm_acc[ATT_SPLIT_WARPS][GMAX][DPL * 32];
    const int t = blockIdx.x, kvh = blockIdx.y, sp = blockIdx.z, n_split = gridDim.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, G = heads / kv_heads;
    const int32_t *bt = block_table + (int64_t)seq_of_row(q_start, n_seqs, t) * max_blocks;
    const int n_keys = pos[t] + 1, kv_dim = kv_heads * hd;
    const int chunk = (n_keys + n_split - 1) / n_split;
    const int k_begin = sp * chunk, k_end = min(n_keys, k_begin + chunk);
    const int64_t koff = (int64_t)kvh * hd;
    float qr[GMAX][DPL], acc[GMAX][DPL], m[GMAX], l[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
        const int h = kvh * G + g;
#pragma unroll
        for (int d = 0; d < DPL; d++) {
            int i = lane + 32 * d;
            qr[g][d] = g < G && i < hd ? q[((int64_t)t * heads + h) * hd + i] * scale : 0.0f;
            acc[g][d] = 0.0f;
        }
        m[g] = -INFINITY;
        l[g] = 0.0f;
    }
    for (int j = k_begin + warp; j < k_end; j += ATT_SPLIT_WARPS) {
        int64_t slot = (int64_t)bt[j / block_size] * block_size + j % block_size;
        const T *kr = kc + slot * kv_dim + koff, *vr = vc + slot * kv_dim + koff;
        float kv[DPL], vv[DPL];
#pragma unroll
        for (int d = 0; d < DPL; d++) {
            int i = lane + 32 * d;
            kv[d] = i < hd ? to_f(kr[i]) : 0.0f;
            vv[d] = i < hd ? to_f(vr[i]) : 0.0f;
        }
#pragma unroll
        for (int g = 0; g < GMAX; g++) {
            if (g >= G)
                break;
            float dot = 0.0f;
#pragma unroll
            for (int d = 0; d < DPL; d++)
                dot += qr[g][d] * kv[d];
            dot = warp_sum(dot);
            float mn = fmaxf(m[g], dot), corr = expf(m[g] - mn), p = expf(dot - mn);
            l[g] = l[g] * corr + p;
#pragma unroll
            for (int d = 0; d < DPL; d++)
                acc[g][d] = acc[g][d] * corr + p * vv[d];
            m[g] = mn;
        }
    }
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
        if (lane == 0) {
            sm_m[warp][g] = m[g];
            sm_l[warp][g] = l[g];
        }
#pragma unroll
        for (int d = 0; d < DPL; d++)
            sm_acc[warp][g][lane + 32 * d] = acc[g][d];
    }
    __syncthreads();
    for (int g = 0; g < G; g++) {
        float mx = -INFINITY;
        for (int w = 0; w < ATT_SPLIT_WARPS; w++)
            mx = fmaxf(mx, sm_m[w][g]);
        float sum = 0.0f;
        for (int w = 0; w < ATT_SPLIT_WARPS; w++)
            sum += sm_m[w][g] == -INFINITY ? 0.0f : sm_l[w][g] * expf(sm_m[w][g] - mx);
        const int64_t th = (int64_t)t * heads + kvh * G + g;
        float *pp = part ? part + (th * n_split + sp) * (int64_t)(hd + 2) : NULL;
        if (pp && threadIdx.x == 0) {
            pp[0] = mx;
            pp[1] = sum;
        }
        for (int i = threadIdx.x; i < hd; i += blockDim.x) {
            float o = 0.0f;
            for (int w = 0; w < ATT_SPLIT_WARPS; w++)
                if (sm_m[w][g] != -INFINITY)
                    o += sm_acc[w][g][i] * expf(sm_m[w][g] - mx);
            if (pp)
                pp[2 + i] = o;
            else
                out[th * hd + i] = o / sum;
        }
    }
}

/* Dimension d of one (row, head)'s split-KV results pp (n_split records of
 * m, l, acc[hd]): sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s. Loads
 * through L2: other blocks of the same launch may have written pp. */
__device__ float merge_splits(const float *pp, int n_split, int hd, int d)
{
    float mx = -INFINITY;
    for (int s = 0; s < n_split; s++)
        mx = fmaxf(mx, __ldcg(pp + s * (int64_t)(hd + 2)));
    float sum = 0.0f, o = 0.0f;
    for (int s = 0; s < n_split; s++) {
        const float *ps = pp + s * (int64_t)(hd + 2);
        const float ms = __ldcg(ps);
        if (ms != -INFINITY) {
            const float f = expf(ms - mx);
            sum += __ldcg(ps + 1) * f;
            o += __ldcg(ps + 2 + d) * f;
        }
    }
    return o / sum;
}

/* One block per (row, head): merge_splits for every dimension.
 * rows: the output row of each block row (NULL: the same). */
__global__ void attn_merge_kernel(const float *part, int n_split, int heads, int hd,
                                  const int32_t *rows, float *out)
{
    dep_open();
    dep_wait();
    const int64_t th = (int64_t)blockIdx.x * heads + blockIdx.y;
    const int64_t to = ((int64_t)(rows ? rows[blockIdx.x] : blockIdx.x) * heads + blockIdx.y) * hd;
    const float *pp = part + th * n_split * (int64_t)(hd + 2);
    for (int i = threadIdx.x; i < hd; i += blockDim.x)
        out[to + i] = merge_splits(pp, n_split, hd, i);
}

/* Decode attention for a bf16 cache (the default), head_dim HD 64 or 128 and
 * G query heads per KV head: one block per (row, KV head, split) as in
 * attn_split_gqa_kernel, but each warp takes its keys 32 at a time so that
 * many loads are in flight (the one-key-at-a-time kernels wait on memory
 * for every key). Scores: lanes 2i
 * and 2i+1 hold keys i and i+16 of the tile, every other 16-byte chunk each,
 * so one load instruction reads whole 32-byte sectors of 16 key rows; the
 * pair's partial dots add with one shuffle. Softmax: one warp max per head
 * and tile, exp2 with log2(e) folded into q. Values: lanes over dimensions
 * (coalesced rows), the tile's probabilities from shared memory. Partial
 * results leave in natural-log units, as attn_merge_kernel expects. */
#define DEC_WARPS 4
#define DEC_TILE 32

template <int HD, int G, bool ROPE>
__global__ void __launch_bounds__(DEC_WARPS * 32, 4)
attn_decode_tile_kernel(const float *q, const __nv_bfloat16 *kc, const __nv_bfloat16 *vc,
                        int heads, int kv_heads, float scale, const int32_t *rows,
                        const int32_t *q_start, int n_seqs, const int32_t *block_table,
                        int max_blocks, int block_size, const int32_t *pos, float *out,
                        float *part, int *done, const dec_rope R)
{
    dep_open();
    dep_wait();
    constexpr int CH = HD / 8;  /* 16-byte chunks in a key row */
    constexpr int DV = HD / 32; /* value dimensions per lane */
    __shared__ __align__(16) float q_s[G][HD];
    __shared__ float p_s[DEC_WARPS][G][DEC_TILE];
    __shared__ int64_t off_s[DEC_WARPS][DEC_TILE];
    __shared__ float sm_m[DEC_WARPS][G], sm_l[DEC_WARPS][G];
    __shared__ float sm_acc[DEC_WARPS][G][HD];
    const int r = blockIdx.x, t = rows ? rows[r] : r, kvh = blockIdx.y, sp = blockIdx.z;
    const int n_split = gridDim.z, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int32_t *bt = block_table + (int64_t)seq_of_row(q_start, n_seqs, t) * max_blocks;
    const int n_keys = pos[t] + 1, kv_dim = kv_heads * HD;
    int chunk = (n_keys + n_split - 1) / n_split;
    chunk = (chunk + DEC_TILE - 1) / DEC_TILE * DEC_TILE;
    const int k_begin = sp * chunk, k_end = min(n_keys, k_begin + chunk);
    const float qscale = scale * 1.4426950408889634f; /* log2(e): exp2 below */
    if constexpr (ROPE) {
        /* rope_store_kernel's rotate_pair on q and on this KV head's k; the
         * block whose split holds the row's own key stores k and v first */
        __shared__ float k_s[HD];
        const float *kr = R.k + ((int64_t)t * kv_heads + kvh) * HD;
        const bool store = k_begin <= n_keys - 1 && n_keys - 1 < k_end;
        for (int i = threadIdx.x; i < G * HD; i += blockDim.x)
            q_s[i / HD][i % HD] = q[((int64_t)t * heads + kvh * G) * HD + i];
        for (int i = threadIdx.x; i < HD; i += blockDim.x)
            k_s[i] = kr[i];
        __syncthreads();
        const float p = (float)pos[t];
        for (int i = threadIdx.x; i < (G + 1) * R.half; i += blockDim.x) {
            const int g = i / R.half, d = i % R.half;
            rotate_pair(g < G ? q_s[g] : k_s, d, R.half, p * R.inv_freq[d], R.mscale);
        }
        __syncthreads();
        if (store) {
            const int64_t off = (int64_t)R.slot[t] * kv_dim + (int64_t)kvh * HD;
            const float *vr = R.v + ((int64_t)t * kv_heads + kvh) * HD;
            for (int i = threadIdx.x; i < HD; i += blockDim.x) {
                R.kc[off + i] = from_f<__nv_bfloat16>(k_s[i]);
                R.vc[off + i] = from_f<__nv_bfloat16>(vr[i]);
            }
        }
        for (int i = threadIdx.x; i < G * HD; i += blockDim.x)
            q_s[i / HD][i % HD] *= qscale;
    } else {
        for (int i = threadIdx.x; i < G * HD; i += blockDim.x)
            q_s[i / HD][i % HD] = q[((int64_t)t * heads + kvh * G) * HD + i] * qscale;
    }
    __syncthreads();
    const int half = lane & 1, kp = lane >> 1;
    const int64_t koff = (int64_t)kvh * HD;
    float m[G], l[G], acc[G][DV];
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int d = 0; d < DV; d++)
            acc[g][d] = 0.0f;
    }
    for (int j0 = k_begin + warp * DEC_TILE; j0 < k_end; j0 += DEC_WARPS * DEC_TILE) {
        const int j = j0 + lane < k_end ? j0 + lane : j0; /* past the end: a valid row, p 0 */
        off_s[warp][lane] = ((int64_t)bt[j / block_size] * block_size + j % block_size) * kv_dim +
                            koff;
        __syncwarp();
        const uint4 *ra = (const uint4 *)(kc + off_s[warp][kp]);
        const uint4 *rb = (const uint4 *)(kc + off_s[warp][kp + 16]);
        uint4 ka[CH / 2], kb[CH / 2];
#pragma unroll
        for (int c = 0; c < CH / 2; c++) {
            ka[c] = ra[2 * c + half];
            kb[c] = rb[2 * c + half];
        }
        float sa[G], sb[G];
#pragma unroll
        for (int g = 0; g < G; g++)
            sa[g] = sb[g] = 0.0f;
#pragma unroll
        for (int c = 0; c < CH / 2; c++) {
            const uint32_t wa[4] = {ka[c].x, ka[c].y, ka[c].z, ka[c].w};
            const uint32_t wb[4] = {kb[c].x, kb[c].y, kb[c].z, kb[c].w};
            const int d0 = (2 * c + half) * 8;
#pragma unroll
            for (int g = 0; g < G; g++) {
                const float4 q0 = *(const float4 *)&q_s[g][d0];
                const float4 q1 = *(const float4 *)&q_s[g][d0 + 4];
                const float qv[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    sa[g] += qv[2 * e] * __uint_as_float(wa[e] << 16) +
                             qv[2 * e + 1] * __uint_as_float(wa[e] & 0xffff0000u);
                    sb[g] += qv[2 * e] * __uint_as_float(wb[e] << 16) +
                             qv[2 * e + 1] * __uint_as_float(wb[e] & 0xffff0000u);
                }
            }
        }
        const bool va = j0 + kp < k_end, vb = j0 + kp + 16 < k_end;
#pragma unroll
        for (int g = 0; g < G; g++) {
            float a = sa[g] + __shfl_xor_sync(0xffffffffu, sa[g], 1);
            float c = sb[g] + __shfl_xor_sync(0xffffffffu, sb[g], 1);
            a = va ? a : -INFINITY;
            c = vb ? c : -INFINITY;
            const float mn = fmaxf(m[g], warp_max(fmaxf(a, c)));
            const float corr = exp2f(m[g] - mn), pa = exp2f(a - mn), pc = exp2f(c - mn);
            l[g] = l[g] * corr + (half ? 0.0f : pa + pc);
#pragma unroll
            for (int d = 0; d < DV; d++)
                acc[g][d] *= corr;
            if (!half) {
                p_s[warp][g][kp] = pa;
                p_s[warp][g][kp + 16] = pc;
            }
            m[g] = mn;
        }
        __syncwarp();
#pragma unroll
        for (int jb = 0; jb < DEC_TILE; jb += 16) {
            uint32_t vr[16][DV / 2];
#pragma unroll
            for (int jj = 0; jj < 16; jj++) {
                const __nv_bfloat16 *row = vc + off_s[warp][jb + jj] + lane * DV;
                if constexpr (DV == 4) {
                    const uint2 u = *(const uint2 *)row;
                    vr[jj][0] = u.x;
                    vr[jj][1] = u.y;
                } else {
                    vr[jj][0] = *(const uint32_t *)row;
                }
            }
#pragma unroll
            for (int jj = 0; jj < 16; jj++) {
                float v[DV];
#pragma unroll
                for (int e = 0; e < DV / 2; e++) {
                    v[2 * e] = __uint_as_float(vr[jj][e] << 16);
                    v[2 * e + 1] = __uint_as_float(vr[jj][e] & 0xffff0000u);
                }
#pragma unroll
                for (int g = 0; g < G; g++) {
                    const float p = p_s[warp][g][jb + jj];
#pragma unroll
                    for (int d = 0; d < DV; d++)
                        acc[g][d] += p * v[d];
                }
            }
        }
        __syncwarp();
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
        const float lsum = warp_sum(l[g]);
        if (lane == 0) {
            sm_m[warp][g] = m[g];
            sm_l[warp][g] = lsum;
        }
#pragma unroll
        for (int d = 0; d < DV; d++)
            sm_acc[warp][g][lane * DV + d] = acc[g][d];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * HD; i += blockDim.x) {
        const int g = i / HD, d = i % HD;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++)
            mx = fmaxf(mx, sm_m[w][g]);
        float sum = 0.0f, o = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++)
            if (sm_m[w][g] != -INFINITY) {
                const float f = exp2f(sm_m[w][g] - mx);
                sum += sm_l[w][g] * f;
                o += sm_acc[w][g][d] * f;
            }
        const int h = kvh * G + g;
        if (part) {
            float *pp = part + (((int64_t)r * heads + h) * n_split + sp) * (int64_t)(HD + 2);
            if (d == 0) {
                pp[0] = mx * 0.6931471805599453f; /* ln 2: back to natural units */
                pp[1] = sum;
            }
            pp[2 + d] = o;
        } else {
            out[((int64_t)t * heads + h) * HD + d] = o / sum;
        }
    }
    if (!part)
        return;
    /* The last split of (row, KV head) to finish merges them all: no merge
     * launch. Its own results and the others' are in L2 past the fences. */
    __shared__ int last_s;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int *c = done + (int64_t)r * kv_heads + kvh;
        last_s = atomicAdd(c, 1) == n_split - 1;
        if (last_s)
            *c = 0; /* for the next launch */
    }
    __syncthreads();
    if (!last_s)
        return;
    __threadfence();
    for (int i = threadIdx.x; i < G * HD; i += blockDim.x) {
        const int h = kvh * G + i / HD;
        const float *pp = part + ((int64_t)r * heads + h) * n_split * (int64_t)(HD + 2);
        out[((int64_t)t * heads + h) * HD + i % HD] = merge_splits(pp, n_split, HD, i % HD);
    }
}

/* ---- launches ---- */

/* Split-KV count for a decode launch of `blocks` blocks per split: enough
 * splits to give each SM ~4 blocks, none shorter than min_keys keys. */
static int decode_splits(const cu_backend *b, int blocks, int min_keys)
{
    int ns = (b->max_keys + min_keys - 1) / min_keys, fill = (4 * b->n_sm + blocks - 1) / blocks;
    ns = ns < fill ? ns : fill;
    return ns < 1 ? 1 : ns > 64 ? 64 : ns;
}

/* The split-KV partial results buffer for n_rows * heads * ns outputs. */
static float *att_part(cu_backend *b, int n_rows, int heads, int hd, int ns)
{
    size_t bytes = (size_t)n_rows * (size_t)heads * (size_t)ns * (size_t)(hd + 2) * sizeof(float);
    return (float *)cu_grow(b, (void **)&b->att_part, &b->att_part_bytes, bytes, bytes * 2, 0);
}

/* Zeroed split counters for n (row, KV head) pairs; kernels leave them zero. */
static int *att_done(cu_backend *b, int n)
{
    size_t bytes = (size_t)n * sizeof(int);
    return (int *)cu_grow(b, (void **)&b->att_done, &b->att_done_bytes, bytes, bytes * 2, 1);
}

int cu_decode_tile_ok(const cu_backend *b, int heads, int kv_heads, int hd)
{
    const int g = heads / kv_heads;
    return cu_kv_bf16(b) && (hd == 64 || hd == 128) && (g == 1 || g == 2 || g == 4 || g == 8) &&
           !b->att_split;
}

void cu_decode_tile(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                    int kv_heads, int hd, float scale, const be_attn_layout *l,
                    const int32_t *rows, int n_rows, float *out, const dec_rope *rope)
{
    const int32_t *qs = cu_dev_idx(b, l->q_start), *btab = cu_dev_idx(b, l->block_table),
                  *pos = cu_dev_idx(b, l->pos);
    const int ns = decode_splits(b, n_rows * kv_heads, DEC_WARPS * DEC_TILE);
    float *part = ns > 1 ? att_part(b, n_rows, heads, hd, ns) : NULL;
    int *done = ns > 1 ? att_done(b, n_rows * kv_heads) : NULL;
    if (b->base.kept)
        return;
    const __nv_bfloat16 *k = (const __nv_bfloat16 *)kc, *v = (const __nv_bfloat16 *)vc;
    dim3 grid((unsigned)n_rows, (unsigned)kv_heads, (unsigned)ns);
    const int g = heads / kv_heads;
    prof_begin(b);
    dec_rope R;
    memset(&R, 0, sizeof R);
    if (rope)
        R = *rope;
#define DEC_LAUNCH(HD, G)                                                                          \
    launch(b, rope ? attn_decode_tile_kernel<HD, G, true> : attn_decode_tile_kernel<HD, G, false>, \
           grid, DEC_WARPS * 32, 0, q, k, v, heads, kv_heads, scale, rows, qs, l->n_seqs, btab,    \
           l->max_blocks, l->block_size, pos, out, part, done, R)
#define DEC_HD(HD)                                                                            \
    do {                                                                                      \
        if (g == 1)                                                                           \
            DEC_LAUNCH(HD, 1);                                                                \
        else if (g == 2)                                                                      \
            DEC_LAUNCH(HD, 2);                                                                \
        else if (g == 4)                                                                      \
            DEC_LAUNCH(HD, 4);                                                                \
        else                                                                                  \
            DEC_LAUNCH(HD, 8);                                                                \
    } while (0)
    if (hd == 128)
        DEC_HD(128);
    else
        DEC_HD(64);
#undef DEC_HD
#undef DEC_LAUNCH
    LAUNCHED(b, "attn_decode_tile_kernel");
    prof_end(b, P_ATT_DEC);
}

/* The one-key-at-a-time split-KV kernels over the whole step (decode rows
 * only), then attn_merge_kernel where there is more than one split. */
template <typename T, int DPL> struct split_op {
    static void run(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                    int kv_heads, int hd, float scale, const be_attn_layout *l,
                    const int32_t *qs, const int32_t *btab, const int32_t *pos, float *out)
    {
        /* with grouped-query attention a block serves a KV head's group */
        const int group = heads / kv_heads;
        const int gqa = group >= 2 && group <= 8;
        const int ns = decode_splits(b, gqa ? l->n_tokens * kv_heads : l->n_tokens * heads, 64);
        float *part = ns > 1 ? att_part(b, l->n_tokens, heads, hd, ns) : NULL;
        if (b->base.kept)
            return;
        dim3 grid((unsigned)l->n_tokens, (unsigned)(gqa ? kv_heads : heads), (unsigned)ns);
        prof_begin(b);
#define ATT_GQA(G)                                                                                 \
    launch(b, attn_split_gqa_kernel<T, DPL, G>, grid, ATT_SPLIT_WARPS * 32, 0, q, (const T *)kc,   \
           (const T *)vc, heads, kv_heads, hd, scale, qs, l->n_seqs, btab, l->max_blocks,          \
           l->block_size, pos, out, part)
        if (gqa && group <= 2)
            ATT_GQA(2);
        else if (gqa && group <= 4)
            ATT_GQA(4);
        else if (gqa)
            ATT_GQA(8);
        else
            launch(b, attn_split_kernel<T, DPL>, grid, ATT_SPLIT_WARPS * 32, 0, q, (const T *)kc,
                   (const T *)vc, heads, kv_heads, hd, scale, qs, l->n_seqs, btab, l->max_blocks,
                   l->block_size, pos, out, part);
#undef ATT_GQA
        if (LAUNCHED(b, "attn_split_kernel"))
            return;
        if (part) {
            launch(b, attn_merge_kernel, dim3((unsigned)l->n_tokens, (unsigned)heads), 128, 0,
                   part, ns, heads, hd, (const int32_t *)NULL, out);
            LAUNCHED(b, "attn_merge_kernel");
        }
        prof_end(b, P_ATT_DEC);
    }
};

void cu_attn_split(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                   int kv_heads, int hd, float scale, const be_attn_layout *l, const int32_t *qs,
                   const int32_t *btab, const int32_t *pos, float *out)
{
    by_kv_dpl<split_op>(b, hd, b, q, kc, vc, heads, kv_heads, hd, scale, l, qs, btab, pos, out);
}
