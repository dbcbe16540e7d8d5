/* Models: turn one pre-tokenized word into ids. BPE (priority-queue merge
 * and a word cache), WordPiece (greedy longest match), WordLevel, Unigram
 * (Viterbi as the reference's optimized encoder). */
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "tokenizer/tk_int.h"

enum { M_BPE, M_WORDPIECE, M_WORDLEVEL, M_UNIGRAM };

/* Largest id we accept: real vocabularies stay below 1M; a hostile file
 * must not make us allocate gigabytes. */
#define MAX_ID (1 << 24)

/* Word cache: direct-mapped, sharded locks. Words of <= 46 bytes that merge
 * into <= 16 tokens are cached; others are recomputed (rare). */
#define CACHE_SLOTS 16384
#define CACHE_LOCKS 64
typedef struct cache_ent {
    uint64_t h;
    uint8_t wlen, nids, used, pad;
    char w[48];
    int32_t ids[16];
} cache_ent;

struct tk_model {
    int type;
    tk_strmap vocab;
    char *strs;              /* id -> token: strs + off[id], len[id] (UINT32_MAX: none) */
    uint32_t *off, *len;
    int32_t nid;             /* max id + 1 */
    size_t idcap;            /* allocated entries of off/len */
    int32_t unk;             /* -1: none */
    char *unk_str;
    /* BPE */
    tk_u64map merges;        /* (a << 32 | b) -> (rank << 32 | new id) */
    int byte_fallback, fuse_unk, ignore_merges;
    char *prefix, *suffix;   /* continuing_subword_prefix, end_of_word_suffix (or WordPiece prefix) */
    int32_t byte_id[256];
    cache_ent *cache;
    pthread_mutex_t locks[CACHE_LOCKS];
    /* WordPiece */
    size_t max_chars;
    /* Unigram */
    double *score;
    double min_score;
    size_t max_piece;
};

int tk_ids_push(tk_ids *a, int32_t id)
{
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        int32_t *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv)
            return -1;
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = id;
    return 0;
}

void tk_model_free(tk_model *m)
{
    if (!m)
        return;
    tk_sm_free(&m->vocab);
    tk_um_free(&m->merges);
    free(m->strs);
    free(m->off);
    free(m->len);
    free(m->unk_str);
    free(m->prefix);
    free(m->suffix);
    free(m->score);
    if (m->cache) {
        free(m->cache);
        for (int i = 0; i < CACHE_LOCKS; i++)
            pthread_mutex_destroy(&m->locks[i]);
    }
    free(m);
}

/* Adds (token, id) to the vocabulary and the id table. */
static int vocab_add(tk_model *m, strbuf *strs, const char *s, size_t n, json_int_t id,
                     inferd_error *e)
{
    if (id < 0 || id >= MAX_ID) {
        err_set(e, "token id %lld of \"%.40s\" is out of range [0, %d)", (long long)id, s, MAX_ID);
        return -1;
    }
    if (id >= m->nid) {
        /* grow geometrically: vocabularies arrive in id order, and one
         * realloc per token would copy the table quadratically */
        size_t nn = (size_t)id + 1;
        if (nn > m->idcap) {
            size_t cap = m->idcap ? m->idcap : 1024;
            while (cap < nn)
                cap *= 2;
            uint32_t *no = realloc(m->off, cap * sizeof *no), *nl;
            if (!no)
                goto oom;
            m->off = no;
            nl = realloc(m->len, cap * sizeof *nl);
            if (!nl)
                goto oom;
            m->len = nl;
            m->idcap = cap;
        }
        for (size_t i = (size_t)m->nid; i < nn; i++)
            m->len[i] = UINT32_MAX;
        m->nid = (int32_t)nn;
    }
    m->off[id] = (uint32_t)strs->n;
    m->len[id] = (uint32_t)n;
    sb_append(strs, s, n);
    if (tk_sm_put(&m->vocab, s, n, (int32_t)id) < 0)
        goto oom;
    return 0;
oom:
    err_set(e, "out of memory");
    return -1;
}

static int dup_opt(json_t *j, const char *key, char **out, inferd_error *e)
{
    const char *s;
    if (tk_json_str(j, key, 0, &s, e))
        return -1;
    if (s && !(*out = strdup(s))) {
        err_set(e, "out of memory");
        return -1;
    }
    return 0;
}

static int parse_vocab_obj(tk_model *m, json_t *v, strbuf *strs, inferd_error *e)
{
    if (!json_is_object(v)) {
        err_set(e, "\"vocab\" must be an object of token: id");
        return -1;
    }
    if (tk_sm_init(&m->vocab, json_object_size(v))) {
        err_set(e, "out of memory");
        return -1;
    }
    const char *k;
    json_t *val;
    json_object_foreach(v, k, val) {
        if (!json_is_integer(val)) {
            err_set(e, "vocab id of \"%.40s\" is not an integer", k);
            return -1;
        }
        if (vocab_add(m, strs, k, strlen(k), json_integer_value(val), e))
            return -1;
    }
    return 0;
}

static int parse_merges(tk_model *m, json_t *a, inferd_error *e)
{
    if (!a || json_is_null(a))
        a = NULL;
    else if (!json_is_array(a)) {
        err_set(e, "\"merges\" must be an array");
        return -1;
    }
    size_t n = a ? json_array_size(a) : 0;
    if (tk_um_init(&m->merges, n)) {
        err_set(e, "out of memory");
        return -1;
    }
    size_t pl = m->prefix ? strlen(m->prefix) : 0;
    strbuf nt = {0};
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(a, i);
        const char *x, *y;
        size_t xl, yl;
        if (json_is_string(it)) {
            x = json_string_value(it);
            const char *sp = strchr(x, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                err_set(e, "merge %zu \"%.40s\" is not two tokens separated by a space", i, x);
                goto done;
            }
            xl = (size_t)(sp - x);
            y = sp + 1;
            yl = strlen(y);
        } else if (json_is_array(it) && json_array_size(it) == 2 &&
                   json_is_string(json_array_get(it, 0)) && json_is_string(json_array_get(it, 1))) {
            x = json_string_value(json_array_get(it, 0));
            xl = json_string_length(json_array_get(it, 0));
            y = json_string_value(json_array_get(it, 1));
            yl = json_string_length(json_array_get(it, 1));
        } else {
            err_set(e, "merge %zu must be \"a b\" or [\"a\", \"b\"]", i);
            goto done;
        }
        int32_t ia = tk_sm_get(&m->vocab, x, xl), ib = tk_sm_get(&m->vocab, y, yl);
        nt.n = 0;
        sb_append(&nt, x, xl);
        if (yl >= pl)
            sb_append(&nt, y + pl, yl - pl);
        int32_t in = tk_sm_get(&m->vocab, nt.p, nt.n);
        if (ia < 0 || ib < 0 || in < 0) {
            err_set(e, "merge %zu (\"%.*s\" \"%.*s\") uses a token missing from the vocab", i,
                    (int)(xl > 40 ? 40 : xl), x, (int)(yl > 40 ? 40 : yl), y);
            goto done;
        }
        if (tk_um_put(&m->merges, (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib,
                      (uint64_t)i << 32 | (uint32_t)in) < 0) {
            err_set(e, "out of memory");
            goto done;
        }
    }
    rc = 0;
done:
    sb_free(&nt);
    return rc;
}

tk_model *tk_model_parse(json_t *j, inferd_error *e)
{
    if (!json_is_object(j)) {
        err_set(e, "\"model\" must be an object");
        return NULL;
    }
    tk_model *m = calloc(1, sizeof *m);
    strbuf strs = {0};
    if (!m) {
        err_set(e, "out of memory");
        return NULL;
    }
    m->unk = -1;
    const char *type;
    if (tk_json_str(j, "type", 0, &type, e))
        goto err;
    if (!type) {
        /* old files omit the type: guess from the keys, as serde does */
        type = json_object_get(j, "merges") ? "BPE" :
               json_object_get(j, "max_input_chars_per_word") ? "WordPiece" :
               json_is_array(json_object_get(j, "vocab")) ? "Unigram" : "WordLevel";
    }
    json_t *v = json_object_get(j, "vocab");
    if (!strcmp(type, "BPE")) {
        m->type = M_BPE;
        if (dup_opt(j, "continuing_subword_prefix", &m->prefix, e) ||
            dup_opt(j, "end_of_word_suffix", &m->suffix, e) || dup_opt(j, "unk_token", &m->unk_str, e) ||
            (m->byte_fallback = tk_json_bool(j, "byte_fallback", 0, e)) < 0 ||
            (m->fuse_unk = tk_json_bool(j, "fuse_unk", 0, e)) < 0 ||
            (m->ignore_merges = tk_json_bool(j, "ignore_merges", 0, e)) < 0)
            goto err;
        if (parse_vocab_obj(m, v, &strs, e) || parse_merges(m, json_object_get(j, "merges"), e))
            goto err;
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            m->byte_id[b] = tk_sm_get(&m->vocab, name, 6);
        }
        m->cache = calloc(CACHE_SLOTS, sizeof *m->cache);
        if (!m->cache) {
            err_set(e, "out of memory");
            goto err;
        }
        for (int i = 0; i < CACHE_LOCKS; i++)
            pthread_mutex_init(&m->locks[i], NULL);
    } else if (!strcmp(type, "WordPiece")) {
        m->type = M_WORDPIECE;
        if (dup_opt(j, "continuing_subword_prefix", &m->prefix, e) || dup_opt(j, "unk_token", &m->unk_str, e))
            goto err;
        if (!m->prefix && !(m->prefix = strdup("##")))
            goto err;
        json_t *mc = json_object_get(j, "max_input_chars_per_word");
        m->max_chars = 100;
        if (mc && !json_is_null(mc)) {
            if (!json_is_integer(mc) || json_integer_value(mc) < 0) {
                err_set(e, "\"max_input_chars_per_word\" must be a non-negative integer");
                goto err;
            }
            m->max_chars = (size_t)json_integer_value(mc);
        }
        if (parse_vocab_obj(m, v, &strs, e))
            goto err;
        if (!m->unk_str && !(m->unk_str = strdup("[UNK]")))
            goto err;
    } else if (!strcmp(type, "WordLevel")) {
        m->type = M_WORDLEVEL;
        if (dup_opt(j, "unk_token", &m->unk_str, e) || parse_vocab_obj(m, v, &strs, e))
            goto err;
    } else if (!strcmp(type, "Unigram")) {
        m->type = M_UNIGRAM;
        if (!json_is_array(v)) {
            err_set(e, "Unigram \"vocab\" must be an array of [piece, score]");
            goto err;
        }
        size_t n = json_array_size(v);
        if (n >= MAX_ID) {
            err_set(e, "Unigram vocab too large");
            goto err;
        }
        if (tk_sm_init(&m->vocab, n) || !(m->score = malloc((n + 1) * sizeof *m->score))) {
            err_set(e, "out of memory");
            goto err;
        }
        m->min_score = 1e300;
        for (size_t i = 0; i < n; i++) {
            json_t *it = json_array_get(v, i);
            json_t *p = json_array_get(it, 0), *s = json_array_get(it, 1);
            if (!json_is_array(it) || !json_is_string(p) || !json_is_number(s)) {
                err_set(e, "Unigram vocab entry %zu must be [string, number]", i);
                goto err;
            }
            size_t pl = json_string_length(p);
            if (vocab_add(m, &strs, json_string_value(p), pl, (json_int_t)i, e))
                goto err;
            m->score[i] = json_number_value(s);
            if (m->score[i] < m->min_score)
                m->min_score = m->score[i];
            if (pl > m->max_piece)
                m->max_piece = pl;
        }
        json_t *u = json_object_get(j, "unk_id");
        if (u && !json_is_null(u)) {
            if (!json_is_integer(u) || json_integer_value(u) < 0 || (size_t)json_integer_value(u) >= n) {
                err_set(e, "\"unk_id\" must be an index into the vocab");
                goto err;
            }
            m->unk = (int32_t)json_integer_value(u);
        }
        if ((m->byte_fallback = tk_json_bool(j, "byte_fallback", 0, e)) < 0)
            goto err;
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            m->byte_id[b] = tk_sm_get(&m->vocab, name, 6);
        }
    } else {
        err_set(e, "unsupported model type \"%s\"", type);
        goto err;
    }
    if (m->unk_str && m->type != M_UNIGRAM) {
        m->unk = tk_sm_get(&m->vocab, m->unk_str, strlen(m->unk_str));
        /* A missing unk token is only an error when it is needed, as in
         * the reference. */
    }
    if (!(m->strs = sb_steal(&strs))) {
        err_set(e, "out of memory");
        goto err;
    }
    return m;
err:
    sb_free(&strs);
    err_prefix(e, "model %s", type ? type : "?");
    tk_model_free(m);
    return NULL;
}

int32_t tk_model_token_to_id(const tk_model *m, const char *s, size_t n)
{
    return tk_sm_get(&m->vocab, s, n);
}

const char *tk_model_id_to_token(const tk_model *m, int32_t id, size_t *len)
{
    if (id < 0 || id >= m->nid || m->len[id] == UINT32_MAX)
        return NULL;
    *len = m->len[id];
    return m->strs + m->off[id];
}

int32_t tk_model_max_id(const tk_model *m)
{
    return m->nid - 1;
}

/* ---- BPE -------------------------------------------------------------- */

typedef struct sym { int32_t c; int32_t prev, next; uint32_t len; } sym;
typedef struct merge { uint32_t rank; int32_t pos; int32_t id; } merge;

static int merge_less(merge a, merge b)
{
    return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos;
}

static void heap_push(merge *h, size_t *n, merge x)
{
    size_t i = (*n)++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!merge_less(x, h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static merge heap_pop(merge *h, size_t *n)
{
    merge top = h[0], x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        merge best = x;
        if (l < *n && merge_less(h[l], best)) { m = l; best = h[l]; }
        if (r < *n && merge_less(h[r], best)) { m = r; }
        if (m == i)
            break;
        h[i] = h[m];
        i = m;
    }
    if (*n)
        h[i] = x;
    return top;
}

static int lookup_merge(const tk_model *m, int32_t a, int32_t b, uint32_t *rank, int32_t *id)
{
    uint64_t v;
    if (!tk_um_get(&m->merges, (uint64_t)(uint32_t)a << 32 | (uint32_t)b, &v))
        return 0;
    *rank = (uint32_t)(v >> 32);
    *id = (int32_t)(uint32_t)v;
    return 1;
}

static int bpe_word(const tk_model *m, const char *w, size_t n, tk_ids *out, inferd_error *e)
{
    size_t pl = m->prefix ? strlen(m->prefix) : 0, sl = m->suffix ? strlen(m->suffix) : 0;
    /* byte fallback can give one symbol per byte of prefix + char + suffix */
    size_t maxs = n * (pl + sl + 1) + 4;
    sym *s = malloc(maxs * sizeof *s);
    merge *heap = malloc(3 * maxs * sizeof *heap);
    strbuf tmp = {0};
    int rc = -1;
    if (!s || !heap) {
        err_set(e, "out of memory");
        goto done;
    }
    size_t ns = 0;
    int32_t unk_id = -1;
    uint32_t unk_len = 0;
#define ADD(id_, len_) do { s[ns] = (sym){(id_), (int32_t)ns - 1, (int32_t)ns + 1, (len_)}; ns++; } while (0)
    for (size_t i = 0; i < n;) {
        size_t k = (size_t)tk_u8len((unsigned char)w[i]);
        int first = i == 0, last = i + k >= n;
        const char *c = w + i;
        size_t cl = k;
        if ((!first && pl) || (last && sl)) {
            tmp.n = 0;
            if (!first && pl)
                sb_append(&tmp, m->prefix, pl);
            sb_append(&tmp, w + i, k);
            if (last && sl)
                sb_append(&tmp, m->suffix, sl);
            c = tmp.p;
            cl = tmp.n;
        }
        int32_t id = tk_sm_get(&m->vocab, c, cl);
        if (id >= 0) {
            if (unk_id >= 0) {
                ADD(unk_id, unk_len);
                unk_id = -1;
            }
            ADD(id, (uint32_t)k);
        } else {
            int done_bytes = 0;
            if (m->byte_fallback) {
                size_t q;
                for (q = 0; q < cl; q++)
                    if (m->byte_id[(unsigned char)c[q]] < 0)
                        break;
                if (q == cl) {
                    for (q = 0; q < cl; q++)
                        ADD(m->byte_id[(unsigned char)c[q]], 1);
                    done_bytes = 1;
                }
            }
            if (!done_bytes && m->unk_str) {
                if (m->unk < 0) {
                    err_set(e, "unk token \"%s\" is not in the vocabulary", m->unk_str);
                    goto done;
                }
                if (unk_id >= 0 && m->fuse_unk) {
                    unk_len += (uint32_t)k;
                } else {
                    if (unk_id >= 0)
                        ADD(unk_id, unk_len);
                    unk_id = m->unk;
                    unk_len = (uint32_t)k;
                }
            }
        }
        i += k;
    }
    if (unk_id >= 0)
        ADD(unk_id, unk_len);
#undef ADD
    if (ns)
        s[ns - 1].next = -1;
    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        uint32_t r;
        int32_t id;
        if (lookup_merge(m, s[i].c, s[i + 1].c, &r, &id))
            heap_push(heap, &nh, (merge){r, (int32_t)i, id});
    }
    while (nh) {
        merge top = heap_pop(heap, &nh);
        sym *cur = &s[top.pos];
        if (cur->len == 0 || cur->next < 0)
            continue;
        int32_t ri = cur->next;
        sym right = s[ri];
        uint32_t r;
        int32_t id;
        /* a stale entry: the pair changed since it was queued */
        if (!lookup_merge(m, cur->c, right.c, &r, &id) || id != top.id)
            continue;
        cur->c = top.id;
        cur->len += right.len;
        cur->next = right.next;
        s[ri].len = 0;
        if (right.next >= 0)
            s[right.next].prev = top.pos;
        if (cur->prev >= 0 && lookup_merge(m, s[cur->prev].c, cur->c, &r, &id))
            heap_push(heap, &nh, (merge){r, cur->prev, id});
        if (cur->next >= 0 && lookup_merge(m, cur->c, s[cur->next].c, &r, &id))
            heap_push(heap, &nh, (merge){r, top.pos, id});
    }
    for (int32_t i = ns ? 0 : -1; i >= 0; i = s[i].next)
        if (tk_ids_push(out, s[i].c)) {
            err_set(e, "out of memory");
            goto done;
        }
    rc = 0;
done:
    free(s);
    free(heap);
    sb_free(&tmp);
    return rc;
}

static int bpe_tokenize(const tk_model *m, const char *w, size_t n, tk_ids *out, inferd_error *e)
{
    if (m->ignore_merges) {
        int32_t id = tk_sm_get(&m->vocab, w, n);
        if (id >= 0)
            return tk_ids_push(out, id);
    }
    uint64_t h = tk_hash(w, n);
    size_t slot = h & (CACHE_SLOTS - 1);
    cache_ent *ce = &m->cache[slot];
    pthread_mutex_t *lk = (pthread_mutex_t *)&m->locks[slot % CACHE_LOCKS];
    if (n <= sizeof ce->w) {
        int32_t ids[16];
        int hit = 0, nids = 0;
        pthread_mutex_lock(lk);
        if (ce->used && ce->h == h && ce->wlen == n && !memcmp(ce->w, w, n)) {
            hit = 1;
            nids = ce->nids;
            memcpy(ids, ce->ids, (size_t)nids * sizeof *ids);
        }
        pthread_mutex_unlock(lk);
        if (hit) {
            for (int i = 0; i < nids; i++)
                if (tk_ids_push(out, ids[i]))
                    return -1;
            return 0;
        }
    }
    size_t before = out->n;
    if (bpe_word(m, w, n, out, e))
        return -1;
    size_t got = out->n - before;
    if (n <= sizeof ce->w && got <= 16) {
        pthread_mutex_lock(lk);
        ce->used = 1;
        ce->h = h;
        ce->wlen = (uint8_t)n;
        memcpy(ce->w, w, n);
        ce->nids = (uint8_t)got;
        if (got) /* a word of characters without tokens gives none; out->v may be NULL */
            memcpy(ce->ids, out->v + before, got * sizeof *out->v);
        pthread_mutex_unlock(lk);
    }
    return 0;
}

/* ---- WordPiece / WordLevel ------------------------------------------ */

static int need_unk(const tk_model *m, tk_ids *out, inferd_error *e)
{
    if (m->unk < 0) {
        err_set(e, "unk token \"%s\" is not in the vocabulary", m->unk_str ? m->unk_str : "");
        return -1;
    }
    return tk_ids_push(out, m->unk);
}

static int wordpiece(const tk_model *m, const char *w, size_t n, tk_ids *out, inferd_error *e)
{
    size_t nchars = 0;
    for (size_t i = 0; i < n; i += (size_t)tk_u8len((unsigned char)w[i]))
        nchars++;
    if (nchars > m->max_chars)
        return need_unk(m, out, e);
    size_t before = out->n, pl = strlen(m->prefix), start = 0;
    strbuf tmp = {0};
    while (start < n) {
        size_t end = n;
        int32_t found = -1;
        while (start < end) {
            int32_t id;
            if (start > 0) {
                tmp.n = 0;
                sb_append(&tmp, m->prefix, pl);
                sb_append(&tmp, w + start, end - start);
                id = tk_sm_get(&m->vocab, tmp.p, tmp.n);
            } else {
                id = tk_sm_get(&m->vocab, w + start, end - start);
            }
            if (id >= 0) {
                found = id;
                break;
            }
            /* drop the last char */
            end--;
            while (end > start && ((unsigned char)w[end] & 0xC0) == 0x80)
                end--;
        }
        if (found < 0) {
            sb_free(&tmp);
            out->n = before;
            return need_unk(m, out, e);
        }
        if (tk_ids_push(out, found)) {
            sb_free(&tmp);
            return -1;
        }
        start = end;
    }
    sb_free(&tmp);
    return 0;
}

/* ---- Unigram ---------------------------------------------------------- */

typedef struct best { double score; int32_t id; int32_t start; } best;

static int unigram(const tk_model *m, const char *w, size_t n, tk_ids *out, inferd_error *e)
{
    const double unk_score = m->min_score - 10.0;
    best *b = malloc((n + 1) * sizeof *b);
    int32_t *rev = malloc((n + 1) * 2 * sizeof *rev);
    int rc = -1;
    if (!b || !rev) {
        err_set(e, "out of memory");
        goto done;
    }
    for (size_t i = 0; i <= n; i++)
        b[i] = (best){0, -1, -1};
    for (size_t st = 0; st < n;) {
        double base = b[st].score;
        size_t mb = (size_t)tk_u8len((unsigned char)w[st]);
        int single = 0;
        /* every vocab piece starting here, shortest first (a trie's order) */
        for (size_t len = 1; len <= m->max_piece && st + len <= n; len++) {
            int32_t id = tk_sm_get(&m->vocab, w + st, len);
            if (id < 0)
                continue;
            double cand = m->score[id] + base;
            best *t = &b[st + len];
            if (t->start < 0 || cand > t->score)
                *t = (best){cand, id, (int32_t)st};
            if (len == mb)
                single = 1;
        }
        if (!single) {
            if (m->unk < 0) {
                err_set(e, "Unigram: text needs the unk token but the model has no unk_id");
                goto done;
            }
            double cand = unk_score + base;
            best *t = &b[st + mb];
            if (t->start < 0 || cand > t->score)
                *t = (best){cand, m->unk, (int32_t)st};
        }
        st += mb;
    }
    /* Backtrack into rev[] as (id, start) pairs, last piece first; a run
     * of unk pieces becomes one entry with id -2 (the reference always
     * fuses unk in Unigram). A piece ends where the next one starts. */
    size_t nr = 0;
    for (size_t end = n; end > 0;) {
        best *t = &b[end];
        if (t->start < 0) {
            err_set(e, "Unigram: no segmentation");
            goto done;
        }
        int is_unk = t->id == m->unk;
        if (is_unk && nr && rev[2 * (nr - 1)] == -2) {
            rev[2 * (nr - 1) + 1] = t->start;
        } else {
            rev[2 * nr] = is_unk ? -2 : t->id;
            rev[2 * nr + 1] = t->start;
            nr++;
        }
        end = (size_t)t->start;
    }
    for (size_t i = nr; i-- > 0;) {
        int32_t id = rev[2 * i];
        size_t st = (size_t)rev[2 * i + 1];
        size_t en = i > 0 ? (size_t)rev[2 * (i - 1) + 1] : n;
        if (id >= 0) {
            if (tk_ids_push(out, id))
                goto oom;
            continue;
        }
        /* a fused unk run w[st..en): in the vocab only by accident, else
         * byte fallback when every byte has a token, else unk */
        int32_t vid = tk_sm_get(&m->vocab, w + st, en - st);
        if (vid >= 0) {
            if (tk_ids_push(out, vid))
                goto oom;
            continue;
        }
        if (m->byte_fallback) {
            size_t q;
            for (q = st; q < en; q++)
                if (m->byte_id[(unsigned char)w[q]] < 0)
                    break;
            if (q == en) {
                for (q = st; q < en; q++)
                    if (tk_ids_push(out, m->byte_id[(unsigned char)w[q]]))
                        goto oom;
                continue;
            }
        }
        if (tk_ids_push(out, m->unk))
            goto oom;
    }
    rc = 0;
    goto done;
oom:
    err_set(e, "out of memory");
done:
    free(b);
    free(rev);
    return rc;
}

int tk_model_tokenize(const tk_model *m, const char *w, size_t n, tk_ids *out, inferd_error *e)
{
    if (!n)
        return 0;
    switch (m->type) {
    case M_BPE:
        return bpe_tokenize(m, w, n, out, e);
    case M_WORDPIECE:
        return wordpiece(m, w, n, out, e);
    case M_WORDLEVEL: {
        int32_t id = tk_sm_get(&m->vocab, w, n);
        if (id >= 0)
            return tk_ids_push(out, id);
        if (!m->unk_str || m->unk < 0) {
            err_set(e, "WordLevel: \"%.*s\" is not in the vocabulary and there is no unk token",
                    (int)(n > 40 ? 40 : n), w);
            return -1;
        }
        return tk_ids_push(out, m->unk);
    }
    case M_UNIGRAM:
        return unigram(m, w, n, out, e);
    }
    return 0;
}
