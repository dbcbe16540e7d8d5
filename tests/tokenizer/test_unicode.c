/* The tokenizer's Unicode-dependent pieces against the reference, code point
 * by code point: tests/fixtures/tokenizer/unicode_ref.json records how the
 * Rust `tokenizers` library (on the device, by
 * tools/golden/tokenizer_unicode_golden.py) splits and normalizes every code
 * point. White-box: it calls the module's private stages (tk_int.h), since a
 * whole tokenizer would hide which property went wrong. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>
#include <utf8proc.h>

#include "tokenizer/tk_int.h"

#define REF "tests/fixtures/tokenizer/unicode_ref.json"
#define NCP 0x110000u

static json_t *ref;

static int is_surrogate(uint32_t c) { return c >= 0xD800 && c <= 0xDFFF; }

/* Bitmap (one byte per code point) of a [[lo, hi], ...] list. */
static uint8_t *ref_set(const char *key)
{
    json_t *a = json_object_get(ref, key);
    assert_true(json_is_array(a));
    uint8_t *m = calloc(NCP, 1);
    assert_non_null(m);
    size_t i;
    json_t *r;
    json_array_foreach(a, i, r) {
        uint32_t lo = (uint32_t)json_integer_value(json_array_get(r, 0));
        uint32_t hi = (uint32_t)json_integer_value(json_array_get(r, 1));
        assert_true(lo <= hi && hi < NCP);
        memset(m + lo, 1, hi - lo + 1);
    }
    return m;
}

/* Compares a predicate with a reference set; prints the first differences. */
static size_t diff_set(const char *what, const uint8_t *want, int (*got)(uint32_t), int (*in_domain)(uint32_t))
{
    size_t bad = 0;
    for (uint32_t c = 0; c < NCP; c++) {
        if (is_surrogate(c) || (in_domain && !in_domain(c)))
            continue;
        int g = got(c) != 0;
        if (g != want[c]) {
            if (bad < 8)
                fprintf(stderr, "%s: U+%04X is %s for the reference\n", what, c, want[c] ? "in" : "not in");
            bad++;
        }
    }
    if (bad)
        fprintf(stderr, "%s: %zu code points differ\n", what, bad);
    return bad;
}

/* The probes of the reference. */
static int bert_removed(uint32_t c)
{
    return c == 0 || c == 0xFFFD || (c != '\t' && c != '\n' && c != '\r' && tk_is_other(c));
}
static int bert_ws(uint32_t c) { return c != ' ' && !bert_removed(c) && tk_is_ws(c); }
static int not_a(uint32_t c) { return c != 'a'; }

/* The probes of Mn and marks covered the code points NFD leaves alone. */
static int nfd_identity(uint32_t c)
{
    utf8proc_int32_t buf[8];
    int last = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char((utf8proc_int32_t)c, buf, 8, UTF8PROC_DECOMPOSE, &last);
    return c != 'a' && n == 1 && buf[0] == (utf8proc_int32_t)c;
}

static void test_scripts(void **s)
{
    (void)s;
    /* same partition: the reference labels each script by one of its code
     * points, inferd by an id; the two must correspond one to one */
    uint32_t *lab = malloc(NCP * sizeof *lab);
    assert_non_null(lab);
    for (uint32_t c = 0; c < NCP; c++)
        lab[c] = UINT32_MAX; /* Any */
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(ref, "scripts"), i, r) {
        uint32_t lo = (uint32_t)json_integer_value(json_array_get(r, 0));
        uint32_t hi = (uint32_t)json_integer_value(json_array_get(r, 1));
        for (uint32_t c = lo; c <= hi && c < NCP; c++)
            lab[c] = (uint32_t)json_integer_value(json_array_get(r, 2));
    }
    uint32_t to_ref[1024];
    for (size_t k = 0; k < 1024; k++)
        to_ref[k] = UINT32_MAX;
    size_t bad = 0, nscripts = 0;
    for (uint32_t c = 0; c < NCP; c++) {
        if (is_surrogate(c))
            continue;
        int id = c < 0x80 ? tk_uni_script_ascii[c] : tk_script(c);
        assert_true(id >= 0 && id < 1024);
        int ok;
        if (!id || lab[c] == UINT32_MAX) {
            ok = !id && lab[c] == UINT32_MAX;
        } else {
            if (to_ref[id] == UINT32_MAX) {
                to_ref[id] = lab[c];
                nscripts++;
            }
            ok = to_ref[id] == lab[c];
        }
        if (!ok && bad++ < 8)
            fprintf(stderr, "script of U+%04X: inferd id %d, reference label U+%04X\n", c, id, lab[c]);
    }
    /* one to one: no two ids on one reference script */
    for (size_t a = 0; a < 1024; a++)
        for (size_t b = a + 1; b < 1024; b++)
            if (to_ref[a] != UINT32_MAX && to_ref[a] == to_ref[b] && bad++ < 8)
                fprintf(stderr, "scripts %zu and %zu are one script for the reference\n", a, b);
    free(lab);
    fprintf(stderr, "scripts: %zu scripts, %zu differences\n", nscripts, bad);
    assert_int_equal((int)nscripts, (int)json_integer_value(json_object_get(ref, "script_count")));
    assert_int_equal(bad, 0);
}

/* The UnicodeScripts pre-tokenizer itself on whole strings: leading and
 * only-space words, and random mixes of scripts, Any and unassigned chars. */
static void test_script_cases(void **s)
{
    (void)s;
    inferd_error e = {{0}};
    json_t *j = json_pack("{s:s}", "type", "UnicodeScripts");
    tk_pretok *p = tk_pretok_parse(j, &e);
    json_decref(j);
    assert_non_null(p);
    json_t *cases = json_object_get(ref, "script_cases");
    assert_true(json_object_size(cases) > 400);
    const char *text;
    json_t *want;
    size_t bad = 0, n = 0;
    tk_words in = {0}, out = {0};
    json_object_foreach(cases, text, want) {
        tk_words_reset(&in);
        assert_int_equal(tk_words_add(&in, text, strlen(text), 1), 0);
        assert_int_equal(tk_pretok_apply(p, &in, &out, &e), 0);
        int ok = out.n == json_array_size(want);
        for (size_t i = 0; ok && i < out.n; i++) {
            json_t *w = json_array_get(want, i);
            ok = json_string_length(w) == out.v[i].len &&
                 !memcmp(json_string_value(w), out.buf.p + out.v[i].off, out.v[i].len);
        }
        if (!ok && bad++ < 5) {
            char *ws = json_dumps(want, JSON_ENCODE_ANY);
            fprintf(stderr, "UnicodeScripts(%s): want %s, got %zu pieces\n", text, ws, out.n);
            free(ws);
        }
        n++;
    }
    tk_words_free(&in);
    tk_words_free(&out);
    tk_pretok_free(p);
    fprintf(stderr, "script cases: %zu, %zu differ\n", n, bad);
    assert_int_equal(bad, 0);
}

static void test_punct(void **s)
{
    (void)s;
    uint8_t *m = ref_set("punct");
    size_t bad = diff_set("punct", m, tk_is_punct, not_a);
    free(m);
    assert_int_equal(bad, 0);
}

static void test_bert_clean(void **s)
{
    (void)s;
    uint8_t *m = ref_set("other"), *w = ref_set("ws");
    size_t bad = diff_set("clean_text removes", m, bert_removed, not_a) +
                 diff_set("clean_text whitespace", w, bert_ws, not_a);
    free(m);
    free(w);
    assert_int_equal(bad, 0);
}

static void test_bert_mn(void **s)
{
    (void)s;
    uint8_t *m = ref_set("mn");
    size_t bad = diff_set("strip_accents Mn", m, tk_is_mn, nfd_identity);
    free(m);
    assert_int_equal(bad, 0);
}

static void test_numeric(void **s)
{
    (void)s;
    uint8_t *m = ref_set("numeric");
    size_t bad = diff_set("Digits numeric", m, tk_is_numeric, not_a);
    free(m);
    assert_int_equal(bad, 0);
}

static void test_strip_accents_mark(void **s)
{
    (void)s;
    uint8_t *m = ref_set("mark");
    size_t bad = diff_set("StripAccents mark", m, tk_is_mark, nfd_identity);
    free(m);
    assert_int_equal(bad, 0);
}

/* NFD / NFKD / NFC / NFKC of every single code point, and the canonical
 * ordering of each mark against U+0334 (combining class 1). */
static size_t check_form(const char *form, const char *key)
{
    inferd_error e = {{0}};
    json_t *j = json_pack("{s:s}", "type", form);
    tk_norm *nm = tk_norm_parse(j, &e);
    json_decref(j);
    assert_non_null(nm);
    json_t *map = json_object_get(ref, key);
    assert_true(json_is_object(map));
    strbuf out = {0};
    size_t bad = 0;
    for (uint32_t c = 0; c < NCP; c++) {
        if (is_surrogate(c) || c == 1 || (c >= 0xAC00 && c <= 0xD7A3))
            continue;
        char key8[12], in[5];
        snprintf(key8, sizeof key8, "%04X", c);
        json_t *want = json_object_get(map, key8);
        /* code points unassigned for both map to themselves: skip the
         * planes' long unassigned and private-use stretches quickly */
        int cat = utf8proc_category((utf8proc_int32_t)c);
        if (!want && (cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_CO))
            continue;
        int n = utf8_encode(c, in);
        assert_int_equal(tk_norm_apply(nm, in, (size_t)n, &out, NULL, &e), 0);
        const char *w = want ? json_string_value(want) : in;
        size_t wn = want ? json_string_length(want) : (size_t)n;
        if (out.n != wn || memcmp(out.p, w, wn)) {
            if (bad < 6)
                fprintf(stderr, "%s(U+%04X) differs from the reference's\n", form, c);
            bad++;
        }
    }
    sb_free(&out);
    tk_norm_free(nm);
    if (bad)
        fprintf(stderr, "%s: %zu code points differ\n", form, bad);
    return bad;
}

static void test_normalization_forms(void **s)
{
    (void)s;
    size_t bad = check_form("NFD", "nfd") + check_form("NFKD", "nfkd") + check_form("NFC", "nfc") +
                 check_form("NFKC", "nfkc");
    assert_int_equal(bad, 0);
}

static void test_canonical_order(void **s)
{
    (void)s;
    uint8_t *m = ref_set("ccc_gt1");
    inferd_error e = {{0}};
    json_t *j = json_pack("{s:s}", "type", "NFD");
    tk_norm *nm = tk_norm_parse(j, &e);
    json_decref(j);
    assert_non_null(nm);
    strbuf out = {0};
    size_t bad = 0, n = 0;
    for (uint32_t c = 0x300; c < NCP; c++) {
        if (is_surrogate(c) || !nfd_identity(c))
            continue;
        int cat = utf8proc_category((utf8proc_int32_t)c);
        const utf8proc_property_t *pr = utf8proc_get_property((utf8proc_int32_t)c);
        int mark = cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_MC || cat == UTF8PROC_CATEGORY_ME ||
                   pr->combining_class;
        if (!mark && !m[c])
            continue;
        char in[16];
        size_t k = 0;
        in[k++] = 'a';
        k += (size_t)utf8_encode(c, in + k);
        k += (size_t)utf8_encode(0x334, in + k);
        assert_int_equal(tk_norm_apply(nm, in, k, &out, NULL, &e), 0);
        /* swapped: a, U+0334, c */
        int swapped = out.n == k && !memcmp(out.p + 1, "\xCC\xB4", 2);
        if (swapped != m[c] && bad++ < 6)
            fprintf(stderr, "NFD(a U+%04X U+0334): reference %s\n", c, m[c] ? "swaps" : "keeps the order");
        n++;
    }
    sb_free(&out);
    tk_norm_free(nm);
    free(m);
    fprintf(stderr, "canonical order: %zu marks, %zu differ\n", n, bad);
    assert_int_equal(bad, 0);
}

static int setup(void **s)
{
    (void)s;
    json_error_t je;
    ref = json_load_file(REF, 0, &je);
    return ref ? 0 : -1;
}

static int teardown(void **s)
{
    (void)s;
    json_decref(ref);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scripts),           cmocka_unit_test(test_script_cases),
        cmocka_unit_test(test_punct),             cmocka_unit_test(test_bert_clean),
        cmocka_unit_test(test_bert_mn),           cmocka_unit_test(test_numeric),
        cmocka_unit_test(test_strip_accents_mark), cmocka_unit_test(test_normalization_forms),
        cmocka_unit_test(test_canonical_order),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
