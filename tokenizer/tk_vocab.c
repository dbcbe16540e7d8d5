/* A BERT tokenizer from vocab.txt alone (many ModelScope and older Hugging
 * Face folders ship no tokenizer.json). transformers' BertTokenizer builds a
 * `tokenizers` pipeline from the vocabulary and tokenizer_config.json:
 * BertNormalizer, BertPreTokenizer, WordPiece("##", unk, 100 chars),
 * [CLS] $A [SEP] and a WordPiece decoder, with the special tokens added as
 * non-normalized added tokens. We build the same thing as the tokenizer.json
 * that transformers would save, so the loader and every stage behind it are
 * the ones tokenizer.json folders use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tk_int.h"

#define MAX_VOCAB_FILE ((size_t)256 << 20)
#define MAX_TOKEN_BYTES 1024
#define MAX_IDS (1 << 24)

/* Tokenizer classes whose vocab.txt means BertTokenizer's pipeline. */
static const char *const BERT_CLASSES[] = {
    "BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer", "MobileBertTokenizer",
    "SqueezeBertTokenizer", "LayoutLMTokenizer", "ConvBertTokenizer", "LxmertTokenizer",
    "RetriBertTokenizer", "FunnelTokenizer", "RealmTokenizer",
};

/* The special-token keys and transformers' defaults, in the order
 * BertTokenizer declares them. */
static const struct { const char *key, *dflt; } SPECIALS[] = {
    {"unk_token", "[UNK]"}, {"sep_token", "[SEP]"}, {"pad_token", "[PAD]"},
    {"cls_token", "[CLS]"}, {"mask_token", "[MASK]"},
};
#define NSPECIALS (sizeof SPECIALS / sizeof SPECIALS[0])

/* A JSON file of the folder, or NULL (no error) when it is absent. */
static int load_opt_json(const char *dir, const char *name, size_t flags, json_t **out,
                         inferd_error *e)
{
    char path[4096];
    *out = NULL;
    if (path_join(path, sizeof path, dir, name)) {
        err_set(e, "path too long: %s", dir);
        return -1;
    }
    if (!file_exists(path))
        return 0;
    json_error_t je;
    json_t *j = json_load_file(path, flags, &je);
    if (!j) {
        err_set(e, "%s:%d: %s", path, je.line, je.text);
        return -1;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        err_set(e, "%s: must be a JSON object", path);
        return -1;
    }
    *out = j;
    return 0;
}

/* "[CLS]" or {"content": "[CLS]", ...} (AddedToken as transformers saves it). */
static const char *token_content(json_t *v)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_object(v) && json_is_string(json_object_get(v, "content")))
        return json_string_value(json_object_get(v, "content"));
    return NULL;
}

/* The value of key: special_tokens_map.json wins over tokenizer_config.json,
 * as from_pretrained merges them. */
static json_t *setting(json_t *cfg, json_t *map, const char *key)
{
    json_t *v = map ? json_object_get(map, key) : NULL;
    if (v && !json_is_null(v))
        return v;
    return cfg ? json_object_get(cfg, key) : NULL;
}

static int cfg_bool(json_t *cfg, const char *key, int dflt, int *out, inferd_error *e)
{
    json_t *v = cfg ? json_object_get(cfg, key) : NULL;
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v)) {
        err_set(e, "tokenizer_config.json: \"%s\" must be true or false", key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

/* vocab.txt -> {"token": line index}. Lines end at \n, \r\n or \r (Python's
 * readlines in text mode); a later duplicate wins, as in the dict that
 * transformers builds. */
static json_t *read_vocab(const char *dir, int32_t *n_lines, inferd_error *e)
{
    char path[4096];
    char *data = NULL;
    size_t len;
    json_t *v = NULL;
    if (path_join(path, sizeof path, dir, "vocab.txt")) {
        err_set(e, "path too long: %s", dir);
        return NULL;
    }
    if (file_read_all(path, MAX_VOCAB_FILE, &data, &len, e))
        return NULL;
    size_t bad = tk_utf8_valid_prefix(data, len);
    if (bad != len) {
        size_t line = 1;
        for (size_t i = 0; i < bad; i++)
            line += data[i] == '\n';
        err_set(e, "%s: line %zu is not valid UTF-8 (byte %zu of the file)", path, line, bad);
        goto err;
    }
    if (!(v = json_object())) {
        err_set(e, "out of memory");
        goto err;
    }
    int32_t id = 0;
    size_t i = 0;
    char tok[MAX_TOKEN_BYTES + 1];
    while (i < len) {
        size_t s = i;
        while (i < len && data[i] != '\n' && data[i] != '\r') {
            if (!data[i]) {
                err_set(e, "%s: line %d holds a NUL byte", path, id + 1);
                goto err;
            }
            i++;
        }
        size_t n = i - s;
        if (n > MAX_TOKEN_BYTES) {
            err_set(e, "%s: line %d is %zu bytes long; a token may have at most %d (is this "
                    "a vocab.txt?)", path, id + 1, n, MAX_TOKEN_BYTES);
            goto err;
        }
        if (id >= MAX_IDS) {
            err_set(e, "%s: more than %d lines", path, MAX_IDS);
            goto err;
        }
        memcpy(tok, data + s, n);
        tok[n] = 0;
        if (json_object_set_new(v, tok, json_integer(id))) {
            err_set(e, "out of memory");
            goto err;
        }
        id++;
        if (i < len && data[i] == '\r' && i + 1 < len && data[i + 1] == '\n')
            i++;
        i++;
    }
    if (id == 0) {
        err_set(e, "%s is empty", path);
        goto err;
    }
    free(data);
    *n_lines = id;
    return v;
err:
    free(data);
    json_decref(v);
    return NULL;
}

typedef struct builder {
    json_t *vocab;     /* borrowed: the model's vocab object */
    json_t *added;     /* the "added_tokens" array */
    int32_t next_id;   /* for tokens that are not in vocab.txt */
} builder;

static json_t *find_added(builder *b, const char *content)
{
    size_t i;
    json_t *a;
    json_array_foreach(b->added, i, a)
        if (!strcmp(json_string_value(json_object_get(a, "content")), content))
            return a;
    return NULL;
}

/* Adds an added token (id from vocab.txt, or a new one past it as the
 * tokenizers library assigns), flags from an AddedToken dict when given. */
static int add_token(builder *b, json_t *def, const char *content, int special, int32_t forced_id,
                     inferd_error *e)
{
    if (!content || !*content || find_added(b, content))
        return 0;
    json_int_t id = forced_id;
    if (id < 0) {
        json_t *vid = json_object_get(b->vocab, content);
        id = vid ? json_integer_value(vid) : b->next_id;
    }
    if (id >= MAX_IDS) {
        err_set(e, "too many tokens");
        return -1;
    }
    if (id >= b->next_id)
        b->next_id = (int32_t)id + 1;
    json_t *sp = json_is_object(def) ? json_object_get(def, "special") : NULL;
    if (json_is_boolean(sp))
        special = json_is_true(sp);
    int f[4] = {0, 0, 0, !special};
    static const char *const keys[4] = {"single_word", "lstrip", "rstrip", "normalized"};
    for (int k = 0; k < 4; k++) {
        json_t *v = json_is_object(def) ? json_object_get(def, keys[k]) : NULL;
        if (json_is_boolean(v))
            f[k] = json_is_true(v);
    }
    json_t *o = json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content,
                          "single_word", f[0], "lstrip", f[1], "rstrip", f[2], "normalized", f[3],
                          "special", special);
    if (!o || json_array_append_new(b->added, o)) {
        err_set(e, "out of memory");
        return -1;
    }
    return 0;
}

/* The list settings that add tokens: additional_special_tokens (special),
 * never_split (kept whole and unnormalized, as BasicTokenizer keeps them). */
static int add_list(builder *b, json_t *list, const char *key, int special, inferd_error *e)
{
    if (!list || json_is_null(list))
        return 0;
    if (!json_is_array(list)) {
        err_set(e, "\"%s\" must be a list of tokens", key);
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        const char *c = token_content(v);
        if (!c) {
            err_set(e, "\"%s\"[%zu] must be a token string or {\"content\": ...}", key, i);
            return -1;
        }
        if (!special && !json_object_get(b->vocab, c))
            continue; /* never_split words outside the vocabulary end as [UNK] anyway */
        json_t *def = json_is_object(v) ? v : NULL;
        json_t *tmp = NULL;
        if (!special) /* whole words only, not normalized */
            def = tmp = json_pack("{s:b, s:b}", "single_word", 1, "normalized", 0);
        int rc = add_token(b, def, c, special, -1, e);
        json_decref(tmp);
        if (rc)
            return -1;
    }
    return 0;
}

static int check_class(json_t *cfg, inferd_error *e)
{
    json_t *c = cfg ? json_object_get(cfg, "tokenizer_class") : NULL;
    if (!c || json_is_null(c))
        return 0;
    const char *s = json_string_value(c);
    if (!s) {
        err_set(e, "tokenizer_config.json: \"tokenizer_class\" must be a string");
        return -1;
    }
    size_t n = strlen(s);
    if (n > 4 && !strcmp(s + n - 4, "Fast"))
        n -= 4;
    for (size_t i = 0; i < sizeof BERT_CLASSES / sizeof BERT_CLASSES[0]; i++)
        if (strlen(BERT_CLASSES[i]) == n && !strncmp(BERT_CLASSES[i], s, n))
            return 0;
    err_set(e, "tokenizer_config.json names tokenizer_class \"%.60s\", which needs its "
            "tokenizer.json; inferd builds only BERT WordPiece tokenizers from vocab.txt", s);
    return -1;
}

json_t *tk_bert_json(const char *dir, inferd_error *e)
{
    json_t *cfg = NULL, *map = NULL, *atj = NULL, *root = NULL, *vocab = NULL;
    builder b = {0};
    int32_t n_lines = 0;
    /* model_max_length may be 1e30: integers as reals in the config */
    if (load_opt_json(dir, "tokenizer_config.json", JSON_DECODE_INT_AS_REAL, &cfg, e) ||
        load_opt_json(dir, "special_tokens_map.json", 0, &map, e) ||
        load_opt_json(dir, "added_tokens.json", 0, &atj, e) || check_class(cfg, e))
        goto err;
    int lower, chinese, basic;
    if (cfg_bool(cfg, "do_lower_case", 1, &lower, e) ||
        cfg_bool(cfg, "tokenize_chinese_chars", 1, &chinese, e) ||
        cfg_bool(cfg, "do_basic_tokenize", 1, &basic, e))
        goto err;
    json_t *strip = cfg ? json_object_get(cfg, "strip_accents") : NULL;
    if (strip && !json_is_null(strip) && !json_is_boolean(strip)) {
        err_set(e, "tokenizer_config.json: \"strip_accents\" must be true, false or null");
        goto err;
    }
    if (!(vocab = read_vocab(dir, &n_lines, e)))
        goto err;
    b.vocab = vocab;
    b.next_id = n_lines;
    if (!(b.added = json_array()))
        goto oom;

    /* added_tokens_decoder ({"id": AddedToken}) fixes ids and flags. */
    json_t *atd = cfg ? json_object_get(cfg, "added_tokens_decoder") : NULL;
    if (atd && !json_is_null(atd)) {
        const char *k;
        json_t *v;
        if (!json_is_object(atd)) {
            err_set(e, "tokenizer_config.json: \"added_tokens_decoder\" must be an object");
            goto err;
        }
        json_object_foreach(atd, k, v) {
            char *end;
            long id = strtol(k, &end, 10);
            if (end == k || *end || id < 0 || id >= MAX_IDS || !token_content(v)) {
                err_set(e, "tokenizer_config.json: added_tokens_decoder entry \"%.20s\" must "
                        "map a token id to {\"content\": ...}", k);
                goto err;
            }
            if (add_token(&b, v, token_content(v), 0, (int32_t)id, e))
                goto err;
        }
    }
    const char *tok[NSPECIALS];
    for (size_t i = 0; i < NSPECIALS; i++) {
        json_t *v = setting(cfg, map, SPECIALS[i].key);
        tok[i] = v && !json_is_null(v) ? token_content(v) : SPECIALS[i].dflt;
        if (!tok[i] || !*tok[i]) {
            err_set(e, "\"%s\" must be a non-empty token string or {\"content\": ...}",
                    SPECIALS[i].key);
            goto err;
        }
        if (add_token(&b, json_is_object(v) ? v : NULL, tok[i], 1, -1, e))
            goto err;
    }
    if (add_list(&b, setting(cfg, map, "additional_special_tokens"), "additional_special_tokens",
                 1, e) ||
        add_list(&b, cfg ? json_object_get(cfg, "never_split") : NULL, "never_split", 0, e))
        goto err;
    if (atj) { /* older transformers: {"token": id} of user-added tokens */
        const char *k;
        json_t *v;
        json_object_foreach(atj, k, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) >= MAX_IDS) {
                err_set(e, "added_tokens.json: \"%.40s\" must map to a token id", k);
                goto err;
            }
            if (add_token(&b, NULL, k, 0, (int32_t)json_integer_value(v), e))
                goto err;
        }
    }
    const char *unk = tok[0], *sep = tok[1], *cls = tok[3];
    if (!json_object_get(vocab, unk)) {
        err_set(e, "vocab.txt has no unknown-word token \"%.60s\" (unk_token), which WordPiece "
                "needs", unk);
        goto err;
    }
    json_int_t cls_id = json_integer_value(json_object_get(find_added(&b, cls), "id"));
    json_int_t sep_id = json_integer_value(json_object_get(find_added(&b, sep), "id"));
    json_t *model = json_pack("{s:s, s:O, s:s, s:s, s:i}", "type", "WordPiece", "vocab", vocab,
                              "unk_token", unk, "continuing_subword_prefix", "##",
                              "max_input_chars_per_word", 100);
    json_t *norm = basic ? json_pack("{s:s, s:b, s:b, s:O, s:b}", "type", "BertNormalizer",
                                     "clean_text", 1, "handle_chinese_chars", chinese,
                                     "strip_accents", strip ? strip : json_null(),
                                     "lowercase", lower)
                         : json_null();
    json_t *pre = json_pack("{s:s}", "type", basic ? "BertPreTokenizer" : "WhitespaceSplit");
    json_t *dec = json_pack("{s:s, s:s, s:b}", "type", "WordPiece", "prefix", "##", "cleanup", 1);
    json_t *pp = json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}], "
                           "s:{s:{s:s, s:[I], s:[s]}, s:{s:s, s:[I], s:[s]}}}",
                           "type", "TemplateProcessing",
                           "single", "SpecialToken", "id", cls, "type_id", 0,
                           "Sequence", "id", "A", "type_id", 0,
                           "SpecialToken", "id", sep, "type_id", 0,
                           "special_tokens", cls, "id", cls, "ids", cls_id, "tokens", cls,
                           sep, "id", sep, "ids", sep_id, "tokens", sep);
    root = json_pack("{s:o, s:o, s:o, s:o, s:o, s:O}", "model", model, "normalizer", norm,
                     "pre_tokenizer", pre, "decoder", dec, "post_processor", pp,
                     "added_tokens", b.added);
    if (!root)
        goto oom;
    goto done;
oom:
    err_set(e, "out of memory");
err:
    json_decref(root);
    root = NULL;
done:
    json_decref(b.added);
    json_decref(vocab);
    json_decref(cfg);
    json_decref(map);
    json_decref(atj);
    return root;
}
