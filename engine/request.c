/* engine/request.c: the callers' side of the engine. A request is queued
 * by eng_submit and read by its caller event by event (eng_next, or a
 * waiter for several); the engine thread queues the events (req_push_event,
 * req_finish) and never waits on a caller. A request is held twice (the
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

/* Queues one event for the caller; final marks r done. */
static void push_event(eng_request *r, const eng_event *ev, int final)
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
    kvm_seq_free(&r->kv);
    free(r->plp);
    free(r->q);
    free(r);
}

void req_push_event(eng_request *r, const eng_event *ev) { push_event(r, ev, 0); }

void req_finish(eng_request *r, const eng_event *last)
{
    push_event(r, last, 1);
    pthread_mutex_lock(&r->mu);
    int gone = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (gone)
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
    if (!g) /* a test's request: nobody to wake */
        return;
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

eng_request *req_new(const int32_t *prompt, int n_prompt, const eng_sampling *s,
                     int block_size)
{
    eng_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    cond_init_monotonic(&r->cv);
    r->s = *s;
    r->n_prompt = r->n_tokens = n_prompt;
    r->refs = 2;
    size_t cap = (size_t)n_prompt + (size_t)s->max_tokens;
    r->tokens = malloc(cap * sizeof *r->tokens);
    int kv_ok = kvm_seq_init(&r->kv, block_size, (int)cap) == 0;
    if (s->n_logit_bias > 0) {
        r->bias_ids = malloc((size_t)s->n_logit_bias * sizeof *r->bias_ids);
        r->bias_vals = malloc((size_t)s->n_logit_bias * sizeof *r->bias_vals);
    }
    if (s->prompt_logprobs)
        r->plp = calloc((size_t)n_prompt, sizeof *r->plp);
    if (!r->tokens || !kv_ok || (s->prompt_logprobs && !r->plp) ||
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
    eng_request *r = req_new(prompt, n_prompt, s, g->c.block_size);
    if (!r) {
        err_set(e, "out of memory for a request of %d prompt tokens", n_prompt);
        return NULL;
    }
    r->g = g;
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
