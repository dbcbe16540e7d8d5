/* engine/engine.c: what the engine is for: turning many requests' prompts
 * into their tokens at once, on one model, with continuous batching over a
 * paged KV cache. One thread owns the model, the KV cache and the
 * scheduler, and loops
 *
 *     schedule (scheduler.c) -> run (runner.c) -> process outputs (output.c)
 *
 * while any request is live, sleeping on a condition variable otherwise.
 * Callers on any thread submit and read events through request.c; they
 * never touch the cache or the model. This file creates and destroys the
 * engine, runs that loop, warms it up and publishes its counters. */
#include <errno.h>
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

/* ---- the engine thread ---- */

/* Caller holds g->mu. */
static void publish_stats_locked(eng_engine *g)
{
    eng_stats *s = &g->st;
    const kv_cache *pool = &g->kv.pool;
    *s = g->local;
    s->running = g->sched.n_running;
    s->waiting = g->sched.n_waiting + g->n_incoming;
    s->kv_blocks_total = pool->n_blocks;
    s->kv_blocks_used = pool->n_blocks - pool->n_free;
    s->kv_blocks_cached = pool->n_cached;
}

static void publish_stats(eng_engine *g)
{
    pthread_mutex_lock(&g->mu);
    publish_stats_locked(g);
    pthread_mutex_unlock(&g->mu);
}

/* Hands submitted requests to the scheduler; returns 0 when the engine is
 * to stop. Sleeps while there is nothing to do. */
static int take_incoming(eng_engine *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->stop && g->n_incoming == 0 && g->sched.n_waiting == 0 &&
           g->sched.n_running == 0 && !g->reset_stats)
        pthread_cond_wait(&g->cv, &g->mu);
    if (g->reset_stats) { /* eng_warmup's request is not the users' */
        memset(&g->local, 0, sizeof g->local);
        publish_stats_locked(g);
        g->reset_stats = 0;
        pthread_cond_broadcast(&g->cv);
    }
    /* out of memory: they stay in incoming, and are tried again next step */
    if (sched_reserve(&g->sched, g->n_incoming) == 0) {
        for (int i = 0; i < g->n_incoming; i++)
            sched_add(&g->sched, g->incoming[i]);
        g->n_incoming = 0;
    }
    int go = !g->stop;
    pthread_mutex_unlock(&g->mu);
    return go;
}

/* Ends the requests the scheduler dropped (cancelled, or all at shutdown). */
static void abort_finished(eng_engine *g, const sched_output *o)
{
    for (int i = 0; i < o->n_finished; i++)
        out_abort(g, o->finished[i]);
}

/* INFERD_STEP_LOG's line for a step: what ran and where the host time went
 * (idle: from the previous step's end to this one's start). The shape is
 * taken before the step runs: requests may be gone after the outputs. */
static void step_shape(const sched_output *o, int *shape)
{
    shape[0] = shape[1] = shape[2] = 0;
    for (int i = 0; i < o->n_items; i++) {
        const sched_item *it = &o->items[i];
        /* a preempted request recomputing its generated tokens is prefill
         * work too, though its prompt is behind it */
        if (it->start >= it->r->n_prompt && it->n_new == 1)
            shape[1]++;
        else
            shape[0] += it->n_new;
        if (it->start + it->n_new > shape[2])
            shape[2] = it->start + it->n_new;
    }
}

static void log_step(eng_engine *g, int n_items, const int *shape, double ts, double t1,
                     double t2, double t3)
{
    fprintf(g->step_log, "%llu %d %d %d %d %.3f %.3f %.3f %.3f\n",
            (unsigned long long)g->local.steps, n_items, shape[0], shape[1], shape[2],
            g->step_end > 0 ? 1e3 * (ts - g->step_end) : 0.0, 1e3 * (t1 - ts),
            1e3 * (t2 - t1), 1e3 * (t3 - t2));
    g->step_end = t3;
}

/* One step: schedule -> run -> process outputs. Returns the number of
 * requests that ran. The time from the step's start until its batch is
 * laid out counts as scheduling; the forward pass with sampling as
 * forward; output processing as emit. */
static int step(eng_engine *g)
{
    double ts = now_seconds();
    const sched_output *o = sched_schedule(&g->sched);
    abort_finished(g, o);
    if (o->n_items == 0)
        return 0;
    double t0 = now_seconds();
    int ok = run_prepare(&g->run, o) == 0;
    double t1 = now_seconds();
    int shape[3] = {0, 0, 0};
    if (g->step_log && ok)
        step_shape(o, shape);
    int rc = run_execute(&g->run, o);
    double t2 = now_seconds();
    g->local.steps++;
    g->local.step_seconds += t2 - t0;
    g->local.schedule_seconds += t1 - ts;
    g->local.forward_seconds += t2 - t1;
    if (rc == 0)
        sched_update_from_output(&g->sched, o);
    out_process(g, o, g->run.res);
    if (rc)
        return o->n_items;
    double t3 = now_seconds();
    g->local.emit_seconds += t3 - t2;
    if (g->step_log)
        log_step(g, o->n_items, shape, ts, t1, t2, t3);
    return o->n_items;
}

static void *engine_main(void *arg)
{
    eng_engine *g = arg;
    while (take_incoming(g)) {
        int ran = step(g);
        publish_stats(g);
        if (!ran && (g->sched.n_running || g->sched.n_waiting)) {
            /* Cannot happen by construction (a lone request always fits the
             * pool); if it ever does, idle instead of spinning a core. */
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    /* Shutting down: everything live ends as aborted. */
    abort_finished(g, sched_abort_all(&g->sched));
    publish_stats(g);
    return NULL;
}

static void engine_free(eng_engine *g)
{
    run_free(&g->run);
    sched_free(&g->sched);
    kvm_free(&g->kv);
    if (g->step_log)
        fclose(g->step_log);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->incoming);
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
    int max_blocks_seq = (g->c.max_model_len + c->block_size - 1) / c->block_size;
    if (n_blocks < (size_t)max_blocks_seq) {
        err_set(e, "a KV cache of %zu bytes holds %zu blocks of %d tokens (%zu bytes each), "
                "fewer than one sequence of max_model_len %d needs (%d); raise the KV cache "
                "memory or lower max_model_len", c->kv_cache_bytes, n_blocks, c->block_size,
                per_block, g->c.max_model_len, max_blocks_seq);
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
    if (kvm_init(&g->kv, (int)n_blocks, c->block_size, c->enable_prefix_caching, e) ||
        sched_init(&g->sched, &g->c, &g->kv, &g->local, e) ||
        run_init(&g->run, m, &g->c, g->eos, g->n_eos, &g->local, e))
        goto err;
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
