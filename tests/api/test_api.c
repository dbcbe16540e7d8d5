/* api/ without HTTP: api_handle and api_stream_* over a real tiny model,
 * tokenizer, chat template and engine. Checks routes, error bodies, a
 * whole SSE stream, a stream freed half way (its KV blocks come back) and
 * the stop-string hold-back and return_tokens_as_token_ids, under ASan's
 * leak checker in CI. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"

#define MODEL "tests/fixtures/models/qwen3"

typedef struct fixture {
    mdl_model *m;
    tok_tokenizer *tok;
    tmpl_chat *chat;
    eng_engine *eng;
    api_ctx *api;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    inferd_error e = {{0}};
    mdl_options mo = {.device = "cpu", .n_threads = 2};
    eng_config ec;
    eng_config_defaults(&ec);
    ec.kv_cache_bytes = 16u << 20;
    const int32_t eos = 2;
    if (mdl_load(MODEL, &mo, &f->m, &e) || tok_load(MODEL, &f->tok, &e) ||
        tmpl_chat_load(MODEL, NULL, &f->chat, &e) || eng_create(f->m, &ec, &eos, 1, &f->eng, &e))
        fail_msg("setup: %s", e.msg);
    api_options ao = {.served_model_name = "tiny", .model_root = MODEL, .engine = f->eng,
                      .tok = f->tok, .chat = f->chat, .max_num_seqs = 256};
    if (api_init(&ao, &f->api, &e))
        fail_msg("api_init: %s", e.msg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    api_free(f->api);
    eng_destroy(f->eng);
    tmpl_chat_free(f->chat);
    tok_free(f->tok);
    mdl_free(f->m);
    free(f);
    return 0;
}

static void post(fixture *f, const char *path, const char *body, api_response *r)
{
    api_handle(f->api, "POST", path, body, strlen(body), NULL, NULL, r);
}

/* The "error" object of a response body, checked for OpenAI's four keys. */
static void assert_error(const api_response *r, int status, const char *param)
{
    assert_int_equal(r->status, status);
    json_t *j = json_loads(r->body, 0, NULL);
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_object(e) && json_object_size(e) == 4);
    assert_true(json_is_string(json_object_get(e, "message")));
    if (param)
        assert_string_equal(json_string_value(json_object_get(e, "param")), param);
    json_decref(j);
}

static void test_routes_and_errors(void **state)
{
    fixture *f = *state;
    api_response r;
    api_handle(f->api, "GET", "/health", NULL, 0, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    api_response_clear(&r);
    api_handle(f->api, "GET", "/nope", NULL, 0, NULL, NULL, &r);
    assert_error(&r, 404, NULL);
    api_response_clear(&r);
    api_handle(f->api, "DELETE", "/v1/completions", NULL, 0, NULL, NULL, &r);
    assert_error(&r, 405, NULL);
    api_response_clear(&r);
    post(f, "/v1/completions", "{\"prompt\": ", &r);
    assert_error(&r, 400, NULL);
    api_response_clear(&r);
    post(f, "/v1/completions", "{\"prompt\": \"a\", \"n\": 0}", &r);
    assert_error(&r, 400, "n");
    api_response_clear(&r);
    post(f, "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", &r);
    assert_error(&r, 400, "messages[0].content");
    api_response_clear(&r);
    post(f, "/v1/completions", "{\"model\": \"x\", \"prompt\": \"a\"}", &r);
    assert_error(&r, 404, "model");
    api_response_clear(&r);
    /* Invalid UTF-8 in a client's field name still gives a JSON error. */
    post(f, "/v1/completions", "{\"prompt\": \"a\", \"\\udc80\": 1}", &r);
    assert_int_equal(r.status, 400);
    api_response_clear(&r);
    char *b = api_error_body(503, NULL, "busy %d", 3);
    assert_non_null(strstr(b, "\"overloaded\""));
    free(b);
}

/* Runs a streamed request to its end; returns the SSE text. */
static char *drain(api_stream *s)
{
    strbuf out = {0};
    int rc;
    while ((rc = api_stream_next(s, &out, 1000)) >= 0)
        ;
    return sb_steal(&out);
}

static void test_stream_whole(void **state)
{
    fixture *f = *state;
    api_response r;
    post(f, "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 6, "
         "\"temperature\": 0, \"ignore_eos\": true, \"stream\": true, \"n\": 2, "
         "\"stream_options\": {\"include_usage\": true}}", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(r.stream);
    char *sse = drain(r.stream);
    size_t n = strlen(sse);
    assert_true(n > 20 && !strcmp(sse + n - 14, "data: [DONE]\n\n"));
    assert_non_null(strstr(sse, "\"role\":\"assistant\""));
    assert_non_null(strstr(sse, "\"completion_tokens\":12"));
    free(sse);
    api_response_clear(&r);
}

/* Tokens whose text is held back (here every token is byte 0xE4, the start
 * of a three-byte character that never completes) still get a chunk each
 * time the stream is read: a client sees the steps go by. Before, nothing
 * was sent until the finish. */
static void test_stream_held_back_text(void **state)
{
    fixture *f = *state;
    api_response r;
    post(f, "/v1/completions",
         "{\"prompt\": \"hi\", \"max_tokens\": 200, \"temperature\": 0, \"ignore_eos\": true, "
         "\"logit_bias\": {\"163\": 100}, \"stream\": true, "
         "\"stream_options\": {\"include_usage\": true}}", &r);
    assert_int_equal(r.status, 200);
    char *sse = drain(r.stream);
    int chunks = 0;
    for (const char *p = sse; (p = strstr(p, "\"text\":\"\"")); p++)
        chunks++;
    assert_non_null(strstr(sse, "\"completion_tokens\":200"));
    assert_null(strstr(sse, "\"text\":\"\\u")); /* no text ever became valid */
    assert_true(chunks >= 2);
    free(sse);
    api_response_clear(&r);
}

static void test_stream_freed_midway(void **state)
{
    fixture *f = *state;
    api_response r;
    post(f, "/v1/completions", "{\"prompt\": \"abc\", \"max_tokens\": 500, \"ignore_eos\": true, "
                               "\"stream\": true}", &r);
    strbuf out = {0};
    while (out.n == 0)
        api_stream_next(r.stream, &out, 1000);
    sb_free(&out);
    api_response_clear(&r);   /* the client went away */
    eng_stats st;
    for (int i = 0; i < 200; i++) {
        eng_get_stats(f->eng, &st);
        if (st.kv_blocks_used == 0 && st.running == 0)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.running, 0);
}

/* Greedy text, then the same request with a stop string from its middle:
 * streamed pieces must add up to the text before the stop string. */
static void test_stop_hold_back(void **state)
{
    fixture *f = *state;
    const char *base = "{\"prompt\": \"The cat\", \"max_tokens\": 30, \"temperature\": 0, "
                       "\"ignore_eos\": true";
    char body[512];
    api_response r;
    snprintf(body, sizeof body, "%s}", base);
    post(f, "/v1/completions", body, &r);
    json_t *j = json_loads(r.body, 0, NULL);
    const char *text = json_string_value(json_object_get(json_array_get(json_object_get(j,
                                                         "choices"), 0), "text"));
    assert_true(text && strlen(text) > 12);
    char stop[8];
    /* three bytes from the middle, on a character boundary when ASCII */
    memcpy(stop, text + 8, 3);
    stop[3] = 0;
    json_t *js = json_string(stop);
    if (!js) {   /* not whole characters: nothing to check with this model */
        print_message("skipped: the stop bytes are not valid UTF-8\n");
        json_decref(j);
        api_response_clear(&r);
        return;
    }
    json_decref(js);
    size_t cut = (size_t)(strstr(text, stop) - text);
    char *want = strndup(text, cut);
    json_decref(j);
    api_response_clear(&r);

    snprintf(body, sizeof body, "%s, \"stream\": true, \"stop\": \"%s\"}", base, stop);
    j = json_loads(body, 0, NULL);
    if (!j) {   /* the stop bytes need JSON escaping: skip */
        print_message("skipped: the stop bytes need JSON escaping\n");
        free(want);
        return;
    }
    json_decref(j);
    post(f, "/v1/completions", body, &r);
    char *sse = drain(r.stream);
    strbuf got = {0};
    for (char *p = strstr(sse, "data: {"); p; p = strstr(p + 1, "data: {")) {
        char *end = strstr(p, "\n\n");
        json_t *c = json_loadb(p + 6, (size_t)(end - p - 6), 0, NULL);
        json_t *ch = json_array_get(json_object_get(c, "choices"), 0);
        if (ch)
            sb_puts(&got, json_string_value(json_object_get(ch, "text")));
        json_decref(c);
    }
    assert_string_equal(got.p ? got.p : "", want);
    assert_non_null(strstr(sse, "\"finish_reason\":\"stop\""));
    sb_free(&got);
    free(sse);
    free(want);
    api_response_clear(&r);
}

/* ---- return_tokens_as_token_ids ---- */

/* The id in "token_id:N", or -1 when s is not of that form. */
static long tok_id_of(const char *s)
{
    if (!s || strncmp(s, "token_id:", 9) || !s[9])
        return -1;
    char *end;
    long v = strtol(s + 9, &end, 10);
    return *end || v < 0 ? -1 : v;
}

static json_t *post_json(fixture *f, const char *path, const char *body)
{
    api_response r;
    post(f, path, body, &r);
    assert_int_equal(r.status, 200);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    api_response_clear(&r);
    return j;
}

/* Decodes ids as the response text does (skip_special_tokens). */
static char *decode_ids(fixture *f, const int32_t *ids, size_t n)
{
    char *s = NULL;
    size_t len;
    inferd_error e = {{0}};
    if (tok_decode(f->tok, ids, n, 1, &s, &len, &e))
        fail_msg("tok_decode: %s", e.msg);
    return s;
}

#define CMPL "\"prompt\": \"The cat\", \"max_tokens\": 8, \"temperature\": 0, " \
             "\"ignore_eos\": true, \"logprobs\": 3"

static void test_tokens_as_ids_completions(void **state)
{
    fixture *f = *state;
    long vocab = tok_vocab_size(f->tok);
    json_t *plain = post_json(f, "/v1/completions", "{" CMPL "}");
    json_t *off = post_json(f, "/v1/completions",
                            "{" CMPL ", \"return_tokens_as_token_ids\": false}");
    json_t *ids = post_json(f, "/v1/completions",
                            "{" CMPL ", \"return_tokens_as_token_ids\": true}");
    json_t *pc = json_array_get(json_object_get(plain, "choices"), 0);
    json_t *oc = json_array_get(json_object_get(off, "choices"), 0);
    json_t *ic = json_array_get(json_object_get(ids, "choices"), 0);
    char *text = strdup(json_string_value(json_object_get(pc, "text")));
    assert_non_null(text);
    /* false is the default: the same logprobs; the text never changes */
    assert_true(json_equal(json_object_get(pc, "logprobs"), json_object_get(oc, "logprobs")));
    assert_string_equal(json_string_value(json_object_get(ic, "text")), text);

    json_t *plp = json_object_get(pc, "logprobs"), *lp = json_object_get(ic, "logprobs");
    json_t *toks = json_object_get(lp, "tokens"), *tops = json_object_get(lp, "top_logprobs");
    json_t *offs = json_object_get(lp, "text_offset");
    size_t n = json_array_size(toks);
    json_int_t ct = json_integer_value(json_object_get(json_object_get(ids, "usage"),
                                                       "completion_tokens"));
    assert_int_equal(n, 8);
    assert_int_equal(n, ct);
    assert_int_equal(json_array_size(tops), n);
    assert_int_equal(json_array_size(offs), n);
    assert_true(json_equal(json_object_get(lp, "token_logprobs"),
                           json_object_get(plp, "token_logprobs")));
    int32_t got[8];
    for (size_t i = 0; i < n; i++) {
        const char *t = json_string_value(json_array_get(toks, i));
        long id = tok_id_of(t);
        assert_true(id >= 0 && id < vocab);
        got[i] = (int32_t)id;
        /* the plain answer's token string is this id's text */
        const char *pt = json_string_value(json_array_get(json_object_get(plp, "tokens"), i));
        assert_non_null(pt);
        assert_true(tok_id_of(pt) < 0);
        json_t *top = json_array_get(tops, i);
        assert_int_equal(json_object_size(top), 3);
        const char *k;
        json_t *v;
        json_object_foreach(top, k, v) {
            long tid = tok_id_of(k);
            assert_true(tid >= 0 && tid < vocab);
        }
        /* greedy: the chosen token is among the alternatives, same logprob */
        json_t *mine = json_object_get(top, t);
        assert_non_null(mine);
        assert_true(json_real_value(mine) ==
                    json_real_value(json_array_get(json_object_get(lp, "token_logprobs"), i)));
        /* text_offset counts the characters of the token strings, as vLLM does */
        if (i > 0)
            assert_int_equal(json_integer_value(json_array_get(offs, i)) -
                                 json_integer_value(json_array_get(offs, i - 1)),
                             strlen(json_string_value(json_array_get(toks, i - 1))));
    }
    char *dec = decode_ids(f, got, n);
    assert_string_equal(dec, text);
    free(dec);
    json_decref(plain);
    json_decref(off);
    json_decref(ids);

    /* echo: the prompt's entries are ids too (the first without a logprob) */
    json_t *e = post_json(f, "/v1/completions",
                          "{\"prompt\": \"The cat\", \"max_tokens\": 2, \"echo\": true, "
                          "\"logprobs\": 1, \"temperature\": 0, \"ignore_eos\": true, "
                          "\"return_tokens_as_token_ids\": true}");
    json_t *u = json_object_get(e, "usage");
    lp = json_object_get(json_array_get(json_object_get(e, "choices"), 0), "logprobs");
    toks = json_object_get(lp, "tokens");
    assert_int_equal(json_array_size(toks),
                     json_integer_value(json_object_get(u, "prompt_tokens")) +
                         json_integer_value(json_object_get(u, "completion_tokens")));
    for (size_t i = 0; i < json_array_size(toks); i++)
        assert_true(tok_id_of(json_string_value(json_array_get(toks, i))) >= 0);
    assert_true(json_is_null(json_array_get(json_object_get(lp, "top_logprobs"), 0)));
    json_decref(e);

    /* streamed: every chunk's tokens and top_logprobs keys are ids */
    api_response r;
    post(f, "/v1/completions", "{" CMPL ", \"stream\": true, "
                               "\"return_tokens_as_token_ids\": true}", &r);
    assert_int_equal(r.status, 200);
    char *sse = drain(r.stream);
    int seen = 0;
    strbuf st = {0};
    for (char *p = strstr(sse, "data: {"); p; p = strstr(p + 1, "data: {")) {
        char *end = strstr(p, "\n\n");
        json_t *c = json_loadb(p + 6, (size_t)(end - p - 6), 0, NULL);
        json_t *ch = json_array_get(json_object_get(c, "choices"), 0);
        json_t *slp = json_object_get(ch, "logprobs");
        if (ch)
            sb_puts(&st, json_string_value(json_object_get(ch, "text")));
        for (size_t i = 0; i < json_array_size(json_object_get(slp, "tokens")); i++) {
            const char *t = json_string_value(json_array_get(json_object_get(slp, "tokens"), i));
            assert_true(tok_id_of(t) >= 0);
            assert_non_null(json_object_get(json_array_get(json_object_get(slp,
                                                           "top_logprobs"), i), t));
            seen++;
        }
        json_decref(c);
    }
    assert_int_equal(seen, 8);
    assert_string_equal(st.p ? st.p : "", text);
    sb_free(&st);
    free(sse);
    free(text);
    api_response_clear(&r);
}

#define CHAT "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 6, " \
             "\"temperature\": 0, \"ignore_eos\": true, \"logprobs\": true, \"top_logprobs\": 2"

static void test_tokens_as_ids_chat(void **state)
{
    fixture *f = *state;
    long vocab = tok_vocab_size(f->tok);
    json_t *plain = post_json(f, "/v1/chat/completions", "{" CHAT "}");
    json_t *ids = post_json(f, "/v1/chat/completions",
                            "{" CHAT ", \"return_tokens_as_token_ids\": true}");
    json_t *pc = json_array_get(json_object_get(plain, "choices"), 0);
    json_t *ic = json_array_get(json_object_get(ids, "choices"), 0);
    const char *content = json_string_value(json_object_get(json_object_get(pc, "message"),
                                                            "content"));
    assert_non_null(content);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ic, "message"),
                                                          "content")), content);
    json_t *pl = json_object_get(json_object_get(pc, "logprobs"), "content");
    json_t *il = json_object_get(json_object_get(ic, "logprobs"), "content");
    size_t n = json_array_size(il);
    assert_int_equal(n, 6);
    assert_int_equal(n, json_integer_value(json_object_get(json_object_get(ids, "usage"),
                                                           "completion_tokens")));
    assert_int_equal(json_array_size(pl), n);
    int32_t got[6];
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(il, i), *px = json_array_get(pl, i);
        const char *t = json_string_value(json_object_get(x, "token"));
        long id = tok_id_of(t);
        assert_true(id >= 0 && id < vocab);
        got[i] = (int32_t)id;
        assert_true(tok_id_of(json_string_value(json_object_get(px, "token"))) < 0);
        assert_true(json_real_value(json_object_get(x, "logprob")) ==
                    json_real_value(json_object_get(px, "logprob")));
        /* bytes: the UTF-8 bytes of "token_id:N" */
        json_t *b = json_object_get(x, "bytes");
        assert_int_equal(json_array_size(b), strlen(t));
        for (size_t k = 0; k < strlen(t); k++)
            assert_int_equal(json_integer_value(json_array_get(b, k)), (unsigned char)t[k]);
        json_t *top = json_object_get(x, "top_logprobs");
        assert_int_equal(json_array_size(top), 2);
        int has = 0;
        for (size_t k = 0; k < json_array_size(top); k++) {
            json_t *y = json_array_get(top, k);
            const char *yt = json_string_value(json_object_get(y, "token"));
            assert_true(tok_id_of(yt) >= 0 && tok_id_of(yt) < vocab);
            assert_int_equal(json_array_size(json_object_get(y, "bytes")), strlen(yt));
            has |= !strcmp(yt, t);
        }
        assert_true(has);
    }
    char *dec = decode_ids(f, got, n);
    assert_string_equal(dec, content);
    free(dec);
    json_decref(plain);
    json_decref(ids);
}

static void test_tokens_as_ids_errors(void **state)
{
    fixture *f = *state;
    const char *bodies[][2] = {
        {"/v1/completions", "{\"prompt\": \"a\", \"logprobs\": 1, "
                            "\"return_tokens_as_token_ids\": \"yes\"}"},
        {"/v1/completions", "{\"prompt\": \"a\", \"return_tokens_as_token_ids\": 1}"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
                                 "\"logprobs\": true, \"return_tokens_as_token_ids\": \"yes\"}"},
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        api_response r;
        post(f, bodies[i][0], bodies[i][1], &r);
        assert_error(&r, 400, "return_tokens_as_token_ids");
        assert_non_null(strstr(r.body, "'return_tokens_as_token_ids' must be a boolean"));
        api_response_clear(&r);
    }
    /* null is as absent */
    json_t *j = post_json(f, "/v1/completions", "{\"prompt\": \"a\", \"max_tokens\": 1, "
                                                "\"return_tokens_as_token_ids\": null}");
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_and_errors),
        cmocka_unit_test(test_stream_whole),
        cmocka_unit_test(test_stream_held_back_text),
        cmocka_unit_test(test_stream_freed_midway),
        cmocka_unit_test(test_stop_hold_back),
        cmocka_unit_test(test_tokens_as_ids_completions),
        cmocka_unit_test(test_tokens_as_ids_chat),
        cmocka_unit_test(test_tokens_as_ids_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
