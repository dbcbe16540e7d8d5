/* engine/encoder.c: the engine of encoder models (embeddings, scores,
 * classifiers). One thread owns the encoder's backend, as the generation
 * engine's thread owns its model; callers on any thread queue a job (the
 * packed sequences of one request) and sleep until its outputs are in their
 * buffers.
 *
 * Batching: the thread takes the first queued job and every later one that
 * wants the same outputs, up to ENG_ENC_PASS_TOKENS tokens in all, runs
 * them as one packed pass (sequences attend only to themselves, so nothing
 * changes for any of them; the CPU kernels give each row the same bits
 * whatever else is in the batch) and hands each job its rows. Jobs that
 * arrive meanwhile wait for the next pass, so an idle server adds no
 * latency. A pass the model refuses (one job's bad input) or that finds
 * no memory runs again job by job, so that only the job at fault fails. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

typedef struct enc_job {
    mdl_enc_batch b;               /* the caller's sequences */
    ld_pooling pooling;
    int normalize;
    float *pooled, *logits;        /* the caller's [n_seqs][hidden], [n_seqs][labels] */
    int done, rc;
    char msg[INFERD_ERR_MAX];
    struct enc_job *next;
} enc_job;

struct eng_encoder {
    mdl_encoder *m;
    pthread_t thread;
    int thread_started;

    /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t work_cv;        /* a job was queued, or stop */
    pthread_cond_t done_cv;        /* a pass finished */
    enc_job *head, *tail;          /* queued, FCFS */
    int stop;
    eng_encoder_stats st;

    /* encoder thread only: the merged pass, grown as passes need (at most
     * ENG_ENC_PASS_TOKENS tokens, so the buffers stay bounded) */
    int32_t *q_start, *tok, *type; /* [cap_qs], [cap_tok], [cap_type] */
    float *pooled, *logits;        /* [cap_pooled], [cap_logits] */
    size_t cap_qs, cap_tok, cap_type, cap_pooled, cap_logits;
};

static int same_outputs(const enc_job *x, const enc_job *y)
{
    return !x->pooled == !y->pooled && !x->logits == !y->logits &&
           (!x->pooled || (x->pooling == y->pooling && x->normalize == y->normalize));
}

static int job_tokens(const enc_job *j) { return j->b.q_start[j->b.n_seqs]; }

static void run_one(eng_encoder *x, enc_job *j)
{
    inferd_error e = {{0}};
    j->rc = mdl_encoder_forward(x->m, &j->b, j->pooling, j->normalize, j->pooled, j->logits, &e);
    if (j->rc)
        snprintf(j->msg, sizeof j->msg, "%s", e.msg);
}

/* Grows *p to hold n elements of size sz; -1 when memory is short. */
static int grow(void *p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap)
        return 0;
    void *q = realloc(*(void **)p, n * sz);
    if (!q)
        return -1;
    *(void **)p = q;
    *cap = n;
    return 0;
}

/* Packs the sequences of the jobs in list into x's pass buffers; returns
 * the sequence count, or -1 when memory is short. */
static int pack(eng_encoder *x, const enc_job *list, const ld_encoder_config *c)
{
    size_t n_seqs = 0, n_tok = 0;
    for (const enc_job *j = list; j; j = j->next) {
        n_seqs += (size_t)j->b.n_seqs;
        n_tok += (size_t)job_tokens(j);
    }
    if (grow(&x->q_start, &x->cap_qs, n_seqs + 1, sizeof *x->q_start) ||
        grow(&x->tok, &x->cap_tok, n_tok, sizeof *x->tok) ||
        grow(&x->type, &x->cap_type, n_tok, sizeof *x->type) ||
        (list->pooled &&
         grow(&x->pooled, &x->cap_pooled, n_seqs * c->hidden_size, sizeof *x->pooled)) ||
        (list->logits &&
         grow(&x->logits, &x->cap_logits, n_seqs * c->num_labels, sizeof *x->logits)))
        return -1;
    size_t s = 0, t = 0;
    x->q_start[0] = 0;
    for (const enc_job *j = list; j; j = j->next) {
        size_t n = (size_t)job_tokens(j);
        memcpy(x->tok + t, j->b.tokens, n * sizeof *x->tok);
        if (j->b.token_types)
            memcpy(x->type + t, j->b.token_types, n * sizeof *x->type);
        else
            memset(x->type + t, 0, n * sizeof *x->type);
        for (int i = 0; i < j->b.n_seqs; i++)
            x->q_start[s + (size_t)i + 1] = (int32_t)t + j->b.q_start[i + 1];
        s += (size_t)j->b.n_seqs;
        t += n;
    }
    return (int)s;
}

/* Runs the jobs of list (linked by next) as one pass. */
static void run_pass(eng_encoder *x, enc_job *list, int n_jobs)
{
    if (n_jobs == 1) {
        run_one(x, list);
        return;
    }
    const ld_encoder_config *c = mdl_encoder_config(x->m);
    int n_seqs = pack(x, list, c), ok = n_seqs >= 0;
    if (ok) {
        enc_job merged = *list;
        merged.b = (mdl_enc_batch){.n_seqs = n_seqs, .q_start = x->q_start, .tokens = x->tok,
                                   .token_types = x->type};
        merged.pooled = list->pooled ? x->pooled : NULL;
        merged.logits = list->logits ? x->logits : NULL;
        run_one(x, &merged);
        ok = merged.rc == 0;
    }
    if (!ok) {
        for (enc_job *j = list; j; j = j->next)
            run_one(x, j);
        return;
    }
    size_t row = 0;
    for (enc_job *j = list; j; j = j->next) {
        size_t n = (size_t)j->b.n_seqs;
        if (j->pooled)
            memcpy(j->pooled, x->pooled + row * c->hidden_size,
                   n * c->hidden_size * sizeof *x->pooled);
        if (j->logits)
            memcpy(j->logits, x->logits + row * c->num_labels,
                   n * c->num_labels * sizeof *x->logits);
        j->rc = 0;
        row += n;
    }
}

/* Takes the next pass's jobs off the queue (mu held). */
static enc_job *take_pass(eng_encoder *x, int *n_jobs, int *n_tokens)
{
    enc_job *head = x->head, *tail = head, **link = &head->next;
    int tokens = job_tokens(head), n = 1;
    x->head = head->next;
    for (enc_job **pp = &x->head; *pp;) {
        enc_job *j = *pp;
        if (same_outputs(j, head) && tokens + job_tokens(j) <= ENG_ENC_PASS_TOKENS) {
            *pp = j->next;
            *link = j;
            link = &j->next;
            tail = j;
            tokens += job_tokens(j);
            n++;
        } else
            pp = &j->next;
    }
    tail->next = NULL;
    x->tail = NULL;
    for (enc_job *j = x->head; j; j = j->next)
        x->tail = j;
    *n_jobs = n;
    *n_tokens = tokens;
    return head;
}

/* The thread: one pass after another while jobs are queued; on stop it
 * still runs what is queued, so that no caller waits forever. */
static void *encoder_main(void *arg)
{
    eng_encoder *x = arg;
    pthread_mutex_lock(&x->mu);
    for (;;) {
        while (!x->stop && !x->head)
            pthread_cond_wait(&x->work_cv, &x->mu);
        if (!x->head)
            break;
        int n_jobs, n_tokens;
        enc_job *list = take_pass(x, &n_jobs, &n_tokens);
        pthread_mutex_unlock(&x->mu);
        run_pass(x, list, n_jobs);
        pthread_mutex_lock(&x->mu);
        x->st.passes++;
        x->st.requests += (uint64_t)n_jobs;
        x->st.tokens += (uint64_t)n_tokens;
        if (n_jobs <= ENG_ENC_STATS_JOBS)
            x->st.passes_by_jobs[n_jobs - 1]++;
        for (enc_job *j = list, *next; j; j = next) {
            next = j->next; /* the job lives on its caller's stack: read before done */
            j->done = 1;
        }
        pthread_cond_broadcast(&x->done_cv);
    }
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

static void encoder_free(eng_encoder *x)
{
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->work_cv);
    pthread_cond_destroy(&x->done_cv);
    free(x->q_start);
    free(x->tok);
    free(x->type);
    free(x->pooled);
    free(x->logits);
    free(x);
}

int eng_encoder_create(mdl_encoder *m, eng_encoder **out, inferd_error *e)
{
    eng_encoder *x = calloc(1, sizeof *x);
    if (!x) {
        err_set(e, "out of memory");
        return -1;
    }
    x->m = m;
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->work_cv, NULL);
    pthread_cond_init(&x->done_cv, NULL);
    if (pthread_create(&x->thread, NULL, encoder_main, x)) {
        err_set(e, "cannot start the encoder engine's thread");
        encoder_free(x);
        return -1;
    }
    x->thread_started = 1;
    *out = x;
    return 0;
}

void eng_encoder_destroy(eng_encoder *x)
{
    if (!x)
        return;
    pthread_mutex_lock(&x->mu);
    x->stop = 1;
    pthread_cond_signal(&x->work_cv);
    pthread_mutex_unlock(&x->mu);
    if (x->thread_started)
        pthread_join(x->thread, NULL);
    encoder_free(x);
}

int eng_encode(eng_encoder *x, const mdl_enc_batch *b, ld_pooling pooling, int normalize,
               float *pooled, float *logits, inferd_error *e)
{
    enc_job job = {.b = *b, .pooling = pooling, .normalize = normalize, .pooled = pooled,
                   .logits = logits};
    pthread_mutex_lock(&x->mu);
    if (x->stop) {
        pthread_mutex_unlock(&x->mu);
        err_set(e, "the encoder engine is shutting down");
        return -1;
    }
    if (x->tail)
        x->tail->next = &job;
    else
        x->head = &job;
    x->tail = &job;
    pthread_cond_signal(&x->work_cv);
    while (!job.done)
        pthread_cond_wait(&x->done_cv, &x->mu);
    pthread_mutex_unlock(&x->mu);
    if (job.rc) {
        err_set(e, "%s", job.msg);
        return -1;
    }
    return 0;
}

void eng_encoder_get_stats(eng_encoder *x, eng_encoder_stats *s)
{
    pthread_mutex_lock(&x->mu);
    *s = x->st;
    pthread_mutex_unlock(&x->mu);
}
