/* inferd perplexity: mean token loss of a model over held-out conversations
 * given as token ids. Only the answer tokens count (everything after the
 * prompt), so the number is the one PyTorch reports for the same ids
 * (tools/demo/train.py); the two are compared in tests/demo. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "model/model.h"

#define PPL_BLOCK 16
#define PPL_BATCH 16                /* conversations per forward call */
#define PPL_MAX_FILE (256u << 20)

typedef struct conv {
    int32_t *ids;
    int n, n_prompt;
} conv;

static void ppl_usage(FILE *f)
{
    fprintf(f,
        "usage: inferd perplexity --model DIR --ids-file FILE [options]\n\n"
        "Mean loss (natural log) and perplexity over the answer tokens of token-id\n"
        "conversations, one JSON object a line: {\"ids\": [...], \"n_prompt\": K}.\n"
        "Tokens ids[K..] are scored, each predicted from the ones before it.\n\n"
        "  --model DIR       Hugging Face model folder (config.json + safetensors)\n"
        "  --ids-file FILE   the conversations (JSON lines)\n"
        "  --limit N         score only the first N conversations\n"
        "  --threads N       CPU threads (default: all cores)\n"
        "  --json            print {\"conversations\", \"tokens\", \"mean_loss\",\n"
        "                    \"perplexity\", \"nll_sum\": [per conversation]}\n"
        "  -h, --help        this text\n");
}

static void convs_free(conv *c, int n)
{
    for (int i = 0; i < n; i++)
        free(c[i].ids);
    free(c);
}

/* One line -> conv; the message names the line so a broken file is easy to fix. */
static int parse_line(const char *line, size_t len, int lineno, int vocab, conv *out,
                      inferd_error *e)
{
    json_error_t je;
    json_t *o = json_loadb(line, len, 0, &je);
    int rc = -1;
    if (!o) {
        err_set(e, "line %d: invalid JSON: %s", lineno, je.text);
        return -1;
    }
    json_t *ids = json_object_get(o, "ids"), *np = json_object_get(o, "n_prompt");
    if (!json_is_object(o) || !json_is_array(ids) || !json_is_integer(np)) {
        err_set(e, "line %d: expected {\"ids\": [int, ...], \"n_prompt\": int}", lineno);
        goto out;
    }
    size_t n = json_array_size(ids);
    json_int_t k = json_integer_value(np);
    if (n < 2 || n > (1u << 20) || k < 1 || k >= (json_int_t)n) {
        err_set(e, "line %d: n_prompt %lld must be in [1, %zu) (number of ids)", lineno,
                (long long)k, n);
        goto out;
    }
    out->ids = malloc(n * sizeof *out->ids);
    if (!out->ids) {
        err_set(e, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(ids, i);
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (x < 0 || x >= vocab) {
            err_set(e, "line %d: ids[%zu] is not a token id of this model (vocab %d)",
                    lineno, i, vocab);
            free(out->ids);
            out->ids = NULL;
            goto out;
        }
        out->ids[i] = (int32_t)x;
    }
    out->n = (int)n;
    out->n_prompt = (int)k;
    rc = 0;
out:
    json_decref(o);
    return rc;
}

static int read_convs(const char *path, int vocab, long limit, conv **out, int *n_out,
                      inferd_error *e)
{
    char *data = NULL;
    size_t len;
    conv *c = NULL;
    int n = 0, cap = 0, lineno = 0;
    if (file_read_all(path, PPL_MAX_FILE, &data, &len, e))
        return -1;
    for (char *p = data, *end; p < data + len && (limit <= 0 || n < limit); p = end + 1) {
        end = memchr(p, '\n', (size_t)(data + len - p));
        if (!end)
            end = data + len;
        lineno++;
        size_t l = (size_t)(end - p);
        while (l && (p[l - 1] == '\r' || p[l - 1] == ' '))
            l--;
        if (!l)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            conv *nc = realloc(c, (size_t)cap * sizeof *c);
            if (!nc) {
                err_set(e, "out of memory");
                goto err;
            }
            c = nc;
        }
        if (parse_line(p, l, lineno, vocab, &c[n], e))
            goto err;
        n++;
    }
    if (n == 0) {
        err_set(e, "no conversations in the file");
        goto err;
    }
    free(data);
    *out = c;
    *n_out = n;
    return 0;
err:
    err_prefix(e, "%s", path);
    free(data);
    convs_free(c, n);
    return -1;
}

/* -log softmax(logits)[target], in double like the PyTorch reference. */
static double token_nll(const float *logits, int vocab, int target)
{
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < vocab; i++)
        if (logits[i] > mx)
            mx = logits[i];
    for (int i = 0; i < vocab; i++)
        sum += exp((double)logits[i] - mx);
    return -((double)logits[target] - mx - log(sum));
}

/* Scores conversations [first, first + k) in one forward call: sequence s
 * owns blocks [s * mb, (s + 1) * mb) of the KV pool. */
static int score_batch(mdl_model *m, const conv *c, int k, int mb, int vocab, double *nll,
                       inferd_error *e)
{
    int n_tok = 0, n_log = 0, rc = -1;
    for (int s = 0; s < k; s++) {
        n_tok += c[s].n;
        n_log += c[s].n - c[s].n_prompt;
    }
    int32_t *tok = malloc((size_t)n_tok * sizeof *tok), *pos = malloc((size_t)n_tok * sizeof *pos),
            *slot = malloc((size_t)n_tok * sizeof *slot), *rows = malloc((size_t)n_log * sizeof *rows),
            *q_start = malloc((size_t)(k + 1) * sizeof *q_start),
            *ctx = malloc((size_t)k * sizeof *ctx), *table = malloc((size_t)k * mb * sizeof *table);
    float *logits = malloc((size_t)n_log * (size_t)vocab * sizeof *logits);
    if (!tok || !pos || !slot || !rows || !q_start || !ctx || !table || !logits) {
        err_set(e, "out of memory");
        goto out;
    }
    int t = 0, r = 0;
    for (int s = 0; s < k; s++) {
        q_start[s] = t;
        ctx[s] = c[s].n;
        for (int b = 0; b < mb; b++)
            table[s * mb + b] = s * mb + b;
        for (int i = 0; i < c[s].n; i++, t++) {
            tok[t] = c[s].ids[i];
            pos[t] = i;
            slot[t] = table[s * mb + i / PPL_BLOCK] * PPL_BLOCK + i % PPL_BLOCK;
            /* the row at position i predicts token i + 1 */
            if (i >= c[s].n_prompt - 1 && i < c[s].n - 1)
                rows[r++] = t;
        }
    }
    q_start[k] = t;
    mdl_batch b = {
        .n_tokens = n_tok, .tokens = tok, .pos = pos, .slot = slot, .n_seqs = k,
        .q_start = q_start, .ctx_len = ctx, .block_table = table, .max_blocks = mb,
        .n_logits = n_log, .logit_rows = rows,
    };
    if (mdl_forward(m, &b, logits, e))
        goto out;
    r = 0;
    for (int s = 0; s < k; s++) {
        nll[s] = 0;
        for (int i = c[s].n_prompt; i < c[s].n; i++, r++)
            nll[s] += token_nll(logits + (size_t)r * vocab, vocab, c[s].ids[i]);
    }
    rc = 0;
out:
    free(tok);
    free(pos);
    free(slot);
    free(rows);
    free(q_start);
    free(ctx);
    free(table);
    free(logits);
    return rc;
}

int cli_perplexity(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ids-file", required_argument, 0, 'f'},
        {"limit", required_argument, 0, 'l'}, {"threads", required_argument, 0, 't'},
        {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *dir = NULL, *path = NULL;
    long limit = 0, threads = 0;
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': dir = optarg; break;
        case 'f': path = optarg; break;
        case 'l': if (cli_parse_int("--limit", optarg, 1, 1L << 30, &limit)) return 2; break;
        case 't': if (cli_parse_int("--threads", optarg, 0, 1024, &threads)) return 2; break;
        case 'j': json = 1; break;
        case 'h': ppl_usage(stdout); return 0;
        default: ppl_usage(stderr); return 2;
        }
    }
    if (!dir || !path || optind < argc) {
        fprintf(stderr, "inferd perplexity: --model and --ids-file are required%s\n\n",
                optind < argc ? " (and no other arguments)" : "");
        ppl_usage(stderr);
        return 2;
    }
    mdl_model *m = NULL;
    conv *cv = NULL;
    double *nll = NULL;
    int n = 0, rc = 1;
    inferd_error e = {{0}};
    mdl_options mo = {.device = "cpu", .n_threads = (int)threads};
    if (mdl_load(dir, &mo, &m, &e))
        goto err;
    const ld_config *cfg = mdl_config(m);
    if (read_convs(path, cfg->vocab_size, limit, &cv, &n, &e))
        goto err;
    int longest = 0;
    long n_tokens = 0;
    for (int i = 0; i < n; i++) {
        if (cv[i].n > longest)
            longest = cv[i].n;
        n_tokens += cv[i].n - cv[i].n_prompt;
    }
    if (cfg->max_position_embeddings > 0 && longest > cfg->max_position_embeddings) {
        err_set(&e, "a conversation of %d tokens exceeds the model's context of %d", longest,
                cfg->max_position_embeddings);
        goto err;
    }
    int mb = (longest + PPL_BLOCK - 1) / PPL_BLOCK;
    if (mdl_kv_init(m, mb * PPL_BATCH, PPL_BLOCK, &e))
        goto err;
    nll = malloc((size_t)n * sizeof *nll);
    if (!nll) {
        err_set(&e, "out of memory");
        goto err;
    }
    double total = 0;
    for (int i = 0; i < n; i += PPL_BATCH) {
        int k = n - i < PPL_BATCH ? n - i : PPL_BATCH;
        if (score_batch(m, cv + i, k, mb, cfg->vocab_size, nll + i, &e))
            goto err;
    }
    for (int i = 0; i < n; i++)
        total += nll[i];
    double mean = total / (double)n_tokens;
    if (json) {
        printf("{\"conversations\": %d, \"tokens\": %ld, \"mean_loss\": %.17g, "
               "\"perplexity\": %.17g, \"nll_sum\": [", n, n_tokens, mean, exp(mean));
        for (int i = 0; i < n; i++)
            printf("%s%.17g", i ? ", " : "", nll[i]);
        printf("]}\n");
    } else {
        printf("%d conversations, %ld scored tokens: mean loss %.5f, perplexity %.3f\n", n,
               n_tokens, mean, exp(mean));
    }
    rc = 0;
    goto out;
err:
    fprintf(stderr, "inferd perplexity: %s\n", e.msg);
out:
    free(nll);
    convs_free(cv, n);
    mdl_free(m);
    return rc;
}
