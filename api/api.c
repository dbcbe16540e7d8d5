/* api/api.c: the api context, the routes and the small endpoints
 * (/v1/models, /tokenize, /detokenize, /metrics, /health). */
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
    pthread_mutex_init(&a->enc_mu, NULL);
    pthread_cond_init(&a->enc_cv, NULL);
    int no_metrics = api_metrics_init(a);
    a->model_name = strdup(o->served_model_name ? o->served_model_name : "model");
    a->model_root = strdup(o->model_root ? o->model_root : "");
    if (!a->model_name || !a->model_root || no_metrics) {
        err_set(e, "out of memory");
        goto err;
    }
    a->eng = o->engine;
    a->enc = o->encoder;
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
    api_metrics_free(a);
    free(a->model_name);
    free(a->model_root);
    pthread_mutex_destroy(&a->enc_mu);
    pthread_cond_destroy(&a->enc_cv);
    free(a);
}

/* ---- small endpoints ---- */

static void models(api_ctx *a, api_response *r)
{
    json_t *m = json_pack("{s:s, s:s, s:I, s:s, s:s, s:n, s:i}", "id", a->model_name, "object",
                          "model", "created", (json_int_t)a->created, "owned_by", "inferd",
                          "root", a->model_root, "parent", "max_model_len", a->max_model_len);
    api_set_json(r, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", m));
}

static void metrics(api_ctx *a, api_response *r)
{
    strbuf o = {0};
    api_metrics_text(a, &o);
    r->status = 200;
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
    r->len = o.n;
    r->body = sb_steal(&o);
}

/* POST /tokenize as vLLM has it: {"prompt": ...} or {"messages": ...}. */
static void tokenize(api_ctx *a, json_t *b, api_response *r)
{
    api_gen *g = api_gen_new(a, 1);
    int32_t *ids = NULL;
    size_t n = 0;
    if (!g) {
        api_set_error(r, 500, NULL, "out of memory");
        return;
    }
    if (api_check_model(a, b, r))
        goto out;
    json_t *prompt = json_object_get(b, "prompt"), *msgs = json_object_get(b, "messages");
    int is_chat = msgs && !json_is_null(msgs);
    int add_special = !is_chat, strs = 0;
    json_t *as = json_object_get(b, "add_special_tokens"), *rs = json_object_get(b,
                                                                           "return_token_strs");
    if ((as && !json_is_null(as) && !json_is_boolean(as)) ||
        (rs && !json_is_null(rs) && !json_is_boolean(rs))) {
        api_set_error(r, 400, as && !json_is_boolean(as) ? "add_special_tokens" :
                      "return_token_strs", "'add_special_tokens' and 'return_token_strs' must "
                      "be booleans");
        goto out;
    }
    if (json_is_boolean(as))
        add_special = json_is_true(as);
    strs = json_is_true(rs);
    if (is_chat) {
        if (api_gen_chat_prompt(g, b, add_special, &ids, &n)) {
            api_set_error(r, g->err_status, g->err_param, g->err_msg);
            goto out;
        }
    } else if (json_is_string(prompt)) {
        inferd_error e = {{0}};
        if (tok_encode(a->tok, json_string_value(prompt), json_string_length(prompt),
                       add_special, &ids, &n, &e)) {
            api_set_error(r, 400, "prompt", e.msg);
            goto out;
        }
    } else {
        api_set_error(r, 400, "prompt", "/tokenize needs 'prompt' (a string) or 'messages'");
        goto out;
    }
    json_t *toks = json_array(), *ts = strs ? json_array() : json_null();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(toks, json_integer(ids[i]));
        if (strs) {
            const char *s = tok_id_to_token(a->tok, ids[i]);
            json_t *js = s ? json_string(s) : NULL;
            json_array_append_new(ts, js ? js : json_string(""));
        }
    }
    api_set_json(r, 200, json_pack("{s:I, s:i, s:o, s:o}", "count", (json_int_t)n,
                                   "max_model_len", a->max_model_len, "tokens", toks,
                                   "token_strs", ts));
out:
    free(ids);
    api_gen_free(g);
}

static void detokenize(api_ctx *a, json_t *b, api_response *r)
{
    if (api_check_model(a, b, r))
        return;
    json_t *t = json_object_get(b, "tokens");
    if (!json_is_array(t)) {
        api_set_error(r, 400, "tokens", "/detokenize needs 'tokens', an array of token ids");
        return;
    }
    size_t n = json_array_size(t), i;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    json_t *v;
    if (!ids) {
        api_set_error(r, 500, NULL, "out of memory");
        return;
    }
    json_array_foreach(t, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= a->vocab) {
            char msg[128];
            snprintf(msg, sizeof msg, "tokens[%zu] is not a token id in [0, %d)", i, a->vocab);
            api_set_error(r, 400, "tokens", msg);
            free(ids);
            return;
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    char *text = NULL;
    size_t len = 0;
    inferd_error e = {{0}};
    if (tok_decode(a->tok, ids, n, 0, &text, &len, &e)) {
        api_set_error(r, 400, "tokens", e.msg);
    } else {
        strbuf v = {0};
        api_append_valid_utf8(&v, text, len);
        api_set_json(r, 200, json_pack("{s:s%}", "prompt", v.p ? v.p : "", v.n));
        sb_free(&v);
    }
    free(text);
    free(ids);
}

/* ---- generation ---- */

static void generation(api_ctx *a, int chat, json_t *b, api_alive_fn alive, void *cls,
                       api_response *r)
{
    if (!a->eng) {
        char msg[400];
        snprintf(msg, sizeof msg, "'%.100s' is an encoder model (%s): it serves /v1/embeddings, "
                 "/v1/score, /v1/rerank and /classify, not %s", a->model_name,
                 mdl_encoder_config(a->enc)->architecture,
                 chat ? "/v1/chat/completions" : "/v1/completions");
        api_set_error(r, 400, NULL, msg);
        return;
    }
    api_gen *g = api_gen_new(a, chat);
    if (!g) {
        api_set_error(r, 500, NULL, "out of memory");
        return;
    }
    if (api_gen_parse(g, b) || gen_start(g)) {
        api_set_error(r, g->err_status, g->err_param, g->err_msg);
        api_gen_free(g);
        return;
    }
    if (g->stream) {
        api_stream *s = malloc(sizeof *s);
        if (!s) {
            api_set_error(r, 500, NULL, "out of memory");
            api_gen_free(g);
            return;
        }
        s->g = g;
        r->status = 200;
        r->content_type = "text/event-stream";
        r->stream = s;
        return;
    }
    r->content_type = "application/json";
    gen_run_blocking(g, alive, cls, r);
    api_gen_free(g);
}

void api_handle(api_ctx *a, const char *method, const char *path, const char *body,
                size_t len, api_alive_fn alive, void *cls, api_response *r)
{
    memset(r, 0, sizeof *r);
    r->content_type = "application/json";
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    static const char *const posts[] = {"/v1/chat/completions", "/v1/completions",
                                        "/tokenize", "/detokenize", "/v1/embeddings",
                                        "/v1/score", "/v1/rerank", "/classify", NULL};
    static const char *const gets[] = {"/v1/models", "/health", "/metrics", NULL};
    int want_post = 0, want_get = 0;
    for (int i = 0; posts[i]; i++)
        want_post |= !strcmp(path, posts[i]);
    for (int i = 0; gets[i]; i++)
        want_get |= !strcmp(path, gets[i]);
    if (!want_post && !want_get) {
        char msg[300];
        snprintf(msg, sizeof msg, "no route %.16s %.200s", method, path);
        api_set_error(r, 404, NULL, msg);
        return;
    }
    if ((want_post && !post) || (want_get && !get)) {
        char msg[300];
        snprintf(msg, sizeof msg, "%.200s expects %s, got %.16s", path,
                 want_post ? "POST" : "GET", method);
        api_set_error(r, 405, NULL, msg);
        return;
    }
    if (!strcmp(path, "/health")) {
        r->status = 200;
        r->body = strdup("");
        return;
    }
    if (!strcmp(path, "/metrics")) {
        metrics(a, r);
        return;
    }
    if (!strcmp(path, "/v1/models")) {
        models(a, r);
        return;
    }
    json_t *b = api_parse_body(body, len, r);
    if (!b)
        return;
    if (!strcmp(path, "/v1/embeddings") || !strcmp(path, "/v1/score") ||
        !strcmp(path, "/v1/rerank") || !strcmp(path, "/classify"))
        api_encoder_route(a, path, b, r);
    else if ((!strcmp(path, "/tokenize") || !strcmp(path, "/detokenize")) && !a->tok)
        api_set_error(r, 400, NULL, "this model has no tokenizer that inferd can load");
    else if (!strcmp(path, "/tokenize"))
        tokenize(a, b, r);
    else if (!strcmp(path, "/detokenize"))
        detokenize(a, b, r);
    else
        generation(a, !strcmp(path, "/v1/chat/completions"), b, alive, cls, r);
    json_decref(b);
}

void api_response_clear(api_response *r)
{
    free(r->body);
    api_stream_free(r->stream);
    memset(r, 0, sizeof *r);
}

int api_stream_next(api_stream *s, strbuf *out, int timeout_ms)
{
    return gen_stream_next(s->g, out, timeout_ms);
}

void api_stream_usage(const api_stream *s, int *prompt_tokens, int *completion_tokens)
{
    gen_usage(s->g, prompt_tokens, completion_tokens);
}

void api_stream_free(api_stream *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->g->n_choices; i++)
        eng_cancel(s->g->ch[i].r);
    gen_finalize(s->g);
    api_gen_free(s->g);
    free(s);
}
