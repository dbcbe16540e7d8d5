/* tokenizer/tokenizer.c: text <-> token ids for api/ and cli/, knowing
 * nothing of models or serving (see tokenizer.h). Loads tokenizer.json (+
 * tokenizer_config.json) and runs the reference pipeline: added tokens ->
 * normalizer -> normalized added tokens -> pre-tokenizer -> model ->
 * post-processor; and back through the decoder. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "tokenizer/tk_int.h"

#define MAX_FILE ((size_t)1 << 30)

typedef struct added {
    char *content;
    size_t len;
    char *dec;      /* what decode shows: the normalized content for
                     * normalized tokens (tokenizers >= 0.23), else NULL */
    size_t dec_len;
    int32_t id;
    uint8_t special, single_word, lstrip, rstrip, normalized;
} added;

/* Byte trie over added-token strings, matched leftmost-longest like the
 * reference's aho-corasick. */
typedef struct trie {
    tk_u64map ch;        /* (node << 8 | byte) -> child */
    int32_t *term;       /* node -> index into added[], -1 */
    size_t nnodes, cap;
    uint8_t first[256];  /* bytes that start some pattern */
} trie;

/* Post-processor step: a template of items (a list of ids, or the sequence). */
typedef struct pp_item { int32_t *ids; size_t n; int is_seq; } pp_item;
typedef struct pp_step { pp_item *items; size_t n; } pp_step;

struct tok_tokenizer {
    tk_model *model;
    tk_norm *norm;
    tk_pretok *pretok;
    tk_dec *dec;
    added *added;
    size_t nadded;
    tk_u64map added_by_id;     /* id -> index into added[] */
    tk_strmap added_by_str;
    trie raw, normd;
    pp_step *pp;
    size_t npp;
    int has_pp;
    int add_bos, add_eos;      /* tokenizer_config.json, when there is no post-processor */
    int32_t bos_id, eos_id;
    int32_t vocab_size;
};

/* ---- trie --------------------------------------------------------------- */

static int trie_init(trie *t)
{
    memset(t, 0, sizeof *t);
    t->cap = 64;
    t->term = malloc(t->cap * sizeof *t->term);
    if (!t->term || tk_um_init(&t->ch, 64))
        return -1;
    t->term[0] = -1;
    t->nnodes = 1;
    return 0;
}

static void trie_free(trie *t)
{
    tk_um_free(&t->ch);
    free(t->term);
}

static int trie_add(trie *t, const char *s, size_t n, int32_t idx)
{
    if (!n)
        return 0;
    uint64_t node = 0;
    t->first[(unsigned char)s[0]] = 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t key = node << 8 | (unsigned char)s[i], v;
        if (tk_um_get(&t->ch, key, &v)) {
            node = v;
            continue;
        }
        if (t->nnodes == t->cap) {
            int32_t *nt = realloc(t->term, t->cap * 2 * sizeof *nt);
            if (!nt)
                return -1;
            t->term = nt;
            t->cap *= 2;
        }
        t->term[t->nnodes] = -1;
        if (tk_um_put(&t->ch, key, t->nnodes) < 0)
            return -1;
        node = t->nnodes++;
    }
    if (t->term[node] < 0) /* the first pattern wins on duplicates */
        t->term[node] = idx;
    return 0;
}

/* Finds the leftmost-longest match at or after pos. */
static int trie_find(const trie *t, const char *s, size_t n, size_t pos, size_t *ms, size_t *me,
                     int32_t *idx)
{
    if (t->nnodes <= 1)
        return 0;
    for (size_t i = pos; i < n; i++) {
        if (!t->first[(unsigned char)s[i]])
            continue;
        uint64_t node = 0, v;
        int32_t best = -1;
        size_t bend = 0;
        for (size_t j = i; j < n; j++) {
            if (!tk_um_get(&t->ch, node << 8 | (unsigned char)s[j], &v))
                break;
            node = v;
            if (t->term[node] >= 0) {
                best = t->term[node];
                bend = j + 1;
            }
        }
        if (best >= 0) {
            *ms = i;
            *me = bend;
            *idx = best;
            return 1;
        }
    }
    return 0;
}

static int is_word_char(uint32_t c)
{
    return c == '_' || tk_is_alnum(c);
}

/* Splits s into text spans (m = 0) and added-token spans (m = 1 + index),
 * with single_word / lstrip / rstrip as the reference applies them. */
static int split_added(const tok_tokenizer *t, const trie *tr, const char *s, size_t n,
                       tk_spans *out)
{
    out->n = 0;
    size_t pos = 0, start_off = 0, ms, me;
    int32_t idx;
    while (pos < n && trie_find(tr, s, n, pos, &ms, &me, &idx)) {
        const added *a = &t->added[idx];
        size_t st = ms, sp = me;
        pos = me;
        if (a->single_word) {
            int left_ok = 1, right_ok = 1;
            if (st > 0) {
                size_t p = st - 1;
                while (p > 0 && ((unsigned char)s[p] & 0xC0) == 0x80)
                    p--;
                uint32_t c;
                tk_u8(s + p, &c);
                left_ok = !is_word_char(c);
            }
            if (sp < n) {
                uint32_t c;
                tk_u8(s + sp, &c);
                right_ok = !is_word_char(c);
            }
            if (!left_ok || !right_ok)
                continue;
        }
        if (a->lstrip) {
            size_t p = st;
            while (p > 0) {
                size_t q = p - 1;
                while (q > 0 && ((unsigned char)s[q] & 0xC0) == 0x80)
                    q--;
                uint32_t c;
                tk_u8(s + q, &c);
                if (!tk_is_ws(c))
                    break;
                p = q;
            }
            st = p > start_off ? p : start_off;
        }
        if (a->rstrip) {
            while (sp < n) {
                uint32_t c;
                int k = tk_u8(s + sp, &c);
                if (!tk_is_ws(c))
                    break;
                sp += (size_t)k;
            }
        }
        if (start_off < st && tk_spans_push(out, (uint32_t)start_off, (uint32_t)st, 0))
            return -1;
        if (tk_spans_push(out, (uint32_t)st, (uint32_t)sp, 1 + idx))
            return -1;
        start_off = sp > start_off ? sp : start_off;
    }
    if (start_off < n && tk_spans_push(out, (uint32_t)start_off, (uint32_t)n, 0))
        return -1;
    return 0;
}

/* ---- loading ------------------------------------------------------------ */

void tok_free(tok_tokenizer *t)
{
    if (!t)
        return;
    tk_model_free(t->model);
    tk_norm_free(t->norm);
    tk_pretok_free(t->pretok);
    tk_dec_free(t->dec);
    for (size_t i = 0; i < t->nadded; i++) {
        free(t->added[i].content);
        free(t->added[i].dec);
    }
    free(t->added);
    tk_um_free(&t->added_by_id);
    tk_sm_free(&t->added_by_str);
    trie_free(&t->raw);
    trie_free(&t->normd);
    for (size_t i = 0; i < t->npp; i++) {
        for (size_t j = 0; j < t->pp[i].n; j++)
            free(t->pp[i].items[j].ids);
        free(t->pp[i].items);
    }
    free(t->pp);
    free(t);
}

static int parse_added(tok_tokenizer *t, json_t *a, inferd_error *e)
{
    if (!a || json_is_null(a))
        a = json_array();
    else if (!json_is_array(a)) {
        err_set(e, "\"added_tokens\" must be an array");
        return -1;
    }
    else
        json_incref(a);
    int rc = -1;
    size_t n = json_array_size(a);
    t->added = calloc(n + 1, sizeof *t->added);
    if (!t->added || tk_um_init(&t->added_by_id, n) || tk_sm_init(&t->added_by_str, n)) {
        err_set(e, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(a, i);
        json_t *id = json_object_get(o, "id");
        const char *c;
        if (!json_is_object(o) || !json_is_integer(id)) {
            err_set(e, "added token %zu needs an integer \"id\"", i);
            goto done;
        }
        if (tk_json_str(o, "content", 1, &c, e)) {
            err_prefix(e, "added token %zu", i);
            goto done;
        }
        json_int_t v = json_integer_value(id);
        if (v < 0 || v >= (1 << 24)) {
            err_set(e, "added token \"%.40s\" has id %lld out of range", c, (long long)v);
            goto done;
        }
        added *d = &t->added[t->nadded];
        d->len = json_string_length(json_object_get(o, "content"));
        d->content = malloc(d->len + 1);
        if (!d->content) {
            err_set(e, "out of memory");
            goto done;
        }
        memcpy(d->content, c, d->len + 1);
        t->nadded++;
        d->id = (int32_t)v;
        int f[5];
        static const char *const keys[5] = {"special", "single_word", "lstrip", "rstrip", "normalized"};
        for (int k = 0; k < 5; k++) {
            f[k] = tk_json_bool(o, keys[k], k == 4 ? -2 : 0, e);
            if (f[k] == -1) {
                err_prefix(e, "added token \"%.40s\"", c);
                goto done;
            }
        }
        d->special = (uint8_t)f[0];
        d->single_word = (uint8_t)f[1];
        d->lstrip = (uint8_t)f[2];
        d->rstrip = (uint8_t)f[3];
        d->normalized = (uint8_t)(f[4] == -2 ? !f[0] : f[4]); /* default: !special */
        uint64_t prev;
        if (!tk_um_get(&t->added_by_id, (uint64_t)v, &prev))
            tk_um_put(&t->added_by_id, (uint64_t)v, t->nadded - 1);
        tk_sm_put(&t->added_by_str, d->content, d->len, d->id);
    }
    rc = 0;
done:
    json_decref(a);
    return rc;
}

/* Builds the two tries: special tokens first, then the others (the
 * reference's pattern order, which decides ties). */
static int build_tries(tok_tokenizer *t, inferd_error *e)
{
    strbuf nb = {0};
    int rc = -1;
    if (trie_init(&t->raw) || trie_init(&t->normd)) {
        err_set(e, "out of memory");
        goto done;
    }
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < t->nadded; i++) {
            added *a = &t->added[i];
            if (a->special != (pass == 0))
                continue;
            if (!a->normalized) {
                if (trie_add(&t->raw, a->content, a->len, (int32_t)i))
                    goto oom;
                continue;
            }
            if (tk_norm_apply(t->norm, a->content, a->len, &nb, NULL, e))
                goto done;
            if (t->norm && (nb.n != a->len || memcmp(nb.p, a->content, nb.n))) {
                if (!(a->dec = malloc(nb.n + 1)))
                    goto oom;
                memcpy(a->dec, nb.p, nb.n);
                a->dec_len = nb.n;
            }
            if (trie_add(&t->normd, nb.p, nb.n, (int32_t)i))
                goto oom;
        }
    rc = 0;
    goto done;
oom:
    err_set(e, "out of memory");
done:
    sb_free(&nb);
    return rc;
}

static int32_t lookup_token(const tok_tokenizer *t, const char *s)
{
    int32_t id = tk_sm_get(&t->added_by_str, s, strlen(s));
    return id >= 0 ? id : tk_model_token_to_id(t->model, s, strlen(s));
}

static int pp_add_ids(pp_item *it, json_t *ids, inferd_error *e)
{
    it->n = json_array_size(ids);
    it->ids = malloc((it->n + 1) * sizeof *it->ids);
    if (!it->ids) {
        err_set(e, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < it->n; i++) {
        json_t *v = json_array_get(ids, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24)) {
            err_set(e, "special token ids must be integers in range");
            return -1;
        }
        it->ids[i] = (int32_t)json_integer_value(v);
    }
    return 0;
}

static int pp_one_id(pp_item *it, int32_t id)
{
    it->ids = malloc(sizeof *it->ids);
    if (!it->ids)
        return -1;
    it->ids[0] = id;
    it->n = 1;
    return 0;
}

/* ["[CLS]", 101] of BertProcessing / RobertaProcessing */
static int pair_id(json_t *j, const char *key, int32_t *id, inferd_error *e)
{
    json_t *p = json_object_get(j, key);
    json_t *v = json_array_get(p, 1);
    if (!json_is_array(p) || json_array_size(p) != 2 || !json_is_integer(v) ||
        json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24)) {
        err_set(e, "\"%s\" must be [token, id]", key);
        return -1;
    }
    *id = (int32_t)json_integer_value(v);
    return 0;
}

static int parse_pp(tok_tokenizer *t, json_t *j, inferd_error *e)
{
    if (!json_is_object(j)) {
        err_set(e, "post_processor must be an object");
        return -1;
    }
    const char *type;
    if (tk_json_str(j, "type", 1, &type, e))
        return -1;
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(j, "processors");
        if (!json_is_array(a)) {
            err_set(e, "Sequence post_processor needs \"processors\"");
            return -1;
        }
        for (size_t i = 0; i < json_array_size(a); i++)
            if (parse_pp(t, json_array_get(a, i), e))
                return -1;
        return 0;
    }
    if (!strcmp(type, "ByteLevel"))
        return 0; /* only offsets change */
    pp_step *np = realloc(t->pp, (t->npp + 1) * sizeof *np);
    if (!np) {
        err_set(e, "out of memory");
        return -1;
    }
    t->pp = np;
    pp_step *s = &t->pp[t->npp++];
    memset(s, 0, sizeof *s);
    if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        int32_t cls, sep;
        if (pair_id(j, "cls", &cls, e) || pair_id(j, "sep", &sep, e))
            goto err;
        s->items = calloc(3, sizeof *s->items);
        if (!s->items)
            goto oom;
        s->n = 3;
        s->items[1].is_seq = 1;
        if (pp_one_id(&s->items[0], cls) || pp_one_id(&s->items[2], sep))
            goto oom;
        return 0;
    }
    if (!strcmp(type, "TemplateProcessing")) {
        json_t *single = json_object_get(j, "single"), *sp = json_object_get(j, "special_tokens");
        if (!json_is_array(single)) {
            err_set(e, "TemplateProcessing needs a \"single\" array");
            goto err;
        }
        s->items = calloc(json_array_size(single) + 1, sizeof *s->items);
        if (!s->items)
            goto oom;
        for (size_t i = 0; i < json_array_size(single); i++) {
            json_t *it = json_array_get(single, i);
            json_t *st = json_object_get(it, "SpecialToken"), *sq = json_object_get(it, "Sequence");
            pp_item *pi = &s->items[s->n++];
            if (json_is_object(sq)) {
                pi->is_seq = 1;
            } else if (json_is_object(st) && json_is_string(json_object_get(st, "id"))) {
                const char *name = json_string_value(json_object_get(st, "id"));
                json_t *def = json_object_get(sp, name);
                json_t *ids = json_object_get(def, "ids");
                if (!json_is_array(ids)) {
                    err_set(e, "TemplateProcessing: special token \"%.40s\" is not defined in "
                            "\"special_tokens\"", name);
                    goto err;
                }
                if (pp_add_ids(pi, ids, e))
                    goto err;
            } else {
                err_set(e, "TemplateProcessing: bad item %zu in \"single\"", i);
                goto err;
            }
        }
        return 0;
    }
    err_set(e, "unsupported post_processor type \"%s\"", type);
    return -1;
oom:
    err_set(e, "out of memory");
err:
    err_prefix(e, "post_processor %s", type);
    return -1;
}

/* "bos_token": "<s>" or {"content": "<s>", ...} */
static const char *config_token(json_t *cfg, const char *key)
{
    json_t *v = json_object_get(cfg, key);
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_object(v) && json_is_string(json_object_get(v, "content")))
        return json_string_value(json_object_get(v, "content"));
    return NULL;
}

static int load_config(tok_tokenizer *t, const char *dir, inferd_error *e)
{
    char path[4096];
    if (path_join(path, sizeof path, dir, "tokenizer_config.json") || !file_exists(path))
        return 0;
    json_error_t je;
    json_t *cfg = json_load_file(path, JSON_DECODE_INT_AS_REAL, &je); /* model_max_length can be 1e30 */
    if (!cfg) {
        err_set(e, "%s:%d: %s", path, je.line, je.text);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(cfg)) {
        err_set(e, "%s: must be a JSON object", path);
        goto done;
    }
    if (!t->has_pp) {
        const char *bos = config_token(cfg, "bos_token"), *eos = config_token(cfg, "eos_token");
        if (json_is_true(json_object_get(cfg, "add_bos_token")) && bos) {
            t->bos_id = lookup_token(t, bos);
            t->add_bos = t->bos_id >= 0;
        }
        if (json_is_true(json_object_get(cfg, "add_eos_token")) && eos) {
            t->eos_id = lookup_token(t, eos);
            t->add_eos = t->eos_id >= 0;
        }
    }
    rc = 0;
done:
    json_decref(cfg);
    return rc;
}

int tok_load(const char *dir, tok_tokenizer **out, inferd_error *e)
{
    char path[4096];
    char *data = NULL;
    size_t len;
    json_t *root = NULL;
    tok_tokenizer *t = NULL;
    *out = NULL;
    if (path_join(path, sizeof path, dir, "tokenizer.json")) {
        err_set(e, "path too long: %s", dir);
        return -1;
    }
    char vpath[4096];
    if (!file_exists(path) && !path_join(vpath, sizeof vpath, dir, "vocab.txt") &&
        file_exists(vpath)) {
        /* BertTokenizer folders: the same pipeline, built from vocab.txt */
        memcpy(path, vpath, sizeof path);
        if (!(root = tk_bert_json(dir, e)))
            return -1;
    } else {
        if (file_read_all(path, MAX_FILE, &data, &len, e))
            return -1;
        json_error_t je;
        root = json_loadb(data, len, JSON_ALLOW_NUL, &je);
        free(data);
        if (!root) {
            err_set(e, "%s:%d:%d: not valid JSON: %s", path, je.line, je.column, je.text);
            return -1;
        }
    }
    if (!json_is_object(root)) {
        err_set(e, "%s: must be a JSON object", path);
        goto err;
    }
    t = calloc(1, sizeof *t);
    if (!t) {
        err_set(e, "out of memory");
        goto err;
    }
    json_t *v;
    if (!(t->model = tk_model_parse(json_object_get(root, "model"), e)))
        goto err;
    if ((v = json_object_get(root, "normalizer")) && !json_is_null(v) && !(t->norm = tk_norm_parse(v, e)))
        goto err;
    if ((v = json_object_get(root, "pre_tokenizer")) && !json_is_null(v) &&
        !(t->pretok = tk_pretok_parse(v, e)))
        goto err;
    if ((v = json_object_get(root, "decoder")) && !json_is_null(v) && !(t->dec = tk_dec_parse(v, e)))
        goto err;
    if ((v = json_object_get(root, "post_processor")) && !json_is_null(v)) {
        t->has_pp = 1;
        if (parse_pp(t, v, e))
            goto err;
    }
    if (parse_added(t, json_object_get(root, "added_tokens"), e) || build_tries(t, e))
        goto err;
    int32_t mx = tk_model_max_id(t->model);
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].id > mx)
            mx = t->added[i].id;
    t->vocab_size = mx + 1;
    if (load_config(t, dir, e))
        goto err;
    json_decref(root);
    *out = t;
    return 0;
err:
    err_prefix(e, "%s", path);
    json_decref(root);
    tok_free(t);
    return -1;
}

/* ---- encoding ------------------------------------------------------------ */

typedef struct scratch {
    strbuf norm;
    tk_spans sp1, sp2;
    tk_words a, b;
} scratch;

/* A piece of text between raw added tokens: normalize, match the
 * normalized added tokens, pre-tokenize and run the model. */
static int encode_piece(const tok_tokenizer *t, const char *s, size_t n, int at_start, scratch *x,
                        tk_ids *out, inferd_error *e)
{
    int kept = 1;
    if (tk_norm_apply(t->norm, s, n, &x->norm, &kept, e))
        return -1;
    at_start = at_start && kept;
    const char *ns = x->norm.p ? x->norm.p : "";
    size_t nn = x->norm.n;
    if (split_added(t, &t->normd, ns, nn, &x->sp2))
        goto oom;
    for (size_t i = 0; i < x->sp2.n; i++) {
        tk_span sp = x->sp2.v[i];
        if (sp.m) {
            if (tk_ids_push(out, t->added[sp.m - 1].id))
                goto oom;
            continue;
        }
        tk_words_reset(&x->a);
        if (tk_words_add(&x->a, ns + sp.s, sp.e - sp.s, at_start && sp.s == 0))
            goto oom;
        if (tk_pretok_apply(t->pretok, &x->a, &x->b, e))
            return -1;
        for (size_t w = 0; w < x->b.n; w++)
            if (tk_model_tokenize(t->model, x->b.buf.p + x->b.v[w].off, x->b.v[w].len, out, e))
                return -1;
    }
    return 0;
oom:
    err_set(e, "out of memory");
    return -1;
}

static int post_process(const tok_tokenizer *t, tk_ids *ids, inferd_error *e)
{
    if (!t->has_pp) {
        if (t->add_bos) {
            if (tk_ids_push(ids, 0))
                goto oom;
            memmove(ids->v + 1, ids->v, (ids->n - 1) * sizeof *ids->v);
            ids->v[0] = t->bos_id;
        }
        if (t->add_eos && tk_ids_push(ids, t->eos_id))
            goto oom;
        return 0;
    }
    for (size_t s = 0; s < t->npp; s++) {
        tk_ids next = {0};
        const pp_step *st = &t->pp[s];
        for (size_t i = 0; i < st->n; i++) {
            const int32_t *src = st->items[i].is_seq ? ids->v : st->items[i].ids;
            size_t n = st->items[i].is_seq ? ids->n : st->items[i].n;
            for (size_t k = 0; k < n; k++)
                if (tk_ids_push(&next, src[k])) {
                    free(next.v);
                    goto oom;
                }
        }
        free(ids->v);
        *ids = next;
    }
    return 0;
oom:
    err_set(e, "out of memory");
    return -1;
}

int tok_encode(const tok_tokenizer *t, const char *text, size_t len, int add_special,
               int32_t **ids, size_t *n_ids, inferd_error *e)
{
    *ids = NULL;
    *n_ids = 0;
    size_t bad = tk_utf8_valid_prefix(text, len);
    if (bad != len) {
        err_set(e, "input is not valid UTF-8 (byte %zu)", bad);
        return -1;
    }
    tk_ids out = {0};
    scratch x;
    memset(&x, 0, sizeof x);
    int rc = -1;
    if (split_added(t, &t->raw, text, len, &x.sp1)) {
        err_set(e, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < x.sp1.n; i++) {
        tk_span sp = x.sp1.v[i];
        if (sp.m) {
            if (tk_ids_push(&out, t->added[sp.m - 1].id)) {
                err_set(e, "out of memory");
                goto done;
            }
            continue;
        }
        if (encode_piece(t, text + sp.s, sp.e - sp.s, sp.s == 0, &x, &out, e))
            goto done;
    }
    if (add_special && post_process(t, &out, e))
        goto done;
    if (!out.v && !(out.v = malloc(sizeof *out.v))) {
        err_set(e, "out of memory");
        goto done;
    }
    *ids = out.v;
    *n_ids = out.n;
    out.v = NULL;
    rc = 0;
done:
    free(out.v);
    sb_free(&x.norm);
    free(x.sp1.v);
    free(x.sp2.v);
    tk_words_free(&x.a);
    tk_words_free(&x.b);
    return rc;
}

/* ---- vocabulary ----------------------------------------------------------- */

int tok_vocab_size(const tok_tokenizer *t)
{
    return t->vocab_size;
}

int32_t tok_token_to_id(const tok_tokenizer *t, const char *token)
{
    return lookup_token(t, token);
}

static const added *added_of(const tok_tokenizer *t, int32_t id)
{
    uint64_t v;
    if (id < 0 || !tk_um_get(&t->added_by_id, (uint64_t)id, &v))
        return NULL;
    return &t->added[v];
}

static const char *id_str(const tok_tokenizer *t, int32_t id, size_t *len)
{
    const added *a = added_of(t, id);
    if (a) {
        *len = a->dec ? a->dec_len : a->len;
        return a->dec ? a->dec : a->content;
    }
    return tk_model_id_to_token(t->model, id, len);
}

const char *tok_id_to_token(const tok_tokenizer *t, int32_t id, size_t *len)
{
    return id_str(t, id, len);
}

int tok_is_special(const tok_tokenizer *t, int32_t id)
{
    const added *a = added_of(t, id);
    return a && a->special;
}

int tok_check_model_vocab(const tok_tokenizer *t, int model_vocab, inferd_error *e)
{
    /* Checkpoints pad their rows past the tokenizer by well under 1/16
     * (Qwen3: 151,669 tokens for 151,936 rows; DeepSeek-V3: 128,815 for
     * 129,280); padded rows are trained never to win. More rows than
     * tokens is a model that would emit ids without text. Fewer rows is
     * left to the engine, which refuses prompt ids past them by name. */
    if (t->vocab_size >= model_vocab - model_vocab / 16)
        return 0;
    err_set(e, "the tokenizer has %d tokens but the model's vocabulary has %d (config.json "
            "vocab_size): the model would emit ids the tokenizer cannot decode; is "
            "tokenizer.json from another model?", t->vocab_size, model_vocab);
    return -1;
}

/* ---- decoding --------------------------------------------------------------- */

static int decode_sb(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip, strbuf *out,
                     inferd_error *e)
{
    tk_strs toks = {0};
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *s = id_str(t, ids[i], &len);
        if (!s) {
            err_set(e, "token id %d is not in the vocabulary (size %d)", ids[i], t->vocab_size);
            goto done;
        }
        if (skip && tok_is_special(t, ids[i]))
            continue;
        if (tk_words_add(&toks, s, len, 0)) {
            err_set(e, "out of memory");
            goto done;
        }
    }
    rc = tk_dec_apply(t->dec, &toks, out, e);
done:
    tk_words_free(&toks);
    return rc;
}

int tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n_ids, int skip_special,
               char **text, size_t *len, inferd_error *e)
{
    strbuf out = {0};
    *text = NULL;
    if (len)
        *len = 0;
    if (decode_sb(t, ids, n_ids, skip_special, &out, e)) {
        sb_free(&out);
        return -1;
    }
    size_t n = out.n;
    if (!(*text = sb_steal(&out))) {
        err_set(e, "out of memory");
        return -1;
    }
    if (len)
        *len = n;
    return 0;
}

/* ---- streaming ---------------------------------------------------------------- */

/* The reference's DecodeStream: decode a short window of ids, emit what
 * grew past the previously decoded prefix, unless it ends in U+FFFD (an
 * incomplete character that the next id may finish). */
struct tok_stream {
    const tok_tokenizer *t;
    int skip;
    tk_ids ids;
    strbuf prefix;
    size_t prefix_index;
};

tok_stream *tok_stream_new(const tok_tokenizer *t, int skip_special)
{
    tok_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->t = t;
    s->skip = skip_special;
    return s;
}

void tok_stream_free(tok_stream *s)
{
    if (!s)
        return;
    free(s->ids.v);
    sb_free(&s->prefix);
    free(s);
}

static int ends_with_fffd(const strbuf *b)
{
    return b->n >= 3 && !memcmp(b->p + b->n - 3, "\xEF\xBF\xBD", 3);
}

int tok_stream_push(tok_stream *s, int32_t id, strbuf *out, inferd_error *e)
{
    if (!id_str(s->t, id, &(size_t){0})) {
        err_set(e, "token id %d is not in the vocabulary (size %d)", id, s->t->vocab_size);
        return -1;
    }
    if (tk_ids_push(&s->ids, id)) {
        err_set(e, "out of memory");
        return -1;
    }
    strbuf cur = {0};
    int rc = -1;
    if (decode_sb(s->t, s->ids.v, s->ids.n, s->skip, &cur, e))
        goto done;
    if (cur.n > s->prefix.n && !ends_with_fffd(&cur)) {
        if (s->prefix.n && memcmp(cur.p, s->prefix.p, s->prefix.n)) {
            err_set(e, "stream decode: the decoded text changed before the new token");
            goto done;
        }
        sb_append(out, cur.p + s->prefix.n, cur.n - s->prefix.n);
        size_t new_index = s->ids.n - s->prefix_index;
        memmove(s->ids.v, s->ids.v + s->prefix_index, new_index * sizeof *s->ids.v);
        s->ids.n = new_index;
        s->prefix.n = 0;
        if (decode_sb(s->t, s->ids.v, s->ids.n, s->skip, &s->prefix, e))
            goto done;
        s->prefix_index = new_index;
    }
    rc = 0;
done:
    sb_free(&cur);
    return rc;
}

int tok_stream_flush(tok_stream *s, strbuf *out, inferd_error *e)
{
    strbuf cur = {0};
    int rc = -1;
    if (decode_sb(s->t, s->ids.v, s->ids.n, s->skip, &cur, e))
        goto done;
    if (cur.n > s->prefix.n) {
        if (s->prefix.n && memcmp(cur.p, s->prefix.p, s->prefix.n)) {
            err_set(e, "stream decode: the decoded text changed before the new token");
            goto done;
        }
        sb_append(out, cur.p + s->prefix.n, cur.n - s->prefix.n);
    }
    s->ids.n = 0;
    s->prefix.n = 0;
    s->prefix_index = 0;
    rc = 0;
done:
    sb_free(&cur);
    return rc;
}
