/* engine: continuous batching over a paged KV cache. One engine thread loops
 * schedule -> run -> process outputs while requests are live. HTTP threads
 * submit requests and read each request's events; they never touch the KV
 * cache or the model. The engine never sees text, HTTP or JSON. Encoder
 * models get an engine of their own (eng_encoder, at the end), which
 * batches their requests' forward passes the same way. */
#ifndef INFERD_ENGINE_H
#define INFERD_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "model/model.h"

typedef struct eng_engine eng_engine;
typedef struct eng_request eng_request;

typedef struct eng_config {
    int block_size;              /* tokens per KV block, 16 */
    size_t kv_cache_bytes;       /* pool size; the engine derives the block count */
    int max_num_seqs;            /* running at most (default 256) */
    int max_num_batched_tokens;  /* token budget per step (default 2048) */
    int max_model_len;           /* prompt + output at most; 0 = model's max */
    int enable_prefix_caching;   /* default 1 */
    uint64_t seed;               /* engine seed for requests without one */
} eng_config;
void eng_config_defaults(eng_config *c);

#define ENG_MAX_TOP_LOGPROBS 20
#define ENG_MAX_STOP_IDS 32

typedef struct eng_sampling {
    float temperature;           /* 0 = greedy */
    float top_p;                 /* 1 = off */
    int top_k;                   /* 0 or -1 = off */
    float min_p;                 /* 0 = off */
    float repetition_penalty;    /* 1 = off; over prompt and output tokens */
    float presence_penalty;      /* 0 = off; over output tokens */
    float frequency_penalty;     /* 0 = off; over output tokens */
    int n_logit_bias;
    const int32_t *logit_bias_ids;  /* copied at submit */
    const float *logit_bias_vals;
    int has_seed;
    uint64_t seed;
    int max_tokens;              /* > 0; 0 only with prompt_logprobs (echo) */
    int min_tokens;              /* eos/stop ids suppressed before this many */
    int ignore_eos;
    int n_stop_ids;
    int32_t stop_ids[ENG_MAX_STOP_IDS]; /* in addition to the model's eos ids */
    int logprobs;                /* return the sampled token's logprob */
    int top_logprobs;            /* 0..ENG_MAX_TOP_LOGPROBS alternatives */
    /* Logprobs of the prompt's own tokens (completions `echo` + `logprobs`):
     * read them with eng_prompt_logprobs. Such a request skips the prefix
     * cache (every prompt position needs its logits). */
    int prompt_logprobs;
    int prompt_top_logprobs;     /* 0..ENG_MAX_TOP_LOGPROBS alternatives */
} eng_sampling;
void eng_sampling_defaults(eng_sampling *s);

typedef enum eng_finish {
    ENG_RUNNING = 0,
    ENG_FINISH_LENGTH,     /* max_tokens or max_model_len reached */
    ENG_FINISH_STOP,       /* eos or a stop id */
    ENG_FINISH_ABORT,      /* cancelled, or the engine was destroyed */
    ENG_FINISH_ERROR,      /* the forward pass failed (answer 500) */
} eng_finish;

/* One generated token. logprobs are natural-log softmax of the model's
 * logits (before temperature and penalties, as vLLM reports them).
 * An event with token == -1 carries only a finish reason: a request
 * cancelled or failed before its next token, or max_tokens == 0. Every
 * request ends with exactly one event whose finish is not ENG_RUNNING; the
 * token of an ENG_FINISH_STOP event is the eos or stop id that matched
 * (vLLM leaves its text out of the answer). The top alternatives are
 * sorted by logprob, most likely first (ties: lower id). */
typedef struct eng_event {
    int32_t token;
    float logprob;
    int n_top;
    int32_t top_ids[ENG_MAX_TOP_LOGPROBS];
    float top_logprobs[ENG_MAX_TOP_LOGPROBS];
    eng_finish finish;          /* set on the last event of the request */
    int num_cached_tokens;      /* prompt tokens served from the prefix cache */
    int n_prompt;               /* prompt tokens of the request */
    int n_generated;            /* tokens generated so far, this one included */
} eng_event;

/* Creates the engine over a loaded model (its KV pool must not be allocated
 * yet: the engine calls mdl_kv_init) and starts its thread. The model stays
 * owned by the caller and must outlive the engine. Fails when the pool
 * cannot hold one sequence of max_model_len tokens. */
int eng_create(mdl_model *m, const eng_config *c, const int32_t *eos_ids,
               int n_eos, eng_engine **out, inferd_error *e);
/* Finishes (aborts) everything live and joins the thread. The KV pool was
 * allocated in the model and is freed with it (mdl_free). */
void eng_destroy(eng_engine *g);
/* Runs one request of max_num_batched_tokens prompt tokens and a few decode
 * steps, then zeroes the counters: on a GPU the first forward pass loads
 * kernels and chooses GEMM algorithms (~100 ms), which the first user's
 * request should not wait out. */
int eng_warmup(eng_engine *g, inferd_error *e);

/* Queues a request. Fails (NULL, message in e) when the prompt is empty,
 * prompt + max_tokens exceeds max_model_len, a token id (prompt, logit_bias,
 * stop ids) is out of range, or a sampling field is out of its range. The
 * request must be handed back with eng_release. Thread-safe. */
eng_request *eng_submit(eng_engine *g, const int32_t *prompt, int n_prompt,
                        const eng_sampling *s, inferd_error *e);
/* Waits up to timeout_ms (-1 = forever) for the next token. Returns 1 with
 * an event, 0 on timeout, -1 when the request has finished and every event
 * was read. */
int eng_next(eng_request *r, eng_event *ev, int timeout_ms);
/* Asks the engine to stop the request (client gone, stop string matched);
 * its KV blocks are freed at the next step. */
void eng_cancel(eng_request *r);
/* Releases the caller's handle; cancels the request if still live. */
void eng_release(eng_request *r);
/* Prompt logprobs of a request submitted with prompt_logprobs, available
 * once eng_next has returned its first event; NULL before or without them.
 * Entry i is prompt token i (token, logprob, top alternatives); entry 0 has
 * no logprob (NAN, n_top 0), as in vLLM. Valid until eng_release. */
const eng_event *eng_prompt_logprobs(eng_request *r, int *n);

/* A waiter lets one thread sleep until any of several requests (n > 1, a
 * list of prompts) has something to read, instead of polling each. */
typedef struct eng_waiter eng_waiter;
eng_waiter *eng_waiter_new(void);
/* Every request attached must be released (or detached) first. */
void eng_waiter_free(eng_waiter *w);
/* From now on every event queued on r wakes w; one already queued counts
 * too. A request has at most one waiter; NULL detaches. eng_release
 * detaches. */
void eng_set_waiter(eng_request *r, eng_waiter *w);
/* Sleeps until an attached request got an event since the last call
 * returned, or timeout_ms passes (-1 = forever). Returns 1 when woken, 0 on
 * timeout. Then read with eng_next(r, ev, 0) on each request. */
int eng_waiter_wait(eng_waiter *w, int timeout_ms);

typedef struct eng_stats {
    int running, waiting;
    int kv_blocks_total, kv_blocks_used;
    uint64_t prefix_queries, prefix_hits;  /* in tokens, at first admission */
    uint64_t prompt_tokens;         /* of requests admitted (once each) */
    uint64_t generation_tokens;     /* sampled so far */
    uint64_t preemptions;
    uint64_t requests_finished;     /* every finish reason */
    uint64_t steps;                 /* forward passes run */
    double step_seconds;            /* time spent in them */
    /* Where a step's wall time goes, on the engine thread: choosing the
     * batch and building its inputs; the forward pass and sampling (for a
     * GPU: until its results are back); and handing tokens to requests.
     * Host time shows up as the first and last, which the GPU waits out. */
    double schedule_seconds, forward_seconds, emit_seconds;
    int kv_blocks_cached;           /* free blocks still holding a prefix */
    /* tokens sampled from their whole logits row on the host (logit_bias,
     * penalties, ... or top_k/top_p the device's candidates could not
     * settle) rather than from what the device sampled */
    uint64_t sampler_full_row_fallbacks;
} eng_stats;
void eng_get_stats(eng_engine *g, eng_stats *s);
int eng_max_model_len(const eng_engine *g);

/* ---- encoder models: embeddings, scores, classifiers ----
 * An encoder engine owns an encoder model's backend on a thread of its
 * own and runs callers' jobs in packed forward passes: a pass takes the
 * first queued job and every later one that wants the same outputs
 * (pooled vectors with the same pooling and normalization, logits, or
 * both), up to ENG_ENC_PASS_TOKENS tokens in all. Sequences attend only
 * to themselves, so sharing a pass changes no job's outputs; a pass the
 * model refuses runs again job by job, so only the job at fault fails. */
typedef struct eng_encoder eng_encoder;

#define ENG_ENC_PASS_TOKENS 8192
#define ENG_ENC_STATS_JOBS 128

typedef struct eng_encoder_stats {
    uint64_t passes;                    /* forward passes run */
    uint64_t requests;                  /* jobs through them */
    uint64_t tokens;                    /* tokens through them */
    /* [k - 1]: passes that held k jobs, k <= ENG_ENC_STATS_JOBS (larger
     * passes count in passes only) */
    uint64_t passes_by_jobs[ENG_ENC_STATS_JOBS];
} eng_encoder_stats;

/* Starts the engine's thread over a loaded encoder, which stays owned by
 * the caller and must outlive the engine. */
int eng_encoder_create(mdl_encoder *m, eng_encoder **out, inferd_error *e);
/* Runs what is still queued, then joins the thread. */
void eng_encoder_destroy(eng_encoder *x);
/* Queues the sequences of b (as mdl_encoder_forward takes them) and waits
 * until their outputs are in pooled ([n_seqs][hidden_size], pooled as
 * `pooling` says, L2-normalized when normalize; may be NULL) and logits
 * ([n_seqs][num_labels]; may be NULL). b's arrays are read until then.
 * Fails with the model's message when it refuses the input. Thread-safe. */
int eng_encode(eng_encoder *x, const mdl_enc_batch *b, ld_pooling pooling, int normalize,
               float *pooled, float *logits, inferd_error *e);
void eng_encoder_get_stats(eng_encoder *x, eng_encoder_stats *s);

#endif
