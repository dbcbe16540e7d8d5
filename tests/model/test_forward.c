/* model: the paged forward pass gives the same logits whatever the block
 * layout, the chunking of a prompt and the other sequences in the batch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

#define BS 16
#define FIX "tests/fixtures/models/"

typedef struct seq_run {
    const int32_t *tokens;
    int from, to;          /* rows computed in this step */
    const int32_t *table;  /* block table (max 8 blocks) */
} seq_run;

/* One forward over several sequences; logits of each sequence's last row. */
static void run(mdl_model *m, const seq_run *s, int ns, float *logits)
{
    int32_t tok[512], pos[512], slot[512], q_start[9], ctx[8], table[8 * 8], rows[8];
    int n = 0;
    for (int i = 0; i < ns; i++) {
        q_start[i] = n;
        for (int p = s[i].from; p < s[i].to; p++, n++) {
            tok[n] = s[i].tokens[p];
            pos[n] = p;
            slot[n] = s[i].table[p / BS] * BS + p % BS;
        }
        ctx[i] = s[i].to;
        memcpy(table + i * 8, s[i].table, 8 * sizeof(int32_t));
        rows[i] = n - 1;
    }
    q_start[ns] = n;
    mdl_batch b = {.n_tokens = n, .tokens = tok, .pos = pos, .slot = slot, .n_seqs = ns,
                   .q_start = q_start, .ctx_len = ctx, .block_table = table,
                   .max_blocks = 8, .n_logits = ns, .logit_rows = rows};
    inferd_error e = {{0}};
    int rc = mdl_forward(m, &b, logits, &e);
    if (rc)
        fail_msg("forward: %s", e.msg);
}

/* precision: --matmul-precision; avx2: force the AVX2 path of bfloat16. */
static void check_batch_invariance(const char *precision, int avx2)
{
    mdl_model *m = NULL;
    inferd_error e = {{0}};
    mdl_options o = {.device = "cpu", .n_threads = 2, .matmul_precision = precision};
    const char *was = getenv("INFERD_CPU_NO_AVX512");
    char *saved = was ? strdup(was) : NULL;
    if (avx2)
        setenv("INFERD_CPU_NO_AVX512", "1", 1);
    int rc = mdl_load(FIX "qwen3", &o, &m, &e);
    if (saved) /* as it was */
        setenv("INFERD_CPU_NO_AVX512", saved, 1);
    else
        unsetenv("INFERD_CPU_NO_AVX512");
    free(saved);
    assert_int_equal(rc, 0);
    assert_int_equal(mdl_kv_init(m, 32, BS, &e), 0);
    int vocab = mdl_config(m)->vocab_size;
    int32_t a[40], b[23];
    for (int i = 0; i < 40; i++)
        a[i] = (i * 37 + 11) % vocab;
    for (int i = 0; i < 23; i++)
        b[i] = (i * 101 + 5) % vocab;
    float *alone_a = malloc(sizeof(float) * vocab), *alone_b = malloc(sizeof(float) * vocab);
    float *both = malloc(sizeof(float) * 2 * vocab);
    int32_t ta[8] = {0, 1, 2}, tb[8] = {3, 4};
    seq_run ra = {a, 0, 40, ta}, rb = {b, 0, 23, tb};
    run(m, &ra, 1, alone_a);
    run(m, &rb, 1, alone_b);

    /* Same sequences, scattered blocks, A's prompt in two chunks, B batched
     * with A's second chunk. */
    int32_t ta2[8] = {9, 30, 17}, tb2[8] = {5, 22};
    seq_run c1 = {a, 0, 24, ta2};
    run(m, &c1, 1, both);
    seq_run c2[2] = {{b, 0, 23, tb2}, {a, 24, 40, ta2}};
    run(m, c2, 2, both);
    assert_memory_equal(both, alone_b, sizeof(float) * vocab);
    assert_memory_equal(both + vocab, alone_a, sizeof(float) * vocab);

    /* A decode step batched with a prefill equals the decode alone. */
    int32_t a2[41];
    memcpy(a2, a, sizeof a);
    a2[40] = 7;
    seq_run d_alone = {a2, 40, 41, ta2};
    run(m, &d_alone, 1, alone_a);
    int32_t tb3[8] = {6, 7};
    seq_run d_mix[2] = {{a2, 40, 41, ta2}, {b, 0, 23, tb3}};
    /* Rewriting position 40's KV with the same values is harmless. */
    run(m, d_mix, 2, both);
    assert_memory_equal(both, alone_a, sizeof(float) * vocab);
    free(alone_a);
    free(alone_b);
    free(both);
    mdl_free(m);
}

static void test_batch_invariance(void **state)
{
    (void)state;
    check_batch_invariance(NULL, 0);
}

/* The same in bfloat16 precision, on this CPU's kernels and on the AVX2
 * emulation. */
static void test_batch_invariance_bf16(void **state)
{
    (void)state;
    check_batch_invariance("bfloat16", 0);
    check_batch_invariance("bfloat16", 1);
}

/* mdl_forward_sample: the same logits as mdl_forward, kept on the device;
 * the sampled results are the host reference's over them, and
 * mdl_logits_rows hands back exactly the rows mdl_forward returned. */
static void test_forward_sample(void **state)
{
    (void)state;
    mdl_model *m = NULL;
    inferd_error e = {{0}};
    mdl_options o = {.device = "cpu", .n_threads = 2};
    assert_int_equal(mdl_load(FIX "qwen3", &o, &m, &e), 0);
    assert_int_equal(mdl_kv_init(m, 32, BS, &e), 0);
    int vocab = mdl_config(m)->vocab_size;
    int32_t a[20], tok[20], pos[20], slot[20], q[2] = {0, 20}, ctx = 20, table[2] = {3, 5};
    int32_t rows[3] = {4, 12, 19};
    for (int i = 0; i < 20; i++) {
        a[i] = tok[i] = (i * 53 + 7) % vocab;
        pos[i] = i;
        slot[i] = table[i / BS] * BS + i % BS;
    }
    mdl_batch b = {.n_tokens = 20, .tokens = tok, .pos = pos, .slot = slot, .n_seqs = 1,
                   .q_start = q, .ctx_len = &ctx, .block_table = table, .max_blocks = 2,
                   .n_logits = 3, .logit_rows = rows};
    float *want = malloc(sizeof(float) * 3 * vocab), *got = malloc(sizeof(float) * 3 * vocab);
    assert_int_equal(mdl_forward(m, &b, want, &e), 0);
    /* nothing kept after a plain forward */
    assert_int_equal(mdl_logits_rows(m, 0, 1, got, &e), -1);
    be_sample_row in[3] = {{0, 0, 0, 1}, {0.8f, 0.05f, 0.3, 1}, {1.3f, 0, 0.9, 1}};
    be_sample_out out[3], ref[3];
    memset(out, 0, sizeof out);
    memset(ref, 0, sizeof ref);
    assert_int_equal(mdl_forward_sample(m, &b, in, out, &e), 0);
    be_sample_rows_host(want, 3, vocab, in, ref);
    assert_memory_equal(out, ref, sizeof out);
    assert_int_equal(mdl_logits_rows(m, 0, 3, got, &e), 0);
    assert_memory_equal(got, want, sizeof(float) * 3 * vocab);
    assert_int_equal(mdl_logits_rows(m, 2, 1, got, &e), 0);
    assert_memory_equal(got, want + 2 * vocab, sizeof(float) * vocab);
    assert_int_equal(mdl_logits_rows(m, 2, 2, got, &e), -1);
    assert_non_null(strstr(e.msg, "kept 3"));
    assert_int_equal(mdl_logits_rows(m, -1, 1, got, &e), -1);
    /* no logit rows: nothing sampled, nothing kept */
    b.n_logits = 0;
    assert_int_equal(mdl_forward_sample(m, &b, in, out, &e), 0);
    assert_int_equal(mdl_logits_rows(m, 0, 1, got, &e), -1);
    assert_int_equal(mdl_logits_rows(m, 0, 0, got, &e), 0);
    (void)a;
    free(want);
    free(got);
    mdl_free(m);
}

static void test_errors(void **state)
{
    (void)state;
    mdl_model *m = NULL;
    inferd_error e = {{0}};
    mdl_options o = {.device = "cpu", .n_threads = 1};
    assert_int_equal(mdl_load("tests/fixtures/models/does-not-exist", &o, &m, &e), -1);
    assert_non_null(strstr(e.msg, "does-not-exist"));
    o.device = "tpu";
    assert_int_equal(mdl_load(FIX "llama", &o, &m, &e), -1);
    assert_non_null(strstr(e.msg, "tpu"));
    o.device = "cpu";
    assert_int_equal(mdl_load(FIX "llama", &o, &m, &e), 0);
    size_t fr = 0, total = 0;
    assert_int_equal(mdl_device_memory(m, &fr, &total, &e), -1); /* host memory */
    assert_non_null(strstr(e.msg, "cpu"));
    int32_t tok = 99999, pos = 0, slot = 0, q[2] = {0, 1}, ctx = 1, table = 0, row = 0;
    mdl_batch b = {.n_tokens = 1, .tokens = &tok, .pos = &pos, .slot = &slot, .n_seqs = 1,
                   .q_start = q, .ctx_len = &ctx, .block_table = &table, .max_blocks = 1,
                   .n_logits = 1, .logit_rows = &row};
    float logits[512];
    assert_int_equal(mdl_forward(m, &b, logits, &e), -1); /* no KV cache yet */
    assert_int_equal(mdl_kv_init(m, 1, BS, &e), 0);
    assert_int_equal(mdl_forward(m, &b, logits, &e), -1);
    assert_non_null(strstr(e.msg, "99999"));
    mdl_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_batch_invariance_bf16),
        cmocka_unit_test(test_forward_sample),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
