/* api/api.c: the api context, the routes, the small endpoints (/v1/models,
 * /tokenize, /detokenize, /metrics, /health) and OpenAI error bodies. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/internal.h"

/* Bucket bounds as vLLM uses them, so dashboards built for vLLM fit. */
static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25,
                                     0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
                                     160.0, 640.0, 2560.0};
static const double itl_bounds[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                                    0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double e2e_bounds[] = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                                    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
                                    1920.0, 7680.0};
static const double enc_batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128};
#define NB(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int hist_init(api_hist *h, const double *b, int n)
{
    h->bounds = b;
    h->n_bounds = n;
    h->counts = calloc((size_t)n, sizeof *h->counts);
    return h->counts ? 0 : -1;
}

int api_init(const api_options *o, api_ctx **out, inferd_error *e)
{
    api_ctx *a = calloc(1, sizeof *a);
    if (!a) {
        err_set(e, "out of memory");
        return -1;
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->enc_mu, NULL);
    pthread_cond_init(&a->enc_cv, NULL);
    a->model_name = strdup(o->served_model_name ? o->served_model_name : "model");
    a->model_root = strdup(o->model_root ? o->model_root : "");
    if (!a->model_name || !a->model_root || hist_init(&a->ttft, ttft_bounds, NB(ttft_bounds)) ||
        hist_init(&a->itl, itl_bounds, NB(itl_bounds)) ||
        hist_init(&a->e2e, e2e_bounds, NB(e2e_bounds)) ||
        hist_init(&a->enc_batch, enc_batch_bounds, NB(enc_batch_bounds))) {
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
    free(a->ttft.counts);
    free(a->itl.counts);
    free(a->e2e.counts);
    free(a->enc_batch.counts);
    free(a->model_name);
    free(a->model_root);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->enc_mu);
    pthread_cond_destroy(&a->enc_cv);
    free(a);
}

/* ---- errors ---- */

char *api_error_body(int status, const char *param, const char *fmt, ...)
{
    char msg[INFERD_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *type = "invalid_request_error", *code = NULL;
    switch (status) {
    case 401: code = "invalid_api_key"; break;
    case 404: code = param && !strcmp(param, "model") ? "model_not_found" : "not_found"; break;
    case 405: code = "method_not_allowed"; break;
    case 413: code = "request_too_large"; break;
    case 503: type = "server_error"; code = "overloaded"; break;
    default:
        if (status >= 500)
            type = "server_error";
        break;
    }
    /* msg may hold bytes of a client's invalid UTF-8; jansson refuses those. */
    json_t *m = json_string(msg);
    if (!m)
        m = json_string("invalid request");
    json_t *j = json_pack("{s:{s:o, s:s, s:o, s:o}}", "error", "message", m, "type", type,
                          "param", param && *param ? json_string(param) : json_null(), "code",
                          code ? json_string(code) : json_null());
    char *s = api_dump(j);
    json_decref(j);
    return s;
}

static void set_error(api_response *r, int status, const char *param, const char *msg)
{
    r->status = status;
    r->content_type = "application/json";
    r->body = api_error_body(status, param, "%s", msg);
    r->len = strlen(r->body);
    if (status == 503)
        r->retry_after = 1;
}

static void set_json(api_response *r, int status, json_t *j)
{
    r->status = status;
    r->content_type = "application/json";
    r->body = api_dump(j);
    r->len = strlen(r->body);
    json_decref(j);
}

void api_set_error(api_response *r, int status, const char *param, const char *msg)
{
    set_error(r, status, param, msg);
}

void api_set_json(api_response *r, int status, json_t *j) { set_json(r, status, j); }

char *api_dump(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    return s ? s : strdup("{}");
}

/* ---- metrics ---- */

void api_observe(api_ctx *a, api_hist *h, double v)
{
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < h->n_bounds; i++)
        if (v <= h->bounds[i]) {
            h->counts[i]++;
            break;
        }
    h->count++;
    h->sum += v;
    pthread_mutex_unlock(&a->mu);
}

void api_count_finish(api_ctx *a, const char *finish, int prompt_tokens, int gen_tokens)
{
    pthread_mutex_lock(&a->mu);
    if (!strcmp(finish, "stop"))
        a->finished_stop++;
    else if (!strcmp(finish, "length"))
        a->finished_length++;
    else if (!strcmp(finish, "error"))
        a->finished_error++;
    else
        a->finished_abort++;
    a->prompt_tokens += (uint64_t)prompt_tokens;
    a->generation_tokens += (uint64_t)gen_tokens;
    pthread_mutex_unlock(&a->mu);
}

void api_count_http(api_ctx *a, int status)
{
    if (!a || status < 100 || status >= 600)
        return;
    pthread_mutex_lock(&a->mu);
    a->http_by_class[status / 100]++;
    pthread_mutex_unlock(&a->mu);
}

static void hist_text(strbuf *o, const char *name, const char *help, const char *label,
                      const api_hist *h)
{
    sb_printf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        sb_printf(o, "%s_bucket{%s,le=\"%g\"} %llu\n", name, label, h->bounds[i],
                  (unsigned long long)cum);
    }
    sb_printf(o, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, label, (unsigned long long)h->count);
    sb_printf(o, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, label, h->sum, name, label,
              (unsigned long long)h->count);
}

static void metric(strbuf *o, const char *name, const char *type, const char *help,
                   const char *label, double v)
{
    sb_printf(o, "# HELP %s %s\n# TYPE %s %s\n%s{%s} %.17g\n", name, help, name, type, name,
              label, v);
}

static void metrics_text(api_ctx *a, api_response *r)
{
    eng_stats st;
    memset(&st, 0, sizeof st);
    if (a->eng)
        eng_get_stats(a->eng, &st);
    strbuf o = {0};
    char label[256];
    /* The served name goes into a label: escape what Prometheus escapes. */
    strbuf esc = {0};
    for (const char *p = a->model_name; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_putc(&esc, '\\');
        if (*p == '\n')
            sb_puts(&esc, "\\n");
        else
            sb_putc(&esc, *p);
    }
    snprintf(label, sizeof label, "model_name=\"%s\"", esc.p ? esc.p : "");
    sb_free(&esc);
    metric(&o, "inferd:num_requests_running", "gauge",
           "Requests in the running batch.", label, st.running);
    metric(&o, "inferd:num_requests_waiting", "gauge",
           "Requests waiting to be scheduled.", label, st.waiting);
    metric(&o, "inferd:kv_cache_usage_perc", "gauge",
           "Fraction of KV-cache blocks in use (1 = full).", label,
           st.kv_blocks_total ? (double)st.kv_blocks_used / st.kv_blocks_total : 0);
    metric(&o, "inferd:kv_cache_blocks_total", "gauge", "KV-cache blocks in the pool.",
           label, st.kv_blocks_total);
    metric(&o, "inferd:kv_cache_blocks_used", "gauge", "KV-cache blocks held by requests.",
           label, st.kv_blocks_used);
    metric(&o, "inferd:prefix_cache_queries_total", "counter",
           "Prompt tokens looked up in the prefix cache.", label, (double)st.prefix_queries);
    metric(&o, "inferd:prefix_cache_hits_total", "counter",
           "Prompt tokens served from the prefix cache.", label, (double)st.prefix_hits);
    metric(&o, "inferd:num_preemptions_total", "counter",
           "Requests preempted (KV blocks freed, recomputed later).", label,
           (double)st.preemptions);
    metric(&o, "inferd:engine_steps_total", "counter", "Forward passes run.", label,
           (double)st.steps);
    metric(&o, "inferd:engine_schedule_seconds_total", "counter",
           "Engine-thread time choosing batches and building their inputs.", label,
           st.schedule_seconds);
    metric(&o, "inferd:engine_forward_seconds_total", "counter",
           "Engine-thread time in forward passes and sampling, results back.", label,
           st.forward_seconds);
    metric(&o, "inferd:engine_emit_seconds_total", "counter",
           "Engine-thread time handing sampled tokens to requests.", label, st.emit_seconds);
    metric(&o, "inferd:sampler_full_row_fallbacks_total", "counter",
           "Tokens sampled from their whole logits row on the host instead of the "
           "device's candidates.", label, (double)st.sampler_full_row_fallbacks);
    pthread_mutex_lock(&a->mu);
    metric(&o, "inferd:prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
           label, (double)a->prompt_tokens);
    metric(&o, "inferd:generation_tokens_total", "counter",
           "Tokens generated for finished requests.", label, (double)a->generation_tokens);
    sb_printf(&o, "# HELP inferd:request_success_total Finished choices by finish reason.\n"
                  "# TYPE inferd:request_success_total counter\n");
    const char *names[] = {"stop", "length", "abort", "error"};
    uint64_t vals[] = {a->finished_stop, a->finished_length, a->finished_abort,
                       a->finished_error};
    for (int i = 0; i < 4; i++)
        sb_printf(&o, "inferd:request_success_total{%s,finished_reason=\"%s\"} %llu\n", label,
                  names[i], (unsigned long long)vals[i]);
    sb_printf(&o, "# HELP inferd:http_requests_total HTTP requests answered, by status "
                  "class.\n# TYPE inferd:http_requests_total counter\n");
    for (int i = 1; i < 6; i++)
        sb_printf(&o, "inferd:http_requests_total{%s,status=\"%dxx\"} %llu\n", label, i,
                  (unsigned long long)a->http_by_class[i]);
    hist_text(&o, "inferd:time_to_first_token_seconds", "Time to first token.", label,
              &a->ttft);
    hist_text(&o, "inferd:inter_token_latency_seconds", "Time between tokens of a choice.",
              label, &a->itl);
    hist_text(&o, "inferd:e2e_request_latency_seconds", "Request latency, arrival to end.",
              label, &a->e2e);
    if (a->enc) {
        hist_text(&o, "inferd:encoder_batch_size", "Requests sharing one encoder forward "
                  "pass.", label, &a->enc_batch);
        metric(&o, "inferd:encoder_tokens_total", "counter",
               "Tokens through encoder forward passes.", label, (double)a->enc_tokens);
    }
    pthread_mutex_unlock(&a->mu);
    r->status = 200;
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
    r->len = o.n;
    r->body = sb_steal(&o);
}

/* ---- small endpoints ---- */

static void models(api_ctx *a, api_response *r)
{
    json_t *m = json_pack("{s:s, s:s, s:I, s:s, s:s, s:n, s:i}", "id", a->model_name, "object",
                          "model", "created", (json_int_t)a->created, "owned_by", "inferd",
                          "root", a->model_root, "parent", "max_model_len", a->max_model_len);
    set_json(r, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", m));
}

int api_check_model(api_ctx *a, json_t *b, api_response *r)
{
    json_t *m = json_object_get(b, "model");
    if (!m || json_is_null(m))
        return 0;
    if (!json_is_string(m)) {
        set_error(r, 400, "model", "'model' must be a string");
        return -1;
    }
    if (strcmp(json_string_value(m), a->model_name)) {
        char msg[300];
        snprintf(msg, sizeof msg, "The model `%.200s` does not exist.", json_string_value(m));
        set_error(r, 404, "model", msg);
        return -1;
    }
    return 0;
}

/* POST /tokenize as vLLM has it: {"prompt": ...} or {"messages": ...}. */
static void tokenize(api_ctx *a, json_t *b, api_response *r)
{
    api_gen *g = gen_new(a, 1);
    int32_t *ids = NULL;
    size_t n = 0;
    if (!g) {
        set_error(r, 500, NULL, "out of memory");
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
        set_error(r, 400, as && !json_is_boolean(as) ? "add_special_tokens" :
                  "return_token_strs", "'add_special_tokens' and 'return_token_strs' must be "
                  "booleans");
        goto out;
    }
    if (json_is_boolean(as))
        add_special = json_is_true(as);
    strs = json_is_true(rs);
    if (is_chat) {
        if (gen_chat_prompt(g, b, add_special, &ids, &n)) {
            set_error(r, g->err_status, g->err_param, g->err_msg);
            goto out;
        }
    } else if (json_is_string(prompt)) {
        inferd_error e = {{0}};
        if (tok_encode(a->tok, json_string_value(prompt), json_string_length(prompt),
                       add_special, &ids, &n, &e)) {
            set_error(r, 400, "prompt", e.msg);
            goto out;
        }
    } else {
        set_error(r, 400, "prompt", "/tokenize needs 'prompt' (a string) or 'messages'");
        goto out;
    }
    json_t *toks = json_array(), *ts = strs ? json_array() : json_null();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(toks, json_integer(ids[i]));
        if (strs) {
            size_t sl;
            const char *s = tok_id_to_token(a->tok, ids[i], &sl);
            json_t *js = s ? json_stringn(s, sl) : NULL;
            json_array_append_new(ts, js ? js : json_string(""));
        }
    }
    set_json(r, 200, json_pack("{s:I, s:i, s:o, s:o}", "count", (json_int_t)n, "max_model_len",
                               a->max_model_len, "tokens", toks, "token_strs", ts));
out:
    free(ids);
    gen_free(g);
}

static void detokenize(api_ctx *a, json_t *b, api_response *r)
{
    if (api_check_model(a, b, r))
        return;
    json_t *t = json_object_get(b, "tokens");
    if (!json_is_array(t)) {
        set_error(r, 400, "tokens", "/detokenize needs 'tokens', an array of token ids");
        return;
    }
    size_t n = json_array_size(t), i;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    json_t *v;
    if (!ids) {
        set_error(r, 500, NULL, "out of memory");
        return;
    }
    json_array_foreach(t, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= a->vocab) {
            char msg[128];
            snprintf(msg, sizeof msg, "tokens[%zu] is not a token id in [0, %d)", i, a->vocab);
            set_error(r, 400, "tokens", msg);
            free(ids);
            return;
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    char *text = NULL;
    size_t len = 0;
    inferd_error e = {{0}};
    if (tok_decode(a->tok, ids, n, 0, &text, &len, &e)) {
        set_error(r, 400, "tokens", e.msg);
    } else {
        strbuf v = {0};
        gen_append_valid_utf8(&v, text, len);
        set_json(r, 200, json_pack("{s:s%}", "prompt", v.p ? v.p : "", v.n));
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
        set_error(r, 400, NULL, msg);
        return;
    }
    api_gen *g = gen_new(a, chat);
    if (!g) {
        set_error(r, 500, NULL, "out of memory");
        return;
    }
    if (gen_parse(g, b) || gen_start(g)) {
        set_error(r, g->err_status, g->err_param, g->err_msg);
        gen_free(g);
        return;
    }
    if (g->stream) {
        api_stream *s = malloc(sizeof *s);
        if (!s) {
            set_error(r, 500, NULL, "out of memory");
            gen_free(g);
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
    gen_free(g);
}

static json_t *parse_body(const char *body, size_t len, api_response *r)
{
    json_error_t je;
    json_t *b = json_loadb(body ? body : "", len, 0, &je);
    if (!b) {
        char msg[400];
        snprintf(msg, sizeof msg, "the request body is not valid JSON: %s (line %d, column "
                 "%d)", je.text, je.line, je.column);
        set_error(r, 400, NULL, msg);
        return NULL;
    }
    if (!json_is_object(b)) {
        json_decref(b);
        set_error(r, 400, NULL, "the request body must be a JSON object");
        return NULL;
    }
    return b;
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
        set_error(r, 404, NULL, msg);
        return;
    }
    if ((want_post && !post) || (want_get && !get)) {
        char msg[300];
        snprintf(msg, sizeof msg, "%.200s expects %s, got %.16s", path,
                 want_post ? "POST" : "GET", method);
        set_error(r, 405, NULL, msg);
        return;
    }
    if (!strcmp(path, "/health")) {
        r->status = 200;
        r->body = strdup("");
        return;
    }
    if (!strcmp(path, "/metrics")) {
        metrics_text(a, r);
        return;
    }
    if (!strcmp(path, "/v1/models")) {
        models(a, r);
        return;
    }
    json_t *b = parse_body(body, len, r);
    if (!b)
        return;
    if (!strcmp(path, "/v1/embeddings") || !strcmp(path, "/v1/score") ||
        !strcmp(path, "/v1/rerank") || !strcmp(path, "/classify"))
        api_encoder_route(a, path, b, r);
    else if ((!strcmp(path, "/tokenize") || !strcmp(path, "/detokenize")) && !a->tok)
        set_error(r, 400, NULL, "this model has no tokenizer that inferd can load");
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
    gen_free(s->g);
    free(s);
}
