/* backend sample_rows: the CPU op (be_sample_rows_host, the reference a
 * device backend is compared with) against a plain computation of each
 * field of be_sample_out: the argmax with ties, the log-sum-exp, the top
 * list's order with ties, the kept total under min_p, and the draw. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"

static uint64_t lcg(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return *x >> 33;
}

static const float *cmp_l;
static int by_logit(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (cmp_l[i] != cmp_l[j])
        return cmp_l[i] > cmp_l[j] ? -1 : 1;
    return i - j;
}

/* Every field of o for row l sampled as in, computed the plain way. */
static void check_row(const float *l, int vocab, const be_sample_row *in, const be_sample_out *o)
{
    int *ord = malloc((size_t)vocab * sizeof *ord);
    for (int i = 0; i < vocab; i++)
        ord[i] = i;
    cmp_l = l;
    qsort(ord, (size_t)vocab, sizeof *ord, by_logit);
    int k = vocab < BE_TOPK ? vocab : BE_TOPK;
    assert_int_equal(o->n_top, k);
    for (int i = 0; i < k; i++) {
        assert_int_equal(o->top_ids[i], ord[i]);
        assert_true(o->top_vals[i] == l[ord[i]]);
    }
    long double z = 0, mx = l[ord[0]];
    for (int i = 0; i < vocab; i++)
        z += expl((long double)l[i] - mx);
    double lse = (double)(mx + logl(z));
    assert_true(fabs(o->lse - lse) <= 1e-6 * fmax(1, fabs(lse)));
    assert_true(o->token_logit == l[o->token]);
    if (in->temperature < 1e-5f) {
        assert_int_equal(o->token, ord[0]); /* argmax, lowest id of a tie */
        assert_true(o->total == 0);
        free(ord);
        return;
    }
    /* float64 weights: the draw may differ only within rounding of a
     * boundary of the inverse CDF */
    double *w = malloc((size_t)vocab * sizeof *w), total = 0;
    for (int i = 0; i < vocab; i++) {
        w[i] = exp(((double)l[i] - mx) / in->temperature);
        if (w[i] < in->min_p * (1 - 1e-6)) /* clear cuts only */
            w[i] = 0;
        total += w[i];
    }
    assert_true(fabs(o->total - total) <= 1e-5 * total);
    double acc = 0, gap = 1;
    int tok = -1;
    for (int i = 0; i < vocab; i++) {
        if (w[i] <= 0)
            continue;
        acc += w[i] / total;
        gap = fmin(gap, fabs(acc - in->u));
        if (tok < 0 && acc > in->u)
            tok = i;
    }
    if (o->token != tok && gap > 1e-6)
        fail_msg("drew %d, want %d (u %.9f)", o->token, tok, in->u);
    free(w);
    free(ord);
}

static void test_rows(void **state)
{
    (void)state;
    inferd_error e = {{0}};
    be_backend *b = be_cpu_new(2, &e);
    assert_non_null(b);
    const int vocabs[] = {1, 5, 64, 65, 3001};
    uint64_t x = 17;
    for (size_t v = 0; v < sizeof vocabs / sizeof *vocabs; v++) {
        enum { R = 12 };
        int vocab = vocabs[v];
        float *l = be_alloc(b, sizeof(float) * R * vocab);
        be_sample_row in[R];
        be_sample_out out[R], ref[R];
        for (int r = 0; r < R; r++) {
            for (int i = 0; i < vocab; i++) {
                double a = (double)lcg(&x) / 2147483648.0;
                /* rows 0-3 with coarse ties, then smooth ones of growing scale */
                l[r * vocab + i] = r < 4 ? (float)(int)(a * 4) - 20 : (float)(a * r * 1.5);
            }
            in[r] = (be_sample_row){.temperature = r % 3 == 0 ? 0 : 0.4f * (float)(r % 5),
                                    .min_p = r % 4 == 1 ? 0.1f : 0,
                                    .u = (double)lcg(&x) / 2147483648.0};
        }
        assert_int_equal(be_sample_rows(b, l, R, vocab, in, out, &e), 0);
        be_sample_rows_host(l, R, vocab, in, ref);
        for (int r = 0; r < R; r++) {
            /* the op on two threads is the reference, field for field */
            assert_int_equal(out[r].token, ref[r].token);
            assert_int_equal(out[r].n_top, ref[r].n_top);
            assert_memory_equal(out[r].top_ids, ref[r].top_ids, sizeof(int32_t) * out[r].n_top);
            assert_true(out[r].lse == ref[r].lse && out[r].total == ref[r].total);
            check_row(l + r * vocab, vocab, &in[r], &out[r]);
        }
        be_dealloc(b, l);
    }
    be_free(b);
}

/* u at the ends: 0 takes the first kept id, just below 1 the last. */
static void test_draw_ends(void **state)
{
    (void)state;
    float l[6] = {1, 3, -INFINITY, 2, 3, 0};
    /* weights e^-2 = 0.135, 1, 0, e^-1, 1, e^-3 */
    be_sample_row in = {.temperature = 1, .min_p = 0.1f, .u = 0};
    be_sample_out o;
    be_sample_rows_host(l, 1, 6, &in, &o);
    assert_int_equal(o.token, 0);
    in.min_p = 0.2f; /* cuts ids 0 and 5 */
    be_sample_rows_host(l, 1, 6, &in, &o);
    assert_int_equal(o.token, 1);
    assert_true(fabs(o.total - (2 + exp(-1.0))) < 1e-6);
    in.u = 0.9999999999;
    be_sample_rows_host(l, 1, 6, &in, &o);
    assert_int_equal(o.token, 4);
    assert_int_equal(o.top_ids[0], 1); /* tie 3 = 3: lower id first */
    assert_int_equal(o.top_ids[1], 4);
    assert_int_equal(o.top_ids[5], 2); /* -inf last */
    in.temperature = 0;
    be_sample_rows_host(l, 1, 6, &in, &o);
    assert_int_equal(o.token, 1);
    assert_true(o.token_logit == 3);
}

/* A device backend's sample_rows against the CPU reference on the same
 * rows (uploaded as float32 weights): the argmax, the top list and
 * token_logit exactly; lse and total to float rounding; a draw may differ
 * only within 1e-6 of a boundary. Skipped without CUDA or a GPU. */
static void test_cuda_against_cpu(void **state)
{
    (void)state;
    inferd_error e = {{0}};
    if (!be_cuda_available())
        skip();
    be_backend *g = be_cuda_new(0, &e);
    if (!g) {
        print_message("no GPU: %s\n", e.msg);
        skip();
    }
    const int vocabs[] = {50, 1000, 151936};
    uint64_t x = 99;
    int boundary = 0;
    for (size_t v = 0; v < sizeof vocabs / sizeof *vocabs; v++) {
        enum { R = 16 };
        int vocab = vocabs[v];
        float *l = malloc(sizeof(float) * R * vocab);
        be_sample_row in[R];
        be_sample_out got[R], want[R];
        for (int r = 0; r < R; r++) {
            for (int i = 0; i < vocab; i++) {
                double a = (double)lcg(&x) / 2147483648.0, b = (double)lcg(&x) / 2147483648.0;
                l[r * vocab + i] = r % 4 == 0 ? (float)(int)(a * 6) /* ties */
                                              : (float)(14 * a * b) - 7;
            }
            in[r] = (be_sample_row){.temperature = r % 4 == 1 ? 0 : 0.3f * (float)(r % 5 + 1),
                                    .min_p = r % 3 == 2 ? 0.05f : 0,
                                    .u = (double)lcg(&x) / 2147483648.0,
                                    .top = r % 8 != 3};
        }
        be_weight w;
        assert_int_equal(be_weight_init(g, l, DT_F32, R, vocab, &w, &e), 0);
        memset(got, 0, sizeof got);
        if (be_sample_rows(g, w.data, R, vocab, in, got, &e))
            fail_msg("sample_rows: %s", e.msg);
        be_sample_rows_host(l, R, vocab, in, want);
        for (int r = 0; r < R; r++) {
            const float *row = l + (size_t)r * vocab;
            if (!in[r].top) { /* no list asked for: none made, the rest the same */
                assert_int_equal(got[r].n_top, 0);
                want[r].n_top = 0;
            }
            assert_int_equal(got[r].n_top, want[r].n_top);
            assert_memory_equal(got[r].top_ids, want[r].top_ids, sizeof(int32_t) * want[r].n_top);
            assert_memory_equal(got[r].top_vals, want[r].top_vals, sizeof(float) * want[r].n_top);
            assert_true(fabsf(got[r].lse - want[r].lse) <= 1e-5f * fmaxf(1, fabsf(want[r].lse)));
            assert_true(fabs(got[r].total - want[r].total) <= 1e-6 * want[r].total);
            if (got[r].token != want[r].token) {
                assert_true(in[r].temperature > 0);
                boundary++;
                check_row(row, vocab, &in[r], &got[r]); /* fails unless u is at a boundary */
            }
            if (!(got[r].token_logit == row[got[r].token]))
                fail_msg("row %d: token_logit %g, the row's logit of token %d is %g", r,
                         got[r].token_logit, got[r].token, row[got[r].token]);
        }
        free(l);
    }
    assert_true(boundary <= 2);
    be_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_draw_ends),
        cmocka_unit_test(test_cuda_against_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
