/* api/info.c: the GET endpoints that describe the server instead of running
 * the model: /v1/models (the one model served, with its context length as
 * vLLM reports it) and /v1/models/{id} (it alone), /health (200 as soon as the api context exists; server/
 * answers 503 itself while the model loads) and /metrics (Prometheus text
 * from metrics.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"

static json_t *model_json(const api_ctx *a)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:n, s:i}", "id", a->model_name, "object",
                     "model", "created", (json_int_t)a->created, "owned_by", "inferd", "root",
                     a->model_root, "parent", "max_model_len", a->max_model_len);
}

void api_on_models(api_ctx *a, const api_call *c, api_response *r)
{
    api_set_json(r, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_json(a)));
}

void api_on_model(api_ctx *a, const api_call *c, api_response *r)
{
    /* the rest of the path is the id, '/'s included ("Qwen/Qwen3-8B") */
    const char *id = c->path + strlen(API_MODEL_PREFIX);
    if (strcmp(id, a->model_name)) {
        char msg[300];
        snprintf(msg, sizeof msg, "The model `%.200s` does not exist.", id);
        api_set_error(r, 404, "model", msg);
        return;
    }
    api_set_json(r, 200, model_json(a));
}

void api_on_health(api_ctx *a, const api_call *c, api_response *r)
{
    r->status = 200;
    r->body = strdup("");
}

void api_on_metrics(api_ctx *a, const api_call *c, api_response *r)
{
    strbuf o = {0};
    api_metrics_text(a, &o);
    size_t n = o.n;
    char *text = sb_steal(&o);
    if (!text) {
        api_set_error(r, 500, NULL, "out of memory rendering the metrics");
        return;
    }
    r->status = 200;
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
    r->len = n;
    r->body = text;
}
