/* Helpers shared by the engine's test binaries (each includes this once):
 * real tiny checkpoints, a reference greedy loop straight on mdl_forward,
 * and a way to run one request through an engine to its end. */
#ifndef TESTS_ENGINE_HELPERS_H
#define TESTS_ENGINE_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"

#define FIX "tests/fixtures/models/"

/* One CPU thread unless asked: the models are tiny, and OpenMP workers
 * spinning on a loaded 2-core CI machine cost more than they bring. */
static mdl_model *load_model_threads(const char *name, int threads)
{
    char dir[256];
    snprintf(dir, sizeof dir, FIX "%s", name);
    mdl_options o = {.device = "cpu", .n_threads = threads};
    mdl_model *m = NULL;
    inferd_error e = {{0}};
    if (mdl_load(dir, &o, &m, &e))
        fail_msg("load %s: %s", dir, e.msg);
    return m;
}

static mdl_model *load_model(const char *name) { return load_model_threads(name, 1); }

/* Deterministic pseudo-random prompt of n ids below vocab. */
static void make_prompt(int32_t *p, int n, uint32_t seed, int vocab)
{
    uint32_t x = seed * 2654435761u + 12345u;
    for (int i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (int32_t)(x % (uint32_t)vocab);
    }
}

/* Greedy continuation computed straight on the model, one sequence, prompt
 * in one forward, then one row per step: what the engine must reproduce. */
static void ref_greedy(const char *name, const int32_t *prompt, int n_prompt, int n_out,
                       int32_t *out)
{
    mdl_model *m = load_model(name);
    inferd_error e = {{0}};
    int total = n_prompt + n_out, nb = (total + 15) / 16;
    assert_int_equal(mdl_kv_init(m, nb, 16, &e), 0);
    int vocab = mdl_config(m)->vocab_size;
    int32_t *seq = malloc(sizeof(int32_t) * total), *pos = malloc(sizeof(int32_t) * total);
    int32_t *slot = malloc(sizeof(int32_t) * total), *table = malloc(sizeof(int32_t) * nb);
    float *logits = malloc(sizeof(float) * vocab);
    memcpy(seq, prompt, sizeof(int32_t) * n_prompt);
    for (int i = 0; i < nb; i++)
        table[i] = i;
    for (int i = 0; i < total; i++) {
        pos[i] = i;
        slot[i] = i;
    }
    int from = 0, to = n_prompt;
    for (int k = 0; k < n_out; k++) {
        int32_t qs[2] = {0, to - from}, ctx = to, row = to - from - 1;
        mdl_batch b = {.n_tokens = to - from, .tokens = seq + from, .pos = pos + from,
                       .slot = slot + from, .n_seqs = 1, .q_start = qs, .ctx_len = &ctx,
                       .block_table = table, .max_blocks = nb, .n_logits = 1,
                       .logit_rows = &row};
        if (mdl_forward(m, &b, logits, &e))
            fail_msg("forward: %s", e.msg);
        int best = 0;
        for (int i = 1; i < vocab; i++)
            if (logits[i] > logits[best])
                best = i;
        out[k] = best;
        seq[to] = best;
        from = to;
        to++;
    }
    free(seq);
    free(pos);
    free(slot);
    free(table);
    free(logits);
    mdl_free(m);
}

/* Reads every event of r; stores up to cap tokens (token -1 events are not
 * stored). Returns the token count; *fin gets the last finish reason. */
static int drain(eng_request *r, int32_t *out, int cap, eng_finish *fin, eng_event *first)
{
    eng_event ev;
    int n = 0, got = 0;
    *fin = ENG_RUNNING;
    while (eng_next(r, &ev, -1) == 1) {
        if (!got && first)
            *first = ev;
        got = 1;
        if (ev.token >= 0 && n < cap)
            out[n++] = ev.token;
        if (ev.finish != ENG_RUNNING)
            *fin = ev.finish;
    }
    return n;
}

static eng_engine *make_engine(mdl_model *m, const eng_config *c)
{
    eng_engine *g = NULL;
    inferd_error e = {{0}};
    int32_t eos = 2;
    if (eng_create(m, c, &eos, 1, &g, &e))
        fail_msg("eng_create: %s", e.msg);
    return g;
}

static eng_config small_config(int n_blocks_bytes_of, mdl_model *m)
{
    eng_config c;
    eng_config_defaults(&c);
    c.max_model_len = 512;
    c.kv_cache_bytes = (size_t)n_blocks_bytes_of * mdl_kv_block_bytes(m, 16);
    return c;
}

/* Waits until the engine has nothing running or waiting (its stats are
 * published after each step). */
static void wait_idle(eng_engine *g, eng_stats *st)
{
    for (int i = 0; i < 2000; i++) {
        eng_get_stats(g, st);
        if (st->running == 0 && st->waiting == 0)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    fail_msg("engine did not become idle");
}

#endif
