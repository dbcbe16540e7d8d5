/* engine sampler from a device's candidates: the token and logprobs the
 * engine settles from be_sample_out (computed here by the CPU backend's
 * reference, be_sample_rows_host) against the full-row path (smp_sample,
 * smp_logprobs) on random logits, over temperature / min_p / top_k / top_p
 * and ties; plus when a row must fall back to its whole distribution. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

/* Smallest distance from u to a boundary of the inverse CDF smp_sample
 * walks (processed distribution, id order). */
static double boundary_gap(const eng_sampling *s, const float *l, int vocab, double u,
                           smp_scratch *w)
{
    float *p = malloc((size_t)vocab * sizeof *p);
    smp_probs(s, l, vocab, p, w);
    double acc = 0, gap = u;
    for (int i = 0; i < vocab; i++) {
        acc += p[i];
        if (fabs(acc - u) < gap)
            gap = fabs(acc - u);
    }
    free(p);
    return gap;
}

/* Row shapes: peaked, flat, coarse ties, a few -inf entries, one huge max. */
static void fill(float *l, int vocab, int shape, uint64_t rng[4])
{
    for (int i = 0; i < vocab; i++) {
        double a = smp_rng_uniform(rng), b = smp_rng_uniform(rng);
        switch (shape) {
        case 0: l[i] = (float)(12 * a * b); break;
        case 1: l[i] = (float)(0.5 * a); break;
        case 2: l[i] = (float)(int)(a * 5); break;               /* many ties */
        case 3: l[i] = a < 0.3 ? -INFINITY : (float)(6 * a * b); break;
        default: l[i] = (float)(3 * a) + (i == vocab / 3 ? 40.0f : 0); break;
        }
    }
}

typedef struct tally {
    int cases, settled, boundary;
} tally;

/* One case: candidates against the full row for the sampling s at u. */
static void check_case(const eng_sampling *s, const float *l, int vocab, double u,
                       smp_scratch *w, tally *t)
{
    be_sample_row in = smp_device_row(s, u);
    be_sample_out o;
    memset(&o, 0xa5, sizeof o);
    be_sample_rows_host(l, 1, vocab, &in, &o);
    float *row = malloc((size_t)vocab * sizeof *row);
    memcpy(row, l, (size_t)vocab * sizeof *row);
    smp_seq q = {.s = s, .tokens = (int32_t[]){0}, .n_prompt = 1};
    int32_t want = smp_sample(&q, row, vocab, u, w);
    free(row);
    /* the device's own token is smp_sample's without top_k/top_p */
    int k = s->top_k > 0 && s->top_k < vocab, p = s->top_p > 0 && s->top_p < 1;
    if (s->temperature < 1e-5f || (!k && !p))
        assert_int_equal(o.token, want);
    assert_int_equal(o.token_logit, l[o.token]);
    t->cases++;
    int32_t tok = -1;
    if (smp_pick_from_candidates(s, &o, vocab, u, &tok))
        return;
    t->settled++;
    if (tok != want) {
        double gap = boundary_gap(s, l, vocab, u, w);
        if (gap > 1e-6)
            fail_msg("T %g min_p %g top_k %d top_p %g u %.9f: token %d, full row %d",
                     s->temperature, s->min_p, s->top_k, s->top_p, u, tok, want);
        t->boundary++;
    }
    /* logprobs of the settled token and the top 20, as smp_logprobs */
    float lp, top_lp[20], want_lp, want_top_lp[20];
    int32_t top_ids[20], want_ids[20];
    assert_int_equal(smp_logprobs_from_candidates(&o, vocab, tok, 20, &lp, top_ids, top_lp), 0);
    smp_logprobs(l, vocab, tok, 20, &want_lp, want_ids, want_top_lp, w);
    assert_true(fabsf(lp - want_lp) <= 1e-5f);
    int kk = vocab < 20 ? vocab : 20;
    for (int i = 0; i < kk; i++) {
        assert_int_equal(top_ids[i], want_ids[i]);
        if (!(fabsf(top_lp[i] - want_top_lp[i]) <= 1e-5f) &&
            !(isinf(top_lp[i]) && top_lp[i] == want_top_lp[i]))
            fail_msg("top %d: logprob %g, full row %g", i, top_lp[i], want_top_lp[i]);
    }
}

static void test_against_full_row(void **state)
{
    (void)state;
    const int vocabs[] = {7, 64, 300, 5000};
    const float temps[] = {0, 0.3f, 1, 1.7f}, mps[] = {0, 0.05f, 0.3f};
    const float tps[] = {1, 0.95f, 0.8f, 0.4f};
    const int tks[] = {0, 1, 5, 40, 64, 100};
    uint64_t rng[4];
    smp_rng_seed(rng, 2024);
    tally all = {0}, topk_small = {0};
    for (size_t v = 0; v < sizeof vocabs / sizeof *vocabs; v++) {
        int vocab = vocabs[v];
        smp_scratch w;
        inferd_error e = {{0}};
        assert_int_equal(smp_scratch_init(&w, vocab, &e), 0);
        float *l = malloc((size_t)vocab * sizeof *l);
        for (int shape = 0; shape < 5; shape++)
            for (int rep = 0; rep < 3; rep++) {
                fill(l, vocab, shape, rng);
                for (size_t a = 0; a < 4; a++)
                    for (size_t b = 0; b < 3; b++)
                        for (size_t c = 0; c < 4; c++)
                            for (size_t d = 0; d < 6; d++) {
                                eng_sampling s;
                                eng_sampling_defaults(&s);
                                s.temperature = temps[a];
                                s.min_p = mps[b];
                                s.top_p = tps[c];
                                s.top_k = tks[d];
                                double u = smp_rng_uniform(rng);
                                check_case(&s, l, vocab, u, &w, &all);
                                if (s.top_k > 0 && s.top_k <= 40 && s.top_p == 1 &&
                                    s.temperature > 0 && shape != 2)
                                    check_case(&s, l, vocab, u, &w, &topk_small);
                            }
            }
        free(l);
        smp_scratch_free(&w);
    }
    print_message("%d cases, %d settled from the candidates, %d at a boundary\n", all.cases,
                  all.settled, all.boundary);
    /* The fallback must stay the exception: top_k within the list and no
     * ties across its end always settles; overall most rows do. */
    assert_int_equal(topk_small.settled, topk_small.cases);
    assert_true(all.settled > all.cases * 3 / 4);
    assert_true(all.boundary < 5);
}

/* Ties at the list's end: a top_k or top_p cut that falls among tokens of
 * the last weight cannot be settled (a tied token outside the list with a
 * lower id would come first); one above it can. */
static void test_ties_at_list_end(void **state)
{
    (void)state;
    enum { N = 200 };
    float l[N];
    for (int i = 0; i < N; i++)
        l[i] = i < 10 ? 5.0f : 1.0f; /* 10 large, 190 tied (list ends inside them) */
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.temperature = 1;
    be_sample_row in = smp_device_row(&s, 0.5);
    be_sample_out o;
    be_sample_rows_host(l, 1, N, &in, &o);
    assert_int_equal(o.n_top, BE_TOPK);
    for (int i = 0; i < BE_TOPK; i++) /* lower id first among ties */
        assert_int_equal(o.top_ids[i], i);
    int32_t tok;
    s.top_k = 10; /* the ten large ones: settled */
    assert_int_equal(smp_pick_from_candidates(&s, &o, N, 0.5, &tok), 0);
    assert_true(tok >= 0 && tok < 10);
    s.top_k = 11; /* the 11th ties with 189 others, most outside */
    assert_int_equal(smp_pick_from_candidates(&s, &o, N, 0.5, &tok), -1);
    s.top_k = 0;
    /* weights 1 for the ten, e^-4 for the tail: the ten hold 0.742 */
    s.top_p = 0.3f;
    assert_int_equal(smp_pick_from_candidates(&s, &o, N, 0.99, &tok), 0);
    assert_true(tok >= 0 && tok < 10);
    s.top_p = 0.78f; /* ends among the tied tail, still inside the list */
    assert_int_equal(smp_pick_from_candidates(&s, &o, N, 0.5, &tok), -1);
    s.top_p = 0.9f; /* ends past the list */
    assert_int_equal(smp_pick_from_candidates(&s, &o, N, 0.5, &tok), -1);
    /* min_p cutting the tail makes the list hold the whole support */
    s.min_p = 0.5f;
    in = smp_device_row(&s, 0.5);
    be_sample_rows_host(l, 1, N, &in, &o);
    assert_int_equal(smp_pick_from_candidates(&s, &o, N, 0.5, &tok), 0);
    s.top_p = 1;
    s.top_k = 150; /* larger than the list, but the support is inside */
    assert_int_equal(smp_pick_from_candidates(&s, &o, N, 0.5, &tok), 0);
    assert_true(tok >= 0 && tok < 10);
    s.min_p = 0;
    in = smp_device_row(&s, 0.5);
    be_sample_rows_host(l, 1, N, &in, &o);
    assert_int_equal(smp_pick_from_candidates(&s, &o, N, 0.5, &tok), -1);
}

static void test_needs_full_row(void **state)
{
    (void)state;
    eng_sampling s;
    eng_sampling_defaults(&s);
    int32_t toks[] = {3, 4, 5}, eos[] = {2};
    smp_seq q = {.s = &s, .tokens = toks, .n_prompt = 2, .n_output = 1, .eos = eos, .n_eos = 1};
    assert_int_equal(smp_needs_full_row(&q, 0), 0);
    assert_int_equal(smp_needs_full_row(&q, 20), 0);
    assert_int_equal(smp_needs_full_row(&q, BE_TOPK + 1), 1);
    int32_t bid = 1;
    float bval = 2;
    s.n_logit_bias = 1;
    s.logit_bias_ids = &bid;
    s.logit_bias_vals = &bval;
    assert_int_equal(smp_needs_full_row(&q, 0), 1);
    s.n_logit_bias = 0;
    s.min_tokens = 2; /* one output so far: eos still masked */
    assert_int_equal(smp_needs_full_row(&q, 0), 1);
    q.n_output = 2;
    assert_int_equal(smp_needs_full_row(&q, 0), 0);
    q.n_output = 1;
    q.n_eos = 0; /* nothing to mask */
    assert_int_equal(smp_needs_full_row(&q, 0), 0);
    s.min_tokens = 0;
    s.repetition_penalty = 1.2f;
    assert_int_equal(smp_needs_full_row(&q, 0), 1);
    s.repetition_penalty = 1;
    s.frequency_penalty = 0.5f;
    assert_int_equal(smp_needs_full_row(&q, 0), 1);
    q.n_output = 0; /* no output yet: the penalty changes nothing */
    assert_int_equal(smp_needs_full_row(&q, 0), 0);
    q.n_output = 1;
    s.frequency_penalty = 0;
    s.presence_penalty = -0.5f;
    assert_int_equal(smp_needs_full_row(&q, 0), 1);
}

/* The logprob of a drawn token outside the top list comes from
 * token_logit; any other token outside it is unknown. */
static void test_logprob_outside_list(void **state)
{
    (void)state;
    enum { N = 1000 };
    float *l = malloc(N * sizeof *l);
    for (int i = 0; i < N; i++)
        l[i] = (float)(i % 97) * 0.01f;
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.temperature = 5; /* nearly flat: the draw lands outside the top 64 */
    smp_scratch w;
    inferd_error e = {{0}};
    assert_int_equal(smp_scratch_init(&w, N, &e), 0);
    int outside = 0;
    uint64_t rng[4];
    smp_rng_seed(rng, 5);
    for (int rep = 0; rep < 50; rep++) {
        double u = smp_rng_uniform(rng);
        be_sample_row in = smp_device_row(&s, u);
        be_sample_out o;
        be_sample_rows_host(l, 1, N, &in, &o);
        int in_list = 0;
        for (int i = 0; i < o.n_top; i++)
            in_list |= o.top_ids[i] == o.token;
        outside += !in_list;
        float lp, want, tl[5], wtl[5];
        int32_t ti[5], wti[5];
        assert_int_equal(smp_logprobs_from_candidates(&o, N, o.token, 5, &lp, ti, tl), 0);
        smp_logprobs(l, N, o.token, 5, &want, wti, wtl, &w);
        assert_true(fabsf(lp - want) <= 1e-5f);
        int32_t other = o.token == 0 ? 1 : 0; /* logit 0: never in the top list */
        assert_int_equal(smp_logprobs_from_candidates(&o, N, other, 5, &lp, ti, tl), -1);
    }
    assert_true(outside > 25);
    smp_scratch_free(&w);
    free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_full_row),
        cmocka_unit_test(test_ties_at_list_end),
        cmocka_unit_test(test_needs_full_row),
        cmocka_unit_test(test_logprob_outside_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
