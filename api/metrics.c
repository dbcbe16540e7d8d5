/* api/metrics.c: the bottom layer of api/ — the Prometheus metrics. The
 * handlers count (latencies, tokens, finish reasons, encoder passes), server/
 * counts HTTP statuses, and GET /metrics renders them here together with the
 * engine's statistics, named as vLLM names them, under the prefix inferd:
 * and again under vllm: for what vLLM serves. Calls nothing else of api/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/metrics.h"

/* Bucket bounds as vLLM uses them, so dashboards built for vLLM fit (its
 * request-latency bounds serve e2e and decode time alike, as in vLLM). */
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
           hist_init(&a->decode, e2e_bounds, NB(e2e_bounds)) ||
           hist_init(&a->enc_batch, enc_batch_bounds, NB(enc_batch_bounds)) ? -1 : 0;
}

void api_metrics_free(api_ctx *a)
{
    free(a->ttft.counts);
    free(a->itl.counts);
    free(a->e2e.counts);
    free(a->decode.counts);
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

void api_count_request(api_ctx *a, double t_arrival, double t_first, double t_end)
{
    api_observe(a, &a->e2e, t_end - t_arrival);
    if (t_first > 0)
        api_observe(a, &a->decode, t_end - t_first);
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

/* One histogram, named pfx + name. */
static void hist_text(strbuf *o, const char *pfx, const char *name, const char *help,
                      const char *label, const api_hist *h)
{
    sb_printf(o, "# HELP %s%s %s\n# TYPE %s%s histogram\n", pfx, name, help, pfx, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        sb_printf(o, "%s%s_bucket{%s,le=\"%g\"} %llu\n", pfx, name, label, h->bounds[i],
                  (unsigned long long)cum);
    }
    sb_printf(o, "%s%s_bucket{%s,le=\"+Inf\"} %llu\n", pfx, name, label,
              (unsigned long long)h->count);
    sb_printf(o, "%s%s_sum{%s} %.9g\n%s%s_count{%s} %llu\n", pfx, name, label, h->sum, pfx,
              name, label, (unsigned long long)h->count);
}

/* One gauge or counter of one sample, named pfx + name. */
static void metric(strbuf *o, const char *pfx, const char *name, const char *type,
                   const char *help, const char *label, double v)
{
    sb_printf(o, "# HELP %s%s %s\n# TYPE %s%s %s\n%s%s{%s} %.17g\n", pfx, name, help, pfx,
              name, type, pfx, name, label, v);
}

/* The families served under both prefixes, inferd: and vllm:, with the
 * same names after the prefix (a->mu held). */
static void shared_families(api_ctx *a, strbuf *o, const char *pfx, const eng_stats *st,
                            const char *label)
{
    metric(o, pfx, "num_requests_running", "gauge", "Requests in the running batch.", label,
           st->running);
    metric(o, pfx, "num_requests_waiting", "gauge", "Requests waiting to be scheduled.",
           label, st->waiting);
    metric(o, pfx, "kv_cache_usage_perc", "gauge",
           "Fraction of KV-cache blocks in use (1 = full).", label,
           st->kv_blocks_total ? (double)st->kv_blocks_used / st->kv_blocks_total : 0);
    metric(o, pfx, "prefix_cache_queries_total", "counter",
           "Prompt tokens looked up in the prefix cache.", label, (double)st->prefix_queries);
    metric(o, pfx, "prefix_cache_hits_total", "counter",
           "Prompt tokens served from the prefix cache.", label, (double)st->prefix_hits);
    metric(o, pfx, "num_preemptions_total", "counter",
           "Requests preempted (KV blocks freed, recomputed later).", label,
           (double)st->preemptions);
    metric(o, pfx, "prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
           label, (double)a->prompt_tokens);
    metric(o, pfx, "generation_tokens_total", "counter",
           "Tokens generated for finished requests.", label, (double)a->generation_tokens);
    sb_printf(o, "# HELP %srequest_success_total Finished choices by finish reason.\n"
                 "# TYPE %srequest_success_total counter\n", pfx, pfx);
    const char *names[] = {"stop", "length", "abort", "error"};
    uint64_t vals[] = {a->finished_stop, a->finished_length, a->finished_abort,
                       a->finished_error};
    for (int i = 0; i < 4; i++)
        sb_printf(o, "%srequest_success_total{%s,finished_reason=\"%s\"} %llu\n", pfx, label,
                  names[i], (unsigned long long)vals[i]);
    hist_text(o, pfx, "time_to_first_token_seconds", "Time to first token.", label, &a->ttft);
    hist_text(o, pfx, "inter_token_latency_seconds", "Time between tokens of a choice.",
              label, &a->itl);
    hist_text(o, pfx, "e2e_request_latency_seconds", "Request latency, arrival to end.",
              label, &a->e2e);
    hist_text(o, pfx, "request_decode_time_seconds",
              "Time from a request's first token to its end.", label, &a->decode);
}

/* What only vLLM's names have: the old names dashboards still read
 * (gpu_cache_usage_perc, time_per_output_token_seconds, kept by vLLM as
 * aliases of kv_cache_usage_perc and inter_token_latency_seconds) and the
 * cache configuration as an info gauge (a->mu held). The engine's block size
 * is its default: serve does not change it. */
static void vllm_only_families(api_ctx *a, strbuf *o, const eng_stats *st, const char *label)
{
    metric(o, "vllm:", "gpu_cache_usage_perc", "gauge",
           "KV-cache usage, 1 = full (the older name of vllm:kv_cache_usage_perc).", label,
           st->kv_blocks_total ? (double)st->kv_blocks_used / st->kv_blocks_total : 0);
    hist_text(o, "vllm:", "time_per_output_token_seconds",
              "Time per output token (the older name of vllm:inter_token_latency_seconds).",
              label, &a->itl);
    eng_config ec;
    eng_config_defaults(&ec);
    sb_printf(o, "# HELP vllm:cache_config_info Information of the KV-cache configuration.\n"
                 "# TYPE vllm:cache_config_info gauge\n"
                 "vllm:cache_config_info{block_size=\"%d\",num_gpu_blocks=\"%d\"} 1\n",
              ec.block_size, st->kv_blocks_total);
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
    metric(o, "inferd:", "kv_cache_blocks_total", "gauge", "KV-cache blocks in the pool.",
           label, st.kv_blocks_total);
    metric(o, "inferd:", "kv_cache_blocks_used", "gauge", "KV-cache blocks held by requests.",
           label, st.kv_blocks_used);
    metric(o, "inferd:", "engine_steps_total", "counter", "Forward passes run.", label,
           (double)st.steps);
    metric(o, "inferd:", "engine_schedule_seconds_total", "counter",
           "Engine-thread time choosing batches and building their inputs.", label,
           st.schedule_seconds);
    metric(o, "inferd:", "engine_forward_seconds_total", "counter",
           "Engine-thread time in forward passes and sampling, results back.", label,
           st.forward_seconds);
    metric(o, "inferd:", "engine_emit_seconds_total", "counter",
           "Engine-thread time handing sampled tokens to requests.", label, st.emit_seconds);
    metric(o, "inferd:", "sampler_full_row_fallbacks_total", "counter",
           "Tokens sampled from their whole logits row on the host instead of the "
           "device's candidates.", label, (double)st.sampler_full_row_fallbacks);
    pthread_mutex_lock(&a->mu);
    sb_printf(o, "# HELP inferd:http_requests_total HTTP requests answered, by status "
                  "class.\n# TYPE inferd:http_requests_total counter\n");
    for (int i = 1; i < 6; i++)
        sb_printf(o, "inferd:http_requests_total{%s,status=\"%dxx\"} %llu\n", label, i,
                  (unsigned long long)a->http_by_class[i]);
    /* vLLM's names by default, beside inferd's: what vLLM's users point
     * dashboards, KEDA scalers and routers at works unchanged. */
    shared_families(a, o, "inferd:", &st, label);
    shared_families(a, o, "vllm:", &st, label);
    vllm_only_families(a, o, &st, label);
    if (a->enc) {
        encoder_stats(a);
        hist_text(o, "inferd:", "encoder_batch_size", "Requests sharing one encoder forward "
                  "pass.", label, &a->enc_batch);
        metric(o, "inferd:", "encoder_tokens_total", "counter",
               "Tokens through encoder forward passes.", label, (double)a->enc_tokens);
    }
    pthread_mutex_unlock(&a->mu);
}
