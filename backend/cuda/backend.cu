/* backend/cuda/backend.cu: the CUDA backend's glue — creating and freeing
 * it, device memory, the weight upload, mem_info, the environment switches
 * and the one vtable that hands the ops in the other files to model code.
 * No kernels live here.
 *
 * Weights are copied once from the memory-mapped safetensors to device
 * memory in their file dtype; activations are float32; the KV cache is bf16
 * (or float32 with INFERD_CUDA_KV=f32). The file map and the switches:
 * docs/cuda.md. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/backend.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/elementwise.cuh"
#include "backend/cuda/encoder.cuh"
#include "backend/cuda/gemm.cuh"
#include "backend/cuda/gemv.cuh"
#include "backend/cuda/sample.cuh"
#include "backend/cuda/tape.cuh"

static const char *const prof_names[P_N] = {
    "embed", "rmsnorm", "matmul gemv", "matmul gemm", "rope", "kv_store", "attention decode",
    "attention prefill", "silu_mul", "add", "gather_rows", "step upload", "sample"};

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

void cu_upload_done(cu_backend *b)
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

void *cu_grow(cu_backend *b, void **buf, size_t *cap, size_t need, size_t alloc, int zero)
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

void *cu_scratch(cu_backend *b, size_t bytes)
{
    return cu_grow(b, &b->scratch, &b->scratch_bytes, bytes, bytes, 0);
}

static void cu_free(be_backend *bk)
{
    cu_backend *b = cu_of(bk);
    /* Teardown: nothing is left to report an error to, so results go unread. */
    cudaStreamSynchronize(b->stream);
    cu_upload_done(b);
    if (b->profile)
        prof_print(b);
    if (b->graph_stats)
        fprintf(stderr, "cuda graphs: %ld captured, %ld launches; %ld gemv folds run, "
                        "%ld rope attention folds run\n",
                b->graph_captures, b->graph_launches, b->gemv_folds, b->att_folds);
    cu_tape_free(b);
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
    if (b->blas)
        cublasDestroy(b->blas);
    if (b->stream)
        cudaStreamDestroy(b->stream);
    free(b);
}

static void *cu_alloc(be_backend *bk, size_t bytes)
{
    cu_backend *b = cu_of(bk);
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
    cu_backend *b = cu_of(bk);
    if (!p)
        return;
    CK(b, cudaStreamSynchronize(b->stream));
    CK(b, cudaFree(p));
}

static int cu_weight(be_backend *bk, const void *host, inferd_dtype dt, int64_t rows,
                     int64_t cols, be_weight *out, inferd_error *e)
{
    cu_backend *b = cu_of(bk);
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

static int cu_mem_info(be_backend *bk, size_t *free_bytes, size_t *total_bytes, inferd_error *e)
{
    cu_backend *b = cu_of(bk);
    if (CK(b, cudaSetDevice(b->device)) || CK(b, cudaMemGetInfo(free_bytes, total_bytes)))
        return report(b, e);
    return 0;
}

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

/* Whether the environment sets `name` to exactly `value`. */
static int env_is(const char *name, const char *value)
{
    const char *v = getenv(name);
    return v && strcmp(v, value) == 0;
}

extern "C" be_backend *be_cuda_new(int device, inferd_error *e)
{
    cu_backend *b = (cu_backend *)calloc(1, sizeof *b);
    if (!b) {
        err_set(e, "out of memory");
        return NULL;
    }
    b->base.vt = &cu_vtable;
    b->device = device;
    /* The switches (docs/cuda.md): precisions, the default's optimisations
     * turned off for comparison, and diagnostics. */
    b->base.kv_dtype = env_is("INFERD_CUDA_KV", "f32") ? DT_F32 : DT_BF16;
    b->force_gemv = env_is("INFERD_CUDA_MATMUL", "f32");
    b->gemm_one_pass = env_is("INFERD_CUDA_GEMM", "bf16");
    b->att_f32pre = env_is("INFERD_CUDA_PREFILL", "f32");
    b->att_split = env_is("INFERD_CUDA_ATT", "split");
    b->use_graph = !env_is("INFERD_CUDA_GRAPH", "0");
    b->use_fuse = !env_is("INFERD_CUDA_FUSE", "0");
    b->fuse_half = b->use_fuse && !env_is("INFERD_CUDA_FUSE", "float");
    b->gemv_norm = b->use_fuse && !env_is("INFERD_CUDA_GEMV_NORM", "0");
    b->att_rope = b->use_fuse && !env_is("INFERD_CUDA_ATT_ROPE", "0");
    const int pdl_off = env_is("INFERD_CUDA_PDL", "0");
    b->profile = env_is("INFERD_CUDA_PROFILE", "1");
    b->graph_stats = env_is("INFERD_CUDA_GRAPH_STATS", "1");
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
    if (!pdl_off && b->cc_major >= 9) {
        /* kernels built from PTX older than sm_90 have no dep_wait(): a race */
        cudaFuncAttributes fa;
        if (cu_gemv_attributes(&fa) == cudaSuccess)
            b->use_pdl = fa.ptxVersion >= 90;
        else
            (void)cudaGetLastError(); /* PDL stays off; not the next launch's error */
    }
    return &b->base;
err:
    report(b, e);
    cu_free(&b->base);
    return NULL;
}
