/* backend/cuda: the backend interface on an NVIDIA GPU. Weights are copied
 * once from the memory-mapped safetensors to device memory in their file
 * dtype; activations are float32; the KV cache is bf16 (or float32 with
 * INFERD_CUDA_KV=f32). Matrix products: up to GEMV_MAX_N input rows a
 * float32-accumulating kernel that streams the weights once (decode is
 * bound by that stream), above it cuBLAS with float32 accumulation. cuBLAS
 * wants both operands in the weights' dtype, and rounding the float32
 * activations to bf16 costs up to ~0.1 in logprob on the golden fixtures; so
 * by default each activation is split into a bf16 high part and a bf16
 * remainder and multiplied twice (16 mantissa bits, 2x the GEMM work).
 * --matmul-precision bfloat16 (or INFERD_CUDA_GEMM=bf16) does one bf16 pass
 * instead (faster prefill, vLLM's precision); INFERD_CUDA_MATMUL=f32 sends
 * every matmul to the float32 kernel. INFERD_CUDA_PROFILE=1 times every op
 * (synchronously) and prints the totals when the backend is freed.
 * Attention: split-KV over the paged cache for decode steps, and a tiled
 * kernel with online softmax for steps that carry prompt rows; both read
 * cached prefix blocks through the block table. Decode steps are
 * recorded and run with fused launches, and replayed as CUDA graphs where
 * they repeat (see "decode steps: tape and graphs"). One input row goes
 * through gemv1_kernel, launched early on sm_90+ (programmatic dependent
 * launch, see launch()), which also does the RMSNorm before it and the
 * residual add after it (run_norm_gemv, run_gemv_add); the decode attention
 * kernel applies rope and stores k and v (run_rope_attn); GEMM inputs are
 * written in half precision by the op before (run_silu_gemm,
 * run_add_rmsnorm). Measured on an H200 and
 * off by default because they did not pay: INFERD_CUDA_PDL=1 (every kernel
 * launched early) and INFERD_CUDA_LT=1 (cuBLASLt with an algorithm timed per
 * shape, lt_pick).
 *
 * All work goes to one stream. Ops return nothing (backend.h), so the first
 * failing CUDA call is kept, named, and reported by the next begin_step or
 * to_host, which every forward step calls. */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern "C" {
#include "backend/backend.h"
}
#include "backend/cuda/internal.h"

#define GEMV_MAX_N 8   /* input rows up to which matmul streams weights itself */
#define SPLIT_ONE_GEMM_N 256 /* see cu_matmul */
#define ATT_BQ 16      /* query rows per prefill attention block (4 per warp) */
#define ATT_BK 32      /* keys per prefill attention tile (one per lane) */
#define MAX_HEAD_DIM 256
#define MAX_MAPS 8

typedef struct idx_map {
    const void *host;
    const int32_t *dev;
} idx_map;

/* One recorded op of a decode step (see "decode steps: tape and graphs"). */
enum { OP_KEY, OP_EMBED, OP_RMSNORM, OP_MATMUL, OP_ROPE, OP_KV, OP_ATT, OP_SILU, OP_ADD,
       OP_GATHER };
typedef struct tape_op {
    int kind;
    float f;
    const void *p[8];
    int64_t i[8];
} tape_op;

typedef struct tape {
    tape_op *ops;
    int n, cap;
} tape;

typedef struct cu_backend {
    be_backend base;
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    int failed;
    char err[INFERD_ERR_MAX];
    int force_gemv;            /* INFERD_CUDA_MATMUL=f32: every matmul in float32 */
    int gemm_one_pass;         /* INFERD_CUDA_GEMM=bf16: activations rounded to bf16 */
    int profile;               /* INFERD_CUDA_PROFILE=1 */
    cudaEvent_t prof_start, prof_stop;
    double prof_ms[16];
    long prof_calls[16];
    void **weights;            /* device copies made by cu_weight, freed with the backend */
    size_t n_weights, cap_weights;
    /* per-step index arrays: packed in pinned memory, copied in one transfer */
    int32_t *h_stage, *d_stage;
    size_t stage_cap;          /* int32 elements */
    cudaEvent_t stage_done;
    idx_map map[MAX_MAPS];
    int n_map;
    int n_tiles;               /* prefill attention tiles of this step, 0: decode only */
    const int32_t *d_tiles;    /* [n_tiles][2]: sequence, first row */
    int n_tiles64;             /* the same in tiles of FA_BQ rows (tensor-core prefill) */
    const int32_t *d_tiles64;
    int n_ptiles64;            /* ... of the sequences with more than one row */
    const int32_t *d_ptiles64;
    int n_drows;               /* the rows of the one-row sequences (decode rows) */
    const int32_t *d_drows;
    int att_f32pre;            /* INFERD_CUDA_PREFILL=f32: the float32 prefill kernel */
    int att_no_gqa;            /* INFERD_CUDA_GQA=0: decode reads K/V once per query head */
    int cc_major;              /* compute capability: bf16 mma.sync needs 8.0 */
    /* rotary frequencies: the model's host array, copied once */
    const float *rope_host;
    int rope_half;
    float *d_inv_freq;
    void *scratch;             /* bf16/f16 copies of GEMM inputs */
    size_t scratch_bytes;
    void *smp_buf;             /* sample_rows: rows' parameters, then their results */
    size_t smp_bytes;
    int n_sm;                  /* multiprocessors: sizes the split-KV and GEMV grids */
    char *up_buf[2];           /* pinned staging of weight uploads, freed at the first step */
    cudaEvent_t up_done[2];    /* the copy out of up_buf[i] finished */
    int up_next, up_threads;
    int att_split;             /* INFERD_CUDA_ATT=split: the one-key-at-a-time split-KV kernels */
    int gemv_v3;               /* gemv1_kernel for one input row; INFERD_CUDA_GEMV=v2 turns it off */
    int use_pdl;               /* PDL: 2 gemv1_kernel's launches (default), 1 every launch */
    int use_lt;                /* INFERD_CUDA_LT=1: cuBLASLt, algorithm timed per shape */
    int fuse_half;             /* run_silu_gemm, run_add_rmsnorm; INFERD_CUDA_FUSE=float turns them off */
    int gemv_norm;             /* run_norm_gemv, run_gemv_add; INFERD_CUDA_GEMV_NORM=0 off */
    int att_rope;              /* run_rope_attn; INFERD_CUDA_ATT_ROPE=0 off */
    int gemv_pf;               /* INFERD_CUDA_GEMV_PF: gemv1_kernel's L2 prefetch, items a warp */
    cublasLtHandle_t lt_handle;
    void *lt_ws;               /* cuBLASLt's workspace */
    struct lt_choice *lt;      /* the timed choices */
    int n_lt, cap_lt;
    cudaEvent_t lt_ev[2];
    int max_keys;              /* the longest context, to a power of two: split-KV */
    float *att_part;           /* split-KV partial results */
    size_t att_part_bytes;
    int *att_done;             /* splits finished per (row, KV head); zero between launches */
    size_t att_done_bytes;
    /* decode steps: ops are recorded between begin_step and to_host, then
     * run (with q/k/v and gate/up fused) or replayed as one CUDA graph */
    int use_graph, use_fuse;   /* INFERD_CUDA_GRAPH=0, INFERD_CUDA_FUSE=0 turn them off */
    int recording;
    int step_rows;             /* rows of the recorded step: graphs up to GEMV_MAX_N */
    int step_decode;           /* every row of the step a decode row: graphs only then */
    unsigned gen;              /* bumped when a buffer that kernels see is reallocated */
    tape cur, last, gtape;     /* this step, the step before, the graph's */
    cudaGraphExec_t gexec;
    long graph_launches, graph_captures, gemv_folds, att_folds; /* INFERD_CUDA_GRAPH_STATS=1 */
} cu_backend;

/* ---- errors ---- */

static void fail_msg(cu_backend *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail_msg(cu_backend *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    b->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, sizeof b->err, fmt, ap);
    va_end(ap);
}

/* Keeps the call's name (the text before its argument list) with the error. */
static int cuda_fail(cu_backend *b, const char *call, cudaError_t rc)
{
    if (rc == cudaSuccess)
        return 0;
    int len = (int)strcspn(call, "(");
    fail_msg(b, "cuda backend: %.*s failed: %s (%s)", len, call, cudaGetErrorName(rc),
             cudaGetErrorString(rc));
    return -1;
}

static int blas_fail(cu_backend *b, const char *call, cublasStatus_t rc)
{
    if (rc == CUBLAS_STATUS_SUCCESS)
        return 0;
    int len = (int)strcspn(call, "(");
    fail_msg(b, "cuda backend: %.*s failed: %s", len, call, cublasGetStatusString(rc));
    return -1;
}

#define CK(b, call) cuda_fail((b), #call, (call))
#define CKB(b, call) blas_fail((b), #call, (call))
/* After a kernel launch: a bad configuration shows up here, a fault later. */
#define LAUNCHED(b, name) cuda_fail((b), name, cudaGetLastError())

static int report(cu_backend *b, inferd_error *e)
{
    if (!b->failed)
        return 0;
    err_set(e, "%s", b->err);
    b->failed = 0;
    return -1;
}

/* Every kernel of this file starts with dep_open() and dep_wait() (the
 * one-row GEMV loads weights between the two) and is launched by launch().
 * With programmatic dependent launch (sm_90 and later: gemv1_kernel by
 * default, every kernel with INFERD_CUDA_PDL=1, none with =0) a kernel is launched
 * once every block of the one before it has started, and waits in dep_wait()
 * until that one has finished and its writes are visible. What it does before
 * dep_wait() (reading weights, which no kernel writes) overlaps the tail of
 * the one before, and the launch latency between the two is gone. Every
 * kernel early lost 4 % of a decode step on an H200 (why was not profiled;
 * bench/NOTES.md), the GEMV alone gained 2 %: only gemv1_kernel's launches
 * carry the attribute by default. A kernel
 * touches nothing other kernels use before dep_wait(), and every block calls
 * it, so a kernel ends only after the one before it ended (the kernel after
 * it may read the outputs of both). Both are no-ops for an ordinary launch. */
template <typename... P, typename... A>
static void launch_ex(cu_backend *b, int pdl, void (*kernel)(P...), dim3 grid, dim3 block,
                      size_t smem, A... args)
{
    cudaLaunchAttribute at = {};
    at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t c = {};
    c.gridDim = grid;
    c.blockDim = block;
    c.dynamicSmemBytes = smem;
    c.stream = b->stream;
    c.attrs = &at;
    c.numAttrs = pdl ? 1 : 0;
    /* a failure is also the thread's last error: LAUNCHED reports it with the kernel's name */
    (void)cudaLaunchKernelEx(&c, kernel, args...);
}

template <typename... P, typename... A>
static void launch(cu_backend *b, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                   A... args)
{
    launch_ex(b, b->use_pdl == 1, kernel, grid, block, smem, args...);
}

/* ---- profile: per-op device time, measured synchronously ---- */

enum { P_EMBED, P_RMSNORM, P_GEMV, P_GEMM, P_ROPE, P_KV, P_ATT_DEC, P_ATT_PRE, P_SILU, P_ADD,
       P_GATHER, P_UPLOAD, P_SAMPLE, P_N };
static const char *const prof_names[P_N] = {
    "embed", "rmsnorm", "matmul gemv", "matmul gemm", "rope", "kv_store", "attention decode",
    "attention prefill", "silu_mul", "add", "gather_rows", "step upload", "sample"};

static void prof_begin(cu_backend *b)
{
    if (b->profile)
        CK(b, cudaEventRecord(b->prof_start, b->stream));
}

static void prof_end(cu_backend *b, int op)
{
    if (!b->profile)
        return;
    float ms = 0.0f;
    if (CK(b, cudaEventRecord(b->prof_stop, b->stream)) ||
        CK(b, cudaEventSynchronize(b->prof_stop)) ||
        CK(b, cudaEventElapsedTime(&ms, b->prof_start, b->prof_stop)))
        return;
    b->prof_ms[op] += ms;
    b->prof_calls[op]++;
}

static void prof_print(cu_backend *b)
{
    double total = 0;
    for (int i = 0; i < P_N; i++)
        total += b->prof_ms[i];
    fprintf(stderr, "cuda profile: %.1f ms of device time in ops\n", total);
    for (int i = 0; i < P_N; i++)
        if (b->prof_calls[i])
            fprintf(stderr, "  %-18s %9.2f ms %5.1f%% %8ld calls\n", prof_names[i],
                    b->prof_ms[i], total > 0 ? 100.0 * b->prof_ms[i] / total : 0.0,
                    b->prof_calls[i]);
}

/* ---- device helpers ---- */

__device__ __forceinline__ float ldw(const void *w, int dt, int64_t i)
{
    if (dt == DT_BF16)
        return __bfloat162float(((const __nv_bfloat16 *)w)[i]);
    if (dt == DT_F16)
        return __half2float(((const __half *)w)[i]);
    return ((const float *)w)[i];
}

/* See launch(). */
__device__ __forceinline__ void dep_open(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void dep_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

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

/* ---- element-wise kernels ---- */

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

/* The threads that normalise one row: the sum of squares' order, and so its
 * bits, depend on it, so every launch that normalises rows (rmsnorm_kernel,
 * add_rmsnorm_kernel, gemv1_kernel's NORM) takes it from here. */
static int rmsnorm_threads(int64_t cols)
{
    return cols >= 1024 ? 512 : cols >= 256 ? 256 : 64;
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

/* Rope of one dimension pair of a head: (v[i], v[i + half]) by angle ang. */
__device__ __forceinline__ void rotate_pair(float *v, int i, int half, float ang, float mscale)
{
    float c = cosf(ang) * mscale, s = sinf(ang) * mscale;
    float a = v[i], bb = v[i + half];
    v[i] = a * c - bb * s;
    v[i + half] = bb * c + a * s;
}

/* One block per (row, head): a decode step's rope is 32 short blocks in
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

/* SiLU(g) * u, as transformers' LlamaMLP computes it in float32. */
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

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

template <typename T>
__global__ void to_half_kernel(const float *x, size_t n, T *out)
{
    dep_open();
    dep_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = from_f<T>(x[i]);
}

/* x = hi + lo, both in T: the remainder keeps the bits hi rounds away. */
template <typename T>
__global__ void split_kernel(const float *x, size_t n, T *hi, T *lo)
{
    dep_open();
    dep_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        T h = from_f<T>(x[i]);
        hi[i] = h;
        lo[i] = from_f<T>(x[i] - to_f(h));
    }
}

/* y[i] = y2[i] + y2[n + i] (+ bias): the two halves of a split product
 * done as one GEMM over 2n columns. */
__global__ void sum_halves_kernel(float *y, const float *y2, const void *bias, int dt,
                                  int64_t rows, size_t n)
{
    dep_open();
    dep_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = y2[i] + y2[n + i] + (bias ? ldw(bias, dt, (int64_t)(i % (size_t)rows)) : 0.0f);
}

/* y[i][r] += bias[r] */
__global__ void bias_kernel(float *y, const void *bias, int dt, int64_t rows, size_t n)
{
    dep_open();
    dep_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += ldw(bias, dt, (int64_t)(i % (size_t)rows));
}

/* ---- GEMV: few input rows against weights streamed once ---- */

/* 8 bf16 / f16 weights of a 16-byte load as floats (the pointer picks the type). */
__device__ __forceinline__ void cvt8(uint4 u, const __nv_bfloat16 *, float *o)
{
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        o[2 * i] = f.x;
        o[2 * i + 1] = f.y;
    }
}
__device__ __forceinline__ void cvt8(uint4 u, const __half *, float *o)
{
    const __half2 *h = (const __half2 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __half22float2(h[i]);
        o[2 * i] = f.x;
        o[2 * i + 1] = f.y;
    }
}

/* 8 weights as floats, loaded with the streaming hint (read once: no L1
 * allocation, evict first from L2) so they do not push x out of the caches. */
__device__ __forceinline__ void load8s(const __nv_bfloat16 *p, float *o)
{
    cvt8(__ldcs((const uint4 *)p), p, o);
}
__device__ __forceinline__ void load8s(const __half *p, float *o)
{
    cvt8(__ldcs((const uint4 *)p), p, o);
}
__device__ __forceinline__ void load8s(const float *p, float *o)
{
    float4 a = __ldcs((const float4 *)p), c = __ldcs((const float4 *)p + 1);
    o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
    o[4] = c.x; o[5] = c.y; o[6] = c.z; o[7] = c.w;
}

/* GEMV, second version: blocks of 4 warps, WPR warps per output row (split
 * K inside the block, partial sums merged in shared memory), so that small
 * matrices still put enough loads in flight and large ones finish in about
 * one wave of small blocks instead of a long tail. Warp `part` of a row
 * takes the 1024-element chunks part, part + WPR, ...; each chunk is 4
 * loads of 16 bytes per lane issued before the first use. */
#define GEMV2_WARPS 4
#define GEMV_SET 3 /* matrices one launch can take: q, k, v (or gate, up) share x */
typedef struct gemv_set {
    const void *w[GEMV_SET], *bias[GEMV_SET];
    float *y[GEMV_SET];
    int64_t rows[GEMV_SET];
    int bdt[GEMV_SET], wpr[GEMV_SET];
    unsigned first[GEMV_SET + 1]; /* first block of each matrix; first[n_mat]: the grid */
    unsigned first_row[GEMV_SET + 1]; /* gemv1_kernel: rows numbered across the matrices */
    int n_mat;
    /* gemv1_kernel's folds (run_norm_gemv, run_gemv_add; INFERD_CUDA_GEMV_NORM=0 off): x
     * is first RMS-normalised with norm_w as norm_threads threads of rmsnorm_kernel
     * would (norm_out, when not NULL, gets the result), and res[r] += the
     * product replaces y[r] = it (one matrix, no GLU). */
    const void *norm_w;
    float *norm_out, *res;
    float norm_eps;
    int norm_dt, norm_threads;
    int pf_items; /* gemv1_kernel: items a warp asks L2 for before dep_wait() */
} gemv_set;

/* A parameter array element by a run-time index without a local copy. */
template <typename V> __device__ __forceinline__ V pick(const V *a, int m)
{
    return m == 0 ? a[0] : m == 1 ? a[1] : a[2];
}

/* The matrix of the set that v (a block, or a row numbered across the
 * matrices) falls in: the last m with first[m] <= v. */
template <typename V> __device__ __forceinline__ int mat_of(const unsigned *first, int n_mat, V v)
{
    int m = 0;
    while (m + 1 < n_mat && v >= pick(first, m + 1))
        m++;
    return m;
}

/* GLU: S holds gate and up (n_mat 1 for the grid, w[1] and bias[1] the up
 * matrix); each warp reads row r of both and writes silu(gate) * up to
 * y[0], so the activation needs no launch of its own. */
template <typename TW, int NR, bool GLU>
__global__ void __launch_bounds__(GEMV2_WARPS * 32, NR == 1 && !GLU ? 6 : 4)
gemv2_kernel(const float *x, const gemv_set S, int n, int64_t cols, int vec)
{
    dep_open();
    dep_wait();
    constexpr int NM = GLU ? 2 : 1; /* weight rows a warp reads */
    __shared__ float red[NM][GEMV2_WARPS][NR];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int m = mat_of(S.first, S.n_mat, blockIdx.x);
    const void *bias = pick(S.bias, m);
    float *y = pick(S.y, m);
    const int64_t rows = pick(S.rows, m);
    const int bdt = pick(S.bdt, m), wpr = pick(S.wpr, m);
    const int rpb = GEMV2_WARPS / wpr, part = warp % wpr;
    const int64_t r = (int64_t)(blockIdx.x - pick(S.first, m)) * rpb + warp / wpr;
    const bool live = r < rows;
    const TW *wr[NM];
    wr[0] = (const TW *)pick(S.w, m) + (live ? r : 0) * cols;
    if (GLU)
        wr[NM - 1] = (const TW *)S.w[1] + (live ? r : 0) * cols;
    for (int i0 = 0; i0 < n; i0 += NR) {
        int nr = n - i0 < NR ? n - i0 : NR;
        float acc[NM][NR];
#pragma unroll
        for (int j = 0; j < NM; j++)
#pragma unroll
            for (int i = 0; i < NR; i++)
                acc[j][i] = 0.0f;
        if (live && vec) {
            for (int64_t kc = (int64_t)part * 1024; kc < cols; kc += (int64_t)wpr * 1024) {
                float wf[NM][4][8];
#pragma unroll
                for (int j = 0; j < NM; j++)
#pragma unroll
                    for (int u = 0; u < 4; u++) {
                        const int64_t k = kc + 256 * u + lane * 8;
                        if (k < cols)
                            load8s(wr[j] + k, wf[j][u]);
                    }
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const int64_t k = kc + 256 * u + lane * 8;
                    if (k >= cols)
                        break;
#pragma unroll
                    for (int i = 0; i < NR; i++) {
                        if (i < nr) {
                            const float *xr = x + (int64_t)(i0 + i) * cols + k;
                            float4 a = ((const float4 *)xr)[0], c = ((const float4 *)xr)[1];
#pragma unroll
                            for (int j = 0; j < NM; j++)
                                acc[j][i] += a.x * wf[j][u][0] + a.y * wf[j][u][1] +
                                             a.z * wf[j][u][2] + a.w * wf[j][u][3] +
                                             c.x * wf[j][u][4] + c.y * wf[j][u][5] +
                                             c.z * wf[j][u][6] + c.w * wf[j][u][7];
                        }
                    }
                }
            }
        } else if (live) {
            for (int64_t k = (int64_t)part * 32 + lane; k < cols; k += (int64_t)wpr * 32) {
#pragma unroll
                for (int j = 0; j < NM; j++) {
                    float wv = to_f(wr[j][k]);
#pragma unroll
                    for (int i = 0; i < NR; i++)
                        if (i < nr)
                            acc[j][i] += x[(int64_t)(i0 + i) * cols + k] * wv;
                }
            }
        }
#pragma unroll
        for (int j = 0; j < NM; j++)
#pragma unroll
            for (int i = 0; i < NR; i++) {
                float s = warp_sum(acc[j][i]);
                if (lane == 0)
                    red[j][warp][i] = s;
            }
        __syncthreads();
        if (live && part == 0 && lane < nr) {
            float s = 0.0f;
            for (int p = 0; p < wpr; p++)
                s += red[0][warp + p][lane];
            s += bias ? ldw(bias, bdt, r) : 0.0f;
            if (GLU) {
                float u = 0.0f;
                for (int p = 0; p < wpr; p++)
                    u += red[NM - 1][warp + p][lane];
                u += S.bias[1] ? ldw(S.bias[1], S.bdt[1], r) : 0.0f;
                s = silu_mul(s, u);
            }
            y[(int64_t)(i0 + lane) * rows + r] = s;
        }
        __syncthreads(); /* red is reused by the next group of input rows */
    }
}

/* GEMV for one input row, third version: a single wave of one large block
 * per multiprocessor. The set's rows, numbered across its matrices, are cut
 * into equal contiguous ranges, one a block, and each row into items of CH
 * columns that the block's warps take in turn: every multiprocessor streams
 * about the same bytes, and there is no later wave to trail (gemv2_kernel
 * lost 5-10 us a launch to its waves' ramp and tail, bench/NOTES.md). A warp
 * loads its next item while it multiplies the current one, and its first
 * item before dep_wait(), overlapping the kernel before. Each item's sum
 * goes to shared memory and a row's are added in column order, so the
 * result does not depend on timing. GLU as in gemv2_kernel. The default
 * for one row since it beat gemv2_kernel on an H200 (decode 173 → 191
 * tok/s); INFERD_CUDA_GEMV=v2 goes back to that. */
#define GEMV1_WARPS 16
#define GEMV1_SMEM (48 * 1024) /* per-item sums of a block, at most */

template <typename TW, int NM, int U>
__device__ __forceinline__ void gemv1_load(const gemv_set &S, int64_t cols, int64_t row, int64_t k0,
                                           uint4 (*buf)[U])
{
    const int m = mat_of(S.first_row, S.n_mat, row);
    const TW *w[NM];
    w[0] = (const TW *)pick(S.w, m) + (row - pick(S.first_row, m)) * cols;
    if (NM == 2)
        w[NM - 1] = (const TW *)S.w[1] + row * cols;
#pragma unroll
    for (int j = 0; j < NM; j++)
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t k = k0 + 256 * u;
            buf[j][u] = k < cols ? __ldcs((const uint4 *)(w[j] + k)) : make_uint4(0, 0, 0, 0);
        }
}

/* INFERD_CUDA_GEMV_PF=n: the n items a warp takes after its first are
 * asked of L2 (cp.async.bulk.prefetch, no registers held) before
 * dep_wait(), so that a block that starts while the kernel before still
 * ends on other multiprocessors streams more than one item in that time.
 * Off by default: on an H200 the decode step grew with n (4.93 ms at 0,
 * 5.04 at 2, 5.29 at 8; bench/RESULTS.md). */
template <typename TW, int NM>
__device__ __forceinline__ void gemv1_prefetch(const gemv_set &S, int64_t cols, int64_t row,
                                               int64_t k0, int ch)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const int m = mat_of(S.first_row, S.n_mat, row);
    const TW *w[NM];
    w[0] = (const TW *)pick(S.w, m) + (row - pick(S.first_row, m)) * cols;
    if (NM == 2)
        w[NM - 1] = (const TW *)S.w[1] + row * cols;
    const unsigned bytes = (unsigned)((cols - k0 < ch ? cols - k0 : ch) * (int64_t)sizeof(TW));
#pragma unroll
    for (int j = 0; j < NM; j++)
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(w[j] + k0), "r"(bytes)
                     : "memory");
#endif
}

template <typename TW, bool GLU, bool NORM>
__global__ void __launch_bounds__(GEMV1_WARPS * 32, 1)
gemv1_kernel(const float *x, const gemv_set S, int64_t cols, int64_t total, int rows_per_block)
{
    constexpr int NM = GLU ? 2 : 1; /* weight rows an item reads */
    constexpr int U = GLU ? 4 : 8;  /* 16-byte loads per lane and weight row */
    constexpr int CH = U * 256;     /* columns of an item */
    /* [NM][rows_per_block * n_ch]; with NORM then, from a multiple of 4,
     * the normalised x [cols] and the warps' sums of squares [GEMV1_WARPS] */
    extern __shared__ float part[];
    dep_open();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n_ch = (int)((cols + CH - 1) / CH);
    const int64_t r0 = (int64_t)blockIdx.x * rows_per_block;
    const int nrow = total - r0 < rows_per_block ? (int)(total - r0) : rows_per_block;
    const int items = nrow * n_ch, stride = rows_per_block * n_ch;
    uint4 cur[NM][U], nxt[NM][U];
    int it = warp;
    if (it < items)
        gemv1_load<TW, NM, U>(S, cols, r0 + it / n_ch, (int64_t)(it % n_ch) * CH + lane * 8, cur);
    if (lane < S.pf_items) {
        const int pf = it + (lane + 1) * GEMV1_WARPS;
        if (pf < items)
            gemv1_prefetch<TW, NM>(S, cols, r0 + pf / n_ch, (int64_t)(pf % n_ch) * CH, CH);
    }
    dep_wait();
    if constexpr (NORM) { /* a separate instance: x stays a global pointer in the others */
        /* norm_row's arithmetic in rmsnorm_kernel's order: the same bits */
        float *xs = part + ((NM * stride + 3) & ~3), *ws = xs + cols;
        float ss = 0.0f;
        if (threadIdx.x < S.norm_threads)
            for (int64_t i = threadIdx.x; i < cols; i += S.norm_threads)
                ss += x[i] * x[i];
        ss = warp_sum(ss);
        if (lane == 0)
            ws[warp] = ss;
        __syncthreads();
        ss = 0.0f;
        for (int i = 0; i < GEMV1_WARPS; i++)
            ss += ws[i];
        const float inv = 1.0f / sqrtf(ss / (float)cols + S.norm_eps);
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
            const float v = ldw(S.norm_w, S.norm_dt, i) * (x[i] * inv);
            xs[i] = v;
            if (S.norm_out && blockIdx.x == 0)
                S.norm_out[i] = v;
        }
        __syncthreads();
        x = xs;
    }
    for (; it < items; it += GEMV1_WARPS) {
        const int nx = it + GEMV1_WARPS;
        if (nx < items)
            gemv1_load<TW, NM, U>(S, cols, r0 + nx / n_ch, (int64_t)(nx % n_ch) * CH + lane * 8,
                                  nxt);
        const int64_t k0 = (int64_t)(it % n_ch) * CH + lane * 8;
        float acc[NM];
#pragma unroll
        for (int j = 0; j < NM; j++)
            acc[j] = 0.0f;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t k = k0 + 256 * u;
            if (k >= cols)
                break;
            const float4 a = ((const float4 *)(x + k))[0], c = ((const float4 *)(x + k))[1];
#pragma unroll
            for (int j = 0; j < NM; j++) {
                float wf[8];
                cvt8(cur[j][u], (const TW *)0, wf);
                acc[j] += a.x * wf[0] + a.y * wf[1] + a.z * wf[2] + a.w * wf[3] + c.x * wf[4] +
                          c.y * wf[5] + c.z * wf[6] + c.w * wf[7];
            }
        }
#pragma unroll
        for (int j = 0; j < NM; j++) {
            const float s = warp_sum(acc[j]);
            if (lane == 0)
                part[j * stride + it] = s;
        }
#pragma unroll
        for (int j = 0; j < NM; j++)
#pragma unroll
            for (int u = 0; u < U; u++)
                cur[j][u] = nxt[j][u];
    }
    __syncthreads();
    for (int lr = threadIdx.x; lr < nrow; lr += blockDim.x) {
        const int64_t row = r0 + lr;
        const int m = mat_of(S.first_row, S.n_mat, row);
        const int64_t r = row - pick(S.first_row, m);
        float s = 0.0f;
        for (int c = 0; c < n_ch; c++)
            s += part[lr * n_ch + c];
        const void *bias = pick(S.bias, m);
        s += bias ? ldw(bias, pick(S.bdt, m), r) : 0.0f;
        if (GLU) {
            float u = 0.0f;
            for (int c = 0; c < n_ch; c++)
                u += part[stride + lr * n_ch + c];
            u += S.bias[1] ? ldw(S.bias[1], S.bdt[1], r) : 0.0f;
            s = silu_mul(s, u);
        }
        if (S.res)
            S.res[r] = S.res[r] + s; /* add_kernel's sum */
        else
            pick(S.y, m)[r] = s;
    }
}

/* ---- attention ---- */

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
 * key and value row is read once per step instead of G times (at 64-256
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
 * for every key: ~35% of the bandwidth at 256 sequences). Scores: lanes 2i
 * and 2i+1 hold keys i and i+16 of the tile, every other 16-byte chunk each,
 * so one load instruction reads whole 32-byte sectors of 16 key rows; the
 * pair's partial dots add with one shuffle. Softmax: one warp max per head
 * and tile, exp2 with log2(e) folded into q. Values: lanes over dimensions
 * (coalesced rows), the tile's probabilities from shared memory. Partial
 * results leave in natural-log units, as attn_merge_kernel expects. */
#define DEC_WARPS 4
#define DEC_TILE 32
/* run_rope_attn (INFERD_CUDA_ATT_ROPE=0 off): this step's rope of q and k and
 * its KV-cache store, done by the decode kernel as rope_store_kernel would. */
typedef struct dec_rope {
    const float *k, *v;     /* this step's k rows (not rotated) and v rows */
    const float *inv_freq;
    const int32_t *slot;
    __nv_bfloat16 *kc, *vc; /* the cache the kernel reads, written */
    float mscale;
    int half;
} dec_rope;

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
#define FA_BQ 64
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

/* ---- the vtable ---- */

static unsigned grid_for(size_t n, unsigned threads)
{
    size_t g = (n + threads - 1) / threads;
    return g < 1 ? 1 : g > 65535 * 8 ? 65535 * 8 : (unsigned)g;
}

/* The least lo * 2^k that is >= v: a size that stays the same while v grows. */
static int pow2_bucket(int lo, int v)
{
    while (lo < v)
        lo *= 2;
    return lo;
}

/* The device copy of a host index array registered by begin_step. */
static const int32_t *dev_idx(cu_backend *b, const int32_t *host)
{
    for (int i = 0; i < b->n_map; i++)
        if (b->map[i].host == host)
            return b->map[i].dev;
    /* a recorded op (see flush) holds the device copy itself */
    uintptr_t h = (uintptr_t)host, d = (uintptr_t)b->d_stage;
    if (b->d_stage && h >= d && h < d + b->stage_cap * sizeof(int32_t))
        return host;
    fail_msg(b, "cuda backend: an index array was used that begin_step did not upload");
    return NULL;
}

/* ---- weight upload ----
 *
 * cudaMemcpy from the mapped file takes the driver's pageable path: one
 * thread faults the pages in and copies them to a small staging buffer
 * before each DMA. Instead, up_threads threads copy the next chunk into
 * one of two pinned buffers while the DMA drains the other. */
#define UP_CHUNK ((size_t)64 << 20)
#define UP_MAX_THREADS 8

typedef struct up_part {
    char *dst;
    const char *src;
    size_t n;
} up_part;

static void *up_copy(void *arg)
{
    const up_part *p = (const up_part *)arg;
    memcpy(p->dst, p->src, p->n);
    return NULL;
}

static void copy_parallel(char *dst, const char *src, size_t n, int threads)
{
    pthread_t th[UP_MAX_THREADS];
    up_part part[UP_MAX_THREADS] = {};
    int started[UP_MAX_THREADS] = {0};
    size_t per = ((n + (size_t)threads - 1) / (size_t)threads + 4095) & ~(size_t)4095;
    for (int t = 0; t < threads; t++) {
        size_t off = (size_t)t * per;
        part[t] = (up_part){dst + off, src + off, off < n ? (n - off < per ? n - off : per) : 0};
        if (t > 0 && part[t].n)
            started[t] = !pthread_create(&th[t], NULL, up_copy, &part[t]);
    }
    up_copy(&part[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else if (part[t].n)
            up_copy(&part[t]); /* no thread: this one copies it */
    }
}

static int upload(cu_backend *b, void *dst, const void *src, size_t bytes)
{
    if (!b->up_buf[0] && bytes >= UP_CHUNK / 4) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        b->up_threads = cpus < 1 ? 1 : cpus > UP_MAX_THREADS ? UP_MAX_THREADS : (int)cpus;
        for (int i = 0; i < 2; i++) {
            void *p = NULL;
            if (cudaHostAlloc(&p, UP_CHUNK, cudaHostAllocDefault)) {
                cudaGetLastError(); /* no pinned memory: the plain copy still works */
                break;
            }
            if (cudaEventCreateWithFlags(&b->up_done[i], cudaEventDisableTiming)) {
                cudaGetLastError();
                cudaFreeHost(p);
                break;
            }
            b->up_buf[i] = (char *)p;
        }
    }
    if (!b->up_buf[0] || !b->up_buf[1] || bytes < UP_CHUNK / 4)
        return CK(b, cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
    for (size_t off = 0; off < bytes; off += UP_CHUNK) {
        const int i = b->up_next;
        const size_t n = bytes - off < UP_CHUNK ? bytes - off : UP_CHUNK;
        b->up_next ^= 1;
        if (CK(b, cudaEventSynchronize(b->up_done[i])))
            return -1;
        copy_parallel(b->up_buf[i], (const char *)src + off, n, b->up_threads);
        if (CK(b, cudaMemcpyAsync((char *)dst + off, b->up_buf[i], n, cudaMemcpyHostToDevice,
                                  b->stream)) ||
            CK(b, cudaEventRecord(b->up_done[i], b->stream)))
            return -1;
    }
    return 0;
}

static void upload_done(cu_backend *b)
{
    for (int i = 0; i < 2; i++) {
        if (b->up_buf[i]) {
            cudaEventSynchronize(b->up_done[i]);
            cudaEventDestroy(b->up_done[i]);
            cudaFreeHost(b->up_buf[i]);
        }
        b->up_buf[i] = NULL;
    }
}

/* ---- steps: tape and graphs ----
 *
 * Between begin_step and to_host of a step over the KV cache the ops only
 * append their arguments to a tape; to_host runs it. Running it fuses ops:
 * matmuls that share their input (q/k/v, gate/up: one launch, or one input
 * conversion for GEMMs), silu into the GEMV before it,
 * add + rmsnorm, rope + KV store. A decode step (every row a decode row, at
 * most GEMV_MAX_N of them) whose tape
 * equals the previous step's is captured into a CUDA graph; later steps with
 * the same tape replay it: one launch for the whole step. The tape holds
 * every argument a kernel sees (buffers, shapes, the step's upload layout,
 * the split-KV count and a generation number of the backend's own
 * buffers), so equal tapes launch identical kernels; what changes from step
 * to step (tokens, positions, slots, block tables) is read from the device
 * copies begin_step uploads. A tape is captured only after it ran once
 * uncaptured, so every buffer it needs has been allocated and nothing
 * synchronises during capture. */

static tape_op *record(cu_backend *b, int kind)
{
    tape *t = &b->cur;
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 1024;
        tape_op *ops = (tape_op *)realloc(t->ops, (size_t)cap * sizeof *ops);
        if (!ops) {
            fail_msg(b, "cuda backend: out of memory for the step's op list");
            return NULL;
        }
        t->ops = ops;
        t->cap = cap;
    }
    tape_op *o = &t->ops[t->n++];
    memset(o, 0, sizeof *o);
    o->kind = kind;
    return o;
}

static int tape_eq(const tape *a, const tape *c)
{
    return a->n == c->n && a->n > 0 && memcmp(a->ops, c->ops, (size_t)a->n * sizeof *a->ops) == 0;
}

static int tape_copy(cu_backend *b, tape *dst, const tape *src)
{
    if (dst->cap < src->n) {
        tape_op *ops = (tape_op *)realloc(dst->ops, (size_t)src->n * sizeof *ops);
        if (!ops) {
            fail_msg(b, "cuda backend: out of memory for the step's op list");
            return -1;
        }
        dst->ops = ops;
        dst->cap = src->n;
    }
    memcpy(dst->ops, src->ops, (size_t)src->n * sizeof *src->ops);
    dst->n = src->n;
    return 0;
}

static void cu_embed(be_backend *bk, const be_weight *table, const int32_t *ids, int n,
                     float *out);
static void cu_rmsnorm(be_backend *bk, const float *x, const be_weight *w, float eps, int rows,
                       int cols, float *out);
static void cu_matmul(be_backend *bk, const float *x, const be_weight *w, const be_weight *bias,
                      int n, float *y);
static void cu_rope(be_backend *bk, float *x, int n, int heads, int head_dim, const be_rope *r,
                    const int32_t *pos);
static void cu_kv_store(be_backend *bk, const float *k, const float *v, int n, int kv_dim,
                        const int32_t *slot, float *k_cache, float *v_cache);
static void cu_attention(be_backend *bk, const float *q, const float *k_cache,
                         const float *v_cache, int heads, int kv_heads, int head_dim,
                         float scale, const be_attn_layout *l, float *out);
static void cu_silu_mul(be_backend *bk, const float *gate, const float *up, size_t n, float *out);
static void cu_add(be_backend *bk, float *x, const float *y, size_t n);
static void cu_gather_rows(be_backend *bk, const float *x, int cols, const int32_t *rows, int n,
                           float *out);
/* What gemv1_kernel folds in (INFERD_CUDA_GEMV_NORM=0: nothing): the RMSNorm of its
 * input (norm_w non-NULL; norm_out gets the normalised row when not NULL), the
 * residual add of its output (res += the product; y is not written). */
typedef struct gemv_fold {
    const be_weight *norm_w;
    float norm_eps;
    float *norm_out, *res;
} gemv_fold;
static int gemv_multi(cu_backend *b, const float *x, const be_weight *const *w,
                      const be_weight *const *bias, float *const *y, int n_mat, int n, bool glu,
                      const gemv_fold *fold);
static int gemm_multi(cu_backend *b, const float *x, const be_weight *const *w,
                      const be_weight *const *bias, float *const *y, int n_mat, int n);
static void *scratch(cu_backend *b, size_t bytes);
static void gemm_set(cu_backend *b, const void *xb, cudaDataType_t ty, const be_weight *const *w,
                     const be_weight *const *bias, float *const *y, int n_mat, int n);

/* cuBLAS's type for a bf16 or f16 dtype. */
static cudaDataType_t half_type(int dt)
{
    return dt == DT_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

/* Whether GEMMs on weights of dtype dt take the activations rounded to it in
 * one pass (bfloat16 precision), rather than split in two or in float32. */
static int half_pass(const cu_backend *b, int dt)
{
    return dt != DT_F32 && (b->gemm_one_pass || b->base.matmul_bf16);
}

/* The matmuls from op i on (at least one, an OP_MATMUL) that share x and n
 * and have the same dtype and width: their weights, biases and outputs, and
 * whether the OP_SILU after them makes gate and up a GLU pair (silu(gate) *
 * up into gate's buffer, one launch). Returns how many matmuls. */
static int matmul_set(const tape *t, int i, const be_weight **w, const be_weight **bias,
                      float **y, bool *glu)
{
    const tape_op *o = &t->ops[i];
    int k = 0;
    for (; k < GEMV_SET && i + k < t->n; k++) {
        const tape_op *c = &t->ops[i + k];
        if (c->kind != OP_MATMUL || c->p[0] != o->p[0] || c->i[0] != o->i[0])
            break;
        const be_weight *cw = (const be_weight *)c->p[1];
        if (k > 0 && (cw->dtype != w[0]->dtype || cw->cols != w[0]->cols))
            break;
        w[k] = cw;
        bias[k] = (const be_weight *)c->p[2];
        y[k] = (float *)c->p[3];
    }
    const tape_op *sl = i + k < t->n ? &t->ops[i + k] : NULL;
    *glu = k == 2 && sl && sl->kind == OP_SILU && sl->p[0] == y[0] && sl->p[1] == y[1] &&
           sl->p[2] == y[0] && w[1]->rows == w[0]->rows && sl->i[0] == o->i[0] * w[0]->rows;
    return k;
}

/* Matmuls from op i on that share x and n, as one launch (with the OP_SILU
 * after gate and up); returns how many ops that ran. */
static int run_fused(cu_backend *b, const tape *t, int i)
{
    const tape_op *o = &t->ops[i];
    const be_weight *w[GEMV_SET], *bias[GEMV_SET];
    float *y[GEMV_SET];
    bool glu;
    const int k = matmul_set(t, i, w, bias, y, &glu);
    if (k < 2)
        return 0;
    const float *x = (const float *)o->p[0];
    const int n = (int)o->i[0];
    if (n > GEMV_MAX_N && !b->force_gemv)
        return gemm_multi(b, x, w, bias, y, k, n);
    gemv_multi(b, x, w, bias, y, k, n, glu, NULL);
    return glu ? k + 1 : k;
}

/* Whether an op from index `from` on reads buffer p before one overwrites it
 * (the step's end counts as a read: the caller may want the buffer). */
static int read_later(const tape *t, int from, const void *p)
{
    for (int j = from; j < t->n; j++) {
        const tape_op *o = &t->ops[j];
        const int out = o->kind == OP_EMBED || o->kind == OP_RMSNORM || o->kind == OP_SILU ||
                                o->kind == OP_GATHER
                            ? 2
                        : o->kind == OP_MATMUL || o->kind == OP_ATT ? 3
                                                                     : -1;
        for (int k = 0; k < 8; k++)
            if (o->p[k] == p && k != out)
                return 1;
        if (out >= 0 && o->p[out] == p)
            return 0;
    }
    return 1;
}

/* One input row (unless INFERD_CUDA_GEMV_NORM=0): the OP_RMSNORM at i and the
 * matmuls that take its output (run_fused's set) as one gemv1_kernel launch
 * that normalises its input first, with the same bits. Returns how many ops
 * that ran (0: none, gemv1_kernel does not apply). */
static int run_norm_gemv(cu_backend *b, const tape *t, int i)
{
    const tape_op *r = &t->ops[i];
    if (r->i[0] != 1 || r->p[2] == r->p[0] || i + 1 >= t->n ||
        t->ops[i + 1].kind != OP_MATMUL || t->ops[i + 1].p[0] != r->p[2] ||
        t->ops[i + 1].i[0] != 1)
        return 0;
    const be_weight *w[GEMV_SET], *bias[GEMV_SET];
    float *y[GEMV_SET];
    bool glu;
    const int k = matmul_set(t, i + 1, w, bias, y, &glu);
    if (w[0]->cols != r->i[1])
        return 0;
    for (int m = 0; m < k; m++) /* other blocks may still read x while one writes y */
        if (y[m] == r->p[0] || y[m] == r->p[2])
            return 0;
    const int after = i + 1 + k + (glu ? 1 : 0);
    gemv_fold f = {(const be_weight *)r->p[1], r->f,
                   read_later(t, after, r->p[2]) ? (float *)r->p[2] : NULL, NULL};
    prof_begin(b);
    const int ran = gemv_multi(b, (const float *)r->p[0], w, bias, y, k, 1, glu, &f);
    prof_end(b, P_GEMV);
    b->gemv_folds += ran;
    return ran ? after - i : 0;
}

/* One input row (unless INFERD_CUDA_GEMV_NORM=0): the OP_MATMUL at i and the OP_ADD
 * of its output into the residual as one gemv1_kernel launch that adds into
 * the residual instead of writing its output, when nothing reads that output
 * later. Returns how many ops that ran (0 or 2). */
static int run_gemv_add(cu_backend *b, const tape *t, int i)
{
    const tape_op *o = &t->ops[i], *a = i + 1 < t->n ? &t->ops[i + 1] : NULL;
    const be_weight *w = (const be_weight *)o->p[1], *bias = (const be_weight *)o->p[2];
    float *y = (float *)o->p[3];
    if (o->i[0] != 1 || !a || a->kind != OP_ADD || a->p[1] != y || a->i[0] != w->rows ||
        a->p[0] == o->p[0] || a->p[0] == y || read_later(t, i + 2, y))
        return 0;
    gemv_fold f = {NULL, 0.0f, NULL, (float *)a->p[0]};
    prof_begin(b);
    const int ran = gemv_multi(b, (const float *)o->p[0], &w, &bias, &y, 1, 1, false, &f);
    prof_end(b, P_GEMV);
    b->gemv_folds += ran;
    return ran ? 2 : 0;
}

/* OP_ADD at i followed by the OP_RMSNORM of the same rows: one launch. With
 * INFERD_CUDA_FUSE=half, when the matmuls after them take the normalised rows
 * as GEMM input in half precision (more than GEMV_MAX_N rows, one-pass
 * bf16/f16) and nothing reads the float32 rows later, the kernel writes them
 * in half precision straight into the GEMMs' input (the bits to_half_kernel
 * would give) and those matmuls run here too. Returns how many ops after i
 * it ran. */
static int run_add_rmsnorm(cu_backend *b, const tape *t, int i)
{
    const tape_op *a = &t->ops[i], *r = i + 1 < t->n ? &t->ops[i + 1] : NULL;
    if (!r || r->kind != OP_RMSNORM || r->p[0] != a->p[0] || r->i[0] * r->i[1] != a->i[0] ||
        r->i[0] <= 0)
        return 0;
    const be_weight *w = (const be_weight *)r->p[1];
    const int rows = (int)r->i[0], cols = (int)r->i[1];
    const int threads = rmsnorm_threads(cols);
    const be_weight *mw[GEMV_SET], *mb[GEMV_SET];
    float *my[GEMV_SET];
    int k = 0;
    if (b->fuse_half && rows > GEMV_MAX_N && !b->force_gemv) {
        for (; k < GEMV_SET && i + 2 + k < t->n; k++) {
            const tape_op *m = &t->ops[i + 2 + k];
            const be_weight *wk = (const be_weight *)m->p[1];
            if (m->kind != OP_MATMUL || m->p[0] != r->p[2] || m->i[0] != rows ||
                !half_pass(b, wk->dtype) || wk->cols != cols ||
                (k > 0 && wk->dtype != mw[0]->dtype))
                break;
            mw[k] = wk;
            mb[k] = (const be_weight *)m->p[2];
            my[k] = (float *)m->p[3];
        }
        if (k > 0 && read_later(t, i + 2 + k, r->p[2]))
            k = 0;
    }
    void *xb = k > 0 ? scratch(b, (size_t)rows * (size_t)cols * 2) : NULL;
    if (k > 0 && !xb)
        return 1 + k; /* the failure is kept */
    prof_begin(b);
    float *x = (float *)a->p[0];
    const float *y = (const float *)a->p[1];
    if (k == 0)
        launch(b, add_rmsnorm_kernel<float>, rows, threads, 0, x, y, w->data, w->dtype, r->f,
               cols, (float *)r->p[2]);
    else if (mw[0]->dtype == DT_BF16)
        launch(b, add_rmsnorm_kernel<__nv_bfloat16>, rows, threads, 0, x, y, w->data, w->dtype,
               r->f, cols, (__nv_bfloat16 *)xb);
    else
        launch(b, add_rmsnorm_kernel<__half>, rows, threads, 0, x, y, w->data, w->dtype, r->f,
               cols, (__half *)xb);
    LAUNCHED(b, "add_rmsnorm_kernel");
    prof_end(b, P_RMSNORM);
    if (k > 0 && !b->failed) {
        prof_begin(b);
        gemm_set(b, xb, half_type(mw[0]->dtype), mw, mb, my, k, rows);
        prof_end(b, P_GEMM);
    }
    return 1 + k;
}

/* Whether ops i, i + 1, i + 2 are the OP_ROPE of q, the OP_ROPE of k and
 * the OP_KV of that k, with the rope frequencies the device copy cu_rope
 * keeps (made by the first uncaptured run of the op, so not before it). */
static bool rope_store_ops(const cu_backend *b, const tape *t, int i)
{
    if (i + 2 >= t->n)
        return false;
    const tape_op *q = &t->ops[i], *k = &t->ops[i + 1], *kv = &t->ops[i + 2];
    const be_rope *r = (const be_rope *)q->p[1];
    return k->kind == OP_ROPE && kv->kind == OP_KV && k->p[1] == q->p[1] &&
           k->p[2] == q->p[2] && k->i[0] == q->i[0] && k->i[2] == q->i[2] &&
           kv->p[0] == k->p[0] && kv->i[0] == q->i[0] && kv->i[1] == k->i[1] * k->i[2] &&
           b->d_inv_freq && r->inv_freq == b->rope_host && (int)q->i[3] / 2 == b->rope_half &&
           q->i[0] > 0;
}

/* The layout an OP_ATT recorded (cu_attention's arguments). */
static be_attn_layout att_layout(const tape_op *o)
{
    be_attn_layout l;
    memset(&l, 0, sizeof l);
    l.q_start = (const int32_t *)o->p[4];
    l.block_table = (const int32_t *)o->p[5];
    l.pos = (const int32_t *)o->p[6];
    l.n_tokens = (int)o->i[3];
    l.n_seqs = (int)o->i[4];
    l.max_blocks = (int)o->i[5];
    l.block_size = (int)o->i[6];
    return l;
}

/* OP_ROPE of q, OP_ROPE of k, then OP_KV of that k (rope_store_ops): one
 * launch. */
static int run_rope_store(cu_backend *b, const tape *t, int i)
{
    if (!rope_store_ops(b, t, i))
        return 0;
    const tape_op *q = &t->ops[i], *k = &t->ops[i + 1], *kv = &t->ops[i + 2];
    const int half = (int)q->i[3] / 2;
    const int n = (int)q->i[0], heads = (int)q->i[1], kvh = (int)k->i[1], hd = (int)q->i[2];
    const int threads = half >= 128 ? 128 : half >= 64 ? 64 : 32; /* as cu_rope */
    dim3 grid((unsigned)n, (unsigned)(heads + kvh));
    prof_begin(b);
    if (b->base.kv_dtype == DT_BF16)
        launch(b, rope_store_kernel<__nv_bfloat16>, grid, threads, 0, (float *)q->p[0],
               (float *)k->p[0], (const float *)kv->p[1], heads, kvh, hd, half, b->d_inv_freq, q->f,
               (const int32_t *)q->p[2], (const int32_t *)kv->p[2], (__nv_bfloat16 *)kv->p[3],
               (__nv_bfloat16 *)kv->p[4]);
    else
        launch(b, rope_store_kernel<float>, grid, threads, 0, (float *)q->p[0], (float *)k->p[0],
               (const float *)kv->p[1], heads, kvh, hd, half, b->d_inv_freq, q->f,
               (const int32_t *)q->p[2], (const int32_t *)kv->p[2], (float *)kv->p[3],
               (float *)kv->p[4]);
    LAUNCHED(b, "rope_store_kernel");
    prof_end(b, P_ROPE);
    return 1;
}

static int decode_tile_ok(const cu_backend *b, int heads, int kv_heads, int hd);
static void decode_tile(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                        int kv_heads, int hd, float scale, const be_attn_layout *l,
                        const int32_t *rows, int n_rows, float *out, const dec_rope *rope);

/* A step of decode rows only (unless INFERD_CUDA_ATT_ROPE=0): run_rope_store's three
 * ops and the OP_ATT after them as one attn_decode_tile_kernel launch that
 * rotates q and k and stores k and v itself, with the same bits, when
 * nothing reads the q and k buffers later (they stay unrotated). Returns
 * how many ops that ran (0 or 4). */
static int run_rope_attn(cu_backend *b, const tape *t, int i)
{
    if (i + 3 >= t->n || b->n_tiles != 0 || b->base.kv_dtype != DT_BF16 ||
        t->ops[i + 3].kind != OP_ATT || !rope_store_ops(b, t, i))
        return 0;
    const tape_op *q = &t->ops[i], *k = &t->ops[i + 1], *kv = &t->ops[i + 2],
                  *a = &t->ops[i + 3];
    const int half = (int)q->i[3] / 2;
    if (half < 1)
        return 0;
    const int heads = (int)a->i[0], kvh = (int)a->i[1], hd = (int)a->i[2];
    /* every split reads k and v first: out must not be either */
    if (kvh <= 0 || heads % kvh || a->p[3] == k->p[0] || a->p[3] == kv->p[1] ||
        a->p[0] != q->p[0] || a->p[1] != kv->p[3] || a->p[2] != kv->p[4] ||
        a->p[6] != q->p[2] || a->i[3] != q->i[0] || q->i[1] != heads || k->i[1] != kvh ||
        q->i[2] != hd || !decode_tile_ok(b, heads, kvh, hd) ||
        read_later(t, i + 4, q->p[0]) || read_later(t, i + 4, k->p[0]))
        return 0;
    const be_attn_layout l = att_layout(a);
    dec_rope R = {(const float *)k->p[0], (const float *)kv->p[1], b->d_inv_freq,
                  (const int32_t *)kv->p[2], (__nv_bfloat16 *)kv->p[3],
                  (__nv_bfloat16 *)kv->p[4], q->f, half};
    decode_tile(b, (const float *)q->p[0], a->p[1], a->p[2], heads, kvh, hd, a->f, &l, NULL,
                l.n_tokens, (float *)a->p[3], &R);
    b->att_folds += !b->failed;
    return 4;
}

/* OP_SILU at i and the GEMM that takes its product (more than GEMV_MAX_N
 * rows, activations rounded to bf16/f16 in one pass): the product goes
 * straight to the GEMM's half-precision input (silu_mul_kernel<bf16>) instead of
 * float32 memory and a conversion, when nothing reads the float32 product
 * later. Same GEMM inputs bit for bit. Returns 1 when it ran both ops. */
static int run_silu_gemm(cu_backend *b, const tape *t, int i)
{
    const tape_op *sl = &t->ops[i], *m = i + 1 < t->n ? &t->ops[i + 1] : NULL;
    if (!m || m->kind != OP_MATMUL || m->p[0] != sl->p[2])
        return 0;
    const be_weight *w = (const be_weight *)m->p[1], *bias = (const be_weight *)m->p[2];
    const int n = (int)m->i[0];
    const size_t nx = (size_t)sl->i[0];
    if (n <= GEMV_MAX_N || b->force_gemv || !half_pass(b, w->dtype) ||
        nx != (size_t)n * (size_t)w->cols || read_later(t, i + 2, sl->p[2]))
        return 0;
    void *xb = scratch(b, nx * 2);
    if (!xb)
        return 1; /* the failure is kept */
    float *y = (float *)m->p[3];
    const float *gate = (const float *)sl->p[0], *up = (const float *)sl->p[1];
    prof_begin(b);
    if (w->dtype == DT_BF16)
        launch(b, silu_mul_kernel<__nv_bfloat16>, grid_for(nx, 256), 256, 0, gate, up, nx,
               (__nv_bfloat16 *)xb);
    else
        launch(b, silu_mul_kernel<__half>, grid_for(nx, 256), 256, 0, gate, up, nx,
               (__half *)xb);
    if (!LAUNCHED(b, "silu_mul_kernel"))
        gemm_set(b, xb, half_type(w->dtype), &w, &bias, &y, 1, n);
    prof_end(b, P_GEMM);
    return 1;
}

static void run_tape(cu_backend *b, const tape *t)
{
    be_backend *bk = &b->base;
    for (int i = 0; i < t->n && !b->failed; i++) {
        const tape_op *o = &t->ops[i];
        switch (o->kind) {
        case OP_KEY:
            break;
        case OP_EMBED:
            cu_embed(bk, (const be_weight *)o->p[0], (const int32_t *)o->p[1], (int)o->i[0],
                     (float *)o->p[2]);
            break;
        case OP_RMSNORM: {
            const int k = b->gemv_norm ? run_norm_gemv(b, t, i) : 0;
            if (k > 0) {
                i += k - 1;
                break;
            }
            cu_rmsnorm(bk, (const float *)o->p[0], (const be_weight *)o->p[1], o->f,
                       (int)o->i[0], (int)o->i[1], (float *)o->p[2]);
            break;
        }
        case OP_MATMUL: {
            int k = b->use_fuse ? run_fused(b, t, i) : 0;
            if (k <= 1 && b->gemv_norm)
                k = run_gemv_add(b, t, i);
            if (k > 1) {
                i += k - 1;
                break;
            }
            cu_matmul(bk, (const float *)o->p[0], (const be_weight *)o->p[1],
                      (const be_weight *)o->p[2], (int)o->i[0], (float *)o->p[3]);
            break;
        }
        case OP_ROPE:
            if (b->att_rope && run_rope_attn(b, t, i)) {
                i += 3;
                break;
            }
            if (b->use_fuse && run_rope_store(b, t, i)) {
                i += 2;
                break;
            }
            cu_rope(bk, (float *)o->p[0], (int)o->i[0], (int)o->i[1], (int)o->i[2],
                    (const be_rope *)o->p[1], (const int32_t *)o->p[2]);
            break;
        case OP_KV:
            cu_kv_store(bk, (const float *)o->p[0], (const float *)o->p[1], (int)o->i[0],
                        (int)o->i[1], (const int32_t *)o->p[2], (float *)o->p[3],
                        (float *)o->p[4]);
            break;
        case OP_ATT: {
            const be_attn_layout l = att_layout(o);
            cu_attention(bk, (const float *)o->p[0], (const float *)o->p[1],
                         (const float *)o->p[2], (int)o->i[0], (int)o->i[1], (int)o->i[2], o->f,
                         &l, (float *)o->p[3]);
            break;
        }
        case OP_SILU:
            if (b->use_fuse && b->fuse_half && run_silu_gemm(b, t, i)) {
                i += 1;
                break;
            }
            cu_silu_mul(bk, (const float *)o->p[0], (const float *)o->p[1], (size_t)o->i[0],
                        (float *)o->p[2]);
            break;
        case OP_ADD:
            if (b->use_fuse) {
                const int k = run_add_rmsnorm(b, t, i);
                if (k > 0) {
                    i += k;
                    break;
                }
            }
            cu_add(bk, (float *)o->p[0], (const float *)o->p[1], (size_t)o->i[0]);
            break;
        case OP_GATHER:
            cu_gather_rows(bk, (const float *)o->p[0], (int)o->i[0], (const int32_t *)o->p[1],
                           (int)o->i[1], (float *)o->p[2]);
            break;
        }
    }
}

/* Runs the recorded step: by its graph, by capturing one, or op by op. */
static void flush(cu_backend *b)
{
    b->recording = 0;
    tape *t = &b->cur;
    if (b->failed)
        goto done;
    if (b->step_rows > GEMV_MAX_N || !b->step_decode || !b->use_graph) {
        run_tape(b, t); /* cuBLAS GEMMs, prompt rows: not captured */
    } else if (b->gexec && tape_eq(t, &b->gtape)) {
        if (!CK(b, cudaGraphLaunch(b->gexec, b->stream)))
            b->graph_launches++;
    } else if (tape_eq(t, &b->last)) {
        cudaGraph_t g = NULL;
        if (CK(b, cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeRelaxed)))
            goto done;
        run_tape(b, t);
        cudaError_t rc = cudaStreamEndCapture(b->stream, &g);
        if (cuda_fail(b, "cudaStreamEndCapture", rc) || b->failed) {
            if (g)
                cudaGraphDestroy(g);
            goto done;
        }
        if (b->gexec)
            CK(b, cudaGraphExecDestroy(b->gexec));
        b->gexec = NULL;
        b->gtape.n = 0;
        rc = cudaGraphInstantiate(&b->gexec, g, 0);
        cudaGraphDestroy(g);
        if (cuda_fail(b, "cudaGraphInstantiate", rc)) {
            b->gexec = NULL;
            goto done;
        }
        if (tape_copy(b, &b->gtape, t))
            goto done;
        if (!CK(b, cudaGraphLaunch(b->gexec, b->stream))) {
            b->graph_captures++;
            b->graph_launches++;
        }
    } else {
        run_tape(b, t);
    }
done:;
    tape tmp = b->last; /* this step becomes the one before */
    b->last = b->cur;
    b->cur = tmp;
    b->cur.n = 0;
}

static void lt_free(cu_backend *b);

static void cu_free(be_backend *bk)
{
    cu_backend *b = (cu_backend *)bk;
    /* Teardown: nothing is left to report an error to, so results go unread. */
    cudaStreamSynchronize(b->stream);
    upload_done(b);
    if (b->profile)
        prof_print(b);
    const char *gs = getenv("INFERD_CUDA_GRAPH_STATS");
    if (gs && strcmp(gs, "1") == 0)
        fprintf(stderr, "cuda graphs: %ld captured, %ld launches; %ld gemv folds run, "
                        "%ld rope attention folds run\n",
                b->graph_captures, b->graph_launches, b->gemv_folds, b->att_folds);
    if (b->gexec)
        cudaGraphExecDestroy(b->gexec);
    free(b->cur.ops);
    free(b->last.ops);
    free(b->gtape.ops);
    if (b->prof_start)
        cudaEventDestroy(b->prof_start);
    if (b->prof_stop)
        cudaEventDestroy(b->prof_stop);
    for (size_t i = 0; i < b->n_weights; i++)
        cudaFree(b->weights[i]);
    free(b->weights);
    cudaFree(b->d_stage);
    cudaFreeHost(b->h_stage);
    cudaFree(b->d_inv_freq);
    cudaFree(b->scratch);
    cudaFree(b->smp_buf);
    cudaFree(b->att_part);
    cudaFree(b->att_done);
    if (b->stage_done)
        cudaEventDestroy(b->stage_done);
    lt_free(b);
    if (b->blas)
        cublasDestroy(b->blas);
    if (b->stream)
        cudaStreamDestroy(b->stream);
    free(b);
}

static void *cu_alloc(be_backend *bk, size_t bytes)
{
    cu_backend *b = (cu_backend *)bk;
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        cudaGetLastError(); /* an out-of-memory answer is not sticky */
        return NULL;
    }
    if (CK(b, cudaMemsetAsync(p, 0, bytes, b->stream)) ||
        CK(b, cudaStreamSynchronize(b->stream))) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cu_dealloc(be_backend *bk, void *p)
{
    cu_backend *b = (cu_backend *)bk;
    if (!p)
        return;
    CK(b, cudaStreamSynchronize(b->stream));
    CK(b, cudaFree(p));
}

static int cu_weight(be_backend *bk, const void *host, inferd_dtype dt, int64_t rows,
                     int64_t cols, be_weight *out, inferd_error *e)
{
    cu_backend *b = (cu_backend *)bk;
    if (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16) {
        err_set(e, "cuda backend: weights of type %s are not supported", dtype_name(dt));
        return -1;
    }
    size_t bytes = (size_t)rows * (size_t)cols * dtype_size(dt);
    if (b->n_weights == b->cap_weights) {
        size_t cap = b->cap_weights ? 2 * b->cap_weights : 64;
        void **nw = (void **)realloc(b->weights, cap * sizeof *nw);
        if (!nw) {
            err_set(e, "out of memory");
            return -1;
        }
        b->weights = nw;
        b->cap_weights = cap;
    }
    void *p = NULL;
    cudaError_t rc = cudaMalloc(&p, bytes ? bytes : 256);
    if (rc != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, total = 0;
        cudaMemGetInfo(&fr, &total); /* for the message only */
        err_set(e, "cuda backend: cudaMalloc of %.1f MiB for a weight failed: %s "
                   "(%.2f GiB free of %.2f GiB; the model does not fit on this GPU)",
                bytes / 1048576.0, cudaGetErrorString(rc), fr / 1073741824.0,
                total / 1073741824.0);
        return -1;
    }
    b->weights[b->n_weights++] = p;
    if (upload(b, p, host, bytes))
        return report(b, e);
    memset(out, 0, sizeof *out);
    out->data = p;
    out->dtype = dt;
    out->rows = rows;
    out->cols = cols;
    return 0;
}

static void cu_embed(be_backend *bk, const be_weight *table, const int32_t *ids, int n,
                     float *out)
{
    cu_backend *b = (cu_backend *)bk;
    if (b->recording) {
        tape_op *o = record(b, OP_EMBED);
        if (o) {
            o->p[0] = table; o->p[1] = dev_idx(b, ids); o->p[2] = out; o->i[0] = n;
        }
        return;
    }
    const int32_t *d_ids = dev_idx(b, ids);
    if (b->failed || n <= 0)
        return;
    prof_begin(b);
    launch(b, embed_kernel, n, 256, 0, table->data, table->dtype, d_ids, (int)table->cols, out);
    LAUNCHED(b, "embed_kernel");
    prof_end(b, P_EMBED);
}

static void cu_rmsnorm(be_backend *bk, const float *x, const be_weight *w, float eps, int rows,
                       int cols, float *out)
{
    cu_backend *b = (cu_backend *)bk;
    if (b->recording) {
        tape_op *o = record(b, OP_RMSNORM);
        if (o) {
            o->p[0] = x; o->p[1] = w; o->p[2] = out; o->f = eps; o->i[0] = rows;
            o->i[1] = cols;
        }
        return;
    }
    if (b->failed || rows <= 0)
        return;
    prof_begin(b);
    launch(b, rmsnorm_kernel, rows, rmsnorm_threads(cols), 0, x, w->data, w->dtype, eps, cols,
           out);
    LAUNCHED(b, "rmsnorm_kernel");
    prof_end(b, P_RMSNORM);
}

/* A device buffer that kernels see, reallocated to `alloc` bytes (zeroed
 * when asked) if it holds fewer than `need`: once the queued work is done
 * with the old one, and with gen bumped so that no recorded step keeps the
 * old address. NULL on failure. */
static void *grow(cu_backend *b, void **buf, size_t *cap, size_t need, size_t alloc, int zero)
{
    if (need <= *cap)
        return *buf;
    if (CK(b, cudaStreamSynchronize(b->stream)) || CK(b, cudaFree(*buf)))
        return NULL;
    *buf = NULL;
    *cap = 0;
    b->gen++;
    if (CK(b, cudaMalloc(buf, alloc)) ||
        (zero && CK(b, cudaMemsetAsync(*buf, 0, alloc, b->stream))))
        return NULL;
    *cap = alloc;
    return *buf;
}

static void *scratch(cu_backend *b, size_t bytes)
{
    return grow(b, &b->scratch, &b->scratch_bytes, bytes, bytes, 0);
}

/* One launch for n_mat matrices of the same dtype and width sharing x; with
 * glu, n_mat is 2 (gate, up of the same shape) and y[0] gets silu(gate) * up.
 * With fold, only through gemv1_kernel: returns 0, having launched nothing,
 * where that does not apply (1 otherwise). */
template <typename TW>
static int gemv_multi_t(cu_backend *b, const float *x, const be_weight *const *w,
                        const be_weight *const *bias, float *const *y, int n_mat, int n,
                        bool glu, const gemv_fold *fold)
{
    gemv_set S;
    memset(&S, 0, sizeof S);
    S.n_mat = glu ? 1 : n_mat;
    unsigned blocks = 0;
    for (int m = 0; m < n_mat; m++) {
        /* Split K until the matrix gives ~32 warps to every SM (one wave of
         * 8 blocks per SM), but keep >= 2 chunks of 1024 per warp. */
        int wpr = 1;
        while (wpr < GEMV2_WARPS && w[m]->rows * wpr < 32LL * b->n_sm &&
               w[m]->cols >= 2048LL * 2 * wpr)
            wpr *= 2;
        const int rpb = GEMV2_WARPS / wpr;
        S.w[m] = w[m]->data;
        S.bias[m] = bias[m] ? bias[m]->data : NULL;
        S.bdt[m] = bias[m] ? (int)bias[m]->dtype : 0;
        S.y[m] = y[m];
        S.rows[m] = w[m]->rows;
        S.wpr[m] = wpr;
        S.first[m] = blocks;
        if (!glu || m == 0)
            blocks += (unsigned)((w[m]->rows + rpb - 1) / rpb);
    }
    S.first[S.n_mat] = blocks;
    const int64_t cols = w[0]->cols;
    const int vec = cols % 8 == 0;
    if constexpr (sizeof(TW) == 2) {
        if (n == 1 && vec && b->gemv_v3) {
            int64_t total = 0;
            for (int m = 0; m < S.n_mat; m++) {
                S.first_row[m] = (unsigned)total;
                total += w[m]->rows;
            }
            S.first_row[S.n_mat] = (unsigned)total;
            const int nm = glu ? 2 : 1, n_ch = (int)((cols + 2048 / nm - 1) / (2048 / nm));
            /* the normalised row and the warp sums after the item sums */
            const size_t extra = fold && fold->norm_w ? (size_t)(cols + 3 + GEMV1_WARPS) : 0;
            int64_t rpb = (total + b->n_sm - 1) / b->n_sm;
            while (rpb > 1 && ((size_t)rpb * n_ch * nm + extra) * sizeof(float) > GEMV1_SMEM)
                rpb = (rpb + 1) / 2;
            const size_t smem = ((size_t)rpb * n_ch * nm + extra) * sizeof(float);
            if (smem <= GEMV1_SMEM && (!fold || !fold->res || (S.n_mat == 1 && !glu))) {
                const unsigned grid = (unsigned)((total + rpb - 1) / rpb);
                if (fold && fold->norm_w) {
                    S.norm_w = fold->norm_w->data;
                    S.norm_dt = (int)fold->norm_w->dtype;
                    S.norm_eps = fold->norm_eps;
                    S.norm_out = fold->norm_out;
                    S.norm_threads = rmsnorm_threads(cols);
                }
                if (fold)
                    S.res = fold->res;
                S.pf_items = b->gemv_pf;
                void (*kernel)(const float *, const gemv_set, int64_t, int64_t, int) =
                    S.norm_w ? (glu ? gemv1_kernel<TW, true, true> : gemv1_kernel<TW, false, true>)
                             : (glu ? gemv1_kernel<TW, true, false> : gemv1_kernel<TW, false, false>);
                launch_ex(b, b->use_pdl != 0, kernel, grid, GEMV1_WARPS * 32, smem, x, S, cols,
                          total, (int)rpb);
                LAUNCHED(b, "gemv1_kernel");
                return 1;
            }
        }
    }
    if (fold)
        return 0;
#define GEMV2_LAUNCH(NR)                                                                           \
    do {                                                                                           \
        if (glu)                                                                                   \
            launch(b, gemv2_kernel<TW, NR, true>, blocks, GEMV2_WARPS * 32, 0, x, S, n, cols,      \
                   vec);                                                                           \
        else                                                                                       \
            launch(b, gemv2_kernel<TW, NR, false>, blocks, GEMV2_WARPS * 32, 0, x, S, n, cols,     \
                   vec);                                                                           \
    } while (0)
    if (n == 1)
        GEMV2_LAUNCH(1);
    else if (n <= 4)
        GEMV2_LAUNCH(4);
    else
        GEMV2_LAUNCH(8);
#undef GEMV2_LAUNCH
    LAUNCHED(b, "gemv2_kernel");
    return 1;
}

static int gemv_multi(cu_backend *b, const float *x, const be_weight *const *w,
                      const be_weight *const *bias, float *const *y, int n_mat, int n, bool glu,
                      const gemv_fold *fold)
{
    if (w[0]->dtype == DT_BF16)
        return gemv_multi_t<__nv_bfloat16>(b, x, w, bias, y, n_mat, n, glu, fold);
    if (w[0]->dtype == DT_F16)
        return gemv_multi_t<__half>(b, x, w, bias, y, n_mat, n, glu, fold);
    return gemv_multi_t<float>(b, x, w, bias, y, n_mat, n, glu, fold);
}

/* ---- cuBLASLt with an algorithm timed per shape (INFERD_CUDA_LT=1) ----
 *
 * cuBLAS's default algorithm for some serving shapes is well off the best of
 * cuBLASLt's candidates (k and v at 62 rows: 17 against 10 us on an H200,
 * bench/NOTES.md). The first product of each (weight shape, type, input rows
 * rounded up to a power of two, operand alignment) times GemmEx and
 * cuBLASLt's first LT_CANDIDATES algorithms on that call's operands (its
 * output, which the real product then overwrites; a beta = 1 pass waits for
 * the beta = 0 one before it) and keeps the fastest; later products of the
 * bucket use it, or GemmEx where an algorithm turns the row count down. Timing synchronises the
 * stream once per bucket; products are never timed inside a graph capture
 * (GEMMs are not captured: more than GEMV_MAX_N rows). Not yet measured on a
 * GPU, so off by default. */
#define LT_CANDIDATES 8
#define LT_WS_BYTES ((size_t)32 << 20)

typedef struct lt_choice {
    int64_t rows, cols;
    int ty, bucket, align; /* align: of the activations and the output, bytes (<= 256) */
    int use;               /* 0: GemmEx was as fast, or cuBLASLt failed */
    cublasLtMatmulAlgo_t algo;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
} lt_choice;

static void lt_free(cu_backend *b)
{
    for (int i = 0; i < b->n_lt; i++) {
        lt_choice *c = &b->lt[i];
        if (c->desc)
            cublasLtMatmulDescDestroy(c->desc);
        if (c->la)
            cublasLtMatrixLayoutDestroy(c->la);
        if (c->lb)
            cublasLtMatrixLayoutDestroy(c->lb);
        if (c->lc)
            cublasLtMatrixLayoutDestroy(c->lc);
    }
    free(b->lt);
    cudaFree(b->lt_ws);
    for (int i = 0; i < 2; i++)
        if (b->lt_ev[i])
            cudaEventDestroy(b->lt_ev[i]);
    if (b->lt_handle)
        cublasLtDestroy(b->lt_handle);
}

/* y[n][rows] = xb[n][cols] * w^T + beta * y, xb of type ty (w's, or float):
 * row-major is, column-major, y^T = w^T(as stored) * xb^T, so op(A) = T on
 * the weights and op(B) = N. cuBLAS's default algorithm. */
static cublasStatus_t gemm_ex(cu_backend *b, const be_weight *w, const void *xb, cudaDataType_t ty,
                              int n, float beta, float *y)
{
    const float one = 1.0f;
    return cublasGemmEx(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->rows, n, (int)w->cols, &one,
                        w->data, ty, (int)w->cols, xb, ty, (int)w->cols, &beta, y, CUDA_R_32F,
                        (int)w->rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

/* gemm_ex's product by c's algorithm (algo NULL: gemm_ex itself). */
static int lt_run(cu_backend *b, const lt_choice *c, const be_weight *w, const void *xb, int n,
                  float beta, float *y, const cublasLtMatmulAlgo_t *algo)
{
    const float one = 1.0f;
    if (!algo)
        return gemm_ex(b, w, xb, (cudaDataType_t)c->ty, n, beta, y) == CUBLAS_STATUS_SUCCESS
                   ? 0
                   : -1;
    const uint64_t cols = (uint64_t)n;
    if (cublasLtMatrixLayoutSetAttribute(c->lb, CUBLASLT_MATRIX_LAYOUT_COLS, &cols,
                                         sizeof cols) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutSetAttribute(c->lc, CUBLASLT_MATRIX_LAYOUT_COLS, &cols,
                                         sizeof cols) != CUBLAS_STATUS_SUCCESS)
        return -1;
    return cublasLtMatmul(b->lt_handle, c->desc, &one, w->data, c->la, xb, c->lb, &beta, y,
                          c->lc, y, c->lc, algo, b->lt_ws, LT_WS_BYTES,
                          b->stream) == CUBLAS_STATUS_SUCCESS ? 0 : -1;
}

/* Microseconds of one product (a warm-up, then the mean of 10), or -1. An
 * earlier kernel's fault, seen by the synchronisation, is reported as such. */
static float lt_time(cu_backend *b, const lt_choice *c, const be_weight *w, const void *xb, int n,
                     float *y, const cublasLtMatmulAlgo_t *algo)
{
    float ms = 0.0f;
    if (lt_run(b, c, w, xb, n, 0.0f, y, algo) ||
        cudaEventRecord(b->lt_ev[0], b->stream) != cudaSuccess)
        return -1.0f;
    for (int i = 0; i < 10; i++)
        if (lt_run(b, c, w, xb, n, 0.0f, y, algo))
            return -1.0f;
    if (cudaEventRecord(b->lt_ev[1], b->stream) != cudaSuccess ||
        CK(b, cudaEventSynchronize(b->lt_ev[1])) ||
        cudaEventElapsedTime(&ms, b->lt_ev[0], b->lt_ev[1]) != cudaSuccess)
        return -1.0f;
    return ms * 1000.0f / 10.0f;
}

/* The largest power of two up to 256 that divides p's address. */
static int align_of(const void *p)
{
    const uintptr_t a = (uintptr_t)p | 256;
    return (int)(a & (~a + 1));
}

/* The bucket's choice, timed on these operands (into y) the first time;
 * NULL: use GemmEx. */
static lt_choice *lt_pick(cu_backend *b, const be_weight *w, cudaDataType_t ty, const void *xb,
                          int n, float beta, float *y)
{
    const int bucket = pow2_bucket(16, n);
    const int ax = align_of(xb), ay = align_of(y), align = ax < ay ? ax : ay;
    for (int i = 0; i < b->n_lt; i++) {
        lt_choice *c = &b->lt[i];
        if (c->rows == w->rows && c->cols == w->cols && c->ty == (int)ty &&
            c->bucket == bucket && c->align == align)
            return c;
    }
    cudaStreamCaptureStatus cs;
    if (beta != 0.0f || cudaStreamIsCapturing(b->stream, &cs) != cudaSuccess ||
        cs != cudaStreamCaptureStatusNone)
        return NULL;
    if (!b->lt_handle &&
        (cublasLtCreate(&b->lt_handle) != CUBLAS_STATUS_SUCCESS ||
         cudaMalloc(&b->lt_ws, LT_WS_BYTES) != cudaSuccess ||
         cudaEventCreate(&b->lt_ev[0]) != cudaSuccess ||
         cudaEventCreate(&b->lt_ev[1]) != cudaSuccess)) {
        (void)cudaGetLastError();
        b->use_lt = 0; /* GemmEx from now on */
        return NULL;
    }
    if (b->n_lt == b->cap_lt) {
        int cap = b->cap_lt ? 2 * b->cap_lt : 64;
        lt_choice *a = (lt_choice *)realloc(b->lt, (size_t)cap * sizeof *a);
        if (!a)
            return NULL;
        b->lt = a;
        b->cap_lt = cap;
    }
    lt_choice *c = &b->lt[b->n_lt++];
    memset(c, 0, sizeof *c);
    c->rows = w->rows;
    c->cols = w->cols;
    c->ty = (int)ty;
    c->bucket = bucket;
    c->align = align;
    const cublasOperation_t ta = CUBLAS_OP_T;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t hr[LT_CANDIDATES];
    int nr = 0;
    size_t ws = LT_WS_BYTES;
    /* an algorithm that assumes more alignment than these pointers have may fault */
    const uint32_t aw = (uint32_t)align_of(w->data), ao = (uint32_t)align;
    if (cublasLtMatmulDescCreate(&c->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) ||
        cublasLtMatmulDescSetAttribute(c->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) ||
        cublasLtMatrixLayoutCreate(&c->la, ty, (uint64_t)w->cols, (uint64_t)w->rows, w->cols) ||
        cublasLtMatrixLayoutCreate(&c->lb, ty, (uint64_t)w->cols, (uint64_t)n, w->cols) ||
        cublasLtMatrixLayoutCreate(&c->lc, CUDA_R_32F, (uint64_t)w->rows, (uint64_t)n, w->rows) ||
        cublasLtMatmulPreferenceCreate(&pref) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                             sizeof ws) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                             &aw, sizeof aw) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                             &ao, sizeof ao) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                             &ao, sizeof ao) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                             &ao, sizeof ao) ||
        cublasLtMatmulAlgoGetHeuristic(b->lt_handle, c->desc, c->la, c->lb, c->lc, c->lc, pref,
                                       LT_CANDIDATES, hr, &nr))
        nr = 0;
    float best = nr > 0 ? lt_time(b, c, w, xb, n, y, NULL) : -1.0f;
    for (int a = 0; a < nr && best > 0.0f; a++) {
        if (hr[a].state != CUBLAS_STATUS_SUCCESS)
            continue;
        const float t = lt_time(b, c, w, xb, n, y, &hr[a].algo);
        if (t > 0.0f && t < 0.97f * best) { /* 3 %: not a timing's noise */
            best = t;
            c->algo = hr[a].algo;
            c->use = 1;
        }
    }
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    (void)cudaGetLastError(); /* a failed try leaves GemmEx in use, not an error */
    return c;
}

/* gemm_ex, or cuBLASLt's timed choice with INFERD_CUDA_LT=1. */
static int gemm_rows(cu_backend *b, const be_weight *w, const void *xb, cudaDataType_t ty, int n,
                     float beta, float *y)
{
    if (b->use_lt && ty != CUDA_R_32F) {
        lt_choice *c = lt_pick(b, w, ty, xb, n, beta, y);
        if (c && c->use) {
            if (lt_run(b, c, w, xb, n, beta, y, &c->algo) == 0)
                return 0;
            /* refused (a row count of the bucket it was not timed on): GemmEx
             * does it, now and for the bucket's later calls; its own errors count */
            c->use = 0;
            (void)cudaGetLastError();
        }
    }
    return blas_fail(b, "cublasGemmEx", gemm_ex(b, w, xb, ty, n, beta, y));
}

/* y[n][rows] += bias, where there is one. */
static void add_bias(cu_backend *b, float *y, const be_weight *bias, int64_t rows, size_t ny)
{
    if (!bias)
        return;
    launch(b, bias_kernel, grid_for(ny, 256), 256, 0, y, bias->data, bias->dtype, rows, ny);
    LAUNCHED(b, "bias_kernel");
}

/* x[nx] rounded to dt (bf16 or f16) into dst; returns dst's cuBLAS type. */
static cudaDataType_t to_half(cu_backend *b, const float *x, size_t nx, int dt, void *dst)
{
    if (dt == DT_BF16)
        launch(b, to_half_kernel<__nv_bfloat16>, grid_for(nx, 256), 256, 0, x, nx,
               (__nv_bfloat16 *)dst);
    else
        launch(b, to_half_kernel<__half>, grid_for(nx, 256), 256, 0, x, nx, (__half *)dst);
    LAUNCHED(b, "to_half_kernel");
    return half_type(dt);
}

/* The n_mat products of n rows of xb, already in the weights' half type ty. */
static void gemm_set(cu_backend *b, const void *xb, cudaDataType_t ty, const be_weight *const *w,
                     const be_weight *const *bias, float *const *y, int n_mat, int n)
{
    for (int i = 0; i < n_mat && !b->failed; i++)
        if (gemm_rows(b, w[i], xb, ty, n, 0.0f, y[i]) == 0)
            add_bias(b, y[i], bias[i], w[i]->rows, (size_t)n * (size_t)w[i]->rows);
}

/* Matmuls of one recorded step that share x (q/k/v, gate/up) with more
 * than GEMV_MAX_N rows, where activations go in as one bf16/f16 pass: x is
 * converted once for all of them. (cuBLAS's strided-batched GEMM over the
 * separate k and v weights, strides being the distances between their
 * allocations, faulted in tools/gpu/gemm_probe: not used.) Returns how many
 * matmuls it ran; 0 leaves them to cu_matmul. */
static int gemm_multi(cu_backend *b, const float *x, const be_weight *const *w,
                      const be_weight *const *bias, float *const *y, int n_mat, int n)
{
    const int dt = w[0]->dtype;
    if (!half_pass(b, dt))
        return 0;
    const size_t nx = (size_t)n * (size_t)w[0]->cols;
    void *xb = scratch(b, nx * 2);
    if (!xb)
        return n_mat;
    prof_begin(b);
    gemm_set(b, xb, to_half(b, x, nx, dt, xb), w, bias, y, n_mat, n);
    prof_end(b, P_GEMM);
    return n_mat;
}

static void cu_matmul(be_backend *bk, const float *x, const be_weight *w, const be_weight *bias,
                      int n, float *y)
{
    cu_backend *b = (cu_backend *)bk;
    if (b->recording) {
        tape_op *o = record(b, OP_MATMUL);
        if (o) {
            o->p[0] = x; o->p[1] = w; o->p[2] = bias; o->p[3] = y; o->i[0] = n;
        }
        return;
    }
    if (b->failed || n <= 0)
        return;
    if (n <= GEMV_MAX_N || b->force_gemv) {
        prof_begin(b);
        gemv_multi(b, x, &w, &bias, &y, 1, n, false, NULL);
        prof_end(b, P_GEMV);
        return;
    }
    const size_t nx = (size_t)n * (size_t)w->cols, ny = (size_t)n * (size_t)w->rows;
    const void *xb = x;
    cudaDataType_t ty = CUDA_R_32F;
    int split = 0;
    float *y2 = NULL;
    prof_begin(b);
    if (w->dtype != DT_F32) {
        split = !half_pass(b, w->dtype);
        /* Up to SPLIT_ONE_GEMM_N rows the product is bound by reading the
         * weights: hi and lo (adjacent in scratch, so one [2n][cols]
         * operand) go through one GEMM that reads them once, and a small
         * kernel adds the halves. Above it the GEMM is bound by arithmetic
         * either way, and two passes accumulating into y need no [2n] buffer. */
        const int one_gemm = split && n <= SPLIT_ONE_GEMM_N;
        char *s = (char *)scratch(b, nx * 2 * (split ? 2 : 1) + (one_gemm ? ny * 2 * 4 : 0));
        if (!s)
            return;
        const unsigned g = grid_for(nx, 256);
        if (!split) {
            ty = to_half(b, x, nx, w->dtype, s);
        } else if (w->dtype == DT_BF16) {
            __nv_bfloat16 *hi = (__nv_bfloat16 *)s, *lo = hi + nx;
            launch(b, split_kernel<__nv_bfloat16>, g, 256, 0, x, nx, hi, lo);
            ty = half_type(w->dtype);
            LAUNCHED(b, "split_kernel");
        } else {
            __half *hi = (__half *)s, *lo = hi + nx;
            launch(b, split_kernel<__half>, g, 256, 0, x, nx, hi, lo);
            ty = half_type(w->dtype);
            LAUNCHED(b, "split_kernel");
        }
        if (b->failed)
            return;
        xb = s;
        if (one_gemm)
            y2 = (float *)(s + nx * 4);
    }
    if (y2) {
        if (gemm_rows(b, w, xb, ty, 2 * n, 0.0f, y2))
            return;
        launch(b, sum_halves_kernel, grid_for(ny, 256), 256, 0, y, y2, bias ? bias->data : NULL,
               bias ? bias->dtype : 0, w->rows, ny);
        LAUNCHED(b, "sum_halves_kernel");
        prof_end(b, P_GEMM);
        return;
    }
    if (gemm_rows(b, w, xb, ty, n, 0.0f, y) ||
        (split && gemm_rows(b, w, (const char *)xb + nx * 2, ty, n, 1.0f, y)))
        return;
    add_bias(b, y, bias, w->rows, ny);
    prof_end(b, P_GEMM);
}

static void cu_rope(be_backend *bk, float *x, int n, int heads, int head_dim, const be_rope *r,
                    const int32_t *pos)
{
    cu_backend *b = (cu_backend *)bk;
    if (b->recording) {
        tape_op *o = record(b, OP_ROPE);
        if (o) {
            o->p[0] = x; o->p[1] = r; o->p[2] = dev_idx(b, pos); o->p[3] = r->inv_freq; o->i[0] = n;
            o->i[1] = heads; o->i[2] = head_dim; o->i[3] = r->rot_dim;
            o->f = r->mscale;
        }
        return;
    }
    const int32_t *d_pos = dev_idx(b, pos);
    if (b->failed || n <= 0)
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
    const int threads = half >= 128 ? 128 : half >= 64 ? 64 : 32;
    launch(b, rope_kernel, dim3((unsigned)n, (unsigned)heads), threads, 0, x, heads, head_dim, half,
           b->d_inv_freq, r->mscale, d_pos);
    LAUNCHED(b, "rope_kernel");
    prof_end(b, P_ROPE);
}

static void cu_kv_store(be_backend *bk, const float *k, const float *v, int n, int kv_dim,
                        const int32_t *slot, float *k_cache, float *v_cache)
{
    cu_backend *b = (cu_backend *)bk;
    if (b->recording) {
        tape_op *o = record(b, OP_KV);
        if (o) {
            o->p[0] = k; o->p[1] = v; o->p[2] = dev_idx(b, slot); o->p[3] = k_cache; o->p[4] = v_cache;
            o->i[0] = n; o->i[1] = kv_dim;
        }
        return;
    }
    const int32_t *d_slot = dev_idx(b, slot);
    if (b->failed || n <= 0)
        return;
    prof_begin(b);
    if (b->base.kv_dtype == DT_BF16)
        launch(b, kv_store_kernel<__nv_bfloat16>, n, 256, 0, k, v, kv_dim, d_slot,
               (__nv_bfloat16 *)k_cache, (__nv_bfloat16 *)v_cache);
    else
        launch(b, kv_store_kernel<float>, n, 256, 0, k, v, kv_dim, d_slot, k_cache, v_cache);
    LAUNCHED(b, "kv_store_kernel");
    prof_end(b, P_KV);
}

/* The tensor-core prefill over the FA_BQ-row tiles given, where it applies
 * (bf16 cache, head_dim 64 or 128); 1 when it ran (or had no tiles).
 * INFERD_CUDA_PREFILL=f32 keeps the float32 kernel. */
static int prefill_mma_ok(const cu_backend *b, int hd)
{
    return b->base.kv_dtype == DT_BF16 && (hd == 64 || hd == 128) && !b->att_f32pre &&
           b->cc_major >= 8;
}

static int prefill_mma(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                       int kv_heads, int hd, float scale, const be_attn_layout *l,
                       const int32_t *tiles, int n_tiles, float *out)
{
    if (!prefill_mma_ok(b, hd))
        return 0;
    if (n_tiles == 0)
        return 1;
    dim3 grid((unsigned)n_tiles, (unsigned)heads);
    const __nv_bfloat16 *k = (const __nv_bfloat16 *)kc, *v = (const __nv_bfloat16 *)vc;
    const int *qs = dev_idx(b, l->q_start), *btab = dev_idx(b, l->block_table),
              *pos = dev_idx(b, l->pos);
    prof_begin(b);
#define FA_LAUNCH(HD, SPLIT)                                                                       \
    launch(b, attn_prefill_mma_kernel<HD, SPLIT>, grid, 128, 0, q, k, v, heads, kv_heads, scale,   \
           tiles, qs, btab, l->max_blocks, l->block_size, pos, out)
    const int split = !b->base.matmul_bf16;
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
    return (float *)grow(b, (void **)&b->att_part, &b->att_part_bytes, bytes, bytes * 2, 0);
}

/* Zeroed split counters for n (row, KV head) pairs; kernels leave them zero. */
static int *att_done(cu_backend *b, int n)
{
    size_t bytes = (size_t)n * sizeof(int);
    return (int *)grow(b, (void **)&b->att_done, &b->att_done_bytes, bytes, bytes * 2, 1);
}

static int decode_tile_ok(const cu_backend *b, int heads, int kv_heads, int hd)
{
    const int g = heads / kv_heads;
    return b->base.kv_dtype == DT_BF16 && (hd == 64 || hd == 128) &&
           (g == 1 || g == 2 || g == 4 || g == 8) && !b->att_split &&
           !b->att_no_gqa;
}

/* attn_decode_tile_kernel for n_rows rows (rows: their indices, NULL for
 * rows 0..n_rows-1), with split-KV and the merge where it pays. */
static void decode_tile(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                        int kv_heads, int hd, float scale, const be_attn_layout *l,
                        const int32_t *rows, int n_rows, float *out, const dec_rope *rope)
{
    const int32_t *qs = dev_idx(b, l->q_start), *btab = dev_idx(b, l->block_table),
                  *pos = dev_idx(b, l->pos);
    const int ns = decode_splits(b, n_rows * kv_heads, DEC_WARPS * DEC_TILE);
    float *part = ns > 1 ? att_part(b, n_rows, heads, hd, ns) : NULL;
    int *done = ns > 1 ? att_done(b, n_rows * kv_heads) : NULL;
    if (b->failed)
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

template <typename T, int DPL>
static void attention_t(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                        int kv_heads, int hd, float scale, const be_attn_layout *l, float *out)
{
    const int32_t *qs = dev_idx(b, l->q_start), *btab = dev_idx(b, l->block_table),
                  *pos = dev_idx(b, l->pos);
    if (b->failed)
        return;
    const int tile_ok = decode_tile_ok(b, heads, kv_heads, hd);
    if (b->n_tiles == 0 && tile_ok) {
        decode_tile(b, q, kc, vc, heads, kv_heads, hd, scale, l, NULL, l->n_tokens, out, NULL);
        return;
    }
    if (b->n_tiles > 0 && tile_ok && prefill_mma_ok(b, hd)) {
        /* a mixed step: prompt rows by tiles, decode rows by the decode kernel
         * (a one-row tile would read the whole context once per query head) */
        prefill_mma(b, q, kc, vc, heads, kv_heads, hd, scale, l, b->d_ptiles64, b->n_ptiles64,
                    out);
        if (b->n_drows > 0)
            decode_tile(b, q, kc, vc, heads, kv_heads, hd, scale, l, b->d_drows, b->n_drows, out,
                        NULL);
        return;
    }
    if (b->n_tiles == 0) {
        /* with grouped-query attention a block serves a KV head's group */
        const int group = heads / kv_heads;
        const int gqa = group >= 2 && group <= 8 && !b->att_no_gqa;
        const int ns = decode_splits(b, gqa ? l->n_tokens * kv_heads : l->n_tokens * heads, 64);
        float *part = ns > 1 ? att_part(b, l->n_tokens, heads, hd, ns) : NULL;
        if (b->failed)
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
            launch(b, attn_merge_kernel, dim3((unsigned)l->n_tokens, (unsigned)heads), 128, 0, part,
                   ns, heads, hd, (const int32_t *)NULL, out);
            LAUNCHED(b, "attn_merge_kernel");
        }
        prof_end(b, P_ATT_DEC);
        return;
    }
    if (prefill_mma(b, q, kc, vc, heads, kv_heads, hd, scale, l, b->d_tiles64, b->n_tiles64,
                    out))
        return;
    size_t smem = prefill_smem(DPL);
    if (smem > 48 * 1024 &&
        CK(b, cudaFuncSetAttribute(attn_prefill_kernel<T, DPL>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
        return;
    dim3 grid((unsigned)b->n_tiles, (unsigned)heads);
    prof_begin(b);
    launch(b, attn_prefill_kernel<T, DPL>, grid, 128, smem, q, (const T *)kc, (const T *)vc, heads,
           kv_heads, hd, scale, b->d_tiles, qs, btab, l->max_blocks, l->block_size, pos, out);
    LAUNCHED(b, "attn_prefill_kernel");
    prof_end(b, P_ATT_PRE);
}

template <typename T>
static void attention_dt(cu_backend *b, const float *q, const void *kc, const void *vc,
                         int heads, int kv_heads, int hd, float scale, const be_attn_layout *l,
                         float *out)
{
    if (hd <= 32)
        attention_t<T, 1>(b, q, kc, vc, heads, kv_heads, hd, scale, l, out);
    else if (hd <= 64)
        attention_t<T, 2>(b, q, kc, vc, heads, kv_heads, hd, scale, l, out);
    else if (hd <= 128)
        attention_t<T, 4>(b, q, kc, vc, heads, kv_heads, hd, scale, l, out);
    else
        attention_t<T, 8>(b, q, kc, vc, heads, kv_heads, hd, scale, l, out);
}

static void cu_attention(be_backend *bk, const float *q, const float *k_cache,
                         const float *v_cache, int heads, int kv_heads, int head_dim,
                         float scale, const be_attn_layout *l, float *out)
{
    cu_backend *b = (cu_backend *)bk;
    if (b->recording) {
        tape_op *o = record(b, OP_ATT);
        if (o) {
            o->p[0] = q; o->p[1] = k_cache; o->p[2] = v_cache; o->p[3] = out;
            o->p[4] = dev_idx(b, l->q_start); o->p[5] = dev_idx(b, l->block_table);
            o->p[6] = dev_idx(b, l->pos);
            o->i[0] = heads; o->i[1] = kv_heads; o->i[2] = head_dim; o->i[3] = l->n_tokens;
            o->i[4] = l->n_seqs; o->i[5] = l->max_blocks; o->i[6] = l->block_size;
            o->f = scale;
        }
        return;
    }
    if (b->failed || l->n_tokens <= 0)
        return;
    if (head_dim > MAX_HEAD_DIM || kv_heads <= 0 || heads % kv_heads) {
        fail_msg(b, "cuda backend: attention with head_dim %d, %d heads and %d KV heads is "
                    "not supported (head_dim <= %d, heads a multiple of KV heads)",
                 head_dim, heads, kv_heads, MAX_HEAD_DIM);
        return;
    }
    if (b->base.kv_dtype == DT_BF16)
        attention_dt<__nv_bfloat16>(b, q, k_cache, v_cache, heads, kv_heads, head_dim, scale, l,
                                    out);
    else
        attention_dt<float>(b, q, k_cache, v_cache, heads, kv_heads, head_dim, scale, l, out);
}

static void cu_silu_mul(be_backend *bk, const float *gate, const float *up, size_t n, float *out)
{
    cu_backend *b = (cu_backend *)bk;
    if (b->recording) {
        tape_op *o = record(b, OP_SILU);
        if (o) {
            o->p[0] = gate; o->p[1] = up; o->p[2] = out; o->i[0] = (int64_t)n;
        }
        return;
    }
    if (b->failed || n == 0)
        return;
    prof_begin(b);
    launch(b, silu_mul_kernel<float>, grid_for(n, 256), 256, 0, gate, up, n, out);
    LAUNCHED(b, "silu_mul_kernel");
    prof_end(b, P_SILU);
}

static void cu_add(be_backend *bk, float *x, const float *y, size_t n)
{
    cu_backend *b = (cu_backend *)bk;
    if (b->recording) {
        tape_op *o = record(b, OP_ADD);
        if (o) {
            o->p[0] = x; o->p[1] = y; o->i[0] = (int64_t)n;
        }
        return;
    }
    if (b->failed || n == 0)
        return;
    prof_begin(b);
    launch(b, add_kernel, grid_for(n, 256), 256, 0, x, y, n);
    LAUNCHED(b, "add_kernel");
    prof_end(b, P_ADD);
}

static void cu_gather_rows(be_backend *bk, const float *x, int cols, const int32_t *rows, int n,
                           float *out)
{
    cu_backend *b = (cu_backend *)bk;
    if (b->recording) {
        tape_op *o = record(b, OP_GATHER);
        if (o) {
            o->p[0] = x; o->p[1] = dev_idx(b, rows); o->p[2] = out; o->i[0] = cols; o->i[1] = n;
        }
        return;
    }
    const int32_t *d_rows = dev_idx(b, rows);
    if (b->failed || n <= 0)
        return;
    prof_begin(b);
    launch(b, gather_rows_kernel, n, 256, 0, x, cols, d_rows, out);
    LAUNCHED(b, "gather_rows_kernel");
    prof_end(b, P_GATHER);
}

/* Packs the step's index arrays (and the prefill tile list derived from
 * q_start) into pinned memory and sends them in one copy. */
static int cu_begin_step(be_backend *bk, const be_step *st, inferd_error *e)
{
    cu_backend *b = (cu_backend *)bk;
    const be_attn_layout *l = st->layout;
    b->recording = 0; /* a step that ended before to_host leaves its tape */
    b->cur.n = 0;
    if (report(b, e))
        return -1;
    /* The current device is per host thread, and the engine steps from its own. */
    if (CK(b, cudaSetDevice(b->device)))
        return report(b, e);
    if (b->up_buf[0])
        upload_done(b); /* the model is loaded */
    int n_tiles = 0, n_tiles64 = 0, n_ptiles64 = 0, n_drows = 0, decode_only = 1;
    for (int s = 0; s < l->n_seqs; s++) {
        int rows = l->q_start[s + 1] - l->q_start[s];
        n_tiles += (rows + ATT_BQ - 1) / ATT_BQ;
        n_tiles64 += (rows + FA_BQ - 1) / FA_BQ;
        n_ptiles64 += rows > 1 ? (rows + FA_BQ - 1) / FA_BQ : 0;
        n_drows += rows == 1;
        decode_only &= rows <= 1;
    }
    struct {
        const int32_t *host;
        size_t n;
    } arr[] = {
        {st->tokens, (size_t)l->n_tokens},
        {l->pos, (size_t)l->n_tokens},
        {l->slot, (size_t)l->n_tokens},
        {l->q_start, (size_t)l->n_seqs + 1},
        {l->ctx_len, (size_t)l->n_seqs},
        {l->block_table, (size_t)l->n_seqs * (size_t)l->max_blocks},
        {st->logit_rows, (size_t)st->n_logits},
    };
    const int n_arr = (int)(sizeof arr / sizeof arr[0]);
    size_t total = 2 * (size_t)n_tiles + 2 * (size_t)n_tiles64 + 2 * (size_t)n_ptiles64 +
                   (size_t)n_drows;
    for (int i = 0; i < n_arr; i++)
        total += arr[i].host ? arr[i].n : 0;
    if (total > b->stage_cap) {
        size_t cap = total * 2 > 4096 ? total * 2 : 4096;
        if (CK(b, cudaStreamSynchronize(b->stream)))
            return report(b, e);
        if (CK(b, cudaFreeHost(b->h_stage)) || CK(b, cudaFree(b->d_stage)))
            return report(b, e);
        b->h_stage = b->d_stage = NULL;
        b->stage_cap = 0;
        b->gen++;
        if (CK(b, cudaHostAlloc((void **)&b->h_stage, cap * sizeof(int32_t),
                                cudaHostAllocDefault)) ||
            CK(b, cudaMalloc((void **)&b->d_stage, cap * sizeof(int32_t))))
            return report(b, e);
        b->stage_cap = cap;
    } else if (CK(b, cudaEventSynchronize(b->stage_done))) { /* last copy has read it */
        return report(b, e);
    }
    size_t off = 0;
    b->n_map = 0;
    for (int i = 0; i < n_arr; i++) {
        if (!arr[i].host)
            continue;
        memcpy(b->h_stage + off, arr[i].host, arr[i].n * sizeof(int32_t));
        b->map[b->n_map].host = arr[i].host;
        b->map[b->n_map].dev = b->d_stage + off;
        b->n_map++;
        off += arr[i].n;
    }
    b->n_tiles = decode_only ? 0 : n_tiles;
    int max_keys = 1;
    for (int t = 0; t < l->n_tokens; t++)
        max_keys = l->pos[t] + 1 > max_keys ? l->pos[t] + 1 : max_keys;
    /* Rounded up to a power of two: the split-KV count follows it and is part
     * of a recorded step, so decode steps keep one CUDA graph while their
     * contexts grow (each split finds its keys from the row's own length). */
    b->max_keys = pow2_bucket(64, max_keys);
    b->d_tiles = b->d_stage + off;
    for (int s = 0; s < l->n_seqs && !decode_only; s++)
        for (int r = l->q_start[s]; r < l->q_start[s + 1]; r += ATT_BQ) {
            b->h_stage[off++] = s;
            b->h_stage[off++] = r;
        }
    b->n_tiles64 = decode_only ? 0 : n_tiles64;
    b->d_tiles64 = b->d_stage + off;
    for (int s = 0; s < l->n_seqs && !decode_only; s++)
        for (int r = l->q_start[s]; r < l->q_start[s + 1]; r += FA_BQ) {
            b->h_stage[off++] = s;
            b->h_stage[off++] = r;
        }
    b->n_ptiles64 = decode_only ? 0 : n_ptiles64;
    b->d_ptiles64 = b->d_stage + off;
    for (int s = 0; s < l->n_seqs && !decode_only; s++)
        for (int r = l->q_start[s]; l->q_start[s + 1] - l->q_start[s] > 1 && r < l->q_start[s + 1];
             r += FA_BQ) {
            b->h_stage[off++] = s;
            b->h_stage[off++] = r;
        }
    b->n_drows = decode_only ? 0 : n_drows;
    b->d_drows = b->d_stage + off;
    for (int s = 0; s < l->n_seqs && !decode_only; s++)
        if (l->q_start[s + 1] - l->q_start[s] == 1)
            b->h_stage[off++] = l->q_start[s];
    prof_begin(b);
    if (CK(b, cudaMemcpyAsync(b->d_stage, b->h_stage, off * sizeof(int32_t),
                              cudaMemcpyHostToDevice, b->stream)) ||
        CK(b, cudaEventRecord(b->stage_done, b->stream)))
        return report(b, e);
    prof_end(b, P_UPLOAD);
    b->step_rows = l->n_tokens;
    b->step_decode = decode_only;
    /* Steps over a KV cache are recorded (an encoder's are not: its own ops
     * in encoder.cu run as they are called) */
    if ((b->use_graph || b->use_fuse) && !b->profile && l->block_table) {
        b->recording = 1;
        for (int i = 0; i < b->n_map; i += 8) {
            tape_op *o = record(b, OP_KEY);
            if (!o)
                return report(b, e);
            for (int j = 0; j < 8 && i + j < b->n_map; j++)
                o->p[j] = b->map[i + j].dev; /* host arrays may move; their copies may not */
            o->i[0] = b->gen;
            o->i[1] = b->max_keys;
            o->i[2] = b->n_map;
            o->i[3] = i;
        }
    }
    return 0;
}

static int cu_to_host(be_backend *bk, void *dst, const void *src, size_t bytes, inferd_error *e)
{
    cu_backend *b = (cu_backend *)bk;
    if (b->recording)
        flush(b);
    if (!b->failed && bytes)
        CK(b, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, b->stream));
    if (!b->failed)
        CK(b, cudaStreamSynchronize(b->stream));
    return report(b, e);
}

/* ---- sampling on the device (backend.h: sample_rows) ---- */

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

static int cu_sample_rows(be_backend *bk, const float *logits, int n, int vocab,
                          const be_sample_row *in, be_sample_out *out, inferd_error *e)
{
    cu_backend *b = (cu_backend *)bk;
    if (b->recording)
        flush(b);
    if (n > 0 && !b->failed) {
        size_t need = (size_t)n * (sizeof *in + sizeof *out);
        if (need > b->smp_bytes) {
            CK(b, cudaFree(b->smp_buf));
            b->smp_buf = NULL;
            b->smp_bytes = 0;
            if (!CK(b, cudaMalloc(&b->smp_buf, need)))
                b->smp_bytes = need;
        }
        if (!b->failed) {
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
    if (!b->failed)
        CK(b, cudaStreamSynchronize(b->stream));
    return report(b, e);
}

static int cu_mem_info(be_backend *bk, size_t *free_bytes, size_t *total_bytes, inferd_error *e)
{
    cu_backend *b = (cu_backend *)bk;
    if (CK(b, cudaSetDevice(b->device)) || CK(b, cudaMemGetInfo(free_bytes, total_bytes)))
        return report(b, e);
    return 0;
}

/* For backend/cuda/encoder.cu (internal.h). */
cudaStream_t cu_stream_of(be_backend *bk) { return ((cu_backend *)bk)->stream; }
int cu_note_error(be_backend *bk, const char *call, cudaError_t rc)
{
    return cuda_fail((cu_backend *)bk, call, rc);
}
int cu_has_failed(be_backend *bk) { return ((cu_backend *)bk)->failed; }

/* Slots left out get backend.c's defaults (backend/impl.h); g++'s -Wextra
 * would otherwise want every one named. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const be_vtable cu_vtable = {
    .name = "cuda",
    .free = cu_free,
    .alloc = cu_alloc,
    .dealloc = cu_dealloc,
    .weight = cu_weight,
    .embed = cu_embed,
    .rmsnorm = cu_rmsnorm,
    .matmul = cu_matmul,
    .rope = cu_rope,
    .kv_store = cu_kv_store,
    .attention = cu_attention,
    .silu_mul = cu_silu_mul,
    .add = cu_add,
    .gather_rows = cu_gather_rows,
    .begin_step = cu_begin_step,
    .to_host = cu_to_host,
    .mem_info = cu_mem_info,
    /* encoder ops: backend/cuda/encoder.cu */
    .layernorm = cu_enc_layernorm,
    .gelu = cu_enc_gelu,
    .tanh = cu_enc_tanh,
    .attention_full = cu_enc_attention_full,
    .sample_rows = cu_sample_rows,
};
#pragma GCC diagnostic pop

extern "C" int be_cuda_available(void) { return 1; }

extern "C" be_backend *be_cuda_new(int device, inferd_error *e)
{
    cu_backend *b = (cu_backend *)calloc(1, sizeof *b);
    if (!b) {
        err_set(e, "out of memory");
        return NULL;
    }
    b->base.vt = &cu_vtable;
    b->device = device;
    const char *kv = getenv("INFERD_CUDA_KV"), *mm = getenv("INFERD_CUDA_MATMUL");
    b->base.kv_dtype = kv && strcmp(kv, "f32") == 0 ? DT_F32 : DT_BF16;
    const char *gm = getenv("INFERD_CUDA_GEMM"), *pr = getenv("INFERD_CUDA_PROFILE");
    b->force_gemv = mm && strcmp(mm, "f32") == 0;
    b->gemm_one_pass = gm && strcmp(gm, "bf16") == 0;
    b->profile = pr && strcmp(pr, "1") == 0;
    const char *av = getenv("INFERD_CUDA_ATT"), *gv = getenv("INFERD_CUDA_GEMV");
    b->att_split = av && strcmp(av, "split") == 0;
    const char *pf = getenv("INFERD_CUDA_PREFILL");
    b->att_f32pre = pf && strcmp(pf, "f32") == 0;
    const char *gq = getenv("INFERD_CUDA_GQA");
    b->att_no_gqa = gq && strcmp(gq, "0") == 0;
    b->gemv_v3 = !(gv && strcmp(gv, "v2") == 0);
    const char *pd = getenv("INFERD_CUDA_PDL"), *lt = getenv("INFERD_CUDA_LT");
    b->use_lt = lt && strcmp(lt, "1") == 0;
    const char *ug = getenv("INFERD_CUDA_GRAPH"), *uf = getenv("INFERD_CUDA_FUSE");
    b->use_graph = !(ug && strcmp(ug, "0") == 0);
    b->use_fuse = !(uf && strcmp(uf, "0") == 0);
    b->fuse_half = b->use_fuse && !(uf && strcmp(uf, "float") == 0);
    const char *gn = getenv("INFERD_CUDA_GEMV_NORM");
    b->gemv_norm = b->use_fuse && b->gemv_v3 && !(gn && strcmp(gn, "0") == 0);
    const char *ar = getenv("INFERD_CUDA_ATT_ROPE");
    b->att_rope = b->use_fuse && !(ar && strcmp(ar, "0") == 0);
    const char *gp = getenv("INFERD_CUDA_GEMV_PF");
    b->gemv_pf = gp ? atoi(gp) : 0;
    b->gemv_pf = b->gemv_pf < 0 ? 0 : b->gemv_pf > 31 ? 31 : b->gemv_pf;
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    if (rc != cudaSuccess || count == 0) {
        err_set(e, "device 'cuda': no usable NVIDIA GPU (cudaGetDeviceCount: %s)",
                rc != cudaSuccess ? cudaGetErrorString(rc) : "0 devices");
        free(b);
        return NULL;
    }
    if (device < 0 || device >= count) {
        err_set(e, "device 'cuda': GPU %d does not exist (%d found)", device, count);
        free(b);
        return NULL;
    }
    if (CK(b, cudaSetDevice(device)) ||
        CK(b, cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking)) ||
        CK(b, cudaEventCreateWithFlags(&b->stage_done, cudaEventDisableTiming)) ||
        CK(b, cudaEventCreate(&b->prof_start)) || CK(b, cudaEventCreate(&b->prof_stop)) ||
        CK(b, cudaDeviceGetAttribute(&b->n_sm, cudaDevAttrMultiProcessorCount, device)) ||
        CK(b, cudaDeviceGetAttribute(&b->cc_major, cudaDevAttrComputeCapabilityMajor, device)) ||
        CKB(b, cublasCreate(&b->blas)) || CKB(b, cublasSetStream(b->blas, b->stream)))
        goto err;
    if (!(pd && strcmp(pd, "0") == 0) && b->cc_major >= 9) {
        /* kernels built from PTX older than sm_90 have no dep_wait(): a race */
        cudaFuncAttributes fa;
        if (cudaFuncGetAttributes(&fa, (const void *)add_kernel) == cudaSuccess)
            b->use_pdl = fa.ptxVersion < 90 ? 0 : pd && strcmp(pd, "1") == 0 ? 1 : 2;
        else
            (void)cudaGetLastError(); /* PDL stays off; not the next launch's error */
    }
    return &b->base;
err:
    report(b, e);
    cu_free(&b->base);
    return NULL;
}
