/* inferd pull / list / rm: the model cache from the command line. The work
 * is in hub/; this file only turns flags into hub_options. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "hub/hub.h"

static const char pull_help[] =
    "usage: inferd pull REPO_ID [flags]\n\n"
    "Download a model from the Hugging Face Hub (or ModelScope) into the cache\n"
    "huggingface_hub / modelscope use, and print its local folder on stdout.\n"
    "Files already cached are not downloaded again; an interrupted download\n"
    "resumes where it stopped.\n\n"
    "flags:\n"
    "  --revision REV     branch, tag or commit (default: main; ModelScope: master)\n"
    "  --source hf|modelscope\n"
    "                     where to pull from (default: $INFERD_MODEL_SOURCE, or\n"
    "                     modelscope when VLLM_USE_MODELSCOPE=true, else hf)\n"
    "  --include GLOB     only files matching GLOB (repeatable; '*' crosses '/').\n"
    "                     Default: what serving needs — *.json, *.safetensors,\n"
    "                     tokenizer files, *.jinja, *.txt, *.model, *.tiktoken;\n"
    "                     .bin weights only when the repo has no safetensors\n"
    "  --exclude GLOB     skip files matching GLOB (repeatable)\n"
    "  --token TOKEN      Hugging Face token (default: $HF_TOKEN, then the file\n"
    "                     `huggingface-cli login` wrote); ModelScope: $MODELSCOPE_API_TOKEN\n"
    "  --endpoint URL     hub URL (default: $HF_ENDPOINT or https://huggingface.co;\n"
    "                     ModelScope: $MODELSCOPE_URL_SCHEME$MODELSCOPE_DOMAIN)\n"
    "  --cache-dir DIR    cache folder (default: $HF_HUB_CACHE, $HF_HOME/hub,\n"
    "                     ~/.cache/huggingface/hub; ModelScope: $MODELSCOPE_CACHE,\n"
    "                     ~/.cache/modelscope/hub)\n"
    "  --offline          use the cache only (also HF_HUB_OFFLINE=1)\n"
    "  --verify           re-hash cached files against the hub's checksums\n"
    "  --max-workers N    parallel downloads (default 8)\n"
    "  --quiet            no progress output\n\n"
    "environment: HF_ENDPOINT (mirrors such as https://hf-mirror.com), HF_TOKEN,\n"
    "HF_TOKEN_PATH, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, MODELSCOPE_DOMAIN,\n"
    "MODELSCOPE_URL_SCHEME, MODELSCOPE_CACHE, MODELSCOPE_API_TOKEN,\n"
    "INFERD_MODEL_SOURCE, VLLM_USE_MODELSCOPE, INFERD_HUB_BACKOFF (retry backoff\n"
    "base in seconds, default 1).\n";

/* Flags pull, list and rm share. Returns the index of the next argument
 * consumed, 0 if argv[i] is not one of them, -1 on a bad value. */
static int common_flag(int argc, char **argv, int i, hub_options *o, const char ***inc,
                       const char ***exc)
{
    const char *a = argv[i];
    int has = i + 1 < argc;
#define NEED() do { if (!has) { fprintf(stderr, "inferd: %s needs a value\n", a); return -1; } } while (0)
    if (!strcmp(a, "--revision")) { NEED(); o->revision = argv[i + 1]; return i + 2; }
    if (!strcmp(a, "--token")) { NEED(); o->token = argv[i + 1]; return i + 2; }
    if (!strcmp(a, "--endpoint")) { NEED(); o->endpoint = argv[i + 1]; return i + 2; }
    if (!strcmp(a, "--cache-dir")) { NEED(); o->cache_dir = argv[i + 1]; return i + 2; }
    if (!strcmp(a, "--source")) {
        NEED();
        const char *s = argv[i + 1];
        if (!strcmp(s, "hf") || !strcmp(s, "huggingface")) o->source = HUB_SOURCE_HF;
        else if (!strcmp(s, "modelscope") || !strcmp(s, "ms")) o->source = HUB_SOURCE_MODELSCOPE;
        else { fprintf(stderr, "inferd: --source expects hf or modelscope, got '%s'\n", s); return -1; }
        return i + 2;
    }
    if (inc && (!strcmp(a, "--include") || !strcmp(a, "--exclude"))) {
        NEED();
        int is_inc = a[2] == 'i';
        size_t *n = is_inc ? &o->n_include : &o->n_exclude;
        const char ***arr = is_inc ? inc : exc;
        const char **grown = realloc(*arr, (*n + 1) * sizeof **arr);
        if (!grown) return -1;
        grown[(*n)++] = argv[i + 1];
        *arr = grown;
        if (is_inc) o->include = grown; else o->exclude = grown;
        return i + 2;
    }
    if (!strcmp(a, "--offline")) { o->offline = 1; return i + 1; }
    if (!strcmp(a, "--verify")) { o->verify = 1; return i + 1; }
    if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) { o->quiet = 1; return i + 1; }
    if (!strcmp(a, "--max-workers")) {
        NEED();
        long v;
        if (cli_parse_int(a, argv[i + 1], 1, 64, &v)) return -1;
        o->max_workers = (int)v;
        return i + 2;
    }
#undef NEED
    return 0;
}

int cli_pull(int argc, char **argv)
{
    hub_options o;
    hub_options_init(&o);
    const char **inc = NULL, **exc = NULL, *repo = NULL;
    inferd_error e = {{0}};
    char *dir = NULL;
    int rc = 2;
    for (int i = 1; i < argc;) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(pull_help, stdout);
            rc = 0;
            goto done;
        }
        int next = common_flag(argc, argv, i, &o, &inc, &exc);
        if (next < 0) goto done;
        if (next > 0) { i = next; continue; }
        if (argv[i][0] == '-' || repo) {
            fprintf(stderr, "inferd pull: unexpected argument '%s' (see inferd pull --help)\n",
                    argv[i]);
            goto done;
        }
        repo = argv[i++];
    }
    if (!repo) {
        fputs(pull_help, stderr);
        goto done;
    }
    if (hub_pull(repo, &o, &dir, &e)) {
        fprintf(stderr, "inferd pull: %s\n", e.msg);
        rc = 1;
        goto done;
    }
    printf("%s\n", dir);
    rc = 0;
done:
    free(dir);
    free(inc);
    free(exc);
    return rc;
}

int cli_list(int argc, char **argv)
{
    hub_options o;
    hub_options_init(&o);
    inferd_error e = {{0}};
    for (int i = 1; i < argc;) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: inferd list [--cache-dir DIR]\n\n"
                   "List the models in the Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub)\n"
                   "and the ModelScope cache ($MODELSCOPE_CACHE) with revision and size.\n");
            return 0;
        }
        int next = common_flag(argc, argv, i, &o, NULL, NULL);
        if (next <= 0) {
            if (!next) fprintf(stderr, "inferd list: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
        i = next;
    }
    return hub_list(stdout, &o, &e) < 0 ? (fprintf(stderr, "inferd list: %s\n", e.msg), 1) : 0;
}

int cli_rm(int argc, char **argv)
{
    hub_options o;
    hub_options_init(&o);
    inferd_error e = {{0}};
    const char *repo = NULL;
    for (int i = 1; i < argc;) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: inferd rm REPO_ID [--source hf|modelscope] [--cache-dir DIR]\n\n"
                   "Delete a cached model (all its revisions) from the cache of one source.\n");
            return 0;
        }
        int next = common_flag(argc, argv, i, &o, NULL, NULL);
        if (next < 0) return 2;
        if (next > 0) { i = next; continue; }
        if (argv[i][0] == '-' || repo) {
            fprintf(stderr, "inferd rm: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
        repo = argv[i++];
    }
    if (!repo) {
        fprintf(stderr, "usage: inferd rm REPO_ID\n");
        return 2;
    }
    if (hub_rm(repo, &o, &e)) {
        fprintf(stderr, "inferd rm: %s\n", e.msg);
        return 1;
    }
    fprintf(stderr, "removed %s\n", repo);
    return 0;
}
