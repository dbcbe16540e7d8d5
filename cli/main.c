/* inferd: one binary, many subcommands (serve, run, generate, tokenize, ...).
 * cli/main.c only dispatches on the first argument; each subcommand's file
 * wires the modules it needs (see cli.h). Used by nobody: this is main(). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include "cli/cli.h"

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

/* One line per subcommand; keep the order of the --help listing. */
static const command commands[] = {
    {"serve", cli_serve, "serve a model behind the OpenAI API (chat, completions, streaming)"},
    {"run", cli_run, "chat with a model in the terminal (default: the bundled demo model)"},
    {"generate", cli_generate, "greedy continuation of token ids (checks against transformers)"},
    {"pull", cli_pull, "download a model from the Hugging Face Hub or ModelScope into the cache"},
    {"list", cli_list, "list cached models (both caches) with revision and size"},
    {"rm", cli_rm, "delete a cached model"},
    {"embed", cli_embed, "pooled vectors / classifier logits of an encoder for token ids"},
    {"bench", cli_bench, "load test an OpenAI-compatible server (throughput, TTFT, ITL)"},
    {"perplexity", cli_perplexity, "mean loss / perplexity over token-id conversations"},
    {"chat-template", cli_chat_template, "render a chat request with a model's chat template"},
    {"tokenize", cli_tokenize, "text on stdin -> token ids (JSON array) with a model's tokenizer"},
    {"detokenize", cli_detokenize, "token ids (JSON array) on stdin -> text"},
};

static void usage(FILE *f)
{
    fprintf(f,
        "inferd — a large-language-model inference server with the OpenAI API\n\n"
        "usage: inferd COMMAND [ARGS...]\n\n"
        "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nRun `inferd COMMAND --help` for the flags of one command.\n");
}

int cli_parse_int(const char *flag, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "inferd: %s expects an integer in [%ld, %ld], got '%s'\n",
                flag, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_double(const char *flag, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) {
        fprintf(stderr, "inferd: %s expects a number, got '%s'\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "inferd: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
