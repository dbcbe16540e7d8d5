/* api internals shared by api.c (context, routes, metrics), request.c (JSON
 * body -> api_gen) and generate.c (engine events -> JSON and SSE). */
#ifndef INFERD_API_INTERNAL_H
#define INFERD_API_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "api/api.h"

#define API_MAX_STOP 16
#define API_MAX_CHOICES 128

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
    atomic_int live;              /* generation requests in flight */
    atomic_uint_fast64_t id_counter;
    uint64_t id_salt;

    pthread_mutex_t mu;           /* guards everything below */
    api_hist ttft, itl, e2e;
    uint64_t prompt_tokens, generation_tokens;
    uint64_t finished_stop, finished_length, finished_abort, finished_error;
    uint64_t http_by_class[6];    /* [status / 100] */
    api_hist enc_batch;           /* requests per encoder forward pass */
    uint64_t enc_tokens;          /* tokens through encoder forward passes */
    /* (both copied from the encoder engine's stats when /metrics renders) */
};

/* One choice: one engine request and what came out of it so far. */
typedef struct api_choice {
    int index, prompt_idx;
    eng_request *r;
    tok_stream *ts;
    strbuf text;              /* detokenized output (stop strings cut off) */
    size_t sent;              /* bytes of text already emitted */
    int done;                 /* no more events wanted */
    int role_sent;            /* chat streaming: first delta carried the role */
    int finish_sent;          /* streaming: the finish chunk went out */
    const char *finish;       /* "stop", "length", "abort", "error" */
    json_t *stop_reason;      /* the matched stop string or stop token id; NULL = null */
    int n_gen, n_cached;
    double t_last;
    /* logprobs so far (non-streaming) or of the current event (streaming) */
    json_t *lp_content;       /* chat: [{token, logprob, bytes, top_logprobs}] */
    json_t *lp_tokens, *lp_token_logprobs, *lp_top, *lp_offset; /* completions */
    long text_chars;          /* code points of text so far, for text_offset */
} api_choice;

/* One generation request (chat or completions): parsed fields, then the
 * choices running it. */
typedef struct api_gen {
    api_ctx *a;
    int chat, stream, include_usage;
    char id[48];
    long created;
    double t_arrival, t_first;
    int n;                        /* choices per prompt */
    int n_prompts;
    int32_t **prompts;            /* [n_prompts] token ids */
    int *n_prompt_tok;            /* [n_prompts] */
    char **prompt_text;           /* [n_prompts] for echo (NULL if no echo) */
    int echo;
    int logprobs;                 /* return per-token logprobs */
    int top_logprobs;
    int tokens_as_ids;            /* return_tokens_as_token_ids: "token_id:N" in logprobs */
    int max_tokens;               /* -1 = as much as the context allows */
    eng_sampling s;
    int32_t *bias_ids;
    float *bias_vals;
    char *stop[API_MAX_STOP];
    int n_stop;
    size_t max_stop_len;
    int include_stop_str, skip_special;
    int counted_live;

    int n_choices;
    api_choice *ch;
    eng_waiter *waiter;           /* n_choices > 1: wakes on any choice's event */
    int usage_sent, done_sent, finalized;
    int counted_done;

    /* the first error while parsing or running */
    int err_status;
    char err_param[64];
    char err_msg[INFERD_ERR_MAX];
} api_gen;

struct api_stream {
    api_gen *g;
};

/* request.c */
api_gen *gen_new(api_ctx *a, int chat);
/* Fills g from the body; on failure g->err_* say why. */
int gen_parse(api_gen *g, json_t *body);
void gen_free(api_gen *g);
int gen_fail(api_gen *g, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Renders a chat request's messages (shared with /tokenize). *ids malloc'd. */
int gen_chat_prompt(api_gen *g, json_t *body, int add_special, int32_t **ids, size_t *n);

/* generate.c */
int gen_start(api_gen *g);
/* Runs a non-streaming request to its end and writes the JSON body. */
void gen_run_blocking(api_gen *g, api_alive_fn alive, void *cls, api_response *r);
int gen_stream_next(api_gen *g, strbuf *out, int timeout_ms);
/* Counts the request in the metrics once (end, error or abort). */
void gen_finalize(api_gen *g);
/* Appends s with invalid UTF-8 bytes replaced by U+FFFD (JSON needs valid). */
void gen_append_valid_utf8(strbuf *b, const char *s, size_t n);
void gen_usage(const api_gen *g, int *prompt, int *gen);

/* embed.c: /v1/embeddings, /v1/score, /v1/rerank, /classify */
void api_encoder_route(api_ctx *a, const char *path, json_t *body, api_response *r);

/* api.c */
void api_set_error(api_response *r, int status, const char *param, const char *msg);
void api_set_json(api_response *r, int status, json_t *j);
int api_check_model(api_ctx *a, json_t *b, api_response *r);
void api_observe(api_ctx *a, api_hist *h, double v);
void api_count_finish(api_ctx *a, const char *finish, int prompt_tokens, int gen_tokens);
char *api_dump(json_t *j);   /* compact JSON, malloc'd; frees nothing */

#endif
