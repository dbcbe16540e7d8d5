/* The evaluator: walks the AST with Jinja2's scoping (a for body gets a
 * fresh frame each iteration; if does not scope; macros see the frame they
 * were defined in) and Python's operator semantics, under the limits that
 * keep an untrusted template from running forever or eating memory. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <stdarg.h>
#include <math.h>

#include "template/jinja.h"
#include "template/template.h"

enum { X_OK = 0, X_ERR = -1, X_BREAK = 1, X_CONTINUE = 2 };

int jn_fail(jctx *c, const node *at, const char *fmt, ...)
{
    char msg[INFERD_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (at) err_set(c->e, "template error at line %d: %s", at->line, msg);
    else err_set(c->e, "template error: %s", msg);
    return -1;
}

int jn_oom(jctx *c, const node *at)
{
    return jn_fail(c, at, "the template used more than its memory limit of %zu bytes",
                   c->mem_limit);
}

int jn_too_deep(jctx *c, const node *at)
{
    return jn_fail(c, at, "a value nests lists and dicts deeper than %d levels", JN_MAX_DEPTH);
}

int jn_undef_fail(jctx *c, const node *at, const val *u)
{
    return jn_fail(c, at, "%.*s", (int)u->u.s.n, u->u.s.p ? u->u.s.p : "undefined value");
}

val jn_undef(jctx *c, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
    val s = v_strdup(c->ar, msg, (size_t)n);
    val u = {.t = V_UNDEF};
    if (s.t == V_STR) u.u.s = s.u.s;
    return u;
}

int jn_str(jctx *c, const node *at, const val *v, val *out)
{
    if (v->t == V_STR) { *out = *v; return 0; }
    strbuf b = {0};
    if (v_to_str(v, &b)) {
        sb_free(&b);
        return jn_too_deep(c, at);
    }
    *out = v_strdup(c->ar, b.p ? b.p : "", b.n);
    sb_free(&b);
    return out->t == V_STR ? 0 : jn_oom(c, at);
}

val *jn_kwarg(jargs *a, const char *name)
{
    for (size_t i = 0; i < a->nkw; i++)
        if (a->kw[i]->name_len == strlen(name) && !memcmp(a->kw[i]->name, name, a->kw[i]->name_len))
            return &a->kwv[i];
    return NULL;
}

val *jn_arg(jargs *a, size_t i, const char *name)
{
    if (i < a->npos) return &a->pos[i];
    return name ? jn_kwarg(a, name) : NULL;
}

/* ---- variables ---- */
static jframe *frame_new(jctx *c, jframe *parent)
{
    jframe *f = ar_alloc(c->ar, sizeof *f);
    if (!f || !(f->vars = v_dict_new(c->ar, 0))) return NULL;
    f->parent = parent;
    return f;
}

static int set_var(jctx *c, const node *at, const char *name, size_t n, val v)
{
    if (v_dict_set(c->ar, c->f->vars, v_str(name, n), v)) return jn_oom(c, at);
    return 0;
}

static const struct { const char *name; int fn; } GLOBALS[] = {
    {"range", FN_RANGE}, {"dict", FN_DICT}, {"namespace", FN_NAMESPACE},
    {"raise_exception", FN_RAISE}, {"strftime_now", FN_STRFTIME}, {"cycler", FN_CYCLER},
    {"joiner", FN_JOINER}, {NULL, 0},
};

static val lookup(jctx *c, const char *name, size_t n)
{
    for (jframe *f = c->f; f; f = f->parent) {
        val *v = v_dict_gets(f->vars, name, n);
        if (v) return *v;
    }
    for (int i = 0; GLOBALS[i].name; i++)
        if (strlen(GLOBALS[i].name) == n && !memcmp(GLOBALS[i].name, name, n)) {
            val v = {.t = V_FUNC};
            v.u.fn = GLOBALS[i].fn;
            return v;
        }
    return jn_undef(c, "'%.*s' is undefined", (int)(n > 200 ? 200 : n), name);
}

/* ---- iteration ---- */
/* Materializes what a for loop or a filter iterates: list and tuple items,
 * dict keys, string characters; undefined iterates as empty. */
int jn_iterate(jctx *c, const node *at, const val *v, vlist **out)
{
    switch (v->t) {
    case V_LIST: case V_TUPLE: *out = v->u.l; return 0;
    case V_UNDEF: *out = v_list_new(c->ar, 0); return *out ? 0 : jn_oom(c, at);
    case V_GEN: {
        /* consumes what is left of the generator */
        vgen *g = v->u.gen;
        vlist *all, *rest;
        if (jn_gen_items(c, g, &all)) return -1;
        if (!(rest = v_list_new(c->ar, all->n - g->pos))) return jn_oom(c, at);
        memcpy(rest->items, all->items + g->pos, (all->n - g->pos) * sizeof(val));
        rest->n = all->n - g->pos;
        g->pos = all->n;
        *out = rest;
        return 0;
    }
    case V_DICT: {
        vlist *l = v_list_new(c->ar, v->u.d->n);
        if (!l) return jn_oom(c, at);
        memcpy(l->items, v->u.d->keys, v->u.d->n * sizeof(val));
        l->n = v->u.d->n;
        *out = l;
        return 0;
    }
    case V_STR: {
        size_t n = u8_len(v->u.s.p, v->u.s.n);
        vlist *l = v_list_new(c->ar, n);
        if (!l) return jn_oom(c, at);
        const char *p = v->u.s.p;
        for (size_t i = 0; i < v->u.s.n;) {
            size_t k = 1;
            while (i + k < v->u.s.n && ((unsigned char)p[i + k] & 0xC0) == 0x80) k++;
            l->items[l->n++] = v_str(p + i, k);
            i += k;
        }
        *out = l;
        return 0;
    }
    default:
        return jn_fail(c, at, "'%s' object is not iterable", v_typename(v));
    }
}

/* ---- attribute and item access (jinja's sandboxed getattr/getitem) ---- */
static const char *obj_type_repr(const val *v)
{
    switch (v->t) {
    case V_NONE: return "None";
    case V_DICT: return "dict object";
    case V_LIST: return "list object";
    case V_TUPLE: return "tuple object";
    case V_STR: return "str object";
    case V_INT: return "int object";
    case V_FLOAT: return "float object";
    case V_BOOL: return "bool object";
    case V_NS: return "jinja2.utils.Namespace object";
    case V_LOOP: return "jinja2.runtime.LoopContext object";
    case V_CYCLER: return v->u.cy->joiner ? "jinja2.utils.Joiner object" : "jinja2.utils.Cycler object";
    default: return "object";
    }
}

static int make_method(jctx *c, const node *at, val obj, const char *name, size_t n, val *out)
{
    int k = jn_method_kind(obj.t, name, n);
    if (k < 0)
        return jn_fail(c, at, "access to attribute '%.*s' of '%s' object is unsafe.",
                       (int)n, name, v_typename(&obj));
    vmethod *m = ar_alloc(c->ar, sizeof *m);
    char *nm = ar_alloc(c->ar, n + 1);
    if (!m || !nm) return jn_oom(c, at);
    memcpy(nm, name, n);
    m->self = obj;
    m->name = nm;
    *out = (val){.t = (uint8_t)(V_METHOD)};
    out->u.meth = m;
    return 0;
}

static int loop_attr(jctx *c, const node *at, vloop *lp, const char *name, size_t n, val *out)
{
    size_t len = lp->items->n, i = lp->index0;
#define IS(s) (n == strlen(s) && !memcmp(name, s, n))
    if (IS("index")) *out = v_int((int64_t)i + 1);
    else if (IS("index0")) *out = v_int((int64_t)i);
    else if (IS("revindex")) *out = v_int((int64_t)(len - i));
    else if (IS("revindex0")) *out = v_int((int64_t)(len - i - 1));
    else if (IS("first")) *out = v_bool(i == 0);
    else if (IS("last")) *out = v_bool(i + 1 == len);
    else if (IS("length")) *out = v_int((int64_t)len);
    else if (IS("depth")) *out = v_int((int64_t)lp->depth);
    else if (IS("depth0")) *out = v_int((int64_t)lp->depth - 1);
    else if (IS("previtem")) *out = i > 0 ? lp->items->items[i - 1] : jn_undef(c, "there is no previous item");
    else if (IS("nextitem")) *out = i + 1 < len ? lp->items->items[i + 1] : jn_undef(c, "there is no next item");
    else if (IS("cycle") || IS("changed")) {
        vmethod *m = ar_alloc(c->ar, sizeof *m);
        if (!m) return jn_oom(c, at);
        m->self.t = V_LOOP;
        m->self.u.loop = lp;
        m->name = IS("cycle") ? "cycle" : "changed";
        *out = (val){.t = (uint8_t)(V_METHOD)};
        out->u.meth = m;
    } else *out = jn_undef(c, "'%s' has no attribute '%.*s'", obj_type_repr(&(val){.t = V_LOOP}), (int)n, name);
#undef IS
    return 0;
}

int jn_getattr(jctx *c, const node *at, val obj, const char *name, size_t n, val *out)
{
    if (obj.t == V_UNDEF) return jn_undef_fail(c, at, &obj);
    if (n > 0 && name[0] == '_') {
        /* the sandbox hides private and dunder attributes */
        *out = jn_undef(c, "'%s' has no attribute '%.*s'", obj_type_repr(&obj), (int)n, name);
        return 0;
    }
    if (obj.t == V_LOOP) return loop_attr(c, at, obj.u.loop, name, n, out);
    if (obj.t == V_NS) {
        val *v = v_dict_gets(obj.u.d, name, n);
        *out = v ? *v : jn_undef(c, "'%s' has no attribute '%.*s'", obj_type_repr(&obj), (int)n, name);
        return 0;
    }
    if (obj.t == V_CYCLER && !obj.u.cy->joiner) {
        vcycler *cy = obj.u.cy;
        if (n == 7 && !memcmp(name, "current", 7)) { *out = cy->items->items[cy->pos]; return 0; }
        if (n == 5 && !memcmp(name, "items", 5)) { *out = (val){.t = V_TUPLE}; out->u.l = cy->items; return 0; }
        if ((n == 4 && !memcmp(name, "next", 4)) || (n == 5 && !memcmp(name, "reset", 5)))
            return make_method(c, at, obj, name, n, out);
    }
    if (jn_method_kind(obj.t, name, n)) return make_method(c, at, obj, name, n, out);
    if (obj.t == V_TUPLE && obj.u.l->group && obj.u.l->n == 2) {
        if (n == 7 && !memcmp(name, "grouper", 7)) { *out = obj.u.l->items[0]; return 0; }
        if (n == 4 && !memcmp(name, "list", 4)) { *out = obj.u.l->items[1]; return 0; }
    }
    if (obj.t == V_DICT) {
        val *v = v_dict_gets(obj.u.d, name, n);
        if (v) { *out = *v; return 0; }
    }
    *out = jn_undef(c, "'%s' has no attribute '%.*s'", obj_type_repr(&obj), (int)(n > 200 ? 200 : n), name);
    return 0;
}

/* Python index i of a sequence of length len, or -1 if out of range. */
static int64_t norm_index(int64_t i, size_t len)
{
    if (i < 0) i += (int64_t)len;
    return i < 0 || i >= (int64_t)len ? -1 : i;
}

int jn_getitem(jctx *c, const node *at, val obj, val key, val *out)
{
    if (obj.t == V_UNDEF) return jn_undef_fail(c, at, &obj);
    int is_int = key.t == V_INT || key.t == V_BOOL;
    int64_t ki = key.t == V_INT ? key.u.i : key.u.b;
    if ((obj.t == V_LIST || obj.t == V_TUPLE) && !obj.sub && is_int) {
        int64_t i = norm_index(ki, obj.u.l->n);
        if (i >= 0) { *out = obj.u.l->items[i]; return 0; }
    } else if (obj.t == V_STR && is_int) {
        size_t len = u8_len(obj.u.s.p, obj.u.s.n);
        int64_t i = norm_index(ki, len);
        if (i >= 0) {
            size_t a = u8_offset(obj.u.s.p, obj.u.s.n, (size_t)i);
            size_t b = u8_offset(obj.u.s.p, obj.u.s.n, (size_t)i + 1);
            *out = v_str(obj.u.s.p + a, b - a);
            out->sub = obj.sub; /* Markup()[i] is a Markup */
            return 0;
        }
    } else if (obj.t == V_DICT) {
        val *v = v_dict_get(obj.u.d, &key);
        if (v) { *out = *v; return 0; }
    }
    if (key.t == V_STR) return jn_getattr(c, at, obj, key.u.s.p, key.u.s.n, out);
    if (obj.t == V_NONE) {
        *out = jn_undef(c, "'None' has no attribute");
        return 0;
    }
    strbuf b = {0};
    v_repr(&key, &b); /* a key too deep to show in full: its first 100 bytes do */
    *out = jn_undef(c, "%s has no element %.*s", obj_type_repr(&obj), (int)(b.n > 100 ? 100 : b.n), b.p ? b.p : "");
    sb_free(&b);
    return 0;
}

/* Python slice indices for a sequence of len: start, stop, step -> count. */
static int slice_indices(jctx *c, const node *at, const val *vs, size_t len,
                         int64_t *start, int64_t *step, size_t *count)
{
    int64_t st = 1, lo, hi;
    if (vs[2].t != V_NONE) {
        if (vs[2].t != V_INT) return jn_fail(c, at, "slice indices must be integers or None");
        st = vs[2].u.i;
        if (st == 0) return jn_fail(c, at, "slice step cannot be zero");
    }
    int64_t L = (int64_t)len;
    int64_t def_lo = st > 0 ? 0 : L - 1, def_hi = st > 0 ? L : -1;
    for (int k = 0; k < 2; k++) {
        if (vs[k].t != V_NONE && vs[k].t != V_INT)
            return jn_fail(c, at, "slice indices must be integers or None");
    }
    if (vs[0].t == V_NONE) lo = def_lo;
    else {
        lo = vs[0].u.i;
        if (lo < 0) lo += L;
        if (lo < 0) lo = st > 0 ? 0 : -1;
        if (lo >= L) lo = st > 0 ? L : L - 1;
    }
    if (vs[1].t == V_NONE) hi = def_hi;
    else {
        hi = vs[1].u.i;
        if (hi < 0) hi += L;
        if (hi < 0) hi = st > 0 ? 0 : -1;
        if (hi >= L) hi = st > 0 ? L : L - 1;
    }
    int64_t n = 0;
    if (st > 0 && hi > lo) n = (hi - lo + st - 1) / st;
    if (st < 0 && lo > hi) n = (lo - hi + (-st) - 1) / (-st);
    *start = lo;
    *step = st;
    *count = (size_t)n;
    return 0;
}

static int eval(jctx *c, node *n, val *out);

static int eval_slice(jctx *c, node *n, val *out)
{
    val obj, vs[3] = {V_NONE_VAL, V_NONE_VAL, V_NONE_VAL};
    if (eval(c, n->a, &obj)) return -1;
    node *parts[3] = {n->b, n->c, n->d};
    for (int k = 0; k < 3; k++)
        if (parts[k] && eval(c, parts[k], &vs[k])) return -1;
    if (obj.t == V_UNDEF) return jn_undef_fail(c, n, &obj);
    int64_t start, step;
    size_t count;
    if ((obj.t == V_LIST || obj.t == V_TUPLE) && !obj.sub) {
        if (slice_indices(c, n, vs, obj.u.l->n, &start, &step, &count)) return -1;
        vlist *l = v_list_new(c->ar, count);
        if (!l) return jn_oom(c, n);
        for (size_t i = 0; i < count; i++) l->items[i] = obj.u.l->items[start + (int64_t)i * step];
        l->n = count;
        *out = (val){.t = (uint8_t)(obj.t)};
        out->u.l = l;
        return 0;
    }
    if (obj.t == V_STR) {
        const char *p = obj.u.s.p;
        size_t len = u8_len(p, obj.u.s.n);
        if (slice_indices(c, n, vs, len, &start, &step, &count)) return -1;
        if (len == obj.u.s.n && step == 1) {
            *out = v_str(p + start, count);
            out->sub = obj.sub;
            return 0;
        }
        /* offsets of every code point, then gather */
        size_t *off = malloc((len + 1) * sizeof *off);
        if (!off) return jn_oom(c, n);
        size_t k = 0;
        for (size_t i = 0; i < obj.u.s.n; i++)
            if (((unsigned char)p[i] & 0xC0) != 0x80) off[k++] = i;
        off[len] = obj.u.s.n;
        strbuf b = {0};
        for (size_t i = 0; i < count; i++) {
            int64_t ci = start + (int64_t)i * step;
            sb_append(&b, p + off[ci], off[ci + 1] - off[ci]);
        }
        free(off);
        *out = v_strdup(c->ar, b.p ? b.p : "", b.n);
        sb_free(&b);
        if (out->t != V_STR) return jn_oom(c, n);
        out->sub = obj.sub;
        return 0;
    }
    /* jinja compiles slices to plain Python subscription: no undefined */
    return jn_fail(c, n, "'%s' object is not subscriptable", v_typename(&obj));
}

/* ---- operators ---- */
static int is_num(const val *v) { return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; }
static double num(const val *v) { return v->t == V_FLOAT ? v->u.f : v->t == V_INT ? (double)v->u.i : v->u.b; }
static int64_t inum(const val *v) { return v->t == V_INT ? v->u.i : v->u.b; }

static const char *OPSYM[] = {"+", "-", "*", "/", "//", "%", "**", "~",
                              "==", "!=", "<", "<=", ">", ">=", "in", "not in"};

static int concat_seq(jctx *c, const node *at, const val *a, const val *b, val *out)
{
    size_t n = a->u.l->n + b->u.l->n;
    vlist *l = v_list_new(c->ar, n);
    if (!l) return jn_oom(c, at);
    memcpy(l->items, a->u.l->items, a->u.l->n * sizeof(val));
    memcpy(l->items + a->u.l->n, b->u.l->items, b->u.l->n * sizeof(val));
    l->n = n;
    *out = (val){.t = (uint8_t)(a->t)};
    out->u.l = l;
    return 0;
}

static int repeat(jctx *c, const node *at, const val *s, int64_t times, val *out)
{
    if (times < 0) times = 0;
    if (s->t == V_STR) {
        if (s->u.s.n && (uint64_t)times > c->mem_limit / s->u.s.n) return jn_oom(c, at);
        size_t n = s->u.s.n * (size_t)times;
        char *p = ar_alloc_raw(c->ar, n + 1);
        if (!p) return jn_oom(c, at);
        for (int64_t i = 0; i < times; i++) memcpy(p + (size_t)i * s->u.s.n, s->u.s.p, s->u.s.n);
        *out = v_str(p, n);
        out->sub = s->sub;
        return 0;
    }
    size_t m = s->u.l->n;
    if (m && (uint64_t)times > c->mem_limit / (m * sizeof(val))) return jn_oom(c, at);
    vlist *l = v_list_new(c->ar, m * (size_t)times);
    if (!l) return jn_oom(c, at);
    for (int64_t i = 0; i < times; i++) memcpy(l->items + (size_t)i * m, s->u.l->items, m * sizeof(val));
    l->n = m * (size_t)times;
    *out = (val){.t = (uint8_t)(s->t)};
    out->u.l = l;
    return 0;
}

static int type_error(jctx *c, const node *at, int op, const val *a, const val *b)
{
    if (op == OP_ADD && a->t == V_STR)
        return jn_fail(c, at, "can only concatenate str (not \"%s\") to str", v_typename(b));
    if (op == OP_ADD && (a->t == V_LIST || a->t == V_TUPLE))
        return jn_fail(c, at, "can only concatenate %s (not \"%s\") to %s", v_typename(a),
                       v_typename(b), v_typename(a));
    return jn_fail(c, at, "unsupported operand type(s) for %s: '%s' and '%s'",
                   op == OP_POW ? "** or pow()" : OPSYM[op], v_typename(a), v_typename(b));
}

static int percent_format(jctx *c, const node *at, const val *fmt, const val *arg, val *out);

/* Python's `%` on a string, for the %s/%d/%i/%r forms templates use. On a
 * Markup, the string arguments are escaped and the result is a Markup
 * (markupsafe escapes what %s prints; %r of a string is the one form where
 * escaping first gives other text, and templates do not use it on Markup). */
int jn_percent_format(jctx *c, const node *at, const val *fmt, const val *arg, val *out)
{
    if (fmt->sub != SUB_MARKUP) return percent_format(c, at, fmt, arg, out);
    val one;
    vlist *l = NULL;
    if (arg->t == V_TUPLE) {
        l = v_list_new(c->ar, arg->u.l->n);
        if (!l) return jn_oom(c, at);
        for (size_t i = 0; i < arg->u.l->n; i++) {
            val *x = &arg->u.l->items[i];
            if (x->t == V_STR ? jn_escape(c, at, x, &l->items[i]) : (l->items[i] = *x, 0)) return -1;
        }
        l->n = arg->u.l->n;
        one = (val){.t = V_TUPLE};
        one.u.l = l;
    } else if (arg->t == V_STR) {
        if (jn_escape(c, at, arg, &one)) return -1;
    } else {
        one = *arg;
    }
    if (percent_format(c, at, fmt, &one, out)) return -1;
    out->sub = SUB_MARKUP;
    return 0;
}

static int percent_format(jctx *c, const node *at, const val *fmt, const val *arg, val *out)
{
    vlist one = {.items = (val *)arg, .n = 1};
    vlist *args = arg->t == V_TUPLE ? arg->u.l : &one;
    /* Python skips the "not all arguments converted" check when the right
     * operand has __getitem__ (lists, dicts, jinja's Undefined) */
    int mapping = arg->t == V_LIST || arg->t == V_DICT || arg->t == V_UNDEF;
    size_t ai = 0;
    strbuf b = {0};
    const char *p = fmt->u.s.p;
    size_t n = fmt->u.s.n;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '%') { sb_putc(&b, p[i]); continue; }
        if (++i >= n) { sb_free(&b); return jn_fail(c, at, "incomplete format"); }
        if (p[i] == '%') { sb_putc(&b, '%'); continue; }
        /* %[(key)][flags][width][.precision]type */
        val *v = NULL;
        if (p[i] == '(') {
            const char *close = memchr(p + i, ')', n - i);
            if (!close) { sb_free(&b); return jn_fail(c, at, "incomplete format key"); }
            if (arg->t != V_DICT) { sb_free(&b); return jn_fail(c, at, "format requires a mapping"); }
            v = v_dict_gets(arg->u.d, p + i + 1, (size_t)(close - p - i - 1));
            if (!v) { sb_free(&b); return jn_fail(c, at, "KeyError: '%.*s'", (int)(close - p - i - 1), p + i + 1); }
            i = (size_t)(close - p) + 1;
        }
        pyspec s = {.prec = -1, .align = '>'};
        for (; i < n && strchr("-+ #0", p[i]) && p[i]; i++) {
            if (p[i] == '-') s.align = '<';
            else if (p[i] == '0') s.zero = 1;
            else if (p[i] == '#') s.alt = 1;
            else if (s.sign != '+') s.sign = p[i];
        }
        while (i < n && p[i] >= '0' && p[i] <= '9' && s.width < 100000) s.width = s.width * 10 + (p[i++] - '0');
        if (i < n && p[i] == '.') {
            s.prec = 0;
            for (i++; i < n && p[i] >= '0' && p[i] <= '9' && s.prec < 100000; i++) s.prec = s.prec * 10 + (p[i] - '0');
        }
        if (i >= n) { sb_free(&b); return jn_fail(c, at, "incomplete format"); }
        char ty = p[i];
        if (!strchr("srdiufFeEgGxXoc", ty) || !ty) {
            sb_free(&b);
            return jn_fail(c, at, "unsupported format character '%c' (0x%x)", ty, (unsigned char)ty);
        }
        if (!v) {
            if (ai >= args->n) { sb_free(&b); return jn_fail(c, at, "not enough arguments for format string"); }
            v = &args->items[ai++];
        }
        if (s.zero && s.align == '>' && ty != 's' && ty != 'r') s.align = 0; /* zero-pad after the sign */
        s.type = ty == 'i' || ty == 'u' ? 'd' : ty;
        val num;
        if (strchr("xXoc", s.type) && v->t == V_FLOAT) {
            sb_free(&b);
            return jn_fail(c, at, "%%%c format: an integer is required, not float", ty);
        }
        if (s.type == 'd' && v->t == V_FLOAT) { num = v_int((int64_t)v->u.f); v = &num; }
        if (strchr("dxXoceEfFgG", s.type) && !is_num(v)) {
            sb_free(&b);
            return jn_fail(c, at, "%%%c format: a real number is required, not %s", ty, v_typename(v));
        }
        char err[160];
        if (py_format_value(v, &s, &b, err, sizeof err)) { sb_free(&b); return jn_fail(c, at, "%s", err); }
    }
    if (ai < args->n && !mapping) { sb_free(&b); return jn_fail(c, at, "not all arguments converted during string formatting"); }
    *out = v_strdup(c->ar, b.p ? b.p : "", b.n);
    sb_free(&b);
    return out->t == V_STR ? 0 : jn_oom(c, at);
}

/* a + b for strings. Templates build prompts with
 * `{% set ns.s = ns.s ~ piece %}` in a loop; copying every time would be
 * quadratic in memory (the arena never frees), so the newest long result
 * gets spare room and is extended in place when it is the left operand
 * again. Extending never changes the bytes an older, shorter value sees. */
static int str_concat(jctx *c, const node *at, const val *a, const val *b, val *out)
{
    size_t n = a->u.s.n + b->u.s.n;
    if (a->u.s.p == c->grow_p && a->u.s.n == c->grow_len && n <= c->grow_cap) {
        memcpy(c->grow_p + a->u.s.n, b->u.s.p, b->u.s.n);
        c->grow_len = n;
        *out = v_str(c->grow_p, n);
        return 0;
    }
    size_t cap = n < 1024 ? n : 2 * n;
    char *p = ar_alloc_raw(c->ar, cap + 1);
    if (!p && cap > n) p = ar_alloc_raw(c->ar, (cap = n) + 1);
    if (!p) return jn_oom(c, at);
    memcpy(p, a->u.s.p, a->u.s.n);
    memcpy(p + a->u.s.n, b->u.s.p, b->u.s.n);
    if (cap > n) {
        c->grow_p = p;
        c->grow_len = n;
        c->grow_cap = cap;
    }
    *out = v_str(p, n);
    return 0;
}

static int arith(jctx *c, const node *at, int op, const val *a, const val *b, val *out)
{
    if (op == OP_CONCAT) {
        val x, y;
        if (jn_str(c, at, a, &x) || jn_str(c, at, b, &y)) return -1;
        return str_concat(c, at, &x, &y, out);
    }
    if (op == OP_MOD && a->t == V_STR) return jn_percent_format(c, at, a, b, out);
    if (a->t == V_UNDEF) return jn_undef_fail(c, at, a);
    if (b->t == V_UNDEF) return jn_undef_fail(c, at, b);
    if (is_num(a) && is_num(b)) {
        int fl = a->t == V_FLOAT || b->t == V_FLOAT;
        int64_t x = fl ? 0 : inum(a), y = fl ? 0 : inum(b), r = 0;
        double fx = num(a), fy = num(b);
        switch (op) {
        case OP_ADD:
            if (fl) { *out = v_float(fx + fy); return 0; }
            if (__builtin_add_overflow(x, y, &r)) break;
            *out = v_int(r);
            return 0;
        case OP_SUB:
            if (fl) { *out = v_float(fx - fy); return 0; }
            if (__builtin_sub_overflow(x, y, &r)) break;
            *out = v_int(r);
            return 0;
        case OP_MUL:
            if (fl) { *out = v_float(fx * fy); return 0; }
            if (__builtin_mul_overflow(x, y, &r)) break;
            *out = v_int(r);
            return 0;
        case OP_DIV:
            if (fy == 0) return jn_fail(c, at, fl ? "float division by zero" : "division by zero");
            *out = v_float(fx / fy);
            return 0;
        case OP_FLOORDIV: case OP_MOD:
            if (fl) {
                if (fy == 0) return jn_fail(c, at, op == OP_MOD ? "float modulo" : "float floor division by zero");
                double m = fmod(fx, fy);
                if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
                if (m == 0) m = copysign(0.0, fy); /* Python: the divisor's sign */
                *out = v_float(op == OP_MOD ? m : floor(fx / fy));
                return 0;
            }
            if (y == 0) return jn_fail(c, at, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) break;
            {
                int64_t q = x / y, m = x % y;
                if (m != 0 && ((m < 0) != (y < 0))) { m += y; q -= 1; }
                *out = v_int(op == OP_MOD ? m : q);
            }
            return 0;
        case OP_POW:
            if (fl || y < 0) {
                if (fx == 0 && fy < 0) return jn_fail(c, at, "0.0 cannot be raised to a negative power");
                *out = v_float(pow(fx, fy));
                return 0;
            }
            if (x == 0 || x == 1) r = y == 0 ? 1 : x;
            else if (x == -1) r = y % 2 ? -1 : 1;
            else {
                r = 1;
                for (int64_t i = 0; i < y; i++)
                    if (__builtin_mul_overflow(r, x, &r)) return jn_fail(c, at, "integer result too large");
            }
            *out = v_int(r);
            return 0;
        }
        return jn_fail(c, at, "integer result too large");
    }
    if (op == OP_ADD && a->t == V_STR && b->t == V_STR && (a->sub || b->sub)) {
        /* Markup.__add__/__radd__: the plain side is escaped first */
        val x, y;
        if (jn_escape(c, at, a, &x) || jn_escape(c, at, b, &y) || str_concat(c, at, &x, &y, out))
            return -1;
        out->sub = SUB_MARKUP;
        return 0;
    }
    if (op == OP_ADD && a->t == V_STR && b->t == V_STR) return str_concat(c, at, a, b, out);
    if (op == OP_ADD && (a->t == V_LIST || a->t == V_TUPLE) && a->t == b->t && !a->sub && !b->sub)
        return concat_seq(c, at, a, b, out);
    if (op == OP_MUL) {
        if ((a->t == V_STR || ((a->t == V_LIST || a->t == V_TUPLE) && !a->sub)) && (b->t == V_INT || b->t == V_BOOL))
            return repeat(c, at, a, inum(b), out);
        if ((b->t == V_STR || ((b->t == V_LIST || b->t == V_TUPLE) && !b->sub)) && (a->t == V_INT || a->t == V_BOOL))
            return repeat(c, at, b, inum(a), out);
    }
    if (op == OP_MOD && a->t == V_STR) return jn_percent_format(c, at, a, b, out);
    return type_error(c, at, op, a, b);
}

static int contains(jctx *c, const node *at, const val *needle, const val *hay, int *out)
{
    switch (hay->t) {
    case V_STR:
        if (needle->t != V_STR)
            return jn_fail(c, at, "'in <string>' requires string as left operand, not %s", v_typename(needle));
        *out = needle->u.s.n == 0 ||
               memmem(hay->u.s.p, hay->u.s.n, needle->u.s.p, needle->u.s.n) != NULL;
        return 0;
    case V_LIST: case V_TUPLE:
        *out = 0;
        for (size_t i = 0; i < hay->u.l->n && !*out; i++)
            if ((*out = v_equal(&hay->u.l->items[i], needle)) < 0) return jn_too_deep(c, at);
        return 0;
    case V_DICT:
        if (needle->t == V_LIST || needle->t == V_DICT || needle->t == V_NS)
            return jn_fail(c, at, "unhashable type: '%s'", v_typename(needle));
        *out = v_dict_get(hay->u.d, needle) != NULL;
        return 0;
    case V_UNDEF: *out = 0; return 0;
    case V_GEN: {
        /* like Python, consumes the generator up to the match */
        vgen *g = hay->u.gen;
        vlist *all;
        if (jn_gen_items(c, g, &all)) return -1;
        *out = 0;
        while (g->pos < all->n && !*out)
            if ((*out = v_equal(&all->items[g->pos++], needle)) < 0) return jn_too_deep(c, at);
        return 0;
    }
    default:
        return jn_fail(c, at, "argument of type '%s' is not iterable", v_typename(hay));
    }
}

static int cmp3(jctx *c, const node *at, int op, const val *a, const val *b, int *r, int depth)
{
    if (is_num(a) && is_num(b)) {
        if (a->t != V_FLOAT && b->t != V_FLOAT) *r = (inum(a) > inum(b)) - (inum(a) < inum(b));
        else *r = (num(a) > num(b)) - (num(a) < num(b));
        return 0;
    }
    if (a->t == V_STR && b->t == V_STR) {
        size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        int k = memcmp(a->u.s.p, b->u.s.p, n);
        *r = k ? (k > 0) - (k < 0) : (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
        return 0;
    }
    if ((a->t == V_LIST || a->t == V_TUPLE) && a->t == b->t && !a->sub && !b->sub) {
        if (depth >= JN_MAX_DEPTH) return jn_too_deep(c, at);
        size_t n = a->u.l->n < b->u.l->n ? a->u.l->n : b->u.l->n;
        for (size_t i = 0; i < n; i++) {
            int eq = v_equal(&a->u.l->items[i], &b->u.l->items[i]);
            if (eq < 0) return jn_too_deep(c, at);
            if (eq) continue;
            return cmp3(c, at, op, &a->u.l->items[i], &b->u.l->items[i], r, depth + 1);
        }
        *r = (a->u.l->n > b->u.l->n) - (a->u.l->n < b->u.l->n);
        return 0;
    }
    if (a->t == V_UNDEF) return jn_undef_fail(c, at, a);
    if (b->t == V_UNDEF) return jn_undef_fail(c, at, b);
    return jn_fail(c, at, "'%s' not supported between instances of '%s' and '%s'",
                   OPSYM[op], v_typename(a), v_typename(b));
}

int jn_compare(jctx *c, const node *at, int op, const val *a, const val *b, int *out)
{
    int r = 0;
    switch (op) {
    case OP_EQ: case OP_NE:
        if ((r = v_equal(a, b)) < 0) return jn_too_deep(c, at);
        *out = op == OP_EQ ? r : !r;
        return 0;
    case OP_IN: return contains(c, at, a, b, out);
    case OP_NOTIN:
        if (contains(c, at, a, b, out)) return -1;
        *out = !*out;
        return 0;
    }
    if (cmp3(c, at, op, a, b, &r, 0)) return -1;
    *out = op == OP_LT ? r < 0 : op == OP_LE ? r <= 0 : op == OP_GT ? r > 0 : r >= 0;
    return 0;
}

/* ---- calls ---- */
static int eval_args(jctx *c, node *n, jargs *a)
{
    memset(a, 0, sizeof *a);
    if (n->args.n) {
        if (!(a->pos = ar_alloc(c->ar, n->args.n * sizeof(val)))) return jn_oom(c, n);
        for (size_t i = 0; i < n->args.n; i++)
            if (eval(c, n->args.v[i], &a->pos[i])) return -1;
        a->npos = n->args.n;
    }
    if (n->kwargs.n) {
        if (!(a->kwv = ar_alloc(c->ar, n->kwargs.n * sizeof(val)))) return jn_oom(c, n);
        for (size_t i = 0; i < n->kwargs.n; i++)
            if (eval(c, n->kwargs.v[i]->a, &a->kwv[i])) return -1;
        a->kw = n->kwargs.v;
        a->nkw = n->kwargs.n;
    }
    return 0;
}

static int exec_body(jctx *c, nodelist *body, strbuf *out);

/* Appends rendered text. Buffers being filled (the output and every macro
 * or block capture under way) count against the memory limit too. */
static int emit(jctx *c, const node *at, strbuf *out, const char *p, size_t n)
{
    if (out->n + n > c->max_output)
        return jn_fail(c, at, "the template output exceeds its limit of %zu bytes", c->max_output);
    if (c->live_out + n + c->ar->used > c->mem_limit) return jn_oom(c, at);
    sb_append(out, p, n);
    c->live_out += n;
    return 0;
}

/* Renders body into a string value (macro calls, block set, filter). */
static int capture(jctx *c, const node *at, nodelist *body, val *out)
{
    strbuf b = {0};
    int x = exec_body(c, body, &b);
    c->live_out -= b.n;
    if (x == X_ERR) { sb_free(&b); return -1; }
    *out = v_strdup(c->ar, b.p ? b.p : "", b.n);
    sb_free(&b);
    return out->t == V_STR ? 0 : jn_oom(c, at);
}

static int call_macro(jctx *c, const node *at, vmacro *m, jargs *a, val *out)
{
    node *def = m->def;
    if (++c->depth > c->max_depth)
        return jn_fail(c, at, "macro calls nested deeper than %d (runaway recursion?)", c->max_depth);
    jframe *saved = c->f, *f = frame_new(c, m->closure);
    if (!f) return jn_oom(c, at);
    c->f = f;
    size_t np = def->args.n;
    vlist *varargs = v_list_new(c->ar, 0);
    vdict *kwargs = v_dict_new(c->ar, 0);
    int rc = -1;
    if (!varargs || !kwargs) { jn_oom(c, at); goto out; }
    for (size_t i = 0; i < np; i++) {
        node *prm = def->args.v[i];
        val v;
        if (i < a->npos) v = a->pos[i];
        else {
            val *kv = jn_kwarg(a, "");
            for (size_t k = 0; k < a->nkw; k++)
                if (a->kw[k]->name_len == prm->name_len && !memcmp(a->kw[k]->name, prm->name, prm->name_len))
                    kv = &a->kwv[k];
            if (kv) v = *kv;
            else if (prm->a) { if (eval(c, prm->a, &v)) goto out; }
            else v = jn_undef(c, "parameter '%.*s' was not provided", (int)prm->name_len, prm->name);
        }
        if (set_var(c, at, prm->name, prm->name_len, v)) goto out;
    }
    for (size_t i = np; i < a->npos; i++)
        if (v_list_push(c->ar, varargs, a->pos[i])) { jn_oom(c, at); goto out; }
    for (size_t k = 0; k < a->nkw; k++) {
        int is_param = 0;
        for (size_t i = 0; i < np; i++)
            if (a->kw[k]->name_len == def->args.v[i]->name_len &&
                !memcmp(a->kw[k]->name, def->args.v[i]->name, a->kw[k]->name_len)) is_param = 1;
        if (!is_param && v_dict_set(c->ar, kwargs, v_str(a->kw[k]->name, a->kw[k]->name_len), a->kwv[k])) {
            jn_oom(c, at);
            goto out;
        }
    }
    val vv = {.t = V_TUPLE}, kv = {.t = V_DICT};
    vv.u.l = varargs;
    kv.u.d = kwargs;
    if (set_var(c, at, "varargs", 7, vv) || set_var(c, at, "kwargs", 6, kv)) goto out;
    if (m->caller.t == V_MACRO && set_var(c, at, "caller", 6, m->caller)) goto out;
    if (capture(c, at, &def->body, out)) goto out;
    rc = 0;
out:
    c->f = saved;
    c->depth--;
    return rc;
}

static int call_loop(jctx *c, const node *at, vloop *lp, jargs *a, val *out);

int jn_call(jctx *c, const node *at, val fn, jargs *a, val *out)
{
    switch (fn.t) {
    case V_MACRO: return call_macro(c, at, fn.u.m, a, out);
    case V_FUNC: return jn_func(c, at, fn.u.fn, a, out);
    case V_METHOD: return jn_method(c, at, fn.u.meth, a, out);
    case V_LOOP: return call_loop(c, at, fn.u.loop, a, out);
    case V_CYCLER:
        if (!fn.u.cy->joiner) return jn_fail(c, at, "'Cycler' object is not callable");
        if (a->npos || a->nkw) return jn_fail(c, at, "a joiner takes no arguments");
        *out = fn.u.cy->used ? fn.u.cy->sep : v_str("", 0);
        fn.u.cy->used = 1;
        return 0;
    case V_UNDEF: return jn_undef_fail(c, at, &fn);
    default: return jn_fail(c, at, "'%s' object is not callable", v_typename(&fn));
    }
}

/* ---- expressions ---- */
static int eval_seq(jctx *c, node *n, int type, val *out)
{
    vlist *l = v_list_new(c->ar, n->args.n);
    if (!l) return jn_oom(c, n);
    for (size_t i = 0; i < n->args.n; i++)
        if (eval(c, n->args.v[i], &l->items[i])) return -1;
    l->n = n->args.n;
    *out = (val){.t = (uint8_t)((uint8_t)type)};
    out->u.l = l;
    return 0;
}

static int eval_node(jctx *c, node *n, val *out);

/* `1 + 1 + ... + 1` parses as a loop but nests left-deep: bound the C
 * recursion it costs here rather than in the parser. An eval level takes
 * ~1.2 KB of stack under ASan: 2,000 overflowed the 1 MiB stack of an HTTP
 * connection thread, 300 leave room for macro calls and value walks. */
#define MAX_EVAL_DEPTH 300

static int eval(jctx *c, node *n, val *out)
{
    if (++c->edepth > MAX_EVAL_DEPTH) {
        c->edepth--;
        return jn_fail(c, n, "expression nested too deeply (more than %d levels)", MAX_EVAL_DEPTH);
    }
    int rc = eval_node(c, n, out);
    c->edepth--;
    return rc;
}

static int eval_node(jctx *c, node *n, val *out)
{
    val a, b;
    switch (n->kind) {
    case E_CONST: *out = n->v; return 0;
    case E_NAME: *out = lookup(c, n->name, n->name_len); return 0;
    case E_LIST: return eval_seq(c, n, V_LIST, out);
    case E_TUPLE: return eval_seq(c, n, V_TUPLE, out);
    case E_DICT: {
        vdict *d = v_dict_new(c->ar, n->args.n);
        if (!d) return jn_oom(c, n);
        for (size_t i = 0; i < n->args.n; i++) {
            if (eval(c, n->args.v[i], &a) || eval(c, n->kwargs.v[i], &b)) return -1;
            if (a.t == V_LIST || a.t == V_DICT || a.t == V_UNDEF)
                return jn_fail(c, n, "unhashable type: '%s'", v_typename(&a));
            if (v_dict_set(c->ar, d, a, b)) return jn_oom(c, n);
        }
        *out = (val){.t = (uint8_t)(V_DICT)};
        out->u.d = d;
        return 0;
    }
    case E_ATTR:
        if (eval(c, n->a, &a)) return -1;
        return jn_getattr(c, n, a, n->name, n->name_len, out);
    case E_ITEM:
        if (eval(c, n->a, &a) || eval(c, n->b, &b)) return -1;
        return jn_getitem(c, n, a, b, out);
    case E_SLICE: return eval_slice(c, n, out);
    case E_BIN:
        if (eval(c, n->a, &a) || eval(c, n->b, &b)) return -1;
        return arith(c, n, n->op, &a, &b, out);
    case E_CMP: {
        if (eval(c, n->args.v[0], &a)) return -1;
        int r = 1;
        for (size_t i = 0; i < n->kwargs.n; i++) {
            if (eval(c, n->args.v[i + 1], &b)) return -1;
            if (jn_compare(c, n->kwargs.v[i], n->kwargs.v[i]->op, &a, &b, &r)) return -1;
            if (!r) break;
            a = b;
        }
        *out = v_bool(r);
        return 0;
    }
    case E_AND:
        if (eval(c, n->a, &a)) return -1;
        if (!v_truthy(&a)) { *out = a; return 0; }
        return eval(c, n->b, out);
    case E_OR:
        if (eval(c, n->a, &a)) return -1;
        if (v_truthy(&a)) { *out = a; return 0; }
        return eval(c, n->b, out);
    case E_NOT:
        if (eval(c, n->a, &a)) return -1;
        *out = v_bool(!v_truthy(&a));
        return 0;
    case E_NEG: case E_POS:
        if (eval(c, n->a, &a)) return -1;
        if (a.t == V_UNDEF) return jn_undef_fail(c, n, &a);
        if (!is_num(&a))
            return jn_fail(c, n, "bad operand type for unary %c: '%s'", n->kind == E_NEG ? '-' : '+', v_typename(&a));
        if (n->kind == E_POS) *out = a.t == V_BOOL ? v_int(a.u.b) : a;
        else if (a.t == V_FLOAT) *out = v_float(-a.u.f);
        else if (inum(&a) == INT64_MIN) return jn_fail(c, n, "integer result too large");
        else *out = v_int(-inum(&a));
        return 0;
    case E_COND:
        if (eval(c, n->a, &a)) return -1;
        if (v_truthy(&a)) return eval(c, n->b, out);
        if (n->c) return eval(c, n->c, out);
        *out = jn_undef(c, "the inline if-expression on line %d evaluated to false and no else section was defined.", n->line);
        return 0;
    case E_CALL: {
        jargs args;
        if (eval(c, n->a, &a) || eval_args(c, n, &args)) return -1;
        return jn_call(c, n, a, &args, out);
    }
    case E_FILTER: {
        jargs args;
        if (eval(c, n->a, &a) || eval_args(c, n, &args)) return -1;
        return jn_filter(c, n, n->name, n->name_len, a, &args, out);
    }
    case E_TEST: {
        jargs args;
        int r;
        if (eval(c, n->a, &a) || eval_args(c, n, &args)) return -1;
        if (jn_test(c, n, n->name, n->name_len, a, &args, &r)) return -1;
        *out = v_bool(n->neg ? !r : r);
        return 0;
    }
    }
    return jn_fail(c, n, "internal error: bad expression node %d", n->kind);
}

/* ---- statements ---- */

/* Binds a for/set target: a name, or a tuple of names unpacking a sequence. */
static int assign(jctx *c, node *target, val v)
{
    if (target->kind == E_NAME) return set_var(c, target, target->name, target->name_len, v);
    if (target->kind == E_ATTR) {
        val ns = lookup(c, target->a->name, target->a->name_len);
        if (ns.t != V_NS)
            return jn_fail(c, target, "can only assign attributes of a namespace() object, not of '%s'", v_typename(&ns));
        if (v_dict_set(c->ar, ns.u.d, v_str(target->name, target->name_len), v)) return jn_oom(c, target);
        return 0;
    }
    vlist *items;
    if (v.t == V_UNDEF) return jn_undef_fail(c, target, &v);
    if (jn_iterate(c, target, &v, &items)) return -1;
    if (items->n != target->args.n)
        return jn_fail(c, target, items->n > target->args.n ? "too many values to unpack (expected %zu)"
                                                            : "not enough values to unpack (expected %zu)",
                       target->args.n);
    for (size_t i = 0; i < items->n; i++)
        if (assign(c, target->args.v[i], items->items[i])) return -1;
    return 0;
}

/* One level of a for loop over `it`, its frames children of scope; depth
 * counts the levels of a recursive loop (loop.depth). */
static int run_for(jctx *c, node *n, val it, jframe *scope, size_t depth, strbuf *out)
{
    vlist *items;
    if (jn_iterate(c, n, &it, &items)) return X_ERR;
    jframe *saved = c->f;
    if (n->c) {
        /* {% for x in xs if cond %}: loop.length counts the kept items */
        vlist *kept = v_list_new(c->ar, items->n);
        if (!kept) return jn_oom(c, n);
        jframe *f = frame_new(c, scope);
        if (!f) return jn_oom(c, n);
        for (size_t i = 0; i < items->n; i++) {
            if (++c->iters > c->max_iters)
                return jn_fail(c, n, "the template ran more than %ld loop iterations", c->max_iters);
            f->vars->n = 0;
            c->f = f;
            val cond;
            int rc = assign(c, n->a, items->items[i]) || eval(c, n->c, &cond);
            c->f = saved;
            if (rc) return X_ERR;
            if (v_truthy(&cond)) kept->items[kept->n++] = items->items[i];
        }
        items = kept;
    }
    if (!items->n) {
        c->f = frame_new(c, scope);
        int x = c->f ? exec_body(c, &n->orelse, out) : jn_oom(c, n);
        c->f = saved;
        return x;
    }
    vloop *lp = ar_alloc(c->ar, sizeof *lp);
    if (!lp) return jn_oom(c, n);
    lp->items = items;
    lp->depth = depth; /* jinja counts depth only across recursive loops */
    lp->rec = n->neg ? n : NULL;
    lp->scope = scope;
    val lv = {.t = V_LOOP};
    lv.u.loop = lp;
    /* one frame for all iterations, emptied each time: what jinja's
     * per-iteration scope means, without memory growing with the count */
    jframe *f = frame_new(c, scope);
    if (!f) return jn_oom(c, n);
    for (size_t i = 0; i < items->n; i++) {
        if (++c->iters > c->max_iters)
            return jn_fail(c, n, "the template ran more than %ld loop iterations", c->max_iters);
        lp->index0 = i;
        f->vars->n = 0;
        c->f = f;
        int x = set_var(c, n, "loop", 4, lv) ? X_ERR : assign(c, n->a, items->items[i]) ? X_ERR
              : exec_body(c, &n->body, out);
        c->f = saved;
        if (x == X_ERR) return X_ERR;
        if (x == X_BREAK) break;
    }
    return X_OK;
}

static int exec_for(jctx *c, node *n, strbuf *out)
{
    val it;
    if (eval(c, n->b, &it)) return X_ERR;
    return run_for(c, n, it, c->f, 1, out);
}

/* loop(items) in a recursive for: the loop body again, one level deeper,
 * rendered to a string. Each level is C recursion, so the levels count
 * against the same bound as macro calls. */
static int call_loop(jctx *c, const node *at, vloop *lp, jargs *a, val *out)
{
    if (!lp->rec)
        return jn_fail(c, at, "The loop must have the 'recursive' marker to be called recursively.");
    if (a->npos != 1 || a->nkw)
        return jn_fail(c, at, "loop() of a recursive for takes exactly one iterable");
    if (++c->depth > c->max_depth) {
        c->depth--;
        return jn_fail(c, at, "recursive loop nested deeper than %d levels (runaway recursion?)",
                       c->max_depth);
    }
    strbuf b = {0};
    int x = run_for(c, lp->rec, a->pos[0], lp->scope, lp->depth + 1, &b);
    c->depth--;
    c->live_out -= b.n;
    if (x == X_ERR) { sb_free(&b); return -1; }
    *out = v_strdup(c->ar, b.p ? b.p : "", b.n);
    sb_free(&b);
    return out->t == V_STR ? 0 : jn_oom(c, at);
}

static int exec_filter_chain(jctx *c, node *chain, val in, val *out)
{
    /* the chain was parsed over a placeholder E_CONST: rebuild by walking */
    if (chain->kind != E_FILTER) { *out = in; return 0; }
    val base;
    if (exec_filter_chain(c, chain->a, in, &base)) return -1;
    jargs args;
    if (eval_args(c, chain, &args)) return -1;
    return jn_filter(c, chain, chain->name, chain->name_len, base, &args, out);
}

static int exec_stmt(jctx *c, node *n, strbuf *out)
{
    val v;
    switch (n->kind) {
    case S_TEXT: return emit(c, n, out, n->name, n->name_len);
    case S_OUTPUT: {
        if (eval(c, n->a, &v)) return X_ERR;
        if (v.t == V_STR) return emit(c, n, out, v.u.s.p, v.u.s.n);
        strbuf b = {0};
        int rc = v_to_str(&v, &b) ? jn_too_deep(c, n) : emit(c, n, out, b.p ? b.p : "", b.n);
        sb_free(&b);
        return rc;
    }
    case S_IF:
        if (eval(c, n->a, &v)) return X_ERR;
        return exec_body(c, v_truthy(&v) ? &n->body : &n->orelse, out);
    case S_FOR: return exec_for(c, n, out);
    case S_SET:
        if (eval(c, n->b, &v)) return X_ERR;
        return assign(c, n->a, v);
    case S_SETBLOCK:
        if (capture(c, n, &n->body, &v)) return X_ERR;
        if (n->b && exec_filter_chain(c, n->b, v, &v)) return X_ERR;
        return assign(c, n->a, v);
    case S_MACRO: {
        vmacro *m = ar_alloc(c->ar, sizeof *m);
        if (!m) return jn_oom(c, n);
        m->def = n;
        m->closure = c->f;
        v.t = V_MACRO;
        v.u.m = m;
        return set_var(c, n, n->name, n->name_len, v);
    }
    case S_CALLBLOCK: {
        /* the body becomes `caller`, passed into the called macro */
        vmacro *cm = ar_alloc(c->ar, sizeof *cm);
        if (!cm) return jn_oom(c, n);
        cm->def = n;
        cm->closure = c->f;
        val fn, callerv = {.t = V_MACRO};
        callerv.u.m = cm;
        jargs args;
        if (eval(c, n->a->a, &fn) || eval_args(c, n->a, &args)) return X_ERR;
        if (fn.t != V_MACRO) return jn_fail(c, n, "call block: '%s' is not a macro", v_typename(&fn));
        vmacro with = *fn.u.m;
        with.caller = callerv;
        if (call_macro(c, n, &with, &args, &v)) return X_ERR;
        return emit(c, n, out, v.u.s.p, v.u.s.n);
    }
    case S_BREAK: return X_BREAK;
    case S_CONTINUE: return X_CONTINUE;
    case S_FILTERBLOCK: {
        if (capture(c, n, &n->body, &v)) return X_ERR;
        if (exec_filter_chain(c, n->b, v, &v)) return X_ERR;
        val s;
        if (jn_str(c, n, &v, &s)) return X_ERR;
        return emit(c, n, out, s.u.s.p, s.u.s.n);
    }
    case S_WITH: {
        jframe *saved = c->f;
        val *vals = ar_alloc(c->ar, (n->args.n + 1) * sizeof *vals);
        if (!vals) return jn_oom(c, n);
        for (size_t i = 0; i < n->args.n; i++)
            if (eval(c, n->kwargs.v[i], &vals[i])) return X_ERR;
        if (!(c->f = frame_new(c, saved))) { c->f = saved; return jn_oom(c, n); }
        int x = X_OK;
        for (size_t i = 0; i < n->args.n && x == X_OK; i++)
            if (assign(c, n->args.v[i], vals[i])) x = X_ERR;
        if (x == X_OK) x = exec_body(c, &n->body, out);
        c->f = saved;
        return x;
    }
    case S_BODY: return exec_body(c, &n->body, out);
    }
    return jn_fail(c, n, "internal error: bad statement node %d", n->kind);
}

static int exec_body(jctx *c, nodelist *body, strbuf *out)
{
    for (size_t i = 0; i < body->n; i++) {
        int x = exec_stmt(c, body->v[i], out);
        if (x != X_OK) return x;
    }
    return X_OK;
}

/* ---- public API ---- */
struct tmpl_template {
    arena ar;
    nodelist body;
};

int tmpl_compile(const char *src, size_t len, tmpl_template **out, inferd_error *e)
{
    tmpl_template *t = calloc(1, sizeof *t);
    if (!t) { err_set(e, "out of memory"); return -1; }
    t->ar.cap = 256u << 20;
    if (jn_parse(&t->ar, src, len, &t->body, e)) {
        tmpl_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void tmpl_free(tmpl_template *t)
{
    if (!t) return;
    ar_free(&t->ar);
    free(t);
}

const tmpl_limits TMPL_DEFAULT_LIMITS = {
    .max_output = 16u << 20,
    .max_memory = 256u << 20,
    .max_iterations = 1000000,
    .max_depth = 64,
};

int tmpl_render_limited(const tmpl_template *t, json_t *vars, const tmpl_limits *lim,
                        char **out, size_t *len, int *raised, inferd_error *e)
{
    if (!lim) lim = &TMPL_DEFAULT_LIMITS;
    arena ar = {.cap = lim->max_memory};
    jctx c = {.ar = &ar, .max_iters = lim->max_iterations, .max_depth = lim->max_depth,
              .max_output = lim->max_output, .mem_limit = lim->max_memory, .e = e};
    strbuf b = {0};
    int rc = -1;
    if (raised) *raised = 0;
    if (!(c.f = frame_new(&c, NULL))) { jn_oom(&c, NULL); goto done; }
    if (vars && json_is_object(vars)) {
        const char *k;
        json_t *x;
        json_object_foreach(vars, k, x) {
            val v;
            int fj = v_from_json(&ar, x, &v);
            if (fj == -2) {
                jn_fail(&c, NULL, "'%.100s' nests lists and dicts deeper than %d levels", k, JN_MAX_DEPTH);
                goto done;
            }
            if (fj) { jn_oom(&c, NULL); goto done; }
            val kv = v_strdup(&ar, k, strlen(k));
            if (kv.t != V_STR || v_dict_set(&ar, c.f->vars, kv, v)) { jn_oom(&c, NULL); goto done; }
        }
    }
    if (exec_body(&c, (nodelist *)&t->body, &b) == X_ERR) goto done;
    *len = b.n;
    if (!(*out = sb_steal(&b))) { jn_oom(&c, NULL); goto done; }
    rc = 0;
done:
    if (raised) *raised = c.raised;
    sb_free(&b);
    ar_free(&ar);
    return rc;
}

int tmpl_render(const tmpl_template *t, json_t *vars, char **out, size_t *len,
                int *raised, inferd_error *e)
{
    return tmpl_render_limited(t, vars, NULL, out, len, raised, e);
}
