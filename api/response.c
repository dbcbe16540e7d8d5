/* api/response.c: the bottom layer of api/ — answers as bytes: JSON bodies,
 * SSE frames, OpenAI error bodies, and the checks every POST shares (the
 * body is a JSON object; "model" names the served model). Every handler
 * writes through here, so one request's errors look like another's; it knows
 * no endpoint and calls nothing else of api/. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/response.h"

char *api_dump(json_t *j)
{
    return j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
}

/* What a client is told when its answer could not be built. */
static const char unbuilt[] = "the server could not build its answer (out of memory?); see "
                              "the server log";

void api_set_json(api_response *r, int status, json_t *j)
{
    char *body = api_dump(j);
    json_decref(j);
    if (!body) {
        /* A NULL j (a json_pack that failed) or an undumpable one: "{}"
         * with the success status would tell the client all went well. */
        fprintf(stderr, "inferd: a %d answer could not be serialised; sent 500 instead\n",
                status);
        api_set_error(r, 500, NULL, unbuilt);
        return;
    }
    r->status = status;
    r->content_type = "application/json";
    r->body = body;
    r->len = strlen(body);
}

/* ---- errors ---- */

/* OpenAI's error body; code NULL: the one status implies. */
static char *error_body(int status, const char *param, const char *code, const char *msg)
{
    const char *type = "invalid_request_error";
    switch (code ? 0 : status) {
    case 401: code = "invalid_api_key"; break;
    case 404: code = param && !strcmp(param, "model") ? "model_not_found" : "not_found"; break;
    case 405: code = "method_not_allowed"; break;
    case 413: code = "request_too_large"; break;
    case 503: code = "overloaded"; break;
    default: break;
    }
    if (status >= 500)
        type = "server_error";
    /* msg may hold bytes of a client's invalid UTF-8; jansson refuses those. */
    json_t *m = json_string(msg);
    if (!m)
        m = json_string("invalid request");
    json_t *j = json_pack("{s:{s:o, s:s, s:o, s:o}}", "error", "message", m, "type", type,
                          "param", param && *param ? json_string(param) : json_null(), "code",
                          code ? json_string(code) : json_null());
    char *s = api_dump(j);
    json_decref(j);
    /* out of memory: a fixed body, still OpenAI's shape */
    return s ? s : strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                          "\"param\":null,\"code\":null}}");
}

char *api_error_body(int status, const char *param, const char *fmt, ...)
{
    char msg[INFERD_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return error_body(status, param, NULL, msg);
}

void api_set_error(api_response *r, int status, const char *param, const char *msg)
{
    api_set_error_code(r, status, param, NULL, msg);
}

void api_set_error_code(api_response *r, int status, const char *param, const char *code,
                        const char *msg)
{
    r->status = status;
    r->content_type = "application/json";
    r->body = error_body(status, param, code, msg);
    r->len = strlen(r->body);
    if (status == 503)
        r->retry_after = 1;
}

/* ---- server-sent events ---- */

void api_sse_data(strbuf *out, const char *data)
{
    sb_puts(out, "data: ");
    sb_puts(out, data);
    sb_puts(out, "\n\n");
}

void api_sse_json(strbuf *out, json_t *j)
{
    char *s = api_dump(j);
    json_decref(j);
    /* mid-stream the status is sent: an error event is what is left */
    if (!s)
        s = api_error_body(500, NULL, "%s", unbuilt);
    api_sse_data(out, s);
    free(s);
}

/* As Python's decode(errors="replace") does, so that our text matches what
 * a Python client of the tokenizer would see. */
void api_append_valid_utf8(strbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = utf8_decode(s + i, n - i, &cp);
        if (k > 0 && cp != 0) {
            sb_append(b, s + i, (size_t)k);
            i += (size_t)k;
        } else {
            sb_puts(b, "\xEF\xBF\xBD");
            i++;
        }
    }
}

/* ---- what every POST shares ---- */

json_t *api_parse_body(const char *body, size_t len, api_response *r)
{
    json_error_t je;
    json_t *b = json_loadb(body ? body : "", len, 0, &je);
    if (!b) {
        char msg[400];
        snprintf(msg, sizeof msg, "the request body is not valid JSON: %s (line %d, column "
                 "%d)", je.text, je.line, je.column);
        api_set_error(r, 400, NULL, msg);
        return NULL;
    }
    if (!json_is_object(b)) {
        json_decref(b);
        api_set_error(r, 400, NULL, "the request body must be a JSON object");
        return NULL;
    }
    return b;
}

int api_check_model(const api_ctx *a, json_t *b, api_response *r)
{
    json_t *m = json_object_get(b, "model");
    if (!m || json_is_null(m))
        return 0;
    if (!json_is_string(m)) {
        api_set_error(r, 400, "model", "'model' must be a string");
        return -1;
    }
    if (strcmp(json_string_value(m), a->model_name)) {
        char msg[300];
        snprintf(msg, sizeof msg, "The model `%.200s` does not exist.", json_string_value(m));
        api_set_error(r, 404, "model", msg);
        return -1;
    }
    return 0;
}

const char *api_unknown_field(json_t *b, const char *const *known)
{
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v) {
        const char *const *l = known;
        while (*l && strcmp(*l, k))
            l++;
        if (!*l)
            return k;
    }
    return NULL;
}
