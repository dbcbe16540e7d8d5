/* Jinja2's filters and tests, the Python str/dict/list methods templates
 * call, and the globals transformers adds (raise_exception, strftime_now).
 * Each follows the reference implementation's edge cases (jinja2/filters.py,
 * jinja2/tests.py, CPython's str methods), since templates depend on them. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <math.h>
#include <time.h>
#include <errno.h>
#include <utf8proc.h>

#include "template/jinja.h"

#define NAMEIS(s) (n == sizeof(s) - 1 && !memcmp(name, s, n))

/* ---- small helpers ---- */
static int is_num(const val *v) { return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; }
static int64_t inum(const val *v) { return v->t == V_INT ? v->u.i : v->t == V_BOOL ? v->u.b : (int64_t)v->u.f; }
static double fnum(const val *v) { return v->t == V_FLOAT ? v->u.f : (double)inum(v); }

static int mkstr(jctx *c, const node *at, strbuf *b, val *out)
{
    *out = v_strdup(c->ar, b->p ? b->p : "", b->n);
    sb_free(b);
    return out->t == V_STR ? 0 : jn_oom(c, at);
}

static val mklist(vlist *l, int t)
{
    val v = {.t = (uint8_t)t};
    v.u.l = l;
    return v;
}

static void put_cp(strbuf *b, uint32_t cp)
{
    char u[4];
    int k = utf8_encode(cp, u);
    sb_append(b, u, (size_t)k);
}

/* Python's str.upper/title use Unicode's SpecialCasing, where one letter
 * can become several; utf8proc maps one to one. The common ones: */
static const struct { uint32_t cp; const char *upper, *title; } SPECIAL_CASE[] = {
    {0x00DF, "SS", "Ss"}, {0xFB00, "FF", "Ff"}, {0xFB01, "FI", "Fi"}, {0xFB02, "FL", "Fl"},
    {0xFB03, "FFI", "Ffi"}, {0xFB04, "FFL", "Ffl"}, {0xFB05, "ST", "St"}, {0xFB06, "ST", "St"},
    {0x0149, "\xCA\xBCN", "\xCA\xBCN"}, {0, NULL, NULL},
};

/* Writes the upper (title=0) or title (title=1) case of cp. */
static void put_upper(strbuf *b, uint32_t cp, int title)
{
    for (int i = 0; SPECIAL_CASE[i].cp; i++)
        if (SPECIAL_CASE[i].cp == cp) {
            sb_puts(b, title ? SPECIAL_CASE[i].title : SPECIAL_CASE[i].upper);
            return;
        }
    put_cp(b, (uint32_t)(title ? utf8proc_totitle((utf8proc_int32_t)cp) : utf8proc_toupper((utf8proc_int32_t)cp)));
}

typedef enum { CASE_UPPER, CASE_LOWER, CASE_TITLE_PY, CASE_TITLE_JINJA, CASE_CAPITALIZE } casemode;

static int is_cased(uint32_t cp)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
}

static void casemap(const char *p, size_t n, casemode m, strbuf *b)
{
    int prev_cased = 0, first = 1;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = utf8_decode(p + i, n - i, &cp);
        if (k <= 0) { sb_putc(b, p[i]); i++; continue; }
        uint32_t lower = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
        switch (m) {
        case CASE_UPPER: put_upper(b, cp, 0); break;
        case CASE_LOWER:
            if (cp == 0x130) sb_puts(b, "i\xCC\x87"); /* İ -> i + combining dot */
            else put_cp(b, lower);
            break;
        case CASE_CAPITALIZE:
            if (first) put_upper(b, cp, 1);
            else put_cp(b, lower);
            break;
        case CASE_TITLE_PY:
            if (prev_cased) put_cp(b, lower);
            else put_upper(b, cp, 1);
            prev_cased = is_cased(cp);
            break;
        case CASE_TITLE_JINJA:
            /* item[0].upper() + item[1:].lower() for words that begin after
             * '-', whitespace, '(', '{', '[' or '<' */
            if (first) put_upper(b, cp, 0);
            else put_cp(b, lower);
            first = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || py_isspace(cp);
            i += (size_t)k;
            continue;
        }
        first = 0;
        i += (size_t)k;
    }
}

/* Python str.strip/lstrip/rstrip: chars is a set of code points, or NULL
 * for whitespace. which: 1 left, 2 right, 3 both. */
static int in_chars(uint32_t cp, const val *chars)
{
    if (!chars || chars->t != V_STR) return py_isspace(cp);
    for (size_t i = 0; i < chars->u.s.n;) {
        uint32_t x;
        int k = utf8_decode(chars->u.s.p + i, chars->u.s.n - i, &x);
        if (k <= 0) { x = (unsigned char)chars->u.s.p[i]; k = 1; }
        if (x == cp) return 1;
        i += (size_t)k;
    }
    return 0;
}

static val strip(const val *s, const val *chars, int which)
{
    const char *p = s->u.s.p;
    size_t a = 0, z = s->u.s.n;
    if (which & 1) {
        while (a < z) {
            uint32_t cp;
            int k = utf8_decode(p + a, z - a, &cp);
            if (k <= 0 || !in_chars(cp, chars)) break;
            a += (size_t)k;
        }
    }
    if (which & 2) {
        while (z > a) {
            size_t st = z - 1;
            while (st > a && ((unsigned char)p[st] & 0xC0) == 0x80) st--;
            uint32_t cp;
            int k = utf8_decode(p + st, z - st, &cp);
            if (k <= 0 || !in_chars(cp, chars)) break;
            z = st;
        }
    }
    return v_str(p + a, z - a);
}

static int replace(jctx *c, const node *at, const val *s, const val *old, const val *new,
                   int64_t count, val *out)
{
    strbuf b = {0};
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, on = old->u.s.n;
    if (on == 0) {
        /* Python inserts `new` between every character and at both ends */
        for (size_t i = 0; i <= n && count != 0;) {
            sb_append(&b, new->u.s.p, new->u.s.n);
            count--;
            if (i == n) { i++; break; }
            size_t k = 1;
            while (i + k < n && ((unsigned char)p[i + k] & 0xC0) == 0x80) k++;
            sb_append(&b, p + i, k);
            i += k;
            if (count == 0) { sb_append(&b, p + i, n - i); break; }
        }
        if (!b.n) sb_append(&b, p, n);
        return mkstr(c, at, &b, out);
    }
    size_t i = 0;
    while (i <= n) {
        const char *f = count != 0 && n - i >= on ? memmem(p + i, n - i, old->u.s.p, on) : NULL;
        if (!f) { sb_append(&b, p + i, n - i); break; }
        sb_append(&b, p + i, (size_t)(f - (p + i)));
        sb_append(&b, new->u.s.p, new->u.s.n);
        i = (size_t)(f - p) + on;
        if (count > 0) count--;
    }
    if (b.n > c->max_output * 4) { sb_free(&b); return jn_oom(c, at); }
    return mkstr(c, at, &b, out);
}

/* Python str.split / rsplit. sep NULL: runs of whitespace. */
static int split(jctx *c, const node *at, const val *s, const val *sep, int64_t maxsplit,
                 int from_right, val *out)
{
    vlist *l = v_list_new(c->ar, 0);
    if (!l) return jn_oom(c, at);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n;
    if (sep && sep->t == V_STR) {
        size_t sn = sep->u.s.n;
        if (!sn) return jn_fail(c, at, "empty separator");
        if (!from_right) {
            size_t i = 0;
            for (;;) {
                const char *f = maxsplit != 0 && n - i >= sn ? memmem(p + i, n - i, sep->u.s.p, sn) : NULL;
                if (!f) { if (v_list_push(c->ar, l, v_str(p + i, n - i))) return jn_oom(c, at); break; }
                if (v_list_push(c->ar, l, v_str(p + i, (size_t)(f - p) - i))) return jn_oom(c, at);
                i = (size_t)(f - p) + sn;
                if (maxsplit > 0) maxsplit--;
            }
        } else {
            size_t end = n;
            vlist *rev = v_list_new(c->ar, 0);
            if (!rev) return jn_oom(c, at);
            for (;;) {
                size_t j = end;
                int found = 0;
                while (maxsplit != 0 && j >= sn) {
                    if (!memcmp(p + j - sn, sep->u.s.p, sn)) { found = 1; break; }
                    j--;
                }
                if (!found) { if (v_list_push(c->ar, rev, v_str(p, end))) return jn_oom(c, at); break; }
                if (v_list_push(c->ar, rev, v_str(p + j, end - j))) return jn_oom(c, at);
                end = j - sn;
                if (maxsplit > 0) maxsplit--;
            }
            for (size_t k = rev->n; k-- > 0;)
                if (v_list_push(c->ar, l, rev->items[k])) return jn_oom(c, at);
        }
        *out = mklist(l, V_LIST);
        return 0;
    }
    /* whitespace split (rsplit with maxsplit differs only when limited) */
    if (from_right && maxsplit >= 0) {
        vlist *rev = v_list_new(c->ar, 0);
        if (!rev) return jn_oom(c, at);
        size_t end = n;
        for (;;) {
            while (end > 0 && py_isspace((unsigned char)p[end - 1])) end--;
            if (!end) break;
            size_t j = end;
            if (maxsplit == 0) { if (v_list_push(c->ar, rev, v_str(p, end))) return jn_oom(c, at); break; }
            while (j > 0 && !py_isspace((unsigned char)p[j - 1])) j--;
            if (v_list_push(c->ar, rev, v_str(p + j, end - j))) return jn_oom(c, at);
            end = j;
            maxsplit--;
        }
        for (size_t k = rev->n; k-- > 0;)
            if (v_list_push(c->ar, l, rev->items[k])) return jn_oom(c, at);
        *out = mklist(l, V_LIST);
        return 0;
    }
    size_t i = 0;
    for (;;) {
        while (i < n) {
            uint32_t cp;
            int k = utf8_decode(p + i, n - i, &cp);
            if (k <= 0 || !py_isspace(cp)) break;
            i += (size_t)k;
        }
        if (i >= n) break;
        if (maxsplit == 0) {
            if (v_list_push(c->ar, l, v_str(p + i, n - i))) return jn_oom(c, at);
            break;
        }
        size_t j = i;
        while (j < n) {
            uint32_t cp;
            int k = utf8_decode(p + j, n - j, &cp);
            if (k <= 0) { j++; continue; }
            if (py_isspace(cp)) break;
            j += (size_t)k;
        }
        if (v_list_push(c->ar, l, v_str(p + i, j - i))) return jn_oom(c, at);
        i = j;
        if (maxsplit > 0) maxsplit--;
    }
    *out = mklist(l, V_LIST);
    return 0;
}

/* str.splitlines(keepends): keepends leaves each line's break on it. */
static int splitlines(jctx *c, const node *at, const val *s, int keepends, vlist **out)
{
    vlist *l = v_list_new(c->ar, 0);
    if (!l) return jn_oom(c, at);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, st = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = utf8_decode(p + i, n - i, &cp);
        if (k <= 0) { i++; continue; }
        int brk = cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D ||
                  cp == 0x1E || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
        if (brk) {
            size_t line_end = i;
            i += (size_t)k;
            if (cp == '\r' && i < n && p[i] == '\n') i++;
            if (v_list_push(c->ar, l, v_str(p + st, (keepends ? i : line_end) - st))) return jn_oom(c, at);
            st = i;
        } else {
            i += (size_t)k;
        }
    }
    if (st < n && v_list_push(c->ar, l, v_str(p + st, n - st))) return jn_oom(c, at);
    *out = l;
    return 0;
}

/* str.format with {} / {0} / {name} fields; no format specs. */
static int str_format(jctx *c, const node *at, const val *fmt, jargs *a, val *out)
{
    strbuf b = {0};
    const char *p = fmt->u.s.p;
    size_t n = fmt->u.s.n, auto_i = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '}' ) {
            if (i + 1 < n && p[i + 1] == '}') i++;
            sb_putc(&b, '}');
            continue;
        }
        if (p[i] != '{') { sb_putc(&b, p[i]); continue; }
        if (i + 1 < n && p[i + 1] == '{') { sb_putc(&b, '{'); i++; continue; }
        const char *close = memchr(p + i, '}', n - i);
        if (!close) { sb_free(&b); return jn_fail(c, at, "Single '{' encountered in format string"); }
        const char *f = p + i + 1, *spec = NULL, *conv = NULL;
        size_t fl = (size_t)(close - f), specl = 0;
        /* {field!conv:spec} */
        const char *colon = memchr(f, ':', fl), *bang = memchr(f, '!', fl);
        if (bang && colon && bang > colon) bang = NULL;
        if (colon) { spec = colon + 1; specl = (size_t)(close - spec); fl = (size_t)(colon - f); }
        if (bang) { conv = bang + 1; fl = (size_t)(bang - f); }
        if (conv && (conv + 1 != (colon ? colon : close) || (*conv != 'r' && *conv != 's'))) {
            sb_free(&b);
            return jn_fail(c, at, "Unknown conversion specifier in format string");
        }
        if (memchr(f, '.', fl) || memchr(f, '[', fl) || (spec && memchr(spec, '{', specl))) {
            sb_free(&b);
            return jn_fail(c, at, "str.format: attribute, index and nested fields are not supported");
        }
        val *v = NULL;
        if (fl == 0) v = auto_i < a->npos ? &a->pos[auto_i++] : NULL;
        else if (f[0] >= '0' && f[0] <= '9') {
            size_t k = (size_t)strtoul(f, NULL, 10);
            v = k < a->npos ? &a->pos[k] : NULL;
        } else {
            for (size_t k = 0; k < a->nkw; k++)
                if (a->kw[k]->name_len == fl && !memcmp(a->kw[k]->name, f, fl)) v = &a->kwv[k];
        }
        if (!v) { sb_free(&b); return jn_fail(c, at, "str.format: no argument for field '{%.*s}'", (int)fl, f); }
        pyspec ps;
        char err[160];
        if (py_parse_spec(spec ? spec : "", specl, &ps)) { sb_free(&b); return jn_fail(c, at, "Invalid format specifier"); }
        if (specl && !conv && v->t != V_STR && v->t != V_INT && v->t != V_FLOAT && v->t != V_BOOL) {
            sb_free(&b);
            return jn_fail(c, at, "unsupported format string passed to %s.__format__", v_typename(v));
        }
        val cv;
        if (conv) {
            strbuf t = {0};
            if (*conv == 'r' ? v_repr(v, &t) : v_to_str(v, &t)) {
                sb_free(&t);
                sb_free(&b);
                return jn_too_deep(c, at);
            }
            cv = v_strdup(c->ar, t.p ? t.p : "", t.n);
            sb_free(&t);
            if (cv.t != V_STR) { sb_free(&b); return jn_oom(c, at); }
            v = &cv;
        }
        if (py_format_value(v, &ps, &b, err, sizeof err)) { sb_free(&b); return jn_fail(c, at, "%s", err); }
        i = (size_t)(close - p);
    }
    return mkstr(c, at, &b, out);
}

/* ---- methods ---- */
static const char *const STR_METHODS[] = {
    "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find",
    "format", "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit",
    "isidentifier", "islower", "isnumeric", "isprintable", "isspace", "istitle", "isupper",
    "join", "ljust", "lower", "lstrip", "maketrans", "partition", "removeprefix",
    "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip",
    "split", "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper",
    "zfill", NULL};
static const char *const DICT_METHODS[] = {"copy", "fromkeys", "get", "items", "keys", "values", NULL};
static const char *const DICT_UNSAFE[] = {"clear", "pop", "popitem", "setdefault", "update", NULL};
static const char *const LIST_METHODS[] = {"copy", "count", "index", NULL};
static const char *const LIST_UNSAFE[] = {"append", "clear", "extend", "insert", "pop", "remove",
                                          "reverse", "sort", NULL};

static int in_names(const char *const *names, const char *name, size_t n)
{
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == n && !memcmp(names[i], name, n)) return 1;
    return 0;
}

int jn_method_kind(vtype t, const char *name, size_t n)
{
    switch (t) {
    case V_STR: return in_names(STR_METHODS, name, n);
    case V_DICT: return in_names(DICT_METHODS, name, n) ? 1 : in_names(DICT_UNSAFE, name, n) ? -1 : 0;
    case V_LIST: return in_names(LIST_METHODS, name, n) ? 1 : in_names(LIST_UNSAFE, name, n) ? -1 : 0;
    case V_TUPLE: return NAMEIS("count") || NAMEIS("index");
    default: return 0;
    }
}

/* which: 0 keys, 1 values, 2 (key, value) tuples; sub: the view type */
static int dict_items(jctx *c, const node *at, vdict *d, int which, int sub, val *out)
{
    vlist *l = v_list_new(c->ar, d->n);
    if (!l) return jn_oom(c, at);
    for (size_t i = 0; i < d->n; i++) {
        if (which == 0) l->items[i] = d->keys[i];
        else if (which == 1) l->items[i] = d->vals[i];
        else {
            vlist *pair = v_list_new(c->ar, 2);
            if (!pair) return jn_oom(c, at);
            pair->items[0] = d->keys[i];
            pair->items[1] = d->vals[i];
            pair->n = 2;
            l->items[i] = mklist(pair, V_TUPLE);
        }
    }
    l->n = d->n;
    *out = mklist(l, V_LIST);
    out->sub = (uint8_t)sub;
    return 0;
}

static int affix(const val *s, const val *x, int end)
{
    if (x->t != V_STR || x->u.s.n > s->u.s.n) return 0;
    const char *p = end ? s->u.s.p + s->u.s.n - x->u.s.n : s->u.s.p;
    return !memcmp(p, x->u.s.p, x->u.s.n);
}

static int str_is(const val *s, int (*pred)(uint32_t))
{
    if (!s->u.s.n) return 0;
    for (size_t i = 0; i < s->u.s.n;) {
        uint32_t cp;
        int k = utf8_decode(s->u.s.p + i, s->u.s.n - i, &cp);
        if (k <= 0 || !pred(cp)) return 0;
        i += (size_t)k;
    }
    return 1;
}

static int p_digit(uint32_t cp) { return utf8proc_category((utf8proc_int32_t)cp) == UTF8PROC_CATEGORY_ND; }
static int p_alpha(uint32_t cp)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}
static int p_alnum(uint32_t cp) { return p_alpha(cp) || p_digit(cp); }
static int p_space(uint32_t cp) { return py_isspace(cp); }

static int find(const val *s, const val *x, int rev, int64_t *out)
{
    const char *p = s->u.s.p, *f = NULL;
    size_t n = s->u.s.n, xn = x->u.s.n;
    if (!rev) f = memmem(p, n, x->u.s.p, xn);
    else
        for (size_t j = n + 1; j-- > 0;)
            if (j + xn <= n && !memcmp(p + j, x->u.s.p, xn)) { f = p + j; break; }
    *out = f ? (int64_t)u8_len(p, (size_t)(f - p)) : -1;
    return 0;
}

/* The part of s that find, count, startswith and endswith search when given
 * the optional start and end (code points, negative from the end, None for
 * the default), and the code-point offset where it starts. Python clamps end
 * to the length but not start: *empty_ok is 0 when start lies past end, and
 * then even an empty needle is not found. */
static int str_bounds(jctx *c, const node *at, const val *s, const val *start, const val *end,
                      val *sub, int64_t *off, int *empty_ok)
{
    int64_t len = (int64_t)u8_len(s->u.s.p, s->u.s.n), st = 0, en = len;
    const val *bv[2] = {start, end};
    int64_t *dst[2] = {&st, &en};
    for (int k = 0; k < 2; k++) {
        if (!bv[k] || bv[k]->t == V_NONE) continue;
        if (bv[k]->t != V_INT && bv[k]->t != V_BOOL)
            return jn_fail(c, at, "slice indices must be integers or None or have an __index__ method");
        int64_t x = inum(bv[k]);
        if (x < 0 && (x += len) < 0) x = 0;
        *dst[k] = x;
    }
    if (en > len) en = len;
    *empty_ok = st <= en;
    *off = st;
    *sub = *s;
    if (st > en) st = en;
    size_t b0 = u8_offset(s->u.s.p, s->u.s.n, (size_t)st), b1 = u8_offset(s->u.s.p, s->u.s.n, (size_t)en);
    sub->u.s.p = s->u.s.p + b0;
    sub->u.s.n = b1 - b0;
    return 0;
}

static int str_method(jctx *c, const node *at, const val *s, const char *name, size_t n,
                      jargs *a, val *out)
{
    val *a0 = jn_arg(a, 0, NULL), *a1 = jn_arg(a, 1, NULL);
    strbuf b = {0};
    if (NAMEIS("startswith") || NAMEIS("endswith")) {
        int end = name[0] == 'e', r = 0, ok;
        int64_t off;
        val part;
        if (!a0) return jn_fail(c, at, "%.*s() takes at least 1 argument (0 given)", (int)n, name);
        if (str_bounds(c, at, s, a1, jn_arg(a, 2, NULL), &part, &off, &ok)) return -1;
        if (a0->t == V_TUPLE || a0->t == V_LIST) {
            for (size_t i = 0; i < a0->u.l->n; i++) r |= ok && affix(&part, &a0->u.l->items[i], end);
        } else if (a0->t == V_STR) {
            r = ok && affix(&part, a0, end);
        } else {
            return jn_fail(c, at, "%.*s first arg must be str or a tuple of str, not %s", (int)n, name, v_typename(a0));
        }
        *out = v_bool(r);
        return 0;
    }
    if (NAMEIS("strip") || NAMEIS("lstrip") || NAMEIS("rstrip")) {
        if (a0 && a0->t != V_STR && a0->t != V_NONE)
            return jn_fail(c, at, "%.*s arg must be None or str", (int)n, name);
        *out = strip(s, a0 && a0->t == V_STR ? a0 : NULL, name[0] == 'l' ? 1 : name[0] == 'r' ? 2 : 3);
        return 0;
    }
    if (NAMEIS("split") || NAMEIS("rsplit")) {
        val *sep = jn_arg(a, 0, "sep"), *mx = jn_arg(a, 1, "maxsplit");
        if (sep && sep->t != V_STR && sep->t != V_NONE)
            return jn_fail(c, at, "must be str or None, not %s", v_typename(sep));
        return split(c, at, s, sep, mx && is_num(mx) ? inum(mx) : -1, name[0] == 'r', out);
    }
    if (NAMEIS("upper")) { casemap(s->u.s.p, s->u.s.n, CASE_UPPER, &b); return mkstr(c, at, &b, out); }
    if (NAMEIS("lower") || NAMEIS("casefold")) { casemap(s->u.s.p, s->u.s.n, CASE_LOWER, &b); return mkstr(c, at, &b, out); }
    if (NAMEIS("title")) { casemap(s->u.s.p, s->u.s.n, CASE_TITLE_PY, &b); return mkstr(c, at, &b, out); }
    if (NAMEIS("capitalize")) { casemap(s->u.s.p, s->u.s.n, CASE_CAPITALIZE, &b); return mkstr(c, at, &b, out); }
    if (NAMEIS("replace")) {
        val *cnt = jn_arg(a, 2, "count");
        if (!a0 || !a1 || a0->t != V_STR || a1->t != V_STR)
            return jn_fail(c, at, "replace() expects two strings");
        return replace(c, at, s, a0, a1, cnt && is_num(cnt) ? inum(cnt) : -1, out);
    }
    if (NAMEIS("format")) return str_format(c, at, s, a, out);
    if (NAMEIS("join")) {
        vlist *items;
        if (!a0) return jn_fail(c, at, "join() takes exactly one argument (0 given)");
        if (jn_iterate(c, at, a0, &items)) return -1;
        for (size_t i = 0; i < items->n; i++) {
            if (items->items[i].t != V_STR) {
                sb_free(&b);
                return jn_fail(c, at, "sequence item %zu: expected str instance, %s found", i, v_typename(&items->items[i]));
            }
            if (i) sb_append(&b, s->u.s.p, s->u.s.n);
            sb_append(&b, items->items[i].u.s.p, items->items[i].u.s.n);
        }
        return mkstr(c, at, &b, out);
    }
    if (NAMEIS("find") || NAMEIS("rfind") || NAMEIS("index") || NAMEIS("rindex") || NAMEIS("count")) {
        if (!a0 || a0->t != V_STR) return jn_fail(c, at, "%.*s() expects a string argument", (int)n, name);
        int ok;
        int64_t off, r = -1;
        val part;
        if (str_bounds(c, at, s, a1, jn_arg(a, 2, NULL), &part, &off, &ok)) return -1;
        if (NAMEIS("count")) {
            int64_t k = 0;
            if (!ok) k = 0;
            else if (!a0->u.s.n) k = (int64_t)u8_len(part.u.s.p, part.u.s.n) + 1;
            else
                for (const char *p = part.u.s.p, *e = p + part.u.s.n, *f; (f = memmem(p, (size_t)(e - p), a0->u.s.p, a0->u.s.n)); p = f + a0->u.s.n) k++;
            *out = v_int(k);
            return 0;
        }
        if (ok) find(&part, a0, name[0] == 'r', &r);
        if (r >= 0) r += off;
        if (r < 0 && name[name[0] == 'r'] == 'i') return jn_fail(c, at, "substring not found");
        *out = v_int(r);
        return 0;
    }
    if (NAMEIS("splitlines")) {
        vlist *l;
        val *ke = jn_arg(a, 0, "keepends");
        if (splitlines(c, at, s, ke && v_truthy(ke), &l)) return -1;
        *out = mklist(l, V_LIST);
        return 0;
    }
    if (NAMEIS("removeprefix") || NAMEIS("removesuffix")) {
        if (!a0 || a0->t != V_STR) return jn_fail(c, at, "%.*s() expects a string argument", (int)n, name);
        int suf = name[6] == 's';
        *out = *s;
        if (affix(s, a0, suf)) {
            out->u.s.n -= a0->u.s.n;
            if (!suf) out->u.s.p += a0->u.s.n;
        }
        return 0;
    }
    if (NAMEIS("isdigit") || NAMEIS("isdecimal") || NAMEIS("isnumeric")) { *out = v_bool(str_is(s, p_digit)); return 0; }
    if (NAMEIS("isalpha")) { *out = v_bool(str_is(s, p_alpha)); return 0; }
    if (NAMEIS("isalnum")) { *out = v_bool(str_is(s, p_alnum)); return 0; }
    if (NAMEIS("isspace")) { *out = v_bool(str_is(s, p_space)); return 0; }
    if (NAMEIS("islower") || NAMEIS("isupper")) {
        casemap(s->u.s.p, s->u.s.n, name[2] == 'l' ? CASE_LOWER : CASE_UPPER, &b);
        int has_cased = 0;
        for (size_t i = 0; i < s->u.s.n;) {
            uint32_t cp;
            int k = utf8_decode(s->u.s.p + i, s->u.s.n - i, &cp);
            if (k <= 0) { i++; continue; }
            has_cased |= is_cased(cp);
            i += (size_t)k;
        }
        *out = v_bool(has_cased && b.n == s->u.s.n && !memcmp(b.p, s->u.s.p, b.n));
        sb_free(&b);
        return 0;
    }
    if (NAMEIS("partition") || NAMEIS("rpartition")) {
        if (!a0 || a0->t != V_STR || !a0->u.s.n) return jn_fail(c, at, "%.*s() expects a non-empty string", (int)n, name);
        int64_t r;
        find(s, a0, name[0] == 'r', &r);
        vlist *l = v_list_new(c->ar, 3);
        if (!l) return jn_oom(c, at);
        if (r < 0) {
            l->items[0] = name[0] == 'r' ? v_str("", 0) : *s;
            l->items[1] = v_str("", 0);
            l->items[2] = name[0] == 'r' ? *s : v_str("", 0);
        } else {
            size_t off = u8_offset(s->u.s.p, s->u.s.n, (size_t)r);
            l->items[0] = v_str(s->u.s.p, off);
            l->items[1] = v_str(s->u.s.p + off, a0->u.s.n);
            l->items[2] = v_str(s->u.s.p + off + a0->u.s.n, s->u.s.n - off - a0->u.s.n);
        }
        l->n = 3;
        *out = mklist(l, V_TUPLE);
        return 0;
    }
    return jn_fail(c, at, "str.%.*s() is not supported in templates", (int)n, name);
}

int jn_escape(jctx *c, const node *at, const val *v, val *out)
{
    if (v->t == V_STR && v->sub == SUB_MARKUP) { *out = *v; return 0; }
    val s;
    if (jn_str(c, at, v, &s)) return -1;
    strbuf b = {0};
    for (size_t i = 0; i < s.u.s.n; i++) {
        char ch = s.u.s.p[i];
        if (ch == '&') sb_puts(&b, "&amp;");
        else if (ch == '<') sb_puts(&b, "&lt;");
        else if (ch == '>') sb_puts(&b, "&gt;");
        else if (ch == '"') sb_puts(&b, "&#34;");
        else if (ch == '\'') sb_puts(&b, "&#39;");
        else sb_putc(&b, ch);
    }
    if (mkstr(c, at, &b, out)) return -1;
    out->sub = SUB_MARKUP;
    return 0;
}

/* A Markup's string results, and the strings in its lists and tuples, are
 * Markup again. Returns rc, for tail calls. */
static int as_markup(int rc, val *out)
{
    if (rc) return rc;
    if (out->t == V_STR) out->sub = SUB_MARKUP;
    if (out->t == V_LIST || out->t == V_TUPLE)
        for (size_t i = 0; i < out->u.l->n; i++)
            if (out->u.l->items[i].t == V_STR) out->u.l->items[i].sub = SUB_MARKUP;
    return 0;
}

static int markup_if(int mk, int rc, val *out) { return mk ? as_markup(rc, out) : rc; }

/* Markup's methods as markupsafe wraps them: these escape their string
 * arguments first (join escapes the items it joins); split and friends only
 * wrap the result; the rest (find, startswith, is*) are str's own. */
static const char *const MARKUP_ESCAPING[] = {
    "capitalize", "title", "lower", "upper", "replace", "ljust", "rjust", "lstrip", "rstrip",
    "center", "strip", "zfill", "casefold", "removeprefix", "removesuffix", "partition",
    "rpartition", "format", "join", NULL};
static const char *const MARKUP_WRAPPING[] = {"split", "rsplit", "splitlines", NULL};

static int escape_all(jctx *c, const node *at, const val *in, size_t n, val **out)
{
    *out = n ? ar_alloc(c->ar, n * sizeof **out) : NULL;
    if (n && !*out) return jn_oom(c, at);
    for (size_t i = 0; i < n; i++)
        if (in[i].t == V_STR ? jn_escape(c, at, &in[i], &(*out)[i]) : ((*out)[i] = in[i], 0)) return -1;
    return 0;
}

static int markup_method(jctx *c, const node *at, const val *s, const char *name, size_t n,
                         jargs *a, val *out)
{
    if (in_names(MARKUP_WRAPPING, name, n)) return as_markup(str_method(c, at, s, name, n, a, out), out);
    if (!in_names(MARKUP_ESCAPING, name, n)) return str_method(c, at, s, name, n, a, out);
    jargs e = *a;
    if (escape_all(c, at, a->pos, a->npos, &e.pos) || escape_all(c, at, a->kwv, a->nkw, &e.kwv)) return -1;
    if (NAMEIS("join") && e.npos) {
        vlist *items, *l;
        if (jn_iterate(c, at, &a->pos[0], &items)) return -1;
        if (!(l = v_list_new(c->ar, items->n))) return jn_oom(c, at);
        if (escape_all(c, at, items->items, items->n, &l->items)) return -1;
        l->n = items->n;
        e.pos[0] = mklist(l, V_LIST);
    }
    return as_markup(str_method(c, at, s, name, n, &e, out), out);
}

int jn_method(jctx *c, const node *at, vmethod *m, jargs *a, val *out)
{
    const char *name = m->name;
    size_t n = strlen(name);
    val *self = &m->self;
    val *a0 = jn_arg(a, 0, NULL);
    if (self->t == V_STR && self->sub == SUB_MARKUP) return markup_method(c, at, self, name, n, a, out);
    if (self->t == V_STR) return str_method(c, at, self, name, n, a, out);
    if (self->t == V_CYCLER) {
        vcycler *cy = self->u.cy;
        if (NAMEIS("reset")) { cy->pos = 0; *out = V_NONE_VAL; return 0; }
        *out = cy->items->items[cy->pos]; /* next() */
        cy->pos = (cy->pos + 1) % cy->items->n;
        return 0;
    }
    if (self->t == V_LOOP && NAMEIS("changed")) {
        /* true on the first call and whenever the arguments differ */
        vloop *lp = self->u.loop;
        vlist *args = v_list_new(c->ar, a->npos);
        if (!args) return jn_oom(c, at);
        if (a->npos) memcpy(args->items, a->pos, a->npos * sizeof(val));
        args->n = a->npos;
        val now = mklist(args, V_TUPLE);
        int same = lp->changed_called ? v_equal(&lp->changed_last, &now) : 0;
        if (same < 0) return jn_too_deep(c, at);
        int changed = !same;
        lp->changed_called = 1;
        lp->changed_last = now;
        *out = v_bool(changed);
        return 0;
    }
    if (self->t == V_LOOP) {
        /* loop.cycle(a, b, ...) */
        if (!a->npos) return jn_fail(c, at, "no items for cycling given");
        *out = a->pos[self->u.loop->index0 % a->npos];
        return 0;
    }
    if (self->t == V_DICT) {
        if (NAMEIS("items")) return dict_items(c, at, self->u.d, 2, SUB_ITEMS, out);
        if (NAMEIS("keys")) return dict_items(c, at, self->u.d, 0, SUB_KEYS, out);
        if (NAMEIS("values")) return dict_items(c, at, self->u.d, 1, SUB_VALUES, out);
        if (NAMEIS("get")) {
            if (!a0) return jn_fail(c, at, "get expected at least 1 argument, got 0");
            val *v = v_dict_get(self->u.d, a0), *d = jn_arg(a, 1, NULL);
            *out = v ? *v : d ? *d : V_NONE_VAL;
            return 0;
        }
        if (NAMEIS("copy")) { *out = *self; return 0; }
    }
    if (self->t == V_LIST || self->t == V_TUPLE) {
        if (NAMEIS("copy")) { *out = *self; return 0; }
        if (!a0) return jn_fail(c, at, "%s() takes exactly one argument (0 given)", name);
        int64_t k = 0, idx = -1;
        for (size_t i = 0; i < self->u.l->n; i++) {
            int eq = v_equal(&self->u.l->items[i], a0);
            if (eq < 0) return jn_too_deep(c, at);
            if (eq) { k++; if (idx < 0) idx = (int64_t)i; }
        }
        if (NAMEIS("count")) { *out = v_int(k); return 0; }
        if (idx < 0) return jn_fail(c, at, "value is not in list");
        *out = v_int(idx);
        return 0;
    }
    return jn_fail(c, at, "%s.%s() is not supported in templates", v_typename(self), name);
}

/* ---- globals ---- */
int jn_func(jctx *c, const node *at, int fn, jargs *a, val *out)
{
    switch (fn) {
    case FN_RANGE: {
        int64_t lo = 0, hi, st = 1;
        for (size_t i = 0; i < a->npos; i++)
            if (a->pos[i].t != V_INT && a->pos[i].t != V_BOOL)
                return jn_fail(c, at, "'%s' object cannot be interpreted as an integer", v_typename(&a->pos[i]));
        if (a->npos == 1) hi = inum(&a->pos[0]);
        else if (a->npos == 2 || a->npos == 3) {
            lo = inum(&a->pos[0]);
            hi = inum(&a->pos[1]);
            if (a->npos == 3) st = inum(&a->pos[2]);
        } else return jn_fail(c, at, "range expected 1 to 3 arguments, got %zu", a->npos);
        if (st == 0) return jn_fail(c, at, "range() arg 3 must not be zero");
        /* the sandbox's limit, which keeps range(10**9) from allocating */
        int64_t cnt = 0;
        if (st > 0 && hi > lo) cnt = (hi - lo + st - 1) / st;
        if (st < 0 && lo > hi) cnt = (lo - hi - st - 1) / -st;
        if (cnt > 100000)
            return jn_fail(c, at, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        vlist *l = v_list_new(c->ar, (size_t)cnt);
        if (!l) return jn_oom(c, at);
        for (int64_t i = 0; i < cnt; i++) l->items[i] = v_int(lo + i * st);
        l->n = (size_t)cnt;
        *out = mklist(l, V_LIST);
        return 0;
    }
    case FN_CYCLER: case FN_JOINER: {
        vcycler *cy = ar_alloc(c->ar, sizeof *cy);
        if (!cy) return jn_oom(c, at);
        if (fn == FN_CYCLER) {
            if (!a->npos) return jn_fail(c, at, "at least one item has to be provided");
            if (!(cy->items = v_list_new(c->ar, a->npos))) return jn_oom(c, at);
            memcpy(cy->items->items, a->pos, a->npos * sizeof(val));
            cy->items->n = a->npos;
        } else {
            val *sep = jn_arg(a, 0, "sep");
            cy->joiner = 1;
            cy->sep = sep ? *sep : v_str(", ", 2);
        }
        *out = (val){.t = V_CYCLER};
        out->u.cy = cy;
        return 0;
    }
    case FN_DICT: case FN_NAMESPACE: {
        vdict *d = v_dict_new(c->ar, 0);
        if (!d) return jn_oom(c, at);
        if (a->npos > 1) return jn_fail(c, at, "%s expected at most 1 positional argument", fn == FN_DICT ? "dict" : "namespace");
        if (a->npos == 1) {
            if (a->pos[0].t != V_DICT) return jn_fail(c, at, "cannot convert '%s' to a dictionary", v_typename(&a->pos[0]));
            for (size_t i = 0; i < a->pos[0].u.d->n; i++)
                if (v_dict_set(c->ar, d, a->pos[0].u.d->keys[i], a->pos[0].u.d->vals[i])) return jn_oom(c, at);
        }
        for (size_t i = 0; i < a->nkw; i++)
            if (v_dict_set(c->ar, d, v_str(a->kw[i]->name, a->kw[i]->name_len), a->kwv[i])) return jn_oom(c, at);
        *out = (val){.t = (uint8_t)(fn == FN_DICT ? V_DICT : V_NS)};
        out->u.d = d;
        return 0;
    }
    case FN_RAISE: {
        /* the message exactly as the template wrote it: clients show it */
        val *m = jn_arg(a, 0, "message"), s;
        if (!m) return jn_fail(c, at, "raise_exception() missing 1 required positional argument: 'message'");
        if (jn_str(c, at, m, &s)) return -1;
        err_set(c->e, "%.*s", (int)s.u.s.n, s.u.s.p);
        c->raised = 1;
        return -1;
    }
    case FN_STRFTIME: {
        if (!a->npos || a->pos[0].t != V_STR) return jn_fail(c, at, "strftime_now expects a format string");
        char fmt[256], buf[512];
        snprintf(fmt, sizeof fmt, "%.*s", (int)a->pos[0].u.s.n, a->pos[0].u.s.p);
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        size_t k = strftime(buf, sizeof buf, fmt, &tm);
        *out = v_strdup(c->ar, buf, k);
        return out->t == V_STR ? 0 : jn_oom(c, at);
    }
    }
    return jn_fail(c, at, "internal error: unknown function %d", fn);
}

/* ---- tests ---- */
static int test_sequence(const val *v)
{
    return v->t == V_STR || ((v->t == V_LIST || v->t == V_TUPLE) && !v->sub) || v->t == V_DICT ||
           v->t == V_UNDEF;
}

/* The names Jinja2's environment (as transformers builds it) knows, which
 * is what the `filter` and `test` tests answer, whether or not this
 * interpreter implements each one. */
static const char *const JINJA_FILTERS[] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e",
    "escape", "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent",
    "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "pprint",
    "random", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select",
    "selectattr", "slice", "sort", "string", "striptags", "sum", "title", "tojson", "trim",
    "truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr", NULL};
static const char *const JINJA_TESTS[] = {
    "!=", "<", "<=", "==", ">", ">=", "boolean", "callable", "defined", "divisibleby", "eq",
    "equalto", "escaped", "even", "false", "filter", "float", "ge", "greaterthan", "gt", "in",
    "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number",
    "odd", "sameas", "sequence", "string", "test", "true", "undefined", "upper", NULL};

int jn_test(jctx *c, const node *at, const char *name, size_t n, val v, jargs *a, int *out)
{
    val *a0 = jn_arg(a, 0, NULL);
    if (NAMEIS("defined")) { *out = v.t != V_UNDEF; return 0; }
    if (NAMEIS("filter") || NAMEIS("test")) {
        /* `value in env.filters`: a dict lookup, so lists and dicts raise */
        if (v.t == V_LIST || v.t == V_DICT || v.t == V_NS)
            return jn_fail(c, at, "unhashable type: '%s'", v_typename(&v));
        *out = v.t == V_STR && in_names(name[0] == 'f' ? JINJA_FILTERS : JINJA_TESTS, v.u.s.p, v.u.s.n);
        return 0;
    }
    if (NAMEIS("undefined")) { *out = v.t == V_UNDEF; return 0; }
    if (NAMEIS("none")) { *out = v.t == V_NONE; return 0; }
    if (NAMEIS("string")) { *out = v.t == V_STR; return 0; }
    if (NAMEIS("number")) { *out = is_num(&v); return 0; }
    if (NAMEIS("integer")) { *out = v.t == V_INT; return 0; }
    if (NAMEIS("float")) { *out = v.t == V_FLOAT; return 0; }
    if (NAMEIS("boolean")) { *out = v.t == V_BOOL; return 0; }
    if (NAMEIS("true")) { *out = v.t == V_BOOL && v.u.b; return 0; }
    if (NAMEIS("false")) { *out = v.t == V_BOOL && !v.u.b; return 0; }
    if (NAMEIS("mapping")) { *out = v.t == V_DICT; return 0; }
    if (NAMEIS("iterable")) { *out = test_sequence(&v) || v.t == V_LIST || v.t == V_GEN; return 0; }
    if (NAMEIS("sequence")) { *out = test_sequence(&v); return 0; }
    if (NAMEIS("callable")) {
        *out = v.t == V_MACRO || v.t == V_FUNC || v.t == V_METHOD || (v.t == V_CYCLER && v.u.cy->joiner);
        return 0;
    }
    if (NAMEIS("lower") || NAMEIS("upper")) {
        if (v.t != V_STR) { *out = 0; return 0; }
        strbuf b = {0};
        casemap(v.u.s.p, v.u.s.n, name[0] == 'l' ? CASE_LOWER : CASE_UPPER, &b);
        *out = b.n == v.u.s.n && (!b.n || !memcmp(b.p, v.u.s.p, b.n));
        sb_free(&b);
        return 0;
    }
    int op = -1;
    if (NAMEIS("eq") || NAMEIS("equalto") || NAMEIS("==")) op = OP_EQ;
    else if (NAMEIS("ne") || NAMEIS("!=")) op = OP_NE;
    else if (NAMEIS("lt") || NAMEIS("lessthan") || NAMEIS("<")) op = OP_LT;
    else if (NAMEIS("le") || NAMEIS("<=")) op = OP_LE;
    else if (NAMEIS("gt") || NAMEIS("greaterthan") || NAMEIS(">")) op = OP_GT;
    else if (NAMEIS("ge") || NAMEIS(">=")) op = OP_GE;
    else if (NAMEIS("in")) op = OP_IN;
    if (op >= 0) {
        if (!a0) return jn_fail(c, at, "test '%.*s' needs an argument", (int)n, name);
        return jn_compare(c, at, op, &v, a0, out);
    }
    if (NAMEIS("sameas")) {
        if (!a0) return jn_fail(c, at, "test 'sameas' needs an argument");
        /* Python identity: singletons, small ints, the same container */
        if (v.t != a0->t) *out = 0;
        else if (v.t == V_NONE) *out = 1;
        else if (v.t == V_BOOL || v.t == V_INT) *out = v_equal(&v, a0);
        else if (v.t == V_LIST || v.t == V_TUPLE) *out = v.u.l == a0->u.l;
        else if (v.t == V_DICT || v.t == V_NS) *out = v.u.d == a0->u.d;
        else *out = 0;
        return 0;
    }
    if (NAMEIS("odd") || NAMEIS("even") || NAMEIS("divisibleby")) {
        if (v.t == V_UNDEF) return jn_undef_fail(c, at, &v);
        if (v.t == V_STR) {
            /* value % 2 is string formatting in Python: never equal to a number */
            val two = a0 ? *a0 : v_int(2), r;
            if (jn_percent_format(c, at, &v, &two, &r)) return -1;
            *out = 0;
            return 0;
        }
        if (!is_num(&v)) return jn_fail(c, at, "unsupported operand type(s) for %%: '%s' and 'int'", v_typename(&v));
        if (NAMEIS("divisibleby")) {
            if (!a0 || !is_num(a0)) return jn_fail(c, at, "test 'divisibleby' needs a number");
            if (fnum(a0) == 0) return jn_fail(c, at, "integer division or modulo by zero");
            *out = fmod(fnum(&v), fnum(a0)) == 0;
            return 0;
        }
        /* jinja: value % 2 == 1 (odd), value % 2 == 0 (even), Python's % */
        double m = v.t == V_FLOAT ? fmod(v.u.f, 2.0) : (double)(inum(&v) % 2);
        if (m < 0) m += 2;
        *out = name[0] == 'o' ? m == 1 : m == 0;
        return 0;
    }
    if (NAMEIS("escaped")) { *out = 0; return 0; }
    return jn_fail(c, at, "no test named '%.*s'", (int)n, name);
}

/* ---- filters ---- */

/* jinja's make_attrgetter: "a.b.0" walks getitem on each part. */
static int attr_path(jctx *c, const node *at, val v, const val *path, val *out)
{
    if (path->t == V_INT) return jn_getitem(c, at, v, *path, out);
    if (path->t != V_STR) return jn_fail(c, at, "attribute must be a string");
    const char *p = path->u.s.p, *e = p + path->u.s.n;
    while (p <= e) {
        const char *dot = memchr(p, '.', (size_t)(e - p));
        if (!dot) dot = e;
        val key = v_str(p, (size_t)(dot - p));
        int digits = dot > p;
        for (const char *q = p; q < dot; q++) digits &= *q >= '0' && *q <= '9';
        if (digits) key = v_int(strtoll(p, NULL, 10));
        if (v.t == V_UNDEF) { *out = v; return 0; }
        if (jn_getitem(c, at, v, key, &v)) return -1;
        p = dot + 1;
    }
    *out = v;
    return 0;
}

/* Sort key comparison for sort/dictsort/unique/min/max: strings compare
 * lowercased unless case_sensitive. */
typedef struct sortctx { jctx *c; const node *at; int cs, err; } sortctx;

static int key_lower(jctx *c, const val *v, int cs, val *out)
{
    if (cs || v->t != V_STR) { *out = *v; return 0; }
    strbuf b = {0};
    casemap(v->u.s.p, v->u.s.n, CASE_LOWER, &b);
    return mkstr(c, NULL, &b, out);
}

static int cmp_vals(sortctx *s, const val *a, const val *b)
{
    int lt, gt;
    if (s->err) return 0;
    if (jn_compare(s->c, s->at, OP_LT, a, b, &lt) || jn_compare(s->c, s->at, OP_GT, a, b, &gt)) {
        s->err = 1;
        return 0;
    }
    return lt ? -1 : gt ? 1 : 0;
}

/* Stable merge sort of items by keys (parallel arrays). */
static void msort(sortctx *s, val *items, val *keys, val *ti, val *tk, size_t n, int rev)
{
    if (n < 2) return;
    size_t h = n / 2;
    msort(s, items, keys, ti, tk, h, rev);
    msort(s, items + h, keys + h, ti, tk, n - h, rev);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int cmp = cmp_vals(s, &keys[j], &keys[i]);
        int take_right = rev ? cmp > 0 : cmp < 0;
        if (take_right) { ti[k] = items[j]; tk[k++] = keys[j++]; }
        else { ti[k] = items[i]; tk[k++] = keys[i++]; }
    }
    while (i < h) { ti[k] = items[i]; tk[k++] = keys[i++]; }
    while (j < n) { ti[k] = items[j]; tk[k++] = keys[j++]; }
    memcpy(items, ti, n * sizeof *items);
    memcpy(keys, tk, n * sizeof *keys);
}

/* make_attrgetter(attribute, default=dflt): the item's attribute path; an
 * undefined result becomes dflt unless that is None. */
static int attr_or_default(jctx *c, const node *at, val item, const val *attr, const val *dflt,
                           val *out)
{
    if (!attr || attr->t == V_NONE) { *out = item; return 0; }
    if (attr_path(c, at, item, attr, out)) return -1;
    if (out->t == V_UNDEF && dflt && dflt->t != V_NONE) *out = *dflt;
    return 0;
}

static int sort_list(jctx *c, const node *at, vlist *in, const val *attr, const val *dflt, int cs,
                     int rev, int by_value, val *out)
{
    size_t n = in->n;
    vlist *l = v_list_new(c->ar, n);
    val *keys = ar_alloc(c->ar, (n + 1) * sizeof *keys), *ti = ar_alloc(c->ar, (n + 1) * sizeof *ti),
        *tk = ar_alloc(c->ar, (n + 1) * sizeof *tk);
    if (!l || !keys || !ti || !tk) return jn_oom(c, at);
    for (size_t i = 0; i < n; i++) {
        val k = in->items[i];
        if (by_value >= 0) k = k.u.l->items[by_value];
        if (attr_or_default(c, at, k, attr, dflt, &k)) return -1;
        if (key_lower(c, &k, cs, &keys[i])) return jn_oom(c, at);
        l->items[i] = in->items[i];
    }
    l->n = n;
    sortctx s = {c, at, cs, 0};
    msort(&s, l->items, keys, ti, tk, n, rev);
    if (s.err) return -1;
    *out = mklist(l, V_LIST);
    return 0;
}

/* groupby(attribute, default, case_sensitive): sorted by the attribute, then
 * a list of (grouper, items) tuples for runs of equal keys; without
 * case_sensitive strings group lowercased, and the grouper is the first
 * item's own value. */
static int do_groupby(jctx *c, const node *at, val v, jargs *a, val *out)
{
    val *attr = jn_arg(a, 0, "attribute"), *dflt = jn_arg(a, 1, "default"),
        *csv = jn_arg(a, 2, "case_sensitive");
    int cs = csv && v_truthy(csv);
    vlist *items, *groups = v_list_new(c->ar, 0);
    val sorted;
    if (!attr) return jn_fail(c, at, "groupby() missing 1 required positional argument: 'attribute'");
    if (!groups) return jn_oom(c, at);
    if (jn_iterate(c, at, &v, &items) || sort_list(c, at, items, attr, dflt, cs, 0, -1, &sorted)) return -1;
    vlist *s = sorted.u.l, *run = NULL;
    val runkey = V_NONE_VAL;
    for (size_t i = 0; i < s->n; i++) {
        val k, lk;
        if (attr_or_default(c, at, s->items[i], attr, dflt, &k)) return -1;
        if (key_lower(c, &k, cs, &lk)) return jn_oom(c, at);
        int same = 0;
        if (run) {
            same = v_equal(&runkey, &lk);
            if (same < 0) return jn_too_deep(c, at);
        }
        if (!same) {
            vlist *g = v_list_new(c->ar, 2);
            if (!g || !(run = v_list_new(c->ar, 0))) return jn_oom(c, at);
            g->items[0] = k;
            g->items[1] = mklist(run, V_LIST);
            g->n = 2;
            g->group = 1;
            if (v_list_push(c->ar, groups, mklist(g, V_TUPLE))) return jn_oom(c, at);
            runkey = lk;
        }
        if (v_list_push(c->ar, run, s->items[i])) return jn_oom(c, at);
    }
    *out = mklist(groups, V_LIST);
    return 0;
}

/* truncate(length=255, killwords=False, end='...', leeway=5): text longer
 * than length + leeway is cut to length - len(end) code points, back to the
 * last space unless killwords, and end appended. */
static int do_truncate(jctx *c, const node *at, val v, jargs *a, val *out)
{
    val *lv = jn_arg(a, 0, "length"), *kw = jn_arg(a, 1, "killwords"), *ev = jn_arg(a, 2, "end"),
        *lw = jn_arg(a, 3, "leeway"), end = ev ? *ev : v_str("...", 3);
    if (v.t == V_UNDEF) { *out = v; return 0; } /* len(Undefined) is 0 */
    if (v.t != V_STR) return jn_fail(c, at, "truncate expects a string, not %s", v_typename(&v));
    if ((lv && lv->t != V_INT) || (lw && lw->t != V_INT && lw->t != V_NONE) || end.t != V_STR)
        return jn_fail(c, at, "truncate expects integer length and leeway and a string end");
    int64_t length = lv ? lv->u.i : 255, leeway = lw && lw->t == V_INT ? lw->u.i : 5;
    int64_t len = (int64_t)u8_len(v.u.s.p, v.u.s.n), elen = (int64_t)u8_len(end.u.s.p, end.u.s.n);
    if (length < elen) return jn_fail(c, at, "expected length >= %lld, got %lld", (long long)elen, (long long)length);
    if (leeway < 0) return jn_fail(c, at, "expected leeway >= 0, got %lld", (long long)leeway);
    if (len <= length + leeway) { *out = v; return 0; }
    val head = v;
    head.u.s.n = u8_offset(v.u.s.p, v.u.s.n, (size_t)(length - elen));
    if (!(kw && v_truthy(kw))) {
        /* s.rsplit(" ", 1)[0] */
        const char *sp = NULL;
        for (size_t i = head.u.s.n; i-- > 0;)
            if (head.u.s.p[i] == ' ') { sp = head.u.s.p + i; break; }
        if (sp) head.u.s.n = (size_t)(sp - head.u.s.p);
    }
    if (v.sub == SUB_MARKUP && jn_escape(c, at, &end, &end)) return -1;
    if (jn_str(c, at, &head, &head)) return -1;
    strbuf b = {0};
    sb_append(&b, head.u.s.p, head.u.s.n);
    sb_append(&b, end.u.s.p, end.u.s.n);
    return markup_if(v.sub == SUB_MARKUP, mkstr(c, at, &b, out), out);
}

/* Jinja2's url_quote: percent-encode the UTF-8 of str(v) but for
 * unreserved bytes (and '/' outside query strings); in query strings a
 * space becomes '+'. */
static int url_quote(jctx *c, const node *at, const val *v, int for_qs, strbuf *b)
{
    val s;
    if (jn_str(c, at, v, &s)) return -1;
    for (size_t i = 0; i < s.u.s.n; i++) {
        unsigned char ch = (unsigned char)s.u.s.p[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            strchr("_.-~", ch) || (ch == '/' && !for_qs))
            sb_putc(b, (char)ch);
        else if (ch == ' ' && for_qs)
            sb_putc(b, '+');
        else
            sb_printf(b, "%%%02X", ch);
    }
    return 0;
}

/* urlencode: a string (or any non-iterable) is quoted whole; a dict or a
 * sequence of pairs becomes k=v&k=v. */
static int do_urlencode(jctx *c, const node *at, val v, val *out)
{
    strbuf b = {0};
    if (v.t == V_STR || v.t == V_NONE || v.t == V_BOOL || v.t == V_INT || v.t == V_FLOAT || v.t == V_UNDEF) {
        if (url_quote(c, at, &v, 0, &b)) { sb_free(&b); return -1; }
        return mkstr(c, at, &b, out);
    }
    vlist *pairs;
    if (v.t == V_DICT) {
        val it;
        if (dict_items(c, at, v.u.d, 2, SUB_LIST, &it)) return -1;
        pairs = it.u.l;
    } else if (jn_iterate(c, at, &v, &pairs)) {
        return -1;
    }
    for (size_t i = 0; i < pairs->n; i++) {
        vlist *kv;
        if (jn_iterate(c, at, &pairs->items[i], &kv)) { sb_free(&b); return -1; }
        if (kv->n != 2) {
            sb_free(&b);
            return jn_fail(c, at, "urlencode needs (key, value) pairs, got %zu values", kv->n);
        }
        if (i) sb_putc(&b, '&');
        if (url_quote(c, at, &kv->items[0], 1, &b)) { sb_free(&b); return -1; }
        sb_putc(&b, '=');
        if (url_quote(c, at, &kv->items[1], 1, &b)) { sb_free(&b); return -1; }
    }
    return mkstr(c, at, &b, out);
}

/* html.unescape for the references striptags meets in practice: &amp;
 * &lt; &gt; &quot; &apos; &nbsp; and numeric ones of ordinary code points.
 * Python knows 2,231 named entities and remaps odd numeric ones; any other
 * reference is refused rather than decoded differently. */
static int html_unescape(jctx *c, const node *at, const char *p, size_t n, strbuf *b)
{
    static const struct { const char *name, *text; } NAMED[] = {
        {"amp;", "&"}, {"lt;", "<"}, {"gt;", ">"}, {"quot;", "\""}, {"apos;", "'"},
        {"nbsp;", "\xC2\xA0"}, {NULL, NULL}};
    for (size_t i = 0; i < n; i++) {
        const char *r = p + i + 1;
        size_t left = n - i - 1, k;
        if (p[i] != '&' || !left || !(isalpha((unsigned char)*r) || *r == '#')) { sb_putc(b, p[i]); continue; }
        for (k = 0; NAMED[k].name; k++) {
            size_t ln = strlen(NAMED[k].name);
            if (left >= ln && !memcmp(r, NAMED[k].name, ln)) break;
        }
        if (NAMED[k].name) {
            sb_puts(b, NAMED[k].text);
            i += strlen(NAMED[k].name);
            continue;
        }
        if (*r == '#' && left > 2) {
            int hex = r[1] == 'x' || r[1] == 'X';
            char *end;
            unsigned long cp = strtoul(r + 1 + hex, &end, hex ? 16 : 10);
            int ok = end > r + 1 + hex && end < p + n && *end == ';' && isxdigit((unsigned char)r[1 + hex]);
            ok = ok && (cp == 9 || cp == 10 || (cp >= 0x20 && cp < 0x7F) || (cp >= 0xA0 && cp < 0xD800) ||
                        (cp >= 0xE000 && cp < 0xFDD0) || (cp >= 0xFDF0 && cp <= 0x10FFFF && (cp & 0xFFFE) != 0xFFFE));
            if (ok) {
                put_cp(b, (uint32_t)cp);
                i = (size_t)(end - p);
                continue;
            }
        }
        size_t show = 1;
        while (show < left && show < 12 && r[show] != ';' && !isspace((unsigned char)r[show])) show++;
        return jn_fail(c, at, "striptags: the HTML reference '&%.*s' is not supported (only &amp; &lt; &gt; "
                       "&quot; &apos; &nbsp; and numeric references of ordinary characters)", (int)show, r);
    }
    return 0;
}

/* Markup.striptags: drop <!-- comments -->, then <tags>, collapse white
 * space, unescape. Jinja2 removes the first remaining match each round;
 * one pass does the same, checking for a "<!--" that a removal joins. */
static int do_striptags(jctx *c, const node *at, val v, val *out)
{
    val s;
    if (jn_str(c, at, &v, &s)) return -1;
    const char *p = s.u.s.p;
    size_t n = s.u.s.n;
    strbuf nc = {0}, nt = {0}, ws = {0}, b = {0};
    for (size_t i = 0; i < n; i++) {
        sb_putc(&nc, p[i]);
        if (nc.n < 4 || memcmp(nc.p + nc.n - 4, "<!--", 4)) continue;
        /* "-->" may reuse the "--" of the opening mark */
        const char *e = NULL;
        if (i + 1 < n && p[i + 1] == '>') e = p + i - 1;
        else if (i + 2 < n && p[i + 1] == '-' && p[i + 2] == '>') e = p + i;
        else e = memmem(p + i + 1, n - i - 1, "-->", 3);
        if (!e) { sb_append(&nc, p + i + 1, n - i - 1); break; }
        nc.n -= 4;
        i = (size_t)(e - p) + 2;
    }
    for (size_t i = 0; i < nc.n; i++) {
        const char *e = nc.p[i] == '<' ? memchr(nc.p + i, '>', nc.n - i) : NULL;
        if (nc.p[i] == '<' && !e) { sb_append(&nt, nc.p + i, nc.n - i); break; }
        if (e) i = (size_t)(e - nc.p);
        else sb_putc(&nt, nc.p[i]);
    }
    /* " ".join(value.split()) */
    for (size_t i = 0; i < nt.n;) {
        uint32_t cp;
        int k = utf8_decode(nt.p + i, nt.n - i, &cp);
        if (k <= 0) { k = 1; cp = 0; }
        if (py_isspace(cp)) { i += (size_t)k; continue; }
        size_t st = i;
        while (i < nt.n && ((k = utf8_decode(nt.p + i, nt.n - i, &cp)) <= 0 || !py_isspace(cp))) i += k > 0 ? (size_t)k : 1;
        if (ws.n) sb_putc(&ws, ' ');
        sb_append(&ws, nt.p + st, i - st);
    }
    int rc = html_unescape(c, at, ws.p ? ws.p : "", ws.n, &b);
    sb_free(&nc);
    sb_free(&nt);
    sb_free(&ws);
    if (rc) { sb_free(&b); return -1; }
    return mkstr(c, at, &b, out);
}

/* v with the keys of its dicts sorted, as pprint's safe repr prints them
 * (dict views and namespaces print unsorted, as plain repr does). Keys
 * other than strings would sort by pprint's type-name fallback: refused. */
static int sorted_dicts(jctx *c, const node *at, val v, val *out, int depth)
{
    *out = v;
    if (depth > JN_MAX_DEPTH) return jn_too_deep(c, at);
    if ((v.t == V_LIST && !v.sub) || v.t == V_TUPLE) {
        vlist *l = v_list_new(c->ar, v.u.l->n);
        if (!l) return jn_oom(c, at);
        for (size_t i = 0; i < v.u.l->n; i++)
            if (sorted_dicts(c, at, v.u.l->items[i], &l->items[i], depth + 1)) return -1;
        l->n = v.u.l->n;
        *out = mklist(l, v.t);
    } else if (v.t == V_DICT) {
        vlist keys = {.items = v.u.d->keys, .n = v.u.d->n};
        val sk;
        for (size_t i = 0; i < keys.n; i++)
            if (keys.items[i].t != V_STR)
                return jn_fail(c, at, "pprint of a dict with %s keys is not supported", v_typename(&keys.items[i]));
        if (sort_list(c, at, &keys, NULL, NULL, 1, 0, -1, &sk)) return -1;
        vdict *d = v_dict_new(c->ar, keys.n);
        if (!d) return jn_oom(c, at);
        for (size_t i = 0; i < keys.n; i++) {
            val x;
            if (sorted_dicts(c, at, *v_dict_get(v.u.d, &sk.u.l->items[i]), &x, depth + 1) ||
                v_dict_set(c->ar, d, sk.u.l->items[i], x))
                return jn_oom(c, at);
        }
        *out = (val){.t = V_DICT};
        out->u.d = d;
    }
    return 0;
}

/* pprint: pprint.pformat(value), whose output is the repr with sorted dict
 * keys while that fits in 80 characters; longer values pformat breaks over
 * lines by rules not copied here, so they are refused. */
static int do_pprint(jctx *c, const node *at, val v, val *out)
{
    val s;
    strbuf b = {0};
    if (sorted_dicts(c, at, v, &s, 0)) return -1;
    if (v_repr(&s, &b)) { sb_free(&b); return jn_too_deep(c, at); }
    size_t len = u8_len(b.p ? b.p : "", b.n);
    if (len > 80) {
        sb_free(&b);
        return jn_fail(c, at, "pprint of a value whose repr is %zu characters is not supported "
                       "(pformat breaks lines past 80); use |tojson or |string", len);
    }
    return mkstr(c, at, &b, out);
}

/* One chunk of textwrap's split: a run of ASCII white space or of other
 * characters; n bytes, cps code points. */
typedef struct wchunk { const char *p; size_t n, cps; int blank; } wchunk;

/* str.strip() == '': every code point white space (Unicode's, not only
 * the ASCII that textwrap splits on) */
static int all_space(const char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = utf8_decode(p + i, n - i, &cp);
        if (k <= 0 || !py_isspace(cp)) return 0;
        i += (size_t)k;
    }
    return 1;
}

static int wrap_ws(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\v' || ch == '\f' || ch == '\r'; }

/* textwrap.wrap(line, width, expand_tabs=False, replace_whitespace=False,
 * break_long_words) with the lines joined by sep: the greedy loop of
 * TextWrapper._wrap_chunks, dropping white space at line ends. */
static int wrap_line(jctx *c, const node *at, const char *p, size_t n, int64_t width, int break_long,
                     const val *sep, strbuf *b)
{
    size_t cap = n + 1, nc = 0, lines = 0;
    wchunk *ch = ar_alloc(c->ar, cap * sizeof *ch);
    if (!ch) return jn_oom(c, at);
    for (size_t i = 0; i < n;) {
        size_t st = i;
        int ws = wrap_ws(p[i]);
        while (i < n && wrap_ws(p[i]) == ws) i++;
        ch[nc++] = (wchunk){p + st, i - st, u8_len(p + st, i - st), all_space(p + st, i - st)};
    }
    size_t ci = 0;
    while (ci < nc) {
        size_t cur = 0, first = b->n;
        size_t last_n = 0;
        int last_blank = 0, any = 0;
        if (ch[ci].blank && lines) ci++;
        if (lines && ci < nc) sb_append(b, sep->u.s.p, sep->u.s.n);
        size_t line_start = b->n;
        while (ci < nc && cur + ch[ci].cps <= (size_t)width) {
            sb_append(b, ch[ci].p, ch[ci].n);
            cur += ch[ci].cps;
            last_n = ch[ci].n;
            last_blank = ch[ci].blank;
            any = 1;
            ci++;
        }
        if (ci < nc && ch[ci].cps > (size_t)width) {
            /* _handle_long_word */
            size_t left = (size_t)width > cur ? (size_t)width - cur : 0;
            if (width < 1) left = 1;
            if (break_long) {
                /* the piece goes on the line even when empty: then it is
                 * the one dropped as white space, not the chunk before */
                size_t cut = u8_offset(ch[ci].p, ch[ci].n, left);
                sb_append(b, ch[ci].p, cut);
                last_n = cut;
                last_blank = all_space(ch[ci].p, cut);
                any = 1;
                ch[ci].p += cut;
                ch[ci].n -= cut;
                ch[ci].cps -= left;
                ch[ci].blank = all_space(ch[ci].p, ch[ci].n);
            } else if (!any) {
                sb_append(b, ch[ci].p, ch[ci].n);
                last_n = ch[ci].n;
                last_blank = ch[ci].blank;
                any = 1;
                ci++;
            }
        }
        if (any && last_blank) b->n -= last_n;
        if (b->n == line_start) b->n = first; /* an empty line is not a line */
        else lines++;
    }
    return 0;
}

/* wordwrap(width=79, break_long_words=True, wrapstring='\n',
 * break_on_hyphens=True): each of s.splitlines() wrapped on its own. Lines
 * with '-' are refused while break_on_hyphens is on: textwrap's hyphen
 * rules (lookbehinds over letters and em-dashes) are not copied. */
static int do_wordwrap(jctx *c, const node *at, val v, jargs *a, val *out)
{
    val *w = jn_arg(a, 0, "width"), *bl = jn_arg(a, 1, "break_long_words"),
        *ws = jn_arg(a, 2, "wrapstring"), *bh = jn_arg(a, 3, "break_on_hyphens");
    val nl = v_str("\n", 1), *sep = ws && ws->t != V_NONE ? ws : &nl;
    int64_t width = w ? (w->t == V_INT ? w->u.i : -1) : 79;
    if (v.t != V_STR) return jn_fail(c, at, "wordwrap expects a string, not %s", v_typename(&v));
    if (width <= 0) return jn_fail(c, at, "invalid width %lld (must be > 0)", (long long)(w && w->t == V_INT ? w->u.i : 0));
    if (sep->t != V_STR) return jn_fail(c, at, "wordwrap's wrapstring must be a string");
    if ((!bh || v_truthy(bh)) && memchr(v.u.s.p, '-', v.u.s.n))
        return jn_fail(c, at, "wordwrap of text with '-' breaks at hyphens by rules not supported here; "
                       "pass break_on_hyphens=false");
    vlist *lines;
    strbuf b = {0};
    if (splitlines(c, at, &v, 0, &lines)) return -1;
    for (size_t i = 0; i < lines->n; i++) {
        if (i) sb_append(&b, sep->u.s.p, sep->u.s.n);
        if (wrap_line(c, at, lines->items[i].u.s.p, lines->items[i].u.s.n, width, !bl || v_truthy(bl), sep, &b)) {
            sb_free(&b);
            return -1;
        }
    }
    return mkstr(c, at, &b, out);
}

static int apply_filter_or_test(jctx *c, const node *at, int is_test, const char *name, size_t n,
                                val v, jargs *rest, val *out)
{
    if (!is_test) return jn_filter(c, at, name, n, v, rest, out);
    int r;
    if (jn_test(c, at, name, n, v, rest, &r)) return -1;
    *out = v_bool(r);
    return 0;
}

/* select/reject/selectattr/rejectattr/map share the argument shapes:
 * (attr?, name?, *args). */
static int select_now(jctx *c, const node *at, val v, jargs *a, int attr, int keep, val *out)
{
    vlist *items, *res;
    if (jn_iterate(c, at, &v, &items)) return -1;
    if (!(res = v_list_new(c->ar, items->n))) return jn_oom(c, at);
    size_t first = 0;
    val *path = NULL;
    if (attr) {
        if (!a->npos) return jn_fail(c, at, "Missing parameter for attribute name");
        path = &a->pos[0];
        first = 1;
    }
    val *tname = first < a->npos ? &a->pos[first] : NULL;
    if (tname && tname->t != V_STR) return jn_fail(c, at, "test name must be a string");
    jargs rest = {.pos = a->pos + first + 1, .npos = a->npos > first + 1 ? a->npos - first - 1 : 0,
                  .kw = a->kw, .kwv = a->kwv, .nkw = a->nkw};
    for (size_t i = 0; i < items->n; i++) {
        val x = items->items[i], r;
        if (path && attr_path(c, at, x, path, &x)) return -1;
        if (tname) {
            if (apply_filter_or_test(c, at, 1, tname->u.s.p, tname->u.s.n, x, &rest, &r)) return -1;
        } else {
            r = x;
        }
        if (v_truthy(&r) == keep) res->items[res->n++] = items->items[i];
    }
    *out = mklist(res, V_LIST);
    return 0;
}

static int map_now(jctx *c, const node *at, val v, jargs *a, val *out)
{
    vlist *items, *res;
    if (jn_iterate(c, at, &v, &items)) return -1;
    if (!(res = v_list_new(c->ar, items->n))) return jn_oom(c, at);
    val *attr = jn_kwarg(a, "attribute");
    if (attr) {
        val *dflt = jn_kwarg(a, "default");
        for (size_t i = 0; i < items->n; i++) {
            val x;
            if (attr_path(c, at, items->items[i], attr, &x)) return -1;
            if (x.t == V_UNDEF && dflt) x = *dflt;
            res->items[res->n++] = x;
        }
    } else {
        if (!a->npos || a->pos[0].t != V_STR) return jn_fail(c, at, "map requires a filter argument");
        jargs rest = {.pos = a->pos + 1, .npos = a->npos - 1, .kw = a->kw, .kwv = a->kwv, .nkw = a->nkw};
        for (size_t i = 0; i < items->n; i++)
            if (jn_filter(c, at, a->pos[0].u.s.p, a->pos[0].u.s.n, items->items[i], &rest, &res->items[res->n++]))
                return -1;
    }
    *out = mklist(res, V_LIST);
    return 0;
}

static int unique_now(jctx *c, const node *at, val v, jargs *a, val *out);

/* A generator over input; the filter runs when it is first iterated. */
static int make_gen(jctx *c, const node *at, int kind, val input, jargs *a, int attr, int keep,
                    val *out)
{
    vgen *g = ar_alloc(c->ar, sizeof *g);
    jargs *ac = ar_alloc(c->ar, sizeof *ac);
    if (!g || !ac) return jn_oom(c, at);
    *ac = *a;
    g->kind = kind;
    g->input = input;
    g->args = ac;
    g->at = at;
    g->attr = attr;
    g->keep = keep;
    *out = (val){.t = (uint8_t)(V_GEN)};
    out->u.gen = g;
    return 0;
}

/* batch(linecount, fill_with) and slice(slices, fill_with): lists of
 * linecount items (the last padded with fill_with unless it is None), or
 * `slices` lists of near-equal length, the shorter ones padded. Both loops
 * are Jinja2's own, so odd counts (0, negative) give what Jinja2 gives. */
static int chunk_now(jctx *c, const node *at, val input, jargs *a, int by_slices, val *out)
{
    val *cnt = jn_arg(a, 0, by_slices ? "slices" : "linecount"), *fill = jn_arg(a, 1, "fill_with");
    vlist *in, *res = v_list_new(c->ar, 0), *tmp = NULL;
    if (!cnt || (cnt->t != V_INT && cnt->t != V_BOOL))
        return jn_fail(c, at, "%s expects an integer count", by_slices ? "slice" : "batch");
    int64_t k = inum(cnt);
    int pad = fill && fill->t != V_NONE;
    if (!res) return jn_oom(c, at);
    if (jn_iterate(c, at, &input, &in)) return -1;
    if (by_slices) {
        if (k == 0) return jn_fail(c, at, "integer division or modulo by zero");
        /* range(k) is empty for a negative k */
        int64_t len = (int64_t)in->n, per = k > 0 ? len / k : 0, extra = k > 0 ? len % k : 0, off = 0;
        for (int64_t i = 0; i < k; i++) {
            int64_t st = off + i * per;
            if (i < extra) off++;
            int64_t en = off + (i + 1) * per;
            if (!(tmp = v_list_new(c->ar, (size_t)(en - st) + 1))) return jn_oom(c, at);
            for (int64_t j = st; j < en; j++) tmp->items[tmp->n++] = in->items[j];
            if (pad && i >= extra) tmp->items[tmp->n++] = *fill;
            if (v_list_push(c->ar, res, mklist(tmp, V_LIST))) return jn_oom(c, at);
        }
    } else {
        if (!(tmp = v_list_new(c->ar, 0))) return jn_oom(c, at);
        for (size_t i = 0; i < in->n; i++) {
            if ((int64_t)tmp->n == k) {
                if (v_list_push(c->ar, res, mklist(tmp, V_LIST))) return jn_oom(c, at);
                if (!(tmp = v_list_new(c->ar, 0))) return jn_oom(c, at);
            }
            if (v_list_push(c->ar, tmp, in->items[i])) return jn_oom(c, at);
        }
        if (tmp->n) {
            while (pad && (int64_t)tmp->n < k)
                if (v_list_push(c->ar, tmp, *fill)) return jn_oom(c, at);
            if (v_list_push(c->ar, res, mklist(tmp, V_LIST))) return jn_oom(c, at);
        }
    }
    *out = mklist(res, V_LIST);
    return 0;
}

int jn_gen_items(jctx *c, vgen *g, vlist **out)
{
    if (g->items) { *out = g->items; return 0; }
    val res = {.t = V_LIST};
    int rc = 0;
    if ((g->kind == GEN_SELECT || g->kind == GEN_MAP) && !v_truthy(&g->input)) {
        /* jinja's `if value:` before iterating: a falsy input yields nothing */
        res.u.l = v_list_new(c->ar, 0);
        if (!res.u.l) return jn_oom(c, g->at);
    } else switch (g->kind) {
    case GEN_SELECT: rc = select_now(c, g->at, g->input, g->args, g->attr, g->keep, &res); break;
    case GEN_MAP: rc = map_now(c, g->at, g->input, g->args, &res); break;
    case GEN_UNIQUE: rc = unique_now(c, g->at, g->input, g->args, &res); break;
    case GEN_BATCH: case GEN_SLICE: rc = chunk_now(c, g->at, g->input, g->args, g->kind == GEN_SLICE, &res); break;
    case GEN_ITEMS:
        if (g->input.t == V_UNDEF) res.u.l = v_list_new(c->ar, 0);
        else if (g->input.t != V_DICT) return jn_fail(c, g->at, "Can only get item pairs from a mapping.");
        else rc = dict_items(c, g->at, g->input.u.d, 2, SUB_LIST, &res);
        if (!rc && !res.u.l) return jn_oom(c, g->at);
        break;
    default: { /* GEN_REVERSED */
        vlist *in;
        if ((rc = jn_iterate(c, g->at, &g->input, &in))) break;
        if (!(res.u.l = v_list_new(c->ar, in->n))) return jn_oom(c, g->at);
        for (size_t i = 0; i < in->n; i++) res.u.l->items[i] = in->items[in->n - 1 - i];
        res.u.l->n = in->n;
    }
    }
    if (rc) return -1;
    g->items = res.u.l;
    *out = g->items;
    return 0;
}

static int do_tojson(jctx *c, const node *at, val v, jargs *a, val *out)
{
    /* transformers: tojson(x, ensure_ascii=False, indent=None,
     * separators=None, sort_keys=False) */
    val *ea = jn_arg(a, 0, "ensure_ascii"), *ind = jn_arg(a, 1, "indent"),
        *sep = jn_arg(a, 2, "separators"), *sk = jn_arg(a, 3, "sort_keys");
    int indent = -1;
    if (ind && ind->t != V_NONE) {
        if (!is_num(ind)) return jn_fail(c, at, "tojson: indent must be an integer");
        indent = (int)inum(ind);
        if (indent < 0) indent = 0;
        if (indent > 64) indent = 64;
    }
    const char *isep = indent >= 0 ? "," : ", ", *ksep = ": ";
    char ib[16], kb[16];
    if (sep && sep->t != V_NONE) {
        if ((sep->t != V_TUPLE && sep->t != V_LIST) || sep->u.l->n != 2 ||
            sep->u.l->items[0].t != V_STR || sep->u.l->items[1].t != V_STR ||
            sep->u.l->items[0].u.s.n >= sizeof ib || sep->u.l->items[1].u.s.n >= sizeof kb)
            return jn_fail(c, at, "tojson: separators must be a pair of short strings");
        snprintf(ib, sizeof ib, "%.*s", (int)sep->u.l->items[0].u.s.n, sep->u.l->items[0].u.s.p);
        snprintf(kb, sizeof kb, "%.*s", (int)sep->u.l->items[1].u.s.n, sep->u.l->items[1].u.s.p);
        isep = ib;
        ksep = kb;
    }
    strbuf b = {0};
    char err[200];
    if (v_to_json(&v, ea && v_truthy(ea), indent, isep, ksep, sk && v_truthy(sk), &b, 0, err, sizeof err)) {
        sb_free(&b);
        if (v.t == V_UNDEF) return jn_undef_fail(c, at, &v);
        return jn_fail(c, at, "%s", err);
    }
    return mkstr(c, at, &b, out);
}

static int do_indent(jctx *c, const node *at, val v, jargs *a, val *out)
{
    val *w = jn_arg(a, 0, "width"), *first = jn_arg(a, 1, "first"), *blank = jn_arg(a, 2, "blank");
    strbuf ind = {0}, b = {0};
    if (w && w->t == V_STR) sb_append(&ind, w->u.s.p, w->u.s.n);
    else for (int64_t i = 0, k = w && is_num(w) ? inum(w) : 4; i < k && i < 256; i++) sb_putc(&ind, ' ');
    val s;
    if (jn_str(c, at, &v, &s)) { sb_free(&ind); return -1; }
    /* jinja appends "\n" before splitlines, so a trailing newline survives */
    strbuf tmp = {0};
    sb_append(&tmp, s.u.s.p, s.u.s.n);
    sb_putc(&tmp, '\n');
    val sv = v_strdup(c->ar, tmp.p, tmp.n);
    sb_free(&tmp);
    vlist *lines;
    if (sv.t != V_STR) { sb_free(&ind); return jn_oom(c, at); }
    if (splitlines(c, at, &sv, 0, &lines)) { sb_free(&ind); return -1; }
    int bl = blank && v_truthy(blank);
    if (first && v_truthy(first)) sb_append(&b, ind.p ? ind.p : "", ind.n);
    for (size_t i = 0; i < lines->n; i++) {
        val *ln = &lines->items[i];
        if (i) {
            sb_putc(&b, '\n');
            if (bl || ln->u.s.n) sb_append(&b, ind.p ? ind.p : "", ind.n);
        }
        sb_append(&b, ln->u.s.p, ln->u.s.n);
    }
    sb_free(&ind);
    return mkstr(c, at, &b, out);
}

static int do_round(jctx *c, const node *at, val v, jargs *a, val *out)
{
    val *pr = jn_arg(a, 0, "precision"), *method = jn_arg(a, 1, "method");
    int64_t p = pr && is_num(pr) ? inum(pr) : 0;
    if (!is_num(&v)) return jn_fail(c, at, "type %s doesn't define __round__ method", v_typename(&v));
    if (p < 0 || p > 30) return jn_fail(c, at, "round: precision out of range");
    double x = fnum(&v), m = pow(10, (double)p);
    if (method && method->t == V_STR && !(method->u.s.n == 6 && !memcmp(method->u.s.p, "common", 6))) {
        if (method->u.s.n == 5 && !memcmp(method->u.s.p, "floor", 5)) { *out = v_float(floor(x * m) / m); return 0; }
        if (method->u.s.n == 4 && !memcmp(method->u.s.p, "ceil", 4)) { *out = v_float(ceil(x * m) / m); return 0; }
        return jn_fail(c, at, "method must be common, ceil or floor");
    }
    if (v.t != V_FLOAT) { *out = v_int(inum(&v)); return 0; }
    /* Python rounds the exact binary value half-to-even, as printf does */
    char buf[400];
    snprintf(buf, sizeof buf, "%.*f", (int)p, x);
    *out = v_float(strtod(buf, NULL));
    return 0;
}

static int to_int(jctx *c, const node *at, val v, jargs *a, val *out)
{
    val *d = jn_arg(a, 0, "default"), *base = jn_arg(a, 1, "base");
    val dflt = d ? *d : v_int(0);
    if (v.t == V_INT || v.t == V_BOOL) { *out = v_int(inum(&v)); return 0; }
    if (v.t == V_FLOAT) {
        if (!isfinite(v.u.f) || fabs(v.u.f) > 9.2e18) { *out = dflt; return 0; }
        *out = v_int((int64_t)v.u.f);
        return 0;
    }
    if (v.t == V_STR) {
        char buf[128];
        val t = strip(&v, NULL, 3);
        if (t.u.s.n == 0 || t.u.s.n >= sizeof buf) { *out = dflt; return 0; }
        size_t k = 0;
        for (size_t i = 0; i < t.u.s.n; i++) if (t.u.s.p[i] != '_') buf[k++] = t.u.s.p[i];
        buf[k] = 0;
        char *end;
        errno = 0;
        long long x = strtoll(buf, &end, base && is_num(base) ? (int)inum(base) : 10);
        if (!*end && !errno) { *out = v_int(x); return 0; }
        double f = strtod(buf, &end);
        if (!*end && isfinite(f) && fabs(f) < 9.2e18) { *out = v_int((int64_t)f); return 0; }
    }
    *out = dflt;
    return 0;
}

/* Python's float(v) for numbers and numeric strings; -1 for the rest. */
static int py_float(const val *v, double *f)
{
    if (is_num(v)) { *f = fnum(v); return 0; }
    if (v->t != V_STR) return -1;
    char buf[128];
    val t = strip(v, NULL, 3);
    if (!t.u.s.n || t.u.s.n >= sizeof buf) return -1;
    memcpy(buf, t.u.s.p, t.u.s.n);
    buf[t.u.s.n] = 0;
    char *end;
    *f = strtod(buf, &end);
    return *end ? -1 : 0;
}

static int to_float(jctx *c, const node *at, val v, jargs *a, val *out)
{
    val *d = jn_arg(a, 0, "default");
    double f;
    *out = !py_float(&v, &f) ? v_float(f) : d ? *d : v_float(0.0);
    return 0;
}

/* filesizeformat(binary=False): "1 Byte", "N Bytes", else one decimal in
 * the largest unit (kB..YB by 1000, KiB..YiB by 1024) below the value. */
static int do_filesizeformat(jctx *c, const node *at, val v, jargs *a, val *out)
{
    static const char *const DEC[] = {"kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"};
    static const char *const BIN[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"};
    /* 1000 ** (i + 2) as Python's int-to-float division rounds it */
    static const double POW1000[] = {1e6, 1e9, 1e12, 1e15, 1e18, 1e21, 1e24, 1e27};
    val *bin = jn_arg(a, 0, "binary");
    int binary = bin && v_truthy(bin);
    double bytes, base = binary ? 1024 : 1000, unit = 0;
    if (py_float(&v, &bytes))
        return jn_fail(c, at, "filesizeformat expects a number, not %s", v_typename(&v));
    strbuf b = {0};
    if (bytes == 1) sb_puts(&b, "1 Byte");
    else if (bytes < base) sb_printf(&b, "%lld Bytes", (long long)bytes);
    else {
        int i = 0;
        for (; i < 8; i++) {
            unit = binary ? ldexp(1.0, 10 * (i + 2)) : POW1000[i];
            if (bytes < unit) break;
        }
        if (i == 8) i = 7;
        sb_printf(&b, "%.1f %s", base * bytes / unit, (binary ? BIN : DEC)[i]);
    }
    return mkstr(c, at, &b, out);
}

static int unique_now(jctx *c, const node *at, val v, jargs *a, val *out)
{
    val *cs = jn_arg(a, 0, "case_sensitive"), *attr = jn_arg(a, 1, "attribute");
    vlist *items, *res;
    if (jn_iterate(c, at, &v, &items)) return -1;
    val *seen = ar_alloc(c->ar, (items->n + 1) * sizeof *seen);
    if (!seen || !(res = v_list_new(c->ar, items->n))) return jn_oom(c, at);
    size_t ns = 0;
    for (size_t i = 0; i < items->n; i++) {
        val k = items->items[i];
        if (attr && attr_path(c, at, k, attr, &k)) return -1;
        if (key_lower(c, &k, cs && v_truthy(cs), &k)) return jn_oom(c, at);
        int dup = 0;
        for (size_t j = 0; j < ns && !dup; j++)
            if ((dup = v_equal(&seen[j], &k)) < 0) return jn_too_deep(c, at);
        if (dup) continue;
        seen[ns++] = k;
        res->items[res->n++] = items->items[i];
    }
    *out = mklist(res, V_LIST);
    return 0;
}

static int do_minmax(jctx *c, const node *at, val v, jargs *a, int want_max, val *out)
{
    val *cs = jn_arg(a, 0, "case_sensitive"), *attr = jn_arg(a, 1, "attribute");
    vlist *items;
    if (jn_iterate(c, at, &v, &items)) return -1;
    if (!items->n) { *out = jn_undef(c, "No aggregated item, sequence was empty."); return 0; }
    val best = items->items[0], bk;
    if (attr && attr_path(c, at, best, attr, &bk)) return -1;
    if (!attr) bk = best;
    if (key_lower(c, &bk, cs && v_truthy(cs), &bk)) return jn_oom(c, at);
    sortctx s = {c, at, 0, 0};
    for (size_t i = 1; i < items->n; i++) {
        val k = items->items[i];
        if (attr && attr_path(c, at, k, attr, &k)) return -1;
        if (key_lower(c, &k, cs && v_truthy(cs), &k)) return jn_oom(c, at);
        int r = cmp_vals(&s, &k, &bk);
        if (s.err) return -1;
        if (want_max ? r > 0 : r < 0) { best = items->items[i]; bk = k; }
    }
    *out = best;
    return 0;
}

static int do_sum(jctx *c, const node *at, val v, jargs *a, val *out)
{
    val *attr = jn_arg(a, 0, "attribute"), *start = jn_arg(a, 1, "start");
    vlist *items;
    if (jn_iterate(c, at, &v, &items)) return -1;
    int fl = start && start->t == V_FLOAT;
    int64_t si = start ? inum(start) : 0;
    double sf = start ? fnum(start) : 0;
    for (size_t i = 0; i < items->n; i++) {
        val x = items->items[i];
        if (attr && attr->t != V_NONE && attr_path(c, at, x, attr, &x)) return -1;
        if (!is_num(&x)) return jn_fail(c, at, "unsupported operand type(s) for +: 'int' and '%s'", v_typename(&x));
        if (x.t == V_FLOAT) fl = 1;
        sf += fnum(&x);
        if (__builtin_add_overflow(si, inum(&x), &si)) return jn_fail(c, at, "integer result too large");
    }
    *out = fl ? v_float(sf) : v_int(si);
    return 0;
}

int jn_filter(jctx *c, const node *at, const char *name, size_t n, val v, jargs *a, val *out)
{
    val *a0 = jn_arg(a, 0, NULL);
    strbuf b = {0};
    if (NAMEIS("safe")) return as_markup(jn_str(c, at, &v, out), out);
    if (NAMEIS("escape") || NAMEIS("e")) return jn_escape(c, at, &v, out);
    if (NAMEIS("forceescape")) {
        /* escape(str(value)): escapes a Markup's text too */
        val s;
        if (jn_str(c, at, &v, &s)) return -1;
        s.sub = 0;
        return jn_escape(c, at, &s, out);
    }
    if (NAMEIS("default") || NAMEIS("d")) {
        val *dv = jn_arg(a, 0, "default_value"), *boolean = jn_arg(a, 1, "boolean");
        int use = v.t == V_UNDEF || (boolean && v_truthy(boolean) && !v_truthy(&v));
        *out = use ? (dv ? *dv : v_str("", 0)) : v;
        return 0;
    }
    if (NAMEIS("tojson")) return do_tojson(c, at, v, a, out);
    if (NAMEIS("string")) return jn_str(c, at, &v, out);
    if (NAMEIS("length") || NAMEIS("count")) {
        switch (v.t) {
        case V_GEN: return jn_fail(c, at, "object of type '%s' has no len()", v_typename(&v));
        case V_STR: *out = v_int((int64_t)u8_len(v.u.s.p, v.u.s.n)); return 0;
        case V_LIST: case V_TUPLE: *out = v_int((int64_t)v.u.l->n); return 0;
        case V_DICT: *out = v_int((int64_t)v.u.d->n); return 0;
        case V_UNDEF: *out = v_int(0); return 0;
        default: return jn_fail(c, at, "object of type '%s' has no len()", v_typename(&v));
        }
    }
    if (NAMEIS("first") && v.t == V_GEN) {
        /* next(iter(gen)): takes one item */
        vlist *all;
        if (jn_gen_items(c, v.u.gen, &all)) return -1;
        *out = v.u.gen->pos < all->n ? all->items[v.u.gen->pos++]
                                     : jn_undef(c, "No first item, sequence was empty.");
        return 0;
    }
    if (NAMEIS("last") && v.t == V_GEN)
        return jn_fail(c, at, "'%s' object is not reversible", v_typename(&v));
    if (NAMEIS("first") || NAMEIS("last")) {
        vlist *items;
        if (jn_iterate(c, at, &v, &items)) return -1;
        if (!items->n) {
            *out = jn_undef(c, name[0] == 'f' ? "No first item, sequence was empty." : "No last item, sequence was empty.");
            return 0;
        }
        *out = items->items[name[0] == 'f' ? 0 : items->n - 1];
        return 0;
    }
    if (NAMEIS("list")) {
        vlist *items;
        if (jn_iterate(c, at, &v, &items)) return -1;
        *out = mklist(items, V_LIST);
        return 0;
    }
    if (NAMEIS("items")) return make_gen(c, at, GEN_ITEMS, v, a, 0, 0, out);
    /* int(Undefined) raises UndefinedError, which jinja does not catch */
    if ((NAMEIS("int") || NAMEIS("float")) && v.t == V_UNDEF) return jn_undef_fail(c, at, &v);
    if (NAMEIS("int")) return to_int(c, at, v, a, out);
    if (NAMEIS("float")) return to_float(c, at, v, a, out);
    if (NAMEIS("abs")) {
        if (!is_num(&v)) return jn_fail(c, at, "bad operand type for abs(): '%s'", v_typename(&v));
        *out = v.t == V_FLOAT ? v_float(fabs(v.u.f)) : v_int(inum(&v) < 0 ? -inum(&v) : inum(&v));
        return 0;
    }
    if (NAMEIS("round")) return do_round(c, at, v, a, out);
    if (NAMEIS("map")) return make_gen(c, at, GEN_MAP, v, a, 0, 0, out);
    if (NAMEIS("select")) return make_gen(c, at, GEN_SELECT, v, a, 0, 1, out);
    if (NAMEIS("reject")) return make_gen(c, at, GEN_SELECT, v, a, 0, 0, out);
    if (NAMEIS("selectattr")) return make_gen(c, at, GEN_SELECT, v, a, 1, 1, out);
    if (NAMEIS("rejectattr")) return make_gen(c, at, GEN_SELECT, v, a, 1, 0, out);
    if (NAMEIS("unique")) return make_gen(c, at, GEN_UNIQUE, v, a, 0, 0, out);
    if (NAMEIS("min")) return do_minmax(c, at, v, a, 0, out);
    if (NAMEIS("max")) return do_minmax(c, at, v, a, 1, out);
    if (NAMEIS("sum")) return do_sum(c, at, v, a, out);
    if (NAMEIS("sort")) {
        val *rev = jn_arg(a, 0, "reverse"), *cs = jn_arg(a, 1, "case_sensitive"), *attr = jn_arg(a, 2, "attribute");
        vlist *items;
        if (jn_iterate(c, at, &v, &items)) return -1;
        return sort_list(c, at, items, attr, NULL, cs && v_truthy(cs), rev && v_truthy(rev), -1, out);
    }
    if (NAMEIS("groupby")) return do_groupby(c, at, v, a, out);
    if (NAMEIS("truncate")) return do_truncate(c, at, v, a, out);
    if (NAMEIS("urlencode")) return do_urlencode(c, at, v, out);
    if (NAMEIS("striptags")) return do_striptags(c, at, v, out);
    if (NAMEIS("pprint")) return do_pprint(c, at, v, out);
    if (NAMEIS("wordwrap")) return do_wordwrap(c, at, v, a, out);
    if (NAMEIS("filesizeformat")) return do_filesizeformat(c, at, v, a, out);
    if (NAMEIS("batch")) return make_gen(c, at, GEN_BATCH, v, a, 0, 0, out);
    if (NAMEIS("slice")) return make_gen(c, at, GEN_SLICE, v, a, 0, 0, out);
    if (NAMEIS("dictsort")) {
        val *cs = jn_arg(a, 0, "case_sensitive"), *by = jn_arg(a, 1, "by"), *rev = jn_arg(a, 2, "reverse");
        if (v.t != V_DICT) return jn_fail(c, at, "dictsort expects a mapping");
        val items;
        if (dict_items(c, at, v.u.d, 2, SUB_LIST, &items)) return -1;
        int byv = by && by->t == V_STR && by->u.s.n == 5 && !memcmp(by->u.s.p, "value", 5);
        return sort_list(c, at, items.u.l, NULL, NULL, cs && v_truthy(cs), rev && v_truthy(rev), byv, out);
    }
    if (NAMEIS("reverse")) {
        if (v.t == V_STR) {
            vlist *chars;
            if (jn_iterate(c, at, &v, &chars)) return -1;
            for (size_t i = chars->n; i-- > 0;) sb_append(&b, chars->items[i].u.s.p, chars->items[i].u.s.n);
            return mkstr(c, at, &b, out);
        }
        /* reversed(): an iterator over lists, tuples and dicts; anything
         * else (a generator) is read into a list first */
        if (v.t == V_LIST || v.t == V_TUPLE || v.t == V_DICT || v.t == V_UNDEF)
            return make_gen(c, at, GEN_REVERSED, v, a, 0, 0, out);
        vlist *items, *res;
        if (jn_iterate(c, at, &v, &items)) return -1;
        if (!(res = v_list_new(c->ar, items->n))) return jn_oom(c, at);
        for (size_t i = 0; i < items->n; i++) res->items[i] = items->items[items->n - 1 - i];
        res->n = items->n;
        *out = mklist(res, V_LIST);
        return 0;
    }
    if (NAMEIS("join")) {
        val *sep = jn_arg(a, 0, "d"), *attr = jn_arg(a, 1, "attribute");
        vlist *items;
        if (jn_iterate(c, at, &v, &items)) return -1;
        for (size_t i = 0; i < items->n; i++) {
            val x = items->items[i];
            if (attr && attr->t != V_NONE && attr_path(c, at, x, attr, &x)) { sb_free(&b); return -1; }
            if ((i && sep && v_to_str(sep, &b)) || v_to_str(&x, &b)) {
                sb_free(&b);
                return jn_too_deep(c, at);
            }
        }
        return mkstr(c, at, &b, out);
    }
    if (NAMEIS("attr")) {
        if (!a0 || a0->t != V_STR) return jn_fail(c, at, "attr expects an attribute name");
        /* getattr only: unlike `.name`, no fallback to a dict's items */
        if (v.t == V_DICT && !jn_method_kind(V_DICT, a0->u.s.p, a0->u.s.n)) {
            *out = jn_undef(c, "'dict object' has no attribute '%.*s'", (int)a0->u.s.n, a0->u.s.p);
            return 0;
        }
        return jn_getattr(c, at, v, a0->u.s.p, a0->u.s.n, out);
    }
    if (NAMEIS("indent")) {
        /* jinja appends "\n" to the value first: only strings survive that */
        if (v.t != V_STR)
            return jn_fail(c, at, "unsupported operand type(s) for +=: '%s' and 'str'", v_typename(&v));
        return markup_if(v.sub == SUB_MARKUP, do_indent(c, at, v, a, out), out);
    }
    /* the rest work on str(value); trim, upper, lower, capitalize, center
     * and format call the str's own method, so a Markup stays one */
    val s;
    if (jn_str(c, at, &v, &s)) return -1;
    int mk = s.sub == SUB_MARKUP;
    if (NAMEIS("trim")) { *out = strip(&s, jn_arg(a, 0, "chars"), 3); return markup_if(mk, 0, out); }
    if (NAMEIS("upper")) { casemap(s.u.s.p, s.u.s.n, CASE_UPPER, &b); return markup_if(mk, mkstr(c, at, &b, out), out); }
    if (NAMEIS("lower")) { casemap(s.u.s.p, s.u.s.n, CASE_LOWER, &b); return markup_if(mk, mkstr(c, at, &b, out), out); }
    if (NAMEIS("title")) { casemap(s.u.s.p, s.u.s.n, CASE_TITLE_JINJA, &b); return mkstr(c, at, &b, out); }
    if (NAMEIS("capitalize")) { casemap(s.u.s.p, s.u.s.n, CASE_CAPITALIZE, &b); return markup_if(mk, mkstr(c, at, &b, out), out); }
    s.sub = 0; /* |replace and the others give a plain str */
    if (NAMEIS("replace")) {
        val *old = jn_arg(a, 0, "old"), *new = jn_arg(a, 1, "new"), *cnt = jn_arg(a, 2, "count");
        val os, ns;
        if (!old || !new) return jn_fail(c, at, "replace expects old and new strings");
        if (jn_str(c, at, old, &os) || jn_str(c, at, new, &ns)) return -1;
        return replace(c, at, &s, &os, &ns, cnt && is_num(cnt) ? inum(cnt) : -1, out);
    }
    if (NAMEIS("format")) {
        /* "%s, %s"|format(a, b) is Python's "%s, %s" % (a, b) */
        vlist *args = v_list_new(c->ar, a->npos);
        if (!args) return jn_oom(c, at);
        if (a->npos) memcpy(args->items, a->pos, a->npos * sizeof(val));
        args->n = a->npos;
        val tup = mklist(args, V_TUPLE);
        s.sub = (uint8_t)(mk ? SUB_MARKUP : 0);
        return jn_percent_format(c, at, &s, &tup, out);
    }
    if (NAMEIS("center")) {
        val *w = jn_arg(a, 0, "width");
        int64_t width = w && is_num(w) ? inum(w) : 80, len = (int64_t)u8_len(s.u.s.p, s.u.s.n);
        if (width > 4096) width = 4096;
        if (width <= len) { *out = s; return markup_if(mk, 0, out); }
        /* Python puts the odd space on the right unless width is odd */
        int64_t pad = width - len, left = pad / 2 + (pad & width & 1);
        for (int64_t i = 0; i < left; i++) sb_putc(&b, ' ');
        sb_append(&b, s.u.s.p, s.u.s.n);
        for (int64_t i = 0; i < pad - left; i++) sb_putc(&b, ' ');
        return markup_if(mk, mkstr(c, at, &b, out), out);
    }
    if (NAMEIS("wordcount")) {
        /* len(re.findall(r"\w+", s)): runs of letters, digits and '_' */
        int64_t words = 0;
        int in_word = 0;
        for (size_t i = 0; i < s.u.s.n;) {
            uint32_t cp;
            int k = utf8_decode(s.u.s.p + i, s.u.s.n - i, &cp);
            if (k <= 0) { k = 1; cp = 0; }
            int w = cp == '_' || p_alnum(cp);
            words += w && !in_word;
            in_word = w;
            i += (size_t)k;
        }
        *out = v_int(words);
        return 0;
    }
    return jn_fail(c, at, "no filter named '%.*s'", (int)n, name);
}
