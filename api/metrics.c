/* api/metrics.c: the bottom layer of api/ — the Prometheus metrics. The
 * handlers count (latencies, tokens, finish reasons, encoder passes), server/
 * counts HTTP statuses, and GET /metrics renders them here together with the
 * engine's statistics, named as vLLM names them (prefix inferd:). Calls
 * nothing else of api/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/metrics.h"

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

int api_metrics_init(api_ctx *a)
{
    pthread_mutex_init(&a->mu, NULL);
    return hist_init(&a->ttft, ttft_bounds, NB(ttft_bounds)) ||
           hist_init(&a->itl, itl_bounds, NB(itl_bounds)) ||
           hist_init(&a->e2e, e2e_bounds, NB(e2e_bounds)) ||
           hist_init(&a->enc_batch, enc_batch_bounds, NB(enc_batch_bounds)) ? -1 : 0;
}

void api_metrics_free(api_ctx *a)
{
    free(a->ttft.counts);
    free(a->itl.counts);
    free(a->e2e.counts);
    free(a->enc_batch.counts);
    pthread_mutex_destroy(&a->mu);
}

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

/* The encoder engine's counts into enc_batch and enc_tokens (a->mu held).
 * The engine counts passes by their exact number of requests up to
 * ENG_ENC_STATS_JOBS, the largest bound here; larger ones land in +Inf. */
static void encoder_stats(api_ctx *a)
{
    eng_encoder_stats st;
    eng_encoder_get_stats(a->encoder, &st);
    api_hist *h = &a->enc_batch;
    memset(h->counts, 0, (size_t)h->n_bounds * sizeof *h->counts);
    for (int k = 1; k <= ENG_ENC_STATS_JOBS; k++)
        for (int i = 0; i < h->n_bounds; i++)
            if (k <= h->bounds[i]) {
                h->counts[i] += st.passes_by_jobs[k - 1];
                break;
            }
    h->count = st.passes;
    h->sum = (double)st.requests;
    a->enc_tokens = st.tokens;
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

void api_metrics_text(api_ctx *a, strbuf *o)
{
    eng_stats st;
    memset(&st, 0, sizeof st);
    if (a->eng)
        eng_get_stats(a->eng, &st);
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
    metric(o, "inferd:num_requests_running", "gauge",
           "Requests in the running batch.", label, st.running);
    metric(o, "inferd:num_requests_waiting", "gauge",
           "Requests waiting to be scheduled.", label, st.waiting);
    metric(o, "inferd:kv_cache_usage_perc", "gauge",
           "Fraction of KV-cache blocks in use (1 = full).", label,
           st.kv_blocks_total ? (double)st.kv_blocks_used / st.kv_blocks_total : 0);
    metric(o, "inferd:kv_cache_blocks_total", "gauge", "KV-cache blocks in the pool.",
           label, st.kv_blocks_total);
    metric(o, "inferd:kv_cache_blocks_used", "gauge", "KV-cache blocks held by requests.",
           label, st.kv_blocks_used);
    metric(o, "inferd:prefix_cache_queries_total", "counter",
           "Prompt tokens looked up in the prefix cache.", label, (double)st.prefix_queries);
    metric(o, "inferd:prefix_cache_hits_total", "counter",
           "Prompt tokens served from the prefix cache.", label, (double)st.prefix_hits);
    metric(o, "inferd:num_preemptions_total", "counter",
           "Requests preempted (KV blocks freed, recomputed later).", label,
           (double)st.preemptions);
    metric(o, "inferd:engine_steps_total", "counter", "Forward passes run.", label,
           (double)st.steps);
    metric(o, "inferd:engine_schedule_seconds_total", "counter",
           "Engine-thread time choosing batches and building their inputs.", label,
           st.schedule_seconds);
    metric(o, "inferd:engine_forward_seconds_total", "counter",
           "Engine-thread time in forward passes and sampling, results back.", label,
           st.forward_seconds);
    metric(o, "inferd:engine_emit_seconds_total", "counter",
           "Engine-thread time handing sampled tokens to requests.", label, st.emit_seconds);
    metric(o, "inferd:sampler_full_row_fallbacks_total", "counter",
           "Tokens sampled from their whole logits row on the host instead of the "
           "device's candidates.", label, (double)st.sampler_full_row_fallbacks);
    pthread_mutex_lock(&a->mu);
    metric(o, "inferd:prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
           label, (double)a->prompt_tokens);
    metric(o, "inferd:generation_tokens_total", "counter",
           "Tokens generated for finished requests.", label, (double)a->generation_tokens);
    sb_printf(o, "# HELP inferd:request_success_total Finished choices by finish reason.\n"
                  "# TYPE inferd:request_success_total counter\n");
    const char *names[] = {"stop", "length", "abort", "error"};
    uint64_t vals[] = {a->finished_stop, a->finished_length, a->finished_abort,
                       a->finished_error};
    for (int i = 0; i < 4; i++)
        sb_printf(o, "inferd:request_success_total{%s,finished_reason=\"%s\"} %llu\n", label,
                  names[i], (unsigned long long)vals[i]);
    sb_printf(o, "# HELP inferd:http_requests_total HTTP requests answered, by status "
                  "class.\n# TYPE inferd:http_requests_total counter\n");
    for (int i = 1; i < 6; i++)
        sb_printf(o, "inferd:http_requests_total{%s,status=\"%dxx\"} %llu\n", label, i,
                  (unsigned long long)a->http_by_class[i]);
    hist_text(o, "inferd:time_to_first_token_seconds", "Time to first token.", label,
              &a->ttft);
    hist_text(o, "inferd:inter_token_latency_seconds", "Time between tokens of a choice.",
              label, &a->itl);
    hist_text(o, "inferd:e2e_request_latency_seconds", "Request latency, arrival to end.",
              label, &a->e2e);
    if (a->enc) {
        encoder_stats(a);
        hist_text(o, "inferd:encoder_batch_size", "Requests sharing one encoder forward "
                  "pass.", label, &a->enc_batch);
        metric(o, "inferd:encoder_tokens_total", "counter",
               "Tokens through encoder forward passes.", label, (double)a->enc_tokens);
    }
    pthread_mutex_unlock(&a->mu);
}
