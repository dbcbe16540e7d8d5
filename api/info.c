/* api/info.c: the GET endpoints that describe the server instead of running
 * the model: /v1/models (the one model served, with its context length as
 * vLLM reports it), /health (200 as soon as the api context exists; server/
 * answers 503 itself while the model loads) and /metrics (Prometheus text
 * from metrics.c). */
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"

void api_on_models(api_ctx *a, const api_call *c, api_response *r)
{
    json_t *m = json_pack("{s:s, s:s, s:I, s:s, s:s, s:n, s:i}", "id", a->model_name, "object",
                          "model", "created", (json_int_t)a->created, "owned_by", "inferd",
                          "root", a->model_root, "parent", "max_model_len", a->max_model_len);
    api_set_json(r, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", m));
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
