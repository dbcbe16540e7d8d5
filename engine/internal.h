/* engine internals, shared by the files of engine/ and by tests/engine only
 * (the public contract is engine.h). The split follows vLLM v1: kv_cache.c
 * owns blocks and prefix hashes, sampler.c turns logits into a token,
 * scheduler.c decides who runs, engine.c owns the thread and the requests. */
#ifndef INFERD_ENGINE_INTERNAL_H
#define INFERD_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/engine.h"

/* ---- kv_cache.c: block pool with automatic prefix caching ---- */

/* A block is free when ref == 0; a free block that still holds a hashed
 * prefix stays findable until the allocator evicts it (LRU: the free list
 * is ordered oldest-freed first). */
typedef struct kv_block {
    int ref;
    int prev, next;        /* free-list links, -1 at the ends */
    int in_free;
    int hashed;            /* registered in the prefix table */
    int hnext;             /* prefix-table chain, -1 ends */
    uint64_t hash, parent; /* chained hash, parent block's hash */
} kv_block;

typedef struct kv_cache {
    int n_blocks, block_size;
    kv_block *b;           /* [n_blocks] */
    int32_t *tok;          /* [n_blocks][block_size] tokens of hashed blocks */
    int free_head, free_tail, n_free, n_cached;
    int *bucket;           /* [n_bucket] prefix-table heads, -1 = empty */
    int n_bucket;          /* power of two */
} kv_cache;

#define KV_ROOT_HASH 0x9e3779b97f4a7c15ull

int kv_init(kv_cache *c, int n_blocks, int block_size, inferd_error *e);
void kv_free(kv_cache *c);
uint64_t kv_hash(uint64_t parent, const int32_t *tokens, int block_size);
/* Takes the longest run of cached blocks that spells the first max_blocks
 * full blocks of tokens; stores their ids and hashes, returns the count.
 * Each taken block gets a reference. */
int kv_match(kv_cache *c, const int32_t *tokens, int max_blocks, int32_t *ids,
             uint64_t *hashes);
/* Takes n blocks (evicting cached free blocks LRU), or returns -1 and takes
 * nothing when fewer than n are free. */
int kv_alloc(kv_cache *c, int n, int32_t *ids);
/* Drops one reference to each block, last block first, so that a
 * sequence's tail is evicted before the prefix other requests share. */
void kv_release(kv_cache *c, const int32_t *ids, int n);
/* Registers a full, computed block under hash (parent, tokens) unless an
 * identical block is already registered. */
void kv_commit(kv_cache *c, int id, uint64_t hash, uint64_t parent,
               const int32_t *tokens);

/* ---- sampler.c ---- */

/* Scratch the sampler reuses across calls (one per engine thread). */
typedef struct smp_scratch {
    int vocab;
    float *p;        /* [vocab] */
    int32_t *idx;    /* [vocab] */
    int32_t *cnt;    /* [vocab] output-token counts, kept zero between calls */
    uint8_t *seen;   /* [vocab] kept zero between calls */
} smp_scratch;

int smp_scratch_init(smp_scratch *w, int vocab, inferd_error *e);
void smp_scratch_free(smp_scratch *w);

/* What the sampler needs to know about one request. */
typedef struct smp_seq {
    const eng_sampling *s;     /* logit_bias_* point at the request's copies */
    const int32_t *tokens;     /* prompt then output */
    int n_prompt, n_output;
    const int32_t *eos;        /* the model's eos ids */
    int n_eos;
} smp_seq;

/* Applies, in vLLM's order, logit_bias, min_tokens (eos and stop ids get
 * -inf), then repetition, frequency and presence penalties. In place. */
void smp_process(const smp_seq *q, float *logits, int vocab, smp_scratch *w);
/* Final distribution of a random (temperature > 0) sample over processed
 * logits: temperature, then min_p, top_k, top_p, renormalised. probs may
 * be w->p. */
void smp_probs(const eng_sampling *s, const float *logits, int vocab, float *probs,
               smp_scratch *w);
/* Picks a token: argmax of the processed logits when greedy, else inverse
 * CDF of smp_probs at u in [0, 1), walked in token-id order. Modifies
 * logits. */
int32_t smp_sample(const smp_seq *q, float *logits, int vocab, double u, smp_scratch *w);
/* Log-softmax of raw logits: the logprob of token and the k most likely
 * tokens (ties by lower id). */
void smp_logprobs(const float *logits, int vocab, int32_t token, int k, float *lp,
                  int32_t *top_ids, float *top_lp, smp_scratch *w);

/* ---- sampling from a device's candidates (backend.h's be_sample_out) ----
 * The device samples every logits row (greedy, or temperature and min_p at
 * the request's u) and sends back the top BE_TOPK raw logits with the
 * log-sum-exp and the kept total. Most requests are settled from that; the
 * others fetch their whole row and go through smp_sample unchanged. */

/* 1 when q's next token needs the whole row: logit_bias, min_tokens still
 * masking ids, a repetition/frequency/presence penalty that changes a
 * logit, or more top logprobs than the candidates hold. */
int smp_needs_full_row(const smp_seq *q, int top_logprobs);
/* What the device is asked for one row of s at the draw u. */
be_sample_row smp_device_row(const eng_sampling *s, double u);
/* The token smp_sample would draw at u (s without logit processing), from
 * the device's result o of the row sampled as smp_device_row(s, u) asked:
 * the device's own token when neither top_k nor top_p is on; otherwise
 * top_k and top_p applied to the candidates, which must provably hold the
 * whole kept set. 0 and *tok, or -1 when they may not (then the full row
 * decides). */
int smp_pick_from_candidates(const eng_sampling *s, const be_sample_out *o, int vocab,
                             double u, int32_t *tok);
/* smp_logprobs from the candidates: the logprob of tok and the k most
 * likely tokens. -1 when tok's logit is not among them or k > o->n_top and
 * the vocabulary is larger. */
int smp_logprobs_from_candidates(const be_sample_out *o, int vocab, int32_t tok, int k,
                                 float *lp, int32_t *top_ids, float *top_lp);

/* Per-request generator: xoshiro256** seeded through splitmix64, so a seed
 * gives the same stream whatever else runs. */
void smp_rng_seed(uint64_t st[4], uint64_t seed);
double smp_rng_uniform(uint64_t st[4]);

/* ---- requests and the engine (engine.c, scheduler.c) ---- */

struct eng_request {
    eng_engine *g;
    uint64_t id;
    eng_sampling s;            /* bias pointers redirected to the copies */
    int32_t *bias_ids;         /* [s.n_logit_bias] */
    float *bias_vals;
    int32_t *tokens;           /* [n_prompt + max_tokens] prompt then output */
    int n_prompt, n_tokens;
    uint64_t rng[4];

    /* engine thread only */
    int32_t *blocks;           /* [cap_blocks] block table */
    uint64_t *hashes;          /* [cap_blocks] chained hashes of full blocks */
    int n_blocks, cap_blocks, n_hashed;
    int n_computed;            /* tokens whose KV is in the cache */
    int num_cached;            /* prompt tokens the prefix cache served */
    int admitted;              /* has run at least once */
    eng_event *plp;            /* [n_prompt] prompt logprobs, or NULL */
    int plp_done;
    uint64_t mark;             /* step_no of the step that scheduled or preempted it */

    /* shared with the caller, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    eng_event *q;              /* event ring */
    int q_head, q_n, q_cap;
    int done;                  /* the final event is queued */
    int plp_ready;
    int refs;                  /* caller + engine */
    eng_waiter *waiter;        /* woken on each event, or NULL */
    atomic_int cancel;
};

struct eng_waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
};

/* One scheduled piece of work: rows [r->n_computed, +n_new) of r. */
typedef struct eng_sched {
    eng_request *r;
    int n_new;
} eng_sched;

struct eng_engine {
    mdl_model *m;
    eng_config c;
    int vocab;
    int32_t eos[16];
    int n_eos;
    kv_cache kv;
    smp_scratch w;
    pthread_t thread;
    int thread_started;

    /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int reset_stats;           /* eng_warmup: zero the counters, then clear this */
    eng_request **incoming;    /* submitted, not yet seen by the thread */
    int n_incoming, cap_incoming;
    uint64_t next_id;
    eng_stats st;

    /* engine thread only */
    eng_request **waiting;     /* FCFS; preempted requests go to the front */
    int n_waiting, cap_waiting;
    eng_request **running;     /* [max_num_seqs], admission order */
    int n_running;
    eng_sched *sched;          /* [max_num_seqs] */
    eng_request **cand;        /* [max_num_seqs] this step's running, decodes first */
    uint64_t step_no;
    int n_sched;
    int n_preempted_step;
    eng_stats local;           /* counters published into st after each step */
    FILE *step_log;            /* INFERD_STEP_LOG: one line per step, or NULL */
    double step_end;           /* when the previous step ended (step log) */

    /* batch buffers for the model */
    int32_t *b_tok, *b_pos, *b_slot;   /* [max_num_batched_tokens] */
    int32_t *b_qs, *b_ctx;             /* [max_num_seqs + 1] */
    int32_t *b_table;                  /* [max_num_seqs][max_blocks_seq] */
    int max_blocks_seq;
    int32_t *b_rows;                   /* [cap_rows] logit rows */
    int32_t *row_of;                   /* [max_num_seqs] first logit row of sched i */
    float *logits;                     /* [cap_rows][vocab] rows fetched to the host */
    be_sample_row *s_in;               /* [cap_rows] what the device samples per row */
    be_sample_out *s_out;              /* [cap_rows] what it sends back */
    float *raw;                        /* [vocab] raw logits kept for logprobs */
    int cap_rows;
};

/* Rows of prompt logprobs computed per step for one request, so that the
 * logits buffer stays small. */
#define ENG_PLP_CHUNK 128

/* scheduler.c: one schedule -> forward -> sample -> emit step; returns the
 * number of requests that ran. */
void sched_cancel_pending(eng_engine *g);
int sched_step(eng_engine *g);
/* Ends r with reason `fin` (event token -1 unless tok >= 0 was queued
 * before), frees its blocks and drops the engine's reference. */
void eng_finish_request(eng_engine *g, eng_request *r, eng_finish fin);
/* Queues one event for the caller. */
void eng_push_event(eng_request *r, const eng_event *ev, int final);
/* Drops one reference; frees the request at zero. */
void eng_request_unref(eng_request *r);

#endif
