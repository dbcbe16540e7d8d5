/* api/metrics.h: the bottom layer of api/ — the Prometheus metrics: the
 * counters and histograms of api_ctx (under its mu), counted by the handlers
 * and rendered for GET /metrics together with the engine's own statistics.
 * Calls nothing else of api/. */
#ifndef INFERD_API_METRICS_H
#define INFERD_API_METRICS_H

#include "api/context.h"

/* Sets up a's metrics (zeroed by the caller); -1 when out of memory, and
 * api_metrics_free must still be called. */
int api_metrics_init(api_ctx *a);
void api_metrics_free(api_ctx *a);

/* Counts v in the histogram h, one of a's. */
void api_observe(api_ctx *a, api_hist *h, double v);
/* Counts a request's end at t_end: its latency from t_arrival and, when it
 * had a first token at t_first (> 0), its decode time. */
void api_count_request(api_ctx *a, double t_arrival, double t_first, double t_end);
/* Counts a finished choice: its finish reason ("stop", "length", "error";
 * anything else is an abort) and its tokens. */
void api_count_finish(api_ctx *a, const char *finish, int prompt_tokens, int gen_tokens);
/* (api_count_http, for server/, is in api.h.) */

/* Appends every metric in Prometheus' text format 0.0.4. */
void api_metrics_text(api_ctx *a, strbuf *o);

#endif
