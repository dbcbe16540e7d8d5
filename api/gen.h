/* api/gen.h: one generation request (chat or completions) — the fields
 * request.c parses out of its body, then the choices generate.c runs on the
 * engine. tokenize.c borrows request.c's chat rendering, so that /tokenize
 * counts exactly the tokens a chat request would send. Not seen by the
 * routes nor by the library below. */
#ifndef INFERD_API_GEN_H
#define INFERD_API_GEN_H

#include <jansson.h>

#include "api/context.h"

#define API_MAX_STOP 16
#define API_MAX_CHOICES 128

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
    int counted_live;             /* sequences this request added to a->live */

    int n_choices;
    api_choice *ch;
    eng_waiter *waiter;           /* n_choices > 1: wakes on any choice's event */
    int usage_sent, done_sent, finalized;
    int counted_done;

    /* the first error while parsing or running */
    int err_status;
    char err_param[64];
    const char *err_code;         /* NULL, or a code of its own (a literal) */
    char err_msg[INFERD_ERR_MAX];
} api_gen;

/* request.c */
api_gen *api_gen_new(api_ctx *a, int chat);
/* Fills g from the body; on failure g->err_* say why. */
int api_gen_parse(api_gen *g, json_t *body);
void api_gen_free(api_gen *g);
/* Keeps the first error only (the one a client should fix first); -1. */
int api_gen_fail(api_gen *g, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Renders a chat request's messages (shared with /tokenize). *ids malloc'd. */
int api_gen_chat_prompt(api_gen *g, json_t *body, int add_special, int32_t **ids, size_t *n);

#endif
