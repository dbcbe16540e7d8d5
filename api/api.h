/* api: the OpenAI HTTP API's semantics, without HTTP. It validates JSON
 * bodies into engine requests (chat template, tokenizer, sampling), turns
 * engine events back into OpenAI JSON (whole responses or SSE chunks), and
 * keeps the Prometheus metrics. cli/ (serve) creates the context; server/
 * owns sockets, auth and body limits and calls api_handle for each complete
 * request. api/ never sees a socket or a tensor. Inside, routes sit on
 * handlers, handlers on a library of responses and metrics (api/internal.h
 * draws the map). */
#ifndef INFERD_API_H
#define INFERD_API_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "engine/engine.h"
#include "loader/loader.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

typedef struct api_ctx api_ctx;
typedef struct api_stream api_stream;

typedef struct api_options {
    const char *served_model_name;   /* the id clients send as "model" */
    const char *model_root;          /* model folder, reported by /v1/models */
    eng_engine *engine;              /* all three owned by the caller, */
    const tok_tokenizer *tok;        /* outliving the api context */
    const tmpl_chat *chat;           /* NULL: the model has no chat template */
    const ld_generation_config *gen; /* default sampling (may be NULL) */
    int max_logprobs;                /* top_logprobs at most (default 20) */
    int max_queue;                   /* live sequences (each choice of each
                                        prompt) beyond max_num_seqs before 503
                                        (0 = unlimited) */
    int max_num_seqs;                /* the engine's, for the queue limit */
    /* An encoder model instead of an engine (engine NULL, tok may be NULL):
     * serves POST /v1/embeddings, /v1/score, /v1/rerank and /classify;
     * the generation routes answer 400. Owned by the caller. */
    mdl_encoder *encoder;
} api_options;

int api_init(const api_options *o, api_ctx **out, inferd_error *e);
void api_free(api_ctx *a);

/* Lets a long wait notice a client that went away: returns 0 when the
 * client's connection is closed. */
typedef int (*api_alive_fn)(void *cls);

typedef struct api_response {
    int status;
    const char *content_type;   /* static string */
    char *body;                 /* malloc'd, NUL-terminated; NULL with a stream */
    size_t len;
    int retry_after;            /* seconds for a Retry-After header, 0 = none */
    api_stream *stream;         /* SSE: read with api_stream_next */
    int prompt_tokens, completion_tokens;  /* for the access log */
} api_response;

/* Answers one request. method and path as sent ("POST", "/v1/completions");
 * a query string must already be stripped. Generation requests that are not
 * streamed block until they finish (alive is polled while waiting; a dead
 * client cancels). Never fails: errors are responses. */
void api_handle(api_ctx *a, const char *method, const char *path, const char *body,
                size_t len, api_alive_fn alive, void *cls, api_response *r);
/* Frees body and stream (cancelling what is still running). */
void api_response_clear(api_response *r);

/* Appends the next SSE bytes to out, waiting up to timeout_ms. Returns 1
 * when bytes were appended, 0 on timeout, -1 when the stream is complete
 * (after "data: [DONE]"). */
int api_stream_next(api_stream *s, strbuf *out, int timeout_ms);
/* Token counts so far (for the access log). */
void api_stream_usage(const api_stream *s, int *prompt_tokens, int *completion_tokens);
/* Cancels whatever is still generating and frees the stream. */
void api_stream_free(api_stream *s);

/* An OpenAI error body {"error": {"message", "type", "param", "code"}}:
 * type and code follow from the status (400 invalid_request_error, 401
 * invalid_api_key, 404 not_found, 413, 500 server_error, 503 overloaded).
 * param may be NULL. malloc'd. */
char *api_error_body(int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Counts a finished HTTP exchange in the metrics. */
void api_count_http(api_ctx *a, int status);

#endif
