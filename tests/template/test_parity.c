/* Parity with the references: every case in tests/fixtures/template/
 * (made by tools/golden/template_golden.py) must render byte for byte as
 * Jinja2 in transformers' environment did, raise_exception must raise with
 * the same message, and cases the reference rejected must fail here too.
 * chat_transformers.jsonl, when present, holds the same chat cases rendered
 * by transformers' own apply_chat_template on the GPU machine. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "template/template.h"

#define FIX "tests/fixtures/template/"

typedef struct tally { int cases, text, raised, error, bad; } tally;

/* Compares one outcome with the expected row; prints a diff line on mismatch. */
static void check(tally *t, json_t *exp, const char *id, int rc, const char *out, size_t len,
                  int raised, const char *msg)
{
    json_t *text = json_object_get(exp, "text"), *rz = json_object_get(exp, "raised");
    t->cases++;
    if (text) {
        t->text++;
        if (rc == 0 && len == json_string_length(text) && !memcmp(out, json_string_value(text), len))
            return;
        t->bad++;
        if (rc) { printf("MISMATCH %s: expected text, got error: %s\n", id, msg); return; }
        size_t i = 0, n = json_string_length(text);
        const char *x = json_string_value(text);
        while (i < n && i < len && x[i] == out[i]) i++;
        printf("MISMATCH %s at byte %zu:\n  want: %.60s\n  got:  %.60s\n", id, i,
               x + (i > 20 ? i - 20 : 0), out + (i > 20 ? i - 20 : 0));
    } else if (rz) {
        t->raised++;
        if (rc && raised && !strcmp(msg, json_string_value(rz))) return;
        t->bad++;
        printf("MISMATCH %s: want raise '%s', got rc=%d raised=%d '%s'\n", id,
               json_string_value(rz), rc, raised, rc ? msg : "(rendered)");
    } else {
        t->error++;
        if (rc && !raised) return;
        t->bad++;
        printf("MISMATCH %s: want an error (%s), got rc=%d raised=%d\n", id,
               json_string_value(json_object_get(exp, "error")), rc, raised);
    }
}

static json_t *load_jsonl(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    json_t *rows = json_array();
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *r = json_loads(line, 0, &je);
        assert_non_null(r);
        json_array_append_new(rows, r);
    }
    free(line);
    fclose(f);
    return rows;
}

static void test_lang_cases(void **state)
{
    (void)state;
    json_t *rows = load_jsonl(FIX "lang_cases.jsonl");
    assert_non_null(rows);
    tally t = {0};
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        const char *src = json_string_value(json_object_get(r, "template"));
        inferd_error e = {{0}};
        tmpl_template *tp = NULL;
        char *out = NULL;
        size_t len = 0;
        int raised = 0, rc = tmpl_compile(src, strlen(src), &tp, &e);
        if (rc == 0) rc = tmpl_render(tp, json_object_get(r, "vars"), &out, &len, &raised, &e);
        check(&t, r, json_string_value(json_object_get(r, "id")), rc, out, len, raised, e.msg);
        free(out);
        tmpl_free(tp);
    }
    printf("language cases: %d (%d text, %d raise, %d error), %d mismatches\n", t.cases, t.text,
           t.raised, t.error, t.bad);
    json_decref(rows);
    assert_true(t.cases >= 100);
    assert_int_equal(t.bad, 0);
}

/* Renders every chat case; expected outcomes come from rows_exp by id. */
static int run_chat(json_t *cases, json_t *expected, tally *t)
{
    tmpl_chat *cache[16] = {0};
    char keys[16][512];
    int ncache = 0;
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *id = json_string_value(json_object_get(c, "id"));
        json_t *exp = c;
        if (expected) {
            exp = NULL;
            size_t k;
            json_t *x;
            json_array_foreach(expected, k, x)
                if (!strcmp(json_string_value(json_object_get(x, "id")), id)) { exp = x; break; }
            if (!exp) continue;
        }
        const char *dir = json_string_value(json_object_get(c, "dir"));
        json_t *tj = json_object_get(c, "template");
        const char *tpl = json_is_string(tj) ? json_string_value(tj) : NULL;
        char key[512];
        snprintf(key, sizeof key, "%s|%s", dir, tpl ? tpl : "");
        tmpl_chat *chat = NULL;
        for (int k = 0; k < ncache; k++)
            if (!strcmp(keys[k], key)) chat = cache[k];
        inferd_error e = {{0}};
        if (!chat) {
            if (tmpl_chat_load(dir, tpl, &chat, &e)) {
                printf("cannot load %s: %s\n", key, e.msg);
                t->bad++;
                continue;
            }
            assert_true(ncache < 16);
            snprintf(keys[ncache], sizeof keys[ncache], "%s", key);
            cache[ncache++] = chat;
        }
        char *out = NULL;
        size_t len = 0;
        int raised = 0;
        int rc = tmpl_chat_render(chat, json_object_get(c, "request"), &out, &len, &raised, &e);
        check(t, exp, id, rc, out, len, raised, e.msg);
        free(out);
    }
    for (int k = 0; k < ncache; k++) tmpl_chat_free(cache[k]);
    return 0;
}

static void test_chat_cases_jinja(void **state)
{
    (void)state;
    json_t *rows = load_jsonl(FIX "chat_cases.jsonl");
    assert_non_null(rows);
    tally t = {0};
    run_chat(rows, NULL, &t);
    printf("chat cases vs jinja2: %d (%d text, %d raise, %d error), %d mismatches\n", t.cases,
           t.text, t.raised, t.error, t.bad);
    json_decref(rows);
    assert_true(t.cases >= 200);
    assert_int_equal(t.bad, 0);
}

static void test_chat_cases_transformers(void **state)
{
    (void)state;
    json_t *rows = load_jsonl(FIX "chat_cases.jsonl");
    json_t *tf = load_jsonl(FIX "chat_transformers.jsonl");
    assert_non_null(rows);
    if (!tf) {
        json_decref(rows);
        skip();
    }
    tally t = {0};
    run_chat(rows, tf, &t);
    printf("chat cases vs transformers.apply_chat_template: %d (%d text, %d raise, %d error), %d mismatches\n",
           t.cases, t.text, t.raised, t.error, t.bad);
    json_decref(rows);
    json_decref(tf);
    assert_true(t.cases >= 200);
    assert_int_equal(t.bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lang_cases),
        cmocka_unit_test(test_chat_cases_jinja),
        cmocka_unit_test(test_chat_cases_transformers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
