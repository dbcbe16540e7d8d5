/* engine sampler: each knob against a distribution computed by hand, the
 * order vLLM applies them in, inverse-CDF draws, logprobs and the
 * per-request generator. No model needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

#define V 8

typedef struct fixture {
    smp_scratch w;
    eng_sampling s;
    float logits[V];
    float p[V];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    inferd_error e = {{0}};
    if (smp_scratch_init(&f->w, V, &e))
        return -1;
    eng_sampling_defaults(&f->s);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    smp_scratch_free(&f->w);
    free(f);
    return 0;
}

/* logits = log(p) for p = .5 .2 .15 .1 .05 0 0 0 (the zeros as -inf) */
static void five(fixture *f)
{
    static const float p[V] = {0.5f, 0.2f, 0.15f, 0.1f, 0.05f, 0, 0, 0};
    for (int i = 0; i < V; i++)
        f->logits[i] = p[i] > 0 ? logf(p[i]) : -INFINITY;
}

static void expect_probs(const float *got, const double *want)
{
    for (int i = 0; i < V; i++)
        if (fabs(got[i] - want[i]) > 1e-6)
            fail_msg("token %d: probability %.7f, want %.7f", i, got[i], want[i]);
}

static void test_temperature(void **state)
{
    fixture *f = *state;
    five(f);
    f->s.temperature = 1;
    smp_probs(&f->s, f->logits, V, f->p, &f->w);
    expect_probs(f->p, (double[V]){0.5, 0.2, 0.15, 0.1, 0.05, 0, 0, 0});
    /* T = 2: p^(1/2) renormalised */
    f->s.temperature = 2;
    smp_probs(&f->s, f->logits, V, f->p, &f->w);
    double r[5] = {sqrt(0.5), sqrt(0.2), sqrt(0.15), sqrt(0.1), sqrt(0.05)}, z = 0;
    for (int i = 0; i < 5; i++)
        z += r[i];
    expect_probs(f->p, (double[V]){r[0] / z, r[1] / z, r[2] / z, r[3] / z, r[4] / z, 0, 0, 0});
}

static void test_top_p(void **state)
{
    fixture *f = *state;
    five(f);
    f->s.temperature = 1;
    /* kept while the mass before a token is below top_p */
    f->s.top_p = 0.6f;
    smp_probs(&f->s, f->logits, V, f->p, &f->w);
    expect_probs(f->p, (double[V]){0.5 / 0.7, 0.2 / 0.7, 0, 0, 0, 0, 0, 0});
    f->s.top_p = 0.75f;
    smp_probs(&f->s, f->logits, V, f->p, &f->w);
    expect_probs(f->p, (double[V]){0.5 / 0.85, 0.2 / 0.85, 0.15 / 0.85, 0, 0, 0, 0, 0});
    /* the most likely token always stays */
    f->s.top_p = 0.01f;
    smp_probs(&f->s, f->logits, V, f->p, &f->w);
    expect_probs(f->p, (double[V]){1, 0, 0, 0, 0, 0, 0, 0});
}

static void test_top_k(void **state)
{
    fixture *f = *state;
    five(f);
    f->s.temperature = 1;
    f->s.top_k = 2;
    smp_probs(&f->s, f->logits, V, f->p, &f->w);
    expect_probs(f->p, (double[V]){0.5 / 0.7, 0.2 / 0.7, 0, 0, 0, 0, 0, 0});
    f->s.top_k = V + 5; /* larger than the vocabulary: off */
    smp_probs(&f->s, f->logits, V, f->p, &f->w);
    expect_probs(f->p, (double[V]){0.5, 0.2, 0.15, 0.1, 0.05, 0, 0, 0});
    /* ties with the k-th stay, as in vLLM */
    float tie[V] = {1, 3, 3, 3, 0, 0, 0, 0};
    f->s.top_k = 2;
    smp_probs(&f->s, tie, V, f->p, &f->w);
    expect_probs(f->p, (double[V]){0, 1.0 / 3, 1.0 / 3, 1.0 / 3, 0, 0, 0, 0});
}

static void test_min_p(void **state)
{
    fixture *f = *state;
    five(f);
    f->s.temperature = 1;
    /* threshold .25 * .5 = .125: .15 stays, .1 goes */
    f->s.min_p = 0.25f;
    smp_probs(&f->s, f->logits, V, f->p, &f->w);
    expect_probs(f->p, (double[V]){0.5 / 0.85, 0.2 / 0.85, 0.15 / 0.85, 0, 0, 0, 0, 0});
}

/* temperature, then min_p, then top_k, then top_p over what is left */
static void test_order(void **state)
{
    fixture *f = *state;
    five(f);
    f->s.temperature = 0.5f; /* p^2: .25 .04 .0225 .01 .0025, sum .325 */
    f->s.min_p = 0.05f;      /* relative to .25: drops .01 and .0025 */
    f->s.top_k = 3;
    f->s.top_p = 0.85f;      /* of .3125: .25/.3125 = .8 < .85 so .04 stays, then stop */
    smp_probs(&f->s, f->logits, V, f->p, &f->w);
    expect_probs(f->p, (double[V]){0.25 / 0.29, 0.04 / 0.29, 0, 0, 0, 0, 0, 0});
}

static void test_penalties(void **state)
{
    fixture *f = *state;
    float l[V] = {2, -1, 0.5f, 3, 1, 1, 1, 1};
    int32_t toks[6] = {0, 1, 5, /* output: */ 1, 2, 2};
    smp_seq q = {.s = &f->s, .tokens = toks, .n_prompt = 3, .n_output = 3};
    /* repetition over prompt and output, once per distinct token */
    f->s.repetition_penalty = 2;
    smp_process(&q, l, V, &f->w);
    float want1[V] = {1, -2, 0.25f, 3, 1, 0.5f, 1, 1};
    assert_memory_equal(l, want1, sizeof l);
    /* frequency and presence over output tokens only */
    f->s.repetition_penalty = 1;
    f->s.frequency_penalty = 0.5f;
    f->s.presence_penalty = 0.25f;
    float l2[V] = {2, -1, 0.5f, 3, 1, 1, 1, 1};
    smp_process(&q, l2, V, &f->w);
    float want2[V] = {2, -1.75f, 0.5f - 1.25f, 3, 1, 1, 1, 1};
    assert_memory_equal(l2, want2, sizeof l2);
    /* the scratch counters are left clean: running again changes the same */
    float l3[V] = {2, -1, 0.5f, 3, 1, 1, 1, 1};
    smp_process(&q, l3, V, &f->w);
    assert_memory_equal(l3, want2, sizeof l3);
    for (int i = 0; i < V; i++) {
        assert_int_equal(f->w.cnt[i], 0);
        assert_int_equal(f->w.seen[i], 0);
    }
    /* negative penalties reward */
    f->s.frequency_penalty = -1;
    f->s.presence_penalty = 0;
    float l4[V] = {0};
    smp_process(&q, l4, V, &f->w);
    assert_true(l4[2] == 2 && l4[1] == 1 && l4[0] == 0);
}

static void test_logit_bias_and_min_tokens(void **state)
{
    fixture *f = *state;
    int32_t ids[2] = {1, 3}, eos[1] = {7};
    float vals[2] = {5, -100};
    f->s.n_logit_bias = 2;
    f->s.logit_bias_ids = ids;
    f->s.logit_bias_vals = vals;
    f->s.n_stop_ids = 1;
    f->s.stop_ids[0] = 6;
    f->s.min_tokens = 2;
    int32_t toks[3] = {4, 4, 4};
    smp_seq q = {.s = &f->s, .tokens = toks, .n_prompt = 2, .n_output = 1, .eos = eos, .n_eos = 1};
    float l[V] = {0, 0, 0, 0, 0, 0, 9, 9};
    smp_process(&q, l, V, &f->w);
    assert_true(l[1] == 5 && l[3] == -100 && l[0] == 0);
    assert_true(isinf(l[6]) && l[6] < 0 && isinf(l[7]) && l[7] < 0);
    /* greedy honours both: 6 and 7 are out, 1 wins */
    float l2[V] = {0, 0, 0, 0, 0, 0, 9, 9};
    f->s.temperature = 0;
    assert_int_equal(smp_sample(&q, l2, V, 0.5, &f->w), 1);
    /* once min_tokens are out, eos and stop ids are allowed again */
    q.n_output = 2;
    float l3[V] = {0, 0, 0, 0, 0, 0, 9, 9};
    smp_process(&q, l3, V, &f->w);
    assert_true(l3[6] == 9 && l3[7] == 9);
    float l4[V] = {0, 0, 0, 0, 0, 0, 9, 9};
    assert_int_equal(smp_sample(&q, l4, V, 0.5, &f->w), 6); /* tie: lower id */
}

/* The draw walks token ids in order: u picks the token whose cumulative
 * probability first exceeds it. */
static void test_inverse_cdf(void **state)
{
    fixture *f = *state;
    int32_t toks[1] = {0};
    smp_seq q = {.s = &f->s, .tokens = toks, .n_prompt = 1};
    f->s.temperature = 1;
    double us[] = {0, 0.49, 0.51, 0.69, 0.71, 0.86, 0.96, 0.999999};
    int want[] = {0, 0, 1, 1, 2, 3, 4, 4};
    for (size_t i = 0; i < sizeof us / sizeof *us; i++) {
        five(f);
        assert_int_equal(smp_sample(&q, f->logits, V, us[i], &f->w), want[i]);
    }
    /* with top_p .6 only 0 and 1 remain: .5/.7 splits at .714 */
    f->s.top_p = 0.6f;
    five(f);
    assert_int_equal(smp_sample(&q, f->logits, V, 0.70, &f->w), 0);
    five(f);
    assert_int_equal(smp_sample(&q, f->logits, V, 0.72, &f->w), 1);
    five(f);
    assert_int_equal(smp_sample(&q, f->logits, V, 0.9999, &f->w), 1);
}

/* Many draws from the generator follow the filtered distribution. */
static void test_empirical(void **state)
{
    fixture *f = *state;
    int32_t toks[1] = {0};
    smp_seq q = {.s = &f->s, .tokens = toks, .n_prompt = 1};
    f->s.temperature = 1;
    f->s.top_k = 3;
    uint64_t rng[4];
    smp_rng_seed(rng, 12345);
    int count[V] = {0}, n = 40000;
    for (int i = 0; i < n; i++) {
        five(f);
        count[smp_sample(&q, f->logits, V, smp_rng_uniform(rng), &f->w)]++;
    }
    double want[3] = {0.5 / 0.85, 0.2 / 0.85, 0.15 / 0.85};
    for (int i = 0; i < 3; i++) {
        double got = (double)count[i] / n, sd = sqrt(want[i] * (1 - want[i]) / n);
        if (fabs(got - want[i]) > 5 * sd)
            fail_msg("token %d drawn %.4f of the time, want %.4f", i, got, want[i]);
    }
    for (int i = 3; i < V; i++)
        assert_int_equal(count[i], 0);
}

static void test_logprobs(void **state)
{
    fixture *f = *state;
    float l[V] = {1, 3, 3, 0, -2, 2, 0.5f, -1};
    double z = 0;
    for (int i = 0; i < V; i++)
        z += exp(l[i]);
    float lp, top[4];
    int32_t ids[4];
    smp_logprobs(l, V, 5, 4, &lp, ids, top, &f->w);
    assert_true(fabs(lp - (2 - log(z))) < 1e-6);
    int32_t want[4] = {1, 2, 5, 0}; /* ties: lower id first */
    assert_memory_equal(ids, want, sizeof want);
    for (int i = 0; i < 4; i++)
        assert_true(fabs(top[i] - (l[want[i]] - log(z))) < 1e-6);
    /* k above the vocabulary is clamped */
    float top8[V + 2];
    int32_t ids8[V + 2];
    smp_logprobs(l, V, 0, V + 2, &lp, ids8, top8, &f->w);
    assert_int_equal(ids8[V - 1], 4);
}

/* The plain definition: sort the whole vocabulary, cut, renormalise. */
static const float *ref_w;
static int ref_cmp(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (ref_w[i] != ref_w[j])
        return ref_w[i] > ref_w[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

static void ref_probs(const eng_sampling *s, const float *l, int n, double *out)
{
    float *w = malloc(sizeof(float) * n);
    int32_t *idx = malloc(sizeof(int32_t) * n);
    float mx = l[0];
    for (int i = 1; i < n; i++)
        mx = l[i] > mx ? l[i] : mx;
    for (int i = 0; i < n; i++) {
        w[i] = expf((l[i] - mx) / s->temperature);
        if (w[i] < s->min_p)
            w[i] = 0;
        idx[i] = i;
    }
    ref_w = w;
    qsort(idx, (size_t)n, sizeof *idx, ref_cmp);
    int keep = n;
    while (keep > 0 && w[idx[keep - 1]] == 0)
        keep--;
    if (s->top_k > 0 && s->top_k < keep) {
        int k = s->top_k;
        while (k < keep && w[idx[k]] >= w[idx[s->top_k - 1]])
            k++;
        keep = k;
    }
    double mass = 0, z = 0, before = 0;
    for (int i = 0; i < keep; i++)
        mass += w[idx[i]];
    if (s->top_p < 1) {
        int k = 0;
        while (k < keep && (k == 0 || before < s->top_p * mass))
            before += w[idx[k++]];
        keep = k;
    }
    for (int i = 0; i < n; i++)
        out[i] = 0;
    for (int i = 0; i < keep; i++)
        z += w[idx[i]];
    for (int i = 0; i < keep; i++)
        out[idx[i]] = w[idx[i]] / z;
    free(w);
    free(idx);
}

/* Over a 6000-token vocabulary and many settings, the sampler's shortcut
 * (sorting only the tokens that can survive) equals the plain definition. */
static void test_probs_match_full_sort(void **state)
{
    (void)state;
    enum { N = 6000 };
    smp_scratch w;
    inferd_error e = {{0}};
    assert_int_equal(smp_scratch_init(&w, N, &e), 0);
    float *l = malloc(sizeof(float) * N), *p = malloc(sizeof(float) * N);
    double *want = malloc(sizeof(double) * N);
    uint64_t rng[4];
    smp_rng_seed(rng, 99);
    const float temps[] = {0.3f, 1, 2.5f}, tps[] = {1, 0.95f, 0.5f, 0.1f}, mps[] = {0, 0.05f};
    const int tks[] = {0, 1, 40, 5999};
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) /* a peaked distribution with ties */
            l[i] = (float)(round == 2 ? (int)(smp_rng_uniform(rng) * 6)
                                      : 8 * smp_rng_uniform(rng) * smp_rng_uniform(rng));
        for (size_t a = 0; a < 3; a++)
            for (size_t b = 0; b < 4; b++)
                for (size_t c = 0; c < 2; c++)
                    for (size_t d = 0; d < 4; d++) {
                        eng_sampling s;
                        eng_sampling_defaults(&s);
                        s.temperature = temps[a];
                        s.top_p = tps[b];
                        s.min_p = mps[c];
                        s.top_k = tks[d];
                        smp_probs(&s, l, N, p, &w);
                        ref_probs(&s, l, N, want);
                        for (int i = 0; i < N; i++)
                            if (fabs(p[i] - want[i]) > 1e-6 || (p[i] == 0) != (want[i] == 0))
                                fail_msg("T %g top_p %g min_p %g top_k %d: token %d %g vs %g",
                                         s.temperature, s.top_p, s.min_p, s.top_k, i, p[i],
                                         want[i]);
                    }
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(w.seen[i], 0);
    free(l);
    free(p);
    free(want);
    smp_scratch_free(&w);
}

static void test_rng(void **state)
{
    (void)state;
    uint64_t a[4], b[4], c[4];
    smp_rng_seed(a, 7);
    smp_rng_seed(b, 7);
    smp_rng_seed(c, 8);
    int same_c = 0;
    double sum = 0;
    for (int i = 0; i < 10000; i++) {
        double x = smp_rng_uniform(a), y = smp_rng_uniform(b), w = smp_rng_uniform(c);
        assert_true(x == y);
        assert_true(x >= 0 && x < 1);
        same_c += x == w;
        sum += x;
    }
    assert_true(same_c < 5);
    assert_true(fabs(sum / 10000 - 0.5) < 0.02);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_temperature, setup, teardown),
        cmocka_unit_test_setup_teardown(test_top_p, setup, teardown),
        cmocka_unit_test_setup_teardown(test_top_k, setup, teardown),
        cmocka_unit_test_setup_teardown(test_min_p, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_penalties, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logit_bias_and_min_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inverse_cdf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empirical, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logprobs, setup, teardown),
        cmocka_unit_test(test_probs_match_full_sort),
        cmocka_unit_test(test_rng),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
