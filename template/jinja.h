/* template internals shared by the lexer/parser (parse.c), the values
 * (value.c), the evaluator (eval.c) and the filters/tests/methods
 * (builtins.c). Not a public header: only template/ includes it. */
#ifndef INFERD_TEMPLATE_JINJA_H
#define INFERD_TEMPLATE_JINJA_H

#include <stdint.h>
#include <stddef.h>
#include <jansson.h>

#include "common/common.h"

/* ---- arena: every AST node and every runtime value lives in one, freed in
 * one call. A cap on its total size is the memory limit a hostile template
 * (string doubling, huge ranges) runs into. */
typedef struct arena_chunk arena_chunk;
typedef struct arena {
    arena_chunk *head;
    size_t used, cap; /* bytes handed out so far; 0 cap = unlimited */
    int over;         /* set once an allocation was refused */
} arena;
void *ar_alloc(arena *a, size_t n); /* zeroed; NULL when over the cap */
void *ar_alloc_raw(arena *a, size_t n); /* not zeroed */
void ar_free(arena *a);

/* ---- values ---- */
typedef enum vtype {
    V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_TUPLE, V_DICT,
    V_NS,     /* namespace(): the one mutable object */
    V_LOOP,   /* the `loop` variable of a for */
    V_MACRO,  /* a macro or the `caller` of a call block */
    V_FUNC,   /* a global function (range, dict, namespace, ...) */
    V_METHOD, /* a method bound to its receiver (s.strip, d.items, ...) */
    V_GEN,    /* a lazy, single-use iterator (select, map, unique, ...) */
    V_CYCLER, /* cycler() or joiner(): the other objects a template changes */
} vtype;

/* V_LIST subtypes: the dict views Python's keys()/values()/items() return,
 * which iterate like lists but print, test and serialize differently. */
enum { SUB_LIST = 0, SUB_KEYS, SUB_VALUES, SUB_ITEMS };
/* V_STR subtype: markupsafe's Markup, what |safe and |escape return. Even
 * with autoescape off it changes what a template prints: `markup + str`
 * HTML-escapes the str (functionary v3.1 builds its tool list that way),
 * its methods, `*`, `%` and |upper-like filters keep it, and repr() in a
 * container shows Markup('...'). `~`, |join, |replace and iteration give
 * plain str, as Jinja2's do. */
enum { SUB_MARKUP = 1 };

typedef struct vlist vlist;
typedef struct vdict vdict;
typedef struct vloop vloop;
typedef struct vmacro vmacro;
typedef struct vmethod vmethod;
typedef struct vgen vgen;
typedef struct vcycler vcycler;

typedef struct val {
    uint8_t t;
    uint8_t sub; /* V_LIST: SUB_*; V_STR: SUB_MARKUP or 0 */
    union {
        int b;
        int64_t i;
        double f;
        struct { const char *p; size_t n; } s; /* V_STR; V_UNDEF: the message
                                                   an error would give */
        vlist *l;       /* V_LIST, V_TUPLE */
        vdict *d;       /* V_DICT, V_NS */
        vloop *loop;
        vmacro *m;
        int fn;         /* V_FUNC */
        vmethod *meth;
        vgen *gen;
        vcycler *cy;
    } u;
} val;

/* group: a groupby _GroupTuple (grouper, list), whose two items are also
 * its attributes .grouper and .list */
struct vlist { val *items; size_t n, cap; int group; };
struct vdict { val *keys, *vals; size_t n, cap; };
struct vmethod { val self; const char *name; };
/* cycler(*items): .next() hands out items[pos] and moves on; joiner(sep):
 * calling it gives "" the first time, sep after. */
struct vcycler { vlist *items; size_t pos; int joiner, used; val sep; };

/* ---- AST ---- */
typedef struct node node;
typedef struct nodelist { node **v; size_t n, cap; } nodelist;

enum {
    /* expressions */
    E_CONST, E_NAME, E_LIST, E_TUPLE, E_DICT, E_ATTR, E_ITEM, E_SLICE,
    E_BIN, E_AND, E_OR, E_NOT, E_NEG, E_POS, E_COND, E_CALL, E_FILTER, E_TEST,
    E_CMP, E_KWARG,
    /* statements */
    S_TEXT, S_OUTPUT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_CALLBLOCK,
    S_BREAK, S_CONTINUE, S_FILTERBLOCK, S_WITH, S_BODY,
};

/* binary operators (E_BIN, E_CMP) */
enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_CONCAT,
       OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN };

struct node {
    uint8_t kind, op;
    uint8_t neg;       /* E_TEST: `is not`; S_FOR: `recursive` */
    int line, col;
    const char *name;  /* name, attribute, filter, test, macro, text */
    size_t name_len;
    val v;             /* E_CONST */
    node *a, *b, *c, *d;
    nodelist args;     /* items, positional args, macro params, ops of E_CMP */
    nodelist kwargs;   /* E_KWARG nodes: name = value a */
    nodelist body, orelse;
};

/* ---- parse.c ---- */
int jn_parse(arena *a, const char *src, size_t len, nodelist *out,
             inferd_error *e);

/* ---- value.c ---- */
/* How deep lists, tuples and dicts may nest in every walk over a value
 * (from JSON, str()/repr(), ==, <, tojson): each level is a C call on the
 * 1 MiB stack of an HTTP connection thread, and a request's
 * chat_template_kwargs nest as deep as jansson parses (2048). Python stops
 * such walks with RecursionError near 1000; real tool schemas nest ~10. */
#define JN_MAX_DEPTH 200
extern const val V_NONE_VAL;
val v_str(const char *p, size_t n);                 /* no copy */
val v_strdup(arena *a, const char *p, size_t n);    /* copy into arena */
val v_int(int64_t i);
val v_float(double f);
val v_bool(int b);
val v_undef(const char *msg);
int v_truthy(const val *v);
/* Python's ==: 1 or 0; -1 when the values nest deeper than JN_MAX_DEPTH. */
int v_equal(const val *a, const val *b);
const char *v_typename(const val *v); /* Python type name: str, int, dict... */
int v_list_push(arena *a, vlist *l, val v);
vlist *v_list_new(arena *a, size_t cap);
vdict *v_dict_new(arena *a, size_t cap);
int v_dict_set(arena *a, vdict *d, val k, val v);
val *v_dict_get(const vdict *d, const val *k);
val *v_dict_gets(const vdict *d, const char *k, size_t n);
/* -1: over the memory cap; -2: nested deeper than JN_MAX_DEPTH. */
int v_from_json(arena *a, json_t *j, val *out);
/* Python's str() of a value as Jinja prints it; repr for containers.
 * -1 (with part of the text in b) when it nests deeper than JN_MAX_DEPTH. */
int v_to_str(const val *v, strbuf *b);
int v_repr(const val *v, strbuf *b);
void py_float_repr(double f, strbuf *b);
/* json.dumps(v, ensure_ascii, indent (<0: none), separators, sort_keys);
 * fails on values JSON cannot hold (undefined, macros). */
int v_to_json(const val *v, int ensure_ascii, int indent, const char *item_sep,
              const char *key_sep, int sort_keys, strbuf *b, int depth,
              char *err, size_t errn);
/* Python's format mini-language: "[[fill]align][sign][#][0][width][,][.prec][type]" */
typedef struct pyspec {
    uint32_t fill;
    char align, sign, comma, type;
    int alt, zero, width, prec; /* prec < 0: none */
    int empty;                  /* str.format "{}" with no spec at all */
} pyspec;
int py_parse_spec(const char *p, size_t n, pyspec *s);
int py_format_value(const val *v, const pyspec *s, strbuf *b, char *err, size_t errn);
/* Python str ordering and equality on code points (UTF-8 order agrees). */
int py_isspace(uint32_t cp);
size_t u8_len(const char *p, size_t n);           /* code points */
size_t u8_offset(const char *p, size_t n, size_t i); /* byte offset of cp i */

/* ---- evaluation (eval.c, builtins.c) ---- */
typedef struct jframe jframe;
struct jframe {
    jframe *parent;
    vdict *vars;
};

struct vmacro {
    node *def;        /* S_MACRO, or the S_CALLBLOCK for `caller` */
    jframe *closure;  /* where it was defined: what its body sees */
    val caller;       /* the caller macro passed into a call block's macro */
};

struct vloop {
    vlist *items;
    size_t index0;
    size_t depth;
    val changed_last; /* loop.changed(): the arguments of its last call */
    int changed_called;
    node *rec;        /* a recursive for: what loop(items) runs again */
    jframe *scope;    /* where that for statement ran: what each level sees */
};

/* Jinja's select/map/unique/items filters are Python generators: they run
 * when first iterated (errors included), are always true, have no len(), and
 * a second loop over one sees nothing. */
enum { GEN_SELECT = 1, GEN_MAP, GEN_ITEMS, GEN_UNIQUE, GEN_REVERSED, GEN_BATCH, GEN_SLICE };
struct vgen {
    int kind, attr, keep; /* keep/attr: select, reject, selectattr, rejectattr */
    val input;
    struct jargs *args;
    const node *at;
    vlist *items; /* made on first use */
    size_t pos;   /* how many of them have been consumed */
};

typedef struct jctx {
    arena *ar;
    jframe *f;
    long iters, max_iters;
    int depth, max_depth;
    int edepth; /* C recursion of eval: long operator chains */
    size_t max_output, mem_limit;
    size_t live_out; /* bytes in output buffers still being filled */
    char *grow_p;    /* the string str_concat may extend in place */
    size_t grow_len, grow_cap;
    int raised;
    inferd_error *e;
} jctx;

/* Evaluated call arguments: positional, then name=value pairs. */
typedef struct jargs {
    val *pos;
    size_t npos;
    node **kw; /* E_KWARG nodes: the names */
    val *kwv;
    size_t nkw;
} jargs;

enum { FN_RANGE = 1, FN_DICT, FN_NAMESPACE, FN_RAISE, FN_STRFTIME, FN_CYCLER, FN_JOINER };

int jn_fail(jctx *c, const node *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int jn_undef_fail(jctx *c, const node *at, const val *u);
int jn_oom(jctx *c, const node *at);
int jn_too_deep(jctx *c, const node *at); /* a walk met JN_MAX_DEPTH */
val jn_undef(jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int jn_str(jctx *c, const node *at, const val *v, val *out);
/* markupsafe.escape(v): a Markup stays as it is, anything else becomes the
 * Markup of its str() with & < > ' " escaped. */
int jn_escape(jctx *c, const node *at, const val *v, val *out);
int jn_iterate(jctx *c, const node *at, const val *v, vlist **out);
/* The items of a generator, made on first use (not consumed). */
int jn_gen_items(jctx *c, vgen *g, vlist **out);
int jn_getattr(jctx *c, const node *at, val obj, const char *name, size_t n, val *out);
int jn_getitem(jctx *c, const node *at, val obj, val key, val *out);
int jn_compare(jctx *c, const node *at, int op, const val *a, const val *b, int *out);
int jn_call(jctx *c, const node *at, val fn, jargs *a, val *out);
int jn_filter(jctx *c, const node *at, const char *name, size_t n, val self, jargs *a, val *out);
int jn_test(jctx *c, const node *at, const char *name, size_t n, val self, jargs *a, int *out);
int jn_method(jctx *c, const node *at, vmethod *m, jargs *a, val *out);
int jn_func(jctx *c, const node *at, int fn, jargs *a, val *out);
/* Python's `fmt % args` (the %s %d %i %r forms). */
int jn_percent_format(jctx *c, const node *at, const val *fmt, const val *arg, val *out);
/* Methods Python's str, dict and list have, and those the immutable sandbox
 * refuses: 1 safe, -1 unsafe, 0 no such method. */
int jn_method_kind(vtype t, const char *name, size_t n);
val *jn_kwarg(jargs *a, const char *name);
/* Argument i of a builtin: positional i or keyword `name`, else NULL. */
val *jn_arg(jargs *a, size_t i, const char *name);

#endif
