/* backend/cuda/elementwise.cu: the row-wise and element-wise ops of the
 * decoder — embedding, RMSNorm, rope, the KV-cache store, SiLU·mul, the
 * residual add, the logit-row gather — and the fused launches the tape runs
 * (add + RMSNorm, rope of q and k + KV store, SiLU·mul into a GEMM's half
 * input), each with the arithmetic of the unfused ops in their order. */
#include <math.h>

#include "backend/cuda/common.cuh"
#include "backend/cuda/elementwise.cuh"
#include "backend/cuda/tape.cuh"

/* Sum over the block, returned to every thread; blockDim.x a multiple of 32. */
__device__ float block_sum(float v)
{
    __shared__ float part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    float s = 0.0f;
    for (int i = 0; i < nw; i++)
        s += part[i];
    return s;
}

__global__ void embed_kernel(const void *table, int dt, const int32_t *ids, int cols, float *out)
{
    dep_open();
    dep_wait();
    int64_t t = blockIdx.x, row = ids[t];
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        out[t * cols + i] = ldw(table, dt, row * cols + i);
}

/* The end of an RMSNorm row: o = w * (xr / sqrt(mean(xr^2) + eps)), ss this
 * thread's part of sum(xr^2). */
template <typename T>
__device__ __forceinline__ void norm_row(const float *xr, float ss, const void *w, int dt,
                                         float eps, int cols, T *o)
{
    ss = block_sum(ss);
    float inv = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        o[i] = from_f<T>(ldw(w, dt, i) * (xr[i] * inv));
}

/* HF RMSNorm in float32: x * (1 / sqrt(mean(x^2) + eps)) * weight. out may be x. */
__global__ void rmsnorm_kernel(const float *x, const void *w, int dt, float eps, int cols,
                               float *out)
{
    dep_open();
    dep_wait();
    const float *xr = x + (int64_t)blockIdx.x * cols;
    float *o = out + (int64_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        ss += xr[i] * xr[i];
    norm_row(xr, ss, w, dt, eps, cols, o);
}


/* One block per (row, head): a decode step's rope is many short blocks in
 * parallel rather than one block walking every head. */
__global__ void rope_kernel(float *x, int heads, int head_dim, int half,
                            const float *inv_freq, float mscale, const int32_t *pos)
{
    dep_open();
    dep_wait();
    const int64_t t = blockIdx.x;
    const float p = (float)pos[t];
    float *v = x + (t * heads + blockIdx.y) * head_dim;
    for (int i = threadIdx.x; i < half; i += blockDim.x)
        rotate_pair(v, i, half, p * inv_freq[i], mscale);
}

template <typename T>
__global__ void kv_store_kernel(const float *k, const float *v, int kv_dim,
                                const int32_t *slot, T *kc, T *vc)
{
    dep_open();
    dep_wait();
    int64_t t = blockIdx.x, s = slot[t];
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        kc[s * kv_dim + i] = from_f<T>(k[t * kv_dim + i]);
        vc[s * kv_dim + i] = from_f<T>(v[t * kv_dim + i]);
    }
}

/* add_kernel then rmsnorm_kernel on the same rows, in one launch (recorded
 * steps: the residual add that ends a block and the norm that starts the
 * next); the same arithmetic in the same order. */
template <typename T>
__global__ void add_rmsnorm_kernel(float *x, const float *y, const void *w, int dt, float eps,
                                   int cols, T *out)
{
    dep_open();
    dep_wait();
    float *xr = x + (int64_t)blockIdx.x * cols;
    const float *yr = y + (int64_t)blockIdx.x * cols;
    T *o = out + (int64_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float v = xr[i] + yr[i];
        xr[i] = v;
        ss += v * v;
    }
    norm_row(xr, ss, w, dt, eps, cols, o);
}

/* rope_kernel on q and on k, then kv_store_kernel, in one launch: blocks
 * (row, head) for the query heads, then (row, KV head) blocks that also
 * write their rotated k head and v head to the cache. Same arithmetic. */
template <typename T>
__global__ void rope_store_kernel(float *q, float *k, const float *v, int heads, int kv_heads,
                                  int head_dim, int half, const float *inv_freq, float mscale,
                                  const int32_t *pos, const int32_t *slot, T *kc, T *vc)
{
    dep_open();
    dep_wait();
    const int64_t t = blockIdx.x;
    const int h = blockIdx.y, kh = h - heads;
    const float p = (float)pos[t];
    float *x = kh >= 0 ? k + (t * kv_heads + kh) * head_dim : q + (t * heads + h) * head_dim;
    const int64_t off = kh >= 0 ? (int64_t)slot[t] * kv_heads * head_dim + (int64_t)kh * head_dim : 0;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        rotate_pair(x, i, half, p * inv_freq[i], mscale);
        if (kh >= 0) {
            kc[off + i] = from_f<T>(x[i]);
            kc[off + i + half] = from_f<T>(x[i + half]);
        }
    }
    if (kh < 0)
        return;
    const float *vr = v + (t * kv_heads + kh) * head_dim;
    for (int i = 2 * half + threadIdx.x; i < head_dim; i += blockDim.x)
        kc[off + i] = from_f<T>(x[i]);
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x)
        vc[off + i] = from_f<T>(vr[i]);
}

/* out = silu(gate) * up, in float32 or straight into the bf16/f16 input of
 * the GEMM after it (the values a float32 product then to_half_kernel give). */
template <typename T>
__global__ void silu_mul_kernel(const float *gate, const float *up, size_t n, T *out)
{
    dep_open();
    dep_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = from_f<T>(silu_mul(gate[i], up[i]));
}

__global__ void add_kernel(float *x, const float *y, size_t n)
{
    dep_open();
    dep_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

__global__ void gather_rows_kernel(const float *x, int cols, const int32_t *rows, float *out)
{
    dep_open();
    dep_wait();
    int64_t t = blockIdx.x, r = rows[t];
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        out[t * cols + i] = x[r * cols + i];
}

/* ---- the ops ---- */

void cu_embed(be_backend *bk, const be_weight *table, const int32_t *ids, int n, float *out)
{
    cu_backend *b = cu_of(bk);
    if (b->recording) {
        tape_op *o = cu_record(b, OP_EMBED);
        if (o) {
            o->embed.table = table;
            o->embed.ids = cu_dev_idx(b, ids);
            o->embed.out = out;
            o->embed.n = n;
        }
        return;
    }
    const int32_t *d_ids = cu_dev_idx(b, ids);
    if (b->base.kept || n <= 0)
        return;
    prof_begin(b);
    launch(b, embed_kernel, n, 256, 0, table->data, table->dtype, d_ids, (int)table->cols, out);
    LAUNCHED(b, "embed_kernel");
    prof_end(b, P_EMBED);
}

void cu_rmsnorm(be_backend *bk, const float *x, const be_weight *w, float eps, int rows, int cols,
                float *out)
{
    cu_backend *b = cu_of(bk);
    if (b->recording) {
        tape_op *o = cu_record(b, OP_RMSNORM);
        if (o) {
            o->rmsnorm.x = x;
            o->rmsnorm.w = w;
            o->rmsnorm.out = out;
            o->rmsnorm.eps = eps;
            o->rmsnorm.rows = rows;
            o->rmsnorm.cols = cols;
        }
        return;
    }
    if (b->base.kept || rows <= 0)
        return;
    prof_begin(b);
    launch(b, rmsnorm_kernel, rows, rmsnorm_threads(cols), 0, x, w->data, w->dtype, eps, cols,
           out);
    LAUNCHED(b, "rmsnorm_kernel");
    prof_end(b, P_RMSNORM);
}

/* Threads of a rope block for `half` dimension pairs (rope_kernel and
 * rope_store_kernel alike). */
static int rope_threads(int half)
{
    return half >= 128 ? 128 : half >= 64 ? 64 : 32;
}

void cu_rope(be_backend *bk, float *x, int n, int heads, int head_dim, const be_rope *r,
             const int32_t *pos)
{
    cu_backend *b = cu_of(bk);
    if (b->recording) {
        tape_op *o = cu_record(b, OP_ROPE);
        if (o) {
            o->rope.x = x;
            o->rope.r = r;
            o->rope.pos = cu_dev_idx(b, pos);
            o->rope.inv_freq = r->inv_freq;
            o->rope.n = n;
            o->rope.heads = heads;
            o->rope.head_dim = head_dim;
            o->rope.rot_dim = r->rot_dim;
            o->rope.mscale = r->mscale;
        }
        return;
    }
    const int32_t *d_pos = cu_dev_idx(b, pos);
    if (b->base.kept || n <= 0)
        return;
    int half = r->rot_dim / 2;
    if (r->inv_freq != b->rope_host || half != b->rope_half) {
        if (b->d_inv_freq && CK(b, cudaFree(b->d_inv_freq)))
            return;
        b->d_inv_freq = NULL;
        b->rope_host = NULL;
        b->gen++;
        if (CK(b, cudaMalloc(&b->d_inv_freq, (size_t)half * sizeof(float))) ||
            CK(b, cudaMemcpy(b->d_inv_freq, r->inv_freq, (size_t)half * sizeof(float),
                             cudaMemcpyHostToDevice)))
            return;
        b->rope_host = r->inv_freq;
        b->rope_half = half;
    }
    prof_begin(b);
    const int threads = rope_threads(half);
    launch(b, rope_kernel, dim3((unsigned)n, (unsigned)heads), threads, 0, x, heads, head_dim, half,
           b->d_inv_freq, r->mscale, d_pos);
    LAUNCHED(b, "rope_kernel");
    prof_end(b, P_ROPE);
}

void cu_kv_store(be_backend *bk, const float *k, const float *v, int n, int kv_dim,
                 const int32_t *slot, float *k_cache, float *v_cache)
{
    cu_backend *b = cu_of(bk);
    if (b->recording) {
        tape_op *o = cu_record(b, OP_KV);
        if (o) {
            o->kv.k = k;
            o->kv.v = v;
            o->kv.slot = cu_dev_idx(b, slot);
            o->kv.k_cache = k_cache;
            o->kv.v_cache = v_cache;
            o->kv.n = n;
            o->kv.kv_dim = kv_dim;
        }
        return;
    }
    const int32_t *d_slot = cu_dev_idx(b, slot);
    if (b->base.kept || n <= 0)
        return;
    prof_begin(b);
    if (cu_kv_bf16(b))
        launch(b, kv_store_kernel<__nv_bfloat16>, n, 256, 0, k, v, kv_dim, d_slot,
               (__nv_bfloat16 *)k_cache, (__nv_bfloat16 *)v_cache);
    else
        launch(b, kv_store_kernel<float>, n, 256, 0, k, v, kv_dim, d_slot, k_cache, v_cache);
    LAUNCHED(b, "kv_store_kernel");
    prof_end(b, P_KV);
}

void cu_silu_mul(be_backend *bk, const float *gate, const float *up, size_t n, float *out)
{
    cu_backend *b = cu_of(bk);
    if (b->recording) {
        tape_op *o = cu_record(b, OP_SILU);
        if (o) {
            o->silu.gate = gate;
            o->silu.up = up;
            o->silu.out = out;
            o->silu.n = n;
        }
        return;
    }
    if (b->base.kept || n == 0)
        return;
    prof_begin(b);
    launch(b, silu_mul_kernel<float>, grid_for(n, 256), 256, 0, gate, up, n, out);
    LAUNCHED(b, "silu_mul_kernel");
    prof_end(b, P_SILU);
}

void cu_add(be_backend *bk, float *x, const float *y, size_t n)
{
    cu_backend *b = cu_of(bk);
    if (b->recording) {
        tape_op *o = cu_record(b, OP_ADD);
        if (o) {
            o->add.x = x;
            o->add.y = y;
            o->add.n = n;
        }
        return;
    }
    if (b->base.kept || n == 0)
        return;
    prof_begin(b);
    launch(b, add_kernel, grid_for(n, 256), 256, 0, x, y, n);
    LAUNCHED(b, "add_kernel");
    prof_end(b, P_ADD);
}

void cu_gather_rows(be_backend *bk, const float *x, int cols, const int32_t *rows, int n,
                    float *out)
{
    cu_backend *b = cu_of(bk);
    if (b->recording) {
        tape_op *o = cu_record(b, OP_GATHER);
        if (o) {
            o->gather.x = x;
            o->gather.rows = cu_dev_idx(b, rows);
            o->gather.out = out;
            o->gather.cols = cols;
            o->gather.n = n;
        }
        return;
    }
    const int32_t *d_rows = cu_dev_idx(b, rows);
    if (b->base.kept || n <= 0)
        return;
    prof_begin(b);
    launch(b, gather_rows_kernel, n, 256, 0, x, cols, d_rows, out);
    LAUNCHED(b, "gather_rows_kernel");
    prof_end(b, P_GATHER);
}

/* ---- fused launches (tape.cu decides where they apply) ---- */

void cu_add_rmsnorm(cu_backend *b, float *x, const float *y, const be_weight *w, float eps,
                    int rows, int cols, void *out, int out_dt)
{
    const int threads = rmsnorm_threads(cols);
    prof_begin(b);
    if (out_dt == DT_F32)
        launch(b, add_rmsnorm_kernel<float>, rows, threads, 0, x, y, w->data, w->dtype, eps, cols,
               (float *)out);
    else if (out_dt == DT_BF16)
        launch(b, add_rmsnorm_kernel<__nv_bfloat16>, rows, threads, 0, x, y, w->data, w->dtype,
               eps, cols, (__nv_bfloat16 *)out);
    else
        launch(b, add_rmsnorm_kernel<__half>, rows, threads, 0, x, y, w->data, w->dtype, eps,
               cols, (__half *)out);
    LAUNCHED(b, "add_rmsnorm_kernel");
    prof_end(b, P_RMSNORM);
}

void cu_rope_store(cu_backend *b, float *q, float *k, const float *v, int n, int heads,
                   int kv_heads, int head_dim, int half, float mscale, const int32_t *pos,
                   const int32_t *slot, void *k_cache, void *v_cache)
{
    dim3 grid((unsigned)n, (unsigned)(heads + kv_heads));
    const int threads = rope_threads(half);
    prof_begin(b);
    if (cu_kv_bf16(b))
        launch(b, rope_store_kernel<__nv_bfloat16>, grid, threads, 0, q, k, v, heads, kv_heads,
               head_dim, half, b->d_inv_freq, mscale, pos, slot, (__nv_bfloat16 *)k_cache,
               (__nv_bfloat16 *)v_cache);
    else
        launch(b, rope_store_kernel<float>, grid, threads, 0, q, k, v, heads, kv_heads, head_dim,
               half, b->d_inv_freq, mscale, pos, slot, (float *)k_cache, (float *)v_cache);
    LAUNCHED(b, "rope_store_kernel");
    prof_end(b, P_ROPE);
}

int cu_silu_mul_half(cu_backend *b, const float *gate, const float *up, size_t n, int dt,
                     void *out)
{
    if (dt == DT_BF16)
        launch(b, silu_mul_kernel<__nv_bfloat16>, grid_for(n, 256), 256, 0, gate, up, n,
               (__nv_bfloat16 *)out);
    else
        launch(b, silu_mul_kernel<__half>, grid_for(n, 256), 256, 0, gate, up, n, (__half *)out);
    return LAUNCHED(b, "silu_mul_kernel");
}
