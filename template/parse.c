/* Jinja2 lexer and parser: template source -> list of statement nodes.
 * The lexer follows jinja2/lexer.py rule for rule with trim_blocks and
 * lstrip_blocks on (the environment transformers uses), because whitespace
 * is where renderings most often differ from the reference. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <errno.h>

#include "template/jinja.h"

/* ---- tokens ---- */
enum { T_DATA, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_NAME,
       T_STRING, T_INT, T_FLOAT, T_OP, T_EOF };

typedef struct token {
    int type, line, col;
    const char *p; /* T_DATA/T_STRING: decoded text; T_NAME/T_OP: source */
    size_t n;
    int64_t i;
    double f;
} token;

typedef struct lexer {
    arena *ar;
    const char *src;
    size_t len, pos;
    int line;
    size_t line_start;
    token *toks;
    size_t ntok, cap;
    inferd_error *e;
} lexer;

/* Nesting deeper than this is refused at parse time: the evaluator recurses
 * once per level, so this bounds its C stack. */
#define MAX_NEST 200

static int syntax_err(inferd_error *e, int line, int col, const char *msg)
{
    err_set(e, "template syntax error at line %d, column %d: %s", line, col, msg);
    return -1;
}

static int push_tok(lexer *lx, int type, const char *p, size_t n, size_t at)
{
    if (lx->ntok == lx->cap) {
        size_t nc = lx->cap ? lx->cap * 2 : 256;
        token *t = realloc(lx->toks, nc * sizeof *t);
        if (!t) { err_set(lx->e, "out of memory"); return -1; }
        lx->toks = t;
        lx->cap = nc;
    }
    token *t = &lx->toks[lx->ntok++];
    memset(t, 0, sizeof *t);
    t->type = type;
    t->p = p;
    t->n = n;
    t->line = lx->line;
    t->col = (int)(at - lx->line_start) + 1;
    return 0;
}

/* Moves pos forward to `to`, counting lines. */
static void advance(lexer *lx, size_t to)
{
    for (size_t i = lx->pos; i < to; i++)
        if (lx->src[i] == '\n') { lx->line++; lx->line_start = i + 1; }
    lx->pos = to;
}

/* Python's \s on str: Unicode whitespace. Returns the byte length of a
 * whitespace character at s, or 0. */
static int ws_at(const char *s, size_t n)
{
    uint32_t cp;
    int k = utf8_decode(s, n, &cp);
    if (k <= 0) return 0;
    return py_isspace(cp) ? k : 0;
}

/* Length of text with trailing Unicode whitespace removed. */
static size_t rstrip_len(const char *s, size_t n)
{
    size_t end = n;
    while (end > 0) {
        size_t st = end - 1;
        while (st > 0 && ((unsigned char)s[st] & 0xC0) == 0x80 && end - st < 4) st--;
        if (!ws_at(s + st, end - st)) break;
        end = st;
    }
    return end;
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    int k;
    while (i < n && (k = ws_at(s + i, n - i)) > 0) i += (size_t)k;
    return i;
}

/* Emits the data before a tag with jinja's OptionalLStrip treatment. */
static int emit_data(lexer *lx, size_t from, size_t to, char sign, int is_var,
                     int line_starting)
{
    const char *t = lx->src + from;
    size_t n = to - from;
    if (sign == '-') {
        n = rstrip_len(t, n);
    } else if (sign != '+' && !is_var) {
        size_t l = n;
        while (l > 0 && t[l - 1] != '\n') l--;
        if (l > 0 || line_starting) {
            size_t j = l;
            while (j < n && (t[j] == ' ' || t[j] == '\t' || ws_at(t + j, n - j))) {
                int k = ws_at(t + j, n - j);
                j += k > 0 ? (size_t)k : 1;
            }
            if (j == n && n > l) n = l;
        }
    }
    if (n == 0) return 0;
    return push_tok(lx, T_DATA, t, n, from);
}

/* Matches a tag end at i: "+END", "-END\s*", "END" (+ "\n" when trim). Returns
 * the index after it, or 0 when there is none. */
static size_t match_end(const char *s, size_t n, size_t i, const char *end, int trim)
{
    size_t el = strlen(end);
    if (i < n && s[i] == '+' && i + 1 + el <= n && !memcmp(s + i + 1, end, el))
        return i + 1 + el;
    if (i < n && s[i] == '-' && i + 1 + el <= n && !memcmp(s + i + 1, end, el))
        return skip_ws(s, n, i + 1 + el);
    if (i + el <= n && !memcmp(s + i, end, el)) {
        i += el;
        if (trim && i < n && s[i] == '\n') i++;
        return i;
    }
    return 0;
}

/* {% raw %}: returns the index after the opening tag or 0. */
static size_t match_raw_begin(const char *s, size_t n, size_t i)
{
    i += 2;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    i = skip_ws(s, n, i);
    if (i + 3 > n || memcmp(s + i, "raw", 3)) return 0;
    i = skip_ws(s, n, i + 3);
    if (i + 3 <= n && !memcmp(s + i, "-%}", 3)) return skip_ws(s, n, i + 3);
    if (i + 2 <= n && !memcmp(s + i, "%}", 2)) return i + 2;
    return 0;
}

/* Finds {% endraw %} from i; stores where the tag starts, its sign and end. */
static int find_endraw(const char *s, size_t n, size_t i, size_t *tag, char *sign,
                       size_t *after)
{
    for (; i + 1 < n; i++) {
        if (s[i] != '{' || s[i + 1] != '%') continue;
        size_t j = i + 2;
        char sg = 0;
        if (j < n && (s[j] == '-' || s[j] == '+')) sg = s[j++];
        j = skip_ws(s, n, j);
        if (j + 6 > n || memcmp(s + j, "endraw", 6)) continue;
        j = skip_ws(s, n, j + 6);
        size_t e = match_end(s, n, j, "%}", 1);
        if (!e) continue;
        *tag = i; *sign = sg; *after = e;
        return 0;
    }
    return -1;
}

static const char *const OPS[] = {
    "**", "//", "==", "!=", ">=", "<=",
    "+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}", ">", "<",
    "=", ".", ":", "|", ",", ";", NULL,
};

/* Decodes a string literal body the way Python's "unicode-escape" does. */
static int unescape(lexer *lx, const char *s, size_t n, token *t)
{
    char *o = ar_alloc(lx->ar, n + 1);
    if (!o) { err_set(lx->e, "template too large"); return -1; }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) { o[k++] = s[i]; continue; }
        char c = s[++i];
        uint32_t cp = 0;
        int digits = 0;
        switch (c) {
        case 'n': o[k++] = '\n'; break;
        case 't': o[k++] = '\t'; break;
        case 'r': o[k++] = '\r'; break;
        case '\\': o[k++] = '\\'; break;
        case '\'': o[k++] = '\''; break;
        case '"': o[k++] = '"'; break;
        case 'a': o[k++] = '\a'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'v': o[k++] = '\v'; break;
        case '\n': break; /* line continuation */
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        default:
            if (c >= '0' && c <= '7') {
                int m = 0;
                while (m < 3 && i < n && s[i] >= '0' && s[i] <= '7') {
                    cp = cp * 8 + (uint32_t)(s[i] - '0');
                    i++; m++;
                }
                i--;
                char u[4];
                int w = utf8_encode(cp, u);
                memcpy(o + k, u, (size_t)w); /* octal <= 0777: at most 2 bytes */
                k += (size_t)w;
            } else {
                o[k++] = '\\';
                o[k++] = c;
            }
        }
        if (digits) {
            if (i + (size_t)digits >= n) {
                return syntax_err(lx->e, t->line, t->col, "truncated \\x/\\u escape in string");
            }
            for (int d = 1; d <= digits; d++) {
                char h = s[i + (size_t)d];
                int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                      : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (v < 0)
                    return syntax_err(lx->e, t->line, t->col, "truncated \\x/\\u escape in string");
                cp = cp * 16 + (uint32_t)v;
            }
            i += (size_t)digits;
            if (cp > 0x10FFFF)
                return syntax_err(lx->e, t->line, t->col, "illegal Unicode character in string");
            char u[4];
            int w = utf8_encode(cp, u);
            /* an escape of >= 2 digits always has room for its encoding */
            memcpy(o + k, u, (size_t)w);
            k += (size_t)w;
        }
    }
    o[k] = 0;
    t->p = o;
    t->n = k;
    return 0;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_name0(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

/* Lexes one expression token at lx->pos (inside {{ }} or {% %}). */
static int lex_expr_token(lexer *lx, char *balance, int *nbal)
{
    const char *s = lx->src;
    size_t n = lx->len, i = lx->pos;
    char c = s[i];
    if (c == '\'' || c == '"') {
        size_t j = i + 1;
        while (j < n && s[j] != c) j += s[j] == '\\' ? 2 : 1;
        if (j >= n) return syntax_err(lx->e, lx->line, (int)(i - lx->line_start) + 1,
                                      "unexpected end of template in a string literal");
        if (push_tok(lx, T_STRING, NULL, 0, i)) return -1;
        if (unescape(lx, s + i + 1, j - i - 1, &lx->toks[lx->ntok - 1])) return -1;
        advance(lx, j + 1);
        return 0;
    }
    if (is_digit(c)) {
        char buf[128];
        size_t bl = 0, end;
        if (c == '0' && i + 2 < n && strchr("xXoObB", s[i + 1]) && s[i + 1]) {
            /* 0x.., 0o.., 0b.. integers */
            int base = s[i + 1] == 'x' || s[i + 1] == 'X' ? 16 : s[i + 1] == 'o' || s[i + 1] == 'O' ? 8 : 2;
            size_t m = i + 2;
            while (m < n && (s[m] == '_' || (is_digit(s[m]) && s[m] - '0' < base) ||
                             (base == 16 && strchr("abcdefABCDEF", s[m]) && s[m]))) {
                if (s[m] != '_' && bl < sizeof buf - 1) buf[bl++] = s[m];
                m++;
            }
            buf[bl] = 0;
            if (push_tok(lx, T_INT, s + i, m - i, i)) return -1;
            token *t = &lx->toks[lx->ntok - 1];
            errno = 0;
            t->i = strtoll(buf, NULL, base);
            if (errno == ERANGE || !bl)
                return syntax_err(lx->e, t->line, t->col, "invalid integer literal");
            advance(lx, m);
            return 0;
        }
        /* float: digits (. digits)? (e[+-]digits)? with at least one of the two */
        size_t j = i;
        while (j < n && (is_digit(s[j]) || (s[j] == '_' && j + 1 < n && is_digit(s[j + 1])))) j++;
        int isf = 0;
        size_t k = j;
        int after_dot = i > 0 && s[i - 1] == '.';
        if (k + 1 < n && s[k] == '.' && is_digit(s[k + 1]) && !after_dot) {
            k++;
            while (k < n && (is_digit(s[k]) || (s[k] == '_' && k + 1 < n && is_digit(s[k + 1])))) k++;
            isf = 1;
        }
        if (k < n && (s[k] == 'e' || s[k] == 'E') && !after_dot) {
            size_t m = k + 1;
            if (m < n && (s[m] == '+' || s[m] == '-')) m++;
            if (m < n && is_digit(s[m])) {
                while (m < n && (is_digit(s[m]) || s[m] == '_')) m++;
                k = m;
                isf = 1;
            }
        }
        end = isf ? k : j;
        for (size_t q = i; q < end && bl < sizeof buf - 1; q++)
            if (s[q] != '_') buf[bl++] = s[q];
        buf[bl] = 0;
        if (push_tok(lx, isf ? T_FLOAT : T_INT, s + i, end - i, i)) return -1;
        token *t = &lx->toks[lx->ntok - 1];
        errno = 0;
        if (isf) {
            t->f = strtod(buf, NULL);
        } else {
            t->i = strtoll(buf, NULL, 10);
            if (errno == ERANGE)
                return syntax_err(lx->e, t->line, t->col, "integer literal too large");
        }
        advance(lx, end);
        return 0;
    }
    if (is_name0(c)) {
        size_t j = i;
        while (j < n && (is_name0(s[j]) || is_digit(s[j]))) j++;
        if (push_tok(lx, T_NAME, s + i, j - i, i)) return -1;
        advance(lx, j);
        return 0;
    }
    for (int k = 0; OPS[k]; k++) {
        size_t ol = strlen(OPS[k]);
        if (i + ol > n || memcmp(s + i, OPS[k], ol)) continue;
        if (ol == 1 && (c == '(' || c == '[' || c == '{')) {
            if (*nbal >= MAX_NEST)
                return syntax_err(lx->e, lx->line, (int)(i - lx->line_start) + 1, "brackets nested too deeply");
            balance[(*nbal)++] = c == '(' ? ')' : c == '[' ? ']' : '}';
        } else if (ol == 1 && (c == ')' || c == ']' || c == '}')) {
            char msg[64];
            if (!*nbal) {
                snprintf(msg, sizeof msg, "unexpected '%c'", c);
                return syntax_err(lx->e, lx->line, (int)(i - lx->line_start) + 1, msg);
            }
            char want = balance[--(*nbal)];
            if (want != c) {
                snprintf(msg, sizeof msg, "unexpected '%c', expected '%c'", c, want);
                return syntax_err(lx->e, lx->line, (int)(i - lx->line_start) + 1, msg);
            }
        }
        if (push_tok(lx, T_OP, s + i, ol, i)) return -1;
        advance(lx, i + ol);
        return 0;
    }
    char msg[64];
    snprintf(msg, sizeof msg, "unexpected char '%c'", c);
    return syntax_err(lx->e, lx->line, (int)(i - lx->line_start) + 1, msg);
}

static int lex(lexer *lx)
{
    const char *s = lx->src;
    size_t n = lx->len;
    int line_starting = 1;
    char balance[MAX_NEST];
    while (lx->pos < n) {
        /* root: text up to the next {{, {% or {# */
        size_t i = lx->pos, tag = n;
        for (size_t j = i; j + 1 < n; j++)
            if (s[j] == '{' && (s[j + 1] == '{' || s[j + 1] == '%' || s[j + 1] == '#')) { tag = j; break; }
        if (tag == n) {
            if (push_tok(lx, T_DATA, s + i, n - i, i)) return -1;
            advance(lx, n);
            break;
        }
        char kind = s[tag + 1];
        char sign = tag + 2 < n && (s[tag + 2] == '-' || s[tag + 2] == '+') ? s[tag + 2] : 0;
        if (kind == '%') {
            size_t after = match_raw_begin(s, n, tag);
            if (after) {
                if (emit_data(lx, i, tag, sign, 0, line_starting)) return -1;
                advance(lx, after);
                size_t etag, eafter;
                char esign;
                if (find_endraw(s, n, after, &etag, &esign, &eafter))
                    return syntax_err(lx->e, lx->line, (int)(tag - lx->line_start) + 1,
                                      "missing end of raw directive");
                /* line_starting after "{% raw %}" is false: it ends in '}' */
                if (emit_data(lx, after, etag, esign, 0, s[after - 1] == '\n')) return -1;
                advance(lx, eafter);
                line_starting = s[eafter - 1] == '\n';
                continue;
            }
        }
        if (emit_data(lx, i, tag, sign, kind == '{', line_starting)) return -1;
        advance(lx, tag);
        int tline = lx->line, tcol = (int)(tag - lx->line_start) + 1;
        advance(lx, tag + 2 + (sign ? 1 : 0));
        if (kind == '#') {
            size_t j = lx->pos, e = 0;
            for (; j < n; j++)
                if ((e = match_end(s, n, j, "#}", 1))) break;
            if (!e) return syntax_err(lx->e, tline, tcol, "missing end of comment tag");
            advance(lx, e);
            line_starting = s[e - 1] == '\n';
            continue;
        }
        int is_var = kind == '{';
        if (push_tok(lx, is_var ? T_VAR_BEGIN : T_BLOCK_BEGIN, s + tag, 2, tag)) return -1;
        int nbal = 0;
        for (;;) {
            lx->pos = skip_ws(s, n, lx->pos);
            advance(lx, lx->pos);
            if (lx->pos >= n)
                return syntax_err(lx->e, tline, tcol, is_var ? "unexpected end of template, expected '}}'"
                                                             : "unexpected end of template, expected '%}'");
            if (!nbal) {
                size_t e = 0;
                if (is_var) {
                    if (s[lx->pos] == '-' && lx->pos + 3 <= n && !memcmp(s + lx->pos + 1, "}}", 2))
                        e = skip_ws(s, n, lx->pos + 3);
                    else if (lx->pos + 2 <= n && !memcmp(s + lx->pos, "}}", 2))
                        e = lx->pos + 2;
                } else {
                    e = match_end(s, n, lx->pos, "%}", 1);
                }
                if (e) {
                    if (push_tok(lx, is_var ? T_VAR_END : T_BLOCK_END, s + lx->pos, 2, lx->pos)) return -1;
                    advance(lx, e);
                    line_starting = s[e - 1] == '\n';
                    break;
                }
            }
            if (lex_expr_token(lx, balance, &nbal)) return -1;
        }
    }
    return push_tok(lx, T_EOF, s + n, 0, n);
}

/* ---- parser ---- */
typedef struct parser {
    arena *ar;
    token *t;
    size_t i, n;
    int depth;
    inferd_error *e;
} parser;

static token *cur(parser *p) { return &p->t[p->i]; }
static token *peek(parser *p, size_t k) { return &p->t[p->i + k < p->n ? p->i + k : p->n - 1]; }

static int is_op(token *t, const char *op)
{
    return t->type == T_OP && t->n == strlen(op) && !memcmp(t->p, op, t->n);
}

static int is_name(token *t, const char *nm)
{
    return t->type == T_NAME && t->n == strlen(nm) && !memcmp(t->p, nm, t->n);
}

static const char *tok_desc(token *t, char *buf, size_t n)
{
    switch (t->type) {
    case T_EOF: return "end of template";
    case T_VAR_END: return "end of print statement";
    case T_BLOCK_END: return "end of statement block";
    case T_DATA: return "template data";
    case T_STRING: return "string";
    default:
        snprintf(buf, n, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->p);
        return buf;
    }
}

static int perr(parser *p, token *t, const char *fmt, const char *arg)
{
    char msg[256];
    snprintf(msg, sizeof msg, fmt, arg);
    return syntax_err(p->e, t->line, t->col, msg);
}

static int unexpected(parser *p)
{
    char b[64];
    return perr(p, cur(p), "unexpected %s", tok_desc(cur(p), b, sizeof b));
}

static int expect_op(parser *p, const char *op)
{
    if (!is_op(cur(p), op)) {
        char b[64], msg[160];
        snprintf(msg, sizeof msg, "expected '%s', got %s", op, tok_desc(cur(p), b, sizeof b));
        return syntax_err(p->e, cur(p)->line, cur(p)->col, msg);
    }
    p->i++;
    return 0;
}

static node *mk(parser *p, int kind, token *at)
{
    node *nd = ar_alloc(p->ar, sizeof *nd);
    if (!nd) { err_set(p->e, "template too large"); return NULL; }
    nd->kind = (uint8_t)kind;
    nd->line = at->line;
    nd->col = at->col;
    return nd;
}

static int nl_push(parser *p, nodelist *l, node *nd)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 4;
        node **v = ar_alloc(p->ar, nc * sizeof *v);
        if (!v) { err_set(p->e, "template too large"); return -1; }
        if (l->n) memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
        l->cap = nc;
    }
    l->v[l->n++] = nd;
    return 0;
}

static node *parse_expr(parser *p);
static node *parse_or(parser *p);
static node *parse_unary(parser *p, int with_filter);
static int parse_body(parser *p, nodelist *body, const char *const *ends);

static int enter(parser *p)
{
    if (++p->depth > MAX_NEST) {
        syntax_err(p->e, cur(p)->line, cur(p)->col, "expression or blocks nested too deeply");
        return -1;
    }
    return 0;
}

/* Call arguments after '(' up to ')': positional into args, name=value into
 * kwargs. */
static int parse_call_args(parser *p, node *nd)
{
    if (expect_op(p, "(")) return -1;
    while (!is_op(cur(p), ")")) {
        if (nd->args.n + nd->kwargs.n && expect_op(p, ",")) return -1;
        if (is_op(cur(p), ")")) break;
        if (is_op(cur(p), "*") || is_op(cur(p), "**"))
            return perr(p, cur(p), "%s", "*args and **kwargs in calls are not supported");
        if (cur(p)->type == T_NAME && is_op(peek(p, 1), "=")) {
            node *kw = mk(p, E_KWARG, cur(p));
            if (!kw) return -1;
            kw->name = cur(p)->p;
            kw->name_len = cur(p)->n;
            p->i += 2;
            if (!(kw->a = parse_expr(p)) || nl_push(p, &nd->kwargs, kw)) return -1;
        } else {
            if (nd->kwargs.n)
                return perr(p, cur(p), "%s", "positional argument after keyword argument");
            node *a = parse_expr(p);
            if (!a || nl_push(p, &nd->args, a)) return -1;
        }
    }
    p->i++;
    return 0;
}

static node *parse_primary(parser *p)
{
    token *t = cur(p);
    node *nd = NULL;
    if (t->type == T_NAME) {
        nd = mk(p, E_CONST, t);
        if (!nd) return NULL;
        if (is_name(t, "true") || is_name(t, "True")) nd->v = v_bool(1);
        else if (is_name(t, "false") || is_name(t, "False")) nd->v = v_bool(0);
        else if (is_name(t, "none") || is_name(t, "None")) nd->v = V_NONE_VAL;
        else { nd->kind = E_NAME; nd->name = t->p; nd->name_len = t->n; }
        p->i++;
        return nd;
    }
    if (t->type == T_STRING) {
        /* adjacent literals concatenate, as in Python */
        nd = mk(p, E_CONST, t);
        if (!nd) return NULL;
        strbuf b = {0};
        while (cur(p)->type == T_STRING) {
            sb_append(&b, cur(p)->p, cur(p)->n);
            p->i++;
        }
        nd->v = v_strdup(p->ar, b.p ? b.p : "", b.n);
        sb_free(&b);
        if (nd->v.t != V_STR) { err_set(p->e, "template too large"); return NULL; }
        return nd;
    }
    if (t->type == T_INT || t->type == T_FLOAT) {
        nd = mk(p, E_CONST, t);
        if (!nd) return NULL;
        nd->v = t->type == T_INT ? v_int(t->i) : v_float(t->f);
        p->i++;
        return nd;
    }
    if (is_op(t, "(")) {
        p->i++;
        if (is_op(cur(p), ")")) {
            p->i++;
            return mk(p, E_TUPLE, t);
        }
        node *first = parse_expr(p);
        if (!first) return NULL;
        if (is_op(cur(p), ",")) {
            nd = mk(p, E_TUPLE, t);
            if (!nd || nl_push(p, &nd->args, first)) return NULL;
            while (is_op(cur(p), ",")) {
                p->i++;
                if (is_op(cur(p), ")")) break;
                node *x = parse_expr(p);
                if (!x || nl_push(p, &nd->args, x)) return NULL;
            }
            first = nd;
        }
        if (expect_op(p, ")")) return NULL;
        return first;
    }
    if (is_op(t, "[")) {
        p->i++;
        nd = mk(p, E_LIST, t);
        if (!nd) return NULL;
        while (!is_op(cur(p), "]")) {
            if (nd->args.n && expect_op(p, ",")) return NULL;
            if (is_op(cur(p), "]")) break;
            node *x = parse_expr(p);
            if (!x || nl_push(p, &nd->args, x)) return NULL;
        }
        p->i++;
        return nd;
    }
    if (is_op(t, "{")) {
        p->i++;
        nd = mk(p, E_DICT, t);
        if (!nd) return NULL;
        while (!is_op(cur(p), "}")) {
            if (nd->args.n && expect_op(p, ",")) return NULL;
            if (is_op(cur(p), "}")) break;
            node *k = parse_expr(p);
            if (!k || expect_op(p, ":")) return NULL;
            node *v = parse_expr(p);
            if (!v || nl_push(p, &nd->args, k) || nl_push(p, &nd->kwargs, v)) return NULL;
        }
        p->i++;
        return nd;
    }
    unexpected(p);
    return NULL;
}

/* x[...] after '[': an index or a slice a:b:c */
static node *parse_subscript(parser *p, node *obj, token *at)
{
    node *parts[3] = {0};
    int k = 0, is_slice = 0;
    for (;;) {
        if (!is_op(cur(p), ":") && !is_op(cur(p), "]")) {
            if (!(parts[k] = parse_expr(p))) return NULL;
        }
        if (is_op(cur(p), ":") && k < 2) {
            is_slice = 1;
            k++;
            p->i++;
            continue;
        }
        break;
    }
    if (expect_op(p, "]")) return NULL;
    node *nd = mk(p, is_slice ? E_SLICE : E_ITEM, at);
    if (!nd) return NULL;
    nd->a = obj;
    nd->b = parts[0];
    nd->c = parts[1];
    nd->d = parts[2];
    if (!is_slice && !parts[0]) { unexpected(p); return NULL; }
    return nd;
}

static node *parse_postfix(parser *p, node *nd)
{
    for (;;) {
        token *t = cur(p);
        if (is_op(t, ".")) {
            p->i++;
            token *a = cur(p);
            node *x;
            if (a->type == T_NAME) {
                if (!(x = mk(p, E_ATTR, t))) return NULL;
                x->name = a->p;
                x->name_len = a->n;
            } else if (a->type == T_INT) {
                node *k = mk(p, E_CONST, a);
                if (!k || !(x = mk(p, E_ITEM, t))) return NULL;
                k->v = v_int(a->i);
                x->b = k;
            } else {
                perr(p, a, "%s", "expected a name after '.'");
                return NULL;
            }
            p->i++;
            x->a = nd;
            nd = x;
        } else if (is_op(t, "[")) {
            p->i++;
            if (enter(p) || !(nd = parse_subscript(p, nd, t))) return NULL;
            p->depth--;
        } else if (is_op(t, "(")) {
            node *x = mk(p, E_CALL, t);
            if (!x) return NULL;
            x->a = nd;
            if (enter(p) || parse_call_args(p, x)) return NULL;
            p->depth--;
            nd = x;
        } else {
            return nd;
        }
    }
}

static int parse_dotted_name(parser *p, node *nd)
{
    if (cur(p)->type != T_NAME) return perr(p, cur(p), "%s", "expected a filter or test name");
    nd->name = cur(p)->p;
    nd->name_len = cur(p)->n;
    p->i++;
    return 0;
}

static node *parse_filter_expr(parser *p, node *nd)
{
    for (;;) {
        token *t = cur(p);
        if (is_op(t, "|")) {
            p->i++;
            node *f = mk(p, E_FILTER, t);
            if (!f || parse_dotted_name(p, f)) return NULL;
            f->a = nd;
            if (is_op(cur(p), "(") && parse_call_args(p, f)) return NULL;
            nd = f;
        } else if (is_name(t, "is")) {
            p->i++;
            node *f = mk(p, E_TEST, t);
            if (!f) return NULL;
            if (is_name(cur(p), "not")) { f->neg = 1; p->i++; }
            if (parse_dotted_name(p, f)) return NULL;
            f->a = nd;
            token *c = cur(p);
            if (is_op(c, "(")) {
                if (parse_call_args(p, f)) return NULL;
            } else if ((c->type == T_NAME && !is_name(c, "else") && !is_name(c, "or") &&
                        !is_name(c, "and")) ||
                       c->type == T_STRING || c->type == T_INT || c->type == T_FLOAT ||
                       is_op(c, "[") || is_op(c, "{")) {
                /* `x is divisibleby 3`: one bare argument */
                node *arg = parse_primary(p);
                if (!arg || !(arg = parse_postfix(p, arg)) || nl_push(p, &f->args, arg)) return NULL;
            }
            nd = f;
        } else if (is_op(t, "(")) {
            node *x = mk(p, E_CALL, t);
            if (!x) return NULL;
            x->a = nd;
            if (parse_call_args(p, x)) return NULL;
            nd = x;
        } else {
            return nd;
        }
    }
}

static node *parse_unary(parser *p, int with_filter)
{
    token *t = cur(p);
    node *nd;
    if (enter(p)) return NULL;
    if (is_op(t, "-") || is_op(t, "+")) {
        p->i++;
        if (!(nd = mk(p, is_op(t, "-") ? E_NEG : E_POS, t))) return NULL;
        if (!(nd->a = parse_unary(p, 0))) return NULL;
    } else {
        if (!(nd = parse_primary(p))) return NULL;
    }
    if (!(nd = parse_postfix(p, nd))) return NULL;
    if (with_filter && !(nd = parse_filter_expr(p, nd))) return NULL;
    p->depth--;
    return nd;
}

static node *binop(parser *p, token *t, int op, node *a, node *b)
{
    node *nd = mk(p, E_BIN, t);
    if (!nd) return NULL;
    nd->op = (uint8_t)op;
    nd->a = a;
    nd->b = b;
    return nd;
}

static node *parse_pow(parser *p)
{
    node *l = parse_unary(p, 1);
    while (l && is_op(cur(p), "**")) {
        token *t = cur(p);
        p->i++;
        node *r = parse_unary(p, 1);
        if (!r) return NULL;
        l = binop(p, t, OP_POW, l, r);
    }
    return l;
}

static node *parse_math2(parser *p)
{
    node *l = parse_pow(p);
    for (;;) {
        token *t = cur(p);
        int op = is_op(t, "*") ? OP_MUL : is_op(t, "/") ? OP_DIV : is_op(t, "//") ? OP_FLOORDIV
               : is_op(t, "%") ? OP_MOD : -1;
        if (!l || op < 0) return l;
        p->i++;
        node *r = parse_pow(p);
        if (!r) return NULL;
        l = binop(p, t, op, l, r);
    }
}

static node *parse_concat(parser *p)
{
    node *l = parse_math2(p);
    while (l && is_op(cur(p), "~")) {
        token *t = cur(p);
        p->i++;
        node *r = parse_math2(p);
        if (!r) return NULL;
        l = binop(p, t, OP_CONCAT, l, r);
    }
    return l;
}

static node *parse_math1(parser *p)
{
    node *l = parse_concat(p);
    for (;;) {
        token *t = cur(p);
        int op = is_op(t, "+") ? OP_ADD : is_op(t, "-") ? OP_SUB : -1;
        if (!l || op < 0) return l;
        p->i++;
        node *r = parse_concat(p);
        if (!r) return NULL;
        l = binop(p, t, op, l, r);
    }
}

/* a < b == c: E_CMP with operands a, b, c in args and the operators in
 * kwargs' op fields (Python chains them with and). */
static node *parse_compare(parser *p)
{
    token *t0 = cur(p);
    node *l = parse_math1(p);
    if (!l) return NULL;
    node *cmp = NULL;
    for (;;) {
        token *t = cur(p);
        int op = is_op(t, "==") ? OP_EQ : is_op(t, "!=") ? OP_NE : is_op(t, "<") ? OP_LT
               : is_op(t, "<=") ? OP_LE : is_op(t, ">") ? OP_GT : is_op(t, ">=") ? OP_GE
               : is_name(t, "in") ? OP_IN : -1;
        if (op < 0 && is_name(t, "not") && is_name(peek(p, 1), "in")) {
            op = OP_NOTIN;
            p->i++;
        }
        if (op < 0) break;
        p->i++;
        node *r = parse_math1(p);
        if (!r) return NULL;
        if (!cmp) {
            if (!(cmp = mk(p, E_CMP, t0)) || nl_push(p, &cmp->args, l)) return NULL;
        }
        node *o = mk(p, E_KWARG, t);
        if (!o) return NULL;
        o->op = (uint8_t)op;
        if (nl_push(p, &cmp->args, r) || nl_push(p, &cmp->kwargs, o)) return NULL;
    }
    return cmp ? cmp : l;
}

static node *parse_not(parser *p)
{
    token *t = cur(p);
    if (is_name(t, "not")) {
        p->i++;
        if (enter(p)) return NULL;
        node *nd = mk(p, E_NOT, t);
        if (!nd || !(nd->a = parse_not(p))) return NULL;
        p->depth--;
        return nd;
    }
    return parse_compare(p);
}

static node *parse_and(parser *p)
{
    node *l = parse_not(p);
    while (l && is_name(cur(p), "and")) {
        token *t = cur(p);
        p->i++;
        node *r = parse_not(p), *nd;
        if (!r || !(nd = mk(p, E_AND, t))) return NULL;
        nd->a = l;
        nd->b = r;
        l = nd;
    }
    return l;
}

static node *parse_or(parser *p)
{
    node *l = parse_and(p);
    while (l && is_name(cur(p), "or")) {
        token *t = cur(p);
        p->i++;
        node *r = parse_and(p), *nd;
        if (!r || !(nd = mk(p, E_OR, t))) return NULL;
        nd->a = l;
        nd->b = r;
        l = nd;
    }
    return l;
}

/* a if cond else b (the else part is optional: undefined) */
static node *parse_expr(parser *p)
{
    if (enter(p)) return NULL;
    node *l = parse_or(p);
    while (l && is_name(cur(p), "if")) {
        token *t = cur(p);
        p->i++;
        node *nd = mk(p, E_COND, t);
        if (!nd || !(nd->a = parse_or(p))) return NULL;
        nd->b = l;
        if (is_name(cur(p), "else")) {
            p->i++;
            if (!(nd->c = parse_expr(p))) return NULL;
        }
        l = nd;
    }
    p->depth--;
    return l;
}

/* expr or a, b, c (a tuple without parentheses) */
static node *parse_tuple(parser *p, int names_only)
{
    token *t = cur(p);
    node *first = names_only ? parse_primary(p) : parse_expr(p);
    if (!first) return NULL;
    if (names_only && first->kind != E_NAME) {
        perr(p, t, "%s", "can only assign to names here");
        return NULL;
    }
    if (!is_op(cur(p), ",")) return first;
    node *tup = mk(p, E_TUPLE, t);
    if (!tup || nl_push(p, &tup->args, first)) return NULL;
    while (is_op(cur(p), ",")) {
        p->i++;
        if (cur(p)->type == T_BLOCK_END || cur(p)->type == T_VAR_END || is_op(cur(p), "=") ||
            is_name(cur(p), "in"))
            break;
        token *ti = cur(p);
        node *x = names_only ? parse_primary(p) : parse_expr(p);
        if (!x) return NULL;
        if (names_only && x->kind != E_NAME) {
            perr(p, ti, "%s", "can only assign to names here");
            return NULL;
        }
        if (nl_push(p, &tup->args, x)) return NULL;
    }
    return tup;
}

static int expect_block_end(parser *p)
{
    if (cur(p)->type != T_BLOCK_END) {
        char b[64];
        return perr(p, cur(p), "expected end of statement block, got %s", tok_desc(cur(p), b, sizeof b));
    }
    p->i++;
    return 0;
}

static const char *const END_FOR[] = {"endfor", "else", NULL};
static const char *const END_FOR2[] = {"endfor", NULL};
static const char *const END_IF[] = {"endif", "elif", "else", NULL};
static const char *const END_IF2[] = {"endif", NULL};
static const char *const END_MACRO[] = {"endmacro", NULL};
static const char *const END_CALL[] = {"endcall", NULL};
static const char *const END_SET[] = {"endset", NULL};
static const char *const END_FILTER[] = {"endfilter", NULL};
static const char *const END_WITH[] = {"endwith", NULL};
static const char *const END_GEN[] = {"endgeneration", NULL};

/* After parse_body stops at an end tag: which one (the tag name token). */
static token *end_tag(parser *p) { return cur(p); }

static node *parse_if(parser *p, token *t)
{
    node *nd = mk(p, S_IF, t);
    if (!nd || !(nd->a = parse_expr(p)) || expect_block_end(p)) return NULL;
    if (parse_body(p, &nd->body, END_IF)) return NULL;
    token *e = end_tag(p);
    p->i++;
    if (is_name(e, "elif")) {
        node *sub = parse_if(p, e);
        if (!sub || nl_push(p, &nd->orelse, sub)) return NULL;
        return nd; /* the nested if consumed endif */
    }
    if (is_name(e, "else")) {
        if (expect_block_end(p) || parse_body(p, &nd->orelse, END_IF2)) return NULL;
        p->i++;
    }
    if (expect_block_end(p)) return NULL;
    return nd;
}

static node *parse_for(parser *p, token *t)
{
    node *nd = mk(p, S_FOR, t);
    if (!nd || !(nd->a = parse_tuple(p, 1))) return NULL;
    if (!is_name(cur(p), "in")) {
        perr(p, cur(p), "%s", "expected 'in' in for loop");
        return NULL;
    }
    p->i++;
    /* the iterable: no conditional expression, so `if` starts the filter */
    if (!(nd->b = parse_or(p))) return NULL;
    if (is_op(cur(p), ",")) {
        node *tup = mk(p, E_TUPLE, cur(p));
        if (!tup || nl_push(p, &tup->args, nd->b)) return NULL;
        while (is_op(cur(p), ",")) {
            p->i++;
            node *x = parse_or(p);
            if (!x || nl_push(p, &tup->args, x)) return NULL;
        }
        nd->b = tup;
    }
    if (is_name(cur(p), "if")) {
        p->i++;
        if (!(nd->c = parse_expr(p))) return NULL;
    }
    if (is_name(cur(p), "recursive")) {
        p->i++;
        nd->neg = 1;
    }
    if (expect_block_end(p) || parse_body(p, &nd->body, END_FOR)) return NULL;
    token *e = end_tag(p);
    p->i++;
    if (is_name(e, "else")) {
        if (expect_block_end(p) || parse_body(p, &nd->orelse, END_FOR2)) return NULL;
        p->i++;
    }
    if (expect_block_end(p)) return NULL;
    return nd;
}

static node *parse_set(parser *p, token *t)
{
    token *tt = cur(p);
    node *target;
    if (tt->type == T_NAME && is_op(peek(p, 1), ".") && peek(p, 2)->type == T_NAME) {
        /* {% set ns.attr = ... %} */
        target = mk(p, E_ATTR, tt);
        node *obj = mk(p, E_NAME, tt);
        if (!target || !obj) return NULL;
        obj->name = tt->p;
        obj->name_len = tt->n;
        target->a = obj;
        target->name = peek(p, 2)->p;
        target->name_len = peek(p, 2)->n;
        p->i += 3;
    } else if (!(target = parse_tuple(p, 1))) {
        return NULL;
    }
    if (is_op(cur(p), "=")) {
        p->i++;
        node *nd = mk(p, S_SET, t);
        if (!nd) return NULL;
        nd->a = target;
        if (!(nd->b = parse_tuple(p, 0)) || expect_block_end(p)) return NULL;
        return nd;
    }
    /* block set, optionally filtered: {% set x | trim %}...{% endset %} */
    node *nd = mk(p, S_SETBLOCK, t);
    if (!nd) return NULL;
    nd->a = target;
    if (target->kind != E_NAME && target->kind != E_ATTR) {
        perr(p, tt, "%s", "block set assigns to one name");
        return NULL;
    }
    if (is_op(cur(p), "|")) {
        node *dummy = mk(p, E_CONST, cur(p));
        if (!dummy || !(nd->b = parse_filter_expr(p, dummy))) return NULL;
    }
    if (expect_block_end(p) || parse_body(p, &nd->body, END_SET)) return NULL;
    p->i++;
    if (expect_block_end(p)) return NULL;
    return nd;
}

/* Macro or call-block parameter list: (a, b=default, ...) */
static int parse_params(parser *p, node *nd)
{
    if (expect_op(p, "(")) return -1;
    while (!is_op(cur(p), ")")) {
        if (nd->args.n && expect_op(p, ",")) return -1;
        if (cur(p)->type != T_NAME) return perr(p, cur(p), "%s", "expected a parameter name");
        node *prm = mk(p, E_NAME, cur(p));
        if (!prm) return -1;
        prm->name = cur(p)->p;
        prm->name_len = cur(p)->n;
        p->i++;
        if (is_op(cur(p), "=")) {
            p->i++;
            if (!(prm->a = parse_expr(p))) return -1;
        }
        if (nl_push(p, &nd->args, prm)) return -1;
    }
    p->i++;
    return 0;
}

static node *parse_macro(parser *p, token *t)
{
    node *nd = mk(p, S_MACRO, t);
    if (!nd) return NULL;
    if (cur(p)->type != T_NAME) { perr(p, cur(p), "%s", "expected a macro name"); return NULL; }
    nd->name = cur(p)->p;
    nd->name_len = cur(p)->n;
    p->i++;
    if (parse_params(p, nd) || expect_block_end(p) || parse_body(p, &nd->body, END_MACRO))
        return NULL;
    p->i++;
    if (expect_block_end(p)) return NULL;
    return nd;
}

static node *parse_call_block(parser *p, token *t)
{
    node *nd = mk(p, S_CALLBLOCK, t);
    if (!nd) return NULL;
    nd->name = "caller";
    nd->name_len = 6;
    if (is_op(cur(p), "(") && parse_params(p, nd)) return NULL;
    if (!(nd->a = parse_expr(p))) return NULL;
    if (nd->a->kind != E_CALL) { perr(p, t, "%s", "expected a macro call after 'call'"); return NULL; }
    if (expect_block_end(p) || parse_body(p, &nd->body, END_CALL)) return NULL;
    p->i++;
    if (expect_block_end(p)) return NULL;
    return nd;
}

static node *parse_filter_block(parser *p, token *t)
{
    node *nd = mk(p, S_FILTERBLOCK, t);
    node *dummy = mk(p, E_CONST, t);
    if (!nd || !dummy) return NULL;
    if (!is_op(cur(p), "|")) {
        /* `{% filter upper %}`: the first filter has no leading pipe */
        node *f = mk(p, E_FILTER, cur(p));
        if (!f || parse_dotted_name(p, f)) return NULL;
        f->a = dummy;
        if (is_op(cur(p), "(") && parse_call_args(p, f)) return NULL;
        dummy = f;
    }
    if (!(nd->b = parse_filter_expr(p, dummy))) return NULL;
    if (expect_block_end(p) || parse_body(p, &nd->body, END_FILTER)) return NULL;
    p->i++;
    if (expect_block_end(p)) return NULL;
    return nd;
}

static node *parse_with(parser *p, token *t)
{
    node *nd = mk(p, S_WITH, t);
    if (!nd) return NULL;
    while (cur(p)->type != T_BLOCK_END) {
        if (nd->args.n && expect_op(p, ",")) return NULL;
        node *target = parse_tuple(p, 1);
        if (!target || expect_op(p, "=")) return NULL;
        node *v = parse_expr(p);
        if (!v || nl_push(p, &nd->args, target) || nl_push(p, &nd->kwargs, v)) return NULL;
    }
    if (expect_block_end(p) || parse_body(p, &nd->body, END_WITH)) return NULL;
    p->i++;
    if (expect_block_end(p)) return NULL;
    return nd;
}

static node *parse_statement(parser *p)
{
    token *t = cur(p);
    if (t->type != T_NAME) {
        perr(p, t, "%s", "tag name expected");
        return NULL;
    }
    p->i++;
    if (is_name(t, "if")) return parse_if(p, t);
    if (is_name(t, "for")) return parse_for(p, t);
    if (is_name(t, "set")) return parse_set(p, t);
    if (is_name(t, "macro")) return parse_macro(p, t);
    if (is_name(t, "call")) return parse_call_block(p, t);
    if (is_name(t, "filter")) return parse_filter_block(p, t);
    if (is_name(t, "with")) return parse_with(p, t);
    if (is_name(t, "break") || is_name(t, "continue")) {
        node *nd = mk(p, is_name(t, "break") ? S_BREAK : S_CONTINUE, t);
        if (!nd || expect_block_end(p)) return NULL;
        return nd;
    }
    if (is_name(t, "generation")) {
        /* transformers' AssistantTracker: marks assistant text, renders as is */
        node *nd = mk(p, S_BODY, t);
        if (!nd || expect_block_end(p) || parse_body(p, &nd->body, END_GEN)) return NULL;
        p->i++;
        if (expect_block_end(p)) return NULL;
        return nd;
    }
    if (is_name(t, "include") || is_name(t, "import") || is_name(t, "from") ||
        is_name(t, "extends") || is_name(t, "block")) {
        char nm[32];
        snprintf(nm, sizeof nm, "%.*s", (int)t->n, t->p);
        perr(p, t, "'%s' is not allowed: a chat template cannot load other templates", nm);
        return NULL;
    }
    char nm[64];
    snprintf(nm, sizeof nm, "%.*s", (int)(t->n > 40 ? 40 : t->n), t->p);
    perr(p, t, "encountered unknown tag '%s'", nm);
    return NULL;
}

/* Parses statements until one of the end tags (left as the current token,
 * just after its '{%') or the end of the template when ends is NULL. */
static int parse_body(parser *p, nodelist *body, const char *const *ends)
{
    if (enter(p)) return -1;
    for (;;) {
        token *t = cur(p);
        if (t->type == T_EOF) {
            if (!ends) break;
            char msg[96];
            snprintf(msg, sizeof msg, "unexpected end of template, expected '%s'", ends[0]);
            return syntax_err(p->e, t->line, t->col, msg);
        }
        if (t->type == T_DATA) {
            node *nd = mk(p, S_TEXT, t);
            if (!nd) return -1;
            nd->name = t->p;
            nd->name_len = t->n;
            if (nl_push(p, body, nd)) return -1;
            p->i++;
        } else if (t->type == T_VAR_BEGIN) {
            p->i++;
            node *nd = mk(p, S_OUTPUT, t);
            if (!nd || !(nd->a = parse_tuple(p, 0))) return -1;
            if (cur(p)->type != T_VAR_END) {
                char b[64];
                return perr(p, cur(p), "expected end of print statement, got %s", tok_desc(cur(p), b, sizeof b));
            }
            p->i++;
            if (nl_push(p, body, nd)) return -1;
        } else if (t->type == T_BLOCK_BEGIN) {
            p->i++;
            token *nm = cur(p);
            if (ends) {
                for (int k = 0; ends[k]; k++)
                    if (is_name(nm, ends[k])) { p->depth--; return 0; }
            }
            if (nm->type == T_NAME && nm->n > 3 && (!memcmp(nm->p, "end", 3) || is_name(nm, "else") || is_name(nm, "elif"))) {
                char b[64];
                snprintf(b, sizeof b, "%.*s", (int)(nm->n > 40 ? 40 : nm->n), nm->p);
                if (ends) {
                    char msg[160];
                    snprintf(msg, sizeof msg, "encountered unknown tag '%s', expected '%s'", b, ends[0]);
                    return syntax_err(p->e, nm->line, nm->col, msg);
                }
                return perr(p, nm, "encountered unknown tag '%s'", b);
            }
            node *nd = parse_statement(p);
            if (!nd || nl_push(p, body, nd)) return -1;
        } else {
            return unexpected(p);
        }
    }
    p->depth--;
    return 0;
}

int jn_parse(arena *a, const char *src, size_t len, nodelist *out, inferd_error *e)
{
    /* jinja first turns \r\n and \r into \n and drops one trailing newline
     * (keep_trailing_newline is off) */
    char *norm = ar_alloc(a, len + 1);
    if (!norm) { err_set(e, "template too large"); return -1; }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            norm[n++] = src[i];
        }
    }
    if (n > 0 && norm[n - 1] == '\n') n--;
    norm[n] = 0;
    lexer lx = {.ar = a, .src = norm, .len = n, .line = 1, .e = e};
    int rc = lex(&lx);
    if (rc == 0) {
        parser p = {.ar = a, .t = lx.toks, .n = lx.ntok, .e = e};
        rc = parse_body(&p, out, NULL);
    }
    free(lx.toks);
    return rc;
}
