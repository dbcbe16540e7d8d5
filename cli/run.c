/* inferd run: a chat in the terminal, like `ollama run`. The same engine as
 * `serve`, in process: the conversation is rendered with the model's chat
 * template, tokenized, and the answer streamed token by token. */
#include <editline/readline.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "engine/engine.h"
#include "hub/hub.h"
#include "loader/loader.h"
#include "model/model.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct chat {
    mdl_model *model;
    tok_tokenizer *tok;
    tmpl_chat *tmpl;
    eng_engine *eng;
    json_t *messages;          /* the conversation so far */
    char *system;              /* NULL: none */
    eng_sampling sampling;
    int max_model_len;
} chat;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: inferd run [MODEL] [PROMPT] [options]\n\n"
        "Chat with a model in the terminal. With no MODEL, the bundled demo model\n"
        "(models/demo). With PROMPT, or with text piped on stdin, answers once and exits.\n\n"
        "  --temperature T     sampling temperature (default: generation_config.json, else 0.7)\n"
        "  --top-p P           nucleus sampling (default: generation_config.json, else 1)\n"
        "  --top-k K           top-k sampling (default: off)\n"
        "  --max-tokens N      longest answer in tokens (default 512)\n"
        "  --system TEXT       system prompt\n"
        "  --seed N            sampling seed (default: random)\n"
        "  --threads N         CPU threads (default: all cores)\n"
        "  --kv-cache-memory BYTES  KV cache size, e.g. 256MiB (default 512MiB)\n"
        "  -h, --help          this text\n\n"
        "In the chat: /bye quits, /clear forgets the conversation, /set temperature T,\n"
        "/set top_p P, /set max_tokens N, /set system TEXT; \"\"\" starts and ends a\n"
        "multi-line message; Ctrl-C stops an answer, Ctrl-D quits.\n");
}

/* The bundled demo sits next to the binary's build folder (build/inferd ->
 * models/demo) or in the current directory. */
static int find_demo(char *out, size_t n)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            if (path_join(out, n, exe, "../models/demo") == 0 && file_exists(out))
                return 0;
            if (path_join(out, n, exe, "models/demo") == 0 && file_exists(out))
                return 0;
        }
    }
    snprintf(out, n, "models/demo");
    return file_exists(out) ? 0 : -1;
}

static int parse_bytes(const char *flag, const char *s, size_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    static const struct { const char *suffix; double mul; } units[] = {
        {"", 1}, {"B", 1}, {"K", 1e3}, {"KB", 1e3}, {"KiB", 1024}, {"M", 1e6}, {"MB", 1e6},
        {"MiB", 1048576.0}, {"G", 1e9}, {"GB", 1e9}, {"GiB", 1073741824.0},
    };
    if (!errno && end != s && v > 0)
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (!strcmp(end, units[i].suffix)) {
                *out = (size_t)(v * units[i].mul);
                return 0;
            }
    fprintf(stderr, "inferd: %s expects a size such as 512MiB or 2GiB, got '%s'\n", flag, s);
    return -1;
}

/* Renders the conversation plus the new user message, streams the answer,
 * and on success appends both to the conversation. Returns -1 on error. */
static int answer(chat *c, const char *user, FILE *out)
{
    int rc = -1;
    inferd_error e = {0};
    char *prompt = NULL;
    size_t prompt_len = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    eng_request *req = NULL;
    tok_stream *ts = NULL;
    strbuf text = {0}, piece = {0};
    json_t *msgs = json_array();
    if (c->system)
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content",
                                              c->system));
    json_array_extend(msgs, c->messages);
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", user));
    json_t *request = json_pack("{s:O,s:b}", "messages", msgs, "add_generation_prompt", 1);
    int raised = 0;
    if (tmpl_chat_render(c->tmpl, request, &prompt, &prompt_len, &raised, &e)) {
        fprintf(stderr, "inferd: chat template: %s\n", e.msg);
        goto out;
    }
    /* The template writes the special tokens itself; adding them again would
     * double the BOS of Llama-style tokenizers. */
    if (tok_encode(c->tok, prompt, prompt_len, 0, &ids, &n_ids, &e)) {
        fprintf(stderr, "inferd: %s\n", e.msg);
        goto out;
    }
    eng_sampling s = c->sampling;
    if ((int)n_ids + s.max_tokens > c->max_model_len) {
        s.max_tokens = c->max_model_len - (int)n_ids;
        if (s.max_tokens < 1) {
            fprintf(stderr, "inferd: the conversation is %zu tokens, more than the model's "
                            "context of %d; /clear starts a new one\n",
                    n_ids, c->max_model_len);
            goto out;
        }
    }
    req = eng_submit(c->eng, ids, (int)n_ids, &s, &e);
    if (!req) {
        fprintf(stderr, "inferd: %s\n", e.msg);
        goto out;
    }
    ts = tok_stream_new(c->tok, 1);
    interrupted = 0;
    eng_event ev;
    int r;
    while ((r = eng_next(req, &ev, 100)) >= 0) {
        if (interrupted) {
            eng_cancel(req);
            interrupted = 0;
        }
        if (r == 0)
            continue;
        if (ev.finish == ENG_FINISH_ERROR) {
            fprintf(stderr, "\ninferd: the model failed while answering\n");
            goto out;
        }
        if (ev.token < 0 || ev.finish == ENG_FINISH_ABORT)
            continue;
        piece.n = 0;
        if (piece.p)
            piece.p[0] = 0;
        if (tok_stream_push(ts, ev.token, &piece, &e)) {
            fprintf(stderr, "\ninferd: %s\n", e.msg);
            goto out;
        }
        if (piece.n) {
            fwrite(piece.p, 1, piece.n, out);
            fflush(out);
            sb_append(&text, piece.p, piece.n);
        }
    }
    piece.n = 0;
    if (tok_stream_flush(ts, &piece, &e) == 0 && piece.n) {
        fwrite(piece.p, 1, piece.n, out);
        sb_append(&text, piece.p, piece.n);
    }
    fputc('\n', out);
    fflush(out);
    json_array_append_new(c->messages, json_pack("{s:s,s:s}", "role", "user", "content", user));
    json_array_append_new(c->messages, json_pack("{s:s,s:s%}", "role", "assistant", "content",
                                                 text.p ? text.p : "", text.n));
    rc = 0;
out:
    tok_stream_free(ts);
    if (req)
        eng_release(req);
    free(ids);
    free(prompt);
    json_decref(request);
    json_decref(msgs);
    sb_free(&text);
    sb_free(&piece);
    return rc;
}

static void set_option(chat *c, char *args)
{
    char *name = strtok(args, " \t");
    char *value = name ? strtok(NULL, "") : NULL;
    while (value && (*value == ' ' || *value == '\t'))
        value++;
    if (!name || !value || !*value) {
        printf("usage: /set temperature T | top_p P | max_tokens N | system TEXT\n");
        return;
    }
    double d;
    long l;
    if (!strcmp(name, "temperature") && !cli_parse_double("temperature", value, &d) &&
        d >= 0 && d <= 2) {
        c->sampling.temperature = (float)d;
        printf("temperature = %g\n", d);
    } else if (!strcmp(name, "top_p") && !cli_parse_double("top_p", value, &d) && d > 0 &&
               d <= 1) {
        c->sampling.top_p = (float)d;
        printf("top_p = %g\n", d);
    } else if (!strcmp(name, "max_tokens") &&
               !cli_parse_int("max_tokens", value, 1, 1 << 20, &l)) {
        c->sampling.max_tokens = (int)l;
        printf("max_tokens = %ld\n", l);
    } else if (!strcmp(name, "system")) {
        free(c->system);
        c->system = strdup(value);
        printf("system prompt set\n");
    } else {
        printf("cannot set '%s' to '%s' (temperature 0..2, top_p (0, 1], max_tokens >= 1, "
               "system TEXT)\n",
               name, value);
    }
}

/* Reads one user message; """ ... """ spans lines. NULL at end of input. */
static char *read_message(int tty)
{
    char *line = tty ? readline(">>> ") : NULL;
    if (!line)
        return NULL;
    if (strncmp(line, "\"\"\"", 3) != 0) {
        if (*line)
            add_history(line);
        return line;
    }
    strbuf b = {0};
    sb_puts(&b, line + 3);
    free(line);
    for (;;) {
        char *more = readline("... ");
        if (!more)
            break;
        char *end = strstr(more, "\"\"\"");
        if (end)
            *end = 0;
        if (b.n)
            sb_putc(&b, '\n');
        sb_puts(&b, more);
        free(more);
        if (end)
            break;
    }
    char *msg = sb_steal(&b);
    if (msg)
        add_history(msg);
    return msg;
}

static void interactive(chat *c)
{
    printf("Chatting with the model. /bye to quit, /? for help.\n");
    for (;;) {
        char *msg = read_message(1);
        if (!msg) {
            printf("\n");
            break;
        }
        char *p = msg;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p) {
            free(msg);
            continue;
        }
        if (!strcmp(p, "/bye") || !strcmp(p, "/exit")) {
            free(msg);
            break;
        } else if (!strcmp(p, "/clear")) {
            json_array_clear(c->messages);
            printf("Cleared the conversation.\n");
        } else if (!strncmp(p, "/set", 4) && (p[4] == ' ' || !p[4])) {
            set_option(c, p + 4);
        } else if (!strcmp(p, "/?") || !strcmp(p, "/help")) {
            printf("/bye quits, /clear forgets the conversation, /set temperature T, /set "
                   "top_p P, /set max_tokens N, /set system TEXT; \"\"\" starts and ends a "
                   "multi-line message; Ctrl-C stops an answer.\n");
        } else if (*p == '/') {
            printf("unknown command '%s'; /? lists them\n", p);
        } else {
            answer(c, msg, stdout);
        }
        free(msg);
    }
}

int cli_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"temperature", required_argument, NULL, 't'}, {"top-p", required_argument, NULL, 'p'},
        {"top-k", required_argument, NULL, 'k'},       {"max-tokens", required_argument, NULL, 'n'},
        {"system", required_argument, NULL, 's'},      {"seed", required_argument, NULL, 'S'},
        {"threads", required_argument, NULL, 'j'},
        {"kv-cache-memory", required_argument, NULL, 'K'},
        {"help", no_argument, NULL, 'h'},              {NULL, 0, NULL, 0},
    };
    /* libedit reads multibyte (Chinese) input only in a UTF-8 locale. */
    setlocale(LC_CTYPE, "");
    chat c;
    memset(&c, 0, sizeof c);
    eng_sampling_defaults(&c.sampling);
    double temperature = -1, top_p = -1;
    long top_k = -1, max_tokens = 512, threads = 0, seed = -1;
    size_t kv_bytes = 512u << 20;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 't':
            if (cli_parse_double("--temperature", optarg, &temperature) || temperature < 0) {
                fprintf(stderr, "inferd: --temperature must be >= 0\n");
                return 2;
            }
            break;
        case 'p':
            if (cli_parse_double("--top-p", optarg, &top_p) || !(top_p > 0 && top_p <= 1)) {
                fprintf(stderr, "inferd: --top-p must be in (0, 1]\n");
                return 2;
            }
            break;
        case 'k':
            if (cli_parse_int("--top-k", optarg, -1, INT32_MAX, &top_k))
                return 2;
            break;
        case 'n':
            if (cli_parse_int("--max-tokens", optarg, 1, 1 << 24, &max_tokens))
                return 2;
            break;
        case 's':
            c.system = strdup(optarg);
            break;
        case 'S':
            if (cli_parse_int("--seed", optarg, 0, LONG_MAX, &seed))
                return 2;
            break;
        case 'j':
            if (cli_parse_int("--threads", optarg, 0, 1024, &threads))
                return 2;
            break;
        case 'K':
            if (parse_bytes("--kv-cache-memory", optarg, &kv_bytes))
                return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    char demo[PATH_MAX];
    const char *dir = optind < argc ? argv[optind++] : NULL;
    if (!dir) {
        if (find_demo(demo, sizeof demo)) {
            fprintf(stderr, "inferd: no MODEL given and the bundled demo model (models/demo) "
                            "was not found\n");
            return 2;
        }
        dir = demo;
    }
    /* A repo id (Qwen/Qwen2.5-0.5B-Instruct) is found in the Hugging Face or
     * ModelScope cache, or pulled, as `serve` does. */
    char *resolved = NULL;
    inferd_error he = {0};
    hub_options ho;
    hub_options_init(&ho);
    if (hub_resolve_model(dir, &ho, &resolved, &he)) {
        fprintf(stderr, "inferd run: %s\n", he.msg);
        free(c.system);
        return 1;
    }
    dir = resolved;
    strbuf prompt = {0};
    for (int i = optind; i < argc; i++) {
        if (prompt.n)
            sb_putc(&prompt, ' ');
        sb_puts(&prompt, argv[i]);
    }
    int tty = isatty(STDIN_FILENO);
    if (!tty) {
        char buf[4096];
        size_t n;
        strbuf in = {0};
        while ((n = fread(buf, 1, sizeof buf, stdin)) > 0)
            sb_append(&in, buf, n);
        while (in.n && (in.p[in.n - 1] == '\n' || in.p[in.n - 1] == '\r'))
            in.p[--in.n] = 0;
        if (in.n) {
            if (prompt.n)
                sb_puts(&prompt, "\n\n");
            sb_append(&prompt, in.p, in.n);
        }
        sb_free(&in);
    }

    int status = 1;
    inferd_error e = {0};
    ld_generation_config gen;
    mdl_options mo = {.device = "cpu", .n_threads = (int)threads};
    if (mdl_load(dir, &mo, &c.model, &e) || tok_load(dir, &c.tok, &e) ||
        tmpl_chat_load(dir, NULL, &c.tmpl, &e) || ld_generation_config_load(dir, &gen, &e)) {
        fprintf(stderr, "inferd run: %s\n", e.msg);
        goto out;
    }
    const ld_config *cfg = mdl_config(c.model);
    const int *eos = gen.n_eos ? gen.eos_token_ids : cfg->eos_token_ids;
    int n_eos = gen.n_eos ? gen.n_eos : cfg->n_eos;
    int32_t eos_ids[16];
    for (int i = 0; i < n_eos; i++)
        eos_ids[i] = eos[i];
    eng_config ec;
    eng_config_defaults(&ec);
    ec.kv_cache_bytes = kv_bytes;
    if (eng_create(c.model, &ec, eos_ids, n_eos, &c.eng, &e)) {
        fprintf(stderr, "inferd run: %s\n", e.msg);
        goto out;
    }
    c.max_model_len = eng_max_model_len(c.eng);
    c.sampling.temperature = temperature >= 0 ? (float)temperature
                             : gen.has_temperature ? (float)gen.temperature : 0.7f;
    c.sampling.top_p = top_p > 0 ? (float)top_p : gen.has_top_p ? (float)gen.top_p : 1.0f;
    c.sampling.top_k = top_k >= 0 ? (int)top_k : gen.has_top_k ? gen.top_k : 0;
    c.sampling.max_tokens = (int)max_tokens;
    if (seed >= 0) {
        c.sampling.has_seed = 1;
        c.sampling.seed = (uint64_t)seed;
    }
    c.messages = json_array();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    if (prompt.n || !tty)
        status = prompt.n ? (answer(&c, prompt.p, stdout) ? 1 : 0) : 0;
    else {
        interactive(&c);
        status = 0;
    }
out:
    if (c.eng)
        eng_destroy(c.eng);
    if (c.tmpl)
        tmpl_chat_free(c.tmpl);
    if (c.tok)
        tok_free(c.tok);
    mdl_free(c.model);
    json_decref(c.messages);
    free(c.system);
    sb_free(&prompt);
    free(resolved);
    return status;
}
