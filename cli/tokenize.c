/* inferd tokenize / detokenize: the tokenizer module on the command line,
 * for scripts and for checking against Hugging Face tokenizers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "cli/cli.h"
#include "tokenizer/tokenizer.h"

static int read_stdin(char **data, size_t *len)
{
    strbuf b = {0};
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0)
        sb_append(&b, buf, n);
    if (ferror(stdin)) {
        sb_free(&b);
        fprintf(stderr, "inferd: cannot read stdin\n");
        return -1;
    }
    *len = b.n;
    *data = sb_steal(&b);
    if (!*data) {
        fprintf(stderr, "inferd: out of memory reading stdin\n");
        return -1;
    }
    return 0;
}

static void tokenize_usage(FILE *f)
{
    fprintf(f,
        "usage: inferd tokenize DIR [--special] [--bench N]\n\n"
        "Reads UTF-8 text on stdin and prints its token ids as one JSON array.\n"
        "DIR is a model folder or a folder holding tokenizer.json (and optionally\n"
        "tokenizer_config.json).\n\n"
        "  --special   add the special tokens of the post-processor (BOS/EOS, CLS/SEP),\n"
        "              as encode(text, add_special_tokens=True) does\n"
        "  --bench N   encode the input N times and print the best time and the\n"
        "              throughput (MB/s, one thread) on stderr\n");
}

int cli_tokenize(int argc, char **argv)
{
    const char *dir = NULL;
    int special = 0;
    long bench = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            tokenize_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--special")) {
            special = 1;
        } else if (!strcmp(argv[i], "--bench") && i + 1 < argc) {
            if (cli_parse_int("--bench", argv[++i], 1, 1000000, &bench))
                return 2;
        } else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "inferd tokenize: unexpected argument '%s'\n\n", argv[i]);
            tokenize_usage(stderr);
            return 2;
        } else {
            dir = argv[i];
        }
    }
    if (!dir) {
        tokenize_usage(stderr);
        return 2;
    }
    inferd_error e = {{0}};
    tok_tokenizer *t = NULL;
    double t0 = now_seconds();
    if (tok_load(dir, &t, &e)) {
        fprintf(stderr, "inferd tokenize: %s\n", e.msg);
        return 1;
    }
    double load_s = now_seconds() - t0;
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 1;
    if (read_stdin(&text, &len))
        goto done;
    double best = 1e30;
    for (long r = 0; r < (bench ? bench : 1); r++) {
        free(ids);
        ids = NULL;
        double s0 = now_seconds();
        if (tok_encode(t, text, len, special, &ids, &n, &e)) {
            fprintf(stderr, "inferd tokenize: %s\n", e.msg);
            goto done;
        }
        double dt = now_seconds() - s0;
        if (dt < best)
            best = dt;
    }
    if (bench) {
        fprintf(stderr, "{\"impl\": \"inferd\", \"bytes\": %zu, \"seconds\": %.6f, \"mb_s\": %.3f, "
                "\"tokens\": %zu, \"load_seconds\": %.3f}\n",
                len, best, (double)len / best / 1e6, n, load_s);
    }
    strbuf out = {0};
    sb_putc(&out, '[');
    for (size_t i = 0; i < n; i++)
        sb_printf(&out, i ? ",%d" : "%d", ids[i]);
    sb_puts(&out, "]\n");
    fwrite(out.p, 1, out.n, stdout);
    sb_free(&out);
    rc = 0;
done:
    free(ids);
    free(text);
    tok_free(t);
    return rc;
}

static void detokenize_usage(FILE *f)
{
    fprintf(f,
        "usage: inferd detokenize DIR [--skip-special]\n\n"
        "Reads a JSON array of token ids on stdin and prints the decoded text.\n"
        "DIR is a model folder or a folder holding tokenizer.json.\n\n"
        "  --skip-special   leave special tokens out, as\n"
        "                   decode(ids, skip_special_tokens=True) does\n");
}

int cli_detokenize(int argc, char **argv)
{
    const char *dir = NULL;
    int skip = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            detokenize_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--skip-special")) {
            skip = 1;
        } else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "inferd detokenize: unexpected argument '%s'\n\n", argv[i]);
            detokenize_usage(stderr);
            return 2;
        } else {
            dir = argv[i];
        }
    }
    if (!dir) {
        detokenize_usage(stderr);
        return 2;
    }
    inferd_error e = {{0}};
    tok_tokenizer *t = NULL;
    char *in = NULL, *text = NULL;
    size_t len, tl;
    int32_t *ids = NULL;
    json_t *arr = NULL;
    int rc = 1;
    if (tok_load(dir, &t, &e)) {
        fprintf(stderr, "inferd detokenize: %s\n", e.msg);
        return 1;
    }
    if (read_stdin(&in, &len))
        goto done;
    json_error_t je;
    arr = json_loadb(in, len, 0, &je);
    if (!json_is_array(arr)) {
        fprintf(stderr, "inferd detokenize: stdin must be a JSON array of token ids\n");
        goto done;
    }
    size_t n = json_array_size(arr);
    ids = malloc((n + 1) * sizeof *ids);
    if (!ids)
        goto done;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
            fprintf(stderr, "inferd detokenize: element %zu is not a token id\n", i);
            goto done;
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    if (tok_decode(t, ids, n, skip, &text, &tl, &e)) {
        fprintf(stderr, "inferd detokenize: %s\n", e.msg);
        goto done;
    }
    fwrite(text, 1, tl, stdout);
    rc = 0;
done:
    json_decref(arr);
    free(ids);
    free(in);
    free(text);
    tok_free(t);
    return rc;
}
