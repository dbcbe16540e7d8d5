/* api/context.h: the api context, the one piece of state every file of api/
 * reads. Data only: what changes a part of it lives with the part's owner
 * (api.c sets it up, metrics.c counts under mu, the encoder engine
 * batches encoder passes). Included by every layer, so it includes nothing of
 * api/ but the public header. */
#ifndef INFERD_API_CONTEXT_H
#define INFERD_API_CONTEXT_H

#include <pthread.h>
#include <stdatomic.h>

#include "api/api.h"

/* Prometheus histogram with fixed upper bounds (the +Inf bucket is count). */
typedef struct api_hist {
    const double *bounds;
    int n_bounds;
    uint64_t *counts;     /* [n_bounds], cumulative at render time only */
    uint64_t count;
    double sum;
} api_hist;

struct api_ctx {
    char *model_name, *model_root;
    eng_engine *eng;              /* NULL when serving an encoder */
    mdl_encoder *enc;             /* NULL when serving a causal LM */
    /* Runs enc's forward passes, batching concurrent requests (api/embed.c
     * queues them); created and destroyed with the context. */
    eng_encoder *encoder;
    const tok_tokenizer *tok;
    const tmpl_chat *chat;
    ld_generation_config gen;
    int has_gen;
    int max_logprobs, max_queue, max_num_seqs, max_model_len, vocab;
    long created;
    atomic_int live;              /* sequences (choices) of generations in flight */
    atomic_uint_fast64_t id_counter;
    uint64_t id_salt;

    /* The metrics (api/metrics.c) */
    pthread_mutex_t mu;           /* guards everything below */
    api_hist ttft, itl, e2e, decode;   /* decode: first token to end */
    uint64_t prompt_tokens, generation_tokens;
    uint64_t finished_stop, finished_length, finished_abort, finished_error;
    uint64_t http_by_class[6];    /* [status / 100] */
    api_hist enc_batch;           /* requests per encoder forward pass */
    uint64_t enc_tokens;          /* tokens through encoder forward passes */
    /* (both copied from the encoder engine's stats when /metrics renders) */
};

#endif
