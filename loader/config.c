/* config.json and generation_config.json. Real checkpoints come in two
 * dialects: transformers 4.x (rope_theta + rope_scaling, torch_dtype) and 5.x
 * (rope_parameters, dtype); both are read into one ld_config. */
#include "loader/loader.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *architecture, *model_type;
    ld_arch arch;
} known_archs[] = {
    {"LlamaForCausalLM", "llama", LD_ARCH_LLAMA},
    {"MistralForCausalLM", "mistral", LD_ARCH_MISTRAL},
    {"Qwen2ForCausalLM", "qwen2", LD_ARCH_QWEN2},
    {"Qwen3ForCausalLM", "qwen3", LD_ARCH_QWEN3},
};
#define N_ARCHS (sizeof known_archs / sizeof known_archs[0])

/* Reads an optional integer key; refuses other types and values outside
 * [lo, hi] so that later size arithmetic cannot overflow. */
static int get_int(json_t *o, const char *key, int required, long long lo, long long hi,
                   int *out, const char *what, inferd_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) {
            err_set(e, "%s: missing \"%s\"", what, key);
            return -1;
        }
        return 0;
    }
    if (!json_is_integer(v)) {
        err_set(e, "%s: \"%s\" must be an integer", what, key);
        return -1;
    }
    long long x = json_integer_value(v);
    if (x < lo || x > hi) {
        err_set(e, "%s: \"%s\" = %lld is out of range [%lld, %lld]", what, key, x, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int get_num(json_t *o, const char *key, double *out, const char *what, inferd_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v)) {
        err_set(e, "%s: \"%s\" must be a number", what, key);
        return -1;
    }
    double x = json_number_value(v);
    if (!isfinite(x)) {
        err_set(e, "%s: \"%s\" must be finite", what, key);
        return -1;
    }
    *out = x;
    return 0;
}

static int get_bool(json_t *o, const char *key, int *out, const char *what, inferd_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v)) {
        err_set(e, "%s: \"%s\" must be true or false", what, key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

/* eos_token_id is an int or a list of ints. */
static int get_ids(json_t *o, const char *key, int *ids, int *n, const char *what,
                   inferd_error *e)
{
    json_t *v = json_object_get(o, key);
    *n = 0;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
            err_set(e, "%s: \"%s\" must be a token id", what, key);
            return -1;
        }
        ids[(*n)++] = (int)json_integer_value(v);
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) > 16) {
        err_set(e, "%s: \"%s\" must be an integer or a list of at most 16 integers", what,
                key);
        return -1;
    }
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_integer(x) || json_integer_value(x) < 0 ||
            json_integer_value(x) > INT32_MAX) {
            err_set(e, "%s: \"%s\" must hold token ids", what, key);
            return -1;
        }
        ids[(*n)++] = (int)json_integer_value(x);
    }
    return 0;
}

static int parse_dtype(json_t *root, inferd_dtype *out, const char *what, inferd_error *e)
{
    json_t *v = json_object_get(root, "dtype");
    if (!v || json_is_null(v))
        v = json_object_get(root, "torch_dtype");
    *out = DT_F32;
    if (!v || json_is_null(v))
        return 0;
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    if (strncmp(s, "torch.", 6) == 0)
        s += 6;
    if (strcmp(s, "bfloat16") == 0)
        *out = DT_BF16;
    else if (strcmp(s, "float16") == 0 || strcmp(s, "half") == 0)
        *out = DT_F16;
    else if (strcmp(s, "float32") == 0 || strcmp(s, "float") == 0)
        *out = DT_F32;
    else {
        err_set(e, "%s: dtype '%s' is not supported (supported: bfloat16, float16, float32)",
                what, s);
        return -1;
    }
    return 0;
}

/* rope_parameters (5.x) holds rope_theta and the scaling together; 4.x has
 * rope_theta at the top and rope_scaling ("type" or "rope_type") beside it. */
static int parse_rope(json_t *root, ld_config *c, const char *what, inferd_error *e)
{
    ld_rope *r = &c->rope;
    memset(r, 0, sizeof *r);
    r->type = LD_ROPE_DEFAULT;
    r->theta = 10000.0;
    r->beta_fast = 32.0;
    r->beta_slow = 1.0;
    r->partial_rotary_factor = 1.0;
    if (get_num(root, "rope_theta", &r->theta, what, e) ||
        get_num(root, "partial_rotary_factor", &r->partial_rotary_factor, what, e))
        return -1;
    json_t *p = json_object_get(root, "rope_parameters");
    if (!p || json_is_null(p))
        p = json_object_get(root, "rope_scaling");
    if (!p || json_is_null(p))
        return 0;
    if (!json_is_object(p)) {
        err_set(e, "%s: \"rope_parameters\"/\"rope_scaling\" must be an object", what);
        return -1;
    }
    if (get_num(p, "rope_theta", &r->theta, what, e) ||
        get_num(p, "partial_rotary_factor", &r->partial_rotary_factor, what, e) ||
        get_num(p, "factor", &r->factor, what, e) ||
        get_num(p, "low_freq_factor", &r->low_freq_factor, what, e) ||
        get_num(p, "high_freq_factor", &r->high_freq_factor, what, e) ||
        get_num(p, "beta_fast", &r->beta_fast, what, e) ||
        get_num(p, "beta_slow", &r->beta_slow, what, e) ||
        get_num(p, "attention_factor", &r->attention_factor, what, e) ||
        get_num(p, "mscale", &r->mscale, what, e) ||
        get_num(p, "mscale_all_dim", &r->mscale_all_dim, what, e) ||
        get_int(p, "original_max_position_embeddings", 0, 1, 1 << 30,
                &r->original_max_position_embeddings, what, e))
        return -1;
    json_t *t = json_object_get(p, "rope_type");
    if (!t || json_is_null(t))
        t = json_object_get(p, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "default";
    if (strcmp(type, "default") == 0) {
        r->type = LD_ROPE_DEFAULT;
    } else if (strcmp(type, "linear") == 0) {
        r->type = LD_ROPE_LINEAR;
    } else if (strcmp(type, "llama3") == 0) {
        r->type = LD_ROPE_LLAMA3;
        if (r->low_freq_factor <= 0 || r->high_freq_factor <= r->low_freq_factor ||
            r->original_max_position_embeddings <= 0) {
            err_set(e, "%s: llama3 rope needs low_freq_factor > 0, high_freq_factor > "
                       "low_freq_factor and original_max_position_embeddings",
                    what);
            return -1;
        }
    } else if (strcmp(type, "yarn") == 0) {
        r->type = LD_ROPE_YARN;
        if (!r->original_max_position_embeddings)
            r->original_max_position_embeddings = c->max_position_embeddings;
    } else {
        err_set(e, "%s: rope type '%s' is not supported (supported: default, linear, llama3, "
                   "yarn)",
                what, type);
        return -1;
    }
    if (r->type != LD_ROPE_DEFAULT && !(r->factor > 0)) {
        err_set(e, "%s: rope type '%s' needs a positive \"factor\"", what, type);
        return -1;
    }
    if (!(r->theta > 0) || !(r->partial_rotary_factor > 0 && r->partial_rotary_factor <= 1)) {
        err_set(e, "%s: rope_theta must be positive and partial_rotary_factor in (0, 1]", what);
        return -1;
    }
    return 0;
}

static int parse_arch(json_t *root, ld_config *c, const char *what, inferd_error *e)
{
    json_t *archs = json_object_get(root, "architectures");
    json_t *mt = json_object_get(root, "model_type");
    const char *arch = json_is_array(archs) && json_is_string(json_array_get(archs, 0))
                           ? json_string_value(json_array_get(archs, 0))
                           : NULL;
    const char *model_type = json_is_string(mt) ? json_string_value(mt) : "";
    snprintf(c->architecture, sizeof c->architecture, "%s", arch ? arch : "");
    snprintf(c->model_type, sizeof c->model_type, "%s", model_type);
    for (size_t i = 0; i < N_ARCHS; i++)
        if (arch ? strcmp(arch, known_archs[i].architecture) == 0
                 : strcmp(model_type, known_archs[i].model_type) == 0) {
            c->arch = known_archs[i].arch;
            return 0;
        }
    strbuf names = {0};
    for (size_t i = 0; i < N_ARCHS; i++)
        sb_printf(&names, "%s%s", i ? ", " : "", known_archs[i].architecture);
    if (arch || *model_type)
        err_set(e, "%s: unsupported architecture '%s' (supported: %s)", what,
                arch ? arch : model_type, names.p ? names.p : "");
    else
        err_set(e, "%s: no \"architectures\" or \"model_type\"; cannot tell which model this "
                   "is",
                what);
    sb_free(&names);
    return -1;
}

int ld_config_parse(const char *json, size_t len, const char *what, ld_config *c,
                    inferd_error *e)
{
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root) {
        err_set(e, "%s: not valid JSON: %s (line %d, column %d)", what, je.text, je.line,
                je.column);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(root)) {
        err_set(e, "%s: must be a JSON object", what);
        goto out;
    }
    /* Bounds keep every product of dimensions inside 64 bits. */
    const long long big = 1 << 24;
    c->num_key_value_heads = 0;
    c->head_dim = 0;
    c->max_position_embeddings = 2048;
    c->rms_norm_eps = 1e-6;
    c->bos_token_id = -1;
    snprintf(c->hidden_act, sizeof c->hidden_act, "silu");
    if (parse_arch(root, c, what, e) ||
        get_int(root, "vocab_size", 1, 1, big, &c->vocab_size, what, e) ||
        get_int(root, "hidden_size", 1, 1, 1 << 17, &c->hidden_size, what, e) ||
        get_int(root, "intermediate_size", 1, 1, 1 << 20, &c->intermediate_size, what, e) ||
        get_int(root, "num_hidden_layers", 1, 1, 4096, &c->num_hidden_layers, what, e) ||
        get_int(root, "num_attention_heads", 1, 1, 4096, &c->num_attention_heads, what, e) ||
        get_int(root, "num_key_value_heads", 0, 1, 4096, &c->num_key_value_heads, what, e) ||
        get_int(root, "head_dim", 0, 1, 4096, &c->head_dim, what, e) ||
        get_int(root, "max_position_embeddings", 0, 1, 1 << 30, &c->max_position_embeddings,
                what, e) ||
        get_num(root, "rms_norm_eps", &c->rms_norm_eps, what, e) ||
        get_bool(root, "tie_word_embeddings", &c->tie_word_embeddings, what, e) ||
        get_bool(root, "attention_bias", &c->attention_bias, what, e) ||
        get_bool(root, "mlp_bias", &c->mlp_bias, what, e) ||
        get_int(root, "bos_token_id", 0, 0, INT32_MAX, &c->bos_token_id, what, e) ||
        get_ids(root, "eos_token_id", c->eos_token_ids, &c->n_eos, what, e) ||
        parse_dtype(root, &c->dtype, what, e))
        goto out;
    if (!c->num_key_value_heads)
        c->num_key_value_heads = c->num_attention_heads;
    if (c->num_attention_heads % c->num_key_value_heads) {
        err_set(e, "%s: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)",
                what, c->num_attention_heads, c->num_key_value_heads);
        goto out;
    }
    if (!c->head_dim) {
        if (c->hidden_size % c->num_attention_heads) {
            err_set(e, "%s: hidden_size (%d) is not a multiple of num_attention_heads (%d) and "
                       "no head_dim is given",
                    what, c->hidden_size, c->num_attention_heads);
            goto out;
        }
        c->head_dim = c->hidden_size / c->num_attention_heads;
    }
    if (!(c->rms_norm_eps > 0)) {
        err_set(e, "%s: rms_norm_eps must be positive", what);
        goto out;
    }
    switch (c->arch) {
    case LD_ARCH_QWEN2:
        c->attention_bias = 1; /* Qwen2 always has q/k/v biases, no key for it */
        c->o_bias = 0;
        break;
    case LD_ARCH_LLAMA:
    case LD_ARCH_QWEN3:
        c->o_bias = c->attention_bias;
        break;
    case LD_ARCH_MISTRAL:
        c->attention_bias = c->o_bias = 0;
        break;
    }
    if (c->mlp_bias) {
        err_set(e, "%s: mlp_bias is not supported", what);
        goto out;
    }
    json_t *act = json_object_get(root, "hidden_act");
    if (act && !json_is_null(act)) {
        if (!json_is_string(act)) {
            err_set(e, "%s: \"hidden_act\" must be a string", what);
            goto out;
        }
        snprintf(c->hidden_act, sizeof c->hidden_act, "%s", json_string_value(act));
    }
    /* Qwen configs carry a sliding_window that only applies with
     * use_sliding_window; Mistral's applies when it is not null. */
    int use_sw = c->arch != LD_ARCH_QWEN2 && c->arch != LD_ARCH_QWEN3;
    if (get_bool(root, "use_sliding_window", &use_sw, what, e) ||
        get_int(root, "sliding_window", 0, 0, 1 << 30, &c->sliding_window, what, e))
        goto out;
    if (!use_sw)
        c->sliding_window = 0;
    if (parse_rope(root, c, what, e))
        goto out;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int ld_config_load(const char *dir, ld_config *c, inferd_error *e)
{
    char path[4096];
    if (path_join(path, sizeof path, dir, "config.json")) {
        err_set(e, "%s: path too long", dir);
        return -1;
    }
    if (!file_exists(path)) {
        err_set(e, "%s: no config.json (is this a Hugging Face model folder?)", dir);
        return -1;
    }
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, 16u << 20, &text, &len, e))
        return -1;
    int rc = ld_config_parse(text, len, path, c, e);
    free(text);
    return rc;
}

static int load_json_object(const char *dir, const char *name, int required, json_t **out,
                            inferd_error *e)
{
    char path[4096];
    *out = NULL;
    if (path_join(path, sizeof path, dir, name)) {
        err_set(e, "%s: path too long", dir);
        return -1;
    }
    if (!file_exists(path)) {
        if (required)
            err_set(e, "%s: missing (not a Hugging Face model folder?)", path);
        return required ? -1 : 0;
    }
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, 16u << 20, &text, &len, e))
        return -1;
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    if (!root) {
        err_set(e, "%s: not valid JSON: %s (line %d)", path, je.text, je.line);
        return -1;
    }
    if (!json_is_object(root) && !json_is_array(root)) {
        json_decref(root);
        err_set(e, "%s: must be a JSON object", path);
        return -1;
    }
    *out = root;
    return 0;
}

int ld_generation_config_load(const char *dir, ld_generation_config *g, inferd_error *e)
{
    memset(g, 0, sizeof *g);
    g->bos_token_id = -1;
    g->do_sample = -1;
    json_t *root;
    if (load_json_object(dir, "generation_config.json", 0, &root, e))
        return -1;
    if (!root)
        return 0;
    char path[4096];
    path_join(path, sizeof path, dir, "generation_config.json");
    int rc = -1;
    if (!json_is_object(root)) {
        err_set(e, "%s: must be a JSON object", path);
        goto out;
    }
    int do_sample = -1;
    json_t *ds = json_object_get(root, "do_sample");
    if (ds && json_is_boolean(ds))
        do_sample = json_is_true(ds);
    g->do_sample = do_sample;
#define HAS(field, key) (json_object_get(root, key) && !json_is_null(json_object_get(root, key)) \
                             ? (g->has_##field = 1) : 0)
    if (get_ids(root, "eos_token_id", g->eos_token_ids, &g->n_eos, path, e) ||
        get_int(root, "bos_token_id", 0, 0, INT32_MAX, &g->bos_token_id, path, e) ||
        get_num(root, "temperature", &g->temperature, path, e) ||
        get_num(root, "top_p", &g->top_p, path, e) ||
        get_int(root, "top_k", 0, 0, INT32_MAX, &g->top_k, path, e) ||
        get_num(root, "min_p", &g->min_p, path, e) ||
        get_num(root, "repetition_penalty", &g->repetition_penalty, path, e) ||
        get_int(root, "max_new_tokens", 0, 0, INT32_MAX, &g->max_new_tokens, path, e))
        goto out;
    HAS(temperature, "temperature");
    HAS(top_p, "top_p");
    HAS(top_k, "top_k");
    HAS(min_p, "min_p");
    HAS(repetition_penalty, "repetition_penalty");
#undef HAS
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* ---- encoder models ---- */

/* A JSON object from DIR/NAME; a missing file gives *out = NULL, not an
 * error, unless required. */

static const struct {
    const char *architecture;
    int roberta, classifier;
} encoder_archs[] = {
    {"BertModel", 0, 0}, {"BertForMaskedLM", 0, 0}, {"BertForPreTraining", 0, 0},
    {"BertForSequenceClassification", 0, 1}, {"XLMRobertaModel", 1, 0},
    {"XLMRobertaForMaskedLM", 1, 0}, {"XLMRobertaForSequenceClassification", 1, 1},
    {"RobertaModel", 1, 0}, {"RobertaForMaskedLM", 1, 0},
    {"RobertaForSequenceClassification", 1, 1},
};
#define N_ENCODER_ARCHS (sizeof encoder_archs / sizeof encoder_archs[0])

/* Index into encoder_archs for config.json's architectures[0], or for its
 * model_type when there is no architectures list; -1 if not an encoder. */
static int encoder_arch(json_t *root)
{
    json_t *archs = json_object_get(root, "architectures");
    const char *a = json_string_value(json_array_get(archs, 0));
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    for (size_t i = 0; a && i < N_ENCODER_ARCHS; i++)
        if (!strcmp(a, encoder_archs[i].architecture))
            return (int)i;
    if (!a && mt) {
        if (!strcmp(mt, "bert"))
            return 0;
        if (!strcmp(mt, "xlm-roberta"))
            return 4;
        if (!strcmp(mt, "roberta"))
            return 7;
    }
    return -1;
}

/* ModelScope tasks whose pipelines read a sequence-classification head. */
static int task_is_classification(const char *task)
{
    static const char *tasks[] = {"sentence-similarity", "text-classification", "nli",
                                  "sentiment-classification", "zero-shot-classification"};
    for (size_t i = 0; i < sizeof tasks / sizeof tasks[0]; i++)
        if (!strcmp(task, tasks[i]))
            return 1;
    return 0;
}

/* The *ForSequenceClassification entry of encoder_archs for base entry a,
 * the one of the same family (BERT, XLM-R, RoBERTa). */
static int classifier_of(int a)
{
    const char *base = encoder_archs[a].architecture;
    const char *cut = strstr(base, "For"); /* "Bert" of BertModel / BertForMaskedLM */
    if (!cut)
        cut = strstr(base, "Model");
    size_t stem = cut ? (size_t)(cut - base) : strlen(base);
    for (size_t i = 0; i < N_ENCODER_ARCHS; i++)
        if (encoder_archs[i].classifier &&
            !strncmp(encoder_archs[i].architecture, base, stem) &&
            !strcmp(encoder_archs[i].architecture + stem, "ForSequenceClassification"))
            return (int)i;
    return a;
}

int ld_is_encoder_dir(const char *dir)
{
    json_t *root = NULL;
    inferd_error e;
    if (load_json_object(dir, "config.json", 1, &root, &e) || !json_is_object(root)) {
        json_decref(root);
        return 0;
    }
    int r = encoder_arch(root) >= 0;
    json_decref(root);
    return r;
}

static int parse_labels(json_t *root, ld_encoder_config *c, const char *what, inferd_error *e)
{
    json_t *map = json_object_get(root, "id2label");
    int n = 0;
    if (json_is_object(map))
        n = (int)json_object_size(map);
    else if (get_int(root, "num_labels", 0, 1, LD_MAX_LABELS, &n, what, e))
        return -1;
    if (n == 0)
        n = 2; /* transformers' default */
    if (n > LD_MAX_LABELS) {
        err_set(e, "%s: %d labels (at most %d are supported)", what, n, LD_MAX_LABELS);
        return -1;
    }
    c->num_labels = n;
    for (int i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", i);
        json_t *v = json_is_object(map) ? json_object_get(map, key) : NULL;
        if (json_is_object(map) && !json_is_string(v)) {
            err_set(e, "%s: id2label must map \"0\"..\"%d\" to label names", what, n - 1);
            return -1;
        }
        snprintf(c->labels[i], sizeof c->labels[i], "%s", v ? json_string_value(v) : "");
        if (!v)
            snprintf(c->labels[i], sizeof c->labels[i], "LABEL_%d", i);
    }
    return 0;
}

/* sentence-transformers: modules.json lists Transformer, Pooling and
 * Normalize modules; the Pooling folder's config.json says which pooling. */
static int parse_sentence_transformers(const char *dir, ld_encoder_config *c, inferd_error *e)
{
    json_t *mods = NULL, *pool = NULL;
    int rc = -1;
    if (load_json_object(dir, "modules.json", 0, &mods, e))
        return -1;
    if (!mods)
        return 0;
    if (!json_is_array(mods)) {
        err_set(e, "%s/modules.json: must be a list of modules", dir);
        goto out;
    }
    size_t i;
    json_t *m;
    const char *pool_path = NULL;
    json_array_foreach(mods, i, m) {
        const char *type = json_string_value(json_object_get(m, "type"));
        const char *path = json_string_value(json_object_get(m, "path"));
        if (!type || !path) {
            err_set(e, "%s/modules.json: module %zu needs \"type\" and \"path\"", dir, i);
            goto out;
        }
        const char *cls = strrchr(type, '.') ? strrchr(type, '.') + 1 : type;
        if (!strcmp(cls, "Transformer"))
            continue;
        if (!strcmp(cls, "Pooling"))
            pool_path = path;
        else if (!strcmp(cls, "Normalize"))
            c->normalize = 1;
        else {
            err_set(e, "%s/modules.json: sentence-transformers module '%s' is not supported "
                       "(supported: Transformer, Pooling, Normalize)", dir, type);
            goto out;
        }
    }
    if (pool_path) {
        char sub[4096];
        if (strstr(pool_path, "..") || pool_path[0] == '/' ||
            path_join(sub, sizeof sub, pool_path, "config.json")) {
            err_set(e, "%s/modules.json: bad Pooling path '%s'", dir, pool_path);
            goto out;
        }
        if (load_json_object(dir, sub, 1, &pool, e))
            goto out;
        static const struct { const char *key; int mode; } modes[] = {
            {"pooling_mode_cls_token", LD_POOL_CLS}, {"pooling_mode_mean_tokens", LD_POOL_MEAN},
            {"pooling_mode_lasttoken", LD_POOL_LAST}, {"pooling_mode_max_tokens", -1},
            {"pooling_mode_mean_sqrt_len_tokens", -1}, {"pooling_mode_weightedmean_tokens", -1},
        };
        int n_on = 0;
        for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++) {
            if (!json_is_true(json_object_get(pool, modes[k].key)))
                continue;
            if (modes[k].mode < 0) {
                err_set(e, "%s/%s: %s is not supported (cls, mean and last token are)", dir,
                        sub, modes[k].key);
                goto out;
            }
            c->pooling = (ld_pooling)modes[k].mode;
            n_on++;
        }
        if (n_on != 1) {
            err_set(e, "%s/%s: exactly one pooling mode must be on (found %d)", dir, sub, n_on);
            goto out;
        }
        c->has_st_config = 1;
    }
    rc = 0;
out:
    json_decref(pool);
    json_decref(mods);
    return rc;
}

int ld_pooling_parse(const char *s, ld_pooling *out, inferd_error *e)
{
    static const char *names[] = {"cls", "mean", "last", "pooler"};
    for (int k = 0; k < (int)(sizeof names / sizeof names[0]); k++)
        if (!strcasecmp(s, names[k])) {
            *out = (ld_pooling)k;
            return 0;
        }
    err_set(e, "unknown pooling '%s' (cls, mean, last or pooler)", s);
    return -1;
}

int ld_pooler_config_parse(const char *json, int *pooling, int *normalize, inferd_error *e)
{
    *pooling = *normalize = -1;
    json_error_t je;
    json_t *o = json_loads(json, 0, &je);
    int rc = -1;
    if (!json_is_object(o)) {
        err_set(e, "--pooler-config is not a JSON object (%s), e.g. "
                   "'{\"pooling_type\": \"MEAN\", \"normalize\": true}'",
                o ? "another JSON value" : je.text);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        if (!strcmp(key, "pooling_type")) {
            ld_pooling p;
            /* vLLM's ALL and STEP pool nothing into one vector per input. */
            if (!json_is_string(v) || ld_pooling_parse(json_string_value(v), &p, e) ||
                p == LD_POOL_POOLER) {
                err_set(e, "--pooler-config: pooling_type %s is not supported (CLS, MEAN or "
                           "LAST)", json_is_string(v) ? json_string_value(v) : "not a string");
                goto out;
            }
            *pooling = (int)p;
        } else if (!strcmp(key, "normalize")) {
            if (!json_is_boolean(v)) {
                err_set(e, "--pooler-config: normalize must be true or false");
                goto out;
            }
            *normalize = json_is_true(v);
        } else {
            err_set(e, "--pooler-config: key '%s' is not supported (pooling_type and "
                       "normalize are)", key);
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(o);
    return rc;
}

int ld_encoder_config_load(const char *dir, ld_encoder_config *c, inferd_error *e)
{
    json_t *root = NULL, *ms = NULL;
    char what[4200];
    snprintf(what, sizeof what, "%s/config.json", dir);
    memset(c, 0, sizeof *c);
    int rc = -1;
    if (load_json_object(dir, "config.json", 1, &root, e))
        return -1;
    if (!json_is_object(root)) {
        err_set(e, "%s: must be a JSON object", what);
        goto out;
    }
    int a = encoder_arch(root);
    if (a < 0) {
        const char *name = json_string_value(json_array_get(json_object_get(root, "architectures"), 0));
        err_set(e, "%s: architecture '%s' is not an encoder inferd supports (supported: "
                   "BertModel, BertForMaskedLM, BertForSequenceClassification, XLMRobertaModel, "
                   "XLMRobertaForSequenceClassification, RobertaModel, ...)",
                what, name ? name : "(none)");
        goto out;
    }
    snprintf(c->architecture, sizeof c->architecture, "%s", encoder_archs[a].architecture);
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    snprintf(c->model_type, sizeof c->model_type, "%s", mt ? mt : "");
    c->roberta = encoder_archs[a].roberta;
    c->type_vocab_size = 2;
    c->pad_token_id = c->roberta ? 1 : 0;
    c->layer_norm_eps = 1e-12;
    if (get_int(root, "vocab_size", 1, 1, 1 << 28, &c->vocab_size, what, e) ||
        get_int(root, "hidden_size", 1, 1, 1 << 16, &c->hidden_size, what, e) ||
        get_int(root, "intermediate_size", 1, 1, 1 << 20, &c->intermediate_size, what, e) ||
        get_int(root, "num_hidden_layers", 1, 1, 4096, &c->num_hidden_layers, what, e) ||
        get_int(root, "num_attention_heads", 1, 1, 4096, &c->num_attention_heads, what, e) ||
        get_int(root, "max_position_embeddings", 1, 1, 1 << 24, &c->max_position_embeddings,
                what, e) ||
        get_int(root, "type_vocab_size", 0, 1, 1 << 16, &c->type_vocab_size, what, e) ||
        get_int(root, "pad_token_id", 0, 0, INT32_MAX, &c->pad_token_id, what, e) ||
        get_num(root, "layer_norm_eps", &c->layer_norm_eps, what, e) ||
        parse_dtype(root, &c->dtype, what, e))
        goto out;
    if (c->hidden_size % c->num_attention_heads) {
        err_set(e, "%s: hidden_size (%d) is not a multiple of num_attention_heads (%d)", what,
                c->hidden_size, c->num_attention_heads);
        goto out;
    }
    if (!(c->layer_norm_eps > 0)) {
        err_set(e, "%s: layer_norm_eps must be positive", what);
        goto out;
    }
    const char *act = json_string_value(json_object_get(root, "hidden_act"));
    if (!act || !strcmp(act, "gelu"))
        c->gelu_tanh = 0;
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh") ||
             !strcmp(act, "gelu_fast"))
        c->gelu_tanh = 1;
    else {
        err_set(e, "%s: hidden_act '%s' is not supported (gelu, gelu_new)", what, act);
        goto out;
    }
    const char *pet = json_string_value(json_object_get(root, "position_embedding_type"));
    if (pet && strcmp(pet, "absolute")) {
        err_set(e, "%s: position_embedding_type '%s' is not supported (absolute)", what, pet);
        goto out;
    }
    if (load_json_object(dir, "configuration.json", 0, &ms, e))
        goto out;
    const char *task = json_string_value(json_object_get(ms, "task"));
    if (task)
        snprintf(c->task, sizeof c->task, "%s", task);
    /* ModelScope checkpoints often leave architectures out: the task says a
     * classifier, id2label says its labels (the weights confirm, model/). */
    if (!encoder_archs[a].classifier && !json_array_get(json_object_get(root, "architectures"), 0) &&
        task_is_classification(c->task) && json_is_object(json_object_get(root, "id2label")) &&
        encoder_archs[classifier_of(a)].classifier) {
        a = classifier_of(a);
        c->head_by_task = 1;
        snprintf(c->architecture, sizeof c->architecture, "%s", encoder_archs[a].architecture);
    }
    if (encoder_archs[a].classifier && parse_labels(root, c, what, e))
        goto out;
    c->pooling = LD_POOL_CLS;
    if (parse_sentence_transformers(dir, c, e))
        goto out;
    rc = 0;
out:
    json_decref(ms);
    json_decref(root);
    return rc;
}
