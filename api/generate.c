/* api/generate.c: the handlers of POST /v1/chat/completions and
 * /v1/completions. Runs the api_gen that request.c parsed on the engine and
 * writes what comes back as OpenAI JSON, either one response at the end or
 * SSE chunks as tokens arrive (api_stream_*). Each choice is one engine request with its own incremental
 * detokenizer; stop strings are matched on the detokenized text, and text
 * that could still become a stop string is held back, so a stop string is
 * never streamed even in part. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/gen.h"
#include "api/internal.h"

/* What a client is told when the backend fails mid-request (the details are
 * for the operator, in the log). */
static const char model_failed[] = "the model failed while generating; see the server log";

/* Code points in s[0..n) (completions' text_offset counts them). */
static long utf8_chars(const char *s, size_t n)
{
    long k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

/* ---- starting ---- */

/* Submits every choice of g (n per prompt) to the engine; on failure g's
 * err_* say why (503 when the queue is full or the engine stops). */
static int start_choices(api_gen *g)
{
    api_ctx *a = g->a;
    int total = g->n_prompts * g->n;
    /* The engine queues sequences, not requests: one request of n = 128
     * weighs what 128 of n = 1 do, so the limit counts each choice. */
    int limit = a->max_num_seqs + a->max_queue;
    if (a->max_queue > 0 && total > limit)
        return api_gen_fail(g, 400, g->n > 1 ? "n" : "prompt", "this request asks for %d "
                            "sequences (n x prompts) but the server runs and queues at most %d "
                            "(--max-num-seqs + --max-queue); ask for fewer", total, limit);
    int live = atomic_fetch_add(&a->live, total) + total;
    g->counted_live = total;
    if (a->max_queue > 0 && live > limit)
        return api_gen_fail(g, 503, NULL, "the server is overloaded: %d sequences are queued or "
                            "running and this request adds %d (at most %d); retry later",
                            live - total, total, limit);
    g->ch = calloc((size_t)total, sizeof *g->ch);
    if (!g->ch || (total > 1 && !(g->waiter = eng_waiter_new())))
        return api_gen_fail(g, 500, NULL, "out of memory");
    for (int p = 0; p < g->n_prompts; p++) {
        for (int j = 0; j < g->n; j++) {
            api_choice *c = &g->ch[g->n_choices];
            c->index = g->n_choices;
            c->prompt_idx = p;
            eng_sampling s = g->s;
            /* n > 1 with a seed: distinct but reproducible choices. */
            if (s.has_seed)
                s.seed += (uint64_t)j;
            inferd_error e = {{0}};
            c->ts = tok_stream_new(a->tok, g->skip_special);
            if (!c->ts)
                return api_gen_fail(g, 500, NULL, "out of memory");
            g->n_choices++;
            c->r = eng_submit(a->eng, g->prompts[p], g->n_prompt_tok[p], &s, &e);
            if (!c->r)
                return api_gen_fail(g, strstr(e.msg, "shutting down") ? 503 : 400,
                                    g->chat ? "messages" : "prompt", "%s", e.msg);
            if (g->waiter)
                eng_set_waiter(c->r, g->waiter);
            if (g->prompt_text && g->prompt_text[p])
                c->text_chars = utf8_chars(g->prompt_text[p], strlen(g->prompt_text[p]));
        }
    }
    return 0;
}

/* ---- logprobs ---- */

static json_t *jnum(double v)
{
    /* -inf (a token the bias excluded) is reported as vLLM does. */
    return json_real(isfinite(v) ? v : -9999.0);
}

/* A logprob entry's token string: its text, or "token_id:N" when the request
 * asked for return_tokens_as_token_ids (vLLM's extension). */
static char *token_text(api_gen *g, int32_t id)
{
    char *s = NULL;
    size_t n;
    if (g->tokens_as_ids) {
        char buf[32];
        snprintf(buf, sizeof buf, "token_id:%ld", (long)id);
        return strdup(buf);
    }
    if (tok_decode(g->a->tok, &id, 1, 0, &s, &n, NULL))
        return strdup("");
    strbuf b = {0};
    api_append_valid_utf8(&b, s, n);
    free(s);
    char *text = sb_steal(&b);
    return text ? text : strdup(""); /* out of memory: the entry shows no text */
}

/* Pushes id through c's detokenizer (or flushes it when id < 0) and appends
 * the new text to c->text, made valid UTF-8. */
static int detok(api_choice *c, int32_t id)
{
    strbuf t = {0};
    inferd_error e = {{0}};
    int rc = id >= 0 ? tok_stream_push(c->ts, id, &t, &e) : tok_stream_flush(c->ts, &t, &e);
    if (t.n)
        api_append_valid_utf8(&c->text, t.p, t.n);
    sb_free(&t);
    return rc;
}

static json_t *token_bytes(const char *s)
{
    json_t *b = json_array();
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        json_array_append_new(b, json_integer(*p));
    return b;
}

static void lp_reset(api_gen *g, api_choice *c)
{
    if (g->chat) {
        json_decref(c->lp_content);
        c->lp_content = json_array();
        return;
    }
    json_decref(c->lp_tokens);
    json_decref(c->lp_token_logprobs);
    json_decref(c->lp_top);
    json_decref(c->lp_offset);
    c->lp_tokens = json_array();
    c->lp_token_logprobs = json_array();
    c->lp_top = json_array();
    c->lp_offset = json_array();
}

/* Appends one token's logprob entry to c's lists. first: entry 0 of a
 * prompt, which has no logprob. */
static void lp_add(api_gen *g, api_choice *c, const eng_event *ev, int first)
{
    if (!c->lp_content && !c->lp_tokens)
        lp_reset(g, c);
    char *s = token_text(g, ev->token);
    if (g->chat) {
        json_t *top = json_array();
        for (int i = 0; i < ev->n_top; i++) {
            char *t = token_text(g, ev->top_ids[i]);
            json_array_append_new(top, json_pack("{s:s, s:o, s:o}", "token", t, "logprob",
                                                 jnum(ev->top_logprobs[i]), "bytes",
                                                 token_bytes(t)));
            free(t);
        }
        json_array_append_new(c->lp_content,
                              json_pack("{s:s, s:o, s:o, s:o}", "token", s, "logprob",
                                        jnum(ev->logprob), "bytes", token_bytes(s),
                                        "top_logprobs", top));
    } else {
        json_array_append_new(c->lp_tokens, json_string(s));
        json_array_append_new(c->lp_token_logprobs, first ? json_null() : jnum(ev->logprob));
        if (first) {
            json_array_append_new(c->lp_top, json_null());
        } else {
            json_t *top = json_object();
            for (int i = 0; i < ev->n_top; i++) {
                char *t = token_text(g, ev->top_ids[i]);
                json_object_set_new(top, t, jnum(ev->top_logprobs[i]));
                free(t);
            }
            if (ev->n_top == 0)
                json_object_set_new(top, s, jnum(ev->logprob));
            json_array_append_new(c->lp_top, top);
        }
        json_array_append_new(c->lp_offset, json_integer(c->text_chars));
        c->text_chars += utf8_chars(s, strlen(s));
    }
    free(s);
}

/* OpenAI's clients type system_fingerprint as a string; one build of
 * inferd answers the same for the same request and seed, so one value. */
static const char fingerprint[] = "fp_inferd";

static json_t *lp_json(api_gen *g, api_choice *c)
{
    if (!g->logprobs)
        return json_null();
    if (!c->lp_content && !c->lp_tokens)
        lp_reset(g, c);
    if (g->chat)
        return json_pack("{s:O, s:n}", "content", c->lp_content, "refusal"); /* never refuses */
    return json_pack("{s:O, s:O, s:O, s:O}", "tokens", c->lp_tokens, "token_logprobs",
                     c->lp_token_logprobs, "top_logprobs", c->lp_top, "text_offset",
                     c->lp_offset);
}

/* ---- events -> text ---- */

static const char *finish_name(eng_finish f)
{
    switch (f) {
    case ENG_FINISH_LENGTH: return "length";
    case ENG_FINISH_STOP: return "stop";
    case ENG_FINISH_ABORT: return "abort";
    case ENG_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

/* Bytes at the end of c's text that may be the start of a stop string. */
static size_t stop_holdback(const api_gen *g, const api_choice *c)
{
    size_t avail = c->text.n - c->sent, best = 0;
    for (int i = 0; i < g->n_stop; i++) {
        size_t L = strlen(g->stop[i]);
        size_t k = L - 1 < avail ? L - 1 : avail;
        for (; k > best; k--)
            if (!memcmp(c->text.p + c->text.n - k, g->stop[i], k)) {
                best = k;
                break;
            }
    }
    return best;
}

/* Ends c at the earliest stop string in its unsent text, if any. */
static void match_stop(api_gen *g, api_choice *c)
{
    if (g->n_stop == 0 || c->text.n <= c->sent)
        return;
    const char *base = c->text.p + c->sent;
    size_t n = c->text.n - c->sent, at = (size_t)-1;
    int which = -1;
    for (int i = 0; i < g->n_stop; i++) {
        const char *hit = memmem(base, n, g->stop[i], strlen(g->stop[i]));
        if (hit && (size_t)(hit - base) < at) {
            at = (size_t)(hit - base);
            which = i;
        }
    }
    if (which < 0)
        return;
    size_t cut = c->sent + at + (g->include_stop_str ? strlen(g->stop[which]) : 0);
    c->text.n = cut;
    c->text.p[cut] = 0;
    c->finish = "stop";
    json_decref(c->stop_reason);
    c->stop_reason = json_string(g->stop[which]);
    c->done = 1;
    eng_cancel(c->r);
}

static int is_request_stop_id(const api_gen *g, int32_t t)
{
    for (int i = 0; i < g->s.n_stop_ids; i++)
        if (g->s.stop_ids[i] == t)
            return 1;
    return 0;
}

/* Takes one engine event for c: logprobs, text, stop strings, finish. */
static void choice_event(api_gen *g, api_choice *c, const eng_event *ev)
{
    api_ctx *a = g->a;
    double now = now_seconds();
    if (ev->token >= 0) {
        if (g->t_first == 0) {
            g->t_first = now;
            api_observe(a, &a->ttft, now - g->t_arrival);
        } else if (c->t_last > 0) {
            api_observe(a, &a->itl, now - c->t_last);
        }
        c->t_last = now;
    }
    c->n_cached = ev->num_cached_tokens;
    if (ev->n_generated > c->n_gen)
        c->n_gen = ev->n_generated;
    if (c->done)
        return;
    if (ev->token >= 0) {
        if (g->logprobs)
            lp_add(g, c, ev, 0);
        /* The eos or stop token that ended the request is not text (vLLM
         * leaves it out unless include_stop_str_in_output). */
        int ends = ev->finish == ENG_FINISH_STOP && !g->include_stop_str;
        if (!ends && detok(c, ev->token)) {
            c->finish = "error";
            c->done = 1;
            return;
        }
    }
    if (ev->finish != ENG_RUNNING) {
        detok(c, -1);
        c->finish = finish_name(ev->finish);
        if (ev->finish == ENG_FINISH_STOP && ev->token >= 0 && is_request_stop_id(g, ev->token))
            c->stop_reason = json_integer(ev->token);
    }
    match_stop(g, c);
    if (ev->finish != ENG_RUNNING)
        c->done = 1;
}

/* The bytes of c's text that may be emitted now. */
static size_t emit_limit(const api_gen *g, const api_choice *c)
{
    if (c->done)
        return c->text.n;
    return c->text.n - stop_holdback(g, c);
}

/* Reads whatever events are ready; if none, waits up to timeout_ms on one
 * unfinished choice. Calls fn for each choice that got an event. Returns 1
 * on progress, 0 on timeout, -1 when every choice is done. */
typedef void (*choice_fn)(api_gen *g, api_choice *c, strbuf *out);

static int pump(api_gen *g, int timeout_ms, choice_fn fn, strbuf *out)
{
    int progress = 0, open = 0;
    api_choice *wait_on = NULL;
    for (int i = 0; i < g->n_choices; i++) {
        api_choice *c = &g->ch[i];
        if (c->done)
            continue;
        eng_event ev;
        int got = 0, rc;
        while (!c->done && (rc = eng_next(c->r, &ev, 0)) == 1) {
            choice_event(g, c, &ev);
            got = 1;
        }
        if (!c->done && rc < 0) {   /* finished without a final event */
            c->finish = c->finish ? c->finish : "abort";
            c->done = 1;
            got = 1;
        }
        if (got) {
            progress = 1;
            if (fn)
                fn(g, c, out);
        }
        if (!c->done) {
            open++;
            if (!wait_on)
                wait_on = c;
        }
    }
    if (progress)
        return 1;
    if (!open)
        return -1;
    if (g->waiter)   /* several choices: sleep until any has an event */
        return eng_waiter_wait(g->waiter, timeout_ms);
    eng_event ev;
    int rc = eng_next(wait_on->r, &ev, timeout_ms);
    if (rc == 0)
        return 0;
    if (rc == 1)
        choice_event(g, wait_on, &ev);
    else {
        wait_on->finish = wait_on->finish ? wait_on->finish : "abort";
        wait_on->done = 1;
    }
    if (fn)
        fn(g, wait_on, out);
    return 1;
}

/* ---- usage and metrics ---- */

static json_t *usage_json(api_gen *g)
{
    long prompt = 0, gen = 0, cached = 0;
    for (int p = 0; p < g->n_prompts; p++) {
        prompt += g->n_prompt_tok[p];
        if (p * g->n < g->n_choices)
            cached += g->ch[p * g->n].n_cached;
    }
    for (int i = 0; i < g->n_choices; i++)
        gen += g->ch[i].n_gen;
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)prompt,
                     "total_tokens", (json_int_t)(prompt + gen), "completion_tokens",
                     (json_int_t)gen, "prompt_tokens_details", "cached_tokens",
                     (json_int_t)cached);
}

/* Counts the request in the metrics once (end, error or abort). */
static void finalize(api_gen *g)
{
    if (g->finalized)
        return;
    g->finalized = 1;
    api_ctx *a = g->a;
    api_count_request(a, g->t_arrival, g->t_first, now_seconds());
    for (int i = 0; i < g->n_choices; i++) {
        api_choice *c = &g->ch[i];
        int prompt = (i % g->n == 0) ? g->n_prompt_tok[c->prompt_idx] : 0;
        api_count_finish(a, c->finish ? c->finish : "abort", prompt, c->n_gen);
    }
}

/* ---- non-streaming ---- */

static void echo_prompt_logprobs(api_gen *g, api_choice *c)
{
    int n = 0;
    const eng_event *pl = eng_prompt_logprobs(c->r, &n);
    json_t *keep_t = c->lp_tokens, *keep_l = c->lp_token_logprobs, *keep_top = c->lp_top,
           *keep_o = c->lp_offset;
    c->lp_tokens = c->lp_token_logprobs = c->lp_top = c->lp_offset = NULL;
    lp_reset(g, c);
    long gen_chars = c->text_chars;
    c->text_chars = 0;
    for (int i = 0; i < n; i++)
        lp_add(g, c, &pl[i], i == 0);
    c->text_chars = gen_chars;
    if (keep_t) {
        json_array_extend(c->lp_tokens, keep_t);
        json_array_extend(c->lp_token_logprobs, keep_l);
        json_array_extend(c->lp_top, keep_top);
        json_array_extend(c->lp_offset, keep_o);
    }
    json_decref(keep_t);
    json_decref(keep_l);
    json_decref(keep_top);
    json_decref(keep_o);
}

static json_t *choice_json(api_gen *g, api_choice *c)
{
    json_t *stop = c->stop_reason ? json_incref(c->stop_reason) : json_null();
    const char *fin = c->finish ? c->finish : "abort";
    if (g->chat)
        return json_pack("{s:i, s:{s:s, s:s%, s:n}, s:o, s:s, s:o}", "index", c->index,
                         "message", "role", "assistant", "content", c->text.p ? c->text.p : "",
                         c->text.n, "refusal", "logprobs", lp_json(g, c), "finish_reason", fin,
                         "stop_reason", stop);
    strbuf t = {0};
    if (g->echo && g->prompt_text[c->prompt_idx]) {
        sb_puts(&t, g->prompt_text[c->prompt_idx]);
        if (g->logprobs)
            echo_prompt_logprobs(g, c);
    }
    if (c->text.n)
        sb_append(&t, c->text.p, c->text.n);
    json_t *j = json_pack("{s:i, s:s%, s:o, s:s, s:o}", "index", c->index, "text",
                          t.p ? t.p : "", t.n, "logprobs", lp_json(g, c), "finish_reason",
                          fin, "stop_reason", stop);
    sb_free(&t);
    return j;
}

/* Runs a non-streaming request to its end and writes the JSON body. */
static void run_blocking(api_gen *g, api_alive_fn alive, void *cls, api_response *r)
{
    double next_check = now_seconds() + 0.1;
    while (pump(g, 100, NULL, NULL) >= 0) {
        /* By the clock, not on timeouts only: a busy request may never time out. */
        if (!alive || now_seconds() < next_check)
            continue;
        next_check = now_seconds() + 0.1;
        if (!alive(cls)) {
            for (int i = 0; i < g->n_choices; i++)
                eng_cancel(g->ch[i].r);
            finalize(g);
            r->status = 499;   /* nginx's "client closed request", for the log */
            return;
        }
    }
    finalize(g);
    for (int i = 0; i < g->n_choices; i++)
        if (g->ch[i].finish && !strcmp(g->ch[i].finish, "error")) {
            api_set_error(r, 500, NULL, model_failed);
            return;
        }
    json_t *choices = json_array();
    for (int i = 0; i < g->n_choices; i++)
        json_array_append_new(choices, choice_json(g, &g->ch[i]));
    json_t *usage = usage_json(g);
    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:o, s:O, s:s}", "id", g->id, "object",
                          g->chat ? "chat.completion" : "text_completion", "created",
                          (json_int_t)g->created, "model", g->a->model_name, "choices",
                          choices, "usage", usage, "system_fingerprint", fingerprint);
    r->prompt_tokens = (int)json_integer_value(json_object_get(usage, "prompt_tokens"));
    r->completion_tokens = (int)json_integer_value(json_object_get(usage, "completion_tokens"));
    json_decref(usage);
    api_set_json(r, 200, j);
}

/* ---- streaming ---- */

static json_t *chunk(api_gen *g, json_t *choice)
{
    json_t *choices = json_array();
    if (choice)
        json_array_append_new(choices, choice);
    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:o, s:s}", "id", g->id, "object",
                          g->chat ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)g->created, "model", g->a->model_name, "choices",
                          choices, "system_fingerprint", fingerprint);
    if (g->include_usage)
        json_object_set_new(j, "usage", json_null());
    return j;
}

/* Writes c's new text (and logprobs) as one chunk, then its finish. Called
 * when c got tokens: a running choice gets a chunk for them even when their
 * text is held back (an incomplete UTF-8 character, a possible stop string),
 * so a client sees every step's progress, as with OpenAI's one chunk a token. */
static void stream_choice(api_gen *g, api_choice *c, strbuf *out)
{
    if (c->finish_sent)
        return;
    size_t lim = emit_limit(g, c);
    int has_lp = g->logprobs && c->lp_content && json_array_size(c->lp_content) > 0;
    has_lp = has_lp || (g->logprobs && c->lp_tokens && json_array_size(c->lp_tokens) > 0);
    int last = c->done && !g->chat;   /* completions: the finish rides on the text */
    if (lim > c->sent || has_lp || last || !c->done) {
        const char *t = c->text.p ? c->text.p + c->sent : "";
        size_t n = lim - c->sent;
        json_t *fin = last ? json_string(c->finish ? c->finish : "abort") : json_null();
        json_t *stop = last && c->stop_reason ? json_incref(c->stop_reason) : json_null();
        json_t *ch;
        if (g->chat)
            ch = json_pack("{s:i, s:{s:s%}, s:o, s:o}", "index", c->index, "delta", "content",
                           t, n, "logprobs", lp_json(g, c), "finish_reason", fin);
        else
            ch = json_pack("{s:i, s:s%, s:o, s:o, s:o}", "index", c->index, "text", t, n,
                           "logprobs", lp_json(g, c), "finish_reason", fin, "stop_reason",
                           stop);
        if (g->chat)
            json_decref(stop);
        api_sse_json(out, chunk(g, ch));
        c->sent = lim;
        if (g->logprobs)
            lp_reset(g, c);
    }
    if (c->done && g->chat) {
        json_t *stop = c->stop_reason ? json_incref(c->stop_reason) : json_null();
        api_sse_json(out, chunk(g, json_pack("{s:i, s:{}, s:n, s:s, s:o}", "index", c->index,
                                             "delta", "logprobs", "finish_reason",
                                             c->finish ? c->finish : "abort", "stop_reason",
                                             stop)));
    }
    if (c->done)
        c->finish_sent = 1;
}

static void stream_start(api_gen *g, strbuf *out)
{
    for (int i = 0; i < g->n_choices; i++) {
        api_choice *c = &g->ch[i];
        if (g->chat) {
            api_sse_json(out, chunk(g, json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index",
                                                 c->index, "delta", "role", "assistant",
                                                 "content", "", "logprobs", "finish_reason")));
        } else if (g->echo && g->prompt_text[c->prompt_idx]) {
            api_sse_json(out, chunk(g, json_pack("{s:i, s:s, s:n, s:n}", "index", c->index,
                                                 "text", g->prompt_text[c->prompt_idx],
                                                 "logprobs", "finish_reason")));
        }
        c->role_sent = 1;
    }
}

/* api_stream_next for g: the role (or echo) chunks first, then what the
 * engine sent, and at the end an error event if a choice failed, the usage
 * chunk when asked for and [DONE]. */
static int stream_next(api_gen *g, strbuf *out, int timeout_ms)
{
    if (g->done_sent)
        return -1;
    size_t before = out->n;
    if (g->n_choices > 0 && !g->ch[0].role_sent)
        stream_start(g, out);
    int rc = pump(g, timeout_ms, stream_choice, out);
    if (rc < 0) {
        finalize(g);
        for (int i = 0; i < g->n_choices; i++)
            if (g->ch[i].finish && !strcmp(g->ch[i].finish, "error") && !g->usage_sent) {
                char *err = api_error_body(500, NULL, "%s", model_failed);
                api_sse_data(out, err);
                free(err);
                break;
            }
        if (g->include_usage && !g->usage_sent) {
            json_t *j = chunk(g, NULL);
            json_object_set_new(j, "usage", usage_json(g));
            api_sse_json(out, j);
        }
        g->usage_sent = 1;
        api_sse_data(out, "[DONE]");
        g->done_sent = 1;
    }
    return out->n > before ? 1 : (rc < 0 ? -1 : 0);
}

static void usage_counts(const api_gen *g, int *prompt, int *gen)
{
    long p = 0, n = 0;
    for (int i = 0; i < g->n_prompts; i++)
        p += g->n_prompt_tok[i];
    for (int i = 0; i < g->n_choices; i++)
        n += g->ch[i].n_gen;
    *prompt = (int)p;
    *gen = (int)n;
}

/* ---- the handlers ---- */

struct api_stream {
    api_gen *g;
};

/* POST /v1/chat/completions (chat) and /v1/completions: parse, start, then
 * either hand back a stream or wait for the whole answer. */
static void generation(api_ctx *a, int chat, const api_call *call, api_response *r)
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
    if (api_gen_parse(g, call->body) || start_choices(g)) {
        api_set_error_code(r, g->err_status, g->err_param, g->err_code, g->err_msg);
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
    run_blocking(g, call->alive, call->cls, r);
    api_gen_free(g);
}

void api_on_chat(api_ctx *a, const api_call *c, api_response *r)
{
    generation(a, 1, c, r);
}

void api_on_completions(api_ctx *a, const api_call *c, api_response *r)
{
    generation(a, 0, c, r);
}

int api_stream_next(api_stream *s, strbuf *out, int timeout_ms)
{
    return stream_next(s->g, out, timeout_ms);
}

void api_stream_usage(const api_stream *s, int *prompt_tokens, int *completion_tokens)
{
    usage_counts(s->g, prompt_tokens, completion_tokens);
}

void api_stream_free(api_stream *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->g->n_choices; i++)
        eng_cancel(s->g->ch[i].r);
    finalize(s->g);
    api_gen_free(s->g);
    free(s);
}
