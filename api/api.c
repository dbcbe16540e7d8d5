/* api/api.c: the top of api/ — the api context's life and the routes: a
 * table of method + path -> handler, and api_handle, which finds the route,
 * parses a POST body and calls the handler. What an endpoint does is in its
 * handler's file (see api/internal.h for the map); nothing below calls back
 * up here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/internal.h"

int api_init(const api_options *o, api_ctx **out, inferd_error *e)
{
    api_ctx *a = calloc(1, sizeof *a);
    if (!a) {
        err_set(e, "out of memory");
        return -1;
    }
    int no_metrics = api_metrics_init(a);
    a->model_name = strdup(o->served_model_name ? o->served_model_name : "model");
    a->model_root = strdup(o->model_root ? o->model_root : "");
    if (!a->model_name || !a->model_root || no_metrics) {
        err_set(e, "out of memory");
        goto err;
    }
    a->eng = o->engine;
    a->enc = o->encoder;
    if (o->encoder && eng_encoder_create(o->encoder, &a->encoder, e))
        goto err;
    a->tok = o->tok;
    a->chat = o->chat;
    if (o->gen) {
        a->gen = *o->gen;
        a->has_gen = 1;
    }
    a->max_logprobs = o->max_logprobs > 0 ? o->max_logprobs : ENG_MAX_TOP_LOGPROBS;
    if (a->max_logprobs > ENG_MAX_TOP_LOGPROBS)
        a->max_logprobs = ENG_MAX_TOP_LOGPROBS;
    a->max_queue = o->max_queue;
    a->max_num_seqs = o->max_num_seqs > 0 ? o->max_num_seqs : 256;
    if (o->engine)
        a->max_model_len = eng_max_model_len(o->engine);
    else if (o->encoder) {
        const ld_encoder_config *ec = mdl_encoder_config(o->encoder);
        a->max_model_len = ec->max_position_embeddings - (ec->roberta ? ec->pad_token_id + 1 : 0);
    }
    a->vocab = o->tok ? tok_vocab_size(o->tok)
                      : o->encoder ? mdl_encoder_config(o->encoder)->vocab_size : 0;
    a->created = (long)time(NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    a->id_salt = ((uint64_t)ts.tv_sec * 1000000007ull) ^ ((uint64_t)ts.tv_nsec << 20) ^
                 (uint64_t)(uintptr_t)a;
    *out = a;
    return 0;
err:
    api_free(a);
    return -1;
}

void api_free(api_ctx *a)
{
    if (!a)
        return;
    eng_encoder_destroy(a->encoder);
    api_metrics_free(a);
    free(a->model_name);
    free(a->model_root);
    free(a);
}

/* ---- routes ---- */

/* embed.c picks the encoder endpoint by path itself. */
static void on_encoder(api_ctx *a, const api_call *c, api_response *r)
{
    api_encoder_route(a, c->path, c->body, r);
}

/* Every route is GET (no body) or POST (a JSON object body); a route whose
 * path ends in '/' takes every path under it. */
static const struct route {
    const char *method, *path;
    api_handler fn;
} routes[] = {
    {"POST", "/v1/chat/completions", api_on_chat},
    {"POST", "/v1/completions", api_on_completions},
    {"POST", "/tokenize", api_on_tokenize},
    {"POST", "/detokenize", api_on_detokenize},
    {"POST", "/v1/embeddings", on_encoder},
    {"POST", "/v1/score", on_encoder},
    {"POST", "/v1/rerank", on_encoder},
    {"POST", "/classify", on_encoder},
    {"GET", "/v1/models", api_on_models},
    {"GET", API_MODEL_PREFIX, api_on_model},
    {"GET", "/health", api_on_health},
    {"GET", "/metrics", api_on_metrics},
};

void api_handle(api_ctx *a, const char *method, const char *path, const char *body,
                size_t len, api_alive_fn alive, void *cls, api_response *r)
{
    memset(r, 0, sizeof *r);
    r->content_type = "application/json";
    const struct route *rt = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0] && !rt; i++) {
        size_t n = strlen(routes[i].path);
        if (routes[i].path[n - 1] == '/' ? !strncmp(path, routes[i].path, n)
                                         : !strcmp(path, routes[i].path))
            rt = &routes[i];
    }
    char msg[300];
    if (!rt) {
        snprintf(msg, sizeof msg, "no route %.16s %.200s", method, path);
        api_set_error(r, 404, NULL, msg);
        return;
    }
    if (strcmp(method, rt->method)) {
        snprintf(msg, sizeof msg, "%.200s expects %s, got %.16s", path, rt->method, method);
        api_set_error(r, 405, NULL, msg);
        return;
    }
    api_call c = {.path = path, .alive = alive, .cls = cls};
    if (!strcmp(rt->method, "POST") && !(c.body = api_parse_body(body, len, r)))
        return;
    rt->fn(a, &c, r);
    json_decref(c.body);
}

void api_response_clear(api_response *r)
{
    free(r->body);
    api_stream_free(r->stream);
    memset(r, 0, sizeof *r);
}
