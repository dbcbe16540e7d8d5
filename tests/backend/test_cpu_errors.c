/* backend/cpu without abort(): its ops take their working memory from
 * scratch sized at load (weights, be_reserve) and grown and kept after, so
 * a repeated step allocates nothing; and an op whose scratch cannot be had
 * keeps the error, which the step's report returns — a message, not a
 * crash. The scratch allocator is swapped for one that counts, or fails
 * (cpu_set_scratch_alloc). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/internal.h"

static int allocs, failing;

static int hook(void **p, size_t align, size_t bytes)
{
    if (failing)
        return ENOMEM;
    allocs++;
    return posix_memalign(p, align, bytes);
}

enum { HEADS = 4, KVH = 2, HD = 16, BS = 4, NB = 4, T = 6 };

/* One sequence of T tokens: K/V stored, then causal attention over them. */
static void attend(be_backend *b, const float *q, float *kc, float *vc, float *out)
{
    static int32_t pos[T], slot[T], q_start[2] = {0, T}, ctx[1] = {T}, table[NB] = {2, 0, 1, 3};
    static float k[T * KVH * HD], v[T * KVH * HD];
    for (int t = 0; t < T; t++) {
        pos[t] = t;
        slot[t] = table[t / BS] * BS + t % BS;
    }
    for (int i = 0; i < T * KVH * HD; i++) {
        k[i] = sinf((float)i);
        v[i] = cosf((float)i * 0.7f);
    }
    be_attn_layout l = {.n_seqs = 1, .q_start = q_start, .ctx_len = ctx, .block_table = table,
                        .max_blocks = NB, .block_size = BS, .slot = slot, .pos = pos,
                        .n_tokens = T};
    be_kv_store(b, k, v, T, KVH * HD, slot, kc, vc);
    be_attention(b, q, kc, vc, HEADS, KVH, HD, 0.25f, &l, out);
}

static void test_scratch_kept_and_errors(void **state)
{
    (void)state;
    inferd_error e = {{0}};
    be_backend *b = be_cpu_new(2, &e);
    assert_non_null(b);
    cpu_set_scratch_alloc(b, hook);
    enum { ROWS = 32, COLS = 64, N = 9 };
    float *wf = malloc(sizeof(float) * ROWS * COLS), norm[COLS], x[N * COLS], y[N * ROWS],
          y2[N * ROWS];
    for (int i = 0; i < ROWS * COLS; i++)
        wf[i] = sinf((float)i);
    for (int i = 0; i < COLS; i++)
        norm[i] = 1 + 0.01f * (float)i;
    for (int i = 0; i < N * COLS; i++)
        x[i] = cosf((float)i);
    be_weight w, nw;
    assert_int_equal(be_weight_init(b, wf, DT_F32, ROWS, COLS, &w, &e), 0);
    assert_int_equal(be_weight_init(b, norm, DT_F32, 1, COLS, &nw, &e), 0);
    assert_int_equal(be_reserve(b, 64, &e), 0);
    assert_true(allocs > 0);

    /* what load sized: matmul and norms run with every allocation failing */
    failing = 1;
    be_matmul(b, x, &w, NULL, N, y);
    be_rmsnorm(b, x, &nw, 1e-6f, N, COLS, x);
    assert_int_equal(be_to_host(b, NULL, NULL, 0, &e), 0);
    failing = 0;

    /* attention's scratch grows with the context: failing, a message */
    float *kc = be_alloc(b, sizeof(float) * NB * BS * KVH * HD);
    float *vc = be_alloc(b, sizeof(float) * NB * BS * KVH * HD);
    float q[T * HEADS * HD], out[T * HEADS * HD], out2[T * HEADS * HD];
    for (int i = 0; i < T * HEADS * HD; i++)
        q[i] = sinf((float)i * 0.3f);
    failing = 1;
    memset(out, 0, sizeof out);
    attend(b, q, kc, vc, out);
    assert_int_equal(be_to_host(b, NULL, NULL, 0, &e), -1);
    assert_non_null(strstr(e.msg, "cpu backend: out of memory for"));
    assert_non_null(strstr(e.msg, "attention scratch"));
    assert_int_equal(be_to_host(b, NULL, NULL, 0, &e), 0); /* reported once */
    /* once it could grow, a repeated step allocates nothing */
    failing = 0;
    attend(b, q, kc, vc, out);
    const int after_first = allocs;
    be_matmul(b, x, &w, NULL, N, y2);
    attend(b, q, kc, vc, out2);
    assert_int_equal(be_to_host(b, NULL, NULL, 0, &e), 0);
    assert_int_equal(allocs, after_first);
    assert_memory_equal(out, out2, sizeof out);
    for (int i = 0; i < T * HEADS * HD; i++)
        assert_false(isnan(out[i]));

    /* a weight wider than any so far needs more tile scratch: refused at load */
    failing = 1;
    enum { WIDE = 4096 };
    float *wide = calloc((size_t)4 * WIDE, sizeof(float));
    be_weight ww;
    assert_int_equal(be_weight_init(b, wide, DT_F32, 4, WIDE, &ww, &e), -1);
    assert_non_null(strstr(e.msg, "matmul tile scratch"));
    assert_int_equal(be_reserve(b, 1 << 20, &e), -1); /* a step larger than reserved */
    assert_non_null(strstr(e.msg, "index scratch"));
    /* and sampling reports a kept error instead of sampling */
    float lg[4 * 4] = {0};
    be_sample_row in[4] = {{0}};
    be_sample_out so[4];
    be_weight raw = {.data = wide, .dtype = DT_F32, .rows = 4, .cols = WIDE};
    be_matmul(b, wide, &raw, NULL, 4, lg); /* [4][WIDE] x [4][WIDE]^T */
    assert_int_equal(be_sample_rows(b, lg, 4, 4, in, so, &e), -1);
    assert_non_null(strstr(e.msg, "matmul tile scratch"));
    failing = 0;
    free(wide);
    free(wf);
    be_dealloc(b, kc);
    be_dealloc(b, vc);
    be_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scratch_kept_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
