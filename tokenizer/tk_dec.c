/* Decoders: the `decoder` of tokenizer.json, as chains over token strings
 * (the reference's decode_chain), concatenated at the end. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tk_int.h"

enum { D_SEQ, D_BYTELEVEL, D_METASPACE, D_WORDPIECE, D_BYTEFALLBACK, D_FUSE, D_STRIP,
       D_REPLACE, D_BPE, D_CTC };

struct tk_dec {
    int type;
    tk_dec **sub;
    size_t nsub;
    char *a, *b;           /* Replace pattern/content; WordPiece prefix; BPE suffix */
    OnigRegex re;          /* Replace with a regex */
    uint32_t ch;           /* Metaspace replacement, Strip content */
    int prepend;           /* Metaspace: prepend_scheme != never */
    int cleanup;           /* WordPiece */
    size_t start, stop;    /* Strip */
};

void tk_dec_free(tk_dec *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nsub; i++)
        tk_dec_free(d->sub[i]);
    free(d->sub);
    free(d->a);
    free(d->b);
    if (d->re)
        onig_free(d->re);
    free(d);
}

static int dup_str(json_t *j, const char *key, const char *dflt, char **out, inferd_error *e)
{
    const char *s;
    if (tk_json_str(j, key, 0, &s, e))
        return -1;
    if (!s)
        s = dflt;
    *out = strdup(s);
    if (!*out) {
        err_set(e, "out of memory");
        return -1;
    }
    return 0;
}

static int get_size(json_t *j, const char *key, size_t *out, inferd_error *e)
{
    json_t *v = json_object_get(j, key);
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000) {
        err_set(e, "\"%s\" must be a small non-negative integer", key);
        return -1;
    }
    *out = (size_t)json_integer_value(v);
    return 0;
}

tk_dec *tk_dec_parse(json_t *j, inferd_error *e)
{
    if (!json_is_object(j)) {
        err_set(e, "decoder must be an object");
        return NULL;
    }
    const char *type;
    if (tk_json_str(j, "type", 1, &type, e))
        return NULL;
    tk_dec *d = calloc(1, sizeof *d);
    if (!d) {
        err_set(e, "out of memory");
        return NULL;
    }
    if (!strcmp(type, "Sequence")) {
        d->type = D_SEQ;
        json_t *a = json_object_get(j, "decoders");
        if (!json_is_array(a)) {
            err_set(e, "needs a \"decoders\" array");
            goto err;
        }
        d->sub = calloc(json_array_size(a) + 1, sizeof *d->sub);
        if (!d->sub)
            goto oom;
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!(d->sub[i] = tk_dec_parse(json_array_get(a, i), e)))
                goto err;
            d->nsub++;
        }
    } else if (!strcmp(type, "ByteLevel")) {
        d->type = D_BYTELEVEL;
    } else if (!strcmp(type, "ByteFallback")) {
        d->type = D_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        d->type = D_FUSE;
    } else if (!strcmp(type, "Metaspace")) {
        d->type = D_METASPACE;
        const char *r, *sch;
        if (tk_json_str(j, "replacement", 0, &r, e) || tk_json_str(j, "prepend_scheme", 0, &sch, e))
            goto err;
        if (!r)
            r = "\xE2\x96\x81";
        if (utf8_decode(r, strlen(r), &d->ch) != (int)strlen(r)) {
            err_set(e, "replacement must be one character");
            goto err;
        }
        if (sch) {
            d->prepend = strcmp(sch, "never") != 0;
        } else {
            int aps = tk_json_bool(j, "add_prefix_space", 1, e);
            if (aps < 0)
                goto err;
            d->prepend = aps;
        }
    } else if (!strcmp(type, "WordPiece")) {
        d->type = D_WORDPIECE;
        if (dup_str(j, "prefix", "##", &d->a, e) || (d->cleanup = tk_json_bool(j, "cleanup", 1, e)) < 0)
            goto err;
    } else if (!strcmp(type, "BPEDecoder")) {
        d->type = D_BPE;
        if (dup_str(j, "suffix", "</w>", &d->a, e))
            goto err;
    } else if (!strcmp(type, "CTC")) {
        d->type = D_CTC;
        if (dup_str(j, "pad_token", "<pad>", &d->a, e) || dup_str(j, "word_delimiter_token", "|", &d->b, e) ||
            (d->cleanup = tk_json_bool(j, "cleanup", 1, e)) < 0)
            goto err;
    } else if (!strcmp(type, "Strip")) {
        d->type = D_STRIP;
        const char *c;
        if (tk_json_str(j, "content", 1, &c, e) || get_size(j, "start", &d->start, e) ||
            get_size(j, "stop", &d->stop, e))
            goto err;
        if (utf8_decode(c, strlen(c), &d->ch) != (int)strlen(c)) {
            err_set(e, "content must be one character");
            goto err;
        }
    } else if (!strcmp(type, "Replace")) {
        d->type = D_REPLACE;
        json_t *p = json_object_get(j, "pattern");
        const char *s = NULL, *r = NULL;
        if (!json_is_object(p) || tk_json_str(p, "String", 0, &s, e) ||
            tk_json_str(p, "Regex", 0, &r, e) || (!s && !r)) {
            err_set(e, "needs \"pattern\": {\"String\"|\"Regex\": ...}");
            goto err;
        }
        if (dup_str(j, "content", "", &d->b, e))
            goto err;
        if (s) {
            if (!(d->a = strdup(s)))
                goto oom;
        } else if (!(d->re = tk_regex_new(r, strlen(r), 0, e))) {
            goto err;
        }
    } else {
        err_set(e, "unsupported decoder type \"%s\"", type);
        goto err;
    }
    return d;
oom:
    err_set(e, "out of memory");
err:
    err_prefix(e, "decoder %s", type);
    tk_dec_free(d);
    return NULL;
}

#define TOK(t, i) ((t)->buf.p + (t)->v[i].off)
#define TLEN(t, i) ((t)->v[i].len)

static void put_cp(strbuf *b, uint32_t c)
{
    char u[4];
    sb_append(b, u, (size_t)utf8_encode(c, u));
}

/* Replaces every occurrence of pat (may be NULL: regex) in s. */
static void replace_in(const char *s, size_t n, const char *pat, OnigRegex re, const char *with,
                       strbuf *out)
{
    size_t wl = strlen(with);
    if (pat) {
        size_t pl = strlen(pat), i = 0;
        if (!pl) {
            sb_append(out, s, n);
            return;
        }
        while (i < n) {
            const char *f = memmem(s + i, n - i, pat, pl);
            if (!f)
                break;
            sb_append(out, s + i, (size_t)(f - (s + i)));
            sb_append(out, with, wl);
            i = (size_t)(f - s) + pl;
        }
        sb_append(out, s + i, n - i);
        return;
    }
    tk_spans sp = {0};
    tk_regex_find(re, s, n, &sp);
    for (size_t i = 0; i < sp.n; i++) {
        if (sp.v[i].m)
            sb_append(out, with, wl);
        else
            sb_append(out, s + sp.v[i].s, sp.v[i].e - sp.v[i].s);
    }
    free(sp.v);
}

static int byte_token(const char *t, size_t n)
{
    if (n != 6 || memcmp(t, "<0x", 3) || t[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = t[i];
        int d = c >= '0' && c <= '9' ? c - '0' : (c | 32) >= 'a' && (c | 32) <= 'f' ? (c | 32) - 'a' + 10 : -1;
        if (d < 0) {
            /* Rust's from_str_radix accepts a leading '+' */
            if (i == 3 && c == '+')
                continue;
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

static const char *const CLEANUP[][2] = {
    {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
    {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
};

static void cleanup(strbuf *s)
{
    strbuf t = {0};
    for (size_t i = 0; i < sizeof CLEANUP / sizeof CLEANUP[0]; i++) {
        if (!s->n || !memmem(s->p, s->n, CLEANUP[i][0], strlen(CLEANUP[i][0])))
            continue;
        t.n = 0;
        replace_in(s->p, s->n, CLEANUP[i][0], NULL, CLEANUP[i][1], &t);
        s->n = 0;
        sb_append(s, t.p, t.n);
    }
    sb_free(&t);
}

/* One decoder step: in -> out (token lists). */
static int step(const tk_dec *d, tk_strs *in, tk_strs *out)
{
    strbuf cur = {0};
    tk_words_reset(out);
    int rc = 0;
    switch (d->type) {
    case D_BYTELEVEL: {
        strbuf bytes = {0};
        for (size_t i = 0; i < in->n; i++) {
            const char *t = TOK(in, i);
            size_t n = TLEN(in, i), at = bytes.n, k;
            int ok = 1;
            for (size_t q = 0; q < n; q += k) {
                uint32_t c;
                k = (size_t)tk_u8(t + q, &c);
                int b = tk_cp_to_byte(c);
                if (b < 0) {
                    ok = 0;
                    break;
                }
                sb_putc(&bytes, (char)b);
            }
            if (!ok) {
                bytes.n = at;
                sb_append(&bytes, t, n);
            }
        }
        tk_lossy_append(&cur, bytes.p ? bytes.p : "", bytes.n);
        sb_free(&bytes);
        rc = tk_words_add(out, cur.p ? cur.p : "", cur.n, 0);
        break;
    }
    case D_BYTEFALLBACK: {
        strbuf bytes = {0};
        for (size_t i = 0; i <= in->n; i++) {
            int b = i < in->n ? byte_token(TOK(in, i), TLEN(in, i)) : -1;
            if (b >= 0) {
                sb_putc(&bytes, (char)b);
                continue;
            }
            if (bytes.n) {
                if (tk_utf8_valid_prefix(bytes.p, bytes.n) == bytes.n) {
                    rc |= tk_words_add(out, bytes.p, bytes.n, 0);
                } else {
                    for (size_t q = 0; q < bytes.n; q++)
                        rc |= tk_words_add(out, "\xEF\xBF\xBD", 3, 0);
                }
                bytes.n = 0;
            }
            if (i < in->n)
                rc |= tk_words_add(out, TOK(in, i), TLEN(in, i), 0);
        }
        sb_free(&bytes);
        break;
    }
    case D_FUSE:
        for (size_t i = 0; i < in->n; i++)
            sb_append(&cur, TOK(in, i), TLEN(in, i));
        rc = tk_words_add(out, cur.p ? cur.p : "", cur.n, 0);
        break;
    case D_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            cur.n = 0;
            replace_in(TOK(in, i), TLEN(in, i), d->a, d->re, d->b, &cur);
            rc |= tk_words_add(out, cur.p ? cur.p : "", cur.n, 0);
        }
        break;
    case D_STRIP:
        for (size_t i = 0; i < in->n; i++) {
            const char *t = TOK(in, i);
            size_t n = TLEN(in, i);
            /* chars of t, as byte offsets */
            size_t nc = 0;
            for (size_t q = 0; q < n; q += (size_t)tk_u8len((unsigned char)t[q]))
                nc++;
            size_t *pos = malloc((nc + 1) * sizeof *pos);
            if (!pos) {
                rc = -1;
                break;
            }
            size_t ci = 0;
            for (size_t q = 0; q < n; q += (size_t)tk_u8len((unsigned char)t[q]))
                pos[ci++] = q;
            pos[nc] = n;
            size_t a = 0, b = nc;
            for (size_t q = 0; q < d->start && q < nc; q++) {
                uint32_t c;
                tk_u8(t + pos[q], &c);
                if (c != d->ch)
                    break;
                a = q + 1;
            }
            for (size_t q = 0; q < d->stop && q < nc; q++) {
                size_t idx = nc - q - 1;
                uint32_t c;
                tk_u8(t + pos[idx], &c);
                if (c != d->ch)
                    break;
                b = idx;
            }
            if (b < a)
                b = a;
            rc |= tk_words_add(out, t + pos[a], pos[b] - pos[a], 0);
            free(pos);
        }
        break;
    case D_METASPACE:
        for (size_t i = 0; i < in->n; i++) {
            cur.n = 0;
            const char *t = TOK(in, i);
            size_t n = TLEN(in, i);
            for (size_t q = 0; q < n;) {
                uint32_t c;
                int k = tk_u8(t + q, &c);
                if (c == d->ch) {
                    if (!(i == 0 && d->prepend))
                        sb_putc(&cur, ' ');
                } else {
                    sb_append(&cur, t + q, (size_t)k);
                }
                q += (size_t)k;
            }
            rc |= tk_words_add(out, cur.p ? cur.p : "", cur.n, 0);
        }
        break;
    case D_WORDPIECE: {
        size_t pl = strlen(d->a);
        for (size_t i = 0; i < in->n; i++) {
            cur.n = 0;
            const char *t = TOK(in, i);
            size_t n = TLEN(in, i);
            if (i != 0) {
                if (n >= pl && !memcmp(t, d->a, pl)) {
                    t += pl;
                    n -= pl;
                } else {
                    sb_putc(&cur, ' ');
                }
            } else if (pl && n >= pl) {
                /* the reference replaces the first occurrence anywhere
                 * only for i != 0; the first token stays as is */
            }
            sb_append(&cur, t, n);
            if (d->cleanup && cur.n)
                cleanup(&cur);
            rc |= tk_words_add(out, cur.p ? cur.p : "", cur.n, 0);
        }
        break;
    }
    case D_BPE: {
        size_t sl = strlen(d->a);
        for (size_t i = 0; i < in->n; i++) {
            cur.n = 0;
            replace_in(TOK(in, i), TLEN(in, i), sl ? d->a : "", NULL, i + 1 == in->n ? "" : " ", &cur);
            rc |= tk_words_add(out, cur.p ? cur.p : "", cur.n, 0);
        }
        break;
    }
    case D_CTC: {
        /* dedup consecutive tokens, drop pad, delimiter -> space */
        for (size_t i = 0; i < in->n; i++) {
            const char *t = TOK(in, i);
            size_t n = TLEN(in, i);
            if (i > 0 && TLEN(in, i - 1) == n && !memcmp(TOK(in, i - 1), t, n))
                continue;
            if (n == strlen(d->a) && !memcmp(t, d->a, n))
                continue;
            cur.n = 0;
            replace_in(t, n, d->b, NULL, " ", &cur);
            if (d->cleanup && cur.n)
                cleanup(&cur);
            rc |= tk_words_add(out, cur.p ? cur.p : "", cur.n, 0);
        }
        break;
    }
    default:
        break;
    }
    (void)put_cp;
    sb_free(&cur);
    return rc;
}

static int chain(const tk_dec *d, tk_strs **in, tk_strs **out)
{
    if (d->type == D_SEQ) {
        for (size_t i = 0; i < d->nsub; i++)
            if (chain(d->sub[i], in, out))
                return -1;
        return 0;
    }
    if (step(d, *in, *out))
        return -1;
    tk_strs *t = *in;
    *in = *out;
    *out = t;
    return 0;
}

int tk_dec_apply(const tk_dec *d, tk_strs *toks, strbuf *out, inferd_error *e)
{
    out->n = 0;
    sb_append(out, "", 0);
    if (!d) {
        for (size_t i = 0; i < toks->n; i++) {
            if (i)
                sb_putc(out, ' ');
            sb_append(out, TOK(toks, i), TLEN(toks, i));
        }
        return 0;
    }
    tk_strs other = {0};
    tk_strs *in = toks, *o = &other;
    int rc = chain(d, &in, &o);
    if (rc)
        err_set(e, "decode: out of memory");
    else
        for (size_t i = 0; i < in->n; i++)
            sb_append(out, TOK(in, i), TLEN(in, i));
    /* whichever buffer is not the caller's is ours to free */
    if (in != toks) {
        tk_words t = *toks;
        *toks = *in;
        *in = t;
    }
    tk_words_free(&other);
    return rc;
}
