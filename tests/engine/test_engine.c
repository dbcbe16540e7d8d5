/* engine: requests through the real engine thread on the tiny checkpoints.
 * The CPU forward pass is batch invariant (bitwise), so every request must
 * produce exactly the tokens it produces alone, whatever ran beside it, how
 * its prompt was chunked, whether it was preempted or served from the
 * prefix cache. Greedy outputs also match transformers (the golden files). */
#include <jansson.h>
#include <math.h>
#include <pthread.h>

#include "engine/internal.h"
#include "tests/engine/helpers.h"

static const char *MODELS[] = {"llama", "llama31", "mistral", "qwen2", "qwen2_yarn", "qwen3"};

/* Greedy continuations of the golden prompts, all three batched together
 * in an engine whose token budget chunks the 300-token prompt, equal
 * transformers' tokens (up to a step whose top-2 margin is too small to
 * decide), and the first token's top logprobs match the reference's. */
static void test_golden(void **state)
{
    (void)state;
    for (size_t mi = 0; mi < sizeof MODELS / sizeof *MODELS; mi++) {
        char path[256];
        snprintf(path, sizeof path, "tests/fixtures/model_golden/%s.json", MODELS[mi]);
        json_error_t je;
        json_t *root = json_load_file(path, 0, &je);
        if (!root)
            fail_msg("%s: %s", path, je.text);
        mdl_model *m = load_model_threads(MODELS[mi], 2); /* OpenMP inside the engine thread */
        eng_config c = small_config(128, m);
        c.max_num_batched_tokens = 64;
        eng_engine *g = make_engine(m, &c);
        json_t *cases = json_object_get(root, "cases");
        size_t nc = json_array_size(cases);
        eng_request *req[8];
        for (size_t k = 0; k < nc; k++) {
            json_t *jp = json_object_get(json_array_get(cases, k), "prompt");
            int32_t prompt[512];
            int np = (int)json_array_size(jp);
            for (int i = 0; i < np; i++)
                prompt[i] = (int32_t)json_integer_value(json_array_get(jp, (size_t)i));
            eng_sampling s;
            eng_sampling_defaults(&s);
            s.temperature = 0;
            s.ignore_eos = 1;
            s.max_tokens = (int)json_array_size(json_object_get(json_array_get(cases, k), "greedy"));
            s.top_logprobs = 10;
            s.logprobs = 1;
            inferd_error e = {{0}};
            req[k] = eng_submit(g, prompt, np, &s, &e);
            assert_non_null(req[k]);
        }
        for (size_t k = 0; k < nc; k++) {
            json_t *cs = json_array_get(cases, k);
            json_t *greedy = json_object_get(cs, "greedy"), *margins = json_object_get(cs, "margins");
            json_t *lps = json_object_get(cs, "logprobs");
            int32_t out[64];
            eng_finish fin;
            eng_event first;
            int n = drain(req[k], out, 64, &fin, &first);
            assert_int_equal(n, (int)json_array_size(greedy));
            assert_int_equal(fin, ENG_FINISH_LENGTH);
            for (int i = 0; i < n; i++) {
                int ref = (int)json_integer_value(json_array_get(greedy, (size_t)i));
                if (out[i] != ref) {
                    double mg = json_real_value(json_array_get(margins, (size_t)i));
                    if (mg > 1e-3)
                        fail_msg("%s case %zu step %d: engine %d, transformers %d (margin %g)",
                                 MODELS[mi], k, i, out[i], ref, mg);
                    break; /* a near tie decided the other way: the rest may differ */
                }
            }
            assert_int_equal(first.n_top, 10);
            for (int i = 0; i < first.n_top; i++) {
                double ref = json_real_value(json_array_get(lps, (size_t)first.top_ids[i]));
                if (fabs(first.top_logprobs[i] - ref) > 1e-4)
                    fail_msg("%s case %zu: logprob of %d: %g vs reference %g", MODELS[mi], k,
                             first.top_ids[i], first.top_logprobs[i], ref);
                if (i > 0)
                    assert_true(first.top_logprobs[i] <= first.top_logprobs[i - 1]);
            }
            assert_true(fabs(first.logprob - first.top_logprobs[0]) < 1e-6);
            eng_release(req[k]);
        }
        eng_stats st;
        wait_idle(g, &st);
        assert_int_equal(st.kv_blocks_used, 0);
        eng_destroy(g);
        mdl_free(m);
        json_decref(root);
    }
}

/* ---- many requests at once ---- */

#define NREQ 40
#define NTHREADS 4

typedef struct job {
    int32_t prompt[200];
    int n_prompt;
    eng_sampling s;
    int32_t solo[64];
    int n_solo;
    int32_t got[64];
    int n_got;
    eng_finish fin;
} job;

static void make_jobs(job *jobs, int vocab)
{
    int32_t shared[64];
    make_prompt(shared, 64, 999, vocab);
    for (int i = 0; i < NREQ; i++) {
        job *j = &jobs[i];
        memset(j, 0, sizeof *j);
        j->n_prompt = 3 + (i * 37) % 150;
        make_prompt(j->prompt, j->n_prompt, (uint32_t)i + 1, vocab);
        if (i % 3 == 0) /* a third share a 64-token prefix */
            memcpy(j->prompt, shared, sizeof(int32_t) * (j->n_prompt < 64 ? j->n_prompt : 64));
        eng_sampling_defaults(&j->s);
        j->s.ignore_eos = 1;
        j->s.max_tokens = 8 + (i * 13) % 40;
        if (i % 4 == 1) { /* seeded random sampling with every knob */
            j->s.temperature = 0.8f;
            j->s.top_p = 0.9f;
            j->s.top_k = 50;
            j->s.min_p = 0.01f;
            j->s.repetition_penalty = 1.1f;
            j->s.presence_penalty = 0.2f;
            j->s.frequency_penalty = 0.1f;
            j->s.has_seed = 1;
            j->s.seed = 1000 + (uint64_t)i;
        } else {
            j->s.temperature = 0;
        }
    }
}

typedef struct worker {
    eng_engine *g;
    job *jobs;
    int first, step;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (int i = w->first; i < NREQ; i += w->step) {
        inferd_error e = {{0}};
        job *j = &w->jobs[i];
        eng_request *r = eng_submit(w->g, j->prompt, j->n_prompt, &j->s, &e);
        if (!r) {
            j->n_got = -1;
            continue;
        }
        j->n_got = drain(r, j->got, 64, &j->fin, NULL);
        eng_release(r);
    }
    return NULL;
}

/* 40 requests from 4 threads into an engine with 6 sequences at most, a
 * 48-token budget (chunked prefills) and a pool far smaller than the load
 * (preemptions): each gets exactly its solo tokens (greedy and seeded). */
static void test_concurrent_preemption(void **state)
{
    (void)state;
    mdl_model *m = load_model("qwen3");
    int vocab = mdl_config(m)->vocab_size;
    job *jobs = calloc(NREQ, sizeof *jobs);
    make_jobs(jobs, vocab);
    /* solo: one at a time, roomy pool, no prefix cache */
    {
        eng_config c = small_config(64, m);
        c.enable_prefix_caching = 0;
        eng_engine *g = make_engine(m, &c);
        for (int i = 0; i < NREQ; i++) {
            inferd_error e = {{0}};
            eng_request *r = eng_submit(g, jobs[i].prompt, jobs[i].n_prompt, &jobs[i].s, &e);
            assert_non_null(r);
            eng_finish fin;
            jobs[i].n_solo = drain(r, jobs[i].solo, 64, &fin, NULL);
            assert_int_equal(jobs[i].n_solo, jobs[i].s.max_tokens);
            eng_release(r);
        }
        eng_destroy(g);
        mdl_free(m);
    }
    /* greedy solo outputs equal the straight-on-the-model reference */
    for (int i = 0; i < NREQ; i += 8) {
        int32_t ref[64];
        if (jobs[i].s.temperature > 0)
            continue;
        ref_greedy("qwen3", jobs[i].prompt, jobs[i].n_prompt, jobs[i].n_solo, ref);
        assert_memory_equal(ref, jobs[i].solo, sizeof(int32_t) * jobs[i].n_solo);
    }
    /* with the prefix cache, and without it (pure recomputation) */
    for (int pc = 1; pc >= 0; pc--) {
        m = load_model("qwen3");
        eng_config c = small_config(24, m);
        c.max_model_len = 256;
        c.max_num_seqs = 6;
        c.max_num_batched_tokens = 48;
        c.enable_prefix_caching = pc;
        eng_engine *g = make_engine(m, &c);
        pthread_t th[NTHREADS];
        worker w[NTHREADS];
        for (int i = 0; i < NREQ; i++)
            jobs[i].n_got = 0;
        for (int t = 0; t < NTHREADS; t++) {
            w[t] = (worker){g, jobs, t, NTHREADS};
            pthread_create(&th[t], NULL, worker_main, &w[t]);
        }
        for (int t = 0; t < NTHREADS; t++)
            pthread_join(th[t], NULL);
        for (int i = 0; i < NREQ; i++) {
            if (jobs[i].n_got != jobs[i].n_solo ||
                memcmp(jobs[i].got, jobs[i].solo, sizeof(int32_t) * jobs[i].n_solo))
                fail_msg("request %d (prompt %d, %s, prefix cache %d): batched output differs "
                         "from solo", i, jobs[i].n_prompt,
                         jobs[i].s.temperature > 0 ? "seeded" : "greedy", pc);
            assert_int_equal(jobs[i].fin, ENG_FINISH_LENGTH);
        }
        eng_stats st;
        wait_idle(g, &st);
        assert_true(st.preemptions > 0);
        assert_true(pc ? st.prefix_hits > 0 : st.prefix_hits == 0);
        assert_int_equal(st.kv_blocks_used, 0);
        assert_int_equal(st.running, 0);
        assert_int_equal((int)st.requests_finished, NREQ);
        uint64_t gen = 0, prompt = 0;
        for (int i = 0; i < NREQ; i++) {
            gen += (uint64_t)jobs[i].n_solo;
            prompt += (uint64_t)jobs[i].n_prompt;
        }
        assert_int_equal(st.generation_tokens, gen);
        assert_int_equal(st.prompt_tokens, prompt);
        eng_destroy(g);
        mdl_free(m);
    }
    free(jobs);
}

/* ---- prefix cache ---- */

static void run_one(eng_engine *g, const int32_t *p, int n, const eng_sampling *s,
                    int32_t *out, int *n_out, eng_event *first)
{
    inferd_error e = {{0}};
    eng_request *r = eng_submit(g, p, n, s, &e);
    if (!r)
        fail_msg("submit: %s", e.msg);
    eng_finish fin;
    *n_out = drain(r, out, 64, &fin, first);
    eng_release(r);
}

/* A repeated prompt is served from the cache (all full blocks but the one
 * holding the last token), a prompt sharing a prefix reuses that prefix,
 * and the outputs do not change. */
static void test_prefix_cache(void **state)
{
    (void)state;
    mdl_model *m = load_model("llama");
    eng_config c = small_config(64, m);
    eng_engine *g = make_engine(m, &c);
    int32_t p[100], q[100], a[64], b[64], d[64];
    make_prompt(p, 100, 7, 512);
    memcpy(q, p, sizeof p);
    q[70] = (q[70] + 1) % 512; /* diverges inside the fifth block */
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.temperature = 0;
    s.ignore_eos = 1;
    s.max_tokens = 20;
    eng_event f1, f2, f3;
    int na, nb, nd;
    run_one(g, p, 100, &s, a, &na, &f1);
    assert_int_equal(f1.num_cached_tokens, 0);
    run_one(g, p, 100, &s, b, &nb, &f2);
    assert_int_equal(f2.num_cached_tokens, 96);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, sizeof(int32_t) * na);
    run_one(g, q, 100, &s, d, &nd, &f3);
    assert_int_equal(f3.num_cached_tokens, 64);
    eng_stats st;
    wait_idle(g, &st);
    assert_int_equal(st.prefix_queries, 300);
    assert_int_equal(st.prefix_hits, 160);
    assert_true(st.kv_blocks_cached > 0);
    assert_int_equal(st.kv_blocks_used, 0);
    eng_destroy(g);
    /* q's output equals a cold engine's */
    eng_config c2 = small_config(64, m);
    c2.enable_prefix_caching = 0;
    mdl_free(m);
    m = load_model("llama");
    g = make_engine(m, &c2);
    int32_t cold[64];
    int ncold;
    run_one(g, q, 100, &s, cold, &ncold, &f1);
    assert_int_equal(f1.num_cached_tokens, 0);
    assert_int_equal(ncold, nd);
    assert_memory_equal(cold, d, sizeof(int32_t) * nd);
    wait_idle(g, &st);
    assert_int_equal(st.prefix_hits, 0);
    assert_int_equal(st.kv_blocks_cached, 0);
    eng_destroy(g);
    mdl_free(m);
}

/* A prompt whose length is a multiple of the block size hits every block
 * but the last, which is recomputed for its logits. */
static void test_prefix_cache_full_blocks(void **state)
{
    (void)state;
    mdl_model *m = load_model("mistral");
    eng_config c = small_config(32, m);
    eng_engine *g = make_engine(m, &c);
    int32_t p[64], a[64], b[64];
    make_prompt(p, 64, 3, 512);
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.temperature = 0;
    s.max_tokens = 10;
    s.ignore_eos = 1;
    eng_event f;
    int na, nb;
    run_one(g, p, 64, &s, a, &na, &f);
    run_one(g, p, 64, &s, b, &nb, &f);
    assert_int_equal(f.num_cached_tokens, 48);
    assert_memory_equal(a, b, sizeof(int32_t) * 10);
    eng_destroy(g);
    mdl_free(m);
}

/* ---- chunked prefill ---- */

/* Token budgets of 1, 5 and 17 per step give the same tokens as 2048. */
static void test_chunked_prefill(void **state)
{
    (void)state;
    int budgets[] = {2048, 1, 5, 17};
    int32_t p[90], ref[64];
    make_prompt(p, 90, 11, 512);
    int nref = 0;
    for (int k = 0; k < 4; k++) {
        mdl_model *m = load_model("qwen2");
        eng_config c = small_config(32, m);
        c.max_num_batched_tokens = budgets[k];
        eng_engine *g = make_engine(m, &c);
        eng_sampling s;
        eng_sampling_defaults(&s);
        s.temperature = 0;
        s.max_tokens = 12;
        s.ignore_eos = 1;
        int32_t out[64];
        int n;
        eng_event f;
        /* two at once so chunks of one share steps with the other */
        inferd_error e = {{0}};
        eng_request *other = eng_submit(g, p + 10, 50, &s, &e);
        run_one(g, p, 90, &s, out, &n, &f);
        eng_finish fin;
        int32_t o2[64];
        assert_int_equal(drain(other, o2, 64, &fin, NULL), 12);
        eng_release(other);
        if (k == 0) {
            memcpy(ref, out, sizeof(int32_t) * n);
            nref = n;
            int32_t direct[64];
            ref_greedy("qwen2", p, 90, 12, direct);
            assert_memory_equal(direct, out, sizeof(int32_t) * 12);
        } else {
            assert_int_equal(n, nref);
            assert_memory_equal(ref, out, sizeof(int32_t) * n);
        }
        eng_stats st;
        wait_idle(g, &st);
        if (budgets[k] == 1)
            assert_true(st.steps >= 140 + 24 - 2);
        eng_destroy(g);
        mdl_free(m);
    }
}

/* ---- seeds ---- */

/* The same seed gives the same tokens alone and in a crowd of other seeded,
 * unseeded and greedy requests; another seed gives other tokens. */
static void test_seeds(void **state)
{
    (void)state;
    mdl_model *m = load_model("llama31");
    eng_config c = small_config(64, m);
    c.max_num_batched_tokens = 32;
    eng_engine *g = make_engine(m, &c);
    int32_t p[30];
    make_prompt(p, 30, 5, 512);
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.temperature = 1.5f;
    s.max_tokens = 40;
    s.ignore_eos = 1;
    s.has_seed = 1;
    s.seed = 42;
    int32_t alone[64], crowd[64], other[64];
    int n1, n2, n3;
    eng_event f;
    run_one(g, p, 30, &s, alone, &n1, &f);
    eng_request *noise[10];
    inferd_error e = {{0}};
    for (int i = 0; i < 10; i++) {
        eng_sampling t = s;
        t.seed = (uint64_t)i;
        t.has_seed = i % 2;
        t.temperature = i % 3 ? 1.0f : 0;
        int32_t q[40];
        make_prompt(q, 40, 100 + (uint32_t)i, 512);
        noise[i] = eng_submit(g, q, 40, &t, &e);
        assert_non_null(noise[i]);
    }
    run_one(g, p, 30, &s, crowd, &n2, &f);
    for (int i = 0; i < 10; i++) {
        eng_finish fin;
        int32_t o[64];
        int n = drain(noise[i], o, 64, &fin, NULL);
        assert_int_equal(n, 40);
        eng_release(noise[i]);
    }
    assert_int_equal(n1, 40);
    assert_int_equal(n2, 40);
    assert_memory_equal(alone, crowd, sizeof(int32_t) * 40);
    s.seed = 43;
    run_one(g, p, 30, &s, other, &n3, &f);
    assert_true(memcmp(alone, other, sizeof(int32_t) * 40) != 0);
    eng_destroy(g);
    mdl_free(m);
}

/* ---- stopping ---- */

/* stop_token_ids end the request on that token (it is the last event),
 * min_tokens suppresses them before that many tokens, the engine's eos ids
 * stop unless ignore_eos, and max_model_len caps the length. */
static void test_stop_conditions(void **state)
{
    (void)state;
    mdl_model *m = load_model("llama");
    eng_config c = small_config(64, m);
    eng_engine *g = make_engine(m, &c);
    int32_t p[5] = {451, 119, 7, 92, 35}; /* golden: 345 182 255 411 172 56 ... */
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.temperature = 0;
    s.max_tokens = 24;
    int32_t out[64];
    int n;
    eng_event f;
    s.n_stop_ids = 1;
    s.stop_ids[0] = 255;
    inferd_error e = {{0}};
    eng_request *r = eng_submit(g, p, 5, &s, &e);
    eng_finish fin;
    n = drain(r, out, 64, &fin, &f);
    eng_release(r);
    assert_int_equal(n, 3);
    assert_int_equal(out[2], 255);
    assert_int_equal(fin, ENG_FINISH_STOP);
    /* min_tokens: 255 is forbidden until 4 tokens are out */
    s.min_tokens = 4;
    r = eng_submit(g, p, 5, &s, &e);
    n = drain(r, out, 64, &fin, &f);
    eng_release(r);
    assert_true(n >= 4);
    assert_int_equal(out[0], 345);
    assert_int_equal(out[1], 182);
    assert_true(out[2] != 255);
    for (int i = 0; i < 4 && i < n; i++)
        assert_true(out[i] != 255);
    eng_destroy(g);
    /* eos: an engine whose eos list holds 411 stops at the 4th token */
    eng_engine *g2 = NULL;
    int32_t eos[2] = {2, 411};
    mdl_free(m);
    m = load_model("llama");
    assert_int_equal(eng_create(m, &c, eos, 2, &g2, &e), 0);
    eng_sampling_defaults(&s);
    s.temperature = 0;
    s.max_tokens = 24;
    r = eng_submit(g2, p, 5, &s, &e);
    n = drain(r, out, 64, &fin, NULL);
    eng_release(r);
    assert_int_equal(n, 4);
    assert_int_equal(fin, ENG_FINISH_STOP);
    s.ignore_eos = 1;
    r = eng_submit(g2, p, 5, &s, &e);
    n = drain(r, out, 64, &fin, NULL);
    eng_release(r);
    assert_int_equal(n, 24);
    assert_int_equal(fin, ENG_FINISH_LENGTH);
    assert_int_equal(out[3], 411);
    eng_destroy(g2);
    mdl_free(m);
}

/* ---- prompt logprobs (echo) ---- */

/* Prompt logprobs equal the logprobs of each prompt token computed on the
 * model directly, chunked or not; max_tokens 0 just echoes. */
static void test_prompt_logprobs(void **state)
{
    (void)state;
    mdl_model *m = load_model("qwen3");
    eng_config c = small_config(64, m);
    c.max_num_batched_tokens = 100; /* the 300-token prompt takes several steps */
    eng_engine *g = make_engine(m, &c);
    int32_t p[300];
    make_prompt(p, 300, 77, 512);
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.temperature = 0;
    s.max_tokens = 3;
    s.ignore_eos = 1;
    s.prompt_logprobs = 1;
    s.prompt_top_logprobs = 5;
    inferd_error e = {{0}};
    /* warm the prefix cache with the same prompt: echo must not use it */
    eng_sampling plain = s;
    plain.prompt_logprobs = 0;
    plain.prompt_top_logprobs = 0;
    int32_t out[64];
    int n;
    eng_event f;
    run_one(g, p, 300, &plain, out, &n, &f);
    eng_request *r = eng_submit(g, p, 300, &s, &e);
    assert_non_null(r);
    int np;
    eng_event ev;
    assert_int_equal(eng_next(r, &ev, -1), 1);
    assert_int_equal(ev.num_cached_tokens, 0);
    assert_int_equal(ev.token, out[0]);
    const eng_event *lp = eng_prompt_logprobs(r, &np);
    assert_non_null(lp);
    assert_int_equal(np, 300);
    assert_true(isnan(lp[0].logprob));
    assert_int_equal(lp[0].token, p[0]);
    /* reference: the logits after prefix p[0..i) from a fresh model */
    mdl_model *ref = load_model("qwen3");
    assert_int_equal(mdl_kv_init(ref, 20, 16, &e), 0);
    int32_t pos[300], slot[300], table[20], rows[300];
    for (int i = 0; i < 300; i++)
        pos[i] = slot[i] = rows[i] = i;
    for (int i = 0; i < 20; i++)
        table[i] = i;
    float *logits = malloc(sizeof(float) * 300 * 512);
    int32_t qs[2] = {0, 300}, ctx = 300;
    mdl_batch b = {.n_tokens = 300, .tokens = p, .pos = pos, .slot = slot, .n_seqs = 1,
                   .q_start = qs, .ctx_len = &ctx, .block_table = table, .max_blocks = 20,
                   .n_logits = 300, .logit_rows = rows};
    assert_int_equal(mdl_forward(ref, &b, logits, &e), 0);
    for (int i = 1; i < 300; i++) {
        const float *l = logits + (size_t)(i - 1) * 512;
        double mx = -1e30, z = 0;
        for (int v = 0; v < 512; v++)
            mx = l[v] > mx ? l[v] : mx;
        for (int v = 0; v < 512; v++)
            z += exp(l[v] - mx);
        double want = l[p[i]] - mx - log(z);
        assert_int_equal(lp[i].token, p[i]);
        if (fabs(lp[i].logprob - want) > 1e-5)
            fail_msg("prompt position %d: %g, want %g", i, lp[i].logprob, want);
        assert_int_equal(lp[i].n_top, 5);
        assert_true(lp[i].top_logprobs[0] >= lp[i].logprob);
    }
    eng_finish fin;
    assert_int_equal(drain(r, out, 64, &fin, NULL), 2);
    eng_release(r);
    /* echo only */
    s.max_tokens = 0;
    r = eng_submit(g, p, 40, &s, &e);
    assert_non_null(r);
    assert_int_equal(eng_next(r, &ev, -1), 1);
    assert_int_equal(ev.token, -1);
    assert_int_equal(ev.finish, ENG_FINISH_LENGTH);
    assert_int_equal(ev.n_generated, 0);
    lp = eng_prompt_logprobs(r, &np);
    assert_int_equal(np, 40);
    assert_true(isfinite(lp[39].logprob) && lp[39].logprob <= 0);
    assert_int_equal(eng_next(r, &ev, 0), -1);
    eng_release(r);
    free(logits);
    mdl_free(ref);
    eng_destroy(g);
    mdl_free(m);
}

/* ---- sampling from the device's candidates ---- */

/* n_out tokens and their events sampled the old way: every logits row on
 * the host through smp_sample and smp_logprobs, one draw of the request's
 * generator per token. */
static void ref_sampled(mdl_model *m, const int32_t *prompt, int n_prompt, int n_out,
                        const eng_sampling *s, eng_event *out)
{
    inferd_error e = {{0}};
    int vocab = mdl_config(m)->vocab_size, total = n_prompt + n_out, nb = (total + 15) / 16;
    int32_t *seq = malloc(sizeof(int32_t) * total), *pos = malloc(sizeof(int32_t) * total);
    int32_t table[64], eos = 2;
    float *logits = malloc(sizeof(float) * vocab), *raw = malloc(sizeof(float) * vocab);
    smp_scratch w;
    assert_int_equal(smp_scratch_init(&w, vocab, &e), 0);
    uint64_t rng[4];
    smp_rng_seed(rng, s->seed);
    memcpy(seq, prompt, sizeof(int32_t) * n_prompt);
    for (int i = 0; i < nb; i++)
        table[i] = i;
    for (int i = 0; i < total; i++)
        pos[i] = i;
    int from = 0, to = n_prompt;
    for (int k = 0; k < n_out; k++) {
        int32_t qs[2] = {0, to - from}, ctx = to, row = to - from - 1;
        mdl_batch b = {.n_tokens = to - from, .tokens = seq + from, .pos = pos + from,
                       .slot = pos + from, .n_seqs = 1, .q_start = qs, .ctx_len = &ctx,
                       .block_table = table, .max_blocks = nb, .n_logits = 1,
                       .logit_rows = &row};
        if (mdl_forward(m, &b, logits, &e))
            fail_msg("forward: %s", e.msg);
        memcpy(raw, logits, sizeof(float) * vocab);
        smp_seq q = {.s = s, .tokens = seq, .n_prompt = n_prompt, .n_output = k, .eos = &eos,
                     .n_eos = 1};
        double u = s->temperature >= 1e-5f ? smp_rng_uniform(rng) : 0;
        eng_event *ev = &out[k];
        ev->token = smp_sample(&q, logits, vocab, u, &w);
        smp_logprobs(raw, vocab, ev->token, s->top_logprobs, &ev->logprob, ev->top_ids,
                     ev->top_logprobs, &w);
        seq[to] = ev->token;
        from = to;
        to++;
    }
    smp_scratch_free(&w);
    free(seq);
    free(pos);
    free(logits);
    free(raw);
}

/* Seeded requests with every kind of sampling, four at a time through the
 * engine (candidates settled on the host, the device's own draw, and the
 * full-row fallbacks), give the tokens and logprobs of the full-row
 * sampler; the fallback counter moves only for the rows that need it. */
static void test_sampled_matches_full_row(void **state)
{
    (void)state;
    enum { NP = 37, NO = 12, NC = 8 };
    mdl_model *m = load_model("qwen3"), *ref = load_model("qwen3");
    inferd_error e = {{0}};
    assert_int_equal(mdl_kv_init(ref, 8, 16, &e), 0);
    eng_config c = small_config(64, m);
    eng_engine *g = make_engine(m, &c);
    int32_t bias_id = 9;
    float bias_val = 3;
    eng_sampling ss[NC];
    int full_rows[NC];
    for (int i = 0; i < NC; i++) {
        eng_sampling *s = &ss[i];
        eng_sampling_defaults(s);
        s->max_tokens = NO;
        s->ignore_eos = 1;
        s->has_seed = 1;
        s->seed = 300 + (uint64_t)i;
        s->logprobs = 1;
        s->top_logprobs = 3;
        full_rows[i] = 0;
    }
    ss[0].temperature = 1; /* the device's own draw, the OpenAI default */
    ss[1].temperature = 0.7f;
    ss[1].top_k = 5;
    ss[2].temperature = 0.9f;
    ss[2].top_p = 0.3f;
    ss[3].temperature = 1.2f;
    ss[3].min_p = 0.05f;
    ss[3].top_k = 40;
    ss[3].top_p = 0.95f;
    ss[4].temperature = 0;
    ss[4].top_logprobs = 20;
    ss[5].temperature = 0.8f; /* penalties: the whole row, but the first token */
    ss[5].frequency_penalty = 0.7f;
    full_rows[5] = NO - 1;
    ss[6].temperature = 1;
    ss[6].n_logit_bias = 1;
    ss[6].logit_bias_ids = &bias_id;
    ss[6].logit_bias_vals = &bias_val;
    full_rows[6] = NO;
    ss[7].temperature = 0.5f;
    ss[7].min_tokens = 4;
    full_rows[7] = 4;
    int32_t p[NC][NP];
    eng_stats st0, st1;
    eng_get_stats(g, &st0);
    eng_request *r[NC];
    for (int i = 0; i < NC; i++) {
        make_prompt(p[i], NP, 900 + (uint32_t)i, 512);
        r[i] = eng_submit(g, p[i], NP, &ss[i], &e);
        assert_non_null(r[i]);
    }
    for (int i = 0; i < NC; i++) {
        eng_event want[NO], ev;
        ref_sampled(ref, p[i], NP, NO, &ss[i], want);
        int n = 0;
        while (eng_next(r[i], &ev, -1) == 1) {
            if (ev.token < 0)
                continue;
            assert_true(n < NO);
            if (ev.token != want[n].token)
                fail_msg("request %d token %d: %d, full row %d", i, n, ev.token, want[n].token);
            if (fabsf(ev.logprob - want[n].logprob) > 1e-5f)
                fail_msg("request %d token %d: logprob %g, full row %g", i, n, ev.logprob,
                         want[n].logprob);
            assert_int_equal(ev.n_top, ss[i].top_logprobs);
            for (int k = 0; k < ev.n_top; k++) {
                assert_int_equal(ev.top_ids[k], want[n].top_ids[k]);
                assert_true(fabsf(ev.top_logprobs[k] - want[n].top_logprobs[k]) <= 1e-5f);
            }
            n++;
        }
        assert_int_equal(n, NO);
        eng_release(r[i]);
    }
    wait_idle(g, &st1);
    uint64_t fb = st1.sampler_full_row_fallbacks - st0.sampler_full_row_fallbacks, least = 0;
    for (int i = 0; i < NC; i++)
        least += (uint64_t)full_rows[i];
    /* top_k / top_p rows the candidates could not settle may add a few */
    if (fb < least || fb > least + 8)
        fail_msg("%llu full-row fallbacks, want %llu (+ a few)", (unsigned long long)fb,
                 (unsigned long long)least);
    eng_destroy(g);
    mdl_free(m);
    mdl_free(ref);
}

/* ---- cancel, release, destroy ---- */

static void test_cancel(void **state)
{
    (void)state;
    mdl_model *m = load_model("llama");
    eng_config c = small_config(64, m);
    c.max_model_len = 1024;
    eng_engine *g = make_engine(m, &c);
    int32_t p[50];
    make_prompt(p, 50, 9, 512);
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.temperature = 0.7f;
    s.max_tokens = 900;
    s.ignore_eos = 1;
    inferd_error e = {{0}};
    /* cancel mid-stream: events stop with an abort, blocks come back */
    eng_request *r = eng_submit(g, p, 50, &s, &e);
    eng_event ev;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(eng_next(r, &ev, -1), 1);
        assert_int_equal(ev.finish, ENG_RUNNING);
        assert_int_equal(ev.n_generated, i + 1);
    }
    eng_stats st;
    eng_get_stats(g, &st);
    assert_true(st.kv_blocks_used > 0);
    eng_cancel(r);
    eng_cancel(r); /* twice is harmless */
    int rc, n = 0;
    eng_finish last = ENG_RUNNING;
    while ((rc = eng_next(r, &ev, -1)) == 1) {
        last = ev.finish;
        n++;
    }
    assert_int_equal(rc, -1);
    assert_int_equal(last, ENG_FINISH_ABORT);
    assert_true(n < 900);
    eng_release(r);
    wait_idle(g, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    /* timeouts: 0 polls, a short wait returns 0 when nothing came */
    r = eng_submit(g, p, 50, &s, &e);
    rc = eng_next(r, &ev, 0);
    assert_true(rc == 0 || rc == 1);
    /* release without reading: the engine finishes it and frees it */
    eng_release(r);
    /* a batch of requests released at once while running and waiting */
    eng_request *rs[12];
    for (int i = 0; i < 12; i++)
        rs[i] = eng_submit(g, p, 50, &s, &e);
    assert_int_equal(eng_next(rs[0], &ev, -1), 1);
    for (int i = 0; i < 12; i++)
        eng_release(rs[i]);
    wait_idle(g, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.running, 0);
    /* destroy with live requests: their holders see an abort */
    for (int i = 0; i < 4; i++)
        rs[i] = eng_submit(g, p, 50, &s, &e);
    assert_int_equal(eng_next(rs[0], &ev, -1), 1);
    eng_destroy(g);
    for (int i = 0; i < 4; i++) {
        last = ENG_RUNNING;
        while ((rc = eng_next(rs[i], &ev, 100)) == 1)
            last = ev.finish;
        assert_int_equal(rc, -1);
        assert_int_equal(last, ENG_FINISH_ABORT);
        eng_cancel(rs[i]); /* after the end: nothing to do, engine gone */
        eng_release(rs[i]);
    }
    mdl_free(m);
}

/* Threads submit, read a few events, then cancel, release early or read to
 * the end, all at once and at random points, into a pool small enough to
 * preempt: every request ends, nothing leaks (ASan) or races (TSan), and the
 * pool is empty afterwards. */
typedef struct chaos {
    eng_engine *g;
    int seed, done, aborted;
} chaos;

static void *chaos_main(void *arg)
{
    chaos *c = arg;
    uint32_t x = (uint32_t)c->seed * 747796405u + 1;
    for (int i = 0; i < 25; i++) {
        x = x * 1103515245u + 12345u;
        int32_t p[120];
        int n = 1 + (int)((x >> 8) % 120);
        make_prompt(p, n, x, 512);
        eng_sampling s;
        eng_sampling_defaults(&s);
        s.max_tokens = 1 + (int)((x >> 4) % 60);
        s.ignore_eos = 1;
        s.temperature = (x & 1) ? 0 : 0.9f;
        s.logprobs = (x >> 3) & 1;
        s.top_logprobs = (x >> 3) & 1 ? 3 : 0;
        inferd_error e = {{0}};
        eng_request *r = eng_submit(c->g, p, n, &s, &e);
        if (!r)
            fail_msg("submit: %s", e.msg);
        int reads = (int)((x >> 12) % 6), mode = (int)((x >> 16) % 3);
        eng_event ev;
        eng_finish last = ENG_RUNNING;
        int rc = 1;
        for (int k = 0; k < reads && (rc = eng_next(r, &ev, -1)) == 1; k++)
            last = ev.finish;
        if (mode == 0) { /* cancel, then read to the end */
            eng_cancel(r);
            while ((rc = eng_next(r, &ev, -1)) == 1)
                last = ev.finish;
            assert_true(last != ENG_RUNNING);
            c->aborted += last == ENG_FINISH_ABORT;
        } else if (mode == 1) { /* walk away */
        } else {
            while ((rc = eng_next(r, &ev, -1)) == 1)
                last = ev.finish;
            assert_int_equal(last, ENG_FINISH_LENGTH);
        }
        eng_release(r);
        c->done++;
    }
    return NULL;
}

static void test_cancel_stress(void **state)
{
    (void)state;
    mdl_model *m = load_model("llama31");
    eng_config c = small_config(16, m);
    c.max_model_len = 200;
    c.max_num_seqs = 5;
    c.max_num_batched_tokens = 40;
    eng_engine *g = make_engine(m, &c);
    pthread_t th[NTHREADS];
    chaos ch[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) {
        ch[t] = (chaos){.g = g, .seed = t + 1};
        pthread_create(&th[t], NULL, chaos_main, &ch[t]);
    }
    int aborted = 0;
    for (int t = 0; t < NTHREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(ch[t].done, 25);
        aborted += ch[t].aborted;
    }
    eng_stats st;
    wait_idle(g, &st);
    assert_true(aborted > 0);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal((int)st.requests_finished, 25 * NTHREADS);
    eng_destroy(g);
    mdl_free(m);
}

/* One thread follows four requests through a waiter: it sleeps until any
 * has an event, reads them all without blocking, and sees every token of
 * each in order; a waiter with nothing attached times out. */
static void test_waiter(void **state)
{
    (void)state;
    mdl_model *m = load_model("qwen2_yarn");
    eng_config c = small_config(64, m);
    eng_engine *g = make_engine(m, &c);
    eng_waiter *w = eng_waiter_new();
    assert_non_null(w);
    assert_int_equal(eng_waiter_wait(w, 0), 0);
    assert_int_equal(eng_waiter_wait(w, 5), 0);
    eng_request *r[4];
    int32_t solo[4][64], got[4][64], n_got[4] = {0}, done[4] = {0};
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.temperature = 0;
    s.ignore_eos = 1;
    inferd_error e = {{0}};
    for (int i = 0; i < 4; i++) {
        int32_t p[30];
        make_prompt(p, 30, 50 + (uint32_t)i, 512);
        s.max_tokens = 10 + 7 * i;
        int n;
        eng_event f;
        run_one(g, p, 30, &s, solo[i], &n, &f);
        r[i] = eng_submit(g, p, 30, &s, &e);
        eng_set_waiter(r[i], w);
    }
    int open = 4, wakes = 0;
    while (open > 0) {
        assert_int_equal(eng_waiter_wait(w, 5000), 1);
        wakes++;
        for (int i = 0; i < 4; i++) {
            eng_event ev;
            int rc;
            while (!done[i] && (rc = eng_next(r[i], &ev, 0)) != 0) {
                if (rc < 0) {
                    done[i] = 1;
                    open--;
                    break;
                }
                got[i][n_got[i]++] = ev.token;
            }
        }
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(n_got[i], 10 + 7 * i);
        assert_memory_equal(got[i], solo[i], sizeof(int32_t) * n_got[i]);
        eng_release(r[i]);
    }
    /* at most one wake per event: woken by events, not spinning */
    assert_true(wakes <= n_got[0] + n_got[1] + n_got[2] + n_got[3]);
    eng_waiter_free(w);
    eng_destroy(g);
    mdl_free(m);
}

/* eng_warmup runs its request and leaves no trace in the counters; the
 * engine then answers as the model does (the warm-up's cached blocks do not
 * leak into another prompt) and counts only that request. */
static void test_warmup(void **state)
{
    (void)state;
    mdl_model *m = load_model("llama");
    eng_config c = small_config(64, m);
    c.max_num_batched_tokens = 96;
    eng_engine *g = make_engine(m, &c);
    inferd_error e = {{0}};
    assert_int_equal(eng_warmup(g, &e), 0);
    eng_stats st;
    wait_idle(g, &st);
    assert_int_equal(st.requests_finished, 0);
    assert_int_equal(st.prompt_tokens, 0);
    assert_int_equal(st.generation_tokens, 0);
    assert_int_equal(st.steps, 0);
    assert_true(st.kv_blocks_cached > 0); /* its prompt's blocks stay cached */
    int32_t p[40], want[8], got[8];
    make_prompt(p, 40, 9, mdl_config(m)->vocab_size);
    ref_greedy("llama", p, 40, 8, want);
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.temperature = 0;
    s.ignore_eos = 1;
    s.max_tokens = 8;
    eng_request *r = eng_submit(g, p, 40, &s, &e);
    assert_non_null(r);
    eng_finish fin;
    assert_int_equal(drain(r, got, 8, &fin, NULL), 8);
    eng_release(r);
    assert_memory_equal(got, want, sizeof want);
    wait_idle(g, &st);
    assert_int_equal(st.requests_finished, 1);
    assert_int_equal(st.prompt_tokens, 40);
    assert_int_equal(st.generation_tokens, 8);
    eng_destroy(g);
    mdl_free(m);
}

/* eng_next with a timeout returns 0 while the engine is still busy. */
static void test_next_timeout(void **state)
{
    (void)state;
    mdl_model *m = load_model("qwen2");
    eng_config c = small_config(64, m);
    c.max_num_batched_tokens = 1; /* the prompt alone takes 300 steps */
    eng_engine *g = make_engine(m, &c);
    int32_t p[300];
    make_prompt(p, 300, 4, 512);
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.max_tokens = 2;
    inferd_error e = {{0}};
    eng_request *r = eng_submit(g, p, 300, &s, &e);
    eng_event ev;
    assert_int_equal(eng_next(r, &ev, 0), 0);
    assert_int_equal(eng_next(r, &ev, 1), 0);
    eng_release(r);
    eng_destroy(g);
    mdl_free(m);
}

/* ---- errors ---- */

static void expect_submit_error(eng_engine *g, const int32_t *p, int n, const eng_sampling *s,
                                const char *needle)
{
    inferd_error e = {{0}};
    eng_request *r = eng_submit(g, p, n, s, &e);
    if (r)
        fail_msg("submit accepted a request that should fail with '%s'", needle);
    if (!strstr(e.msg, needle))
        fail_msg("error '%s' does not mention '%s'", e.msg, needle);
}

static void test_submit_errors(void **state)
{
    (void)state;
    mdl_model *m = load_model("llama");
    eng_config c = small_config(64, m);
    c.max_model_len = 128;
    eng_engine *g = make_engine(m, &c);
    int32_t p[4] = {1, 2, 3, 4}, bad[2] = {1, 512}, neg[1] = {-1};
    eng_sampling ok, s;
    eng_sampling_defaults(&ok);
    expect_submit_error(g, p, 0, &ok, "empty");
    expect_submit_error(g, NULL, 3, &ok, "empty");
    expect_submit_error(g, bad, 2, &ok, "512");
    expect_submit_error(g, neg, 1, &ok, "-1");
    s = ok; s.max_tokens = 125;
    expect_submit_error(g, p, 4, &s, "context of 128");
    s = ok; s.max_tokens = 0;
    expect_submit_error(g, p, 4, &s, "max_tokens");
    s = ok; s.max_tokens = -3;
    expect_submit_error(g, p, 4, &s, "max_tokens");
    s = ok; s.temperature = -1;
    expect_submit_error(g, p, 4, &s, "temperature");
    s = ok; s.temperature = NAN;
    expect_submit_error(g, p, 4, &s, "temperature");
    s = ok; s.top_p = 0;
    expect_submit_error(g, p, 4, &s, "top_p");
    s = ok; s.top_p = 1.5f;
    expect_submit_error(g, p, 4, &s, "top_p");
    s = ok; s.top_k = -2;
    expect_submit_error(g, p, 4, &s, "top_k");
    s = ok; s.min_p = 2;
    expect_submit_error(g, p, 4, &s, "min_p");
    s = ok; s.repetition_penalty = 0;
    expect_submit_error(g, p, 4, &s, "repetition_penalty");
    s = ok; s.presence_penalty = 2.5f;
    expect_submit_error(g, p, 4, &s, "presence_penalty");
    s = ok; s.frequency_penalty = -3;
    expect_submit_error(g, p, 4, &s, "frequency_penalty");
    s = ok; s.min_tokens = 17;
    expect_submit_error(g, p, 4, &s, "min_tokens");
    s = ok; s.top_logprobs = 21;
    expect_submit_error(g, p, 4, &s, "top_logprobs");
    s = ok; s.prompt_logprobs = 1; s.prompt_top_logprobs = 99;
    expect_submit_error(g, p, 4, &s, "prompt_top_logprobs");
    s = ok; s.n_stop_ids = 33;
    expect_submit_error(g, p, 4, &s, "stop token ids");
    s = ok; s.n_stop_ids = 1; s.stop_ids[0] = 600;
    expect_submit_error(g, p, 4, &s, "stop token id");
    int32_t bid[1] = {700};
    float bval[1] = {1}, binf[1] = {INFINITY};
    s = ok; s.n_logit_bias = 1; s.logit_bias_ids = bid; s.logit_bias_vals = bval;
    expect_submit_error(g, p, 4, &s, "logit_bias token id");
    bid[0] = 5;
    s.logit_bias_vals = binf;
    expect_submit_error(g, p, 4, &s, "finite");
    s = ok; s.n_logit_bias = 1;
    expect_submit_error(g, p, 4, &s, "no arrays");
    s = ok; s.n_logit_bias = -1;
    expect_submit_error(g, p, 4, &s, "logit_bias");
    /* the boundary is accepted */
    s = ok; s.max_tokens = 124;
    inferd_error e = {{0}};
    eng_request *r = eng_submit(g, p, 4, &s, &e);
    assert_non_null(r);
    eng_release(r);
    assert_int_equal(eng_max_model_len(g), 128);
    eng_destroy(g);
    mdl_free(m);
}

static void test_create_errors(void **state)
{
    (void)state;
    mdl_model *m = load_model("llama");
    eng_engine *g = NULL;
    inferd_error e = {{0}};
    int32_t eos = 2, bad_eos = 9999;
    eng_config c = small_config(8, m);
    c.max_model_len = 512; /* needs 32 blocks */
    assert_int_equal(eng_create(m, &c, &eos, 1, &g, &e), -1);
    assert_non_null(strstr(e.msg, "max_model_len"));
    c = small_config(64, m);
    c.max_model_len = 5000;
    assert_int_equal(eng_create(m, &c, &eos, 1, &g, &e), -1);
    assert_non_null(strstr(e.msg, "1024"));
    c = small_config(64, m);
    assert_int_equal(eng_create(m, &c, &bad_eos, 1, &g, &e), -1);
    assert_non_null(strstr(e.msg, "9999"));
    c.max_num_seqs = 0;
    assert_int_equal(eng_create(m, &c, &eos, 1, &g, &e), -1);
    assert_non_null(strstr(e.msg, "max_num_seqs"));
    c = small_config(64, m);
    c.block_size = 0;
    assert_int_equal(eng_create(m, &c, &eos, 1, &g, &e), -1);
    assert_non_null(strstr(e.msg, "block size"));
    /* max_model_len 0 takes the model's (1024 tokens = 64 blocks) */
    c = small_config(64, m);
    c.max_model_len = 0;
    assert_int_equal(eng_create(m, &c, &eos, 1, &g, &e), 0);
    assert_int_equal(eng_max_model_len(g), 1024);
    eng_stats st;
    eng_get_stats(g, &st);
    assert_int_equal(st.kv_blocks_total, 64);
    eng_destroy(g);
    mdl_free(m);
}

/* An argument picks tests by name pattern (cmocka's filter). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_warmup),
        cmocka_unit_test(test_concurrent_preemption),
        cmocka_unit_test(test_sampled_matches_full_row),
        cmocka_unit_test(test_prefix_cache),
        cmocka_unit_test(test_prefix_cache_full_blocks),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_seeds),
        cmocka_unit_test(test_stop_conditions),
        cmocka_unit_test(test_prompt_logprobs),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_cancel_stress),
        cmocka_unit_test(test_waiter),
        cmocka_unit_test(test_next_timeout),
        cmocka_unit_test(test_submit_errors),
        cmocka_unit_test(test_create_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
