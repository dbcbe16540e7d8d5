/* inferd generate: greedy continuation of a prompt given as token ids, run
 * straight on the model (no engine, no tokenizer). It is how the forward pass
 * is checked against Hugging Face transformers. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/model.h"

#define GEN_BLOCK 16

static void generate_usage(FILE *f)
{
    fprintf(f,
        "usage: inferd generate --model DIR --prompt-ids IDS [options]\n\n"
        "Greedy continuation of a prompt of token ids.\n\n"
        "  --model DIR         Hugging Face model folder (config.json + safetensors)\n"
        "  --prompt-ids IDS    comma-separated token ids, e.g. 1,2,3\n"
        "  --max-tokens N      tokens to generate (default 16)\n"
        "  --threads N         CPU threads (default: all cores)\n"
        "  --device DEV        cpu (default) or cuda\n"
        "  --matmul-precision P  float32 (default) or bfloat16: activations rounded to\n"
        "                      bf16 for the weight products (faster; vLLM's precision)\n"
        "  --prefill-chunk N   run the prompt N tokens per step (chunked prefill: later\n"
        "                      chunks attend to the cached earlier ones); default: all\n"
        "  --timing            print prefill and decode speed to stderr\n"
        "  --json              print {\"token_ids\": [...], \"top_logprobs\": [[id, lp], ...]}\n"
        "                      where top_logprobs are the 10 most likely next tokens\n"
        "                      after the prompt (natural log)\n"
        "  -h, --help          this text\n");
}

static int parse_ids(const char *s, int32_t **ids, int *n)
{
    int cap = 16, k = 0;
    int32_t *v = malloc((size_t)cap * sizeof *v);
    const char *p = s;
    while (v && *p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 0 || x > INT32_MAX || (*end && *end != ',')) {
            fprintf(stderr, "inferd generate: --prompt-ids expects comma-separated "
                            "non-negative integers, got '%s'\n", s);
            free(v);
            return -1;
        }
        if (k == cap) {
            cap *= 2;
            int32_t *nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv)
                break;
            v = nv;
        }
        v[k++] = (int32_t)x;
        p = *end ? end + 1 : end;
    }
    if (k == 0) {
        fprintf(stderr, "inferd generate: --prompt-ids is empty\n");
        free(v);
        return -1;
    }
    *ids = v;
    *n = k;
    return 0;
}

/* Runs rows [from, to) of seq through the model; logits of the last row. */
static int step(mdl_model *m, const int32_t *seq, int from, int to, const int32_t *table,
                int max_blocks, float *logits, inferd_error *e)
{
    int n = to - from;
    int32_t *pos = malloc((size_t)n * sizeof *pos), *slot = malloc((size_t)n * sizeof *slot);
    int rc = -1;
    if (!pos || !slot) {
        err_set(e, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        pos[i] = from + i;
        slot[i] = table[pos[i] / GEN_BLOCK] * GEN_BLOCK + pos[i] % GEN_BLOCK;
    }
    int32_t q_start[2] = {0, n}, ctx = to, last = n - 1;
    mdl_batch b = {
        .n_tokens = n, .tokens = seq + from, .pos = pos, .slot = slot, .n_seqs = 1,
        .q_start = q_start, .ctx_len = &ctx, .block_table = table, .max_blocks = max_blocks,
        .n_logits = 1, .logit_rows = &last,
    };
    rc = mdl_forward(m, &b, logits, e);
out:
    free(pos);
    free(slot);
    return rc;
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

int cli_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"prompt-ids", required_argument, 0, 'p'},
        {"max-tokens", required_argument, 0, 'n'}, {"threads", required_argument, 0, 't'},
        {"json", no_argument, 0, 'j'}, {"timing", no_argument, 0, 'T'}, {"device", required_argument, 0, 'd'},
        {"prefill-chunk", required_argument, 0, 'c'},
        {"matmul-precision", required_argument, 0, 'P'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *dir = NULL, *ids_s = NULL, *device = "cpu", *precision = NULL;
    long max_tokens = 16, threads = 0, chunk = 0;
    int json = 0, timing = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': dir = optarg; break;
        case 'p': ids_s = optarg; break;
        case 'n': if (cli_parse_int("--max-tokens", optarg, 0, 1 << 20, &max_tokens)) return 2; break;
        case 't': if (cli_parse_int("--threads", optarg, 0, 1024, &threads)) return 2; break;
        case 'j': json = 1; break;
        case 'T': timing = 1; break;
        case 'd': device = optarg; break;
        case 'P': precision = optarg; break;
        case 'c': if (cli_parse_int("--prefill-chunk", optarg, 1, 1 << 20, &chunk)) return 2; break;
        case 'h': generate_usage(stdout); return 0;
        default: generate_usage(stderr); return 2;
        }
    }
    if (!dir || !ids_s) {
        fprintf(stderr, "inferd generate: --model and --prompt-ids are required\n\n");
        generate_usage(stderr);
        return 2;
    }
    int32_t *prompt = NULL, *seq = NULL, *table = NULL;
    float *logits = NULL;
    int n_prompt, rc = 1;
    mdl_model *m = NULL;
    inferd_error e = {{0}};
    if (parse_ids(ids_s, &prompt, &n_prompt))
        return 2;
    mdl_options mo = {.device = device, .n_threads = (int)threads,
                      .matmul_precision = precision};
    if (mdl_load(dir, &mo, &m, &e))
        goto err;
    const ld_config *cfg = mdl_config(m);
    int total = n_prompt + (int)max_tokens;
    if (cfg->max_position_embeddings > 0 && total > cfg->max_position_embeddings) {
        err_set(&e, "prompt (%d tokens) + max tokens (%ld) exceeds the model's context of %d",
                n_prompt, max_tokens, cfg->max_position_embeddings);
        goto err;
    }
    int blocks = (total + GEN_BLOCK - 1) / GEN_BLOCK;
    if (mdl_kv_init(m, blocks, GEN_BLOCK, &e))
        goto err;
    seq = malloc((size_t)total * sizeof *seq);
    table = malloc((size_t)blocks * sizeof *table);
    logits = malloc((size_t)cfg->vocab_size * sizeof *logits);
    if (!seq || !table || !logits) {
        err_set(&e, "out of memory");
        goto err;
    }
    for (int i = 0; i < blocks; i++)
        table[i] = i;
    memcpy(seq, prompt, (size_t)n_prompt * sizeof *seq);
    double t0 = now_seconds();
    for (int from = 0; from < n_prompt;) {
        int to = chunk > 0 && n_prompt - from > chunk ? from + (int)chunk : n_prompt;
        if (step(m, seq, from, to, table, blocks, logits, &e))
            goto err;
        from = to;
    }
    double t1 = now_seconds();
    /* top 10 of the first distribution, natural-log softmax in double */
    int top[10], n_top = cfg->vocab_size < 10 ? cfg->vocab_size : 10;
    double top_lp[10], mx = -INFINITY, sum = 0;
    for (int i = 0; i < cfg->vocab_size; i++)
        if (logits[i] > mx)
            mx = logits[i];
    for (int i = 0; i < cfg->vocab_size; i++)
        sum += exp((double)logits[i] - mx);
    for (int k = 0; k < n_top; k++) {
        int best = -1;
        for (int i = 0; i < cfg->vocab_size; i++) {
            int used = 0;
            for (int j = 0; j < k; j++)
                used |= top[j] == i;
            if (!used && (best < 0 || logits[i] > logits[best]))
                best = i;
        }
        top[k] = best;
        top_lp[k] = (double)logits[best] - mx - log(sum);
    }
    int len = n_prompt;
    for (long t = 0; t < max_tokens; t++) {
        seq[len] = argmax(logits, cfg->vocab_size);
        len++;
        if (t + 1 < max_tokens && step(m, seq, len - 1, len, table, blocks, logits, &e))
            goto err;
    }
    double t2 = now_seconds();
    if (timing && max_tokens > 1)
        fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s); "
                        "decode: %ld tokens in %.3f s (%.2f tok/s)\n",
                n_prompt, t1 - t0, n_prompt / (t1 - t0), max_tokens - 1, t2 - t1,
                (max_tokens - 1) / (t2 - t1));
    if (json) {
        printf("{\"token_ids\": [");
        for (int i = n_prompt; i < len; i++)
            printf("%s%d", i > n_prompt ? ", " : "", seq[i]);
        printf("], \"top_logprobs\": [");
        for (int k = 0; k < n_top; k++)
            printf("%s[%d, %.9g]", k ? ", " : "", top[k], top_lp[k]);
        printf("]}\n");
    } else {
        for (int i = n_prompt; i < len; i++)
            printf("%s%d", i > n_prompt ? " " : "", seq[i]);
        printf("\n");
    }
    rc = 0;
    goto out;
err:
    fprintf(stderr, "inferd generate: %s\n", e.msg);
out:
    free(prompt);
    free(seq);
    free(table);
    free(logits);
    mdl_free(m);
    return rc;
}
