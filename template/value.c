/* Runtime values of the Jinja interpreter and the Python semantics they must
 * copy exactly: truthiness, ==, str() and repr() as print shows them, and
 * json.dumps as transformers' tojson calls it. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <math.h>

#include "template/jinja.h"

/* ---- arena ---- */
struct arena_chunk {
    arena_chunk *next;
    size_t used, size;
    _Alignas(16) unsigned char data[];
};

#define CHUNK 65536

/* Like ar_alloc without zeroing: for bytes about to be overwritten. */
void *ar_alloc_raw(arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (a->cap && (a->used + n > a->cap || n > a->cap)) {
        a->over = 1;
        return NULL;
    }
    arena_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t sz = n > CHUNK / 4 ? n : CHUNK;
        c = malloc(sizeof *c + sz);
        if (!c) { a->over = 1; return NULL; }
        c->size = sz;
        c->used = 0;
        if (sz == n && a->head) {
            /* a big block goes behind the current chunk, which stays usable */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->used;
    c->used += n;
    a->used += n;
    return p;
}

void *ar_alloc(arena *a, size_t n)
{
    void *p = ar_alloc_raw(a, n);
    if (p) memset(p, 0, n);
    return p;
}

void ar_free(arena *a)
{
    arena_chunk *c = a->head;
    while (c) {
        arena_chunk *nx = c->next;
        free(c);
        c = nx;
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- constructors ---- */
const val V_NONE_VAL = {.t = V_NONE};

val v_str(const char *p, size_t n) { val v = {.t = V_STR}; v.u.s.p = p; v.u.s.n = n; return v; }
val v_int(int64_t i) { val v = {.t = V_INT}; v.u.i = i; return v; }
val v_float(double f) { val v = {.t = V_FLOAT}; v.u.f = f; return v; }
val v_bool(int b) { val v = {.t = V_BOOL}; v.u.b = !!b; return v; }
val v_undef(const char *msg) { val v = {.t = V_UNDEF}; v.u.s.p = msg; v.u.s.n = msg ? strlen(msg) : 0; return v; }

/* Copies into the arena; returns an undefined value when over the memory cap
 * (callers check t). */
val v_strdup(arena *a, const char *p, size_t n)
{
    char *d = ar_alloc_raw(a, n + 1);
    if (!d) return v_undef(NULL);
    if (n) memcpy(d, p, n);
    d[n] = 0;
    return v_str(d, n);
}

vlist *v_list_new(arena *a, size_t cap)
{
    vlist *l = ar_alloc(a, sizeof *l);
    if (!l) return NULL;
    /* never a NULL items array: memcpy of zero items from it stays defined */
    if (!cap) cap = 1;
    if (!(l->items = ar_alloc(a, cap * sizeof(val)))) return NULL;
    l->cap = cap;
    return l;
}

int v_list_push(arena *a, vlist *l, val v)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 4;
        val *it = ar_alloc(a, nc * sizeof *it);
        if (!it) return -1;
        if (l->n) memcpy(it, l->items, l->n * sizeof *it);
        l->items = it;
        l->cap = nc;
    }
    l->items[l->n++] = v;
    return 0;
}

vdict *v_dict_new(arena *a, size_t cap)
{
    vdict *d = ar_alloc(a, sizeof *d);
    if (!d) return NULL;
    if (!cap) cap = 1;
    d->keys = ar_alloc(a, cap * sizeof(val));
    d->vals = ar_alloc(a, cap * sizeof(val));
    if (!d->keys || !d->vals) return NULL;
    d->cap = cap;
    return d;
}

val *v_dict_get(const vdict *d, const val *k)
{
    for (size_t i = 0; i < d->n; i++)
        if (v_equal(&d->keys[i], k) == 1) return &d->vals[i]; /* keys too deep to compare: none */
    return NULL;
}

val *v_dict_gets(const vdict *d, const char *k, size_t n)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].t == V_STR && d->keys[i].u.s.n == n && !memcmp(d->keys[i].u.s.p, k, n))
            return &d->vals[i];
    return NULL;
}

/* Sets k (replacing an equal key in place, as Python dicts keep order). */
int v_dict_set(arena *a, vdict *d, val k, val v)
{
    val *old = v_dict_get(d, &k);
    if (old) { *old = v; return 0; }
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 4;
        val *nk = ar_alloc(a, nc * sizeof *nk), *nv = ar_alloc(a, nc * sizeof *nv);
        if (!nk || !nv) return -1;
        if (d->n) {
            memcpy(nk, d->keys, d->n * sizeof *nk);
            memcpy(nv, d->vals, d->n * sizeof *nv);
        }
        d->keys = nk;
        d->vals = nv;
        d->cap = nc;
    }
    d->keys[d->n] = k;
    d->vals[d->n] = v;
    d->n++;
    return 0;
}

/* ---- Python semantics ---- */
int v_truthy(const val *v)
{
    switch (v->t) {
    case V_UNDEF: case V_NONE: return 0;
    case V_BOOL: return v->u.b;
    case V_INT: return v->u.i != 0;
    case V_FLOAT: return v->u.f != 0.0;
    case V_STR: return v->u.s.n != 0;
    case V_LIST: case V_TUPLE: return v->u.l->n != 0;
    case V_GEN: return 1;
    case V_DICT: return v->u.d->n != 0;
    default: return 1;
    }
}

static int is_num(const val *v) { return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; }
static double num(const val *v) { return v->t == V_FLOAT ? v->u.f : v->t == V_INT ? (double)v->u.i : v->u.b; }

static int equal_at(const val *a, const val *b, int depth)
{
    if (is_num(a) && is_num(b)) {
        if (a->t != V_FLOAT && b->t != V_FLOAT) {
            int64_t x = a->t == V_INT ? a->u.i : a->u.b, y = b->t == V_INT ? b->u.i : b->u.b;
            return x == y;
        }
        return num(a) == num(b);
    }
    if (a->t == V_STR && b->t == V_STR)
        return a->u.s.n == b->u.s.n && !memcmp(a->u.s.p, b->u.s.p, a->u.s.n);
    if (a->t != b->t) return 0;
    if ((a->t == V_LIST || a->t == V_TUPLE || a->t == V_DICT) && depth >= JN_MAX_DEPTH) return -1;
    switch (a->t) {
    case V_UNDEF: case V_NONE: return 1;
    case V_LIST: case V_TUPLE:
        if (a->sub != b->sub || a->u.l->n != b->u.l->n) return 0;
        for (size_t i = 0; i < a->u.l->n; i++) {
            int eq = equal_at(&a->u.l->items[i], &b->u.l->items[i], depth + 1);
            if (eq != 1) return eq;
        }
        return 1;
    case V_DICT:
        if (a->u.d->n != b->u.d->n) return 0;
        for (size_t i = 0; i < a->u.d->n; i++) {
            val *o = v_dict_get(b->u.d, &a->u.d->keys[i]);
            int eq = o ? equal_at(&a->u.d->vals[i], o, depth + 1) : 0;
            if (eq != 1) return eq;
        }
        return 1;
    case V_NS: return a->u.d == b->u.d;
    case V_LOOP: return a->u.loop == b->u.loop;
    case V_MACRO: return a->u.m == b->u.m;
    case V_FUNC: return a->u.fn == b->u.fn;
    case V_GEN: return a->u.gen == b->u.gen;
    case V_CYCLER: return a->u.cy == b->u.cy;
    default: return 0;
    }
}

int v_equal(const val *a, const val *b) { return equal_at(a, b, 0); }

const char *v_typename(const val *v)
{
    switch (v->t) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "str";
    case V_LIST:
        return v->sub == SUB_KEYS ? "dict_keys" : v->sub == SUB_VALUES ? "dict_values"
             : v->sub == SUB_ITEMS ? "dict_items" : "list";
    case V_GEN: return v->u.gen->kind == GEN_REVERSED ? "list_reverseiterator" : "generator";
    case V_TUPLE: return "tuple";
    case V_DICT: return "dict";
    case V_NS: return "Namespace";
    case V_LOOP: return "LoopContext";
    case V_MACRO: return "Macro";
    case V_FUNC: return "function";
    case V_CYCLER: return v->u.cy->joiner ? "Joiner" : "Cycler";
    default: return "method";
    }
}

int py_isspace(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 ||
           cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

size_t u8_len(const char *p, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)p[i] & 0xC0) != 0x80) c++;
    return c;
}

size_t u8_offset(const char *p, size_t n, size_t i)
{
    size_t k = 0, c = 0;
    for (; k < n; k++) {
        if (((unsigned char)p[k] & 0xC0) != 0x80) {
            if (c == i) return k;
            c++;
        }
    }
    return n;
}

/* repr(float) in Python: the shortest digits that read back to the same
 * double, in fixed notation for exponents -4..15, else d.ddde+XX. */
void py_float_repr(double f, strbuf *b)
{
    if (isnan(f)) { sb_puts(b, "nan"); return; }
    if (isinf(f)) { sb_puts(b, f < 0 ? "-inf" : "inf"); return; }
    if (f == 0) { sb_puts(b, signbit(f) ? "-0.0" : "0.0"); return; }
    char buf[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f) break;
    }
    /* buf = [-]d.ddde[+-]XX: pull out digits and exponent */
    char digits[32];
    int nd = 0, neg = buf[0] == '-';
    char *q = buf + neg;
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9') digits[nd++] = *q;
    int exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    if (neg) sb_putc(b, '-');
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            sb_puts(b, "0.");
            for (int i = 0; i < -exp - 1; i++) sb_putc(b, '0');
            sb_append(b, digits, (size_t)nd);
        } else {
            for (int i = 0; i <= exp; i++) sb_putc(b, i < nd ? digits[i] : '0');
            sb_putc(b, '.');
            if (nd > exp + 1) sb_append(b, digits + exp + 1, (size_t)(nd - exp - 1));
            else sb_putc(b, '0');
        }
    } else {
        sb_putc(b, digits[0]);
        if (nd > 1) {
            sb_putc(b, '.');
            sb_append(b, digits + 1, (size_t)(nd - 1));
        }
        sb_printf(b, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
}

/* Python's str.isprintable for repr: printable characters stay as they are. */
static int py_printable(uint32_t cp)
{
    if (cp < 0x20 || cp == 0x7F) return 0;
    if (cp >= 0x80 && cp < 0xA0) return 0;
    if (cp == 0xAD) return 0;
    if (py_isspace(cp) && cp != ' ') return 0;
    if ((cp >= 0x200B && cp <= 0x200F) || (cp >= 0x202A && cp <= 0x202E) ||
        (cp >= 0x2060 && cp <= 0x206F) || cp == 0xFEFF || (cp >= 0xD800 && cp <= 0xDFFF) ||
        (cp >= 0xE000 && cp <= 0xF8FF) || (cp >= 0xFFF9 && cp <= 0xFFFB))
        return 0;
    return 1;
}

static void str_repr(const char *p, size_t n, strbuf *b)
{
    int has_sq = memchr(p, '\'', n) != NULL, has_dq = memchr(p, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    sb_putc(b, q);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = utf8_decode(p + i, n - i, &cp);
        if (k <= 0) { cp = (unsigned char)p[i]; k = 1; }
        if (cp == (uint32_t)q || cp == '\\') { sb_putc(b, '\\'); sb_putc(b, (char)cp); }
        else if (cp == '\n') sb_puts(b, "\\n");
        else if (cp == '\r') sb_puts(b, "\\r");
        else if (cp == '\t') sb_puts(b, "\\t");
        else if (!py_printable(cp)) {
            if (cp < 0x100) sb_printf(b, "\\x%02x", cp);
            else if (cp < 0x10000) sb_printf(b, "\\u%04x", cp);
            else sb_printf(b, "\\U%08x", cp);
        } else sb_append(b, p + i, (size_t)k);
        i += (size_t)k;
    }
    sb_putc(b, q);
}

static int repr_at(const val *v, strbuf *b, int depth);
static int to_str_at(const val *v, strbuf *b, int depth);

/* repr() of the items of a dict or namespace: "'k': v, ..." */
static int repr_items(const vdict *d, strbuf *b, int depth)
{
    for (size_t i = 0; i < d->n; i++) {
        if (i) sb_puts(b, ", ");
        if (repr_at(&d->keys[i], b, depth)) return -1;
        sb_puts(b, ": ");
        if (repr_at(&d->vals[i], b, depth)) return -1;
    }
    return 0;
}

static int repr_at(const val *v, strbuf *b, int depth)
{
    if (depth > JN_MAX_DEPTH) return -1;
    switch (v->t) {
    case V_STR:
        if (v->sub == SUB_MARKUP) sb_puts(b, "Markup(");
        str_repr(v->u.s.p, v->u.s.n, b);
        if (v->sub == SUB_MARKUP) sb_putc(b, ')');
        return 0;
    case V_UNDEF: sb_puts(b, "Undefined"); return 0;
    case V_LIST: case V_TUPLE: {
        if (v->sub) {
            sb_puts(b, v_typename(v));
            sb_putc(b, '(');
        }
        sb_putc(b, v->t == V_LIST ? '[' : '(');
        for (size_t i = 0; i < v->u.l->n; i++) {
            if (i) sb_puts(b, ", ");
            if (repr_at(&v->u.l->items[i], b, depth + 1)) return -1;
        }
        if (v->t == V_TUPLE && v->u.l->n == 1) sb_putc(b, ',');
        sb_putc(b, v->t == V_LIST ? ']' : ')');
        if (v->sub) sb_putc(b, ')');
        return 0;
    }
    case V_DICT:
        sb_putc(b, '{');
        if (repr_items(v->u.d, b, depth + 1)) return -1;
        sb_putc(b, '}');
        return 0;
    default: return to_str_at(v, b, depth);
    }
}

int v_repr(const val *v, strbuf *b) { return repr_at(v, b, 0); }

static int to_str_at(const val *v, strbuf *b, int depth)
{
    switch (v->t) {
    case V_UNDEF: return 0;
    case V_NONE: sb_puts(b, "None"); return 0;
    case V_BOOL: sb_puts(b, v->u.b ? "True" : "False"); return 0;
    case V_INT: sb_printf(b, "%lld", (long long)v->u.i); return 0;
    case V_FLOAT: py_float_repr(v->u.f, b); return 0;
    case V_STR: sb_append(b, v->u.s.p, v->u.s.n); return 0;
    case V_LIST: case V_TUPLE: case V_DICT: return repr_at(v, b, depth);
    case V_NS:
        /* a namespace may hold itself: the depth bound ends that walk too */
        sb_puts(b, "<Namespace {");
        if (repr_items(v->u.d, b, depth + 1)) return -1;
        sb_puts(b, "}>");
        return 0;
    case V_LOOP: sb_puts(b, "<LoopContext>"); return 0;
    case V_MACRO: sb_puts(b, "<Macro>"); return 0;
    case V_FUNC: sb_puts(b, "<function>"); return 0;
    case V_GEN: sb_printf(b, "<%s object>", v_typename(v)); return 0;
    case V_CYCLER: sb_printf(b, "<jinja2.utils.%s object>", v_typename(v)); return 0;
    default: sb_puts(b, "<built-in method>"); return 0;
    }
}

int v_to_str(const val *v, strbuf *b) { return to_str_at(v, b, 0); }

/* ---- JSON ---- */
static int from_json_at(arena *a, json_t *j, val *out, int depth)
{
    if ((json_is_array(j) || json_is_object(j)) && depth >= JN_MAX_DEPTH) return -2;
    switch (json_typeof(j)) {
    case JSON_NULL: *out = V_NONE_VAL; return 0;
    case JSON_TRUE: *out = v_bool(1); return 0;
    case JSON_FALSE: *out = v_bool(0); return 0;
    case JSON_INTEGER: *out = v_int(json_integer_value(j)); return 0;
    case JSON_REAL: *out = v_float(json_real_value(j)); return 0;
    case JSON_STRING:
        *out = v_strdup(a, json_string_value(j), json_string_length(j));
        return out->t == V_STR ? 0 : -1;
    case JSON_ARRAY: {
        vlist *l = v_list_new(a, json_array_size(j));
        if (!l) return -1;
        size_t i;
        json_t *x;
        json_array_foreach(j, i, x) {
            int rc = from_json_at(a, x, &l->items[i], depth + 1);
            if (rc) return rc;
        }
        l->n = json_array_size(j);
        *out = (val){.t = (uint8_t)(V_LIST)};
        out->u.l = l;
        return 0;
    }
    case JSON_OBJECT: {
        vdict *d = v_dict_new(a, json_object_size(j));
        if (!d) return -1;
        const char *k;
        json_t *x;
        json_object_foreach(j, k, x) {
            val kv = v_strdup(a, k, strlen(k)), vv;
            if (kv.t != V_STR) return -1;
            int rc = from_json_at(a, x, &vv, depth + 1);
            if (rc) return rc;
            d->keys[d->n] = kv;
            d->vals[d->n] = vv;
            d->n++;
        }
        *out = (val){.t = (uint8_t)(V_DICT)};
        out->u.d = d;
        return 0;
    }
    }
    return -1;
}

int v_from_json(arena *a, json_t *j, val *out) { return from_json_at(a, j, out, 0); }

static void json_str(const char *p, size_t n, int ensure_ascii, strbuf *b)
{
    sb_putc(b, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"') { sb_puts(b, "\\\""); i++; continue; }
        if (c == '\\') { sb_puts(b, "\\\\"); i++; continue; }
        if (c == '\n') { sb_puts(b, "\\n"); i++; continue; }
        if (c == '\r') { sb_puts(b, "\\r"); i++; continue; }
        if (c == '\t') { sb_puts(b, "\\t"); i++; continue; }
        if (c == '\b') { sb_puts(b, "\\b"); i++; continue; }
        if (c == '\f') { sb_puts(b, "\\f"); i++; continue; }
        if (c < 0x20) { sb_printf(b, "\\u%04x", c); i++; continue; }
        if (c < 0x80 || !ensure_ascii) { sb_putc(b, (char)c); i++; continue; }
        uint32_t cp;
        int k = utf8_decode(p + i, n - i, &cp);
        if (k <= 0) { cp = 0xFFFD; k = 1; }
        if (cp >= 0x10000) {
            cp -= 0x10000;
            sb_printf(b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
        } else {
            sb_printf(b, "\\u%04x", cp);
        }
        i += (size_t)k;
    }
    sb_putc(b, '"');
}

static void json_float(double f, strbuf *b)
{
    if (isnan(f)) sb_puts(b, "NaN");
    else if (isinf(f)) sb_puts(b, f < 0 ? "-Infinity" : "Infinity");
    else py_float_repr(f, b);
}

static void newline_indent(strbuf *b, int indent, int level)
{
    sb_putc(b, '\n');
    for (int i = 0; i < indent * level; i++) sb_putc(b, ' ');
}

typedef struct jkey { strbuf s; size_t idx; } jkey;

static int jkey_cmp(const void *a, const void *b)
{
    const jkey *x = a, *y = b;
    size_t n = x->s.n < y->s.n ? x->s.n : y->s.n;
    int c = memcmp(x->s.p, y->s.p, n);
    return c ? c : (x->s.n > y->s.n) - (x->s.n < y->s.n);
}

/* Key of a dict entry as json.dumps writes it; -1 for keys it rejects. */
static int json_key(const val *k, strbuf *b)
{
    switch (k->t) {
    case V_STR: sb_append(b, k->u.s.p, k->u.s.n); return 0;
    case V_INT: sb_printf(b, "%lld", (long long)k->u.i); return 0;
    case V_FLOAT: json_float(k->u.f, b); return 0;
    case V_BOOL: sb_puts(b, k->u.b ? "true" : "false"); return 0;
    case V_NONE: sb_puts(b, "null"); return 0;
    default: return -1;
    }
}

int v_to_json(const val *v, int ensure_ascii, int indent, const char *item_sep,
              const char *key_sep, int sort_keys, strbuf *b, int depth,
              char *err, size_t errn)
{
    if (depth > JN_MAX_DEPTH) {
        snprintf(err, errn, "tojson: a value nested deeper than %d levels", JN_MAX_DEPTH);
        return -1;
    }
    switch (v->t) {
    case V_NONE: sb_puts(b, "null"); return 0;
    case V_BOOL: sb_puts(b, v->u.b ? "true" : "false"); return 0;
    case V_INT: sb_printf(b, "%lld", (long long)v->u.i); return 0;
    case V_FLOAT: json_float(v->u.f, b); return 0;
    case V_STR: json_str(v->u.s.p, v->u.s.n, ensure_ascii, b); return 0;
    case V_LIST: case V_TUPLE: {
        if (v->sub) break;
        if (!v->u.l->n) { sb_puts(b, "[]"); return 0; }
        sb_putc(b, '[');
        for (size_t i = 0; i < v->u.l->n; i++) {
            if (i) sb_puts(b, item_sep);
            if (indent >= 0) newline_indent(b, indent, depth + 1);
            if (v_to_json(&v->u.l->items[i], ensure_ascii, indent, item_sep, key_sep,
                          sort_keys, b, depth + 1, err, errn))
                return -1;
        }
        if (indent >= 0) newline_indent(b, indent, depth);
        sb_putc(b, ']');
        return 0;
    }
    case V_DICT: case V_NS: {
        vdict *d = v->u.d;
        if (v->t == V_NS) break;
        if (!d->n) { sb_puts(b, "{}"); return 0; }
        jkey *keys = calloc(d->n, sizeof *keys);
        if (!keys) { snprintf(err, errn, "out of memory"); return -1; }
        int rc = -1;
        size_t nk = 0;
        for (; nk < d->n; nk++) {
            keys[nk].idx = nk;
            if (json_key(&d->keys[nk], &keys[nk].s)) {
                snprintf(err, errn, "keys must be str, int, float, bool or None, not %s",
                         v_typename(&d->keys[nk]));
                nk++;
                goto out;
            }
        }
        if (sort_keys) qsort(keys, nk, sizeof *keys, jkey_cmp);
        sb_putc(b, '{');
        for (size_t i = 0; i < nk; i++) {
            if (i) sb_puts(b, item_sep);
            if (indent >= 0) newline_indent(b, indent, depth + 1);
            json_str(keys[i].s.p ? keys[i].s.p : "", keys[i].s.n, ensure_ascii, b);
            sb_puts(b, key_sep);
            if (v_to_json(&d->vals[keys[i].idx], ensure_ascii, indent, item_sep, key_sep,
                          sort_keys, b, depth + 1, err, errn))
                goto out;
        }
        if (indent >= 0) newline_indent(b, indent, depth);
        sb_putc(b, '}');
        rc = 0;
    out:
        for (size_t i = 0; i < nk; i++) sb_free(&keys[i].s);
        free(keys);
        return rc;
    }
    default: break;
    }
    snprintf(err, errn, "Object of type %s is not JSON serializable", v_typename(v));
    return -1;
}

/* ---- Python's format mini-language (str.format specs and % forms) ---- */

/* Pads text (code points counted, as Python does) into b. */
static void pad_into(strbuf *b, const char *t, size_t n, const pyspec *s, char dflt_align)
{
    size_t len = u8_len(t, n);
    char align = s->align ? s->align : dflt_align;
    size_t padn = s->width > 0 && (size_t)s->width > len ? (size_t)s->width - len : 0;
    char fill[4];
    int fl = utf8_encode(s->fill ? s->fill : ' ', fill);
    size_t left = align == '>' ? padn : align == '^' ? padn / 2 : 0;
    if (align == '=') {
        /* padding goes after the sign: "-0005" */
        size_t sg = n && (t[0] == '-' || t[0] == '+' || t[0] == ' ') ? 1 : 0;
        if (n > sg + 1 && t[sg] == '0' && (t[sg + 1] == 'x' || t[sg + 1] == 'X' || t[sg + 1] == 'o' || t[sg + 1] == 'b'))
            sg += 2;
        sb_append(b, t, sg);
        for (size_t i = 0; i < padn; i++) sb_append(b, fill, (size_t)fl);
        sb_append(b, t + sg, n - sg);
        return;
    }
    for (size_t i = 0; i < left; i++) sb_append(b, fill, (size_t)fl);
    sb_append(b, t, n);
    for (size_t i = left; i < padn; i++) sb_append(b, fill, (size_t)fl);
}

/* Inserts ',' or '_' between groups of three integer digits. */
static void group_digits(strbuf *t, char sep)
{
    size_t st = t->n && (t->p[0] == '-' || t->p[0] == '+' || t->p[0] == ' ') ? 1 : 0, end = st;
    while (end < t->n && t->p[end] >= '0' && t->p[end] <= '9') end++;
    strbuf o = {0};
    sb_append(&o, t->p, st);
    for (size_t i = st; i < end; i++) {
        sb_putc(&o, t->p[i]);
        if (i + 1 < end && (end - i - 1) % 3 == 0) sb_putc(&o, sep);
    }
    sb_append(&o, t->p + end, t->n - end);
    sb_free(t);
    *t = o;
}

int py_format_value(const val *v, const pyspec *s, strbuf *b, char *err, size_t errn)
{
    int num = v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL;
    char type = s->type;
    /* an empty spec is str(value); True formats as 1 under any other spec */
    if (type == 's' || type == 'r' || (!type && !num) || (v->t == V_BOOL && s->empty)) {
        if (s->comma && v->t == V_STR) {
            snprintf(err, errn, "Cannot specify '%c' with 's'.", s->comma);
            return -1;
        }
        strbuf t = {0};
        if (type == 'r' ? v_repr(v, &t) : v_to_str(v, &t)) {
            sb_free(&t);
            snprintf(err, errn, "format: a value nested deeper than %d levels", JN_MAX_DEPTH);
            return -1;
        }
        size_t n = t.n;
        if (s->prec >= 0) n = u8_offset(t.p ? t.p : "", t.n, (size_t)s->prec);
        pad_into(b, t.p ? t.p : "", n, s, '<');
        sb_free(&t);
        return 0;
    }
    if (!num) {
        snprintf(err, errn, "Unknown format code '%c' for object of type '%s'", type ? type : 's', v_typename(v));
        return -1;
    }
    int is_float = v->t == V_FLOAT;
    double f = is_float ? v->u.f : (double)(v->t == V_INT ? v->u.i : v->u.b);
    long long i = v->t == V_INT ? (long long)v->u.i : v->t == V_BOOL ? v->u.b : (long long)v->u.f;
    strbuf t = {0};
    char cf[32];
    const char *sign = s->sign == '+' ? "+" : s->sign == ' ' ? " " : "";
    if (type == 'c' && !is_float) {
        char u[4];
        int k = utf8_encode((uint32_t)i, u);
        sb_append(&t, u, (size_t)k);
    } else if (strchr("dxXob", type ? type : 'd') && (type || !is_float)) {
        if (is_float && type) {
            snprintf(err, errn, "Unknown format code '%c' for object of type 'float'", type);
            return -1;
        }
        unsigned long long m = i < 0 ? 0ULL - (unsigned long long)i : (unsigned long long)i;
        sb_puts(&t, i < 0 ? "-" : sign);
        if (s->alt && type && type != 'd') sb_printf(&t, "0%c", type);
        if (type == 'b') {
            char bits[65];
            int k = 64;
            bits[k] = 0;
            do { bits[--k] = (char)('0' + (m & 1)); m >>= 1; } while (m);
            sb_puts(&t, bits + k);
        } else {
            snprintf(cf, sizeof cf, "%%ll%c", type == 'x' || type == 'X' || type == 'o' ? type : 'u');
            sb_printf(&t, cf, m);
        }
        if (s->comma) group_digits(&t, s->comma);
    } else if (strchr("fFeEgG%", type ? type : 'g')) {
        int prec = s->prec >= 0 ? s->prec : 6;
        double x = type == '%' ? f * 100 : f;
        if (!type && s->prec < 0) {
            /* no type, no precision: str(float) */
            if (x >= 0 && !signbit(x)) sb_puts(&t, sign);
            py_float_repr(x, &t);
        } else {
            char ty = !type ? 'g' : type == '%' ? 'f' : type;
            snprintf(cf, sizeof cf, "%%%s%s.%d%c", sign, s->alt ? "#" : "", prec, ty);
            sb_printf(&t, cf, x);
            if (!type && !memchr(t.p, '.', t.n) && !memchr(t.p, 'e', t.n) && !memchr(t.p, 'n', t.n) &&
                !memchr(t.p, 'i', t.n))
                sb_puts(&t, ".0"); /* Python's general format keeps a digit after the point */
            if (type == '%') sb_putc(&t, '%');
        }
        if (s->comma) group_digits(&t, s->comma);
    } else {
        snprintf(err, errn, "Unknown format code '%c' for object of type '%s'", type, v_typename(v));
        return -1;
    }
    pyspec z = *s;
    if (s->zero && !s->align) { z.fill = '0'; z.align = '='; }
    pad_into(b, t.p ? t.p : "", t.n, &z, '>');
    sb_free(&t);
    return 0;
}

int py_parse_spec(const char *p, size_t n, pyspec *s)
{
    memset(s, 0, sizeof *s);
    s->prec = -1;
    s->empty = n == 0;
    size_t i = 0;
    uint32_t cp;
    int k = n ? utf8_decode(p, n, &cp) : 0;
    if (k > 0 && (size_t)k < n && strchr("<>=^", p[k]) && p[k]) {
        s->fill = cp;
        s->align = p[k];
        i = (size_t)k + 1;
    } else if (n && strchr("<>=^", p[0]) && p[0]) {
        s->align = p[0];
        i = 1;
    }
    if (i < n && (p[i] == '+' || p[i] == '-' || p[i] == ' ')) s->sign = p[i++];
    if (i < n && p[i] == '#') { s->alt = 1; i++; }
    if (i < n && p[i] == '0') { s->zero = 1; i++; }
    while (i < n && p[i] >= '0' && p[i] <= '9' && s->width < 100000) s->width = s->width * 10 + (p[i++] - '0');
    if (i < n && (p[i] == ',' || p[i] == '_')) s->comma = p[i++];
    if (i < n && p[i] == '.') {
        s->prec = 0;
        i++;
        if (i >= n || p[i] < '0' || p[i] > '9') return -1;
        while (i < n && p[i] >= '0' && p[i] <= '9' && s->prec < 100000) s->prec = s->prec * 10 + (p[i++] - '0');
    }
    if (i < n) s->type = p[i++];
    return i == n && s->width < 100000 && s->prec < 100000 ? 0 : -1;
}
