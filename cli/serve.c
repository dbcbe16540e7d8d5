/* inferd serve: the OpenAI-compatible server. It listens first (so /health
 * answers 503 while the model loads), loads the model, tokenizer and chat
 * template, starts the engine, and serves until SIGINT, SIGTERM or SIGHUP;
 * then it stops accepting, lets requests in flight finish
 * (--shutdown-timeout, cut short by a second signal) and exits 0. SIGHUP
 * (a closed terminal, a supervisor) drains like SIGTERM: there is no
 * configuration to reload, and uvicorn, so vLLM, leaves it at its default,
 * which kills at once and cuts every stream. Flag names are vLLM's where
 * vLLM has the flag. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "api/api.h"
#include "cli/cli.h"
#include "engine/engine.h"
#include "hub/hub.h"
#include "model/model.h"
#include "server/server.h"

static void serve_usage(FILE *f)
{
    fprintf(f,
        "usage: inferd serve MODEL [options]\n\n"
        "MODEL is a model folder, or a Hugging Face / ModelScope repo id (org/name)\n"
        "found in the local cache or pulled first (see `inferd pull --help`).\n\n"
        "Serves a Hugging Face model folder behind the OpenAI API:\n"
        "POST /v1/chat/completions, /v1/completions, /tokenize, /detokenize;\n"
        "GET /v1/models, /health (503 while loading), /metrics (Prometheus).\n"
        "An encoder folder (BertModel, XLMRobertaModel, *ForSequenceClassification)\n"
        "serves POST /v1/embeddings, /v1/score, /v1/rerank and /classify instead.\n\n"
        "  --host ADDR                 address to bind (default 0.0.0.0)\n"
        "  --port N                    port (default 8000; 0 = any free port)\n"
        "  --served-model-name NAME    model id clients use (default: MODEL_DIR as given)\n"
        "  --api-key KEY               require 'Authorization: Bearer KEY' on all but\n"
        "                              /health and /metrics (default: $INFERD_API_KEY)\n"
        "  --max-model-len N           prompt + output tokens at most (default: the model's)\n"
        "  --max-num-seqs N            requests in the running batch at most (default 256)\n"
        "  --max-num-batched-tokens N  tokens per engine step (default 1024 on a GPU,\n"
        "                              512 on the CPU; at least --max-num-seqs): a\n"
        "                              step's prompt tokens delay every running stream\n"
        "  --kv-cache-memory SIZE      KV cache pool, e.g. 512MiB, 4GiB (default on the\n"
        "                              CPU: 4GiB or half the memory available if less;\n"
        "                              on a GPU: what --gpu-memory-utilization leaves)\n"
        "  --no-enable-prefix-caching  turn automatic prefix caching off\n"
        "  --threads N                 CPU threads (default: all cores)\n"
        "  --device DEV                auto (default): cuda when this build has CUDA\n"
        "                              and a GPU opens, else cpu; or cpu, cuda\n"
        "  --gpu-memory-utilization F  share of GPU memory for weights + KV cache (0.9)\n"
        "  --matmul-precision P        float32 (default): weight products as exact as\n"
        "                              float32 activations allow; bfloat16: activations\n"
        "                              rounded to bf16 (faster prefill; vLLM's precision)\n"
        "  --chat-template FILE        Jinja chat template replacing the model's\n"
        "  --pooling MODE              encoders: cls, mean, last or pooler instead of the\n"
        "                              sentence-transformers pooling (1_Pooling, else cls)\n"
        "  --pooler-config JSON        encoders, as vLLM takes it: '{\"pooling_type\":\n"
        "                              \"MEAN\", \"normalize\": true}' (CLS, MEAN, LAST;\n"
        "                              normalize overrides the Normalize module)\n"
        "  --seed N                    seed for requests that bring none (default 0)\n"
        "  --max-logprobs N            top_logprobs at most (default 20)\n"
        "  --max-request-bytes N       larger request bodies get 413 (default 33554432)\n"
        "  --request-read-timeout SECONDS  a connection whose request (headers and body)\n"
        "                              is not in whole this long after it opened or its\n"
        "                              last answer ended is closed (default 30; not\n"
        "                              renewed by each byte: slow clients end)\n"
        "  --max-connections-per-ip N  connections one client address may hold, of 4096\n"
        "                              (default 1024; 0 = no cap; raise it behind a\n"
        "                              proxy or load balancer that is one address)\n"
        "  --max-queue N               sequences (n x prompts) waiting beyond --max-num-seqs\n"
        "                              before 503 + Retry-After (default 1024; 0 = no cap)\n"
        "  --shutdown-timeout SECONDS  on SIGINT/SIGTERM/SIGHUP, wait this long for\n"
        "                              requests in flight (default 30); a second\n"
        "                              signal stops at once\n"
        "  --disable-log-requests      no access log line per request\n"
        "  --allowed-origins LIST      CORS: origins browsers may call from, as a,b or\n"
        "                              vLLM's JSON list (default \"*\": any)\n"
        "  --allowed-methods LIST      CORS: methods a preflight allows (default \"*\")\n"
        "  --allowed-headers LIST      CORS: request headers a preflight allows (\"*\")\n"
        "  -h, --help                  this text\n\n"
        "Environment: INFERD_API_KEY (same as --api-key); INFERD_STEP_LOG=FILE (one line\n"
        "per engine step: batch shape and host/forward times, docs/benchmarks.md); INFERD_WARMUP=0\n"
        "(on a GPU, skip the warm-up request that runs before the server reports ready).\n");
}

/* An encoder model needs no engine, KV cache or chat template; text
 * inputs need its tokenizer, which may be missing (token ids still work). */
/* pooling, normalize: --pooling / --pooler-config over the folder's
 * sentence-transformers choice, -1 to keep it. */
static int serve_encoder(srv_server *srv, const char *dir, const char *name, const char *host,
                         int port, const char *key, const mdl_options *mo, int pooling,
                         int normalize, mdl_encoder **enc, tok_tokenizer **tok, api_ctx **api,
                         inferd_error *e)
{
    if (mdl_encoder_load(dir, mo, enc, e) || mdl_encoder_set_pooling(*enc, pooling, normalize, e))
        return -1;
    if (tok_load(dir, tok, e)) {
        fprintf(stderr, "inferd serve: no tokenizer (%s); text inputs will answer 400, token "
                        "ids work\n", e->msg);
        *tok = NULL;
    } else {
        /* Pooling and heads read the first token: a tokenizer that does not
         * open with [CLS] / <s> would give wrong vectors without a sign. */
        const char *open = mdl_encoder_config(*enc)->roberta ? "<s>" : "[CLS]";
        int32_t *ids = NULL;
        size_t n = 0;
        int32_t want = tok_token_to_id(*tok, open);
        if (want < 0 || tok_encode(*tok, "a", 1, 1, &ids, &n, e) || n < 2 || ids[0] != want) {
            fprintf(stderr, "inferd serve: the tokenizer of %s does not start sequences with "
                            "%s; text inputs will answer 400, token ids work\n", dir, open);
            tok_free(*tok);
            *tok = NULL;
        }
        free(ids);
    }
    api_options ao = {.served_model_name = name, .model_root = dir, .tok = *tok,
                      .encoder = *enc};
    if (api_init(&ao, api, e))
        return -1;
    srv_set_api(srv, *api); /* before "ready": a client may act on that line at once */
    const ld_encoder_config *c = mdl_encoder_config(*enc);
    const char *show = !strcmp(host, "0.0.0.0") || !strcmp(host, "::") ? "localhost" : host;
    printf("inferd: ready — serving %s (%s, %s%s%s) as '%s' on http://%s:%d/v1\n", dir,
           c->architecture, c->num_labels ? "classifier" : "embeddings",
           c->task[0] ? ", ModelScope task " : "", c->task, name, host, port);
    printf("  curl http://%s:%d/v1/%s -H 'Content-Type: application/json'%s -d '{\"model\": "
           "\"%s\", %s}'\n", show, port, c->num_labels ? "rerank" : "embeddings",
           key && *key ? " -H \"Authorization: Bearer $INFERD_API_KEY\"" : "", name,
           c->num_labels ? "\"query\": \"...\", \"documents\": [\"...\"]" : "\"input\": \"...\"");
    fflush(stdout);
    return 0;
}

static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    unsigned char b = (unsigned char)sig;
    int saved = errno;
    if (write(sig_pipe[1], &b, 1) < 0) {
        /* nothing a signal handler can do */
    }
    errno = saved;
}

static const char *sig_name(int sig)
{
    return sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP" : "SIGTERM";
}

/* Waits up to timeout_s for the requests in flight, and no longer once a
 * second signal arrives: whoever sends it does not want to wait. Returns
 * how many still run. */
static int drain(srv_server *srv, double timeout_s)
{
    const double until = now_seconds() + timeout_s;
    int left = srv_drain(srv, 0);
    while (left > 0 && now_seconds() < until) {
        struct pollfd p = {.fd = sig_pipe[0], .events = POLLIN};
        unsigned char sig;
        if (poll(&p, 1, 20) > 0 && read(sig_pipe[0], &sig, 1) == 1) {
            fprintf(stderr, "inferd: second signal (%s): stopping now\n", sig_name(sig));
            break;
        }
        left = srv_drain(srv, 0);
    }
    return left;
}

/* "4GiB", "512MiB", "1.5G", "1000000": binary units for K/M/G/KiB/MiB/GiB,
 * decimal for KB/MB/GB, bytes without a suffix. */
static int parse_size(const char *s, size_t *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0)
        return -1;
    double mul = 1;
    if (!strcasecmp(end, "") || !strcasecmp(end, "b"))
        mul = 1;
    else if (!strcasecmp(end, "k") || !strcasecmp(end, "kib"))
        mul = 1024.0;
    else if (!strcasecmp(end, "m") || !strcasecmp(end, "mib"))
        mul = 1024.0 * 1024;
    else if (!strcasecmp(end, "g") || !strcasecmp(end, "gib"))
        mul = 1024.0 * 1024 * 1024;
    else if (!strcasecmp(end, "kb"))
        mul = 1e3;
    else if (!strcasecmp(end, "mb"))
        mul = 1e6;
    else if (!strcasecmp(end, "gb"))
        mul = 1e9;
    else
        return -1;
    *out = (size_t)(v * mul);
    return 0;
}

int cli_serve(int argc, char **argv)
{
    enum { O_HOST = 256, O_PORT, O_NAME, O_KEY, O_MAXLEN, O_SEQS, O_BATCHED, O_KV, O_NOPC,
           O_THREADS, O_DEVICE, O_PRECISION, O_GPU_UTIL, O_TMPL, O_SEED, O_LOGPROBS, O_MAXREQ, O_QUEUE, O_SHUT,
           O_NOLOG, O_MODEL, O_READ_TIMEOUT, O_PER_IP, O_POOLING, O_POOLER_CONFIG,
           O_ORIGINS, O_METHODS, O_HEADERS };
    static const struct option opts[] = {
        {"host", required_argument, 0, O_HOST}, {"port", required_argument, 0, O_PORT},
        {"served-model-name", required_argument, 0, O_NAME},
        {"api-key", required_argument, 0, O_KEY},
        {"max-model-len", required_argument, 0, O_MAXLEN},
        {"max-num-seqs", required_argument, 0, O_SEQS},
        {"max-num-batched-tokens", required_argument, 0, O_BATCHED},
        {"kv-cache-memory", required_argument, 0, O_KV},
        {"no-enable-prefix-caching", no_argument, 0, O_NOPC},
        {"matmul-precision", required_argument, 0, O_PRECISION},
        {"threads", required_argument, 0, O_THREADS}, {"device", required_argument, 0, O_DEVICE},
        {"gpu-memory-utilization", required_argument, 0, O_GPU_UTIL},
        {"chat-template", required_argument, 0, O_TMPL}, {"seed", required_argument, 0, O_SEED},
        {"max-logprobs", required_argument, 0, O_LOGPROBS},
        {"max-request-bytes", required_argument, 0, O_MAXREQ},
        {"request-read-timeout", required_argument, 0, O_READ_TIMEOUT},
        {"max-connections-per-ip", required_argument, 0, O_PER_IP},
        {"max-queue", required_argument, 0, O_QUEUE},
        {"shutdown-timeout", required_argument, 0, O_SHUT},
        {"disable-log-requests", no_argument, 0, O_NOLOG},
        {"model", required_argument, 0, O_MODEL},
        {"pooling", required_argument, 0, O_POOLING},
        {"pooler-config", required_argument, 0, O_POOLER_CONFIG},
        {"allowed-origins", required_argument, 0, O_ORIGINS},
        {"allowed-methods", required_argument, 0, O_METHODS},
        {"allowed-headers", required_argument, 0, O_HEADERS},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *host = "0.0.0.0", *name = NULL, *key = getenv("INFERD_API_KEY");
    const char *dir = NULL, *tmpl_path = NULL, *device = "auto", *precision = NULL;
    const char *origins = NULL, *methods = NULL, *headers = NULL;
    long port = 8000, maxlen = 0, seqs = 256, batched = 0, threads = 0, seed = 0;
    long max_logprobs = 20, maxreq = 32L << 20, queue = 1024, per_ip = 1024;
    double shutdown_timeout = 30, read_timeout = 30;
    size_t kv_bytes = (size_t)4 << 30;
    int kv_given = 0;
    double gpu_util = 0.9;
    int prefix_caching = 1, access_log = 1, c;
    int pooling = -1, normalize = -1, pooler_cfg_pooling = -1; /* -1: the folder's own */
    inferd_error pe = {{0}}; /* of the flags above */
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_HOST: host = optarg; break;
        case O_PORT: if (cli_parse_int("--port", optarg, 0, 65535, &port)) return 2; break;
        case O_NAME: name = optarg; break;
        case O_KEY: key = optarg; break;
        case O_MAXLEN: if (cli_parse_int("--max-model-len", optarg, 1, 1L << 24, &maxlen)) return 2; break;
        case O_SEQS: if (cli_parse_int("--max-num-seqs", optarg, 1, 1 << 16, &seqs)) return 2; break;
        case O_BATCHED:
            if (cli_parse_int("--max-num-batched-tokens", optarg, 1, 1L << 24, &batched)) return 2;
            break;
        case O_GPU_UTIL:
            if (cli_parse_double("--gpu-memory-utilization", optarg, &gpu_util) ||
                !(gpu_util > 0 && gpu_util <= 1)) {
                fprintf(stderr, "inferd serve: --gpu-memory-utilization must be in (0, 1]\n");
                return 2;
            }
            break;
        case O_KV:
            kv_given = 1;
            if (parse_size(optarg, &kv_bytes) || kv_bytes == 0) {
                fprintf(stderr, "inferd serve: --kv-cache-memory expects a size like 512MiB "
                                "or 4GiB, got '%s'\n", optarg);
                return 2;
            }
            break;
        case O_NOPC: prefix_caching = 0; break;
        case O_THREADS: if (cli_parse_int("--threads", optarg, 0, 1024, &threads)) return 2; break;
        case O_DEVICE: device = optarg; break;
        case O_PRECISION: precision = optarg; break;
        case O_TMPL: tmpl_path = optarg; break;
        case O_SEED: if (cli_parse_int("--seed", optarg, 0, 1L << 62, &seed)) return 2; break;
        case O_LOGPROBS:
            if (cli_parse_int("--max-logprobs", optarg, 0, ENG_MAX_TOP_LOGPROBS, &max_logprobs))
                return 2;
            break;
        case O_MAXREQ: if (cli_parse_int("--max-request-bytes", optarg, 1, 1L << 34, &maxreq)) return 2; break;
        case O_QUEUE: if (cli_parse_int("--max-queue", optarg, 0, 1 << 24, &queue)) return 2; break;
        case O_READ_TIMEOUT:
            if (cli_parse_double("--request-read-timeout", optarg, &read_timeout)) return 2;
            if (!isfinite(read_timeout) || read_timeout <= 0) {
                fprintf(stderr, "inferd serve: --request-read-timeout takes a finite number of "
                                "seconds > 0, got '%s'\n", optarg);
                return 2;
            }
            break;
        case O_PER_IP:
            if (cli_parse_int("--max-connections-per-ip", optarg, 0, 4096, &per_ip)) return 2;
            break;
        case O_SHUT:
            if (cli_parse_double("--shutdown-timeout", optarg, &shutdown_timeout)) return 2;
            if (!isfinite(shutdown_timeout) || shutdown_timeout < 0) {
                fprintf(stderr, "inferd serve: --shutdown-timeout takes a finite number of seconds "
                                ">= 0, got '%s'\n", optarg);
                return 2;
            }
            break;
        case O_NOLOG: access_log = 0; break;
        case O_MODEL: dir = optarg; break;
        case O_POOLING: {
            ld_pooling p;
            if (ld_pooling_parse(optarg, &p, &pe)) {
                fprintf(stderr, "inferd serve: --pooling: %s\n", pe.msg);
                return 2;
            }
            pooling = (int)p;
            break;
        }
        case O_POOLER_CONFIG: {
            /* --pooling given too wins, whichever comes first */
            int p, n;
            if (ld_pooler_config_parse(optarg, &p, &n, &pe)) {
                fprintf(stderr, "inferd serve: %s\n", pe.msg);
                return 2;
            }
            pooler_cfg_pooling = p;
            if (n >= 0)
                normalize = n;
            break;
        }
        case O_ORIGINS: origins = optarg; break;
        case O_METHODS: methods = optarg; break;
        case O_HEADERS: headers = optarg; break;
        case 'h': serve_usage(stdout); return 0;
        default: serve_usage(stderr); return 2;
        }
    }
    if (!dir && optind < argc)
        dir = argv[optind++];
    if (!dir || optind < argc) {
        fprintf(stderr, "inferd serve: expects one MODEL_DIR\n\n");
        serve_usage(stderr);
        return 2;
    }
    if (!name)
        name = dir;
    if (key && !*key) { fprintf(stderr, "inferd serve: --api-key (or INFERD_API_KEY) is empty: "
                                "give a key, or unset it to serve without authentication\n"); return 2; }

    /* A handler, not sigwait: libraries (OpenBLAS) start threads before
     * main that do not block signals, so any thread may take SIGTERM. The
     * handler only writes the signal number to a pipe main reads. */
    if (pipe(sig_pipe)) {
        perror("inferd serve: pipe");
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    char *resolved = NULL;
    srv_server *srv = NULL;
    mdl_model *m = NULL;
    tok_tokenizer *tok = NULL;
    tmpl_chat *chat = NULL;
    eng_engine *eng = NULL;
    mdl_encoder *enc = NULL;
    api_ctx *api = NULL;
    inferd_error e = {{0}};
    srv_options so = {.host = host, .port = (int)port, .api_key = key,
                      .max_request_bytes = (size_t)maxreq, .access_log = access_log,
                      .request_read_timeout_s = read_timeout, .max_connections_per_ip = (int)per_ip,
                      .allowed_origins = origins, .allowed_methods = methods,
                      .allowed_headers = headers};
    if (srv_start(&so, &srv, &e))
        goto err;
    int bound = srv_port(srv);
    printf("inferd: listening on http://%s:%d (loading %s)\n", host, bound, dir);
    fflush(stdout);

    /* A repo id is found in the Hugging Face / ModelScope cache or pulled
     * first; /health answers 503 meanwhile. */
    hub_options ho;
    hub_options_init(&ho);
    if (hub_resolve_model(dir, &ho, &resolved, &e))
        goto err;
    dir = resolved;
    /* Said at start, so that a server that fell back to the CPU is noticed
     * before its latencies are. */
    char note[INFERD_ERR_MAX + 64];
    if (mdl_resolve_device(device, &device, note, sizeof note, &e))
        goto err;
    fprintf(stderr, "inferd serve: device: %s%s%s%s\n", device, note[0] ? " (--device auto: " : "",
            note, note[0] ? ")" : "");
    mdl_options mo = {.device = device, .n_threads = (int)threads,
                      .matmul_precision = precision};
    ld_generation_config gc;
    if (pooling < 0)
        pooling = pooler_cfg_pooling;
    if (ld_is_encoder_dir(dir)) {
        if (serve_encoder(srv, dir, name, host, bound, key, &mo, pooling, normalize, &enc, &tok,
                          &api, &e))
            goto err;
        goto wait;
    }
    if (pooling >= 0 || normalize >= 0) {
        err_set(&e, "--pooling and --pooler-config apply to encoder (embedding) models; %s is "
                    "a causal LM", dir);
        goto err;
    }
    if (mdl_load(dir, &mo, &m, &e) || ld_generation_config_load(dir, &gc, &e) ||
        tok_load(dir, &tok, &e) || tok_check_model_vocab(tok, mdl_config(m)->vocab_size, &e))
        goto err;
    if (tmpl_chat_load(dir, tmpl_path, &chat, &e)) {
        if (tmpl_path)
            goto err;
        fprintf(stderr, "inferd serve: no chat template (%s); /v1/chat/completions will "
                        "answer 400, /v1/completions works\n", e.msg);
        chat = NULL;
    }
    const ld_config *cfg = mdl_config(m);
    const int32_t *eos = gc.n_eos > 0 ? gc.eos_token_ids : cfg->eos_token_ids;
    int n_eos = gc.n_eos > 0 ? gc.n_eos : cfg->n_eos;
    eng_config ec;
    eng_config_defaults(&ec);
    /* On a GPU the pool takes what --gpu-memory-utilization leaves after the
     * weights, less a margin for activations and cuBLAS workspace, as vLLM
     * sizes it; --kv-cache-memory overrides. */
    size_t dev_free = 0, dev_total = 0;
    inferd_error me = {{0}};
    const int on_device = mdl_device_memory(m, &dev_free, &dev_total, &me) == 0;
    const size_t host_avail = on_device ? 0 : host_memory_available();
    if (!kv_given && host_avail && kv_bytes > host_avail / 2) {
        /* the default pool leaves the host room for the rest: its pages are
         * taken as the cache fills, and the engine refuses a pool larger
         * than what is available */
        kv_bytes = host_avail / 2 / ((size_t)1 << 20) * ((size_t)1 << 20);
        fprintf(stderr, "inferd: KV cache %.2f GiB (half of the %.2f GiB of memory available; "
                        "--kv-cache-memory sets it)\n",
                (double)kv_bytes / (1 << 30), (double)host_avail / (1 << 30));
    }
    if (!kv_given && on_device) {
        double budget = (double)dev_free - (1.0 - gpu_util) * (double)dev_total -
                        (double)((size_t)2 << 30);
        if (budget < (double)((size_t)256 << 20)) {
            err_set(&e, "the model leaves %.1f GiB of %.1f GiB free on the GPU; with "
                        "--gpu-memory-utilization %.2f there is no room for a KV cache "
                        "(raise it, or use a GPU with more memory)",
                    (double)dev_free / (1 << 30), (double)dev_total / (1 << 30), gpu_util);
            goto err;
        }
        kv_bytes = (size_t)budget;
        fprintf(stderr, "inferd: KV cache %.1f GiB (--gpu-memory-utilization %.2f)\n",
                budget / (1 << 30), gpu_util);
    }
    ec.kv_cache_bytes = kv_bytes;
    ec.max_num_seqs = (int)seqs;
    /* A step's prompt tokens delay every running stream. On the CPU they are
     * compute-bound at ~5 ms each (0.5B model, 2 cores): 2,048 of them held
     * the streams ~10 s, 512 ~2.5 s at the same throughput. On an H200 (8B
     * model, 64 streams) 1,024 gave the throughput of 2,048 with an ITL p99
     * of 37 ms against 68 (bench/NOTES.md). */
    const int64_t step = on_device ? 1024 : 512;
    if (batched == 0)
        batched = seqs > step ? seqs : step;
    ec.max_num_batched_tokens = (int)batched;
    ec.max_model_len = (int)maxlen;
    ec.enable_prefix_caching = prefix_caching;
    ec.seed = (uint64_t)seed;
    if (eng_create(m, &ec, eos, n_eos, &eng, &e))
        goto err;
    /* A GPU's first forward pass loads kernels and picks GEMM algorithms:
     * done here, before "ready", not in the first user's request. */
    const char *wu = getenv("INFERD_WARMUP");
    if (strcmp(device, "cpu") != 0 && !(wu && !strcmp(wu, "0")) && eng_warmup(eng, &e))
        goto err;
    api_options ao = {.served_model_name = name, .model_root = dir, .engine = eng, .tok = tok,
                      .chat = chat, .gen = &gc, .max_logprobs = (int)max_logprobs,
                      .max_queue = (int)queue, .max_num_seqs = (int)seqs};
    if (api_init(&ao, &api, &e))
        goto err;
    srv_set_api(srv, api);
    const char *show = !strcmp(host, "0.0.0.0") || !strcmp(host, "::") ? "localhost" : host;
    printf("inferd: ready — serving %s as '%s' on http://%s:%d/v1 (max_model_len %d)\n", dir,
           name, host, bound, eng_max_model_len(eng));
    printf("  curl http://%s:%d/v1/chat/completions -H 'Content-Type: application/json'%s "
           "-d '{\"model\": \"%s\", \"messages\": [{\"role\": \"user\", \"content\": "
           "\"Hello!\"}]}'\n", show, bound, key && *key ? " -H \"Authorization: Bearer $INFERD_API_KEY\"" : "",
           name);
    fflush(stdout);

wait:;
    unsigned char sig = 0;
    while (read(sig_pipe[0], &sig, 1) < 0 && errno == EINTR)
        ;
    fprintf(stderr, "inferd: %s: no new connections; waiting up to %gs for requests in "
                    "flight (a second signal stops at once)\n", sig_name(sig), shutdown_timeout);
    int left = drain(srv, shutdown_timeout);
    if (left > 0)
        fprintf(stderr, "inferd: cancelling %d requests still running\n", left);
    rc = 0;
err:
    if (rc)
        fprintf(stderr, "inferd serve: %s\n", e.msg);
    srv_stop(srv);
    api_free(api);
    mdl_encoder_free(enc);
    eng_destroy(eng);
    tmpl_chat_free(chat);
    tok_free(tok);
    mdl_free(m);
    free(resolved);
    close(sig_pipe[0]);
    close(sig_pipe[1]);
    sig_pipe[0] = sig_pipe[1] = -1;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    if (!rc)
        fprintf(stderr, "inferd: stopped\n");
    return rc;
}
