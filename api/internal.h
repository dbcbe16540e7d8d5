/* api/internal.h: the handlers of api/ — what the route table in api.c
 * points at — and the library they stand on. The layers, top to bottom; a
 * file calls only into the layers below its own:
 *
 *   routes    api.c         method + path -> handler; the context's life
 *   handlers  generate.c    POST /v1/chat/completions, /v1/completions
 *             (request.c    their JSON body -> api_gen, see api/gen.h)
 *             tokenize.c    POST /tokenize, /detokenize
 *             embed.c       POST /v1/embeddings, /v1/score, /v1/rerank, /classify
 *             info.c        GET /v1/models, /v1/models/{id}, /health, /metrics
 *   library   response.c    JSON and SSE bodies, errors (api/response.h)
 *             metrics.c     counters, histograms, Prometheus (api/metrics.h)
 *
 * The library's headers do not include this one, so they cannot reach a
 * handler. */
#ifndef INFERD_API_INTERNAL_H
#define INFERD_API_INTERNAL_H

#include <jansson.h>

#include "api/context.h"
#include "api/metrics.h"
#include "api/response.h"

/* One request as the routes hand it to its handler. */
typedef struct api_call {
    const char *path;
    json_t *body;              /* POST: the body, a JSON object; GET: NULL */
    api_alive_fn alive;        /* a long wait polls it; a dead client cancels */
    void *cls;
} api_call;

/* Fills r (which the routes zeroed, content type JSON); never fails: errors
 * are responses. */
typedef void (*api_handler)(api_ctx *a, const api_call *c, api_response *r);

/* generate.c */
void api_on_chat(api_ctx *a, const api_call *c, api_response *r);
void api_on_completions(api_ctx *a, const api_call *c, api_response *r);

/* tokenize.c */
void api_on_tokenize(api_ctx *a, const api_call *c, api_response *r);
void api_on_detokenize(api_ctx *a, const api_call *c, api_response *r);

/* info.c */
void api_on_models(api_ctx *a, const api_call *c, api_response *r);
/* GET /v1/models/{id}: a route by prefix, the rest of the path is the id */
#define API_MODEL_PREFIX "/v1/models/"
void api_on_model(api_ctx *a, const api_call *c, api_response *r);
void api_on_health(api_ctx *a, const api_call *c, api_response *r);
void api_on_metrics(api_ctx *a, const api_call *c, api_response *r);

/* embed.c: /v1/embeddings, /v1/score, /v1/rerank, /classify (path picks) */
void api_encoder_route(api_ctx *a, const char *path, json_t *body, api_response *r);

#endif
