/* inferd bench: a closed-loop load generator for any OpenAI-compatible
 * server (inferd, vLLM, llama-server). N client threads send streaming
 * /v1/completions requests with token-id prompts and ignore_eos, so every
 * engine does the same work, and measure throughput, time to first token,
 * inter-token latency and end-to-end latency from the client's side. */
#include <curl/curl.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "common/common.h"

typedef struct bench_opts {
    const char *url, *model, *api_key, *json_out, *label;
    int concurrency, requests, input_len, output_len, prefix_len;
    int id_lo, id_hi;
    unsigned seed;
} bench_opts;

typedef struct sample {
    double ttft, e2e;
    int out_tokens, prompt_tokens;
    int ok;
} sample;

typedef struct shared {
    const bench_opts *o;
    pthread_mutex_t mu;
    int next;               /* next request index to send */
    sample *samples;
    double *itl;            /* all inter-token gaps */
    size_t n_itl, cap_itl;
    int32_t *prefix;
    char first_error[512];
} shared;

typedef struct stream_state {
    strbuf line;
    double t0, last;
    int chunks, usage_tokens, usage_prompt;
    double *gaps;
    size_t n_gaps, cap_gaps;
    double ttft;
    strbuf body;            /* non-SSE body, for error messages */
} stream_state;

static void on_event(stream_state *s, const char *data)
{
    if (!strcmp(data, "[DONE]"))
        return;
    json_t *j = json_loads(data, 0, NULL);
    if (!j)
        return;
    json_t *usage = json_object_get(j, "usage");
    if (json_is_object(usage)) {
        json_t *ct = json_object_get(usage, "completion_tokens");
        json_t *pt = json_object_get(usage, "prompt_tokens");
        if (json_is_integer(ct))
            s->usage_tokens = (int)json_integer_value(ct);
        if (json_is_integer(pt))
            s->usage_prompt = (int)json_integer_value(pt);
    }
    json_t *choices = json_object_get(j, "choices");
    if (json_is_array(choices) && json_array_size(choices) > 0) {
        double now = now_seconds();
        if (s->chunks == 0)
            s->ttft = now - s->t0;
        else {
            if (s->n_gaps == s->cap_gaps) {
                s->cap_gaps = s->cap_gaps ? 2 * s->cap_gaps : 256;
                s->gaps = realloc(s->gaps, s->cap_gaps * sizeof *s->gaps);
                if (!s->gaps)
                    abort();
            }
            s->gaps[s->n_gaps++] = now - s->last;
        }
        s->last = now;
        s->chunks++;
    }
    json_decref(j);
}

static size_t on_data(char *p, size_t size, size_t n, void *user)
{
    stream_state *s = user;
    size_t len = size * n;
    if (s->body.n < 4096)
        sb_append(&s->body, p, len);
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '\n') {
            sb_putc(&s->line, p[i]);
            continue;
        }
        if (s->line.n && s->line.p[s->line.n - 1] == '\r')
            s->line.p[--s->line.n] = 0;
        if (s->line.n > 5 && !strncmp(s->line.p, "data:", 5))
            on_event(s, s->line.p + (s->line.p[5] == ' ' ? 6 : 5));
        s->line.n = 0;
        if (s->line.p)
            s->line.p[0] = 0;
    }
    return len;
}

static unsigned next_rand(unsigned *st)
{
    *st = *st * 1103515245u + 12345u;
    return *st >> 8;
}

static char *make_body(shared *sh, int idx)
{
    const bench_opts *o = sh->o;
    unsigned st = o->seed * 7919u + (unsigned)idx * 104729u + 1;
    json_t *ids = json_array();
    for (int i = 0; i < o->input_len; i++) {
        int32_t id = i < o->prefix_len
                         ? sh->prefix[i]
                         : o->id_lo + (int32_t)(next_rand(&st) % (unsigned)(o->id_hi - o->id_lo));
        json_array_append_new(ids, json_integer(id));
    }
    json_t *req = json_pack("{s:o,s:i,s:b,s:f,s:b,s:{s:b}}", "prompt", ids, "max_tokens",
                            o->output_len, "ignore_eos", 1, "temperature", 0.0, "stream", 1,
                            "stream_options", "include_usage", 1);
    if (o->model)
        json_object_set_new(req, "model", json_string(o->model));
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return s;
}

static void *worker(void *arg)
{
    shared *sh = arg;
    const bench_opts *o = sh->o;
    CURL *c = curl_easy_init();
    char url[1024];
    snprintf(url, sizeof url, "%s/v1/completions", o->url);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (o->api_key) {
        char auth[600];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", o->api_key);
        hdr = curl_slist_append(hdr, auth);
    }
    for (;;) {
        pthread_mutex_lock(&sh->mu);
        int idx = sh->next < o->requests ? sh->next++ : -1;
        pthread_mutex_unlock(&sh->mu);
        if (idx < 0)
            break;
        char *body = make_body(sh, idx);
        stream_state s;
        memset(&s, 0, sizeof s);
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        s.t0 = now_seconds();
        CURLcode rc = curl_easy_perform(c);
        double end = now_seconds();
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        sample *smp = &sh->samples[idx];
        int tokens = s.usage_tokens ? s.usage_tokens : s.chunks;
        smp->ok = rc == CURLE_OK && status == 200 && s.chunks > 0;
        smp->ttft = s.ttft;
        smp->e2e = end - s.t0;
        smp->out_tokens = tokens;
        smp->prompt_tokens = s.usage_prompt ? s.usage_prompt : o->input_len;
        pthread_mutex_lock(&sh->mu);
        if (!smp->ok && !sh->first_error[0])
            snprintf(sh->first_error, sizeof sh->first_error, "%s (HTTP %ld): %.300s",
                     rc == CURLE_OK ? "bad response" : curl_easy_strerror(rc), status,
                     s.body.p ? s.body.p : "");
        for (size_t i = 0; smp->ok && i < s.n_gaps; i++) {
            if (sh->n_itl == sh->cap_itl) {
                sh->cap_itl = sh->cap_itl ? 2 * sh->cap_itl : 4096;
                sh->itl = realloc(sh->itl, sh->cap_itl * sizeof *sh->itl);
                if (!sh->itl)
                    abort();
            }
            sh->itl[sh->n_itl++] = s.gaps[i];
        }
        pthread_mutex_unlock(&sh->mu);
        free(s.gaps);
        sb_free(&s.line);
        sb_free(&s.body);
        free(body);
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: inferd bench [options]\n\n"
        "Load test an OpenAI-compatible server (inferd, vLLM, llama-server): N concurrent\n"
        "clients in a closed loop send streaming /v1/completions requests with random\n"
        "token-id prompts, temperature 0 and ignore_eos, so every engine does the same work.\n\n"
        "  --url URL            server base URL (default http://127.0.0.1:8000)\n"
        "  --model NAME         model name to send (default: none)\n"
        "  --api-key KEY        bearer token\n"
        "  --concurrency N      clients in flight (default 1)\n"
        "  --requests N         requests in total (default 8)\n"
        "  --input-len N        prompt tokens (default 128)\n"
        "  --output-len N       generated tokens per request (default 128)\n"
        "  --prefix-len N       leading prompt tokens shared by all requests (default 0)\n"
        "  --id-range LO,HI     prompt token ids are drawn from [LO, HI) (default 1000,30000)\n"
        "  --seed N             prompt seed (default 0); request i's prompt depends on\n"
        "                       (seed, i) only: runs against one server need different\n"
        "                       seeds, or its prefix cache serves the repeats\n"
        "  --label TEXT         a name for this run in the JSON output\n"
        "  --json-out FILE      append one JSON line with the results to FILE\n"
        "  -h, --help           this text\n");
}

int cli_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},         {"model", required_argument, NULL, 'm'},
        {"api-key", required_argument, NULL, 'k'},     {"concurrency", required_argument, NULL, 'c'},
        {"requests", required_argument, NULL, 'r'},    {"input-len", required_argument, NULL, 'i'},
        {"output-len", required_argument, NULL, 'o'},  {"prefix-len", required_argument, NULL, 'p'},
        {"id-range", required_argument, NULL, 'R'},    {"seed", required_argument, NULL, 's'},
        {"label", required_argument, NULL, 'l'},       {"json-out", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},              {NULL, 0, NULL, 0},
    };
    bench_opts o = {.url = "http://127.0.0.1:8000", .concurrency = 1, .requests = 8,
                    .input_len = 128, .output_len = 128, .id_lo = 1000, .id_hi = 30000};
    long v;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'u': o.url = optarg; break;
        case 'm': o.model = optarg; break;
        case 'k': o.api_key = optarg; break;
        case 'l': o.label = optarg; break;
        case 'j': o.json_out = optarg; break;
        case 'c':
            if (cli_parse_int("--concurrency", optarg, 1, 4096, &v)) return 2;
            o.concurrency = (int)v;
            break;
        case 'r':
            if (cli_parse_int("--requests", optarg, 1, 1000000, &v)) return 2;
            o.requests = (int)v;
            break;
        case 'i':
            if (cli_parse_int("--input-len", optarg, 1, 1 << 20, &v)) return 2;
            o.input_len = (int)v;
            break;
        case 'o':
            if (cli_parse_int("--output-len", optarg, 1, 1 << 20, &v)) return 2;
            o.output_len = (int)v;
            break;
        case 'p':
            if (cli_parse_int("--prefix-len", optarg, 0, 1 << 20, &v)) return 2;
            o.prefix_len = (int)v;
            break;
        case 's':
            if (cli_parse_int("--seed", optarg, 0, 1L << 31, &v)) return 2;
            o.seed = (unsigned)v;
            break;
        case 'R':
            if (sscanf(optarg, "%d,%d", &o.id_lo, &o.id_hi) != 2 || o.id_lo < 0 ||
                o.id_hi <= o.id_lo) {
                fprintf(stderr, "inferd bench: --id-range expects LO,HI with 0 <= LO < HI\n");
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (o.prefix_len > o.input_len) {
        fprintf(stderr, "inferd bench: --prefix-len (%d) exceeds --input-len (%d)\n",
                o.prefix_len, o.input_len);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    shared sh;
    memset(&sh, 0, sizeof sh);
    sh.o = &o;
    pthread_mutex_init(&sh.mu, NULL);
    sh.samples = calloc((size_t)o.requests, sizeof *sh.samples);
    sh.prefix = calloc((size_t)o.prefix_len + 1, sizeof *sh.prefix);
    unsigned st = o.seed ^ 0x9e3779b9u;
    for (int i = 0; i < o.prefix_len; i++)
        sh.prefix[i] = o.id_lo + (int32_t)(next_rand(&st) % (unsigned)(o.id_hi - o.id_lo));
    int nt = o.concurrency < o.requests ? o.concurrency : o.requests;
    pthread_t *th = calloc((size_t)nt, sizeof *th);
    double t0 = now_seconds();
    for (int i = 0; i < nt; i++)
        pthread_create(&th[i], NULL, worker, &sh);
    for (int i = 0; i < nt; i++)
        pthread_join(th[i], NULL);
    double wall = now_seconds() - t0;

    int ok = 0;
    long out_tok = 0, in_tok = 0;
    double *ttft = calloc((size_t)o.requests, sizeof *ttft);
    double *e2e = calloc((size_t)o.requests, sizeof *e2e);
    /* a stream's decode rate, its first token to its last: what llama-bench's
     * tg figure counts (no prompt, no first token) */
    double *stream = calloc((size_t)o.requests, sizeof *stream);
    size_t n_stream = 0;
    for (int i = 0; i < o.requests; i++)
        if (sh.samples[i].ok) {
            const sample *sm = &sh.samples[i];
            ttft[ok] = sm->ttft;
            e2e[ok] = sm->e2e;
            out_tok += sm->out_tokens;
            in_tok += sm->prompt_tokens;
            if (sm->out_tokens > 1 && sm->e2e > sm->ttft)
                stream[n_stream++] = (sm->out_tokens - 1) / (sm->e2e - sm->ttft);
            ok++;
        }
    json_t *r = json_pack(
        "{s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f}",
        "label", o.label ? o.label : "", "url", o.url, "concurrency", o.concurrency,
        "requests", o.requests, "ok", ok, "input_len", o.input_len, "output_len",
        o.output_len, "prefix_len", o.prefix_len, "output_tokens", (int)out_tok,
        "duration_s", wall, "output_tok_s", out_tok / wall, "input_tok_s", in_tok / wall,
        "ttft_p50_ms", 1e3 * pct(ttft, (size_t)ok, 50), "ttft_p99_ms",
        1e3 * pct(ttft, (size_t)ok, 99), "itl_p50_ms", 1e3 * pct(sh.itl, sh.n_itl, 50),
        "itl_p99_ms", 1e3 * pct(sh.itl, sh.n_itl, 99), "e2e_p50_ms",
        1e3 * pct(e2e, (size_t)ok, 50), "e2e_p99_ms", 1e3 * pct(e2e, (size_t)ok, 99));
    json_object_set_new(r, "stream_tok_s_p50", json_real(pct(stream, n_stream, 50)));
    printf("requests %d/%d ok in %.2f s; output %.1f tok/s, input %.1f tok/s\n"
           "TTFT p50 %.1f ms p99 %.1f ms; ITL p50 %.1f ms p99 %.1f ms; E2E p50 %.1f ms; "
           "per stream p50 %.1f tok/s\n",
           ok, o.requests, wall, out_tok / wall, in_tok / wall,
           json_real_value(json_object_get(r, "ttft_p50_ms")),
           json_real_value(json_object_get(r, "ttft_p99_ms")),
           json_real_value(json_object_get(r, "itl_p50_ms")),
           json_real_value(json_object_get(r, "itl_p99_ms")),
           json_real_value(json_object_get(r, "e2e_p50_ms")),
           json_real_value(json_object_get(r, "stream_tok_s_p50")));
    if (sh.first_error[0])
        fprintf(stderr, "inferd bench: first failed request: %s\n", sh.first_error);
    int status = ok == o.requests ? 0 : 1;
    if (o.json_out) {
        FILE *f = fopen(o.json_out, "a");
        if (!f) {
            fprintf(stderr, "inferd bench: cannot write %s\n", o.json_out);
            status = 1;
        } else {
            char *line = json_dumps(r, JSON_COMPACT | JSON_REAL_PRECISION(6));
            fprintf(f, "%s\n", line);
            free(line);
            fclose(f);
        }
    }
    json_decref(r);
    free(ttft);
    free(e2e);
    free(stream);
    free(th);
    free(sh.samples);
    free(sh.prefix);
    free(sh.itl);
    pthread_mutex_destroy(&sh.mu);
    curl_global_cleanup();
    return status;
}
