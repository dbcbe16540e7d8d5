/* Normalizers: the `normalizer` of tokenizer.json. Each rewrites a whole
 * string; offsets are not tracked because inferd only needs ids. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tk_int.h"

enum { N_SEQ, N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWER, N_STRIP, N_STRIPACC, N_REPLACE,
       N_PREPEND, N_BERT, N_PRECOMP, N_BYTELEVEL };

struct tk_norm {
    int type;
    tk_norm **sub;
    size_t nsub;
    int left, right;                 /* Strip */
    OnigRegex re;                    /* Replace (regex) */
    char *pat;                       /* Replace (string) */
    size_t pat_n;
    char *content;                   /* Replace, Prepend */
    int clean, chinese, strip_acc, lower; /* BertNormalizer */
    tk_precomp *pc;
};

void tk_norm_free(tk_norm *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nsub; i++)
        tk_norm_free(n->sub[i]);
    free(n->sub);
    if (n->re)
        onig_free(n->re);
    free(n->pat);
    free(n->content);
    tk_precomp_free(n->pc);
    free(n);
}

tk_norm *tk_norm_parse(json_t *j, inferd_error *e)
{
    if (!json_is_object(j)) {
        err_set(e, "normalizer must be an object");
        return NULL;
    }
    const char *type;
    if (tk_json_str(j, "type", 1, &type, e))
        return NULL;
    tk_norm *n = calloc(1, sizeof *n);
    if (!n) {
        err_set(e, "out of memory");
        return NULL;
    }
    if (!strcmp(type, "Sequence")) {
        n->type = N_SEQ;
        json_t *a = json_object_get(j, "normalizers");
        if (!json_is_array(a)) {
            err_set(e, "Sequence normalizer needs a \"normalizers\" array");
            goto err;
        }
        n->sub = calloc(json_array_size(a) + 1, sizeof *n->sub);
        if (!n->sub)
            goto oom;
        for (size_t i = 0; i < json_array_size(a); i++) {
            n->sub[i] = tk_norm_parse(json_array_get(a, i), e);
            if (!n->sub[i])
                goto err;
            n->nsub++;
        }
    } else if (!strcmp(type, "NFC")) n->type = N_NFC;
    else if (!strcmp(type, "NFD")) n->type = N_NFD;
    else if (!strcmp(type, "NFKC")) n->type = N_NFKC;
    else if (!strcmp(type, "NFKD")) n->type = N_NFKD;
    else if (!strcmp(type, "Lowercase")) n->type = N_LOWER;
    else if (!strcmp(type, "StripAccents")) n->type = N_STRIPACC;
    else if (!strcmp(type, "ByteLevel")) n->type = N_BYTELEVEL;
    else if (!strcmp(type, "Strip")) {
        n->type = N_STRIP;
        if ((n->left = tk_json_bool(j, "strip_left", 1, e)) < 0 ||
            (n->right = tk_json_bool(j, "strip_right", 1, e)) < 0)
            goto err;
    } else if (!strcmp(type, "Prepend")) {
        n->type = N_PREPEND;
        const char *p;
        if (tk_json_str(j, "prepend", 1, &p, e))
            goto err;
        if (!(n->content = strdup(p)))
            goto oom;
    } else if (!strcmp(type, "Replace")) {
        n->type = N_REPLACE;
        const char *c;
        if (tk_json_str(j, "content", 1, &c, e))
            goto err;
        if (!(n->content = strdup(c)))
            goto oom;
        json_t *p = json_object_get(j, "pattern");
        const char *s = NULL, *r = NULL;
        if (!json_is_object(p) || tk_json_str(p, "String", 0, &s, e) ||
            tk_json_str(p, "Regex", 0, &r, e) || (!s && !r)) {
            err_set(e, "Replace normalizer needs \"pattern\": {\"String\"|\"Regex\": ...}");
            goto err;
        }
        if (s) {
            n->pat_n = json_string_length(json_object_get(p, "String"));
            if (!(n->pat = malloc(n->pat_n + 1)))
                goto oom;
            memcpy(n->pat, s, n->pat_n + 1);
        } else if (!(n->re = tk_regex_new(r, json_string_length(json_object_get(p, "Regex")), 0, e))) {
            goto err;
        }
    } else if (!strcmp(type, "BertNormalizer")) {
        n->type = N_BERT;
        if ((n->clean = tk_json_bool(j, "clean_text", 1, e)) < 0 ||
            (n->chinese = tk_json_bool(j, "handle_chinese_chars", 1, e)) < 0 ||
            (n->lower = tk_json_bool(j, "lowercase", 1, e)) < 0 ||
            (n->strip_acc = tk_json_bool(j, "strip_accents", n->lower, e)) < 0)
            goto err;
    } else if (!strcmp(type, "Precompiled")) {
        n->type = N_PRECOMP;
        const char *b;
        if (tk_json_str(j, "precompiled_charsmap", 0, &b, e))
            goto err;
        if (b && !(n->pc = tk_precomp_new(b, e)))
            goto err;
    } else {
        err_set(e, "unsupported normalizer type \"%s\"", type);
        goto err;
    }
    return n;
oom:
    err_set(e, "out of memory");
err:
    err_prefix(e, "normalizer %s", type);
    tk_norm_free(n);
    return NULL;
}

static int all_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
}

/* NFC is the identity on text made only of chars below U+0300 and CJK
 * ideographs (none decompose, none compose with what follows): the common
 * case skips utf8proc's allocation. */
static int nfc_stable(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t c;
        i += (size_t)tk_u8(s + i, &c);
        if (c >= 0x300 && !(c >= 0x4E00 && c <= 0x9FFF) && !(c >= 0x3400 && c <= 0x4DBF))
            return 0;
    }
    return 1;
}

static int map_append(int opt, const char *s, size_t n, strbuf *out, inferd_error *e)
{
    if (!n)
        return 0;
    utf8proc_uint8_t *r = NULL;
    utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &r,
                                      (utf8proc_option_t)opt);
    if (k < 0) {
        err_set(e, "unicode normalization failed: %s", utf8proc_errmsg(k));
        return -1;
    }
    sb_append(out, (const char *)r, (size_t)k);
    free(r);
    return 0;
}

/* Offset of the next char that the reference's (Unicode 9.0) normalization
 * tables do not know but utf8proc's would decompose, reorder or compose
 * ("frozen": an unassigned starter for the reference), or n. */
static size_t next_frozen(const char *s, size_t n, size_t i, size_t *len)
{
    while (i < n) {
        uint32_t c;
        int k = tk_u8(s + i, &c);
        if (c >= 0x7FD && tk_urange_get(tk_uni_nf_frozen, tk_uni_nf_frozen_n, c)) {
            *len = (size_t)k;
            return i;
        }
        i += (size_t)k;
    }
    *len = 0;
    return n;
}

static int unorm(int type, const char *s, size_t n, strbuf *out, inferd_error *e)
{
    out->n = 0;
    if (all_ascii(s, n) || (type == N_NFC && nfc_stable(s, n))) {
        sb_append(out, s, n);
        return 0;
    }
    int opt = UTF8PROC_STABLE;
    if (type == N_NFC || type == N_NFKC)
        opt |= UTF8PROC_COMPOSE;
    else
        opt |= UTF8PROC_DECOMPOSE;
    if (type == N_NFKC || type == N_NFKD)
        opt |= UTF8PROC_COMPAT;
    /* A frozen char blocks reordering and composition across it, so the
     * pieces around it normalize on their own; it stays as it is. */
    for (size_t i = 0; i <= n;) {
        size_t fl, f = next_frozen(s, n, i, &fl);
        if (map_append(opt, s + i, f - i, out, e))
            return -1;
        if (f == n)
            break;
        sb_append(out, s + f, fl);
        i = f + fl;
    }
    return 0;
}

static void put_cp(strbuf *b, uint32_t c)
{
    char u[4];
    sb_append(b, u, (size_t)utf8_encode(c, u));
}

static void lowercase(const char *s, size_t n, strbuf *out)
{
    for (size_t i = 0; i < n;) {
        uint32_t c;
        int k = tk_u8(s + i, &c);
        if (c < 0x80) {
            sb_putc(out, (char)(c >= 'A' && c <= 'Z' ? c + 32 : c));
        } else if (c == 0x130) {
            sb_append(out, "i\xCC\x87", 3); /* the one multi-char lowercase mapping */
        } else {
            put_cp(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)c));
        }
        i += (size_t)k;
    }
}

static int is_chinese(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static void replace_all(const tk_norm *nm, const char *s, size_t n, strbuf *out)
{
    size_t cl = strlen(nm->content);
    if (nm->pat) {
        size_t i = 0;
        if (!nm->pat_n) {
            sb_append(out, s, n);
            return;
        }
        while (i < n) {
            const char *f = memmem(s + i, n - i, nm->pat, nm->pat_n);
            if (!f)
                break;
            sb_append(out, s + i, (size_t)(f - (s + i)));
            sb_append(out, nm->content, cl);
            i = (size_t)(f - s) + nm->pat_n;
        }
        sb_append(out, s + i, n - i);
        return;
    }
    tk_spans sp = {0};
    tk_regex_find(nm->re, s, n, &sp);
    for (size_t i = 0; i < sp.n; i++) {
        if (sp.v[i].m)
            sb_append(out, nm->content, cl);
        else
            sb_append(out, s + sp.v[i].s, sp.v[i].e - sp.v[i].s);
    }
    free(sp.v);
}

static int bert(const tk_norm *nm, const char *s, size_t n, strbuf *out, int *start_kept,
                inferd_error *e)
{
    strbuf a = {0}, b = {0};
    int rc = 0;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        i += (size_t)tk_u8(s + i, &c);
        if (nm->clean) {
            /* controls go first (even \x85, \v, \f, which are also
             * whitespace), then whitespace becomes ' ' */
            int tnr = c == '\t' || c == '\n' || c == '\r';
            if (c == 0 || c == 0xFFFD || (!tnr && tk_is_other(c))) {
                if (!a.n && start_kept)
                    *start_kept = 0;
                continue;
            }
            if (tnr || tk_is_ws(c))
                c = ' ';
        }
        if (nm->chinese && is_chinese(c)) {
            sb_putc(&a, ' ');
            put_cp(&a, c);
            sb_putc(&a, ' ');
        } else {
            put_cp(&a, c);
        }
    }
    if (!a.p)
        sb_puts(&a, "");
    if (nm->strip_acc) {
        if (unorm(N_NFD, a.p, a.n, &b, e)) {
            rc = -1;
            goto done;
        }
        a.n = 0;
        for (size_t i = 0; i < b.n;) {
            uint32_t c;
            int k = tk_u8(b.p + i, &c);
            if (!tk_is_mn(c))
                sb_append(&a, b.p + i, (size_t)k);
            i += (size_t)k;
        }
    }
    out->n = 0;
    if (nm->lower)
        lowercase(a.p, a.n, out);
    else
        sb_append(out, a.p, a.n);
done:
    sb_free(&a);
    sb_free(&b);
    return rc;
}

int tk_norm_apply(const tk_norm *nm, const char *s, size_t n, strbuf *out, int *start_kept,
                  inferd_error *e)
{
    out->n = 0;
    sb_append(out, "", 0);
    if (!nm) {
        sb_append(out, s, n);
        return 0;
    }
    switch (nm->type) {
    case N_SEQ: {
        strbuf cur = {0};
        sb_append(&cur, s, n);
        sb_append(&cur, "", 0);
        for (size_t i = 0; i < nm->nsub; i++) {
            if (tk_norm_apply(nm->sub[i], cur.p, cur.n, out, start_kept, e)) {
                sb_free(&cur);
                return -1;
            }
            strbuf t = cur;
            cur = *out;
            *out = t;
        }
        out->n = 0;
        sb_append(out, cur.p, cur.n);
        sb_free(&cur);
        return 0;
    }
    case N_NFC: case N_NFD: case N_NFKC: case N_NFKD:
        return unorm(nm->type, s, n, out, e);
    case N_LOWER:
        lowercase(s, n, out);
        return 0;
    case N_STRIP: {
        size_t a = 0, b = n;
        if (nm->left)
            while (a < b) {
                uint32_t c;
                int k = tk_u8(s + a, &c);
                if (!tk_is_ws(c))
                    break;
                a += (size_t)k;
            }
        if (nm->right)
            while (b > a) {
                size_t p = b - 1;
                while (p > a && ((unsigned char)s[p] & 0xC0) == 0x80)
                    p--;
                uint32_t c;
                tk_u8(s + p, &c);
                if (!tk_is_ws(c))
                    break;
                b = p;
            }
        if (a > 0 && start_kept)
            *start_kept = 0;
        sb_append(out, s + a, b - a);
        return 0;
    }
    case N_STRIPACC:
        for (size_t i = 0; i < n;) {
            uint32_t c;
            int k = tk_u8(s + i, &c);
            if (!tk_is_mark(c))
                sb_append(out, s + i, (size_t)k);
            else if (!out->n && start_kept)
                *start_kept = 0;
            i += (size_t)k;
        }
        return 0;
    case N_REPLACE:
        /* a replacement at offset 0 moves where the text starts in the
         * original (the reference marks replaced chars as insertions) */
        if (start_kept && n && (nm->pat ? nm->pat_n && n >= nm->pat_n && !memcmp(s, nm->pat, nm->pat_n)
                                        : onig_match(nm->re, (const OnigUChar *)s, (const OnigUChar *)s + n,
                                                     (const OnigUChar *)s, NULL, ONIG_OPTION_NONE) > 0))
            *start_kept = 0;
        replace_all(nm, s, n, out);
        return 0;
    case N_PREPEND:
        if (n)
            sb_puts(out, nm->content);
        sb_append(out, s, n);
        return 0;
    case N_BERT:
        return bert(nm, s, n, out, start_kept, e);
    case N_PRECOMP:
        if (!nm->pc) {
            sb_append(out, s, n);
            return 0;
        }
        return tk_precomp_apply(nm->pc, s, n, out);
    case N_BYTELEVEL:
        for (size_t i = 0; i < n; i++)
            put_cp(out, tk_byte_to_cp[(unsigned char)s[i]]);
        return 0;
    }
    return 0;
}

/* ---- Precompiled (SentencePiece charsmap) ---------------------------- */

struct tk_precomp {
    uint32_t *trie;     /* darts-clone double array units */
    size_t ntrie;
    char *norm;         /* NUL-separated replacement strings */
    size_t nnorm;
};

void tk_precomp_free(tk_precomp *p)
{
    if (!p)
        return;
    free(p->trie);
    free(p->norm);
    free(p);
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

tk_precomp *tk_precomp_new(const char *b64, inferd_error *e)
{
    size_t L = strlen(b64);
    unsigned char *raw = malloc(L / 4 * 3 + 4);
    tk_precomp *p = calloc(1, sizeof *p);
    if (!raw || !p) {
        err_set(e, "out of memory");
        goto err;
    }
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < L; i++) {
        if (b64[i] == '=')
            break;
        int v = b64val((unsigned char)b64[i]);
        if (v < 0) {
            err_set(e, "precompiled_charsmap is not base64");
            goto err;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            raw[n++] = (unsigned char)(acc >> bits);
        }
    }
    if (n < 4) {
        err_set(e, "precompiled_charsmap too short");
        goto err;
    }
    uint32_t tsize = (uint32_t)raw[0] | (uint32_t)raw[1] << 8 | (uint32_t)raw[2] << 16 |
                     (uint32_t)raw[3] << 24;
    if (tsize % 4 || tsize > n - 4 || tsize == 0) {
        err_set(e, "precompiled_charsmap: bad trie size %u", tsize);
        goto err;
    }
    p->ntrie = tsize / 4;
    p->trie = malloc(tsize);
    p->nnorm = n - 4 - tsize;
    p->norm = malloc(p->nnorm + 1);
    if (!p->trie || !p->norm) {
        err_set(e, "out of memory");
        goto err;
    }
    for (size_t i = 0; i < p->ntrie; i++) {
        const unsigned char *u = raw + 4 + 4 * i;
        p->trie[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 |
                     (uint32_t)u[3] << 24;
    }
    memcpy(p->norm, raw + 4 + tsize, p->nnorm);
    p->norm[p->nnorm] = 0;
    free(raw);
    return p;
err:
    free(raw);
    tk_precomp_free(p);
    return NULL;
}

/* Value of the shortest key that is a prefix of s, or -1 (the reference
 * takes the first of darts' common-prefix results). */
static long first_prefix(const tk_precomp *p, const char *s, size_t n)
{
    size_t pos = 0;
    uint32_t unit = p->trie[0];
#define OFFSET(u) (((u) >> 10) << (((u) & (1u << 9)) >> 6))
    pos ^= OFFSET(unit);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!c)
            return -1;
        pos ^= c;
        if (pos >= p->ntrie)
            return -1;
        unit = p->trie[pos];
        if ((unit & ((1u << 31) | 0xFF)) != c)
            return -1;
        pos ^= OFFSET(unit);
        if (pos >= p->ntrie)
            return -1;
        if ((unit >> 8) & 1)
            return (long)(p->trie[pos] & ((1u << 31) - 1));
    }
#undef OFFSET
    return -1;
}

static const char *transform(const tk_precomp *p, const char *s, size_t n, size_t *len)
{
    long v = first_prefix(p, s, n);
    if (v < 0 || (size_t)v >= p->nnorm)
        return NULL;
    *len = strlen(p->norm + v);
    return p->norm + v;
}

/* Per extended grapheme cluster: clusters shorter than 6 bytes are looked
 * up whole, else char by char, exactly as the reference does. */
int tk_precomp_apply(const tk_precomp *p, const char *s, size_t n, strbuf *out)
{
    size_t i = 0;
    while (i < n) {
        /* find the end of this grapheme cluster */
        utf8proc_int32_t state = 0;
        uint32_t c1;
        size_t j = i + (size_t)tk_u8(s + i, &c1);
        while (j < n) {
            uint32_t c2;
            int k = tk_u8(s + j, &c2);
            if (utf8proc_grapheme_break_stateful((utf8proc_int32_t)c1, (utf8proc_int32_t)c2, &state))
                break;
            c1 = c2;
            j += (size_t)k;
        }
        size_t gl = j - i, rl;
        const char *r;
        if (gl < 6 && (r = transform(p, s + i, gl, &rl))) {
            sb_append(out, r, rl);
        } else {
            for (size_t q = i; q < j;) {
                int k = tk_u8len((unsigned char)s[q]);
                if ((r = transform(p, s + q, (size_t)k, &rl)))
                    sb_append(out, r, rl);
                else
                    sb_append(out, s + q, (size_t)k);
                q += (size_t)k;
            }
        }
        i = j;
    }
    return 0;
}
