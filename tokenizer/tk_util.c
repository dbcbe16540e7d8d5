/* Shared helpers of the tokenizer: hash maps, Unicode classes (utf8proc, and
 * the generated tables of tk_unitab.c where the reference's Unicode differs),
 * the byte-level table, Oniguruma regexes with the reference's iteration
 * rules, and small JSON accessors. */
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <utf8proc.h>

#include "tokenizer/tk_int.h"

/* ---- hashing and maps ---------------------------------------------- */

uint64_t tk_hash(const char *p, size_t n)
{
    /* 8 bytes at a time with a multiply-mix: words are short, so this is
     * cheaper than a byte loop and good enough for open addressing. */
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return h;
}

static size_t pow2_for(size_t expect)
{
    size_t c = 16;
    while (c < expect * 2 + 2)
        c <<= 1;
    return c;
}

int tk_sm_init(tk_strmap *m, size_t expect)
{
    memset(m, 0, sizeof *m);
    m->cap = pow2_for(expect);
    m->e = calloc(m->cap, sizeof *m->e);
    if (!m->e)
        return -1;
    for (size_t i = 0; i < m->cap; i++)
        m->e[i].val = -1;
    return 0;
}

void tk_sm_free(tk_strmap *m)
{
    free(m->e);
    sb_free(&m->keys);
    memset(m, 0, sizeof *m);
}

static int sm_grow(tk_strmap *m)
{
    size_t nc = m->cap * 2;
    struct tk_sm_ent *ne = calloc(nc, sizeof *ne);
    if (!ne)
        return -1;
    for (size_t i = 0; i < nc; i++)
        ne[i].val = -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->e[i].val < 0)
            continue;
        size_t j = m->e[i].h & (nc - 1);
        while (ne[j].val >= 0)
            j = (j + 1) & (nc - 1);
        ne[j] = m->e[i];
    }
    free(m->e);
    m->e = ne;
    m->cap = nc;
    return 0;
}

int tk_sm_put(tk_strmap *m, const char *k, size_t n, int32_t v)
{
    if ((m->n + 1) * 2 > m->cap && sm_grow(m))
        return -1;
    uint64_t h = tk_hash(k, n);
    size_t j = h & (m->cap - 1);
    while (m->e[j].val >= 0) {
        if (m->e[j].h == h && m->e[j].len == n && !memcmp(m->keys.p + m->e[j].off, k, n)) {
            m->e[j].val = v;
            return 1;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->e[j].h = h;
    m->e[j].off = (uint32_t)m->keys.n;
    m->e[j].len = (uint32_t)n;
    m->e[j].val = v;
    sb_append(&m->keys, k, n);
    m->n++;
    return 0;
}

int32_t tk_sm_get(const tk_strmap *m, const char *k, size_t n)
{
    if (!m->cap)
        return -1;
    uint64_t h = tk_hash(k, n);
    size_t j = h & (m->cap - 1);
    while (m->e[j].val >= 0) {
        if (m->e[j].h == h && m->e[j].len == n && !memcmp(m->keys.p + m->e[j].off, k, n))
            return m->e[j].val;
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

int tk_um_init(tk_u64map *m, size_t expect)
{
    m->cap = pow2_for(expect);
    m->n = 0;
    m->k = malloc(m->cap * sizeof *m->k);
    m->v = malloc(m->cap * sizeof *m->v);
    if (!m->k || !m->v) {
        free(m->k);
        free(m->v);
        m->k = m->v = NULL;
        return -1;
    }
    memset(m->k, 0xFF, m->cap * sizeof *m->k);
    return 0;
}

void tk_um_free(tk_u64map *m)
{
    free(m->k);
    free(m->v);
    memset(m, 0, sizeof *m);
}

static inline size_t um_slot(uint64_t k, size_t cap)
{
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    return k & (cap - 1);
}

int tk_um_put(tk_u64map *m, uint64_t k, uint64_t v)
{
    if ((m->n + 1) * 2 > m->cap) {
        tk_u64map g;
        if (tk_um_init(&g, m->cap))
            return -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->k[i] != UINT64_MAX)
                tk_um_put(&g, m->k[i], m->v[i]);
        tk_um_free(m);
        *m = g;
    }
    size_t j = um_slot(k, m->cap);
    while (m->k[j] != UINT64_MAX) {
        if (m->k[j] == k) {
            m->v[j] = v;
            return 1;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->k[j] = k;
    m->v[j] = v;
    m->n++;
    return 0;
}

int tk_um_get(const tk_u64map *m, uint64_t k, uint64_t *v)
{
    if (!m->cap)
        return 0;
    size_t j = um_slot(k, m->cap);
    while (m->k[j] != UINT64_MAX) {
        if (m->k[j] == k) {
            *v = m->v[j];
            return 1;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return 0;
}

/* ---- Unicode classes ------------------------------------------------ */

int tk_is_ws(uint32_t c)
{
    if (c < 0x80)
        return c == ' ' || (c >= 0x09 && c <= 0x0D);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static int cat(uint32_t c)
{
    return utf8proc_category((utf8proc_int32_t)c);
}

/* BertPreTokenizer / Punctuation: ASCII punctuation, or P* as the
 * reference's unicode_categories crate has it (Unicode 8.0: later additions
 * such as U+2E47 are not punctuation there). */
int tk_is_punct(uint32_t c)
{
    if (c < 0x80)
        return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
               (c >= 123 && c <= 126);
    return tk_urange_get(tk_uni_punct, tk_uni_punct_n, c);
}

/* Digits: Rust's char::is_numeric, whose Unicode is newer than utf8proc's. */
int tk_is_numeric(uint32_t c)
{
    if (c < 0x80)
        return c >= '0' && c <= '9';
    return tk_urange_get(tk_uni_numeric, tk_uni_numeric_n, c);
}

int tk_is_alnum(uint32_t c)
{
    if (c < 0x80)
        return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z');
    int k = cat(c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
           (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

/* StripAccents: unicode_normalization_alignments' is_combining_mark (M*,
 * Unicode 9.0). */
int tk_is_mark(uint32_t c)
{
    return c >= 0x300 && tk_urange_get(tk_uni_mark, tk_uni_mark_n, c);
}

/* BertNormalizer strip_accents: Mn as of unicode_categories (Unicode 8.0). */
int tk_is_mn(uint32_t c)
{
    return c >= 0x300 && tk_urange_get(tk_uni_mn, tk_uni_mn_n, c);
}

/* BertNormalizer clean_text: unicode_categories' is_other, which lists Cc,
 * Cf and Co of Unicode 8.0 only (no Cn, no Cs), whatever its comment says. */
int tk_is_other(uint32_t c)
{
    return tk_urange_get(tk_uni_other, tk_uni_other_n, c);
}

int tk_urange_get(const tk_urange *t, size_t n, uint32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < t[mid].lo)
            hi = mid;
        else if (c > t[mid].hi)
            lo = mid + 1;
        else
            return t[mid].v;
    }
    return 0;
}

/* ---- UTF-8 validity and lossy conversion --------------------------- */

/* Length of the valid sequence at s, or -(length of the maximal invalid
 * subpart) as the Unicode standard (and Rust's Utf8Chunks) define it. */
static int u8_step(const unsigned char *s, size_t n)
{
    unsigned char b = s[0];
    if (b < 0x80)
        return 1;
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b == 0xE0) { need = 2; lo = 0xA0; }
    else if (b >= 0xE1 && b <= 0xEC) need = 2;
    else if (b == 0xED) { need = 2; hi = 0x9F; }
    else if (b >= 0xEE && b <= 0xEF) need = 2;
    else if (b == 0xF0) { need = 3; lo = 0x90; }
    else if (b >= 0xF1 && b <= 0xF3) need = 3;
    else if (b == 0xF4) { need = 3; hi = 0x8F; }
    else return -1;
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n)
            return -i;
        unsigned char c = s[i];
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (c < l || c > h)
            return -i;
    }
    return need + 1;
}

size_t tk_utf8_valid_prefix(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        int k = u8_step((const unsigned char *)s + i, n - i);
        if (k < 0)
            return i;
        i += (size_t)k;
    }
    return n;
}

void tk_lossy_append(strbuf *out, const char *s, size_t n)
{
    size_t i = 0, run = 0;
    while (i < n) {
        int k = (unsigned char)s[i] < 0x80 ? 1 : u8_step((const unsigned char *)s + i, n - i);
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        sb_append(out, s + run, i - run);
        sb_append(out, "\xEF\xBF\xBD", 3);
        i += (size_t)(-k);
        run = i;
    }
    sb_append(out, s + run, n - run);
}

/* ---- byte-level table ----------------------------------------------- */

const uint16_t tk_byte_to_cp[256] = {
    /* 0..32 -> 256..288 */
    256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271,
    272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287, 288,
    /* 33..126 -> themselves */
    33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54,
    55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76,
    77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98,
    99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116,
    117, 118, 119, 120, 121, 122, 123, 124, 125, 126,
    /* 127..160 -> 289..322 */
    289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305,
    306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322,
    /* 161..172 */
    161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172,
    /* 173 -> 323 */
    323,
    /* 174..255 */
    174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190,
    191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207,
    208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224,
    225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241,
    242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255,
};

static int16_t cp_inv[324];
static pthread_once_t cp_once = PTHREAD_ONCE_INIT;
static void cp_inv_init(void)
{
    for (int i = 0; i < 324; i++)
        cp_inv[i] = -1;
    for (int b = 0; b < 256; b++)
        cp_inv[tk_byte_to_cp[b]] = (int16_t)b;
}

int tk_cp_to_byte(uint32_t cp)
{
    if (cp >= 324)
        return -1;
    pthread_once(&cp_once, cp_inv_init);
    return cp_inv[cp];
}

/* ---- regex ---------------------------------------------------------- */

static pthread_once_t onig_once = PTHREAD_ONCE_INIT;
static void onig_setup(void)
{
    OnigEncoding enc = ONIG_ENCODING_UTF8;
    onig_initialize(&enc, 1);
}

OnigRegex tk_regex_new(const char *pat, size_t n, int literal, inferd_error *e)
{
    pthread_once(&onig_once, onig_setup);
    strbuf esc = {0};
    if (literal) {
        /* Escape every non-alphanumeric ASCII char, as regex::escape does. */
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)pat[i];
            if (c < 0x80 && !((c | 32) >= 'a' && (c | 32) <= 'z') && !(c >= '0' && c <= '9') &&
                c != ' ' && c != '_' && c >= 0x20)
                sb_putc(&esc, '\\');
            if (c < 0x20) {
                sb_printf(&esc, "\\x%02X", c);
                continue;
            }
            sb_putc(&esc, (char)c);
        }
        if (!esc.p)
            sb_puts(&esc, "");
        pat = esc.p;
        n = esc.n;
    }
    OnigRegex re = NULL;
    OnigErrorInfo einfo;
    int r = onig_new(&re, (const OnigUChar *)pat, (const OnigUChar *)pat + n, ONIG_OPTION_NONE,
                     ONIG_ENCODING_UTF8, ONIG_SYNTAX_RUBY, &einfo);
    if (r != ONIG_NORMAL) {
        OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
        onig_error_code_to_str(msg, r, &einfo);
        err_set(e, "bad regex /%.*s/: %s", (int)(n > 200 ? 200 : n), pat, (char *)msg);
        re = NULL;
    }
    sb_free(&esc);
    return re;
}

int tk_spans_push(tk_spans *a, uint32_t s, uint32_t e, int m)
{
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        tk_span *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv)
            return -1;
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = (tk_span){s, e, m};
    return 0;
}

/* Matches and gaps over s, as the onig crate's find_iter feeds the
 * reference: search resumes at the end of the last match; an empty match
 * right where the previous one ended is skipped by advancing one char. */
int tk_regex_find(OnigRegex re, const char *s, size_t n, tk_spans *out)
{
    out->n = 0;
    if (n == 0)
        return tk_spans_push(out, 0, 0, 0);
    OnigRegion *rg = onig_region_new();
    if (!rg)
        return -1;
    const OnigUChar *u = (const OnigUChar *)s;
    size_t pos = 0, prev = 0;
    long last_end = -1;
    while (pos <= n) {
        onig_region_clear(rg);
        int r = onig_search(re, u, u + n, u + pos, u + n, rg, ONIG_OPTION_NONE);
        if (r < 0)
            break;
        size_t ms = (size_t)rg->beg[0], me = (size_t)rg->end[0];
        if (ms == me && last_end == (long)me) {
            if (pos >= n)
                break;
            pos += (size_t)tk_u8len(u[pos]);
            continue;
        }
        if (prev != ms)
            tk_spans_push(out, (uint32_t)prev, (uint32_t)ms, 0);
        tk_spans_push(out, (uint32_t)ms, (uint32_t)me, 1);
        prev = me;
        last_end = (long)me;
        pos = me;
    }
    if (prev != n)
        tk_spans_push(out, (uint32_t)prev, (uint32_t)n, 0);
    onig_region_free(rg, 1);
    return 0;
}

/* ---- word lists ----------------------------------------------------- */

int tk_words_add(tk_words *w, const char *s, size_t n, int at_start)
{
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 32;
        tk_word *nv = realloc(w->v, nc * sizeof *nv);
        if (!nv)
            return -1;
        w->v = nv;
        w->cap = nc;
    }
    w->v[w->n++] = (tk_word){(uint32_t)w->buf.n, (uint32_t)n, (uint8_t)at_start};
    sb_append(&w->buf, s, n);
    return 0;
}

void tk_words_reset(tk_words *w)
{
    w->n = 0;
    w->buf.n = 0;
    if (w->buf.p)
        w->buf.p[0] = 0;
}

void tk_words_free(tk_words *w)
{
    sb_free(&w->buf);
    free(w->v);
    memset(w, 0, sizeof *w);
}

/* ---- JSON ----------------------------------------------------------- */

int tk_json_str(json_t *o, const char *key, int required, const char **out, inferd_error *e)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required) {
            err_set(e, "missing string \"%s\"", key);
            return -1;
        }
        return 0;
    }
    if (!json_is_string(v)) {
        err_set(e, "\"%s\" must be a string", key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

int tk_json_bool(json_t *o, const char *key, int dflt, inferd_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return dflt;
    if (!json_is_boolean(v)) {
        err_set(e, "\"%s\" must be true or false", key);
        return -1;
    }
    return json_is_true(v);
}
