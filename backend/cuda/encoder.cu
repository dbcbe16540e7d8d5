/* backend/cuda/encoder.cu: the BERT-family ops of the CUDA backend —
 * LayerNorm, GELU, tanh and bidirectional attention over packed sequences —
 * on the backend's stream, float32 throughout, computed in the order the
 * CPU backend computes them (two-pass mean / biased variance; scores, max,
 * exp, normalized probabilities, weighted sum of V), so the two agree to
 * float rounding. Errors go to the backend's error slot (common.cuh) and
 * come back from the next to_host, as for the decoder ops. */
#include <math.h>
#include <stdint.h>

#include "backend/cuda/common.cuh"
#include "backend/cuda/encoder.cuh"

#define ENC_THREADS 256
#define ATT_THREADS 128

/* Sum or max over the block; red holds 32 floats. Every thread gets the result. */
static __device__ float block_reduce(float v, float *red, int is_max)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        float u = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, u) : v + u;
    }
    __syncthreads(); /* red may still be read by the previous reduction */
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? red[lane] : (is_max ? -INFINITY : 0.0f);
        for (int o = 16; o > 0; o >>= 1) {
            float u = __shfl_xor_sync(0xffffffffu, v, o);
            v = is_max ? fmaxf(v, u) : v + u;
        }
        if (lane == 0)
            red[0] = v;
    }
    __syncthreads();
    return red[0];
}

/* One block per row. out may equal x: each thread writes only the elements
 * it read, after both reductions. */
static __global__ void layernorm_kernel(const float *x, const void *w, int wdt, const void *bias,
                                        int bdt, float eps, int cols, float *out)
{
    __shared__ float red[32];
    const float *xr = x + (int64_t)blockIdx.x * cols;
    float *o = out + (int64_t)blockIdx.x * cols;
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        s += xr[i];
    const float mean = block_reduce(s, red, 0) / (float)cols;
    float v = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        v += (xr[i] - mean) * (xr[i] - mean);
    const float var = block_reduce(v, red, 0);
    const float inv = 1.0f / sqrtf(var / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        o[i] = (xr[i] - mean) * inv * ldw(w, wdt, i) + (bias ? ldw(bias, bdt, i) : 0.0f);
}

static __global__ void gelu_kernel(const float *x, size_t n, int tanh_approx, float *out)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = x[i];
        out[i] = tanh_approx
                     ? 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)))
                     : 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
    }
}

static __global__ void tanh_kernel(const float *x, size_t n, float *out)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = tanhf(x[i]);
}

/* One block per (row, head): the row's query against every key of its own
 * sequence. Shared memory: the query [head_dim], then the scores [len]. */
static __global__ void attention_full_kernel(const float *q, const float *k, const float *v,
                                             int heads, int hd, float scale, int n_seqs,
                                             const int32_t *qs, float *out)
{
    extern __shared__ float sm[];
    __shared__ float red[32];
    const int row = blockIdx.x, h = blockIdx.y;
    int lo = 0, hi = n_seqs - 1; /* the sequence s with qs[s] <= row < qs[s + 1] */
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (qs[mid] <= row)
            lo = mid;
        else
            hi = mid - 1;
    }
    const int j0 = qs[lo], len = qs[lo + 1] - j0;
    const int64_t stride = (int64_t)heads * hd;
    float *qv = sm, *sc = sm + hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x)
        qv[i] = q[row * stride + (int64_t)h * hd + i];
    __syncthreads();
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        const float *kr = k + (j0 + j) * stride + (int64_t)h * hd;
        float d = 0.0f;
        for (int i = 0; i < hd; i++)
            d += qv[i] * kr[i];
        d *= scale;
        sc[j] = d;
        mx = fmaxf(mx, d);
    }
    mx = block_reduce(mx, red, 1);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float e = expf(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    sum = block_reduce(sum, red, 0);
    const float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        sc[j] *= inv;
    __syncthreads();
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < len; j++)
            acc += sc[j] * v[(j0 + j) * stride + (int64_t)h * hd + d];
        out[row * stride + (int64_t)h * hd + d] = acc;
    }
}

void cu_enc_layernorm(be_backend *bk, const float *x, const be_weight *w, const be_weight *bias,
                      float eps, int rows, int cols, float *out)
{
    cu_backend *b = cu_of(bk);
    if (b->base.kept || rows <= 0)
        return;
    layernorm_kernel<<<rows, ENC_THREADS, 0, b->stream>>>(
        x, w->data, w->dtype, bias ? bias->data : NULL, bias ? bias->dtype : DT_F32, eps, cols,
        out);
    LAUNCHED(b, "layernorm_kernel");
}

void cu_enc_gelu(be_backend *bk, const float *x, size_t n, int tanh_approx, float *out)
{
    cu_backend *b = cu_of(bk);
    if (b->base.kept || n == 0)
        return;
    gelu_kernel<<<grid_for(n, ENC_THREADS), ENC_THREADS, 0, b->stream>>>(x, n, tanh_approx, out);
    LAUNCHED(b, "gelu_kernel");
}

void cu_enc_tanh(be_backend *bk, const float *x, size_t n, float *out)
{
    cu_backend *b = cu_of(bk);
    if (b->base.kept || n == 0)
        return;
    tanh_kernel<<<grid_for(n, ENC_THREADS), ENC_THREADS, 0, b->stream>>>(x, n, out);
    LAUNCHED(b, "tanh_kernel");
}

/* q_start is host memory (backend.h): it is copied to a stream-ordered
 * device buffer, freed in stream order after the kernel. */
void cu_enc_attention_full(be_backend *bk, const float *q, const float *k, const float *v,
                           int heads, int head_dim, float scale, int n_seqs,
                           const int32_t *q_start, float *out)
{
    cu_backend *b = cu_of(bk);
    if (b->base.kept || n_seqs <= 0 || q_start[n_seqs] <= 0)
        return;
    cudaStream_t st = b->stream;
    int max_len = 1;
    for (int s = 0; s < n_seqs; s++)
        if (q_start[s + 1] - q_start[s] > max_len)
            max_len = q_start[s + 1] - q_start[s];
    const size_t smem = ((size_t)head_dim + (size_t)max_len) * sizeof(float);
    if (smem > 48 * 1024 &&
        CK(b, cudaFuncSetAttribute(attention_full_kernel,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
        return;
    const size_t qs_bytes = ((size_t)n_seqs + 1) * sizeof(int32_t);
    int32_t *d_qs = NULL;
    if (CK(b, cudaMallocAsync((void **)&d_qs, qs_bytes, st)))
        return;
    /* from pageable memory: staged before the call returns, so q_start may change after */
    if (!CK(b, cudaMemcpyAsync(d_qs, q_start, qs_bytes, cudaMemcpyHostToDevice, st))) {
        dim3 grid((unsigned)q_start[n_seqs], (unsigned)heads);
        attention_full_kernel<<<grid, ATT_THREADS, smem, st>>>(q, k, v, heads, head_dim, scale,
                                                              n_seqs, d_qs, out);
        LAUNCHED(b, "attention_full_kernel");
    }
    CK(b, cudaFreeAsync(d_qs, st));
}
