/* backend/cuda/sample.cu: sampling on the device (backend.h: sample_rows) —
 * per logits row the argmax, the temperature draw with min_p, the
 * log-sum-exp and the BE_TOPK largest logits, so that only ids and a few
 * numbers come back to the host instead of the whole vocabulary. */
#include <math.h>

#include "backend/cuda/common.cuh"
#include "backend/cuda/sample.cuh"
#include "backend/cuda/tape.cuh"

#define SMP_THREADS 1024

/* Block-wide sum; every thread gets the total. red: >= 32 doubles of shared. */
__device__ double block_sum(double v, double *red)
{
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        red[threadIdx.x >> 5] = v;
    __syncthreads();
    double t = 0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++)
        t += red[i];
    return t;
}

/* Exclusive prefix sum over the block in thread order. */
__device__ double block_exclusive_scan(double v, double *red)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    double inc = v;
    for (int o = 1; o < 32; o <<= 1) {
        double t = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o)
            inc += t;
    }
    __syncthreads();
    if (lane == 31)
        red[warp] = inc;
    __syncthreads();
    double before = 0;
    for (int i = 0; i < warp; i++)
        before += red[i];
    return before + inc - v;
}

/* Orders floats as unsigned keys: a larger float has a larger key. */
__device__ __forceinline__ unsigned order_key(float f)
{
    unsigned u = __float_as_uint(f == 0.0f ? 0.0f : f); /* -0 ties with +0, as on the host */
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* A row's result but its top list: the token (the argmax when greedy, else
 * the draw), its logit, the log-sum-exp from the max mx and the sum z of
 * e^(x - mx), the kept total (0 when greedy) and the list's length. */
__device__ __forceinline__ void sample_result(be_sample_out *o, const float *x, int greedy,
                                              int argmax, int drawn, float mx, double z,
                                              double total, int n_top)
{
    o->token = greedy ? argmax : drawn;
    o->token_logit = x[o->token];
    o->lse = (float)((double)mx + log(z));
    o->total = greedy ? 0 : total;
    o->n_top = n_top;
}

/* One block a row: argmax, log-sum-exp, the temperature draw and the top
 * BE_TOPK logits, found exactly by a radix select of the BE_TOPK-th key
 * (four passes of 8 bits) and gathered in id order for ties. */
__global__ void __launch_bounds__(SMP_THREADS)
sample_kernel(const float *logits, int vocab, const be_sample_row *in, be_sample_out *out)
{
    dep_open();
    dep_wait();
    __shared__ double red[32];
    __shared__ float rv[32];
    __shared__ int ri[32];
    __shared__ unsigned hist[256];
    __shared__ unsigned s_prefix, s_need;
    __shared__ int s_token, s_ncand;
    __shared__ int32_t cid[BE_TOPK];
    __shared__ float cval[BE_TOPK];
    const float *x = logits + (size_t)blockIdx.x * vocab;
    const be_sample_row r = in[blockIdx.x];
    be_sample_out *o = out + blockIdx.x;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;

    /* argmax, lowest id on ties */
    float bv = -INFINITY;
    int bi = vocab;
    for (int i = tid; i < vocab; i += blockDim.x)
        if (x[i] > bv || (x[i] == bv && i < bi)) {
            bv = x[i];
            bi = i;
        }
    for (int off = 16; off; off >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, off);
        int oi = __shfl_xor_sync(0xffffffffu, bi, off);
        if (ov > bv || (ov == bv && oi < bi)) {
            bv = ov;
            bi = oi;
        }
    }
    if (lane == 0) {
        rv[warp] = bv;
        ri[warp] = bi;
    }
    __syncthreads();
    bv = rv[0];
    bi = ri[0];
    for (int w = 1; w < nw; w++)
        if (rv[w] > bv || (rv[w] == bv && ri[w] < bi)) {
            bv = rv[w];
            bi = ri[w];
        }
    const float mx = bv;
    const int argmax = bi < vocab ? bi : 0;

    double z = 0;
    for (int i = tid; i < vocab; i += blockDim.x)
        z += exp((double)x[i] - (double)mx);
    z = block_sum(z, red);

    /* the draw: weights over contiguous chunks, so a scan of chunk sums
     * gives each chunk's place in id order */
    const int greedy = !(r.temperature >= 1e-5f);
    const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
    const int c0 = tid * chunk, c1 = min(vocab, c0 + chunk);
    double total = 0;
    if (tid == 0)
        s_token = -1;
    if (!greedy) {
        const float t = r.temperature;
        double cs = 0;
        int last = -1;
        for (int i = c0; i < c1; i++) {
            float wgt = expf((x[i] - mx) / t);
            if (wgt >= r.min_p) {
                cs += wgt;
                last = i;
            }
        }
        double before = block_exclusive_scan(cs, red);
        total = block_sum(cs, red);
        const double target = r.u * total;
        if (cs > 0 && before <= target && target < before + cs) {
            double acc = before;
            int tok = last;
            for (int i = c0; i < c1; i++) {
                float wgt = expf((x[i] - mx) / t);
                if (wgt < r.min_p)
                    continue;
                acc += wgt;
                if (acc > target) {
                    tok = i;
                    break;
                }
            }
            s_token = tok;
        }
        /* rounding left the target past the end: the last kept id */
        int lk = last;
        for (int off = 16; off; off >>= 1)
            lk = max(lk, __shfl_xor_sync(0xffffffffu, lk, off));
        if (lane == 0)
            ri[warp] = lk;
        __syncthreads();
        if (tid == 0 && s_token < 0) {
            int m = -1;
            for (int w = 0; w < nw; w++)
                m = max(m, ri[w]);
            s_token = m >= 0 ? m : argmax;
        }
    }

    /* top BE_TOPK: radix select of the K-th largest key (r is the same for
     * the whole block, so skipping it keeps the barriers uniform) */
    if (!r.top) {
        if (tid == 0)
            sample_result(o, x, greedy, argmax, s_token, mx, z, total, 0);
        return;
    }
    const int K = min(BE_TOPK, vocab);
    if (tid == 0) {
        s_prefix = 0;
        s_need = (unsigned)K;
    }
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < 256; i += blockDim.x)
            hist[i] = 0;
        __syncthreads();
        const unsigned hmask = shift == 24 ? 0u : 0xffffffffu << (shift + 8);
        const unsigned prefix = s_prefix;
        for (int i = tid; i < vocab; i += blockDim.x) {
            unsigned k = order_key(x[i]);
            if ((k & hmask) == (prefix & hmask))
                atomicAdd(&hist[(k >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            unsigned need = s_need, d = 255;
            for (;; d--) {
                if (hist[d] >= need || d == 0)
                    break;
                need -= hist[d];
            }
            s_prefix = prefix | (d << shift);
            s_need = need; /* how many of the keys equal to the digit path to take */
        }
        __syncthreads();
    }
    const unsigned kth = s_prefix, take_eq = s_need;
    if (tid == 0)
        s_ncand = 0;
    __syncthreads();
    /* keys above kth go in any order (sorted below); keys equal to kth are
     * taken lowest ids first */
    int n_eq = 0;
    for (int i = c0; i < c1; i++) {
        unsigned k = order_key(x[i]);
        if (k > kth) {
            int at = atomicAdd(&s_ncand, 1);
            cid[at] = i;
            cval[at] = x[i];
        } else if (k == kth) {
            n_eq++;
        }
    }
    int eq_before = (int)block_exclusive_scan((double)n_eq, red);
    __syncthreads();
    const int n_gt = s_ncand;
    for (int i = c0; i < c1 && eq_before < (int)take_eq; i++)
        if (order_key(x[i]) == kth) {
            cid[n_gt + eq_before] = i;
            cval[n_gt + eq_before] = x[i];
            eq_before++;
        }
    __syncthreads();
    if (tid < K) {
        const float v = cval[tid];
        const int id = cid[tid];
        int rank = 0;
        for (int j = 0; j < K; j++)
            rank += cval[j] > v || (cval[j] == v && cid[j] < id);
        o->top_ids[rank] = id;
        o->top_vals[rank] = v;
    }
    if (tid == 0)
        sample_result(o, x, greedy, argmax, s_token, mx, z, total, K);
}

int cu_sample_rows(be_backend *bk, const float *logits, int n, int vocab,
                   const be_sample_row *in, be_sample_out *out, inferd_error *e)
{
    cu_backend *b = cu_of(bk);
    if (b->recording)
        cu_flush(b);
    if (n > 0 && !b->base.kept) {
        size_t need = (size_t)n * (sizeof *in + sizeof *out);
        if (need > b->smp_bytes) {
            CK(b, cudaFree(b->smp_buf));
            b->smp_buf = NULL;
            b->smp_bytes = 0;
            if (!CK(b, cudaMalloc(&b->smp_buf, need)))
                b->smp_bytes = need;
        }
        if (!b->base.kept) {
            be_sample_row *din = (be_sample_row *)b->smp_buf;
            be_sample_out *dout = (be_sample_out *)(din + n);
            prof_begin(b);
            if (!CK(b, cudaMemcpyAsync(din, in, (size_t)n * sizeof *in, cudaMemcpyHostToDevice,
                                       b->stream))) {
                launch(b, sample_kernel, n, SMP_THREADS, 0, logits, vocab, din, dout);
                if (!LAUNCHED(b, "sample_kernel"))
                    CK(b, cudaMemcpyAsync(out, dout, (size_t)n * sizeof *out,
                                          cudaMemcpyDeviceToHost, b->stream));
            }
            prof_end(b, P_SAMPLE);
        }
    }
    if (!b->base.kept)
        CK(b, cudaStreamSynchronize(b->stream));
    return report(b, e);
}
