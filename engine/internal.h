/* engine internals, shared by the files of engine/ and by tests/engine only
 * (the public contract is engine.h). The split follows vLLM v1, each file
 * below the ones that use it:
 *   kv_cache.c    the block pool: reference counts, prefix hashes, LRU
 *   kv_manager.c  each request's block table and hashes on top of the pool
 *   scheduler.c   who runs this step and how many tokens (sched_output)
 *   sampler.c     logits -> token for one request
 *   runner.c      sched_output -> the model's batch, forward pass, sampling
 *   request.c     request handles, their event queues, submit
 *   output.c      sampled tokens -> events and finishes
 *   engine.c      the thread: schedule -> run -> process outputs
 * encoder.c (the encoder models' batcher) stands apart: it shares nothing
 * here. */
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

/* ---- kv_manager.c: each request's blocks, on top of the pool ---- */

/* One request's block table and the chained hashes of its full blocks.
 * It lives in the request, but only kv_manager.c writes it; the runner
 * reads the table to lay out the batch. Empty while the request waits. */
typedef struct kvm_seq {
    int32_t *blocks;       /* [cap] token p's KV is in block blocks[p / block_size] */
    uint64_t *hashes;      /* [cap] chained hashes of blocks [0, n_hashed) */
    int n_blocks, n_hashed, cap;
} kvm_seq;

/* vLLM's KVCacheManager: the scheduler asks it for a request's cached
 * prefix at admission and for slots for each step's tokens, and hands the
 * blocks back on finish or preemption. */
typedef struct kv_manager {
    kv_cache pool;
    int block_size;
    int enable_caching;    /* prefix lookups at admission, commits after steps */
} kv_manager;

int kvm_init(kv_manager *m, int n_blocks, int block_size, int enable_caching,
             inferd_error *e);
void kvm_free(kv_manager *m);
/* Sizes q's arrays for a request of at most max_tokens tokens (done at
 * submit, on the caller's thread, not in the engine loop). */
int kvm_seq_init(kvm_seq *q, int block_size, int max_tokens);
void kvm_seq_free(kvm_seq *q);
/* For a request that holds no blocks: takes the cached blocks spelling the
 * longest run of its full blocks short of its last token (whose logits are
 * needed, so it is always computed) and returns the tokens they hold; 0
 * when prefix caching is off. */
int kvm_get_computed_blocks(kv_manager *m, kvm_seq *q, const int32_t *tokens, int n_tokens);
/* Gives q blocks for its first n_tokens tokens; -1, taking nothing, when
 * the pool is short. */
int kvm_allocate_slots(kv_manager *m, kvm_seq *q, int n_tokens);
/* After a step computed q's first n_computed tokens: registers its newly
 * full blocks in the prefix table (when caching is on). */
void kvm_cache_blocks(kv_manager *m, kvm_seq *q, const int32_t *tokens, int n_computed);
/* Gives every block of q back to the pool, tail first. */
void kvm_release(kv_manager *m, kvm_seq *q);

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

/* ---- requests (request.c) ---- */

struct eng_request {
    /* set at submit; the engine thread appends to tokens and draws from rng */
    eng_engine *g;             /* NULL for a request made by a test */
    uint64_t id;
    eng_sampling s;            /* bias pointers redirected to the copies */
    int32_t *bias_ids;         /* [s.n_logit_bias] */
    float *bias_vals;
    int32_t *tokens;           /* [n_prompt + max_tokens] prompt then output */
    int n_prompt, n_tokens;
    uint64_t rng[4];

    /* engine thread only, each field written by one file */
    kvm_seq kv;                /* kv_manager.c */
    int n_computed;            /* scheduler.c: tokens whose KV is in the cache */
    int num_cached;            /* scheduler.c: prompt tokens the prefix cache served */
    int admitted;              /* scheduler.c: has run at least once */
    uint64_t mark;             /* scheduler.c: the step that scheduled or preempted it */
    eng_event *plp;            /* runner.c: [n_prompt] prompt logprobs, or NULL */
    int plp_done;              /* runner.c: every entry of plp is written */

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

/* A request of the prompt and sampling s (copied), held twice: by the
 * caller (eng_release) and by the engine (req_finish). NULL when out of
 * memory. eng_submit checks s first; tests make requests without an
 * engine this way. */
eng_request *req_new(const int32_t *prompt, int n_prompt, const eng_sampling *s,
                     int block_size);
/* Queues an event that is not r's last. */
void req_push_event(eng_request *r, const eng_event *ev);
/* Queues r's last event and drops the engine's hold on r. */
void req_finish(eng_request *r, const eng_event *last);

/* ---- scheduler.c: who runs this step ---- */

/* Rows of prompt logprobs computed per step for one request, so that the
 * logits buffer stays small. */
#define ENG_PLP_CHUNK 128

/* One scheduled piece of work: r computes tokens [start, start + n_new). */
typedef struct sched_item {
    eng_request *r;
    int start;                 /* r->n_computed when scheduled */
    int n_new;
    int all_rows;              /* every row's logits wanted (prompt logprobs) */
    int samples;               /* reaches r's last token: its last row gives the next one */
} sched_item;

/* The scheduler's decision for one step, valid until its next call. */
typedef struct sched_output {
    sched_item *items;         /* [max_num_seqs] running decodes, running prefills, admitted */
    int n_items;
    int n_tokens;              /* the n_new summed, within max_num_batched_tokens */
    eng_request **preempted;   /* [max_num_seqs] back at the front of waiting, blocks freed */
    int n_preempted;
    eng_request **finished;    /* cancelled: out of the queues, blocks freed; the caller
                                  queues their last event */
    int n_finished;
} sched_output;

typedef struct sched_scheduler {
    int max_num_seqs, max_num_batched_tokens, block_size, enable_prefix_caching;
    kv_manager *kv;
    eng_stats *st;             /* preemptions, prompt_tokens, prefix_* are counted here */
    eng_request **waiting;     /* [cap_waiting] FCFS; preempted requests go to the front */
    int n_waiting, cap_waiting;
    eng_request **running;     /* [max_num_seqs] admission order */
    int n_running;
    eng_request **cand;        /* [max_num_seqs] this step's running, decodes first */
    uint64_t step_no;
    sched_output out;          /* finished is [cap_waiting] */
} sched_scheduler;

int sched_init(sched_scheduler *s, const eng_config *c, kv_manager *kv, eng_stats *st,
               inferd_error *e);
void sched_free(sched_scheduler *s);
/* Makes room for n more live requests, so that neither sched_add nor a
 * preemption ever allocates; -1 when memory is short (nothing changes). */
int sched_reserve(sched_scheduler *s, int n);
/* Queues r at the end of waiting; sched_reserve made room. */
void sched_add(sched_scheduler *s, eng_request *r);
/* Drops cancelled requests, then decides the step: running decodes first,
 * then running prefills, each in admission order, each taking its tokens
 * out of the budget; when the pool runs short the newest running request
 * is preempted, and nobody new is admitted that step; otherwise waiting
 * requests are admitted, their cached prefix skipped, their prompt cut to
 * what the budget leaves. */
const sched_output *sched_schedule(sched_scheduler *s);
/* After the step ran: each item's tokens are computed, its full blocks
 * enter the prefix cache. */
void sched_update_from_output(sched_scheduler *s, const sched_output *o);
/* Takes a running request out of the running list and frees its blocks
 * (it finished or failed). */
void sched_finish(sched_scheduler *s, eng_request *r);
/* Every live request, out of the queues with its blocks freed, listed in
 * finished (the engine is shutting down). */
const sched_output *sched_abort_all(sched_scheduler *s);

/* ---- runner.c: executes the batch it is given ---- */

/* What the runner hands output processing for one scheduled item. */
typedef struct run_result {
    int failed;                /* the forward pass, or fetching this item's logits, failed */
    eng_event ev;              /* an item that samples: token, logprob, top alternatives */
} run_result;

typedef struct run_runner {
    mdl_model *m;
    int vocab, max_blocks_seq, block_size;
    const int32_t *eos;        /* the engine's eos ids */
    int n_eos;
    eng_stats *st;             /* sampler_full_row_fallbacks is counted here */
    smp_scratch w;
    int prepared;              /* run_prepare laid out the batch */
    mdl_batch b;
    int32_t *b_tok, *b_pos, *b_slot;   /* [max_num_batched_tokens] */
    int32_t *b_qs, *b_ctx;             /* [max_num_seqs + 1] */
    int32_t *b_table;                  /* [max_num_seqs][max_blocks_seq] */
    int32_t *b_rows;                   /* [cap_rows] logit rows */
    int32_t *row_of;                   /* [max_num_seqs] first logit row of item i */
    float *logits;                     /* [cap_rows][vocab] rows fetched to the host */
    be_sample_row *s_in;               /* [cap_rows] what the device samples per row */
    be_sample_out *s_out;              /* [cap_rows] what it sends back */
    float *raw;                        /* [vocab] raw logits kept for logprobs */
    int cap_rows;
    run_result *res;                   /* [max_num_seqs] results of item i */
} run_runner;

/* c as the engine resolved it (max_model_len set); eos stays the caller's. */
int run_init(run_runner *x, mdl_model *m, const eng_config *c, const int32_t *eos, int n_eos,
             eng_stats *st, inferd_error *e);
void run_free(run_runner *x);
/* Lays the step out as the model's batch (tokens, positions, slots, block
 * tables, logit rows) and gives each sampling row its request's draw; -1
 * when the logits buffers cannot grow. */
int run_prepare(run_runner *x, const sched_output *o);
/* Runs the prepared batch and samples: fills x->res for every item, and
 * the prompt logprobs of items that want them. -1 when the step failed
 * as a whole (every item is marked failed). */
int run_execute(run_runner *x, const sched_output *o);

/* ---- the engine (engine.c, with request.c on the callers' side) ---- */

struct eng_engine {
    mdl_model *m;
    eng_config c;              /* max_model_len resolved */
    int vocab;
    int32_t eos[16];
    int n_eos;
    pthread_t thread;
    int thread_started;

    /* under mu: the callers' side (request.c) hands requests over here */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int reset_stats;           /* eng_warmup: zero the counters, then clear this */
    eng_request **incoming;    /* submitted, not yet seen by the thread */
    int n_incoming, cap_incoming;
    uint64_t next_id;
    eng_stats st;

    /* engine thread only */
    kv_manager kv;
    sched_scheduler sched;
    run_runner run;
    eng_stats local;           /* counters published into st after each step */
    FILE *step_log;            /* INFERD_STEP_LOG: one line per step, or NULL */
    double step_end;           /* when the previous step ended (step log) */
};

/* ---- output.c: sampled tokens -> events ---- */

/* Appends each sampling item's token to its request and queues its event;
 * ends the requests that hit a stop id, eos, max_tokens or max_model_len,
 * or whose step failed. Items in batch order. */
void out_process(eng_engine *g, const sched_output *o, const run_result *res);
/* Ends r, already out of the scheduler, with a token -1 event of reason
 * ENG_FINISH_ABORT (cancelled, or the engine is shutting down). */
void out_abort(eng_engine *g, eng_request *r);

#endif
