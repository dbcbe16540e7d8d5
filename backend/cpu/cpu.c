/* backend/cpu: the reference backend, so that every model runs anywhere and
 * a GPU backend has bits to be checked against. float32 compute on
 * bf16/f16/f32 weights, OpenMP threads, AVX2/FMA, and AVX-512 kernels chosen
 * at run time where the CPU has them (the build stays x86-64-v3). Every
 * output element is one dot product whose summation order depends only on
 * the reduction length — never on the batch size, the thread count or the
 * kernel — so a sequence's logits are the same whatever else is in the
 * batch (greedy output is batch-invariant). --matmul-precision bfloat16
 * lives in bf16.c.
 *
 * Its buffers are host memory (a host backend: backend.c's to_host is a
 * memcpy). Ops take their working memory from scratch regions sized at
 * load and kept (below), never malloc per op, and never abort: an op that
 * cannot get memory keeps the error for the step's report. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend/cpu/internal.h"
#include "backend/impl.h"

/* Scratch: one region per use, grown to the largest size asked and kept,
 * so that once the model is loaded and its first steps have run the ops
 * allocate nothing. Regions whose size the weights decide (tiles, norm
 * rows) are sized by cpu_weight, those a step's rows decide (index arrays,
 * rounded activations) by cpu_reserve, which the model calls when it grows
 * its activations; attention's grows with the context, by half again each
 * time so that a decode adding a token a step reallocates rarely. An op
 * whose region cannot grow keeps the error (be_impl_fail) and does
 * nothing; the step's be_to_host or be_sample_rows reports it. */
enum { SCR_TILE, SCR_NORM, SCR_XBUF, SCR_INDEX, SCR_ATT, SCR_COUNT };
static const char *const scr_name[SCR_COUNT] = {"matmul tile", "norm weight",
                                                "bf16 activation", "index", "attention"};

typedef struct cpu_region {
    void *p;      /* 64-byte aligned */
    size_t cap;   /* bytes */
} cpu_region;

typedef struct cpu_backend {
    be_backend base;
    int n_threads;
    void **packed;            /* weight copies made by cpu_weight */
    size_t n_packed;
    int bf16_native;          /* AVX512_BF16 kernels for --matmul-precision bfloat16 */
    int f32_512;              /* AVX-512F float32 prefill kernel */
    int64_t pair_cols;        /* widest pair-panel weight: sizes SCR_XBUF */
    cpu_region scr[SCR_COUNT];
    int (*scr_alloc)(void **p, size_t align, size_t bytes); /* posix_memalign's contract */
} cpu_backend;

/* Layout records for be_weight.priv (NULL: row-major as in the file). */
static const cpu_layout layout_packed8 = CPU_PACKED8, layout_pairs = CPU_PAIRS;

cpu_layout cpu_weight_layout(const be_weight *w)
{
    return w->priv ? *(const cpu_layout *)w->priv : CPU_ROWS;
}

static int default_scr_alloc(void **p, size_t align, size_t bytes)
{
    return posix_memalign(p, align, bytes);
}

void cpu_set_scratch_alloc(be_backend *bk, int (*fn)(void **p, size_t align, size_t bytes))
{
    ((cpu_backend *)bk)->scr_alloc = fn ? fn : default_scr_alloc;
}

static size_t align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

/* Region `which`, at least `bytes` long (contents not kept); NULL with the
 * error kept. Serial code only: never inside a parallel region. */
static void *scratch(cpu_backend *b, int which, size_t bytes)
{
    cpu_region *r = &b->scr[which];
    if (bytes <= r->cap && r->p)
        return r->p;
    size_t want = r->cap + r->cap / 2 > bytes ? r->cap + r->cap / 2 : bytes;
    free(r->p);
    r->p = NULL;
    r->cap = 0;
    if (b->scr_alloc(&r->p, 64, want ? want : 64)) {
        r->p = NULL;
        be_impl_fail(&b->base, "cpu backend: out of memory for %.1f MiB of %s scratch",
                     (double)bytes / (1024.0 * 1024.0), scr_name[which]);
        return NULL;
    }
    r->cap = want;
    return r->p;
}

/* Per-thread stride of SCR_TILE for weights of cols columns: a float32 copy
 * of F32_TILE (>= ROW_TILE) weight rows. */
static size_t tile_stride(int64_t cols);

/* Output rows converted to float32 together: 12 rows of a 4864-wide matrix
 * are 228 KiB, which stays in L2 while every input row streams past. */
#define ROW_TILE 12 /* a multiple of 3 and 4: the blocked kernels cover it */

static void cpu_free(be_backend *bk)
{
    cpu_backend *b = (cpu_backend *)bk;
    for (size_t i = 0; i < b->n_packed; i++)
        free(b->packed[i]);
    free(b->packed);
    for (int i = 0; i < SCR_COUNT; i++)
        free(b->scr[i].p);
    free(b);
}

/* calloc, not posix_memalign + memset: a large block comes from mmap
 * already zero, so its pages are touched only as they are used. Writing
 * `serve`'s default 4 GiB KV pool took ~4 s of start-up, for a model of any
 * size. calloc has no alignment argument: the block is 64-aligned inside
 * a larger one whose address is kept just below it for dealloc. */
static void *cpu_alloc(be_backend *b, size_t bytes)
{
    (void)b;
    const size_t pad = 64 + sizeof(void *);
    if (bytes > SIZE_MAX - pad)
        return NULL;
    char *raw = calloc(1, bytes + pad);
    if (!raw)
        return NULL;
    void **p = (void **)(((uintptr_t)raw + pad) & ~(uintptr_t)63);
    p[-1] = raw;
    return p;
}

static void cpu_dealloc(be_backend *b, void *p)
{
    (void)b;
    if (p)
        free(((void **)p)[-1]);
}

/* Packed layout of a 16-bit matrix: for each block of 8 rows, for each chunk
 * of 8 columns, the 8 rows' 8 values one after another (128 bytes). Decode
 * then reads 8 rows as one sequential stream, which the hardware prefetcher
 * follows at full memory bandwidth; 8 interleaved row streams of a short row
 * (a 896-wide matrix is 1792 bytes a row) reach a third of it. */
static size_t packed_index(int64_t cols, int64_t r, int64_t k)
{
    return (size_t)((((r >> 3) * (cols >> 3) + (k >> 3)) << 6) + ((r & 7) << 3) + (k & 7));
}

/* A packed weight's copy, in transparent huge pages where the kernel gives
 * them (THP "madvise" mode): decode streams every weight once a token, and
 * 4 KiB pages cost a TLB miss and, at load, a page fault every 4 KiB. */
static void *alloc_packed(size_t bytes)
{
    const size_t huge = (size_t)2 << 20, page = 4096;
    void *p = NULL;
    if (posix_memalign(&p, bytes < huge ? 64 : huge, bytes ? bytes : 64))
        return NULL;
    /* a partial last 2 MiB stays in small pages: no memory spent on padding */
    if (bytes >= huge)
        madvise(p, (bytes + page - 1) / page * page, MADV_HUGEPAGE);
    return p;
}

/* The scratch a weight's ops need, sized now (at load) so that the steps
 * need not: the float32 copy of a vector (norm weights and biases, rows 1),
 * matmul's float32 tiles for a matrix (a pair-panel one needs none: its
 * rounded activations are cpu_reserve's). */
static int size_scratch_for(cpu_backend *b, int64_t rows, int64_t cols, int pairs,
                            inferd_error *e)
{
    if (rows == 1 ? !scratch(b, SCR_NORM, (size_t)cols * 2 * sizeof(float))
                  : !pairs && !scratch(b, SCR_TILE, tile_stride(cols) * (size_t)b->n_threads))
        return be_impl_report(&b->base, e);
    return 0;
}

static int cpu_weight(be_backend *bk, const void *host, inferd_dtype dt, int64_t rows,
                      int64_t cols, be_weight *out, inferd_error *e)
{
    cpu_backend *b = (cpu_backend *)bk;
    if (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16) {
        err_set(e, "cpu backend: weights of type %s are not supported", dtype_name(dt));
        return -1;
    }
    /* bfloat16 precision multiplies bf16 weights as they are; f16 and f32
     * checkpoints keep the float32 path. Rows of 1 are norms and biases. */
    const int pairs = b->base.matmul_bf16 && dt == DT_BF16 && rows > 1;
    if (size_scratch_for(b, rows, cols, pairs, e))
        return -1;
    memset(out, 0, sizeof *out);
    out->data = host;
    out->dtype = dt;
    out->rows = rows;
    out->cols = cols;
    if (!pairs && (dt == DT_F32 || rows < 8 || rows % 8 || cols % 8))
        return 0;
    void **list = realloc(b->packed, (b->n_packed + 1) * sizeof *list);
    if (!list) {
        err_set(e, "out of memory");
        return -1;
    }
    b->packed = list;
    if (pairs) {
        size_t bytes = cpu_pairs_bytes(rows, cols);
        uint16_t *p = alloc_packed(bytes);
        if (!p) {
            err_set(e, "out of memory packing a %lld x %lld weight", (long long)rows,
                    (long long)cols);
            return -1;
        }
        cpu_pairs_pack(host, rows, cols, p, b->n_threads);
        b->packed[b->n_packed++] = p;
        out->data = p;
        out->priv = &layout_pairs;
        if (cols > b->pair_cols)
            b->pair_cols = cols;
        return 0;
    }
    size_t bytes = (size_t)rows * (size_t)cols * 2;
    uint16_t *p = alloc_packed(bytes);
    if (!p) {
        err_set(e, "out of memory packing a %lld x %lld weight", (long long)rows,
                (long long)cols);
        return -1;
    }
    const uint16_t *src = host;
#pragma omp parallel for num_threads(b->n_threads) schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < cols; k += 8)
            memcpy(p + packed_index(cols, r, k), src + r * cols + k, 16);
    b->packed[b->n_packed++] = p;
    out->data = p;
    out->priv = &layout_packed8;
    return 0;
}

/* Row r of a weight as float32. */
static void weight_row_f32(const be_weight *w, int64_t r, float *out)
{
    const cpu_layout lay = cpu_weight_layout(w);
    if (lay == CPU_PAIRS) {
        cpu_pairs_row_f32(w, r, out);
        return;
    }
    if (lay == CPU_PACKED8) {
        be_weight row = {.data = NULL, .dtype = w->dtype, .rows = 1, .cols = w->cols};
        uint16_t tmp[4096];
        const uint16_t *src = w->data;
        for (int64_t k0 = 0; k0 < w->cols; k0 += 4096) {
            int64_t m = w->cols - k0 < 4096 ? w->cols - k0 : 4096;
            for (int64_t k = 0; k < m; k += 8)
                memcpy(tmp + k, src + packed_index(w->cols, r, k0 + k), 16);
            row.data = tmp;
            row.cols = m;
            weight_row_f32(&row, 0, out + k0);
        }
        return;
    }
    int64_t n = w->cols, i = 0;
    if (w->dtype == DT_F32) {
        memcpy(out, (const float *)w->data + r * n, (size_t)n * sizeof(float));
    } else if (w->dtype == DT_BF16) {
        const uint16_t *src = (const uint16_t *)w->data + r * n;
        for (; i + 8 <= n; i += 8) {
            __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
            __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
            _mm256_storeu_ps(out + i, _mm256_castsi256_ps(u));
        }
        for (; i < n; i++)
            out[i] = bf16_to_f32(src[i]);
    } else {
        const uint16_t *src = (const uint16_t *)w->data + r * n;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i,
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
        for (; i < n; i++)
            out[i] = f16_to_f32(src[i]);
    }
}

/* Every matmul element is computed by the same sequence of float operations:
 * 8 lanes accumulated in k order, a fixed horizontal reduction, then the
 * scalar tail. The blocked kernel below and the single dot product follow it
 * exactly, so a row's result never depends on how many rows share the call. */
static inline float hsum_tail(__m256 s, const float *a, const float *b, int64_t i, int64_t n)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++)
        r += a[i] * b[i];
    return r;
}

static inline float dot_f32(const float *a, const float *b, int64_t n)
{
    __m256 s = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        s = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s);
    return hsum_tail(s, a, b, i, n);
}

/* A loaded vector kept in a register: GCC otherwise folds dot_4x3's loads
 * into its FMAs as memory operands (16 loads an iteration instead of 7, so
 * the loop waits on the load ports at ~70 % of the FMA peak; 95 % with this,
 * bench/NOTES.md). The empty asm only pins the value; the FMAs are the same. */
#define IN_REG(v) __asm__("" : "+x"(v))

/* 4 input rows x 3 weight rows at once: each loaded vector feeds 3 or 4
 * FMAs instead of one, which is what makes prefill compute-bound. */
static void dot_4x3(const float *x, int64_t ldx, const float *w, int64_t ldw, int64_t n,
                    float *y, int64_t ldy)
{
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
    __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
    const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx;
    const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v0 = _mm256_loadu_ps(w0 + i), v1 = _mm256_loadu_ps(w1 + i),
               v2 = _mm256_loadu_ps(w2 + i);
        IN_REG(v0);
        IN_REG(v1);
        IN_REG(v2);
        __m256 u = _mm256_loadu_ps(x0 + i);
        IN_REG(u);
        a00 = _mm256_fmadd_ps(u, v0, a00);
        a01 = _mm256_fmadd_ps(u, v1, a01);
        a02 = _mm256_fmadd_ps(u, v2, a02);
        u = _mm256_loadu_ps(x1 + i);
        IN_REG(u);
        a10 = _mm256_fmadd_ps(u, v0, a10);
        a11 = _mm256_fmadd_ps(u, v1, a11);
        a12 = _mm256_fmadd_ps(u, v2, a12);
        u = _mm256_loadu_ps(x2 + i);
        IN_REG(u);
        a20 = _mm256_fmadd_ps(u, v0, a20);
        a21 = _mm256_fmadd_ps(u, v1, a21);
        a22 = _mm256_fmadd_ps(u, v2, a22);
        u = _mm256_loadu_ps(x3 + i);
        IN_REG(u);
        a30 = _mm256_fmadd_ps(u, v0, a30);
        a31 = _mm256_fmadd_ps(u, v1, a31);
        a32 = _mm256_fmadd_ps(u, v2, a32);
    }
    y[0] = hsum_tail(a00, x0, w0, i, n);
    y[1] = hsum_tail(a01, x0, w1, i, n);
    y[2] = hsum_tail(a02, x0, w2, i, n);
    y[ldy] = hsum_tail(a10, x1, w0, i, n);
    y[ldy + 1] = hsum_tail(a11, x1, w1, i, n);
    y[ldy + 2] = hsum_tail(a12, x1, w2, i, n);
    y[2 * ldy] = hsum_tail(a20, x2, w0, i, n);
    y[2 * ldy + 1] = hsum_tail(a21, x2, w1, i, n);
    y[2 * ldy + 2] = hsum_tail(a22, x2, w2, i, n);
    y[3 * ldy] = hsum_tail(a30, x3, w0, i, n);
    y[3 * ldy + 1] = hsum_tail(a31, x3, w1, i, n);
    y[3 * ldy + 2] = hsum_tail(a32, x3, w2, i, n);
}

/* One input row x 4 weight rows: four independent FMA chains, so decode is
 * not bound by the latency of a single chain. */
static void dot_1x4(const float *x, const float *w, int64_t ldw, int64_t n, float *y)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 u = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w0 + i), a0);
        a1 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w1 + i), a1);
        a2 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w2 + i), a2);
        a3 = _mm256_fmadd_ps(u, _mm256_loadu_ps(w3 + i), a3);
    }
    y[0] = hsum_tail(a0, x, w0, i, n);
    y[1] = hsum_tail(a1, x, w1, i, n);
    y[2] = hsum_tail(a2, x, w2, i, n);
    y[3] = hsum_tail(a3, x, w3, i, n);
}

/* Weight element loads straight from the file's dtype. They produce exactly
 * the floats weight_row_f32 writes, so the direct path below and the tiled
 * path give bitwise the same results. */
static inline __m256 wload8(const void *w, inferd_dtype dt, int64_t i)
{
    if (dt == DT_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i))),
            16));
    if (dt == DT_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    return _mm256_loadu_ps((const float *)w + i);
}

static inline float wget(const void *w, inferd_dtype dt, int64_t i)
{
    if (dt == DT_BF16)
        return bf16_to_f32(((const uint16_t *)w)[i]);
    if (dt == DT_F16)
        return f16_to_f32(((const uint16_t *)w)[i]);
    return ((const float *)w)[i];
}

static inline float hsum_tail_w(__m256 s, const float *a, const void *w, inferd_dtype dt,
                                int64_t i, int64_t n)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++)
        r += a[i] * wget(w, dt, i);
    return r;
}

/* Decode: one input row against 4 weight rows read in their file dtype, so
 * the weights stream from memory once with no float32 copy. */
static void dot_1x4_direct(const float *x, const be_weight *w, int64_t r, float *y)
{
    const int64_t n = w->cols;
    const size_t es = dtype_size(w->dtype);
    const char *base = (const char *)w->data + (size_t)r * (size_t)n * es;
    const void *w0 = base, *w1 = base + n * es, *w2 = base + 2 * n * es, *w3 = base + 3 * n * es;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 u = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(u, wload8(w0, w->dtype, i), a0);
        a1 = _mm256_fmadd_ps(u, wload8(w1, w->dtype, i), a1);
        a2 = _mm256_fmadd_ps(u, wload8(w2, w->dtype, i), a2);
        a3 = _mm256_fmadd_ps(u, wload8(w3, w->dtype, i), a3);
    }
    y[0] = hsum_tail_w(a0, x, w0, w->dtype, i, n);
    y[1] = hsum_tail_w(a1, x, w1, w->dtype, i, n);
    y[2] = hsum_tail_w(a2, x, w2, w->dtype, i, n);
    y[3] = hsum_tail_w(a3, x, w3, w->dtype, i, n);
}

/* Decode on a packed weight: 8 rows from one sequential stream. */
static void dot_1x8_packed(const float *x, const uint16_t *blk, inferd_dtype dt, int64_t n,
                           float *y)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
           a7 = a0;
    for (int64_t i = 0; i < n; i += 8, blk += 64) {
        __m256 u = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(u, wload8(blk, dt, 0), a0);
        a1 = _mm256_fmadd_ps(u, wload8(blk, dt, 8), a1);
        a2 = _mm256_fmadd_ps(u, wload8(blk, dt, 16), a2);
        a3 = _mm256_fmadd_ps(u, wload8(blk, dt, 24), a3);
        a4 = _mm256_fmadd_ps(u, wload8(blk, dt, 32), a4);
        a5 = _mm256_fmadd_ps(u, wload8(blk, dt, 40), a5);
        a6 = _mm256_fmadd_ps(u, wload8(blk, dt, 48), a6);
        a7 = _mm256_fmadd_ps(u, wload8(blk, dt, 56), a7);
    }
    y[0] = hsum_tail_w(a0, x, NULL, dt, n, n);
    y[1] = hsum_tail_w(a1, x, NULL, dt, n, n);
    y[2] = hsum_tail_w(a2, x, NULL, dt, n, n);
    y[3] = hsum_tail_w(a3, x, NULL, dt, n, n);
    y[4] = hsum_tail_w(a4, x, NULL, dt, n, n);
    y[5] = hsum_tail_w(a5, x, NULL, dt, n, n);
    y[6] = hsum_tail_w(a6, x, NULL, dt, n, n);
    y[7] = hsum_tail_w(a7, x, NULL, dt, n, n);
}

static float dot_direct(const float *x, const be_weight *w, int64_t r)
{
    const int64_t n = w->cols;
    const void *wr = (const char *)w->data + (size_t)r * (size_t)n * dtype_size(w->dtype);
    __m256 s = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        s = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), wload8(wr, w->dtype, i), s);
    return hsum_tail_w(s, x, wr, w->dtype, i, n);
}

static float bias_at(const be_weight *bias, int64_t r)
{
    return bias ? wget(bias->data, bias->dtype, r) : 0.0f;
}

/* A few input rows, each against the weights as stored (cpu_matmul says
 * when). */
static void matmul_direct(cpu_backend *b, const float *x, const be_weight *w,
                          const be_weight *bias, int n, float *y)
{
    const int64_t rows = w->rows, cols = w->cols;
    const int64_t blocks = (rows + 63) / 64;
    const int packed8 = cpu_weight_layout(w) == CPU_PACKED8;
#pragma omp parallel for num_threads(b->n_threads) schedule(static)
    for (int64_t t = 0; t < blocks; t++) {
        int64_t r0 = t * 64, r1 = r0 + 64 < rows ? r0 + 64 : rows;
        /* packed: each 8-row group's stream (cols x 16 bytes) is read from
         * memory for the first input row and from L1/L2 for the others */
        if (packed8)
            for (int64_t r = r0; r < r1; r += 8)
                for (int i = 0; i < n; i++)
                    dot_1x8_packed(x + (int64_t)i * cols, (const uint16_t *)w->data + r * cols,
                                   w->dtype, cols, y + (int64_t)i * rows + r);
        for (int i = 0; i < n; i++) {
            const float *xi = x + (int64_t)i * cols;
            float *yi = y + (int64_t)i * rows;
            int64_t r = packed8 ? r1 : r0;
            for (; r + 4 <= r1; r += 4)
                dot_1x4_direct(xi, w, r, yi + r);
            for (; r < r1; r++)
                yi[r] = dot_direct(xi, w, r);
            for (r = r0; r < r1; r++)
                yi[r] += bias_at(bias, r);
        }
    }
}

/* ---- float32 prefill on AVX-512F ----
 * The same float operations as dot_4x3 and dot_f32 per output element (an
 * 8-lane FMA accumulator in k order, hsum_tail's reduction, then the bias),
 * so results are bitwise those of the AVX2 kernels; what changes is that a
 * zmm register holds the 8-lane accumulators of TWO weight rows side by
 * side, and AVX-512's 32 registers hold a 6 x 8 tile: each 32-byte load of
 * activations feeds 8 weight rows instead of 3, which makes the tile
 * compute-bound where the 4x3 one waits on L2/L3 for the activations. */

#define T512F __attribute__((target("avx512f")))
#define F32_TILE 16 /* weight rows converted to float32 together */
#define F32_MR 6    /* input rows per register tile */

/* hsum_tail's reduction of an accumulator with no scalar tail. */
static inline float hsum8(__m256 s)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* mr input rows x 8 weight rows. wi: the 8 rows as float32, for each chunk
 * of 8 columns the 4 row pairs' [row 2j | row 2j+1] 16 floats. */
T512F static inline __attribute__((always_inline)) void
f32tile(const float *x, int64_t ldx, const float *wi, int64_t cols, const float *bv,
        float *y, int64_t ldy, int nvalid, const int mr)
{
    __m512 acc[F32_MR][4];
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            acc[i][j] = _mm512_setzero_ps();
    for (int64_t c = 0; c < cols; c += 8, wi += 64) {
        __m512 w0 = _mm512_loadu_ps(wi), w1 = _mm512_loadu_ps(wi + 16);
        __m512 w2 = _mm512_loadu_ps(wi + 32), w3 = _mm512_loadu_ps(wi + 48);
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            __m512 u = _mm512_castpd_ps(
                _mm512_broadcast_f64x4(_mm256_loadu_pd((const double *)(x + i * ldx + c))));
            acc[i][0] = _mm512_fmadd_ps(u, w0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(u, w1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(u, w2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(u, w3, acc[i][3]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m256 lo = _mm512_castps512_ps256(acc[i][j]);
            __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[i][j]), 1));
            if (2 * j < nvalid)
                y[i * ldy + 2 * j] = hsum8(lo) + bv[2 * j];
            if (2 * j + 1 < nvalid)
                y[i * ldy + 2 * j + 1] = hsum8(hi) + bv[2 * j + 1];
        }
}

#define F32K(M)                                                                       \
    T512F static void f32k_##M(const float *x, int64_t ldx, const float *wi, int64_t cols, \
                               const float *bv, float *y, int64_t ldy, int nvalid)       \
    {                                                                                 \
        f32tile(x, ldx, wi, cols, bv, y, ldy, nvalid, M);                             \
    }
F32K(1)
F32K(2)
F32K(3)
F32K(4)
F32K(5)
F32K(6)
typedef void (*f32k_fn)(const float *x, int64_t ldx, const float *wi, int64_t cols,
                        const float *bv, float *y, int64_t ldy, int nvalid);
static const f32k_fn f32k[F32_MR] = {f32k_1, f32k_2, f32k_3, f32k_4, f32k_5, f32k_6};

static size_t tile_stride(int64_t cols)
{
    return align64((size_t)F32_TILE * (size_t)cols * sizeof(float));
}

/* Thread `tid`'s float32 weight tile in SCR_TILE (tiles: the region). */
static float *thread_tile(char *tiles, int64_t cols, int tid)
{
    return (float *)(tiles + tile_stride(cols) * (size_t)tid);
}

/* Columns k..k+7 of row r (k a multiple of 8), in the weight's dtype. */
static const void *row_chunk(const be_weight *w, int64_t r, int64_t k)
{
    if (cpu_weight_layout(w) == CPU_PACKED8)
        return (const uint16_t *)w->data + packed_index(w->cols, r, k);
    return (const char *)w->data + (size_t)(r * w->cols + k) * dtype_size(w->dtype);
}

/* cpu_matmul for n >= 4 and cols % 8 == 0 on a CPU with AVX-512F. */
static void matmul_f32_512(cpu_backend *b, const float *x, const be_weight *w,
                           const be_weight *bias, int n, float *y)
{
    const int64_t rows = w->rows, cols = w->cols;
    const int64_t tiles = (rows + F32_TILE - 1) / F32_TILE;
    /* Work items: weight tiles x chunks of input rows; the input rows are
     * split only when there are too few tiles for the threads (k and v
     * projections on many cores). A thread converts a tile once for its
     * consecutive items on it. */
    int mchunk = n;
    while (mchunk > 4 * F32_MR && tiles * ((n + mchunk - 1) / mchunk) < 4 * b->n_threads)
        mchunk = (mchunk / 2 + F32_MR - 1) / F32_MR * F32_MR;
    const int64_t chunks = (n + mchunk - 1) / mchunk, items = tiles * chunks;
    char *scr = scratch(b, SCR_TILE, tile_stride(cols) * (size_t)b->n_threads);
    if (!scr)
        return;
#pragma omp parallel num_threads(b->n_threads)
    {
        float *wi = thread_tile(scr, cols, omp_get_thread_num());
        int64_t have = -1; /* the tile now in wi */
        float bv[F32_TILE];
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            const int64_t t = it / chunks, r0 = t * F32_TILE;
            const int nr = (int)(rows - r0 < F32_TILE ? rows - r0 : F32_TILE);
            for (int lr = 0; t != have && lr < F32_TILE; lr++) {
                float *d = wi + (lr / 8) * 8 * cols + (lr % 8 / 2) * 16 + (lr % 2) * 8;
                for (int64_t c = 0; c < cols; c += 8) /* wload8: weight_row_f32's floats */
                    _mm256_storeu_ps(d + c * 8, lr < nr ? wload8(row_chunk(w, r0 + lr, c),
                                                                 w->dtype, 0)
                                                        : _mm256_setzero_ps());
                bv[lr] = bias && lr < nr ? bias_at(bias, r0 + lr) : 0.0f;
            }
            have = t;
            const int i0 = (int)(it % chunks) * mchunk, i1 = i0 + mchunk < n ? i0 + mchunk : n;
            for (int g = 0; g * 8 < nr; g++)
                for (int i = i0; i < i1; i += F32_MR) {
                    const int mr = i1 - i < F32_MR ? i1 - i : F32_MR;
                    f32k[mr - 1](x + (int64_t)i * cols, cols, wi + g * 8 * cols, cols,
                                 bv + g * 8, y + (int64_t)i * rows + r0 + g * 8, rows,
                                 nr - g * 8);
                }
        }
    }
}

/* SCR_XBUF for n input rows of cols columns (cpu_matmul_pairs' xbuf). */
static size_t xbuf_bytes(int64_t n, int64_t cols)
{
    return (size_t)n * 2 * (size_t)((cols + 1) / 2) * sizeof(uint32_t);
}

static void cpu_matmul(be_backend *bk, const float *x, const be_weight *w,
                       const be_weight *bias, int n, float *y)
{
    cpu_backend *b = (cpu_backend *)bk;
    const int64_t rows = w->rows, cols = w->cols;
    const cpu_layout lay = cpu_weight_layout(w);
    if (lay == CPU_PAIRS) {
        uint32_t *xbuf = scratch(b, SCR_XBUF, xbuf_bytes(n, cols));
        if (xbuf)
            cpu_matmul_pairs(b->n_threads, b->bf16_native, xbuf, x, w, bias, n, y);
        return;
    }
    /* Below 4 rows the float32 tile costs more than it saves; on AVX2, a
     * packed weight's direct path streams it at memory speed up to 7 rows,
     * where converting it to float32 for the tiles took longer (24 layers'
     * matmuls at 4 rows: 57-64 ms against 78-121; equal at 8) */
    if (n < (lay == CPU_PACKED8 && !b->f32_512 ? 8 : 4)) {
        matmul_direct(b, x, w, bias, n, y);
        return;
    }
    if (b->f32_512 && cols % 8 == 0) {
        matmul_f32_512(b, x, w, bias, n, y);
        return;
    }
    const int64_t tiles = (rows + ROW_TILE - 1) / ROW_TILE;
    char *scr = scratch(b, SCR_TILE, tile_stride(cols) * (size_t)b->n_threads);
    if (!scr)
        return;
    /* Decode steps have few input rows: split finely so every thread streams
     * its share of the weights; the order of each dot product is unchanged. */
#pragma omp parallel num_threads(b->n_threads)
    {
        float *wf = thread_tile(scr, cols, omp_get_thread_num()); /* ROW_TILE rows */
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tiles; t++) {
            int64_t r0 = t * ROW_TILE, r1 = r0 + ROW_TILE < rows ? r0 + ROW_TILE : rows;
            for (int64_t r = r0; r < r1; r++)
                weight_row_f32(w, r, wf + (r - r0) * cols);
            float bv[ROW_TILE];
            for (int64_t r = r0; r < r1; r++)
                bv[r - r0] = 0.0f;
            if (bias) {
                for (int64_t r = r0; r < r1; r++) {
                    if (bias->dtype == DT_F32)
                        bv[r - r0] = ((const float *)bias->data)[r];
                    else if (bias->dtype == DT_BF16)
                        bv[r - r0] = bf16_to_f32(((const uint16_t *)bias->data)[r]);
                    else
                        bv[r - r0] = f16_to_f32(((const uint16_t *)bias->data)[r]);
                }
            }
            int i = 0;
            for (; i + 4 <= n; i += 4) {
                const float *xi = x + (int64_t)i * cols;
                float *yi = y + (int64_t)i * rows;
                int64_t r = r0;
                for (; r + 3 <= r1; r += 3)
                    dot_4x3(xi, cols, wf + (r - r0) * cols, cols, cols, yi + r, rows);
                for (; r < r1; r++)
                    for (int k = 0; k < 4; k++)
                        yi[k * rows + r] = dot_f32(xi + k * cols, wf + (r - r0) * cols, cols);
                for (int k = 0; k < 4; k++)
                    for (r = r0; r < r1; r++)
                        yi[k * rows + r] += bv[r - r0];
            }
            for (; i < n; i++) {
                const float *xi = x + (int64_t)i * cols;
                float *yi = y + (int64_t)i * rows;
                int64_t r = r0;
                for (; r + 4 <= r1; r += 4)
                    dot_1x4(xi, wf + (r - r0) * cols, cols, cols, yi + r);
                for (; r < r1; r++)
                    yi[r] = dot_f32(xi, wf + (r - r0) * cols, cols);
                for (r = r0; r < r1; r++)
                    yi[r] += bv[r - r0];
            }
        }
    }
}

static void cpu_embed(be_backend *b, const be_weight *table, const int32_t *ids, int n,
                      float *out)
{
    (void)b;
    for (int i = 0; i < n; i++)
        weight_row_f32(table, ids[i], out + (int64_t)i * table->cols);
}

/* HF RMSNorm: x * rsqrt(mean(x^2) + eps) * weight, in float32. */
static void cpu_rmsnorm(be_backend *bk, const float *x, const be_weight *w, float eps,
                        int rows, int cols, float *out)
{
    cpu_backend *b = (cpu_backend *)bk;
    float *wf = scratch(b, SCR_NORM, (size_t)cols * sizeof(float));
    if (!wf)
        return;
    weight_row_f32(w, 0, wf);
#pragma omp parallel for num_threads(b->n_threads) schedule(static) if (rows > 64)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * cols;
        float *o = out + (int64_t)r * cols;
        float ss = 0.0f;
        for (int i = 0; i < cols; i++)
            ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)cols + eps);
        for (int i = 0; i < cols; i++)
            o[i] = wf[i] * (xr[i] * inv);
    }
}

/* Neox-style rotary embedding (rotate_half), as HF Llama/Qwen apply it. */
static void cpu_rope(be_backend *bk, float *x, int n, int heads, int head_dim,
                     const be_rope *r, const int32_t *pos)
{
    cpu_backend *b = (cpu_backend *)bk;
    const int half = r->rot_dim / 2;
#pragma omp parallel for num_threads(b->n_threads) schedule(static) if (n > 16)
    for (int t = 0; t < n; t++) {
        float cs[512], sn[512];
        for (int i = 0; i < half && i < 512; i++) {
            float ang = (float)pos[t] * r->inv_freq[i];
            cs[i] = cosf(ang) * r->mscale;
            sn[i] = sinf(ang) * r->mscale;
        }
        for (int h = 0; h < heads; h++) {
            float *v = x + ((int64_t)t * heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                float a = v[i], c = v[i + half];
                v[i] = a * cs[i] - c * sn[i];
                v[i + half] = c * cs[i] + a * sn[i];
            }
        }
    }
}

static void cpu_kv_store(be_backend *b, const float *k, const float *v, int n, int kv_dim,
                         const int32_t *slot, float *k_cache, float *v_cache)
{
    (void)b;
    for (int t = 0; t < n; t++) {
        memcpy(k_cache + (int64_t)slot[t] * kv_dim, k + (int64_t)t * kv_dim,
               (size_t)kv_dim * sizeof(float));
        memcpy(v_cache + (int64_t)slot[t] * kv_dim, v + (int64_t)t * kv_dim,
               (size_t)kv_dim * sizeof(float));
    }
}

/* Causal attention over the paged cache: row t of sequence s attends to its
 * sequence's positions 0..pos[t]. One (row, head) pair per work item. */
/* Attention weights from raw scores and their maximum, in place. */
/* exp of 8 floats x <= 0: Cephes' expf polynomial after x = n ln2 + r,
 * relative error about 2e-7; below -87.3 (and -inf) it gives 0. For the
 * attention softmax and the log-sum-exp; the draw's weights use libm's expf
 * instead, the float operations of smp_probs, so the CPU draws what the host
 * sampler draws. */
static inline __m256 exp8_nonpos(__m256 x)
{
    __m256 lo = _mm256_set1_ps(-87.3f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
                                  23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

/* score[j] = exp(score[j] - mx) / sum, 8 at a time: libm's expf one by one
 * was a third of a long prompt's attention time (2,048 tokens: ~700 M of
 * them). The last partial 8 go through the same polynomial, padded with
 * -inf, so every element's value depends on its score alone. */
static void softmax_from_max(float *score, int n, float mx)
{
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 sum8 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 e = exp8_nonpos(_mm256_sub_ps(_mm256_loadu_ps(score + j), vmx));
        _mm256_storeu_ps(score + j, e);
        sum8 = _mm256_add_ps(sum8, e);
    }
    if (j < n) {
        float t[8];
        for (int i = 0; i < 8; i++)
            t[i] = j + i < n ? score[j + i] : -INFINITY;
        const __m256 e = exp8_nonpos(_mm256_sub_ps(_mm256_loadu_ps(t), vmx));
        _mm256_storeu_ps(t, e);
        sum8 = _mm256_add_ps(sum8, e);
        memcpy(score + j, t, (size_t)(n - j) * sizeof(float));
    }
    const __m256 inv = _mm256_set1_ps(1.0f / hsum8(sum8));
    for (j = 0; j + 8 <= n; j += 8)
        _mm256_storeu_ps(score + j, _mm256_mul_ps(_mm256_loadu_ps(score + j), inv));
    for (; j < n; j++)
        score[j] *= _mm256_cvtss_f32(inv);
}

/* acc[d] = fma(p[j], v[j * ldv + d], acc[d]) for j = 0, 1, ... in that
 * order: per element the scalar fmaf loop, 8 dims at a time and 64 held in
 * registers across the rows. */
static void weighted_rows(float *acc, int hd, const float *p, int n, const float *v,
                          int64_t ldv)
{
    int d0 = 0;
    for (; d0 + 64 <= hd; d0 += 64) {
        __m256 a[8];
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++)
            a[u] = _mm256_loadu_ps(acc + d0 + u * 8);
        for (int j = 0; j < n; j++) {
            const __m256 pj = _mm256_set1_ps(p[j]);
            const float *vj = v + j * ldv + d0;
#pragma GCC unroll 8
            for (int u = 0; u < 8; u++)
                a[u] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + u * 8), a[u]);
        }
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++)
            _mm256_storeu_ps(acc + d0 + u * 8, a[u]);
    }
    for (; d0 + 8 <= hd; d0 += 8) {
        __m256 a = _mm256_loadu_ps(acc + d0);
        for (int j = 0; j < n; j++)
            a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(v + j * ldv + d0), a);
        _mm256_storeu_ps(acc + d0, a);
    }
    for (; d0 < hd; d0++)
        for (int j = 0; j < n; j++)
            acc[d0] = fmaf(p[j], v[j * ldv + d0], acc[d0]);
}

#define ATT_TOKENS 8 /* a sequence's query tokens that one attention item takes */

/* Scores of one token's `group` query heads (qg) against keys kb[0..m): 4
 * heads x 3 keys at a time (dot_4x3), each key loaded once for 4 heads;
 * every score is dot_f32's however the heads are grouped. */
static void group_scores(const float *qg, int group, int head_dim, const float *kb, int kv_dim,
                         int m, float *s, int64_t lds)
{
    int g = 0;
    for (; g + 4 <= group; g += 4) {
        float *sg = s + (int64_t)g * lds;
        int i = 0;
        for (; i + 3 <= m; i += 3)
            dot_4x3(qg + (int64_t)g * head_dim, head_dim, kb + (int64_t)i * kv_dim, kv_dim,
                    head_dim, sg + i, lds);
        for (; i < m; i++)
            for (int k = 0; k < 4; k++)
                sg[(int64_t)k * lds + i] =
                    dot_f32(qg + (int64_t)(g + k) * head_dim, kb + (int64_t)i * kv_dim, head_dim);
    }
    for (; g < group; g++) {
        const float *qv = qg + (int64_t)g * head_dim;
        float *sg = s + (int64_t)g * lds;
        int i = 0;
        for (; i + 4 <= m; i += 4)
            dot_1x4(qv, kb + (int64_t)i * kv_dim, kv_dim, head_dim, sg + i);
        for (; i < m; i++)
            sg[i] = dot_f32(qv, kb + (int64_t)i * kv_dim, head_dim);
    }
}

/* The keys of the block that starts at key j which token t attends to:
 * up to a block, fewer in its last one, none past its position. */
static inline int block_keys(const be_attn_layout *l, int t, int j)
{
    const int left = l->pos[t] + 1 - j;
    return left < l->block_size ? left : l->block_size;
}

/* An item is up to ATT_TOKENS consecutive query tokens of one sequence and
 * one KV head, with the query heads that share it (all of them, or a part
 * where there would be fewer items than threads, as in a one-sequence
 * decode step): each block of keys and of values is read once for all
 * their rows while it is in L1 (one token and head at a time read a long
 * prompt's whole K and V from L3 per row). Per row it is the same work in
 * the same order as one row alone: the scores (dot_f32's), the softmax,
 * then the value rows block after block into the row's accumulator, so
 * results do not depend on the batch or on the items. */
static void cpu_attention(be_backend *bk, const float *q, const float *k_cache,
                          const float *v_cache, int heads, int kv_heads, int head_dim,
                          float scale, const be_attn_layout *l, float *out)
{
    cpu_backend *b = (cpu_backend *)bk;
    const int group = heads / kv_heads, kv_dim = kv_heads * head_dim;
    int max_ctx = 1, n_chunks = 0;
    for (int s = 0; s < l->n_seqs; s++) {
        if (l->ctx_len[s] > max_ctx)
            max_ctx = l->ctx_len[s];
        n_chunks += (l->q_start[s + 1] - l->q_start[s] + ATT_TOKENS - 1) / ATT_TOKENS;
    }
    /* a KV head's query heads in parts only until every thread has an item:
     * each part reads the head's K and V again (2 parts at 2 threads and 2 KV
     * heads: 1.5 % slower decode at a 2,048-token context, bench/RESULTS.md) */
    int parts = 1;
    while (parts < group && (int64_t)n_chunks * kv_heads * parts < b->n_threads)
        parts++;
    const int per_part = (group + parts - 1) / parts, rows_max = ATT_TOKENS * per_part;
    /* per thread: scores [rows_max][max_ctx], then acc [rows_max][head_dim] */
    const size_t scores_bytes = align64((size_t)rows_max * (size_t)max_ctx * sizeof(float));
    const size_t per_thread = scores_bytes + align64((size_t)rows_max * head_dim * sizeof(float));
    int *chunk_seq = scratch(b, SCR_INDEX, (size_t)(n_chunks ? n_chunks : 1) * 2 * sizeof(int));
    char *scr = scratch(b, SCR_ATT, per_thread * (size_t)b->n_threads);
    if (!chunk_seq || !scr)
        return;
    for (int s = 0, c = 0; s < l->n_seqs; s++)
        for (int t = l->q_start[s]; t < l->q_start[s + 1]; t += ATT_TOKENS, c++) {
            chunk_seq[2 * c] = s;
            chunk_seq[2 * c + 1] = t;
        }
    const int64_t items = (int64_t)n_chunks * kv_heads * parts;
#pragma omp parallel num_threads(b->n_threads)
    {
        float *scores = (float *)(scr + per_thread * (size_t)omp_get_thread_num());
        float *acc = (float *)((char *)scores + scores_bytes);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            /* last chunks first: they have the most keys, and taken last
             * they would leave one thread finishing alone */
            const int c = n_chunks - 1 - (int)(it / ((int64_t)kv_heads * parts));
            const int kvh = (int)(it / parts % kv_heads), part = (int)(it % parts);
            const int g0 = part * per_part;
            const int ng = group - g0 < per_part ? group - g0 : per_part;
            if (ng <= 0)
                continue;
            const int h0 = kvh * group + g0; /* the item's first query head */
            const int s = chunk_seq[2 * c], t0 = chunk_seq[2 * c + 1];
            const int t1 = t0 + ATT_TOKENS < l->q_start[s + 1] ? t0 + ATT_TOKENS
                                                                 : l->q_start[s + 1];
            const int32_t *bt = l->block_table + (int64_t)s * l->max_blocks;
            int keys_max = 0;
            for (int t = t0; t < t1; t++)
                if (l->pos[t] + 1 > keys_max)
                    keys_max = l->pos[t] + 1;
            for (int j = 0, blk = 0; j < keys_max; j += l->block_size, blk++) {
                const float *kb = k_cache + (int64_t)bt[blk] * l->block_size * kv_dim +
                                  kvh * head_dim;
                for (int t = t0; t < t1; t++) {
                    const int m = block_keys(l, t, j);
                    if (m > 0)
                        group_scores(q + ((int64_t)t * heads + h0) * head_dim, ng, head_dim, kb,
                                     kv_dim, m, scores + (int64_t)(t - t0) * ng * max_ctx + j,
                                     max_ctx);
                }
            }
            for (int t = t0; t < t1; t++)
                for (int g = 0; g < ng; g++) {
                    const int n_keys = l->pos[t] + 1;
                    float *score = scores + ((int64_t)(t - t0) * ng + g) * max_ctx;
                    float mx = -INFINITY;
                    for (int j = 0; j < n_keys; j++) {
                        float sc = score[j] * scale;
                        score[j] = sc;
                        if (sc > mx)
                            mx = sc;
                    }
                    softmax_from_max(score, n_keys, mx);
                }
            memset(acc, 0, (size_t)(t1 - t0) * ng * head_dim * sizeof(float));
            for (int j = 0, blk = 0; j < keys_max; j += l->block_size, blk++) {
                const float *vb = v_cache + (int64_t)bt[blk] * l->block_size * kv_dim +
                                  kvh * head_dim;
                for (int t = t0; t < t1; t++) {
                    const int m = block_keys(l, t, j);
                    for (int g = 0; m > 0 && g < ng; g++) {
                        const int64_t r = (int64_t)(t - t0) * ng + g;
                        weighted_rows(acc + r * head_dim, head_dim, scores + r * max_ctx + j, m,
                                      vb, kv_dim);
                    }
                }
            }
            for (int t = t0; t < t1; t++)
                memcpy(out + ((int64_t)t * heads + h0) * head_dim,
                       acc + (int64_t)(t - t0) * ng * head_dim,
                       (size_t)ng * head_dim * sizeof(float));
        }
    }
}

static void cpu_silu_mul(be_backend *bk, const float *gate, const float *up, size_t n,
                         float *out)
{
    cpu_backend *b = (cpu_backend *)bk;
    const size_t blocks = (n + 63) / 64;
    /* libm's expf one at a time (its bits are part of the results), the
     * division and product 8 at a time: the same IEEE operations. */
#pragma omp parallel for num_threads(b->n_threads) schedule(static) if (n > 65536)
    for (size_t t = 0; t < blocks; t++) {
        const size_t i0 = t * 64, i1 = i0 + 64 < n ? i0 + 64 : n;
        float e[64];
        for (size_t i = i0; i < i1; i++)
            e[i - i0] = expf(-gate[i]);
        size_t i = i0;
        for (; i + 8 <= i1; i += 8) {
            __m256 g = _mm256_loadu_ps(gate + i);
            __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), _mm256_loadu_ps(e + (i - i0)));
            _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, d), _mm256_loadu_ps(up + i)));
        }
        for (; i < i1; i++)
            out[i] = gate[i] / (1.0f + e[i - i0]) * up[i];
    }
}

static void cpu_add(be_backend *b, float *x, const float *y, size_t n)
{
    (void)b;
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

static void cpu_gather_rows(be_backend *b, const float *x, int cols, const int32_t *rows,
                            int n, float *out)
{
    (void)b;
    for (int i = 0; i < n; i++)
        memcpy(out + (int64_t)i * cols, x + (int64_t)rows[i] * cols,
               (size_t)cols * sizeof(float));
}

/* torch's LayerNorm: mean, then the biased variance of (x - mean), both in
 * float32. */
static void cpu_layernorm(be_backend *bk, const float *x, const be_weight *w,
                          const be_weight *bias, float eps, int rows, int cols, float *out)
{
    cpu_backend *b = (cpu_backend *)bk;
    float *wf = scratch(b, SCR_NORM, (size_t)cols * 2 * sizeof(float));
    if (!wf)
        return;
    float *bf = wf + cols;
    weight_row_f32(w, 0, wf);
    if (bias)
        weight_row_f32(bias, 0, bf);
    else
        memset(bf, 0, (size_t)cols * sizeof(float));
#pragma omp parallel for num_threads(b->n_threads) schedule(static) if (rows > 64)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * cols;
        float *o = out + (int64_t)r * cols;
        float mean = 0.0f, var = 0.0f;
        for (int i = 0; i < cols; i++)
            mean += xr[i];
        mean /= (float)cols;
        for (int i = 0; i < cols; i++)
            var += (xr[i] - mean) * (xr[i] - mean);
        float inv = 1.0f / sqrtf(var / (float)cols + eps);
        for (int i = 0; i < cols; i++)
            o[i] = (xr[i] - mean) * inv * wf[i] + bf[i];
    }
}

static void cpu_gelu(be_backend *bk, const float *x, size_t n, int tanh_approx, float *out)
{
    cpu_backend *b = (cpu_backend *)bk;
#pragma omp parallel for num_threads(b->n_threads) schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (tanh_approx)
            out[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
        else
            out[i] = 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
    }
}

static void cpu_tanh(be_backend *b, const float *x, size_t n, float *out)
{
    (void)b;
    for (size_t i = 0; i < n; i++)
        out[i] = tanhf(x[i]);
}

/* One (row, head) pair per work item; keys are the rows of the same
 * sequence, all of them (no causal mask). */
static void cpu_attention_full(be_backend *bk, const float *q, const float *k, const float *v,
                               int heads, int head_dim, float scale, int n_seqs,
                               const int32_t *q_start, float *out)
{
    cpu_backend *b = (cpu_backend *)bk;
    const int n = q_start[n_seqs];
    int max_len = 1;
    for (int s = 0; s < n_seqs; s++)
        if (q_start[s + 1] - q_start[s] > max_len)
            max_len = q_start[s + 1] - q_start[s];
    /* per thread: score [max_len], then acc [head_dim] */
    const size_t score_bytes = align64((size_t)max_len * sizeof(float));
    const size_t per_thread = score_bytes + align64((size_t)head_dim * sizeof(float));
    int *row_seq = scratch(b, SCR_INDEX, (size_t)(n ? n : 1) * sizeof(int));
    char *scr = scratch(b, SCR_ATT, per_thread * (size_t)b->n_threads);
    if (!row_seq || !scr)
        return;
    for (int s = 0; s < n_seqs; s++)
        for (int t = q_start[s]; t < q_start[s + 1]; t++)
            row_seq[t] = s;
    const int64_t items = (int64_t)n * heads, stride = (int64_t)heads * head_dim;
#pragma omp parallel num_threads(b->n_threads)
    {
        float *score = (float *)(scr + per_thread * (size_t)omp_get_thread_num());
        float *acc = (float *)((char *)score + score_bytes);
#pragma omp for schedule(dynamic, 4)
        for (int64_t it = 0; it < items; it++) {
            int t = (int)(it / heads), h = (int)(it % heads), s = row_seq[t];
            int j0 = q_start[s], len = q_start[s + 1] - j0;
            const float *qv = q + t * stride + h * head_dim;
            float mx = -INFINITY;
            for (int j = 0; j < len; j++) {
                float sc = dot_f32(qv, k + (j0 + j) * stride + h * head_dim, head_dim) * scale;
                score[j] = sc;
                if (sc > mx)
                    mx = sc;
            }
            softmax_from_max(score, len, mx);
            memset(acc, 0, (size_t)head_dim * sizeof(float));
            weighted_rows(acc, head_dim, score, len, v + j0 * stride + h * head_dim, stride);
            memcpy(out + t * stride + h * head_dim, acc, (size_t)head_dim * sizeof(float));
        }
    }
}

/* ---- sampling ---- */

/* log-sum-exp of l[0..n) whose max is mx: float terms, float64 sums */
static double log_sum_exp(const float *l, int n, float mx)
{
    __m256 vmx = _mm256_set1_ps(mx);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 w = exp8_nonpos(_mm256_sub_ps(_mm256_loadu_ps(l + i), vmx));
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(w)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1)));
    }
    double z[4];
    _mm256_storeu_pd(z, _mm256_add_pd(s0, s1));
    double sum = (z[0] + z[1]) + (z[2] + z[3]);
    for (; i < n; i++)
        sum += expf(l[i] - mx);
    return mx + log(sum);
}

/* Inserts l[i] into o's top list (n entries of at most k) if it belongs. */
static inline void top_insert(be_sample_out *o, int *n, int k, float v, int32_t i)
{
    if (*n == k && !(v > o->top_vals[k - 1]))
        return;
    int j = *n < k ? (*n)++ : k - 1;
    while (j > 0 && v > o->top_vals[j - 1]) {
        o->top_vals[j] = o->top_vals[j - 1];
        o->top_ids[j] = o->top_ids[j - 1];
        j--;
    }
    o->top_vals[j] = v;
    o->top_ids[j] = i;
}

/* One row of sample_rows (backend.h). The draw's weights are recomputed
 * rather than stored: expf of the same float gives the same float, and the
 * row needs no scratch. */
static void sample_one(const float *l, int vocab, const be_sample_row *in, be_sample_out *o)
{
    float mx = l[0];
    for (int i = 1; i < vocab; i++)
        mx = l[i] > mx ? l[i] : mx;
    int best = 0;
    while (best < vocab - 1 && !(l[best] == mx))
        best++;
    o->lse = (float)log_sum_exp(l, vocab, mx);
    /* top list by insertion; once it is full, blocks of 8 with nothing
     * above its last value (nearly all of them) are skipped whole */
    int k = vocab < BE_TOPK ? vocab : BE_TOPK, n = 0, i = 0;
    for (; i < vocab && n < k; i++)
        top_insert(o, &n, k, l[i], i);
    for (; i + 8 <= vocab; i += 8) {
        __m256 above = _mm256_cmp_ps(_mm256_loadu_ps(l + i), _mm256_set1_ps(o->top_vals[k - 1]),
                                     _CMP_GT_OQ);
        if (!_mm256_movemask_ps(above))
            continue;
        for (int j = i; j < i + 8; j++)
            top_insert(o, &n, k, l[j], j);
    }
    for (; i < vocab; i++)
        top_insert(o, &n, k, l[i], i);
    o->n_top = n;
    o->token = best;
    o->total = 0;
    if (in->temperature >= 1e-5f) {
        /* the same float operations as engine/sampler.c's smp_probs */
        float t = in->temperature, min_p = in->min_p;
        double total = 0, acc = 0;
        for (int j = 0; j < vocab; j++) {
            float w = expf((l[j] - mx) / t);
            total += w < min_p ? 0 : w;
        }
        int last = -1;
        for (int j = 0; j < vocab; j++) {
            float w = expf((l[j] - mx) / t);
            float p = w < min_p ? 0 : (float)(w / total);
            if (p <= 0)
                continue;
            acc += p;
            last = j;
            if (acc > in->u)
                break;
        }
        o->token = last >= 0 ? last : best;
        o->total = total;
    }
    o->token_logit = l[o->token];
}

void be_sample_rows_host(const float *logits, int n, int vocab, const be_sample_row *in,
                         be_sample_out *out)
{
    for (int r = 0; r < n; r++)
        sample_one(logits + (size_t)r * vocab, vocab, in + r, out + r);
}

static int cpu_sample_rows(be_backend *bk, const float *logits, int n, int vocab,
                           const be_sample_row *in, be_sample_out *out, inferd_error *e)
{
    cpu_backend *b = (cpu_backend *)bk;
    (void)e;
    /* rows are independent: each row's result is the same on any thread */
#pragma omp parallel for num_threads(b->n_threads) schedule(dynamic, 1) if (n > 1)
    for (int r = 0; r < n; r++)
        sample_one(logits + (size_t)r * vocab, vocab, in + r, out + r);
    return 0;
}

/* The regions a step of max_rows rows needs besides the ones cpu_weight
 * sized: the attention index arrays and, at bfloat16 precision, the
 * rounded activations of the widest pair-panel weight. Attention's scores
 * depend on the context and grow in the op. */
static int cpu_reserve(be_backend *bk, int max_rows, inferd_error *e)
{
    cpu_backend *b = (cpu_backend *)bk;
    const size_t rows = max_rows > 0 ? (size_t)max_rows : 1;
    if (!scratch(b, SCR_INDEX, rows * 2 * sizeof(int)) ||
        (b->pair_cols && !scratch(b, SCR_XBUF, xbuf_bytes((int64_t)rows, b->pair_cols))))
        return be_impl_report(&b->base, e);
    return 0;
}

static const be_vtable cpu_vtable = {
    .name = "cpu",
    .free = cpu_free,
    .alloc = cpu_alloc,
    .dealloc = cpu_dealloc,
    .weight = cpu_weight,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .silu_mul = cpu_silu_mul,
    .add = cpu_add,
    .gather_rows = cpu_gather_rows,
    .layernorm = cpu_layernorm,
    .gelu = cpu_gelu,
    .tanh = cpu_tanh,
    .attention_full = cpu_attention_full,
    .sample_rows = cpu_sample_rows,
    .reserve = cpu_reserve,
    .host = 1,
};

be_backend *be_cpu_new(int n_threads, inferd_error *e)
{
    cpu_backend *b = calloc(1, sizeof *b);
    if (!b) {
        err_set(e, "out of memory");
        return NULL;
    }
    b->base.vt = &cpu_vtable;
    b->scr_alloc = default_scr_alloc;
    b->n_threads = n_threads > 0 ? n_threads : omp_get_num_procs();
    b->bf16_native = cpu_bf16_native();
    b->f32_512 = cpu_avx512_usable();
    return &b->base;
}
