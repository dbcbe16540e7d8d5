/* backend/cpu: --matmul-precision bfloat16. Activations rounded to bf16
 * once per matmul, bf16 weights in pair panels (see internal.h), products
 * summed by VDPBF16PS where the CPU has AVX512_BF16 (compiled for it here
 * only, behind a runtime check, so the binary stays x86-64-v3) and by an
 * AVX2 emulation of the same float operations elsewhere. */
#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/internal.h"

#define PANEL 64 /* rows per panel: 4 zmm of 16 output lanes */
#define MR 6     /* input rows per register tile: 6 x 4 accumulators + 4 weights */
#define MCHUNK 60 /* input rows per work item at most: a multiple of MR and MR2 */

int cpu_avx512_usable(void)
{
    const char *off = getenv("INFERD_CPU_NO_AVX512");
    if (off && *off && strcmp(off, "0") != 0)
        return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

int cpu_bf16_native(void)
{
    return cpu_avx512_usable() && __builtin_cpu_supports("avx512bf16") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

static int64_t pad16(int64_t rows)
{
    return (rows + 15) & ~(int64_t)15;
}

size_t cpu_pairs_bytes(int64_t rows, int64_t cols)
{
    return (size_t)pad16(rows) * (size_t)((cols + 1) / 2) * 4;
}

/* Width in rows of panel p (the last one may be narrower). */
static int panel_width(int64_t rows, int64_t p)
{
    int64_t left = pad16(rows) - p * PANEL;
    return (int)(left < PANEL ? left : PANEL);
}

void cpu_pairs_pack(const uint16_t *src, int64_t rows, int64_t cols, uint16_t *dst,
                    int n_threads)
{
    const int64_t kp = (cols + 1) / 2, panels = (pad16(rows) + PANEL - 1) / PANEL;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t p = 0; p < panels; p++) {
        const int wd = panel_width(rows, p);
        uint16_t *d = dst + p * PANEL * kp * 2;
        for (int lr = 0; lr < wd; lr++) {
            const int64_t r = p * PANEL + lr;
            const uint16_t *s = src + r * cols;
            for (int64_t q = 0; q < kp; q++) {
                uint16_t *o = d + (q * wd + lr) * 2;
                o[0] = r < rows ? s[2 * q] : 0;
                o[1] = r < rows && 2 * q + 1 < cols ? s[2 * q + 1] : 0;
            }
        }
    }
}

void cpu_pairs_row_f32(const be_weight *w, int64_t r, float *out)
{
    const int64_t kp = (w->cols + 1) / 2, p = r / PANEL;
    const int wd = panel_width(w->rows, p);
    const uint16_t *d = (const uint16_t *)w->data + p * PANEL * kp * 2 + (r - p * PANEL) * 2;
    for (int64_t q = 0; q < kp; q++) {
        out[2 * q] = bf16_to_f32(d[q * wd * 2]);
        if (2 * q + 1 < w->cols)
            out[2 * q + 1] = bf16_to_f32(d[q * wd * 2 + 1]);
    }
}

/* 8 floats rounded to bf16, nearest even (what f32_to_bf16 does, NaN
 * included): each 32-bit lane holds the bf16 in its low half. */
static inline __m256i round8(__m256 v)
{
    const __m256i u = _mm256_castps_si256(v), hi = _mm256_srli_epi32(u, 16);
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)),
                         _mm256_and_si256(hi, _mm256_set1_epi32(1))),
        16);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                     _mm256_set1_epi32(0x7f800000));
    return _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)), nan);
}

/* One row of activations to bf16 pairs; an odd last column is paired with 0. */
static void round_row(const float *x, int64_t cols, uint32_t *out)
{
    uint16_t *o = (uint16_t *)out;
    int64_t k = 0;
    for (; k + 8 <= cols; k += 8) {
        __m256i r = round8(_mm256_loadu_ps(x + k));
        _mm_storeu_si128((__m128i *)(o + k),
                         _mm_packus_epi32(_mm256_castsi256_si128(r),
                                          _mm256_extracti128_si256(r, 1)));
    }
    for (; k < cols; k++)
        o[k] = f32_to_bf16(x[k]);
    if (cols & 1)
        o[cols] = 0;
}

/* The same rounding for the AVX2 path, kept as float32 and each pair stored
 * odd element first (the order the products are added in), so the kernel
 * broadcasts them straight from memory. */
static void split_row(const float *x, int64_t cols, float *out)
{
    int64_t k = 0;
    for (; k + 8 <= cols; k += 8) {
        __m256 f = _mm256_castsi256_ps(_mm256_slli_epi32(round8(_mm256_loadu_ps(x + k)), 16));
        _mm256_storeu_ps(out + k, _mm256_permute_ps(f, 0xb1));
    }
    for (; k < cols; k++)
        out[k ^ 1] = bf16_to_f32(f32_to_bf16(x[k]));
    if (cols & 1)
        out[cols - 1] = 0.0f;
}

/* ---- AVX512_BF16 ---- */

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* mr input rows x one panel of nr*16 weight rows over all kp column pairs:
 * mr*nr accumulators, each lane one output element. */
T512 static inline __attribute__((always_inline)) void
tile512(const uint32_t *x, int64_t ldx, const uint16_t *w, int64_t kp, const float *bv,
        float *y, int64_t ldy, int nvalid, const int mr, const int nr)
{
    __m512 acc[MR][4];
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm512_setzero_ps();
    const int64_t step = (int64_t)nr * 32;
    for (int64_t q = 0; q < kp; q++, w += step) {
        __m512i wv[4];
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            wv[j] = _mm512_loadu_si512(w + j * 32);
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            __m512i xb = _mm512_set1_epi32((int)x[i * ldx + q]);
#pragma GCC unroll 4
            for (int j = 0; j < nr; j++)
                acc[i][j] = _mm512_dpbf16_ps(acc[i][j], (__m512bh)wv[j], (__m512bh)xb);
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        int left = nvalid - j * 16;
        __mmask16 m = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
        __m512 b = _mm512_loadu_ps(bv + j * 16);
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++)
            _mm512_mask_storeu_ps(y + i * ldy + j * 16, m, _mm512_add_ps(acc[i][j], b));
    }
}

#define K512(M, N)                                                                     \
    T512 static void k512_##M##_##N(const uint32_t *x, int64_t ldx, const uint16_t *w, \
                                    int64_t kp, const float *bv, float *y, int64_t ldy, \
                                    int nvalid)                                         \
    {                                                                                   \
        tile512(x, ldx, w, kp, bv, y, ldy, nvalid, M, N);                               \
    }
#define K512_ROW(M) K512(M, 1) K512(M, 2) K512(M, 3) K512(M, 4)
K512_ROW(1)
K512_ROW(2)
K512_ROW(3)
K512_ROW(4)
K512_ROW(5)
K512_ROW(6)

typedef void (*tile_fn)(const uint32_t *x, int64_t ldx, const uint16_t *w, int64_t kp,
                        const float *bv, float *y, int64_t ldy, int nvalid);
#define K512_NAMES(M) {k512_##M##_1, k512_##M##_2, k512_##M##_3, k512_##M##_4}
static const tile_fn tiles512[MR][4] = {K512_NAMES(1), K512_NAMES(2), K512_NAMES(3),
                                        K512_NAMES(4), K512_NAMES(5), K512_NAMES(6)};

/* ---- AVX2: the same chain with FMAs (products of two bf16 are exact in
 * float32, so fma(w, x, acc) rounds once, like VDPBF16PS's each step), run
 * under MXCSR DAZ+FTZ and round-to-nearest like VDPBF16PS. ---- */

#define MR2 5 /* input rows per AVX2 tile: 10 accumulators + 4 weights + 2 inputs */
#define SMALL_N 16 /* input rows up to which the AVX2 path takes them one by one */
#define QBLOCK 64 /* column pairs: 16 KiB of a 64-row panel */

/* The first `left` (all 8 when left >= 8) lanes of t to y. */
static inline void store8(float *y, __m256 t, int left)
{
    if (left >= 8) {
        _mm256_storeu_ps(y, t);
    } else {
        float tmp[8];
        _mm256_storeu_ps(tmp, t);
        memcpy(y, tmp, (size_t)left * sizeof(float));
    }
}

/* m input rows (x split as above, ldx floats apart) x 16 weight rows. */
static inline __attribute__((always_inline)) void
tile256(const float *x, int64_t ldx, const uint16_t *w, int64_t step, int64_t kp,
        const float *bv, float *y, int64_t ldy, int nvalid, const int m)
{
    const __m256i hi_mask = _mm256_set1_epi32((int)0xffff0000u);
    __m256 acc[MR2][2];
#pragma GCC unroll 8
    for (int i = 0; i < m; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t q = 0; q < kp; q++, w += step) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)w);
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(w + 16));
        __m256 o0 = _mm256_castsi256_ps(_mm256_and_si256(v0, hi_mask));
        __m256 e0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16));
        __m256 o1 = _mm256_castsi256_ps(_mm256_and_si256(v1, hi_mask));
        __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16));
#pragma GCC unroll 8
        for (int i = 0; i < m; i++) {
            __m256 xo = _mm256_broadcast_ss(x + i * ldx + 2 * q);
            __m256 xe = _mm256_broadcast_ss(x + i * ldx + 2 * q + 1);
            acc[i][0] = _mm256_fmadd_ps(o0, xo, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(o1, xo, acc[i][1]);
            acc[i][0] = _mm256_fmadd_ps(e0, xe, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(e1, xe, acc[i][1]);
        }
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const int left = nvalid - h * 8;
        if (left <= 0)
            break;
        const __m256 b = _mm256_loadu_ps(bv + h * 8);
#pragma GCC unroll 8
        for (int i = 0; i < m; i++)
            store8(y + i * ldy + h * 8, _mm256_add_ps(acc[i][h], b), left);
    }
}

#define K256(M)                                                                         \
    static void k256_##M(const float *x, int64_t ldx, const uint16_t *w, int64_t step, \
                         int64_t kp, const float *bv, float *y, int64_t ldy, int nvalid) \
    {                                                                                   \
        tile256(x, ldx, w, step, kp, bv, y, ldy, nvalid, M);                            \
    }
K256(1)
K256(2)
K256(3)
K256(4)
K256(5)
/* One input row x the whole panel over kq column pairs, nr groups of 16
 * rows: 2 * nr independent accumulators, where one group's 2 would wait on
 * FMA latency. The accumulators continue from accm (zeroed when `first`)
 * and are left there: each element's chain is the same however the pairs
 * are cut, and it is tile256's. */
static inline __attribute__((always_inline)) void
row256(const float *x, const uint16_t *w, int64_t kq, float *accm, int first, const int nr)
{
    const __m256i hi_mask = _mm256_set1_epi32((int)0xffff0000u);
    const int64_t step = (int64_t)nr * 32;
    __m256 acc[8];
#pragma GCC unroll 8
    for (int j = 0; j < 2 * nr; j++)
        acc[j] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(accm + j * 8);
    for (int64_t q = 0; q < kq; q++, w += step) {
        const __m256 xo = _mm256_broadcast_ss(x + 2 * q), xe = _mm256_broadcast_ss(x + 2 * q + 1);
#pragma GCC unroll 8
        for (int j = 0; j < 2 * nr; j++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(w + j * 16));
            acc[j] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, hi_mask)), xo, acc[j]);
            acc[j] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), xe, acc[j]);
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < 2 * nr; j++)
        _mm256_storeu_ps(accm + j * 8, acc[j]);
}

/* y = acc + bias for the first nvalid of a panel's rows. */
static void store_row(const float *accm, const float *bv, float *y, int nvalid)
{
    for (int j = 0; j * 8 < nvalid; j++)
        store8(y + j * 8, _mm256_add_ps(_mm256_loadu_ps(accm + j * 8), _mm256_loadu_ps(bv + j * 8)),
               nvalid - j * 8);
}

#define R256(N)                                                                          \
    static void r256_##N(const float *x, const uint16_t *w, int64_t kq, float *accm,    \
                         int first)                                                      \
    {                                                                                    \
        row256(x, w, kq, accm, first, N);                                                \
    }
R256(1)
R256(2)
R256(3)
R256(4)
typedef void (*row2_fn)(const float *x, const uint16_t *w, int64_t kq, float *accm, int first);
static const row2_fn rows256[4] = {r256_1, r256_2, r256_3, r256_4};

typedef void (*tile2_fn)(const float *x, int64_t ldx, const uint16_t *w, int64_t step,
                         int64_t kp, const float *bv, float *y, int64_t ldy, int nvalid);
static const tile2_fn tiles256[MR2] = {k256_1, k256_2, k256_3, k256_4, k256_5};

static float bias_f32(const be_weight *bias, int64_t r)
{
    if (bias->dtype == DT_F32)
        return ((const float *)bias->data)[r];
    if (bias->dtype == DT_BF16)
        return bf16_to_f32(((const uint16_t *)bias->data)[r]);
    return f16_to_f32(((const uint16_t *)bias->data)[r]);
}

void cpu_matmul_pairs(int n_threads, int native, uint32_t *xbuf, const float *x,
                      const be_weight *w, const be_weight *bias, int n, float *y)
{
    const int64_t rows = w->rows, cols = w->cols, kp = (cols + 1) / 2;
    const int64_t panels = (pad16(rows) + PANEL - 1) / PANEL;
    /* Work items: panels x chunks of input rows, enough of them for every
     * thread when a matrix has few panels (k and v projections). */
    static const int sizes[] = {MCHUNK, 30, 12, MR};
    int mchunk = MCHUNK;
    for (int k = 1; k < 4 && panels * ((n + mchunk - 1) / mchunk) < 4 * n_threads; k++)
        mchunk = sizes[k];
    const int64_t chunks = (n + mchunk - 1) / mchunk, items = panels * chunks;
    /* Decode-sized inputs are rounded before the threads start: cheaper than
     * the barrier that parallel rounding needs. */
    const int serial = (int64_t)n * cols <= 16384;
    float *xf = (float *)xbuf; /* AVX2: rows of 2 * kp floats */
    for (int i = 0; serial && i < n; i++) {
        if (native)
            round_row(x + (int64_t)i * cols, cols, xbuf + (int64_t)i * kp);
        else
            split_row(x + (int64_t)i * cols, cols, xf + (int64_t)i * 2 * kp);
    }
#pragma omp parallel num_threads(n_threads)
    {
        if (!serial) {
#pragma omp for schedule(static)
            for (int i = 0; i < n; i++) {
                if (native)
                    round_row(x + (int64_t)i * cols, cols, xbuf + (int64_t)i * kp);
                else
                    split_row(x + (int64_t)i * cols, cols, xf + (int64_t)i * 2 * kp);
            }
        }
        unsigned csr = _mm_getcsr();
        if (!native) /* DAZ, FTZ, round to nearest */
            _mm_setcsr((csr & ~0x6000u) | 0x8040u);
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            const int64_t p = it / chunks, r0 = p * PANEL;
            const int wd = panel_width(rows, p), nr = wd / 16;
            const int nvalid = (int)(rows - r0 < wd ? rows - r0 : wd);
            const uint16_t *wp = (const uint16_t *)w->data + r0 * kp * 2;
            float bv[PANEL];
            for (int l = 0; l < PANEL; l++)
                bv[l] = bias && l < nvalid ? bias_f32(bias, r0 + l) : 0.0f;
            const int i0 = (int)(it % chunks) * mchunk;
            const int i1 = i0 + mchunk < n ? i0 + mchunk : n;
            for (int i = i0; native && i < i1; i += MR) {
                const int mr = i1 - i < MR ? i1 - i : MR;
                tiles512[mr - 1][nr - 1](xbuf + (int64_t)i * kp, kp, wp, kp, bv,
                                         y + (int64_t)i * rows + r0, rows, nvalid);
            }
            if (!native && n <= SMALL_N) {
                /* decode batches: a row at a time over the whole panel (tile256's
                 * 16-row groups read every fourth line of it, a stream the
                 * prefetchers served at ~40 % of the bandwidth), the panel cut
                 * into QBLOCK pairs so that rows after the first read it from L1 */
                float acc[SMALL_N][PANEL];
                const int64_t qb = n == 1 ? kp : QBLOCK;
                for (int64_t q0 = 0; q0 < kp; q0 += qb) {
                    const int64_t kq = kp - q0 < qb ? kp - q0 : qb;
                    for (int i = i0; i < i1; i++)
                        rows256[nr - 1](xf + (int64_t)i * 2 * kp + 2 * q0, wp + q0 * nr * 32, kq,
                                        acc[i - i0], q0 == 0);
                }
                for (int i = i0; i < i1; i++)
                    store_row(acc[i - i0], bv, y + (int64_t)i * rows + r0, nvalid);
                continue;
            }
            for (int g = 0; !native && g < nr; g++) /* 16 weight rows at a time */
                for (int i = i0; i < i1; i += MR2) {
                    const int mr = i1 - i < MR2 ? i1 - i : MR2;
                    tiles256[mr - 1](xf + (int64_t)i * 2 * kp, 2 * kp, wp + g * 32, nr * 32, kp,
                                     bv + g * 16, y + (int64_t)i * rows + r0 + g * 16, rows,
                                     nvalid - g * 16);
                }
        }
        if (!native)
            _mm_setcsr(csr);
    }
}
