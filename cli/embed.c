/* inferd embed: runs an encoder model (BERT, XLM-RoBERTa, their sequence
 * classifiers) straight on token ids and prints pooled vectors and, for
 * classifiers, logits as JSON. It is how the encoder forward pass is checked
 * against transformers; text input arrives with the BertTokenizer. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/model.h"

static void embed_usage(FILE *f)
{
    fprintf(f,
        "usage: inferd embed MODEL_DIR --ids-json FILE [options]\n\n"
        "Runs an encoder (BertModel, XLMRobertaModel, *ForSequenceClassification; weights\n"
        "from safetensors or pytorch_model.bin) on token ids and prints JSON:\n"
        "  {\"embeddings\": [[...]], \"logits\": [[...]], \"scores\": [[...]], \"labels\": [...]}\n"
        "logits/scores/labels only for classifiers; scores are softmax probabilities (sigmoid\n"
        "for a one-logit cross-encoder).\n\n"
        "  --ids-json FILE     token ids: [[101, ...], ...], or {\"inputs\": [{\"input_ids\": [...],\n"
        "                      \"token_type_ids\": [...]}, ...]}, or {\"input_ids\": [[...]],\n"
        "                      \"token_type_ids\": [[...]]}; '-' reads stdin. Each sequence\n"
        "                      carries its special tokens ([CLS] ... [SEP])\n"
        "  --pooling MODE      cls, mean, last or pooler (BertPooler); default: the\n"
        "                      sentence-transformers config (1_Pooling) if present, else cls\n"
        "  --normalize         L2-normalize the vectors (default: on when modules.json has\n"
        "  --no-normalize      a Normalize module)\n"
        "  --threads N         CPU threads (default: all cores)\n"
        "  --device DEV        cpu (default) or cuda\n"
        "  -h, --help          this text\n");
}

static int ids_of(json_t *arr, int32_t **out, int *n, const char *what)
{
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > (1u << 24)) {
        fprintf(stderr, "inferd embed: %s must be a non-empty list of token ids\n", what);
        return -1;
    }
    *n = (int)json_array_size(arr);
    *out = malloc((size_t)*n * sizeof **out);
    if (!*out)
        return -1;
    for (int i = 0; i < *n; i++) {
        json_t *v = json_array_get(arr, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > INT32_MAX) {
            fprintf(stderr, "inferd embed: %s[%d] is not a token id\n", what, i);
            free(*out);
            *out = NULL;
            return -1;
        }
        (*out)[i] = (int32_t)json_integer_value(v);
    }
    return 0;
}

typedef struct seqs {
    int n;
    int32_t *q_start;   /* [n + 1] */
    int32_t *tokens;
    int32_t *types;     /* NULL when no sequence gave token_type_ids */
} seqs;

static void seqs_free(seqs *s)
{
    free(s->q_start);
    free(s->tokens);
    free(s->types);
}

/* Appends one sequence; types may be NULL (zeros). */
static int seqs_add(seqs *s, json_t *ids, json_t *types, int idx)
{
    char what[64];
    int32_t *a = NULL, *t = NULL;
    int na, nt = 0;
    snprintf(what, sizeof what, "sequence %d input_ids", idx);
    if (ids_of(ids, &a, &na, what))
        return -1;
    if (types && !json_is_null(types)) {
        snprintf(what, sizeof what, "sequence %d token_type_ids", idx);
        if (ids_of(types, &t, &nt, what) || nt != na) {
            if (t)
                fprintf(stderr, "inferd embed: sequence %d has %d ids but %d token types\n",
                        idx, na, nt);
            free(a);
            free(t);
            return -1;
        }
    }
    int total = s->q_start[s->n];
    int32_t *qs = realloc(s->q_start, (size_t)(s->n + 2) * sizeof *qs);
    if (qs)
        s->q_start = qs;
    int32_t *tok = realloc(s->tokens, (size_t)(total + na) * sizeof *tok);
    if (tok)
        s->tokens = tok;
    int32_t *ty = realloc(s->types, (size_t)(total + na) * sizeof *ty);
    if (ty)
        s->types = ty;
    if (!qs || !tok || !ty) {
        free(a);
        free(t);
        return -1;
    }
    memcpy(s->tokens + total, a, (size_t)na * sizeof *a);
    for (int i = 0; i < na; i++)
        s->types[total + i] = t ? t[i] : 0;
    s->q_start[s->n + 1] = total + na;
    s->n++;
    free(a);
    free(t);
    return 0;
}

static int parse_input(json_t *root, seqs *s)
{
    s->q_start = calloc(1, sizeof *s->q_start);
    if (!s->q_start)
        return -1;
    json_t *list = root, *types = NULL;
    if (json_is_object(root)) {
        list = json_object_get(root, "inputs");
        if (!list) {
            list = json_object_get(root, "input_ids");
            types = json_object_get(root, "token_type_ids");
        }
    }
    if (!json_is_array(list) || json_array_size(list) == 0) {
        fprintf(stderr, "inferd embed: --ids-json holds no sequences (see --help for the "
                        "accepted shapes)\n");
        return -1;
    }
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x) {
        json_t *ids = x, *tt = json_array_get(types, i);
        if (json_is_object(x)) {
            ids = json_object_get(x, "input_ids");
            tt = json_object_get(x, "token_type_ids");
        }
        if (seqs_add(s, ids, tt, (int)i))
            return -1;
    }
    return 0;
}

static void print_rows(const char *key, const float *v, int rows, int cols, int first)
{
    printf("%s\"%s\": [", first ? "" : ", ", key);
    for (int r = 0; r < rows; r++) {
        printf("%s[", r ? ", " : "");
        for (int i = 0; i < cols; i++)
            printf("%s%.9g", i ? ", " : "", v[(size_t)r * cols + i]);
        printf("]");
    }
    printf("]");
}

static const char *pooling_name(ld_pooling p)
{
    static const char *names[] = {"cls", "mean", "last", "pooler"};
    return names[p];
}

int cli_embed(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ids-json", required_argument, 0, 'i'}, {"pooling", required_argument, 0, 'p'},
        {"normalize", no_argument, 0, 'N'},      {"no-normalize", no_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'},  {"help", no_argument, 0, 'h'},
        {"device", required_argument, 0, 'd'},   {0, 0, 0, 0},
    };
    const char *ids_path = NULL;
    int pooling = -1, normalize = -1;
    long threads = 0;
    const char *device = "cpu";
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i': ids_path = optarg; break;
        case 'p':
            for (int k = 0; k < 4; k++)
                if (!strcmp(optarg, pooling_name((ld_pooling)k)))
                    pooling = k;
            if (pooling < 0) {
                fprintf(stderr, "inferd embed: --pooling must be cls, mean, last or pooler, "
                                "got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'N': normalize = 1; break;
        case 'n': normalize = 0; break;
        case 't':
            if (cli_parse_int("--threads", optarg, 0, 4096, &threads))
                return 2;
            break;
        case 'd': device = optarg; break;
        case 'h': embed_usage(stdout); return 0;
        default: embed_usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || !ids_path) {
        embed_usage(stderr);
        return 2;
    }
    const char *dir = argv[optind];
    json_error_t je;
    json_t *root = strcmp(ids_path, "-") ? json_load_file(ids_path, 0, &je)
                                         : json_loadf(stdin, 0, &je);
    if (!root) {
        fprintf(stderr, "inferd embed: %s: %s (line %d)\n", ids_path, je.text, je.line);
        return 1;
    }
    seqs s = {0};
    mdl_encoder *m = NULL;
    float *pooled = NULL, *logits = NULL;
    int rc = 1;
    if (parse_input(root, &s))
        goto out;
    inferd_error e = {{0}};
    mdl_options mo = {.device = device, .n_threads = (int)threads};
    if (mdl_encoder_load(dir, &mo, &m, &e)) {
        fprintf(stderr, "inferd embed: %s\n", e.msg);
        goto out;
    }
    const ld_encoder_config *cfg = mdl_encoder_config(m);
    ld_pooling how = pooling >= 0 ? (ld_pooling)pooling : cfg->pooling;
    int norm = normalize >= 0 ? normalize : cfg->normalize;
    pooled = malloc((size_t)s.n * cfg->hidden_size * sizeof *pooled);
    if (cfg->num_labels)
        logits = malloc((size_t)s.n * cfg->num_labels * sizeof *logits);
    if (!pooled || (cfg->num_labels && !logits)) {
        fprintf(stderr, "inferd embed: out of memory\n");
        goto out;
    }
    mdl_enc_batch b = {.n_seqs = s.n, .q_start = s.q_start, .tokens = s.tokens,
                       .token_types = s.types};
    if (mdl_encoder_forward(m, &b, how, norm, pooled, logits, &e)) {
        fprintf(stderr, "inferd embed: %s\n", e.msg);
        goto out;
    }
    printf("{\"architecture\": \"%s\", \"pooling\": \"%s\", \"normalized\": %s, ",
           cfg->architecture, pooling_name(how), norm ? "true" : "false");
    print_rows("embeddings", pooled, s.n, cfg->hidden_size, 1);
    if (logits) {
        int nl = cfg->num_labels;
        print_rows("logits", logits, s.n, nl, 0);
        /* scores: sigmoid of a cross-encoder's single logit, else softmax */
        for (int r = 0; r < s.n; r++) {
            float *l = logits + (size_t)r * nl, mx = l[0], sum = 0.0f;
            for (int i = 0; i < nl; i++)
                mx = l[i] > mx ? l[i] : mx;
            for (int i = 0; i < nl; i++)
                sum += expf(l[i] - mx);
            for (int i = 0; i < nl; i++)
                l[i] = nl == 1 ? 1.0f / (1.0f + expf(-l[i])) : expf(l[i] - mx) / sum;
        }
        print_rows("scores", logits, s.n, nl, 0);
        json_t *labels = json_array();
        for (int i = 0; i < nl; i++)
            json_array_append_new(labels, json_string(cfg->labels[i]));
        char *lt = json_dumps(labels, JSON_COMPACT);
        printf(", \"labels\": %s", lt ? lt : "[]");
        free(lt);
        json_decref(labels);
    }
    if (cfg->task[0]) {
        json_t *t = json_string(cfg->task);
        char *ts = json_dumps(t, JSON_ENCODE_ANY);
        printf(", \"task\": %s", ts ? ts : "null");
        free(ts);
        json_decref(t);
    }
    printf("}\n");
    rc = 0;
out:
    free(pooled);
    free(logits);
    mdl_encoder_free(m);
    seqs_free(&s);
    json_decref(root);
    return rc;
}
