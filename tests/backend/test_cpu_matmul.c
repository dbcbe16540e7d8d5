/* backend/cpu matmul kernels.
 *
 * float32 precision: the AVX-512F prefill kernel gives bitwise the results of
 * the AVX2 kernels (the same float operations per element), for every batch
 * size, shape and thread count.
 *
 * bfloat16 precision: the matmul gives bitwise what a
 * scalar model of the arithmetic gives (activations rounded to bf16 to
 * nearest even; per output, pairs of products accumulated odd element then
 * even, each sum rounded to nearest even, denormal inputs read as zero,
 * denormal sums flushed — VDPBF16PS as the Intel SDM defines it), on the
 * AVX512_BF16 kernels where the CPU has them (skipped otherwise) and on the
 * AVX2 emulation everywhere; so every row's result is independent of the
 * batch size, the tiling and the thread count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/internal.h"

static uint32_t rng = 12345;

static float frand(void) /* in [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

static float daz(float v)
{
    return fabsf(v) < FLT_MIN ? copysignf(0.0f, v) : v;
}

/* The scalar model of one output element. */
static float model_dot(const float *x, const uint16_t *w, int64_t cols, float bias)
{
    float acc = 0.0f;
    for (int64_t k = 0; k < cols; k += 2) {
        float xo = 0.0f, wo = 0.0f;
        if (k + 1 < cols) {
            xo = daz(bf16_to_f32(f32_to_bf16(x[k + 1])));
            wo = daz(bf16_to_f32(w[k + 1]));
        }
        float xe = daz(bf16_to_f32(f32_to_bf16(x[k]))), we = daz(bf16_to_f32(w[k]));
        acc = daz(acc + xo * wo); /* both products are exact in float32 */
        acc = daz(acc + xe * we);
    }
    return acc + bias;
}

/* A CPU backend; avx2 = 1 forces the AVX2 kernels (INFERD_CPU_NO_AVX512=1
 * while it starts), the variable is left as it was. */
static be_backend *new_cpu(int threads, int avx2)
{
    const char *was = getenv("INFERD_CPU_NO_AVX512");
    char *saved = was ? strdup(was) : NULL;
    if (avx2)
        setenv("INFERD_CPU_NO_AVX512", "1", 1);
    inferd_error e = {{0}};
    be_backend *b = be_cpu_new(threads, &e);
    if (saved)
        setenv("INFERD_CPU_NO_AVX512", saved, 1);
    else
        unsetenv("INFERD_CPU_NO_AVX512");
    free(saved);
    assert_non_null(b);
    return b;
}

/* A backend in bfloat16 precision; avx2 = 1 forces the emulation. */
static be_backend *open_backend(int threads, int avx2)
{
    be_backend *b = new_cpu(threads, avx2);
    be_set_matmul_bf16(b, 1);
    return b;
}

typedef struct shape {
    int64_t rows, cols;
} shape;

/* Weights with a few special values: exact zeros, and denormals met by a
 * huge activation in column 3 (their product would count without DAZ). */
static void fill(uint16_t *w, int64_t rows, int64_t cols, float *x, int n, uint16_t *bias)
{
    for (int64_t i = 0; i < rows * cols; i++)
        w[i] = f32_to_bf16(frand() * 0.25f);
    for (int64_t r = 0; r < rows; r += 5)
        w[r * cols + (r % cols)] = 0;
    for (int64_t r = 1; r < rows && cols > 3; r += 7)
        w[r * cols + 3] = (uint16_t)(0x0003 | (r & 8 ? 0x8000 : 0)); /* ±denormal */
    for (int64_t i = 0; i < (int64_t)n * cols; i++)
        x[i] = frand() * 3.0f;
    for (int i = 0; i < n && cols > 3; i += 3)
        x[(int64_t)i * cols + 3] = 1e37f;
    for (int64_t r = 0; r < rows; r++)
        bias[r] = f32_to_bf16(frand());
}

/* {72, 301}: 151 column pairs, three passes of the AVX2 decode-batch path's
 * 64-pair blocks, the last partial; batches 16 and 17: both sides of its
 * SMALL_N */
static const shape shapes[] = {{64, 64}, {160, 64}, {40, 37}, {48, 160}, {200, 98},
                               {16, 1}, {2, 9}, {130, 70}, {72, 301}};
static const int batch[] = {1, 2, 3, 5, 6, 7, 13, 16, 17, 50};

/* Every shape x batch size x thread count against the model, with and
 * without bias; then each row alone equals the same row in a batch. */
static void check_kernels(int avx2)
{
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t rows = shapes[s].rows, cols = shapes[s].cols;
        uint16_t *w = malloc((size_t)(rows * cols) * 2), *bias = malloc((size_t)rows * 2);
        float *x = malloc(sizeof(float) * 50 * (size_t)cols);
        float *y = malloc(sizeof(float) * 50 * (size_t)rows);
        float *ref = malloc(sizeof(float) * 50 * (size_t)rows);
        fill(w, rows, cols, x, 50, bias);
        for (int threads = 1; threads <= 3; threads += 2) {
            be_backend *b = open_backend(threads, avx2);
            inferd_error e = {{0}};
            be_weight wt, bt;
            assert_int_equal(be_weight_init(b, w, DT_BF16, rows, cols, &wt, &e), 0);
            assert_int_equal(be_weight_init(b, bias, DT_BF16, 1, rows, &bt, &e), 0);
            assert_int_equal(cpu_weight_layout(&wt), CPU_PAIRS);
            assert_int_equal(cpu_weight_layout(&bt), CPU_ROWS);
            for (size_t k = 0; k < sizeof batch / sizeof batch[0]; k++) {
                const int n = batch[k];
                for (int with_bias = 0; with_bias < 2; with_bias++) {
                    for (int i = 0; i < n; i++)
                        for (int64_t r = 0; r < rows; r++)
                            ref[i * rows + r] = model_dot(
                                x + i * cols, w + r * cols, cols,
                                with_bias ? bf16_to_f32(bias[r]) : 0.0f);
                    memset(y, 0xff, sizeof(float) * (size_t)(n * rows));
                    be_matmul(b, x, &wt, with_bias ? &bt : NULL, n, y);
                    for (int64_t i = 0; i < n * rows; i++)
                        if (memcmp(&y[i], &ref[i], sizeof(float)) != 0)
                            fail_msg("%s %lldx%lld n=%d threads=%d bias=%d: element "
                                     "(%lld, %lld) = %.9g, model %.9g",
                                     avx2 ? "avx2" : "avx512bf16", (long long)rows,
                                     (long long)cols, n, threads, with_bias,
                                     (long long)(i / rows), (long long)(i % rows), y[i],
                                     ref[i]);
                }
            }
            /* Embedding lookups read the packed copy back exactly. */
            int32_t ids[2] = {(int32_t)rows - 1, 0};
            be_embed(b, &wt, ids, 2, y);
            for (int j = 0; j < 2; j++)
                for (int64_t c = 0; c < cols; c++)
                    assert_true(y[j * cols + c] == bf16_to_f32(w[ids[j] * cols + c]) ||
                                (isnan(y[j * cols + c])));
            be_free(b);
        }
        free(w);
        free(bias);
        free(x);
        free(y);
        free(ref);
    }
}

static void test_avx512bf16_matches_model(void **state)
{
    (void)state;
    if (!cpu_bf16_native()) {
        print_message("this CPU has no AVX512_BF16 (or INFERD_CPU_NO_AVX512 is set): "
                      "kernel test skipped, the AVX2 emulation is tested below\n");
        skip();
    }
    check_kernels(0);
}

static void test_avx2_matches_model(void **state)
{
    (void)state;
    check_kernels(1);
}

/* Both paths on a prefill-sized product: the 6x64 tiles, the remainders
 * and the work split over threads all meet. */
static void test_paths_agree_large(void **state)
{
    (void)state;
    const int64_t rows = 320, cols = 448;
    const int n = 101;
    uint16_t *w = malloc((size_t)(rows * cols) * 2), *bias = malloc((size_t)rows * 2);
    float *x = malloc(sizeof(float) * (size_t)(n * cols));
    float *y[2], *one = malloc(sizeof(float) * (size_t)rows);
    fill(w, rows, cols, x, n, bias);
    for (int avx2 = 0; avx2 < 2; avx2++) {
        be_backend *b = open_backend(2, avx2);
        inferd_error e = {{0}};
        be_weight wt;
        assert_int_equal(be_weight_init(b, w, DT_BF16, rows, cols, &wt, &e), 0);
        y[avx2] = malloc(sizeof(float) * (size_t)(n * rows));
        be_matmul(b, x, &wt, NULL, n, y[avx2]);
        for (int i = 0; i < n; i += 17) { /* a row alone = the same row in the batch */
            be_matmul(b, x + i * cols, &wt, NULL, 1, one);
            assert_memory_equal(one, y[avx2] + i * rows, sizeof(float) * (size_t)rows);
        }
        for (int64_t r = 0; r < rows; r += 31)
            assert_true(y[avx2][r] == model_dot(x, w + r * cols, cols, 0.0f));
        be_free(b);
    }
    assert_memory_equal(y[0], y[1], sizeof(float) * (size_t)(n * rows));
    free(y[0]);
    free(y[1]);
    free(one);
    free(w);
    free(bias);
    free(x);
}

/* Sums below FLT_MIN are flushed to zero: in rows 0-7, 2^-130 (first
 * pair, odd element) then 2^-120 gives 2^-120, not 2^-120 + 2^-130; in rows
 * 8-15 the last product alone, 2^-130, gives 0. */
static void test_flush_to_zero(void **state)
{
    (void)state;
    float x[4] = {0.0f, ldexpf(1, -70), ldexpf(1, -70), ldexpf(1, -60)};
    uint16_t w[16 * 4];
    float y[16];
    const uint16_t tiny = f32_to_bf16(ldexpf(1, -60));
    for (int r = 0; r < 16; r++) {
        w[r * 4] = 0;
        w[r * 4 + 1] = r < 8 ? tiny : 0;
        w[r * 4 + 2] = r < 8 ? 0 : tiny;
        w[r * 4 + 3] = r < 8 ? tiny : 0;
    }
    for (int avx2 = cpu_bf16_native() ? 0 : 1; avx2 < 2; avx2++) {
        be_backend *b = open_backend(1, avx2);
        inferd_error e = {{0}};
        be_weight wt;
        assert_int_equal(be_weight_init(b, w, DT_BF16, 16, 4, &wt, &e), 0);
        be_matmul(b, x, &wt, NULL, 1, y);
        for (int r = 0; r < 16; r++) {
            float want = r < 8 ? ldexpf(1, -120) : 0.0f;
            if (y[r] != want || model_dot(x, w + r * 4, 4, 0.0f) != want)
                fail_msg("%s row %d: %g, model %g, want %g", avx2 ? "avx2" : "avx512bf16", r,
                         y[r], model_dot(x, w + r * 4, 4, 0.0f), want);
        }
        be_free(b);
    }
}

/* bfloat16 precision applies to bf16 weights only: f16 and f32 ones keep the
 * float32 path, whose results are those of float32 precision. */
static void test_other_dtypes_stay_float32(void **state)
{
    (void)state;
    const int64_t rows = 24, cols = 40;
    uint16_t w16[24 * 40];
    float w32[24 * 40], x[3 * 40], y[2][3 * 24];
    for (int i = 0; i < rows * cols; i++) {
        w32[i] = frand();
        w16[i] = f32_to_f16(w32[i]);
    }
    for (int i = 0; i < 3 * cols; i++)
        x[i] = frand();
    for (int dt = 0; dt < 2; dt++) {
        for (int prec = 0; prec < 2; prec++) {
            inferd_error e = {{0}};
            be_backend *b = be_cpu_new(2, &e);
            be_set_matmul_bf16(b, prec);
            be_weight wt;
            assert_int_equal(be_weight_init(b, dt ? (const void *)w32 : (const void *)w16,
                                           dt ? DT_F32 : DT_F16, rows, cols, &wt, &e),
                             0);
            assert_true(cpu_weight_layout(&wt) != CPU_PAIRS);
            be_matmul(b, x, &wt, NULL, 3, y[prec]);
            be_free(b);
        }
        assert_memory_equal(y[0], y[1], sizeof y[0]);
    }
}

/* float32 precision: the AVX-512F kernel (6 x 8 tiles) and the AVX2 ones
 * (4 x 3 tiles, single rows below 4) agree bitwise, bias or not, whatever
 * the weight dtype, and on each a row alone equals the same row in a batch
 * (the first row, in a tile, and the last, often one of the rows left over).
 * Without AVX-512F only the AVX2 half runs. */
static void test_f32_kernels_agree(void **state)
{
    (void)state;
    const int has512 = cpu_avx512_usable();
    if (!has512)
        print_message("this CPU has no AVX-512F: the AVX2 float32 kernels alone\n");
    static const shape f32_shapes[] = {{64, 64}, {40, 24}, {17, 40}, {130, 96}, {24, 36},
                                       {200, 160}};
    static const int f32_batch[] = {4, 5, 6, 7, 8, 12, 13, 50};
    for (size_t s = 0; s < sizeof f32_shapes / sizeof f32_shapes[0]; s++) {
        const int64_t rows = f32_shapes[s].rows, cols = f32_shapes[s].cols;
        uint16_t *w = malloc((size_t)(rows * cols) * 2), *bias = malloc((size_t)rows * 2);
        float *w32 = malloc(sizeof(float) * (size_t)(rows * cols));
        float *x = malloc(sizeof(float) * 50 * (size_t)cols);
        float *y[2], *one = malloc(sizeof(float) * (size_t)rows);
        y[0] = malloc(sizeof(float) * 50 * (size_t)rows);
        y[1] = malloc(sizeof(float) * 50 * (size_t)rows);
        fill(w, rows, cols, x, 50, bias);
        for (int64_t i = 0; i < rows * cols; i++)
            w32[i] = frand();
        for (int dt = 0; dt < 3; dt++) {
            const inferd_dtype dtype = dt == 0 ? DT_BF16 : dt == 1 ? DT_F16 : DT_F32;
            const void *wd = dt == 2 ? (const void *)w32 : (const void *)w;
            for (size_t k = 0; k < sizeof f32_batch / sizeof f32_batch[0]; k++) {
                const int n = f32_batch[k];
                for (int avx2 = has512 ? 0 : 1; avx2 < 2; avx2++) {
                    inferd_error e = {{0}};
                    be_backend *b = new_cpu(avx2 ? 1 : 3, avx2);
                    be_weight wt, bt;
                    assert_int_equal(be_weight_init(b, wd, dtype, rows, cols, &wt, &e), 0);
                    assert_int_equal(be_weight_init(b, bias, DT_BF16, 1, rows, &bt, &e), 0);
                    be_matmul(b, x, &wt, n & 1 ? &bt : NULL, n, y[avx2]);
                    for (int r = 0; r < n; r += n - 1) {
                        be_matmul(b, x + r * cols, &wt, n & 1 ? &bt : NULL, 1, one);
                        assert_memory_equal(one, y[avx2] + r * rows,
                                            sizeof(float) * (size_t)rows);
                    }
                    be_free(b);
                }
                if (has512 && memcmp(y[0], y[1], sizeof(float) * (size_t)(n * rows)) != 0)
                    fail_msg("float32 %lldx%lld dtype %d n=%d: AVX-512F and AVX2 differ",
                             (long long)rows, (long long)cols, dt, n);
            }
        }
        free(w);
        free(w32);
        free(bias);
        free(x);
        free(y[0]);
        free(y[1]);
        free(one);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_avx512bf16_matches_model),
        cmocka_unit_test(test_avx2_matches_model),
        cmocka_unit_test(test_paths_agree_large),
        cmocka_unit_test(test_flush_to_zero),
        cmocka_unit_test(test_other_dtypes_stay_float32),
        cmocka_unit_test(test_f32_kernels_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
