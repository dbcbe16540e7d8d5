/* engine/engine.c: the engine's thread and the request handles. Callers on
 * any thread submit, read events and cancel; the engine thread owns the KV
 * cache, the scheduler state and the model. A request is held twice (the
 * caller until eng_release, the engine until its last event is queued) and
 * freed by whichever lets go last.
 *
 * Lock order: a request's mu before the engine's mu, never the reverse. The
 * engine thread takes them one at a time. eng_cancel wakes the engine while
 * still holding the request's mu and only when the request is not done:
 * the engine cannot finish that request, and so cannot be destroyed, until
 * the mu is released, so the engine it signals is alive. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/internal.h"

void eng_config_defaults(eng_config *c)
{
    memset(c, 0, sizeof *c);
    c->block_size = 16;
    c->kv_cache_bytes = (size_t)4 << 30;
    c->max_num_seqs = 256;
    c->max_num_batched_tokens = 2048;
    c->max_model_len = 0;
    c->enable_prefix_caching = 1;
    c->seed = 0;
}

void eng_sampling_defaults(eng_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->temperature = 1.0f;
    s->top_p = 1.0f;
    s->top_k = 0;
    s->repetition_penalty = 1.0f;
    s->max_tokens = 16;
}

/* ---- events ---- */

/* Lock order: a request's mu, then its waiter's mu. */
static void waiter_wake(eng_waiter *w)
{
    pthread_mutex_lock(&w->mu);
    w->pending = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void deadline(struct timespec *until, int timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, until);
    until->tv_sec += timeout_ms / 1000;
    until->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until->tv_nsec >= 1000000000L) {
        until->tv_sec++;
        until->tv_nsec -= 1000000000L;
    }
}

static void cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

eng_waiter *eng_waiter_new(void)
{
    eng_waiter *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    pthread_mutex_init(&w->mu, NULL);
    cond_init_monotonic(&w->cv);
    return w;
}

void eng_waiter_free(eng_waiter *w)
{
    if (!w)
        return;
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

void eng_set_waiter(eng_request *r, eng_waiter *w)
{
    pthread_mutex_lock(&r->mu);
    r->waiter = w;
    if (w && (r->q_n > 0 || r->done))
        waiter_wake(w);
    pthread_mutex_unlock(&r->mu);
}

int eng_waiter_wait(eng_waiter *w, int timeout_ms)
{
    struct timespec until;
    if (timeout_ms > 0)
        deadline(&until, timeout_ms);
    pthread_mutex_lock(&w->mu);
    while (!w->pending && timeout_ms != 0) {
        if (timeout_ms < 0)
            pthread_cond_wait(&w->cv, &w->mu);
        else if (pthread_cond_timedwait(&w->cv, &w->mu, &until) == ETIMEDOUT)
            break;
    }
    int woke = w->pending;
    w->pending = 0;
    pthread_mutex_unlock(&w->mu);
    return woke;
}

void eng_push_event(eng_request *r, const eng_event *ev, int final)
{
    pthread_mutex_lock(&r->mu);
    if (r->q_n == r->q_cap) {
        int cap = r->q_cap ? r->q_cap * 2 : 16;
        eng_event *q = malloc((size_t)cap * sizeof *q);
        if (q) {
            for (int i = 0; i < r->q_n; i++)
                q[i] = r->q[(r->q_head + i) % r->q_cap];
            free(r->q);
            r->q = q;
            r->q_head = 0;
            r->q_cap = cap;
        }
    }
    /* Out of memory for the ring: the token is lost but a final event must
     * still be seen, so it replaces the newest queued one. */
    int at = r->q_n < r->q_cap ? r->q_n++ : r->q_n - 1;
    if (r->q_cap > 0)
        r->q[(r->q_head + at) % r->q_cap] = *ev;
    if (r->plp && r->plp_done)
        r->plp_ready = 1;
    if (final)
        r->done = 1;
    pthread_cond_broadcast(&r->cv);
    if (r->waiter)
        waiter_wake(r->waiter);
    pthread_mutex_unlock(&r->mu);
}

static void request_free(eng_request *r)
{
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->bias_ids);
    free(r->bias_vals);
    free(r->tokens);
    free(r->blocks);
    free(r->hashes);
    free(r->plp);
    free(r->q);
    free(r);
}

void eng_request_unref(eng_request *r)
{
    pthread_mutex_lock(&r->mu);
    int last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last)
        request_free(r);
}

int eng_next(eng_request *r, eng_event *ev, int timeout_ms)
{
    struct timespec until;
    if (timeout_ms > 0)
        deadline(&until, timeout_ms);
    pthread_mutex_lock(&r->mu);
    while (r->q_n == 0 && !r->done && timeout_ms != 0) {
        if (timeout_ms < 0)
            pthread_cond_wait(&r->cv, &r->mu);
        else if (pthread_cond_timedwait(&r->cv, &r->mu, &until) == ETIMEDOUT)
            break;
    }
    int rc = 0;
    if (r->q_n > 0) {
        *ev = r->q[r->q_head];
        r->q_head = (r->q_head + 1) % r->q_cap;
        r->q_n--;
        rc = 1;
    } else if (r->done) {
        rc = -1;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* Caller holds r->mu. */
static void cancel_locked(eng_request *r)
{
    if (r->done || atomic_load(&r->cancel))
        return;
    atomic_store(&r->cancel, 1);
    eng_engine *g = r->g;
    pthread_mutex_lock(&g->mu);
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void eng_cancel(eng_request *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    cancel_locked(r);
    pthread_mutex_unlock(&r->mu);
}

void eng_release(eng_request *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    cancel_locked(r);
    r->waiter = NULL; /* the caller may free it once its requests are released */
    int last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last)
        request_free(r);
}

const eng_event *eng_prompt_logprobs(eng_request *r, int *n)
{
    pthread_mutex_lock(&r->mu);
    const eng_event *p = r->plp_ready ? r->plp : NULL;
    *n = p ? r->n_prompt : 0;
    pthread_mutex_unlock(&r->mu);
    return p;
}

/* ---- the engine thread ---- */

/* Caller holds g->mu. */
static void publish_stats_locked(eng_engine *g)
{
    eng_stats *s = &g->st;
    *s = g->local;
    s->running = g->n_running;
    s->waiting = g->n_waiting + g->n_incoming;
    s->kv_blocks_total = g->kv.n_blocks;
    s->kv_blocks_used = g->kv.n_blocks - g->kv.n_free;
    s->kv_blocks_cached = g->kv.n_cached;
}

static void publish_stats(eng_engine *g)
{
    pthread_mutex_lock(&g->mu);
    publish_stats_locked(g);
    pthread_mutex_unlock(&g->mu);
}

/* Moves submitted requests to the waiting queue; returns 0 when the engine
 * is to stop. Sleeps while there is nothing to do. */
static int take_incoming(eng_engine *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->stop && g->n_incoming == 0 && g->n_waiting == 0 && g->n_running == 0 &&
           !g->reset_stats)
        pthread_cond_wait(&g->cv, &g->mu);
    if (g->reset_stats) { /* eng_warmup's request is not the users' */
        memset(&g->local, 0, sizeof g->local);
        publish_stats_locked(g);
        g->reset_stats = 0;
        pthread_cond_broadcast(&g->cv);
    }
    /* waiting holds every live request at most (preemption moves running
     * ones there), so once it has room for all, requeueing never allocates */
    int live = g->n_waiting + g->n_running + g->n_incoming;
    if (live > g->cap_waiting) {
        int cap = live * 2;
        eng_request **w = realloc(g->waiting, (size_t)cap * sizeof *w);
        if (w) {
            g->waiting = w;
            g->cap_waiting = cap;
        }
    }
    if (live <= g->cap_waiting) {
        for (int i = 0; i < g->n_incoming; i++)
            g->waiting[g->n_waiting++] = g->incoming[i];
        g->n_incoming = 0;
    }
    int go = !g->stop;
    pthread_mutex_unlock(&g->mu);
    return go;
}

static void *engine_main(void *arg)
{
    eng_engine *g = arg;
    while (take_incoming(g)) {
        sched_cancel_pending(g);
        int ran = sched_step(g);
        publish_stats(g);
        if (!ran && (g->n_running || g->n_waiting)) {
            /* Cannot happen by construction (a lone request always fits the
             * pool); if it ever does, idle instead of spinning a core. */
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    /* Shutting down: everything live ends as aborted. */
    for (int i = 0; i < g->n_running; i++)
        eng_finish_request(g, g->running[i], ENG_FINISH_ABORT);
    for (int i = 0; i < g->n_waiting; i++)
        eng_finish_request(g, g->waiting[i], ENG_FINISH_ABORT);
    g->n_running = g->n_waiting = 0;
    publish_stats(g);
    return NULL;
}

static void engine_free(eng_engine *g)
{
    kv_free(&g->kv);
    smp_scratch_free(&g->w);
    if (g->step_log)
        fclose(g->step_log);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->incoming);
    free(g->waiting);
    free(g->running);
    free(g->sched);
    free(g->cand);
    free(g->b_tok);
    free(g->b_pos);
    free(g->b_slot);
    free(g->b_qs);
    free(g->b_ctx);
    free(g->b_table);
    free(g->b_rows);
    free(g->row_of);
    free(g->logits);
    free(g->s_in);
    free(g->s_out);
    free(g->raw);
    free(g);
}

/* Bytes of memory the host has available when the model's KV cache lives
 * in host memory, else 0. There the pool's pages are taken as the cache
 * fills: a pool larger than the machine can hold would start, and be found
 * by the OOM killer mid-run with every request in flight. */
static size_t host_pool_room(const mdl_model *m)
{
    size_t dev_free, dev_total;
    inferd_error ignored;
    return mdl_device_memory(m, &dev_free, &dev_total, &ignored) == 0 ? 0
                                                                      : host_memory_available();
}

int eng_create(mdl_model *m, const eng_config *c, const int32_t *eos_ids, int n_eos,
               eng_engine **out, inferd_error *e)
{
    const ld_config *mc = mdl_config(m);
    eng_engine *g = calloc(1, sizeof *g);
    if (!g) {
        err_set(e, "out of memory");
        return -1;
    }
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->m = m;
    g->c = *c;
    g->vocab = mc->vocab_size;
    if (c->block_size < 1 || c->block_size > 1024) {
        err_set(e, "block size %d is out of range (1..1024)", c->block_size);
        goto err;
    }
    if (c->max_num_seqs < 1 || c->max_num_batched_tokens < 1) {
        err_set(e, "max_num_seqs (%d) and max_num_batched_tokens (%d) must be at least 1",
                c->max_num_seqs, c->max_num_batched_tokens);
        goto err;
    }
    if (c->max_model_len < 0 || (mc->max_position_embeddings > 0 &&
                                 c->max_model_len > mc->max_position_embeddings)) {
        err_set(e, "max_model_len %d is out of range: the model's context is %d tokens",
                c->max_model_len, mc->max_position_embeddings);
        goto err;
    }
    if (g->c.max_model_len == 0)
        g->c.max_model_len = mc->max_position_embeddings > 0 ? mc->max_position_embeddings : 2048;
    if (n_eos < 0 || n_eos > 16) {
        err_set(e, "%d eos ids (at most 16)", n_eos);
        goto err;
    }
    for (int i = 0; i < n_eos; i++) {
        if (eos_ids[i] < 0 || eos_ids[i] >= g->vocab) {
            err_set(e, "eos id %d is out of range for a vocabulary of %d", eos_ids[i], g->vocab);
            goto err;
        }
        g->eos[i] = eos_ids[i];
    }
    g->n_eos = n_eos;
    size_t per_block = mdl_kv_block_bytes(m, c->block_size);
    size_t n_blocks = c->kv_cache_bytes / per_block;
    g->max_blocks_seq = (g->c.max_model_len + c->block_size - 1) / c->block_size;
    if (n_blocks < (size_t)g->max_blocks_seq) {
        err_set(e, "a KV cache of %zu bytes holds %zu blocks of %d tokens (%zu bytes each), "
                "fewer than one sequence of max_model_len %d needs (%d); raise the KV cache "
                "memory or lower max_model_len", c->kv_cache_bytes, n_blocks, c->block_size,
                per_block, g->c.max_model_len, g->max_blocks_seq);
        goto err;
    }
    if (n_blocks > INT32_MAX / (size_t)c->block_size)
        n_blocks = INT32_MAX / (size_t)c->block_size;
    size_t avail = host_pool_room(m);
    if (avail && c->kv_cache_bytes > avail) {
        err_set(e, "a KV cache of %.1f GiB is more than the %.1f GiB of memory available to "
                "this process (MemAvailable, or its container's limit); lower the KV cache "
                "memory (--kv-cache-memory)",
                (double)c->kv_cache_bytes / (1 << 30), (double)avail / (1 << 30));
        goto err;
    }
    if (kv_init(&g->kv, (int)n_blocks, c->block_size, e) ||
        smp_scratch_init(&g->w, g->vocab, e))
        goto err;
    size_t ns = (size_t)c->max_num_seqs, nt = (size_t)c->max_num_batched_tokens;
    g->running = malloc(ns * sizeof *g->running);
    g->sched = malloc(ns * sizeof *g->sched);
    g->cand = malloc(ns * sizeof *g->cand);
    g->b_tok = malloc(nt * sizeof *g->b_tok);
    g->b_pos = malloc(nt * sizeof *g->b_pos);
    g->b_slot = malloc(nt * sizeof *g->b_slot);
    g->b_qs = malloc((ns + 1) * sizeof *g->b_qs);
    g->b_ctx = malloc(ns * sizeof *g->b_ctx);
    g->b_table = malloc(ns * (size_t)g->max_blocks_seq * sizeof *g->b_table);
    g->row_of = malloc(ns * sizeof *g->row_of);
    g->raw = malloc((size_t)g->vocab * sizeof *g->raw);
    if (!g->running || !g->sched || !g->cand || !g->b_tok || !g->b_pos || !g->b_slot || !g->b_qs ||
        !g->b_ctx || !g->b_table || !g->row_of || !g->raw) {
        err_set(e, "out of memory for the engine's batch buffers");
        goto err;
    }
    const char *log = getenv("INFERD_STEP_LOG");
    if (log && *log && !(g->step_log = fopen(log, "w"))) {
        err_set(e, "INFERD_STEP_LOG: cannot write %s: %s", log, strerror(errno));
        goto err;
    }
    if (g->step_log) {
        /* a line a step, written as it ends: `tail -f` follows a running
         * server, and a killed one leaves every finished step */
        setvbuf(g->step_log, NULL, _IOLBF, 0);
        fprintf(g->step_log, "# step seqs prompt_tokens decode_rows max_ctx idle_ms "
                             "schedule_ms forward_ms emit_ms\n");
    }
    /* Last before the thread: the model cannot give its pool back, so
     * nothing after this may fail but the thread start. */
    if (mdl_kv_init(m, (int)n_blocks, c->block_size, e))
        goto err;
    if (pthread_create(&g->thread, NULL, engine_main, g)) {
        err_set(e, "cannot start the engine thread");
        goto err;
    }
    g->thread_started = 1;
    publish_stats(g);
    *out = g;
    return 0;
err:
    engine_free(g);
    return -1;
}

void eng_destroy(eng_engine *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stop = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (g->thread_started)
        pthread_join(g->thread, NULL);
    engine_free(g);
}

/* ---- submit ---- */

static int check_range(int v, int lo, int hi, const char *what, inferd_error *e)
{
    if (v < lo || v > hi) {
        err_set(e, "%s is %d, expected %d..%d", what, v, lo, hi);
        return -1;
    }
    return 0;
}

static int check_sampling(const eng_engine *g, const eng_sampling *s, inferd_error *e)
{
    if (!(s->temperature >= 0) || !isfinite(s->temperature)) {
        err_set(e, "temperature must be a number >= 0, got %g", s->temperature);
        return -1;
    }
    if (!(s->top_p > 0 && s->top_p <= 1)) {
        err_set(e, "top_p must be in (0, 1], got %g", s->top_p);
        return -1;
    }
    if (!(s->min_p >= 0 && s->min_p <= 1)) {
        err_set(e, "min_p must be in [0, 1], got %g", s->min_p);
        return -1;
    }
    if (!(s->repetition_penalty > 0) || !isfinite(s->repetition_penalty)) {
        err_set(e, "repetition_penalty must be > 0, got %g", s->repetition_penalty);
        return -1;
    }
    if (!(s->presence_penalty >= -2 && s->presence_penalty <= 2) ||
        !(s->frequency_penalty >= -2 && s->frequency_penalty <= 2)) {
        err_set(e, "presence_penalty and frequency_penalty must be in [-2, 2], got %g and %g",
                s->presence_penalty, s->frequency_penalty);
        return -1;
    }
    if (s->top_k < -1) {
        err_set(e, "top_k must be -1 (off) or >= 0, got %d", s->top_k);
        return -1;
    }
    if (check_range(s->max_tokens, s->prompt_logprobs ? 0 : 1, INT32_MAX, "max_tokens", e) ||
        check_range(s->min_tokens, 0, s->max_tokens, "min_tokens", e) ||
        check_range(s->top_logprobs, 0, ENG_MAX_TOP_LOGPROBS, "top_logprobs", e) ||
        check_range(s->prompt_top_logprobs, 0, ENG_MAX_TOP_LOGPROBS, "prompt_top_logprobs",
                    e) ||
        check_range(s->n_stop_ids, 0, ENG_MAX_STOP_IDS, "the number of stop token ids", e) ||
        check_range(s->n_logit_bias, 0, g->vocab, "the number of logit_bias entries", e))
        return -1;
    for (int i = 0; i < s->n_stop_ids; i++)
        if (check_range(s->stop_ids[i], 0, g->vocab - 1, "a stop token id", e))
            return -1;
    if (s->n_logit_bias > 0 && (!s->logit_bias_ids || !s->logit_bias_vals)) {
        err_set(e, "logit_bias has %d entries but no arrays", s->n_logit_bias);
        return -1;
    }
    for (int i = 0; i < s->n_logit_bias; i++) {
        if (check_range(s->logit_bias_ids[i], 0, g->vocab - 1, "a logit_bias token id", e))
            return -1;
        if (!isfinite(s->logit_bias_vals[i])) {
            err_set(e, "logit_bias for token %d is not a finite number", s->logit_bias_ids[i]);
            return -1;
        }
    }
    return 0;
}

static eng_request *request_new(eng_engine *g, const int32_t *prompt, int n_prompt,
                                const eng_sampling *s)
{
    eng_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    cond_init_monotonic(&r->cv);
    r->g = g;
    r->s = *s;
    r->n_prompt = r->n_tokens = n_prompt;
    r->refs = 2;
    size_t cap = (size_t)n_prompt + (size_t)s->max_tokens;
    r->cap_blocks = (int)((cap + (size_t)g->c.block_size - 1) / (size_t)g->c.block_size);
    r->tokens = malloc(cap * sizeof *r->tokens);
    r->blocks = malloc((size_t)r->cap_blocks * sizeof *r->blocks);
    r->hashes = malloc((size_t)r->cap_blocks * sizeof *r->hashes);
    if (s->n_logit_bias > 0) {
        r->bias_ids = malloc((size_t)s->n_logit_bias * sizeof *r->bias_ids);
        r->bias_vals = malloc((size_t)s->n_logit_bias * sizeof *r->bias_vals);
    }
    if (s->prompt_logprobs)
        r->plp = calloc((size_t)n_prompt, sizeof *r->plp);
    if (!r->tokens || !r->blocks || !r->hashes || (s->prompt_logprobs && !r->plp) ||
        (s->n_logit_bias > 0 && (!r->bias_ids || !r->bias_vals))) {
        request_free(r);
        return NULL;
    }
    memcpy(r->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
    if (s->n_logit_bias > 0) {
        memcpy(r->bias_ids, s->logit_bias_ids, (size_t)s->n_logit_bias * sizeof *r->bias_ids);
        memcpy(r->bias_vals, s->logit_bias_vals, (size_t)s->n_logit_bias * sizeof *r->bias_vals);
    }
    r->s.logit_bias_ids = r->bias_ids;
    r->s.logit_bias_vals = r->bias_vals;
    return r;
}

/* Caller holds g->mu. Only incoming grows here: waiting belongs to the
 * engine thread, which grows it in take_incoming. */
static int reserve_incoming(eng_engine *g)
{
    if (g->n_incoming < g->cap_incoming)
        return 0;
    int cap = g->cap_incoming ? g->cap_incoming * 2 : 64;
    eng_request **inc = realloc(g->incoming, (size_t)cap * sizeof *inc);
    if (!inc)
        return -1;
    g->incoming = inc;
    g->cap_incoming = cap;
    return 0;
}

eng_request *eng_submit(eng_engine *g, const int32_t *prompt, int n_prompt,
                        const eng_sampling *s, inferd_error *e)
{
    if (!prompt || n_prompt <= 0) {
        err_set(e, "the prompt is empty");
        return NULL;
    }
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= g->vocab) {
            err_set(e, "prompt token %d (id %d) is out of range for a vocabulary of %d", i,
                    prompt[i], g->vocab);
            return NULL;
        }
    if (check_sampling(g, s, e))
        return NULL;
    if ((int64_t)n_prompt + s->max_tokens > g->c.max_model_len) {
        err_set(e, "the prompt (%d tokens) plus max_tokens (%d) exceeds the context of %d "
                "tokens", n_prompt, s->max_tokens, g->c.max_model_len);
        return NULL;
    }
    eng_request *r = request_new(g, prompt, n_prompt, s);
    if (!r) {
        err_set(e, "out of memory for a request of %d prompt tokens", n_prompt);
        return NULL;
    }
    pthread_mutex_lock(&g->mu);
    if (g->stop || reserve_incoming(g)) {
        err_set(e, g->stop ? "the engine is shutting down" : "out of memory");
        pthread_mutex_unlock(&g->mu);
        request_free(r);
        return NULL;
    }
    r->id = g->next_id++;
    smp_rng_seed(r->rng, s->has_seed ? s->seed : g->c.seed ^ (r->id * 0x9e3779b97f4a7c15ull));
    g->incoming[g->n_incoming++] = r;
    g->st.waiting++;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    return r;
}

void eng_get_stats(eng_engine *g, eng_stats *s)
{
    pthread_mutex_lock(&g->mu);
    *s = g->st;
    pthread_mutex_unlock(&g->mu);
}

int eng_max_model_len(const eng_engine *g) { return g->c.max_model_len; }

/* Decode steps after the prompt: one run op by op, one captured, one replayed. */
#define WARMUP_NEW_TOKENS 4

int eng_warmup(eng_engine *g, inferd_error *e)
{
    int n = g->c.max_num_batched_tokens, room = g->c.max_model_len - WARMUP_NEW_TOKENS;
    n = n < room ? n : room;
    if (n < 1)
        return 0;
    int32_t *prompt = malloc((size_t)n * sizeof *prompt);
    if (!prompt) {
        err_set(e, "out of memory for the warm-up prompt");
        return -1;
    }
    for (int i = 0; i < n; i++) /* any ids of the vocabulary */
        prompt[i] = (int32_t)(((uint32_t)i * 2654435761u >> 7) % (uint32_t)g->vocab);
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.temperature = 0;
    s.ignore_eos = 1;
    s.max_tokens = WARMUP_NEW_TOKENS;
    eng_request *r = eng_submit(g, prompt, n, &s, e);
    free(prompt);
    if (!r)
        return -1;
    eng_event ev = {0};
    while (eng_next(r, &ev, -1) == 1 && ev.finish == ENG_RUNNING)
        ;
    eng_release(r);
    if (ev.finish == ENG_FINISH_ERROR) {
        err_set(e, "the warm-up forward pass failed; see the messages above");
        return -1;
    }
    pthread_mutex_lock(&g->mu);
    g->reset_stats = 1;
    pthread_cond_broadcast(&g->cv);
    while (g->reset_stats && !g->stop)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return 0;
}
