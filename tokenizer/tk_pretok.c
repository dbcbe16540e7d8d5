/* Pre-tokenizers: the `pre_tokenizer` of tokenizer.json. Each one splits
 * every word of its input into words of its output, following the split
 * behaviours (Removed, Isolated, MergedWith*, Contiguous) of the reference. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tk_int.h"

enum { P_SEQ, P_BYTELEVEL, P_SPLIT, P_METASPACE, P_WHITESPACE, P_WSSPLIT, P_BERT, P_PUNCT,
       P_DIGITS, P_CHARDELIM, P_SCRIPTS };
enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };
enum { PS_ALWAYS, PS_NEVER, PS_FIRST };

struct tk_pretok {
    int type;
    tk_pretok **sub;
    size_t nsub;
    OnigRegex re;          /* Split (regex or escaped string), Whitespace, ByteLevel */
    int behavior, invert;
    int add_prefix_space, use_regex; /* ByteLevel */
    uint32_t repl;         /* Metaspace replacement char, CharDelimiterSplit delimiter */
    char repl_s[5];
    int repl_n;
    int prepend, split;    /* Metaspace */
    int individual;        /* Digits */
};

static const char GPT2_RE[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

void tk_pretok_free(tk_pretok *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nsub; i++)
        tk_pretok_free(p->sub[i]);
    free(p->sub);
    if (p->re)
        onig_free(p->re);
    free(p);
}

static int parse_behavior(json_t *j, int dflt, inferd_error *e)
{
    const char *b;
    if (tk_json_str(j, "behavior", 0, &b, e))
        return -1;
    if (!b) return dflt;
    if (!strcmp(b, "Removed")) return B_REMOVED;
    if (!strcmp(b, "Isolated")) return B_ISOLATED;
    if (!strcmp(b, "MergedWithPrevious")) return B_MERGED_PREV;
    if (!strcmp(b, "MergedWithNext")) return B_MERGED_NEXT;
    if (!strcmp(b, "Contiguous")) return B_CONTIGUOUS;
    err_set(e, "unknown split behavior \"%s\"", b);
    return -1;
}

static int one_char(const char *s, uint32_t *cp)
{
    size_t n = strlen(s);
    if (!n)
        return -1;
    int k = utf8_decode(s, n, cp);
    return k == (int)n ? 0 : -1;
}

tk_pretok *tk_pretok_parse(json_t *j, inferd_error *e)
{
    if (!json_is_object(j)) {
        err_set(e, "pre_tokenizer must be an object");
        return NULL;
    }
    const char *type;
    if (tk_json_str(j, "type", 1, &type, e))
        return NULL;
    tk_pretok *p = calloc(1, sizeof *p);
    if (!p) {
        err_set(e, "out of memory");
        return NULL;
    }
    if (!strcmp(type, "Sequence")) {
        p->type = P_SEQ;
        json_t *a = json_object_get(j, "pretokenizers");
        if (!json_is_array(a)) {
            err_set(e, "needs a \"pretokenizers\" array");
            goto err;
        }
        p->sub = calloc(json_array_size(a) + 1, sizeof *p->sub);
        if (!p->sub)
            goto oom;
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!(p->sub[i] = tk_pretok_parse(json_array_get(a, i), e)))
                goto err;
            p->nsub++;
        }
    } else if (!strcmp(type, "ByteLevel")) {
        p->type = P_BYTELEVEL;
        if ((p->add_prefix_space = tk_json_bool(j, "add_prefix_space", 1, e)) < 0 ||
            (p->use_regex = tk_json_bool(j, "use_regex", 1, e)) < 0)
            goto err;
        if (p->use_regex && !(p->re = tk_regex_new(GPT2_RE, strlen(GPT2_RE), 0, e)))
            goto err;
    } else if (!strcmp(type, "Split")) {
        p->type = P_SPLIT;
        json_t *pat = json_object_get(j, "pattern");
        const char *s = NULL, *r = NULL;
        if (!json_is_object(pat) || tk_json_str(pat, "String", 0, &s, e) ||
            tk_json_str(pat, "Regex", 0, &r, e) || (!s && !r)) {
            err_set(e, "needs \"pattern\": {\"String\"|\"Regex\": ...}");
            goto err;
        }
        json_t *ps = json_object_get(pat, s ? "String" : "Regex");
        if (!(p->re = tk_regex_new(s ? s : r, json_string_length(ps), s != NULL, e)))
            goto err;
        if ((p->behavior = parse_behavior(j, B_REMOVED, e)) < 0 ||
            (p->invert = tk_json_bool(j, "invert", 0, e)) < 0)
            goto err;
    } else if (!strcmp(type, "Metaspace")) {
        p->type = P_METASPACE;
        const char *r, *sch;
        if (tk_json_str(j, "replacement", 0, &r, e) || tk_json_str(j, "prepend_scheme", 0, &sch, e))
            goto err;
        if (!r)
            r = "\xE2\x96\x81";
        if (one_char(r, &p->repl)) {
            err_set(e, "replacement must be one character");
            goto err;
        }
        p->repl_n = utf8_encode(p->repl, p->repl_s);
        if ((p->split = tk_json_bool(j, "split", 1, e)) < 0)
            goto err;
        if (sch) {
            if (!strcmp(sch, "always")) p->prepend = PS_ALWAYS;
            else if (!strcmp(sch, "never")) p->prepend = PS_NEVER;
            else if (!strcmp(sch, "first")) p->prepend = PS_FIRST;
            else { err_set(e, "unknown prepend_scheme \"%s\"", sch); goto err; }
        } else {
            int aps = tk_json_bool(j, "add_prefix_space", 1, e);
            if (aps < 0)
                goto err;
            p->prepend = aps ? PS_ALWAYS : PS_NEVER;
        }
    } else if (!strcmp(type, "Whitespace")) {
        p->type = P_WHITESPACE;
        /* \\w as the Rust regex crate defines it (UTS #18), which is wider
         * than Oniguruma's: Alphabetic, marks, Nd, Pc and Join_Control. */
        static const char re[] =
            "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]+|"
            "[^\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}\\s]+";
        if (!(p->re = tk_regex_new(re, strlen(re), 0, e)))
            goto err;
    } else if (!strcmp(type, "WhitespaceSplit")) {
        p->type = P_WSSPLIT;
    } else if (!strcmp(type, "BertPreTokenizer")) {
        p->type = P_BERT;
    } else if (!strcmp(type, "Punctuation")) {
        p->type = P_PUNCT;
        if ((p->behavior = parse_behavior(j, B_ISOLATED, e)) < 0)
            goto err;
    } else if (!strcmp(type, "Digits")) {
        p->type = P_DIGITS;
        if ((p->individual = tk_json_bool(j, "individual_digits", 0, e)) < 0)
            goto err;
    } else if (!strcmp(type, "UnicodeScripts")) {
        p->type = P_SCRIPTS;
    } else if (!strcmp(type, "CharDelimiterSplit")) {
        p->type = P_CHARDELIM;
        const char *d;
        if (tk_json_str(j, "delimiter", 1, &d, e))
            goto err;
        if (one_char(d, &p->repl)) {
            err_set(e, "delimiter must be one character");
            goto err;
        }
    } else {
        err_set(e, "unsupported pre-tokenizer type \"%s\"", type);
        goto err;
    }
    return p;
oom:
    err_set(e, "out of memory");
err:
    err_prefix(e, "pre_tokenizer %s", type);
    tk_pretok_free(p);
    return NULL;
}

/* Matches of a char predicate, one match per char, as Rust's
 * `impl Pattern for Fn(char) -> bool`. */
typedef int (*char_pred)(uint32_t c, uint32_t arg);
static int pred_ws(uint32_t c, uint32_t a) { (void)a; return tk_is_ws(c); }
static int pred_punct(uint32_t c, uint32_t a) { (void)a; return tk_is_punct(c); }
static int pred_num(uint32_t c, uint32_t a) { (void)a; return tk_is_numeric(c); }
static int pred_eq(uint32_t c, uint32_t a) { return c == a; }

static void char_find(char_pred f, uint32_t arg, const char *s, size_t n, tk_spans *out)
{
    out->n = 0;
    if (!n) {
        tk_spans_push(out, 0, 0, 0);
        return;
    }
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        int k = tk_u8(s + i, &c);
        if (f(c, arg)) {
            if (last < i)
                tk_spans_push(out, (uint32_t)last, (uint32_t)i, 0);
            tk_spans_push(out, (uint32_t)i, (uint32_t)(i + (size_t)k), 1);
            last = i + (size_t)k;
        }
        i += (size_t)k;
    }
    if (n > last)
        tk_spans_push(out, (uint32_t)last, (uint32_t)n, 0);
}

/* UnicodeScripts: a new piece starts at every char whose script differs from
 * the last script seen; "Any" chars (space, unassigned) neither split nor
 * count as the last script, so "Apples are " keeps its trailing space. As in
 * the reference, the first piece starts at the first char that has a script:
 * leading "Any" chars are dropped, and a word of only those vanishes. */
static int split_scripts(const char *w, size_t n, int at_start, tk_words *out)
{
    int last = 0;
    size_t start = SIZE_MAX;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        int k = tk_u8(w + i, &c);
        int s = c < 0x80 ? tk_uni_script_ascii[c] : tk_script(c);
        if (s && s != last) {
            if (start != SIZE_MAX && tk_words_add(out, w + start, i - start, at_start && start == 0))
                return -1;
            start = i;
            last = s;
        }
        i += (size_t)k;
    }
    if (start != SIZE_MAX && tk_words_add(out, w + start, n - start, at_start && start == 0))
        return -1;
    return 0;
}

/* Applies a split behaviour to the spans of word w and appends the kept,
 * non-empty pieces to out. */
static int emit_splits(tk_spans *sp, int behavior, int invert, const char *w, int at_start,
                       tk_words *out)
{
    if (invert)
        for (size_t i = 0; i < sp->n; i++)
            sp->v[i].m = !sp->v[i].m;
    size_t k = 0; /* compacted result in sp->v[0..k), m = "remove" */
    int prev = 0;
    switch (behavior) {
    case B_ISOLATED:
        for (size_t i = 0; i < sp->n; i++)
            sp->v[i].m = 0;
        k = sp->n;
        break;
    case B_REMOVED:
        k = sp->n;
        break;
    case B_CONTIGUOUS:
        for (size_t i = 0; i < sp->n; i++) {
            tk_span s = sp->v[i];
            if (k && s.m == prev)
                sp->v[k - 1].e = s.e;
            else
                sp->v[k++] = (tk_span){s.s, s.e, 0};
            prev = s.m;
        }
        break;
    case B_MERGED_PREV:
        for (size_t i = 0; i < sp->n; i++) {
            tk_span s = sp->v[i];
            if (s.m && !prev && k)
                sp->v[k - 1].e = s.e;
            else
                sp->v[k++] = (tk_span){s.s, s.e, 0};
            prev = s.m;
        }
        break;
    case B_MERGED_NEXT: {
        /* fold from the right, then reverse */
        size_t n = sp->n;
        tk_span *tmp = malloc((n + 1) * sizeof *tmp);
        if (!tmp)
            return -1;
        for (size_t r = n; r-- > 0;) {
            tk_span s = sp->v[r];
            if (s.m && !prev && k)
                tmp[k - 1].s = s.s;
            else
                tmp[k++] = (tk_span){s.s, s.e, 0};
            prev = s.m;
        }
        for (size_t i = 0; i < k; i++)
            sp->v[i] = tmp[k - 1 - i];
        free(tmp);
        break;
    }
    }
    for (size_t i = 0; i < k; i++) {
        tk_span s = sp->v[i];
        if (s.m || s.e == s.s)
            continue;
        if (tk_words_add(out, w + s.s, s.e - s.s, at_start && s.s == 0))
            return -1;
    }
    return 0;
}

static int apply_one(const tk_pretok *p, tk_words *in, tk_words *out, inferd_error *e)
{
    tk_spans sp = {0};
    strbuf tmp = {0};
    int rc = 0;
    tk_words_reset(out);
    for (size_t wi = 0; wi < in->n && rc == 0; wi++) {
        const char *w = in->buf.p + in->v[wi].off;
        size_t n = in->v[wi].len;
        int st = in->v[wi].at_start;
        switch (p->type) {
        case P_SPLIT:
            if (tk_regex_find(p->re, w, n, &sp)) { rc = -1; break; }
            rc = emit_splits(&sp, p->behavior, p->invert, w, st, out);
            break;
        case P_WHITESPACE:
            if (tk_regex_find(p->re, w, n, &sp)) { rc = -1; break; }
            rc = emit_splits(&sp, B_REMOVED, 1, w, st, out);
            break;
        case P_WSSPLIT:
            char_find(pred_ws, 0, w, n, &sp);
            rc = emit_splits(&sp, B_REMOVED, 0, w, st, out);
            break;
        case P_PUNCT:
            char_find(pred_punct, 0, w, n, &sp);
            rc = emit_splits(&sp, p->behavior, 0, w, st, out);
            break;
        case P_DIGITS:
            char_find(pred_num, 0, w, n, &sp);
            rc = emit_splits(&sp, p->individual ? B_ISOLATED : B_CONTIGUOUS, 0, w, st, out);
            break;
        case P_SCRIPTS:
            rc = split_scripts(w, n, st, out);
            break;
        case P_CHARDELIM:
            char_find(pred_eq, p->repl, w, n, &sp);
            rc = emit_splits(&sp, B_REMOVED, 0, w, st, out);
            break;
        case P_BERT: {
            tk_words mid = {0};
            char_find(pred_ws, 0, w, n, &sp);
            rc = emit_splits(&sp, B_REMOVED, 0, w, st, &mid);
            for (size_t i = 0; i < mid.n && rc == 0; i++) {
                const char *m = mid.buf.p + mid.v[i].off;
                char_find(pred_punct, 0, m, mid.v[i].len, &sp);
                rc = emit_splits(&sp, B_ISOLATED, 0, m, mid.v[i].at_start, out);
            }
            tk_words_free(&mid);
            break;
        }
        case P_BYTELEVEL: {
            tmp.n = 0;
            if (p->add_prefix_space && (n == 0 || w[0] != ' '))
                sb_putc(&tmp, ' ');
            sb_append(&tmp, w, n);
            tk_words mid = {0};
            if (p->use_regex) {
                if (tk_regex_find(p->re, tmp.p, tmp.n, &sp)) { rc = -1; break; }
                rc = emit_splits(&sp, B_ISOLATED, 0, tmp.p, st, &mid);
            } else if (tmp.n) {
                rc = tk_words_add(&mid, tmp.p, tmp.n, st);
            }
            for (size_t i = 0; i < mid.n && rc == 0; i++) {
                const unsigned char *m = (const unsigned char *)mid.buf.p + mid.v[i].off;
                char enc[1024];
                size_t q = 0;
                strbuf big = {0};
                for (size_t b = 0; b < mid.v[i].len; b++) {
                    uint16_t cp = tk_byte_to_cp[m[b]];
                    if (q + 2 > sizeof enc) {
                        sb_append(&big, enc, q);
                        q = 0;
                    }
                    if (cp < 0x80) {
                        enc[q++] = (char)cp;
                    } else {
                        enc[q++] = (char)(0xC0 | (cp >> 6));
                        enc[q++] = (char)(0x80 | (cp & 0x3F));
                    }
                }
                if (big.n) {
                    sb_append(&big, enc, q);
                    rc = tk_words_add(out, big.p, big.n, mid.v[i].at_start);
                } else {
                    rc = tk_words_add(out, enc, q, mid.v[i].at_start);
                }
                sb_free(&big);
            }
            tk_words_free(&mid);
            break;
        }
        case P_METASPACE: {
            tmp.n = 0;
            int starts = 0;
            /* replace ' ' by the replacement */
            strbuf r = {0};
            for (size_t i = 0; i < n; i++) {
                if (w[i] == ' ')
                    sb_append(&r, p->repl_s, (size_t)p->repl_n);
                else
                    sb_putc(&r, w[i]);
            }
            if (!r.p)
                sb_puts(&r, "");
            starts = r.n >= (size_t)p->repl_n && !memcmp(r.p, p->repl_s, (size_t)p->repl_n);
            if (!starts && (p->prepend == PS_ALWAYS || (p->prepend == PS_FIRST && st)))
                sb_append(&tmp, p->repl_s, (size_t)p->repl_n);
            sb_append(&tmp, r.p, r.n);
            sb_free(&r);
            if (!tmp.n)
                break;
            if (p->split) {
                char_find(pred_eq, p->repl, tmp.p, tmp.n, &sp);
                rc = emit_splits(&sp, B_MERGED_NEXT, 0, tmp.p, st, out);
            } else {
                rc = tk_words_add(out, tmp.p, tmp.n, st);
            }
            break;
        }
        default:
            break;
        }
    }
    if (rc)
        err_set(e, "pre-tokenizer: out of memory");
    free(sp.v);
    sb_free(&tmp);
    return rc;
}

int tk_pretok_apply(const tk_pretok *p, tk_words *in, tk_words *out, inferd_error *e)
{
    if (!p) {
        tk_words t = *in;
        *in = *out;
        *out = t;
        return 0;
    }
    if (p->type != P_SEQ)
        return apply_one(p, in, out, e);
    if (p->nsub == 0) {
        tk_words t = *in;
        *in = *out;
        *out = t;
        return 0;
    }
    for (size_t i = 0; i < p->nsub; i++) {
        if (tk_pretok_apply(p->sub[i], in, out, e))
            return -1;
        if (i + 1 < p->nsub) {
            tk_words t = *in;
            *in = *out;
            *out = t;
        }
    }
    return 0;
}
