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
#include <jansson.h>

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
    for (int i = 0; i < 1000; i++) strcat(chain, "|trim");
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syntax_errors_name_line_and_column),
        cmocka_unit_test(test_runtime_errors_name_the_line),
        cmocka_unit_test(test_undefined_semantics),
        cmocka_unit_test(test_raise_exception),
        cmocka_unit_test(test_sandbox),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_chat_named_templates),
        cmocka_unit_test(test_chat_file_precedence),
        cmocka_unit_test(test_chat_request_handling),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
