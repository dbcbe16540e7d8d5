/* api/request.c: a JSON body of /v1/chat/completions or /v1/completions
 * becomes an api_gen (prompt token ids per prompt, engine sampling, stop
 * strings, output options). Every field is checked by name and type; a field
 * we do not implement is refused with a 400 that names it, never ignored.
 * generate.c runs what comes out; tokenize.c renders chat prompts with it.
 * Uses the tokenizer and the chat template, of api/ only the context and
 * response.h's field check. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/gen.h"
#include "api/response.h"

int api_gen_fail(api_gen *g, int status, const char *param, const char *fmt, ...)
{
    if (g->err_status)
        return -1;
    g->err_status = status;
    snprintf(g->err_param, sizeof g->err_param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err_msg, sizeof g->err_msg, fmt, ap);
    va_end(ap);
    return -1;
}

api_gen *api_gen_new(api_ctx *a, int chat)
{
    api_gen *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->a = a;
    g->chat = chat;
    g->created = (long)time(NULL);
    g->t_arrival = now_seconds();
    uint64_t k = atomic_fetch_add(&a->id_counter, 1) + 1;
    uint64_t x = (k * 0x9e3779b97f4a7c15ull) ^ a->id_salt;
    x ^= x >> 29;
    snprintf(g->id, sizeof g->id, "%s%016llx%016llx", chat ? "chatcmpl-" : "cmpl-",
             (unsigned long long)x, (unsigned long long)(a->id_salt ^ (k << 7)));
    g->n = 1;
    g->max_tokens = -1;
    g->skip_special = 1;
    eng_sampling_defaults(&g->s);
    return g;
}

void api_gen_free(api_gen *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n_choices; i++) {
        api_choice *c = &g->ch[i];
        eng_release(c->r);
        tok_stream_free(c->ts);
        sb_free(&c->text);
        json_decref(c->stop_reason);
        json_decref(c->lp_content);
        json_decref(c->lp_tokens);
        json_decref(c->lp_token_logprobs);
        json_decref(c->lp_top);
        json_decref(c->lp_offset);
    }
    free(g->ch);
    eng_waiter_free(g->waiter);   /* after eng_release detached every request */
    for (int i = 0; i < g->n_prompts; i++) {
        free(g->prompts[i]);
        if (g->prompt_text)
            free(g->prompt_text[i]);
    }
    free(g->prompts);
    free(g->prompt_text);
    free(g->n_prompt_tok);
    free(g->bias_ids);
    free(g->bias_vals);
    for (int i = 0; i < g->n_stop; i++)
        free(g->stop[i]);
    if (g->counted_live)
        atomic_fetch_sub(&g->a->live, g->counted_live);
    free(g);
}

/* ---- typed field readers: each returns 0 when absent or null ---- */

static int get_bool(api_gen *g, json_t *v, const char *name, int *out)
{
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return api_gen_fail(g, 400, name, "'%s' must be a boolean", name);
    *out = json_is_true(v);
    return 0;
}

static int get_int(api_gen *g, json_t *v, const char *name, long lo, long hi, int *out)
{
    if (!v || json_is_null(v))
        return 0;
    json_int_t x;
    if (json_is_integer(v))
        x = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
             fabs(json_real_value(v)) < 1e15)
        x = (json_int_t)json_real_value(v);
    else
        return api_gen_fail(g, 400, name, "'%s' must be an integer", name);
    if (x < lo || x > hi)
        return api_gen_fail(g, 400, name, "'%s' must be in [%ld, %ld], got %lld", name, lo, hi,
                            (long long)x);
    *out = (int)x;
    return 0;
}

static int get_num(api_gen *g, json_t *v, const char *name, double lo, double hi, float *out)
{
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return api_gen_fail(g, 400, name, "'%s' must be a number", name);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return api_gen_fail(g, 400, name, "'%s' must be in [%g, %g], got %g", name, lo, hi, x);
    *out = (float)x;
    return 0;
}

/* Fields each endpoint knows. Accepted-but-inert ones (user, metadata ...)
 * change nothing a client can observe in our answers. */
static const char *const chat_fields[] = {
    "model", "messages", "stream", "stream_options", "n", "max_tokens",
    "max_completion_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop",
    "stop_token_ids", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "logit_bias", "logprobs", "top_logprobs", "return_tokens_as_token_ids", "min_tokens",
    "ignore_eos", "skip_special_tokens", "include_stop_str_in_output", "chat_template_kwargs",
    "add_generation_prompt", "add_special_tokens", "user", "metadata", "store",
    "service_tier", "tools", "tool_choice", "parallel_tool_calls", "response_format",
    "modalities",
    /* OpenAI's that steer caching, abuse tracking or latency, not the tokens
     * (prediction only speeds up an answer that stays the same) */
    "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "verbosity",
    "prediction", NULL,
};
static const char *const completion_fields[] = {
    "model", "prompt", "stream", "stream_options", "n", "best_of", "max_tokens",
    "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias",
    "logprobs", "return_tokens_as_token_ids", "echo", "suffix", "min_tokens", "ignore_eos",
    "skip_special_tokens", "include_stop_str_in_output", "add_special_tokens", "user",
    "metadata", NULL,
};
/* Known OpenAI / vLLM options that would change the answer and that we do
 * not implement: refused by name. */
static const char *const refused_fields[] = {
    "functions", "function_call", "audio", "reasoning_effort",
    "web_search_options", "guided_json", "guided_regex", "guided_choice",
    "guided_grammar", "structured_outputs", "use_beam_search", "length_penalty",
    "prompt_logprobs", "continue_final_message", "chat_template", "documents",
    "echo", "truncate_prompt_tokens", "allowed_token_ids", "bad_words",
    "spaces_between_special_tokens", "priority", "logits_processors", "mm_processor_kwargs",
    NULL,
};

static int in_list(const char *const *l, const char *k)
{
    for (; *l; l++)
        if (!strcmp(*l, k))
            return 1;
    return 0;
}

/* Refused fields at the value that asks for nothing (vLLM's defaults, as
 * JSON): clients that send every field of vLLM's schema send these. */
static const struct inert {
    const char *name, *value;
} inert_values[] = {
    {"use_beam_search", "false"}, {"priority", "0"}, {"continue_final_message", "false"},
    {"length_penalty", "1"}, {"spaces_between_special_tokens", "true"}, {"echo", "false"},
    {"bad_words", "[]"}, {"allowed_token_ids", "[]"}, {"logits_processors", "[]"},
};

/* The inert value of refused field k as JSON text; NULL: only null is. */
static const char *inert_value(const char *k)
{
    for (size_t i = 0; i < sizeof inert_values / sizeof inert_values[0]; i++)
        if (!strcmp(inert_values[i].name, k))
            return inert_values[i].value;
    return NULL;
}

/* A refused field that changes nothing: null (as absent) or its default. */
static int inert(const char *k, json_t *v)
{
    const char *text = inert_value(k);
    if (json_is_null(v) || !text)
        return json_is_null(v);
    json_t *d = json_loads(text, JSON_DECODE_ANY, NULL);
    int same = json_equal(d, v) || (json_is_number(d) && json_is_number(v) &&
                                    json_number_value(d) == json_number_value(v));
    json_decref(d);
    return same;
}

static int check_fields(api_gen *g, json_t *body)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (in_list(g->chat ? chat_fields : completion_fields, k))
            continue;
        if (!in_list(refused_fields, k))
            return api_gen_fail(g, 400, k, API_UNRECOGNIZED "%s", k);
        const char *ok = inert_value(k);
        if (!inert(k, v))
            return api_gen_fail(g, 400, k, "'%s' is not supported by this server (only %s, "
                                "which changes nothing)", k, ok ? ok : "null");
    }
    /* Tools are fine where no call can come back: tool_choice "none" (the
     * template still shows them to the model, as vLLM does by default). */
    json_t *t = json_object_get(body, "tools"), *tc = json_object_get(body, "tool_choice");
    int no_calls = json_is_string(tc) && !strcmp(json_string_value(tc), "none");
    if (t && !json_is_null(t) && !json_is_array(t))
        return api_gen_fail(g, 400, "tools", "'tools' must be an array");
    if (json_array_size(t) > 0 && !no_calls)
        return api_gen_fail(g, 400, "tools", "'tools' (function calling) is not supported by "
                            "this server yet; with tool_choice \"none\" they are only shown to "
                            "the model");
    if (tc && !json_is_null(tc) && !no_calls &&
        !(json_is_string(tc) && !strcmp(json_string_value(tc), "auto")))
        return api_gen_fail(g, 400, "tool_choice", "'tool_choice' is not supported by this "
                            "server yet (only \"none\", or \"auto\" without tools)");
    t = json_object_get(body, "response_format");
    if (t && !json_is_null(t)) {
        json_t *ty = json_is_object(t) ? json_object_get(t, "type") : NULL;
        if (!json_is_string(ty) || strcmp(json_string_value(ty), "text"))
            return api_gen_fail(g, 400, "response_format", "'response_format' other than "
                                "{\"type\": \"text\"} (JSON mode, JSON schema) is not supported "
                                "by this server yet");
    }
    t = json_object_get(body, "modalities");
    if (t && !json_is_null(t)) {
        size_t i;
        json_t *m;
        if (!json_is_array(t))
            return api_gen_fail(g, 400, "modalities", "'modalities' must be an array");
        json_array_foreach(t, i, m)
            if (!json_is_string(m) || strcmp(json_string_value(m), "text"))
                return api_gen_fail(g, 400, "modalities", "only the \"text\" modality is "
                                    "supported");
    }
    t = json_object_get(body, "store");
    if (json_is_true(t))
        return api_gen_fail(g, 400, "store", "'store': true is not supported (this server "
                            "keeps no completions)");
    t = json_object_get(body, "suffix");
    if (t && !json_is_null(t))
        return api_gen_fail(g, 400, "suffix", "'suffix' is not supported by this server");
    return 0;
}

/* ---- prompts ---- */

static int add_prompt(api_gen *g, int32_t *ids, int n, char *text)
{
    int k = g->n_prompts;
    int32_t **p = realloc(g->prompts, (size_t)(k + 1) * sizeof *p);
    if (p)
        g->prompts = p;
    int *np = realloc(g->n_prompt_tok, (size_t)(k + 1) * sizeof *np);
    if (np)
        g->n_prompt_tok = np;
    char **pt = realloc(g->prompt_text, (size_t)(k + 1) * sizeof *pt);
    if (pt)
        g->prompt_text = pt;
    if (!p || !np || !pt) {
        free(ids);
        free(text);
        return api_gen_fail(g, 500, NULL, "out of memory");
    }
    g->prompts[k] = ids;
    g->n_prompt_tok[k] = n;
    g->prompt_text[k] = text;
    g->n_prompts++;
    return 0;
}

static int prompt_from_text(api_gen *g, const char *s, size_t len, int add_special,
                            const char *param)
{
    int32_t *ids = NULL;
    size_t n = 0;
    inferd_error e = {{0}};
    if (tok_encode(g->a->tok, s, len, add_special, &ids, &n, &e))
        return api_gen_fail(g, 400, param, "cannot tokenize the prompt: %s", e.msg);
    char *text = g->echo ? strndup(s, len) : NULL;
    return add_prompt(g, ids, (int)n, text);
}

static int prompt_from_ids(api_gen *g, json_t *arr, const char *param)
{
    size_t n = json_array_size(arr), i;
    json_t *v;
    if (n == 0)
        return api_gen_fail(g, 400, param, "the prompt is empty");
    int32_t *ids = malloc(n * sizeof *ids);
    if (!ids)
        return api_gen_fail(g, 500, NULL, "out of memory");
    json_array_foreach(arr, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= g->a->vocab) {
            free(ids);
            return api_gen_fail(g, 400, param, "prompt token %zu is not a token id in [0, %d)",
                                i, g->a->vocab);
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    char *text = NULL;
    if (g->echo) {
        size_t tl;
        inferd_error e = {{0}};
        if (tok_decode(g->a->tok, ids, n, 0, &text, &tl, &e)) {
            free(ids);
            return api_gen_fail(g, 400, param, "cannot decode the prompt: %s", e.msg);
        }
    }
    return add_prompt(g, ids, (int)n, text);
}

static int parse_completion_prompt(api_gen *g, json_t *p, int add_special)
{
    if (!p || json_is_null(p))
        return api_gen_fail(g, 400, "prompt", "'prompt' is required");
    if (json_is_string(p))
        return prompt_from_text(g, json_string_value(p), json_string_length(p), add_special,
                                "prompt");
    if (!json_is_array(p) || json_array_size(p) == 0)
        return api_gen_fail(g, 400, "prompt", "'prompt' must be a string, a list of strings, a "
                            "list of token ids or a list of lists of token ids (non-empty)");
    json_t *first = json_array_get(p, 0);
    if (json_is_integer(first))
        return prompt_from_ids(g, p, "prompt");
    size_t i;
    json_t *v;
    if (json_array_size(p) > API_MAX_CHOICES)
        return api_gen_fail(g, 400, "prompt", "at most %d prompts per request", API_MAX_CHOICES);
    json_array_foreach(p, i, v) {
        int rc;
        if (json_is_string(v))
            rc = prompt_from_text(g, json_string_value(v), json_string_length(v),
                                  add_special, "prompt");
        else if (json_is_array(v))
            rc = prompt_from_ids(g, v, "prompt");
        else
            rc = api_gen_fail(g, 400, "prompt", "'prompt' must be a string, a list of strings, "
                              "a list of token ids or a list of lists of token ids");
        if (rc)
            return -1;
    }
    return 0;
}

/* Messages as the template expects them: content parts joined to text. */
static json_t *normalize_messages(api_gen *g, json_t *msgs)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer",
                                        NULL};
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        api_gen_fail(g, 400, "messages", "'messages' must be a non-empty array");
        return NULL;
    }
    json_t *out = json_array();
    size_t i;
    json_t *m;
    char param[64];
    json_array_foreach(msgs, i, m) {
        json_t *role = json_object_get(m, "role");
        if (!json_is_object(m) || !json_is_string(role) ||
            !in_list(roles, json_string_value(role))) {
            snprintf(param, sizeof param, "messages[%zu].role", i);
            api_gen_fail(g, 400, param, "messages[%zu] must be an object with a 'role' of "
                         "system, user, assistant, tool or developer", i);
            goto err;
        }
        json_t *tc = json_object_get(m, "tool_calls");
        if (tc && !json_is_null(tc) && !(json_is_array(tc) && json_array_size(tc) == 0)) {
            snprintf(param, sizeof param, "messages[%zu].tool_calls", i);
            api_gen_fail(g, 400, param, "tool calls in messages are not supported yet");
            goto err;
        }
        json_t *c = json_object_get(m, "content");
        json_t *nm = json_deep_copy(m);
        snprintf(param, sizeof param, "messages[%zu].content", i);
        if (json_is_array(c)) {
            strbuf t = {0};
            size_t j;
            json_t *part;
            json_array_foreach(c, j, part) {
                json_t *ty = json_object_get(part, "type"), *tx = json_object_get(part, "text");
                if (!json_is_string(ty) || strcmp(json_string_value(ty), "text") ||
                    !json_is_string(tx)) {
                    sb_free(&t);
                    json_decref(nm);
                    api_gen_fail(g, 400, param, "only text content parts ({\"type\": \"text\", "
                                 "\"text\": ...}) are supported");
                    goto err;
                }
                if (j > 0)
                    sb_putc(&t, '\n');
                sb_append(&t, json_string_value(tx), json_string_length(tx));
            }
            char *s = sb_steal(&t);
            if (!s) {
                json_decref(nm);
                api_gen_fail(g, 500, NULL, "out of memory joining messages[%zu].content", i);
                goto err;
            }
            json_object_set_new(nm, "content", json_string(s));
            free(s);
        } else if ((!c || json_is_null(c)) && !strcmp(json_string_value(role), "assistant")) {
            /* OpenAI's way to send an assistant turn without text. Jinja2
             * cannot concatenate None either; vLLM hands string templates
             * "" for it, and so do we. */
            json_object_set_new(nm, "content", json_string(""));
        } else if (!json_is_string(c)) {
            json_decref(nm);
            api_gen_fail(g, 400, param, "messages[%zu].content must be a string or an array of "
                         "text parts", i);
            goto err;
        }
        json_array_append_new(out, nm);
    }
    return out;
err:
    json_decref(out);
    return NULL;
}

int api_gen_chat_prompt(api_gen *g, json_t *body, int add_special, int32_t **ids, size_t *n)
{
    if (!g->a->chat)
        return api_gen_fail(g, 400, "messages", "this model has no chat template; use "
                            "/v1/completions or start the server with --chat-template FILE");
    json_t *msgs = normalize_messages(g, json_object_get(body, "messages"));
    if (!msgs)
        return -1;
    int agp = 1;
    json_t *kw = json_object_get(body, "chat_template_kwargs");
    if (get_bool(g, json_object_get(body, "add_generation_prompt"), "add_generation_prompt",
                 &agp)) {
        json_decref(msgs);
        return -1;
    }
    if (kw && !json_is_null(kw) && !json_is_object(kw)) {
        json_decref(msgs);
        return api_gen_fail(g, 400, "chat_template_kwargs", "'chat_template_kwargs' must be an "
                            "object");
    }
    json_t *req = json_object();
    json_object_set_new(req, "messages", msgs);
    json_object_set_new(req, "add_generation_prompt", json_boolean(agp));
    if (json_is_object(kw))
        json_object_set(req, "chat_template_kwargs", kw);
    /* for chat, check_fields let tools through only with tool_choice "none" */
    json_t *tools = json_object_get(body, "tools");
    if (json_array_size(tools) > 0)
        json_object_set(req, "tools", tools);
    char *text = NULL;
    size_t len = 0;
    int raised = 0, rc = -1;
    inferd_error e = {{0}};
    if (tmpl_chat_render(g->a->chat, req, &text, &len, &raised, &e)) {
        api_gen_fail(g, 400, "messages", "%s%s", raised ? "" : "chat template error: ", e.msg);
        goto out;
    }
    if (tok_encode(g->a->tok, text, len, add_special, ids, n, &e)) {
        api_gen_fail(g, 400, "messages", "cannot tokenize the prompt: %s", e.msg);
        goto out;
    }
    rc = 0;
out:
    free(text);
    json_decref(req);
    return rc;
}

/* ---- sampling ---- */

static int parse_stop(api_gen *g, json_t *v)
{
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        v = json_pack("[O]", v);
    } else if (json_is_array(v)) {
        json_incref(v);
    } else {
        return api_gen_fail(g, 400, "stop", "'stop' must be a string or an array of strings");
    }
    size_t i;
    json_t *s;
    int rc = 0;
    if (json_array_size(v) > API_MAX_STOP)
        rc = api_gen_fail(g, 400, "stop", "at most %d stop strings", API_MAX_STOP);
    json_array_foreach(v, i, s) {
        if (rc)
            break;
        if (!json_is_string(s) || json_string_length(s) == 0) {
            rc = api_gen_fail(g, 400, "stop", "stop strings must be non-empty strings");
            break;
        }
        g->stop[g->n_stop++] = strdup(json_string_value(s));
        if (json_string_length(s) > g->max_stop_len)
            g->max_stop_len = json_string_length(s);
    }
    json_decref(v);
    return rc;
}

static int parse_logit_bias(api_gen *g, json_t *v)
{
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return api_gen_fail(g, 400, "logit_bias", "'logit_bias' must be an object of token id "
                            "-> bias");
    size_t n = json_object_size(v);
    if (n == 0)
        return 0;
    if (n > 300)
        return api_gen_fail(g, 400, "logit_bias", "at most 300 logit_bias entries");
    g->bias_ids = malloc(n * sizeof *g->bias_ids);
    g->bias_vals = malloc(n * sizeof *g->bias_vals);
    if (!g->bias_ids || !g->bias_vals)
        return api_gen_fail(g, 500, NULL, "out of memory");
    const char *k;
    json_t *x;
    int i = 0;
    json_object_foreach(v, k, x) {
        char *end;
        long id = strtol(k, &end, 10);
        if (end == k || *end || id < 0 || id >= g->a->vocab)
            return api_gen_fail(g, 400, "logit_bias", "logit_bias key '%s' is not a token id in "
                                "[0, %d)", k, g->a->vocab);
        if (!json_is_number(x) || json_number_value(x) < -100 || json_number_value(x) > 100)
            return api_gen_fail(g, 400, "logit_bias", "logit_bias values must be numbers in "
                                "[-100, 100]");
        g->bias_ids[i] = (int32_t)id;
        g->bias_vals[i] = (float)json_number_value(x);
        i++;
    }
    g->s.n_logit_bias = i;
    g->s.logit_bias_ids = g->bias_ids;
    g->s.logit_bias_vals = g->bias_vals;
    return 0;
}

static int parse_sampling(api_gen *g, json_t *b)
{
    eng_sampling *s = &g->s;
    const ld_generation_config *gc = g->a->has_gen ? &g->a->gen : NULL;
    /* The model's generation_config.json supplies defaults, as in vLLM. */
    if (gc && gc->has_temperature)
        s->temperature = (float)gc->temperature;
    if (gc && gc->has_top_p)
        s->top_p = (float)gc->top_p;
    if (gc && gc->has_top_k)
        s->top_k = gc->top_k;
    if (gc && gc->has_min_p)
        s->min_p = (float)gc->min_p;
    if (gc && gc->has_repetition_penalty)
        s->repetition_penalty = (float)gc->repetition_penalty;
    json_t *seedv = json_object_get(b, "seed");
    if (get_num(g, json_object_get(b, "temperature"), "temperature", 0, 100, &s->temperature) ||
        get_num(g, json_object_get(b, "top_p"), "top_p", 1e-9, 1, &s->top_p) ||
        get_int(g, json_object_get(b, "top_k"), "top_k", -1, 1 << 30, &s->top_k) ||
        get_num(g, json_object_get(b, "min_p"), "min_p", 0, 1, &s->min_p) ||
        get_num(g, json_object_get(b, "presence_penalty"), "presence_penalty", -2, 2,
                &s->presence_penalty) ||
        get_num(g, json_object_get(b, "frequency_penalty"), "frequency_penalty", -2, 2,
                &s->frequency_penalty) ||
        get_num(g, json_object_get(b, "repetition_penalty"), "repetition_penalty", 1e-6, 100,
                &s->repetition_penalty) ||
        get_int(g, json_object_get(b, "min_tokens"), "min_tokens", 0, 1 << 30,
                &s->min_tokens) ||
        get_bool(g, json_object_get(b, "ignore_eos"), "ignore_eos", &s->ignore_eos) ||
        parse_logit_bias(g, json_object_get(b, "logit_bias")) ||
        parse_stop(g, json_object_get(b, "stop")))
        return -1;
    if (seedv && !json_is_null(seedv)) {
        if (!json_is_integer(seedv))
            return api_gen_fail(g, 400, "seed", "'seed' must be an integer");
        s->has_seed = 1;
        s->seed = (uint64_t)json_integer_value(seedv);
    }
    json_t *st = json_object_get(b, "stop_token_ids");
    if (st && !json_is_null(st)) {
        size_t i;
        json_t *v;
        if (!json_is_array(st) || json_array_size(st) > ENG_MAX_STOP_IDS)
            return api_gen_fail(g, 400, "stop_token_ids", "'stop_token_ids' must be an array of "
                                "at most %d token ids", ENG_MAX_STOP_IDS);
        json_array_foreach(st, i, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) >= g->a->vocab)
                return api_gen_fail(g, 400, "stop_token_ids", "stop_token_ids must be token ids "
                                    "in [0, %d)", g->a->vocab);
            s->stop_ids[s->n_stop_ids++] = (int32_t)json_integer_value(v);
        }
    }
    return 0;
}

static int parse_logprobs(api_gen *g, json_t *b)
{
    json_t *lp = json_object_get(b, "logprobs");
    int max = g->a->max_logprobs;
    if (get_bool(g, json_object_get(b, "return_tokens_as_token_ids"),
                 "return_tokens_as_token_ids", &g->tokens_as_ids))
        return -1;
    if (g->chat) {
        int top = -1;
        if (get_bool(g, lp, "logprobs", &g->logprobs) ||
            get_int(g, json_object_get(b, "top_logprobs"), "top_logprobs", 0, max, &top))
            return -1;
        if (top >= 0 && !g->logprobs)
            return api_gen_fail(g, 400, "top_logprobs", "'top_logprobs' requires 'logprobs': "
                                "true");
        g->top_logprobs = top > 0 ? top : 0;
    } else if (lp && !json_is_null(lp)) {
        int k = 0;
        if (get_int(g, lp, "logprobs", 0, max, &k))
            return -1;
        g->logprobs = 1;
        g->top_logprobs = k;
    }
    g->s.logprobs = g->logprobs;
    g->s.top_logprobs = g->top_logprobs;
    return 0;
}

/* Output length: explicit, or what the context leaves; the 400 repeats the
 * numbers as vLLM and OpenAI do. */
static int check_lengths(api_gen *g)
{
    int ctx = g->a->max_model_len, longest = 0;
    for (int i = 0; i < g->n_prompts; i++) {
        if (g->n_prompt_tok[i] == 0)
            return api_gen_fail(g, 400, g->chat ? "messages" : "prompt", "the prompt is empty");
        if (g->n_prompt_tok[i] > longest)
            longest = g->n_prompt_tok[i];
    }
    const char *where = g->chat ? "messages" : "prompt";
    g->err_code = "context_length_exceeded";   /* OpenAI's, for the two errors below */
    if (g->max_tokens < 0) {
        if (longest >= ctx)
            return api_gen_fail(g, 400, where, "This model's maximum context length is %d tokens. "
                                "However, your request has %d input tokens. Please reduce the "
                                "length of the input %s.", ctx, longest, where);
        g->s.max_tokens = ctx - longest;
        if (!g->chat && g->s.max_tokens > 16)
            g->s.max_tokens = 16;  /* OpenAI's legacy completions default */
    } else {
        g->s.max_tokens = g->max_tokens;
        if ((long)longest + g->max_tokens > ctx)
            return api_gen_fail(g, 400, where, "This model's maximum context length is %d tokens. "
                                "However, you requested %d tokens (%d in the %s, %d in the "
                                "completion). Please reduce the length of the %s or completion.",
                                ctx, longest + g->max_tokens, longest, where, g->max_tokens, where);
    }
    g->err_code = NULL;
    if (g->s.max_tokens == 0 && !(g->echo && g->logprobs))
        return api_gen_fail(g, 400, "max_tokens", "'max_tokens' must be at least 1 (0 only with "
                            "echo and logprobs)");
    /* here, not in the engine, whose refusal would name the prompt */
    if (g->s.min_tokens > g->s.max_tokens)
        return api_gen_fail(g, 400, "min_tokens", "'min_tokens' must be at most max_tokens "
                            "(%d here), got %d", g->s.max_tokens, g->s.min_tokens);
    return 0;
}

int api_gen_parse(api_gen *g, json_t *b)
{
    if (!json_is_object(b))
        return api_gen_fail(g, 400, NULL, "the request body must be a JSON object");
    if (check_fields(g, b))
        return -1;
    json_t *model = json_object_get(b, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model))
            return api_gen_fail(g, 400, "model", "'model' must be a string");
        if (strcmp(json_string_value(model), g->a->model_name))
            return api_gen_fail(g, 404, "model", "The model `%s` does not exist.",
                                json_string_value(model));
    }
    json_t *so = json_object_get(b, "stream_options");
    if (get_bool(g, json_object_get(b, "stream"), "stream", &g->stream))
        return -1;
    if (so && !json_is_null(so)) {
        if (!g->stream)
            return api_gen_fail(g, 400, "stream_options", "'stream_options' is only allowed when "
                                "'stream' is true");
        if (!json_is_object(so))
            return api_gen_fail(g, 400, "stream_options", "'stream_options' must be an object");
        const char *k;
        json_t *v;
        /* include_obfuscation pads chunks against length side channels; we
         * send none, which is what false asks for and harmless for true */
        json_object_foreach(so, k, v)
            if (strcmp(k, "include_usage") && strcmp(k, "include_obfuscation"))
                return api_gen_fail(g, 400, "stream_options", "unknown stream option '%s'", k);
        if (get_bool(g, json_object_get(so, "include_usage"), "stream_options.include_usage",
                     &g->include_usage))
            return -1;
    }
    int best_of = 0, add_special = g->chat ? 0 : 1;
    if (get_int(g, json_object_get(b, "n"), "n", 1, API_MAX_CHOICES, &g->n) ||
        get_int(g, json_object_get(b, "best_of"), "best_of", 1, API_MAX_CHOICES, &best_of) ||
        get_int(g, json_object_get(b, "max_tokens"), "max_tokens", 0, 1 << 30,
                &g->max_tokens) ||
        get_int(g, json_object_get(b, "max_completion_tokens"), "max_completion_tokens", 0,
                1 << 30, &g->max_tokens) ||
        get_bool(g, json_object_get(b, "echo"), "echo", &g->echo) ||
        get_bool(g, json_object_get(b, "skip_special_tokens"), "skip_special_tokens",
                 &g->skip_special) ||
        get_bool(g, json_object_get(b, "include_stop_str_in_output"),
                 "include_stop_str_in_output", &g->include_stop_str) ||
        get_bool(g, json_object_get(b, "add_special_tokens"), "add_special_tokens",
                 &add_special) ||
        parse_sampling(g, b) || parse_logprobs(g, b))
        return -1;
    if (best_of && best_of != g->n)
        return api_gen_fail(g, 400, "best_of", "'best_of' different from 'n' is not supported");
    if (g->chat) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (api_gen_chat_prompt(g, b, add_special, &ids, &n))
            return -1;
        if (add_prompt(g, ids, (int)n, NULL))
            return -1;
    } else if (parse_completion_prompt(g, json_object_get(b, "prompt"), add_special)) {
        return -1;
    }
    if ((long)g->n_prompts * g->n > API_MAX_CHOICES)
        return api_gen_fail(g, 400, "n", "prompts x n is %d, at most %d choices per request",
                            g->n_prompts * g->n, API_MAX_CHOICES);
    if (g->echo && g->logprobs && g->stream)
        return api_gen_fail(g, 400, "echo", "'echo' with 'logprobs' is not supported when "
                            "streaming (the prompt's logprobs would be missing); use stream: "
                            "false");
    if (g->echo && g->logprobs) {
        g->s.prompt_logprobs = 1;
        g->s.prompt_top_logprobs = g->top_logprobs;
    }
    return check_lengths(g);
}
