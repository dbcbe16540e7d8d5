/* backend.c's defaults — what a backend that leaves an op out gets — each
 * against a naive computation: the grouped expert matmul, quantized weights,
 * logits masking, sampling and copies for a backend without the op, and the
 * kept-error reports. They run on the CPU backend (which has none of the
 * wave-2 ops) and on "fake", a test backend whose optional slots are all
 * empty: once as a host backend, once posing as a device (host 0, its
 * memory host memory behind to_host/from_host that count their calls). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/impl.h"

static uint32_t rng = 7;

static float frand(void) /* in [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

static uint32_t urand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return rng >> 4;
}

static be_backend *cpu(void)
{
    inferd_error e = {{0}};
    be_backend *b = be_cpu_new(2, &e);
    assert_non_null(b);
    return b;
}

/* ---- the fake backend: required ops through a CPU backend, nothing optional ---- */

typedef struct fake {
    be_backend base;
    be_backend *cpu;
    be_vtable vt;
    int to_host_calls, from_host_calls;
    void *copies[8]; /* the device's weight copies */
    int n_copies;
} fake;

static void fake_free(be_backend *b)
{
    fake *f = (fake *)b;
    for (int i = 0; i < f->n_copies; i++)
        be_dealloc(f->cpu, f->copies[i]);
    be_free(f->cpu);
    free(f);
}
static void *fake_alloc(be_backend *b, size_t n) { return be_alloc(((fake *)b)->cpu, n); }
static void fake_dealloc(be_backend *b, void *p) { be_dealloc(((fake *)b)->cpu, p); }
static int fake_weight(be_backend *b, const void *host, inferd_dtype dt, int64_t rows,
                       int64_t cols, be_weight *out, inferd_error *e)
{
    fake *f = (fake *)b;
    if (f->base.vt->host) /* zero copy, like the CPU */
        return be_weight_init(f->cpu, host, dt, rows, cols, out, e);
    /* a device copies: the caller may free host at once */
    size_t bytes = (size_t)rows * (size_t)cols * dtype_size(dt);
    void *copy = f->n_copies < 8 ? be_alloc(f->cpu, bytes) : NULL;
    if (!copy)
        return -1;
    f->copies[f->n_copies++] = copy;
    memcpy(copy, host, bytes);
    return be_weight_init(f->cpu, copy, dt, rows, cols, out, e);
}
static void fake_matmul(be_backend *b, const float *x, const be_weight *w,
                        const be_weight *bias, int n, float *y)
{
    be_matmul(((fake *)b)->cpu, x, w, bias, n, y);
}
static int fake_to_host(be_backend *b, void *dst, const void *src, size_t bytes,
                        inferd_error *e)
{
    if (!bytes) /* a report alone */
        return 0;
    ((fake *)b)->to_host_calls++;
    memcpy(dst, src, bytes);
    return 0;
}
static int fake_from_host(be_backend *b, void *dst, const void *src, size_t bytes,
                          inferd_error *e)
{
    ((fake *)b)->from_host_calls++;
    memcpy(dst, src, bytes);
    return 0;
}

/* A fake device (host 0, with to_host and from_host) or host backend. */
static fake *fake_new(int device)
{
    fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->cpu = cpu();
    f->vt = (be_vtable){.name = "fake", .free = fake_free, .alloc = fake_alloc,
                        .dealloc = fake_dealloc, .weight = fake_weight,
                        .matmul = fake_matmul, .host = !device};
    if (device) {
        f->vt.to_host = fake_to_host;
        f->vt.from_host = fake_from_host;
    }
    f->base.vt = &f->vt;
    return f;
}

/* ---- naive references ---- */

/* y[n][rows] = x . w^T (+ bias) in double, w float32. */
static void naive_matmul(const float *x, const float *w, const float *bias, int n,
                         int rows, int cols, double *y)
{
    for (int i = 0; i < n; i++)
        for (int r = 0; r < rows; r++) {
            double s = bias ? bias[r] : 0;
            for (int c = 0; c < cols; c++)
                s += (double)x[i * cols + c] * w[r * cols + c];
            y[i * rows + r] = s;
        }
}

static void assert_close(const float *got, const double *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= 1e-5 * (1 + fabs(want[i]))))
            fail_msg("element %zu: %.9g, want %.9g", i, got[i], want[i]);
}

/* ---- grouped matmul ---- */

/* Rows grouped by expert (one group empty, one without bias): each row is
 * its expert's product, to rounding of the naive sum, and bitwise what
 * be_matmul gives that row alone (CPU matmuls do not depend on the batch). */
static void test_matmul_grouped(void **state)
{
    (void)state;
    enum { G = 4, ROWS = 24, COLS = 40, N = 11 };
    const int32_t start[G + 1] = {0, 3, 3, 10, N}; /* expert 1: no rows */
    be_backend *b = cpu();
    inferd_error e = {{0}};
    float *wf = malloc(sizeof(float) * G * ROWS * COLS), bf[G][ROWS];
    float x[N * COLS], y[N * ROWS], one[ROWS];
    double ref[N * ROWS];
    be_weight w[G], bias[G];
    for (int i = 0; i < G * ROWS * COLS; i++)
        wf[i] = frand();
    for (int i = 0; i < N * COLS; i++)
        x[i] = frand() * 2;
    for (int g = 0; g < G; g++) {
        for (int r = 0; r < ROWS; r++)
            bf[g][r] = frand();
        assert_int_equal(be_weight_init(b, wf + g * ROWS * COLS, DT_F32, ROWS, COLS, &w[g], &e), 0);
        assert_int_equal(be_weight_init(b, bf[g], DT_F32, 1, ROWS, &bias[g], &e), 0);
    }
    memset(&bias[2], 0, sizeof bias[2]); /* expert 2: no bias */
    for (int i = 0; i < N * ROWS; i++)
        y[i] = NAN; /* every row must be written */
    be_matmul_grouped(b, x, w, bias, G, start, y);
    assert_int_equal(be_to_host(b, NULL, NULL, 0, &e), 0);
    for (int g = 0; g < G; g++) {
        const int r0 = start[g], m = start[g + 1] - r0;
        if (m == 0)
            continue;
        naive_matmul(x + r0 * COLS, wf + g * ROWS * COLS, g == 2 ? NULL : bf[g], m, ROWS,
                     COLS, ref + r0 * ROWS);
        for (int i = r0; i < r0 + m; i++) {
            be_matmul(b, x + i * COLS, &w[g], g == 2 ? NULL : &bias[g], 1, one);
            assert_memory_equal(one, y + i * ROWS, sizeof one);
        }
    }
    assert_close(y, ref, N * ROWS);
    free(wf);
    be_free(b);
}

/* ---- quantized weights ---- */

/* codes and scales for a rows x cols matrix, and its dequantized floats */
static void make_quant(be_qtype t, int rows, int cols, int group, uint8_t *codes,
                       float *scales, float *deq)
{
    for (int i = 0; i < rows * cols / group; i++)
        scales[i] = 0.01f + 0.05f * (frand() + 1);
    for (int i = 0; i < rows * cols; i++) {
        int v;
        if (t == BE_Q8) {
            v = (int)(urand() % 256) - 128;
            codes[i] = (uint8_t)(int8_t)v;
        } else {
            int c = (int)(urand() % 16);
            v = c - 8;
            if (i % 2 == 0)
                codes[i / 2] = (uint8_t)c;
            else
                codes[i / 2] |= (uint8_t)(c << 4);
        }
        deq[i] = (float)v * scales[i / cols * (cols / group) + i % cols / group];
    }
}

/* BE_Q8 and BE_Q4 on a backend without weight_quant: the matmul is the
 * float32 matmul of the dequantized matrix, bitwise, and the naive product
 * to rounding; on a host and on a device (which copies, so the expansion is
 * freed at once: ASan's leak check watches the other case). */
static void test_weight_quant(void **state)
{
    (void)state;
    enum { ROWS = 16, COLS = 64, GROUP = 32, N = 5 };
    const be_qtype types[] = {BE_Q8, BE_Q4};
    for (int dev = 0; dev < 2; dev++)
        for (size_t t = 0; t < 2; t++) {
            fake *f = fake_new(dev);
            be_backend *b = &f->base;
            inferd_error e = {{0}};
            uint8_t codes[ROWS * COLS];
            float scales[ROWS * COLS / GROUP], deq[ROWS * COLS], x[N * COLS];
            float y[N * ROWS], yf[N * ROWS];
            double ref[N * ROWS];
            make_quant(types[t], ROWS, COLS, GROUP, codes, scales, deq);
            for (int i = 0; i < N * COLS; i++)
                x[i] = frand();
            be_qweight q = {.type = types[t], .codes = codes, .scales = scales, .group = GROUP};
            be_weight wq, wf;
            assert_int_equal(be_weight_init_quant(b, &q, ROWS, COLS, &wq, &e), 0);
            assert_int_equal(wq.qtype, BE_Q_NONE); /* expanded: a plain weight */
            assert_int_equal(wq.dtype, DT_F32);
            memset(codes, 0, sizeof codes); /* the weight keeps nothing of them */
            assert_int_equal(be_weight_init(b, deq, DT_F32, ROWS, COLS, &wf, &e), 0);
            be_matmul(b, x, &wq, NULL, N, y);
            be_matmul(b, x, &wf, NULL, N, yf);
            assert_int_equal(be_to_host(b, NULL, NULL, 0, &e), 0);
            assert_memory_equal(y, yf, sizeof y);
            naive_matmul(x, deq, NULL, N, ROWS, COLS, ref);
            assert_close(y, ref, N * ROWS);
            be_free(b);
        }
}

/* What the default refuses, with messages that say what and where. */
static void test_weight_quant_refused(void **state)
{
    (void)state;
    be_backend *b = cpu();
    inferd_error e = {{0}};
    uint8_t codes[64] = {0};
    float scales[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    be_weight w;
    be_qweight q = {.type = (be_qtype)77, .codes = codes, .scales = scales, .group = 8};
    assert_int_equal(be_weight_init_quant(b, &q, 8, 8, &w, &e), -1);
    assert_non_null(strstr(e.msg, "the cpu backend cannot load weights quantized as unknown"));
    q.type = BE_Q4;
    q.group = 3; /* does not divide 8 columns */
    assert_int_equal(be_weight_init_quant(b, &q, 8, 8, &w, &e), -1);
    assert_non_null(strstr(e.msg, "groups of 3 columns"));
    /* a weight a backend kept quantized, on one without a quantized matmul:
     * the op keeps the error, the next report gives it, once */
    be_weight kept = {.data = codes, .dtype = DT_F32, .rows = 8, .cols = 8, .qtype = BE_Q8};
    float x[8] = {0}, y[8];
    be_matmul(b, x, &kept, NULL, 1, y);
    assert_int_equal(be_to_host(b, NULL, NULL, 0, &e), -1);
    assert_string_equal(e.msg, "the cpu backend has no matmul for q8 weights");
    assert_int_equal(be_to_host(b, NULL, NULL, 0, &e), 0);
    be_free(b);
}

/* ---- logits masking ---- */

/* Masked ids become -inf, every other logit keeps its bits; vocab 77 ends
 * inside a mask word. On a device the rows go through one copy each way. */
static void test_mask_logits(void **state)
{
    (void)state;
    enum { N = 3, V = 77, W = (V + 31) / 32 };
    for (int dev = 0; dev < 2; dev++) {
        fake *f = fake_new(dev);
        be_backend *b = &f->base;
        inferd_error e = {{0}};
        float *l = be_alloc(b, sizeof(float) * N * V), want[N * V];
        uint32_t mask[N * W];
        for (int i = 0; i < N * W; i++)
            mask[i] = urand() ^ (urand() << 16);
        mask[0] = 0xffffffffu; /* row 0: first word all allowed */
        mask[W] = 0;           /* row 1: first word all masked */
        for (int i = 0; i < N * V; i++)
            l[i] = want[i] = frand() * 10;
        for (int r = 0; r < N; r++)
            for (int i = 0; i < V; i++)
                if (!(mask[r * W + i / 32] & (1u << (i % 32))))
                    want[r * V + i] = -INFINITY;
        be_mask_logits(b, l, N, V, mask);
        assert_int_equal(be_to_host(b, NULL, NULL, 0, &e), 0);
        assert_memory_equal(l, want, sizeof want);
        assert_int_equal(f->from_host_calls, dev);
        be_dealloc(b, l);
        be_free(b);
    }
}

/* A device without from_host cannot mask: the error names the backend. */
static void test_mask_logits_no_upload(void **state)
{
    (void)state;
    fake *f = fake_new(1);
    f->vt.from_host = NULL;
    inferd_error e = {{0}};
    float l[4] = {1, 2, 3, 4};
    uint32_t mask = 5;
    be_mask_logits(&f->base, l, 1, 4, &mask);
    assert_int_equal(be_to_host(&f->base, NULL, NULL, 0, &e), -1);
    assert_non_null(strstr(e.msg, "the fake backend cannot copy host memory to the device"));
    be_free(&f->base);
}

/* ---- sampling and copies without the ops ---- */

/* be_sample_rows without the op: what be_sample_rows_host gives on the
 * same rows, field for field; a device's rows come through one to_host. */
static void test_sample_rows_default(void **state)
{
    (void)state;
    enum { R = 5, V = 300 };
    for (int dev = 0; dev < 2; dev++) {
        fake *f = fake_new(dev);
        be_backend *b = &f->base;
        inferd_error e = {{0}};
        float *l = be_alloc(b, sizeof(float) * R * V);
        be_sample_row in[R];
        be_sample_out got[R], want[R];
        for (int i = 0; i < R * V; i++)
            l[i] = frand() * 5;
        for (int r = 0; r < R; r++)
            in[r] = (be_sample_row){.temperature = r ? 0.3f * r : 0, .min_p = r == 2 ? 0.1f : 0,
                                    .u = (urand() % 1000) / 1000.0, .top = 1};
        memset(got, 0, sizeof got);
        assert_int_equal(be_sample_rows(b, l, R, V, in, got, &e), 0);
        be_sample_rows_host(l, R, V, in, want);
        for (int r = 0; r < R; r++) {
            assert_int_equal(got[r].token, want[r].token);
            assert_true(got[r].lse == want[r].lse && got[r].total == want[r].total);
            assert_int_equal(got[r].n_top, want[r].n_top);
            assert_memory_equal(got[r].top_ids, want[r].top_ids, sizeof got[r].top_ids);
        }
        assert_int_equal(f->to_host_calls, dev);
        /* a kept error comes back instead of samples */
        be_impl_fail(b, "op %d failed", 3);
        assert_int_equal(be_sample_rows(b, l, R, V, in, got, &e), -1);
        assert_string_equal(e.msg, "op 3 failed");
        be_dealloc(b, l);
        be_free(b);
    }
}

/* Host to_host: a memcpy (none for dst == src), then the kept error once;
 * begin_step reports too; the first kept error wins. */
static void test_host_copies_and_reports(void **state)
{
    (void)state;
    fake *f = fake_new(0);
    be_backend *b = &f->base;
    inferd_error e = {{0}};
    float src[4] = {1, 2, 3, 4}, dst[4] = {0};
    assert_int_equal(be_to_host(b, dst, src, sizeof src, &e), 0);
    assert_memory_equal(dst, src, sizeof src);
    assert_int_equal(be_to_host(b, src, src, sizeof src, &e), 0);
    assert_int_equal(be_from_host(b, dst, src, sizeof src, &e), 0);
    be_impl_fail(b, "first");
    be_impl_fail(b, "second");
    assert_int_equal(be_to_host(b, dst, src, sizeof src, &e), -1);
    assert_string_equal(e.msg, "first");
    assert_int_equal(be_to_host(b, dst, src, sizeof src, &e), 0);
    be_impl_fail(b, "before the step");
    be_step st = {0};
    assert_int_equal(be_begin_step(b, &st, &e), -1);
    assert_string_equal(e.msg, "before the step");
    assert_int_equal(be_begin_step(b, &st, &e), 0);
    be_free(b);
}

/* Optional ops a backend lacks: errors that name it. */
static void test_missing_ops(void **state)
{
    (void)state;
    fake *f = fake_new(0);
    be_backend *b = &f->base;
    inferd_error e = {{0}};
    size_t fr, tot;
    assert_int_equal(be_mem_info(b, &fr, &tot, &e), -1);
    assert_string_equal(e.msg, "the fake backend has no device memory to report");
    float x[4] = {0};
    be_gelu(b, x, 4, 0, x);
    be_layernorm(b, x, NULL, NULL, 1e-5f, 1, 4, x); /* the first one is reported */
    assert_int_equal(be_to_host(b, NULL, NULL, 0, &e), -1);
    assert_non_null(strstr(e.msg, "the fake backend has no encoder ops (gelu)"));
    assert_int_equal(be_reserve(b, 100, &e), 0);
    assert_int_equal(be_is_host(b), 1);
    assert_string_equal(be_name(b), "fake");
    be_free(b);
    f = fake_new(1);
    f->vt.to_host = NULL;
    assert_int_equal(be_to_host(&f->base, x, x, sizeof x, &e), -1);
    assert_non_null(strstr(e.msg, "the fake backend cannot copy its memory to the host"));
    be_free(&f->base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_grouped),
        cmocka_unit_test(test_weight_quant),
        cmocka_unit_test(test_weight_quant_refused),
        cmocka_unit_test(test_mask_logits),
        cmocka_unit_test(test_mask_logits_no_upload),
        cmocka_unit_test(test_sample_rows_default),
        cmocka_unit_test(test_host_copies_and_reports),
        cmocka_unit_test(test_missing_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
