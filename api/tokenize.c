/* api/tokenize.c: POST /tokenize and /detokenize as vLLM has them — the
 * model's tokenizer (and, for messages, its chat template) behind HTTP, for
 * clients that count tokens or debug a prompt. Runs no model; a chat
 * prompt is rendered by request.c's own code, so the count is the count a
 * chat request would send. */
#include <stdio.h>
#include <stdlib.h>

#include "api/gen.h"
#include "api/internal.h"

/* An encoder folder may come without a tokenizer (token ids only). */
static int no_tokenizer(const api_ctx *a, api_response *r)
{
    if (a->tok)
        return 0;
    api_set_error(r, 400, NULL, "this model has no tokenizer that inferd can load");
    return -1;
}

/* POST /tokenize as vLLM has it: {"prompt": ...} or {"messages": ...}. */
void api_on_tokenize(api_ctx *a, const api_call *c, api_response *r)
{
    json_t *b = c->body;
    if (no_tokenizer(a, r))
        return;
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
            api_set_error_code(r, g->err_status, g->err_param, g->err_code, g->err_msg);
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
            size_t sl;
            const char *s = tok_id_to_token(a->tok, ids[i], &sl);
            json_t *js = s ? json_stringn(s, sl) : NULL;
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

/* POST /detokenize: {"tokens": [ids]} back to text, a part of a character
 * at either end replaced by U+FFFD. */
void api_on_detokenize(api_ctx *a, const api_call *c, api_response *r)
{
    json_t *b = c->body;
    if (no_tokenizer(a, r))
        return;
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
