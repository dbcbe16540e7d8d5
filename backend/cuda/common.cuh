/* backend/cuda/common.cuh: what every file of the CUDA backend shares — the
 * backend's state (cu_backend), the typed record of one op (a step's tape,
 * see tape.cu), the error slot, kernel launches, the per-op profile and the
 * small device helpers. Nothing outside backend/cuda includes it.
 *
 * All work goes to one stream. Ops return nothing (backend.h), so the first
 * failing CUDA call is kept, named, and reported by the next begin_step or
 * to_host, which every forward step calls. Only this header and backend.cu
 * touch the fields of be_backend (base below). */
#ifndef INFERD_CUDA_COMMON_CUH
#define INFERD_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern "C" {
#include "backend/impl.h"
}

#define GEMV_MAX_N 8   /* input rows up to which matmul streams weights itself */
#define MAX_MAPS 8     /* index arrays a step uploads (cu_begin_step) */

/* A host index array of this step and its device copy. */
typedef struct idx_map {
    const void *host;
    const int32_t *dev;
} idx_map;

/* ---- the tape: one recorded op of a step (see tape.cu) ----
 *
 * Each kind keeps every argument its op was called with; index arrays are
 * their device copies. Records are zeroed before they are filled, so two
 * steps that called the same ops with the same arguments have equal bytes
 * (tape.cu compares them to reuse a CUDA graph). */
enum op_kind { OP_KEY, OP_EMBED, OP_RMSNORM, OP_MATMUL, OP_ROPE, OP_KV, OP_ATT, OP_SILU, OP_ADD,
               OP_GATHER };

typedef struct tape_op {
    enum op_kind kind;
    union {
        /* first in a step: what its kernels see besides the ops' arguments */
        struct {
            const int32_t *dev[MAX_MAPS]; /* the step's index arrays on the device */
            int64_t gen;                  /* cu_backend.gen */
            int max_keys, n_map, first;   /* cu_backend.max_keys; maps, the first here */
        } key;
        struct {
            const be_weight *table;
            const int32_t *ids;
            float *out;
            int n;
        } embed;
        struct {
            const float *x;
            const be_weight *w;
            float *out;
            float eps;
            int rows, cols;
        } rmsnorm;
        struct {
            const float *x;
            const be_weight *w, *bias;
            float *y;
            int n;
        } matmul;
        struct {
            float *x;
            const be_rope *r;
            const int32_t *pos;
            const float *inv_freq; /* r's when recorded */
            float mscale;          /* r's when recorded */
            int n, heads, head_dim, rot_dim;
        } rope;
        struct {
            const float *k, *v;
            const int32_t *slot;
            float *k_cache, *v_cache;
            int n, kv_dim;
        } kv;
        struct {
            const float *q, *k_cache, *v_cache;
            float *out;
            const int32_t *q_start, *block_table, *pos; /* the layout's */
            float scale;
            int heads, kv_heads, head_dim;
            int n_tokens, n_seqs, max_blocks, block_size; /* the layout's */
        } att;
        struct {
            const float *gate, *up;
            float *out;
            size_t n;
        } silu;
        struct {
            float *x;
            const float *y;
            size_t n;
        } add;
        struct {
            const float *x;
            const int32_t *rows;
            float *out;
            int cols, n;
        } gather;
    };
} tape_op;

typedef struct tape {
    tape_op *ops;
    int n, cap;
} tape;

/* ---- the backend ---- */

typedef struct cu_backend {
    be_backend base;
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    /* the environment switches (backend.cu reads them; docs/cuda.md) */
    int force_gemv;            /* INFERD_CUDA_MATMUL=f32: every matmul in float32 */
    int gemm_one_pass;         /* INFERD_CUDA_GEMM=bf16: activations rounded to bf16 */
    int profile;               /* INFERD_CUDA_PROFILE=1 */
    int graph_stats;           /* INFERD_CUDA_GRAPH_STATS=1 */
    int att_f32pre;            /* INFERD_CUDA_PREFILL=f32: the float32 prefill kernel */
    int att_split;             /* INFERD_CUDA_ATT=split: the one-key-at-a-time split-KV kernels */
    int use_pdl;               /* gemv1_kernel launched early (sm_90+); INFERD_CUDA_PDL=0 off */
    int use_graph, use_fuse;   /* INFERD_CUDA_GRAPH=0, INFERD_CUDA_FUSE=0 turn them off */
    int fuse_half;             /* run_silu_gemm, run_add_rmsnorm; INFERD_CUDA_FUSE=float turns them off */
    int gemv_norm;             /* run_norm_gemv, run_gemv_add; INFERD_CUDA_GEMV_NORM=0 off */
    int att_rope;              /* run_rope_attn; INFERD_CUDA_ATT_ROPE=0 off */
    /* the profile (prof_begin, prof_end) */
    cudaEvent_t prof_start, prof_stop;
    double prof_ms[16];
    long prof_calls[16];
    void **weights;            /* device copies made by cu_weight, freed with the backend */
    size_t n_weights, cap_weights;
    char *up_buf[2];           /* pinned staging of weight uploads, freed at the first step */
    cudaEvent_t up_done[2];    /* the copy out of up_buf[i] finished */
    int up_next, up_threads;
    int cc_major;              /* compute capability: bf16 mma.sync needs 8.0 */
    int n_sm;                  /* multiprocessors: sizes the split-KV and GEMV grids */
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
    int max_keys;              /* the longest context, to a power of two: split-KV */
    /* rotary frequencies: the model's host array, copied once */
    const float *rope_host;
    int rope_half;
    float *d_inv_freq;
    /* buffers kernels see, grown by cu_grow */
    void *scratch;             /* bf16/f16 copies of GEMM inputs */
    size_t scratch_bytes;
    float *att_part;           /* split-KV partial results */
    size_t att_part_bytes;
    int *att_done;             /* splits finished per (row, KV head); zero between launches */
    size_t att_done_bytes;
    void *smp_buf;             /* sample_rows: rows' parameters, then their results */
    size_t smp_bytes;
    /* steps over the KV cache: ops are recorded between begin_step and
     * to_host, then run with fused launches or replayed as one CUDA graph */
    int recording;
    int step_rows;             /* rows of the recorded step: graphs up to GEMV_MAX_N */
    int step_decode;           /* every row of the step a decode row: graphs only then */
    unsigned gen;              /* bumped when a buffer that kernels see is reallocated */
    tape cur, last, gtape;     /* this step, the step before, the graph's */
    cudaGraphExec_t gexec;
    long graph_launches, graph_captures, gemv_folds, att_folds; /* INFERD_CUDA_GRAPH_STATS=1 */
} cu_backend;

static inline cu_backend *cu_of(be_backend *bk)
{
    return (cu_backend *)bk;
}

/* The be_backend fields the ops read: the KV cache's element type (bf16,
 * or float32 with INFERD_CUDA_KV=f32) and the model's matmul precision. */
static inline int cu_kv_bf16(const cu_backend *b)
{
    return b->base.kv_dtype == DT_BF16;
}

static inline int cu_matmul_bf16(const cu_backend *b)
{
    return b->base.matmul_bf16;
}

/* ---- errors ---- */

/* Op failures go to the slot every backend shares (backend/impl.h). */
static inline void fail_msg(cu_backend *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void fail_msg(cu_backend *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    be_impl_vfail(&b->base, fmt, ap);
    va_end(ap);
}

/* Keeps the call's name (the text before its argument list) with the error. */
static inline int cuda_fail(cu_backend *b, const char *call, cudaError_t rc)
{
    if (rc == cudaSuccess)
        return 0;
    int len = (int)strcspn(call, "(");
    fail_msg(b, "cuda backend: %.*s failed: %s (%s)", len, call, cudaGetErrorName(rc),
             cudaGetErrorString(rc));
    return -1;
}

static inline int blas_fail(cu_backend *b, const char *call, cublasStatus_t rc)
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

/* Hands the kept error to the caller and clears it. */
static inline int report(cu_backend *b, inferd_error *e)
{
    return be_impl_report(&b->base, e);
}

/* ---- launches ----
 *
 * Every decoder kernel starts with dep_open() and dep_wait() (the one-row
 * GEMV loads weights between the two). With programmatic dependent launch
 * (sm_90 and later) a kernel is launched once every block of the one before
 * it has started, and waits in dep_wait() until that one has finished and
 * its writes are visible: what it does before dep_wait() (reading weights,
 * which no kernel writes) overlaps the tail of the one before, and the
 * launch latency between the two is gone. Only gemv1_kernel's launches ask
 * for it (launch_ex with pdl, INFERD_CUDA_PDL=0: none): launched early, the
 * other kernels made decode slower (bench/NOTES.md). A kernel touches
 * nothing other kernels use before dep_wait(), and every block calls it, so
 * a kernel ends only after the one before it ended (the kernel after it may
 * read the outputs of both). Both are no-ops for an ordinary launch. */
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

/* An ordinary launch on the backend's stream. */
template <typename... P, typename... A>
static void launch(cu_backend *b, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                   A... args)
{
    launch_ex(b, 0, kernel, grid, block, smem, args...);
}

/* Blocks of `threads` for a grid-stride loop over n elements. */
static inline unsigned grid_for(size_t n, unsigned threads)
{
    size_t g = (n + threads - 1) / threads;
    return g < 1 ? 1 : g > 65535 * 8 ? 65535 * 8 : (unsigned)g;
}

/* The threads that normalise one row: the sum of squares' order, and so its
 * bits, depend on it, so every launch that normalises rows (rmsnorm_kernel,
 * add_rmsnorm_kernel, gemv1_kernel's NORM) takes it from here. */
static inline int rmsnorm_threads(int64_t cols)
{
    return cols >= 1024 ? 512 : cols >= 256 ? 256 : 64;
}

/* Runs OP<T, DPL>::run(args...) for the KV cache's element type T (bf16 or
 * float) and DPL, the head dimensions a lane holds (head_dim <= 32 * DPL,
 * 256 at most): the instances the one-key-at-a-time decode and the float32
 * prefill kernels come in. */
template <template <typename, int> class OP, typename T, typename... A>
static void by_dpl(int hd, A... args)
{
    if (hd <= 32)
        OP<T, 1>::run(args...);
    else if (hd <= 64)
        OP<T, 2>::run(args...);
    else if (hd <= 128)
        OP<T, 4>::run(args...);
    else
        OP<T, 8>::run(args...);
}

template <template <typename, int> class OP, typename... A>
static void by_kv_dpl(const cu_backend *b, int hd, A... args)
{
    if (cu_kv_bf16(b))
        by_dpl<OP, __nv_bfloat16>(hd, args...);
    else
        by_dpl<OP, float>(hd, args...);
}

/* ---- profile: per-op device time, measured synchronously (INFERD_CUDA_PROFILE=1) ---- */

enum { P_EMBED, P_RMSNORM, P_GEMV, P_GEMM, P_ROPE, P_KV, P_ATT_DEC, P_ATT_PRE, P_SILU, P_ADD,
       P_GATHER, P_UPLOAD, P_SAMPLE, P_N };

static inline void prof_begin(cu_backend *b)
{
    if (b->profile)
        CK(b, cudaEventRecord(b->prof_start, b->stream));
}

static inline void prof_end(cu_backend *b, int op)
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

/* ---- device helpers ---- */

/* Element i of a weight of dtype dt, as float. */
__device__ __forceinline__ float ldw(const void *w, int dt, int64_t i)
{
    if (dt == DT_BF16)
        return __bfloat162float(((const __nv_bfloat16 *)w)[i]);
    if (dt == DT_F16)
        return __half2float(((const __half *)w)[i]);
    return ((const float *)w)[i];
}

/* See launch_ex(). */
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

/* Rope of one dimension pair of a head: (v[i], v[i + half]) by angle ang.
 * rope_kernel, rope_store_kernel and the decode attention's rope fold all
 * rotate through it, so the three give the same bits. */
__device__ __forceinline__ void rotate_pair(float *v, int i, int half, float ang, float mscale)
{
    float c = cosf(ang) * mscale, s = sinf(ang) * mscale;
    float a = v[i], bb = v[i + half];
    v[i] = a * c - bb * s;
    v[i + half] = bb * c + a * s;
}

/* SiLU(g) * u, as transformers' LlamaMLP computes it in float32 (the
 * element-wise kernel and the GEMVs' GLU). */
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

#endif
