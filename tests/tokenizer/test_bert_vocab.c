/* BertTokenizer from vocab.txt alone (tokenizer/tk_vocab.c) against
 * transformers' BertTokenizer: the ids of every text of
 * tests/fixtures/encoder/golden/bert_tokenizer.json (634 chinese-poetry and
 * mixed-script texts) for its four settings (lower-case, cased, no Chinese
 * split, accents kept), with and without special tokens, and its sentence
 * pairs as api/embed.c builds them; then the settings files
 * (special_tokens_map.json, added_tokens_decoder, additional_special_tokens,
 * never_split, added_tokens.json) and hostile vocab.txt files. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>

#include "tokenizer/tokenizer.h"
#include "tests/tokenizer/helpers.h"

#define GOLD "tests/fixtures/encoder/golden/"

static void clear(void)
{
    remove_file("vocab.txt");
    remove_file("tokenizer_config.json");
    remove_file("special_tokens_map.json");
    remove_file("added_tokens.json");
    remove_file("tokenizer.json");
}

static void copy_vocab(void)
{
    char *data;
    size_t n;
    inferd_error e = {{0}};
    assert_int_equal(file_read_all(GOLD "vocab.txt", 1 << 26, &data, &n, &e), 0);
    write_file("vocab.txt", data, n);
    free(data);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/inferd-bertvocab-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    clear();
    return rmdir(tmpdir);
}

static int ids_eq(json_t *want, size_t from, size_t to, const int32_t *ids, size_t n)
{
    if (to - from != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, from + i)) != ids[i])
            return 0;
    return 1;
}

static void encode_n(const tok_tokenizer *t, const char *s, size_t len, int special,
                     int32_t **ids, size_t *n)
{
    inferd_error e = {{0}};
    if (tok_encode(t, s, len, special, ids, n, &e))
        fail_msg("encode \"%.60s\": %s", s, e.msg);
}

static void encode(const tok_tokenizer *t, const char *s, int special, int32_t **ids, size_t *n)
{
    inferd_error e = {{0}};
    if (tok_encode(t, s, strlen(s), special, ids, n, &e))
        fail_msg("encode \"%.60s\": %s", s, e.msg);
}

/* One fixture setting: kwargs -> tokenizer_config.json, then every text. */
static void check_setting(const char *name, json_t *set, json_t *texts)
{
    clear();
    copy_vocab();
    json_t *kw = json_object_get(set, "kwargs");
    char *cfg = json_dumps(kw, 0);
    put("tokenizer_config.json", cfg);
    free(cfg);
    tok_tokenizer *t;
    inferd_error e = {{0}};
    if (tok_load(tmpdir, &t, &e))
        fail_msg("%s: %s", name, e.msg);
    json_t *all = json_object_get(set, "ids");
    assert_int_equal(json_array_size(all), json_array_size(texts));
    size_t bad = 0;
    for (size_t i = 0; i < json_array_size(texts); i++) {
        const char *s = json_string_value(json_array_get(texts, i));
        size_t len = json_string_length(json_array_get(texts, i));
        json_t *want = json_array_get(all, i);
        size_t wn = json_array_size(want);
        int32_t *ids;
        size_t n;
        encode_n(t, s, len, 1, &ids, &n);
        int ok = ids_eq(want, 0, wn, ids, n);
        free(ids);
        encode_n(t, s, len, 0, &ids, &n);
        ok = ok && wn >= 2 && ids_eq(want, 1, wn - 1, ids, n);
        free(ids);
        if (!ok && bad++ < 5)
            fprintf(stderr, "%s: text %zu differs: %.80s\n", name, i, s);
    }
    /* pairs: A's ids then B's without [CLS], types 0 then 1 (api/embed.c) */
    json_t *pairs = json_object_get(set, "pairs");
    assert_true(json_array_size(pairs) > 0);
    for (size_t i = 0; i < json_array_size(pairs); i++) {
        json_t *p = json_array_get(pairs, i);
        json_t *want = json_object_get(p, "input_ids"), *types = json_object_get(p, "token_type_ids");
        int32_t *a, *b;
        size_t na, nb;
        encode(t, json_string_value(json_object_get(p, "a")), 1, &a, &na);
        encode(t, json_string_value(json_object_get(p, "b")), 1, &b, &nb);
        int ok = json_array_size(want) == na + nb - 1 && ids_eq(want, 0, na, a, na) &&
                 ids_eq(want, na, na + nb - 1, b + 1, nb - 1);
        for (size_t k = 0; ok && k < na + nb - 1; k++)
            ok = json_integer_value(json_array_get(types, k)) == (k < na ? 0 : 1);
        free(a);
        free(b);
        if (!ok && bad++ < 5)
            fprintf(stderr, "%s: pair %zu differs\n", name, i);
    }
    tok_free(t);
    assert_int_equal(bad, 0);
}

static void test_fixture(void **state)
{
    (void)state;
    json_error_t je;
    json_t *g = json_load_file(GOLD "bert_tokenizer.json", JSON_ALLOW_NUL, &je);
    assert_non_null(g);
    json_t *texts = json_object_get(g, "texts"), *sets = json_object_get(g, "settings");
    assert_true(json_array_size(texts) >= 500);
    const char *name;
    json_t *set;
    int seen = 0;
    json_object_foreach(sets, name, set) {
        check_setting(name, set, texts);
        seen++;
    }
    assert_int_equal(seen, 4); /* lower, cased, no_chinese_split, lower_keep_accents */
    json_decref(g);
}

/* Defaults without any config file: lower-case, accents stripped, Chinese
 * characters split, [CLS] ... [SEP], WordPiece decode. */
static void test_defaults_and_decode(void **state)
{
    (void)state;
    clear();
    put("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n##s\n天\n,\ncafe\n");
    tok_tokenizer *t;
    inferd_error e = {{0}};
    assert_int_equal(tok_load(tmpdir, &t, &e), 0);
    int32_t *ids;
    size_t n;
    encode(t, "Hello, WORLDs 天天 Café xyz", 1, &ids, &n);
    int32_t want[] = {2, 5, 9, 6, 7, 8, 8, 10, 1, 3};
    assert_int_equal(n, sizeof want / sizeof want[0]);
    assert_memory_equal(ids, want, sizeof want);
    char *s;
    size_t len;
    assert_int_equal(tok_decode(t, ids, n, 1, &s, &len, &e), 0);
    assert_string_equal(s, "hello, worlds 天 天 cafe");
    free(s);
    assert_int_equal(tok_decode(t, ids, n, 0, &s, &len, &e), 0);
    assert_string_equal(s, "[CLS] hello, worlds 天 天 cafe [UNK] [SEP]");
    free(s);
    free(ids);
    /* special tokens in the text are matched as written, not lower-cased */
    encode(t, "hello [SEP] [mask]", 0, &ids, &n);
    int32_t want2[] = {5, 3, 1, 1, 1};
    assert_int_equal(n, 5);
    assert_memory_equal(ids, want2, sizeof want2);
    free(ids);
    assert_int_equal(tok_vocab_size(t), 11);
    assert_true(tok_is_special(t, 4));
    assert_false(tok_is_special(t, 5));
    assert_int_equal(tok_token_to_id(t, "##s"), 7);
    tok_free(t);
}

/* special_tokens_map.json over tokenizer_config.json, AddedToken dicts,
 * tokens not in vocab.txt (new ids past it), added_tokens_decoder,
 * additional_special_tokens, never_split, added_tokens.json, CRLF lines and
 * a later duplicate winning. */
static void test_settings_files(void **state)
{
    (void)state;
    clear();
    put("vocab.txt", "<pad>\r\n<unk>\r\n<s>\r\n</s>\r\nhello\r\nhello\rx\r\nfoo_bar\r\n[keep]\n");
    put("tokenizer_config.json",
        "{\"tokenizer_class\": \"BertTokenizerFast\", \"unk_token\": \"[UNK]\", "
        "\"cls_token\": {\"content\": \"<s>\", \"lstrip\": false}, \"sep_token\": \"</s>\", "
        "\"pad_token\": \"<pad>\", \"never_split\": [\"[keep]\", \"[absent]\"], "
        "\"added_tokens_decoder\": {\"20\": {\"content\": \"<x>\", \"special\": true, "
        "\"normalized\": false}}, \"additional_special_tokens\": [\"<extra>\"]}");
    put("special_tokens_map.json", "{\"unk_token\": \"<unk>\", \"mask_token\": \"<mask>\"}");
    put("added_tokens.json", "{\"Zz\": 30}");
    tok_tokenizer *t;
    inferd_error e = {{0}};
    if (tok_load(tmpdir, &t, &e))
        fail_msg("%s", e.msg);
    /* ids: <pad>0 <unk>1 <s>2 </s>3 hello5 (4 lost to the duplicate) x6
     * foo_bar7 [keep]8; <x>20; <mask> and <extra> past the largest id */
    assert_int_equal(tok_token_to_id(t, "hello"), 5);
    assert_int_equal(tok_token_to_id(t, "x"), 6);
    assert_int_equal(tok_token_to_id(t, "<x>"), 20);
    int32_t mask = tok_token_to_id(t, "<mask>"), extra = tok_token_to_id(t, "<extra>");
    assert_true(mask > 20 && extra > 20 && mask != extra);
    assert_true(tok_is_special(t, mask) && tok_is_special(t, extra) && tok_is_special(t, 20));
    assert_int_equal(tok_token_to_id(t, "Zz"), 30);
    assert_false(tok_is_special(t, 30));
    int32_t *ids;
    size_t n;
    encode(t, "HELLO <extra>[keep] zz Zz <mask>", 1, &ids, &n);
    /* Zz is a normalized added token: it matches the lower-cased zz too */
    int32_t want[] = {2, 5, extra, 8, 30, 30, mask, 3};
    if (n != sizeof want / sizeof want[0] || memcmp(ids, want, sizeof want)) {
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "%d ", ids[i]);
        fail_msg("ids differ");
    }
    free(ids);
    encode(t, "x [keep] foo_bar", 0, &ids, &n);
    int32_t want2[] = {6, 8, 1, 1, 1};
    assert_int_equal(n, 5);
    assert_memory_equal(ids, want2, sizeof want2);
    free(ids);
    tok_free(t);
}

static void expect_error(const char *what, const char *needle)
{
    tok_tokenizer *t = NULL;
    inferd_error e = {{0}};
    int rc = tok_load(tmpdir, &t, &e);
    if (rc == 0) {
        tok_free(t);
        fail_msg("%s: loaded", what);
    }
    assert_null(t);
    if (!strstr(e.msg, needle))
        fail_msg("%s: message \"%s\" lacks \"%s\"", what, e.msg, needle);
}

static void test_hostile(void **state)
{
    (void)state;
    clear();
    put("vocab.txt", "");
    expect_error("empty", "is empty");
    put("vocab.txt", "[UNK]\n[CLS]\n\xff\xfe\n[SEP]\n");
    expect_error("invalid UTF-8", "line 3 is not valid UTF-8");
    put("vocab.txt", "[UNK]\n[CLS]\n\xe4\xbd\n");
    expect_error("truncated UTF-8", "line 3 is not valid UTF-8");
    write_file("vocab.txt", "[UNK]\n[C\0LS]\n", 13);
    expect_error("NUL", "line 2 holds a NUL byte");
    size_t big = 3 << 20;
    char *huge = malloc(big + 16);
    assert_non_null(huge);
    memcpy(huge, "[UNK]\n", 6);
    memset(huge + 6, 'a', big);
    write_file("vocab.txt", huge, big + 6);
    free(huge);
    expect_error("huge line", "line 2 is 3145728 bytes long");
    put("vocab.txt", "[PAD]\n[CLS]\n[SEP]\nhello\n");
    expect_error("no [UNK]", "no unknown-word token \"[UNK]\"");
    put("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n");
    put("tokenizer_config.json", "{\"unk_token\": \"<unk>\"}");
    expect_error("unk_token not in vocab", "\"<unk>\" (unk_token)");
    put("tokenizer_config.json", "{\"do_lower_case\": \"yes\"}");
    expect_error("do_lower_case type", "\"do_lower_case\" must be true or false");
    put("tokenizer_config.json", "{\"strip_accents\": 1}");
    expect_error("strip_accents type", "\"strip_accents\" must be true, false or null");
    put("tokenizer_config.json", "{\"tokenizer_class\": \"XLMRobertaTokenizer\"}");
    expect_error("foreign class", "tokenizer_class \"XLMRobertaTokenizer\"");
    put("tokenizer_config.json", "{\"cls_token\": 5}");
    expect_error("cls_token type", "\"cls_token\" must be");
    put("tokenizer_config.json", "{\"cls_token\": \"\"}");
    expect_error("empty cls_token", "\"cls_token\" must be a non-empty");
    put("tokenizer_config.json", "{\"never_split\": \"[X]\"}");
    expect_error("never_split type", "\"never_split\" must be a list");
    put("tokenizer_config.json", "{\"added_tokens_decoder\": {\"x\": {\"content\": \"a\"}}}");
    expect_error("added_tokens_decoder key", "added_tokens_decoder entry \"x\"");
    put("tokenizer_config.json", "[1]");
    expect_error("config not an object", "must be a JSON object");
    put("tokenizer_config.json", "{");
    expect_error("config not JSON", "tokenizer_config.json:");
    remove_file("tokenizer_config.json");
    put("special_tokens_map.json", "{\"additional_special_tokens\": [7]}");
    expect_error("additional_special_tokens item", "\"additional_special_tokens\"[0]");
    remove_file("special_tokens_map.json");
    put("added_tokens.json", "{\"a\": -1}");
    expect_error("added_tokens.json id", "added_tokens.json: \"a\"");
    remove_file("added_tokens.json");
    /* a folder with neither file names tokenizer.json, as before */
    remove_file("vocab.txt");
    expect_error("nothing", "tokenizer.json");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture),
        cmocka_unit_test(test_defaults_and_decode),
        cmocka_unit_test(test_settings_files),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
