/* Fuzz-style robustness of the tokenizer (meant to run under ASan+UBSan,
 * `make SAN=1`): seeded random mutations of real tokenizer.json files
 * (wrong types, deleted keys, huge and negative numbers, truncation,
 * duplicated and shuffled merges, junk strings) and of tokenizer_config.json
 * go through tok_load; random bytes, invalid UTF-8 and random ids through
 * tok_encode / tok_decode / the streaming decoder. Every call must either
 * succeed with sane output or fail with a message; never crash, leak or read
 * out of bounds. The hand-written malformed files are in test_tokenizer.c.
 * INFERD_FUZZ_ITERS (default 40) sets the mutations per tokenizer file;
 * INFERD_FUZZ_SEED changes the seed. */
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

#define FIX "tests/fixtures/tokenizer/models/"

static const char *MODELS[] = {"bert_chinese", "unigram_spm", "unicode_scripts", "bert_uncased",
                               "bpe_suffix", "wordlevel", "metaspace_bpe", "gpt2_bytelevel"};
#define NMODELS (sizeof MODELS / sizeof MODELS[0])

static uint64_t rng_state;
static int iters;

static uint64_t rnd(void)
{
    /* xorshift64*: reproducible from the seed */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static size_t rndn(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static int valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t c;
        int k = utf8_decode(s + i, n - i, &c);
        if (k < 0)
            return 0;
        i += (size_t)k;
    }
    return 1;
}

/* Random input text: valid pieces (ASCII, CJK, marks, emoji, special-token
 * look-alikes, spaces) mixed with invalid UTF-8 (stray continuation bytes,
 * truncated and overlong sequences, encoded surrogates, bytes > F4). */
static size_t rand_text(char *buf, size_t cap, int allow_invalid)
{
    static const char *pieces[] = {
        "a", "Hello", " ", "  ", "\n", "\r\n", "\t", "\xE4\xB8\xAD", "\xE3\x81\x82", "e\xCC\x81",
        "\xF0\x9F\x98\x80", "\xE2\x80\x8D", "<s>", "</s>", "[CLS]", "<unk>", "##", "\xE2\x96\x81",
        "<|endoftext|>", "123", "!?", "\xC2\xA0", "\xE3\x80\x80", "\xEF\xBF\xBD", "\xE2\xB9\x87",
        "\xF4\x8F\xBF\xBF", "\xCD\xB8", "\x00", "don't", "\xD8\xB9\xD8\xB1\xD8\xA8\xD9\x8A",
    };
    static const char *bad[] = {"\x80", "\xBF", "\xC0\xAF", "\xC1\x81", "\xE0\x80\xAF", "\xED\xA0\x80",
                                "\xF5\x80\x80\x80", "\xFF", "\xFE", "\xE4\xB8", "\xF0\x9F\x98",
                                "\xC3", "\xF8\x88\x80\x80\x80"};
    size_t n = 0, parts = rndn(12);
    for (size_t i = 0; i < parts; i++) {
        const char *p;
        size_t len;
        if (allow_invalid && rndn(4) == 0) {
            p = bad[rndn(sizeof bad / sizeof bad[0])];
            len = strlen(p);
        } else if (rndn(3) == 0) {
            /* a random code point, any plane */
            char u[4];
            uint32_t c;
            do
                c = (uint32_t)rndn(0x110000);
            while (c >= 0xD800 && c <= 0xDFFF);
            len = (size_t)utf8_encode(c, u);
            if (n + len < cap) {
                memcpy(buf + n, u, len);
                n += len;
            }
            continue;
        } else {
            size_t k = rndn(sizeof pieces / sizeof pieces[0]);
            p = pieces[k];
            len = p[0] ? strlen(p) : 1; /* "\x00": one NUL byte */
        }
        if (n + len < cap) {
            memcpy(buf + n, p, len);
            n += len;
        }
    }
    return n;
}

/* Exercises a loaded tokenizer with random text and ids. */
static void exercise(const tok_tokenizer *t)
{
    inferd_error e = {{0}};
    int vs = tok_vocab_size(t);
    assert_true(vs >= 0);
    char text[512];
    for (int r = 0; r < 12; r++) {
        size_t n = rand_text(text, sizeof text, 1);
        int32_t *ids = NULL;
        size_t nids = 0;
        int add = (int)rndn(2);
        int rc = tok_encode(t, text, n, add, &ids, &nids, &e);
        if (!valid_utf8(text, n)) {
            assert_int_equal(rc, -1);
            assert_non_null(strstr(e.msg, "UTF-8"));
            assert_null(ids);
            continue;
        }
        if (rc) {
            /* a mutated tokenizer may refuse input (e.g. no unk token) but
             * must say why */
            assert_true(strlen(e.msg) > 0);
            continue;
        }
        for (size_t i = 0; i < nids; i++)
            assert_true(ids[i] >= 0 && ids[i] < vs);
        char *out = NULL;
        size_t on = 0;
        if (tok_decode(t, ids, nids, (int)rndn(2), &out, &on, &e) == 0) {
            assert_true(valid_utf8(out, on));
            free(out);
        } else {
            assert_true(strlen(e.msg) > 0);
        }
        free(ids);
    }
    /* random ids, some out of range: decode errors name them, the stream
     * never emits half a character */
    for (int r = 0; r < 6; r++) {
        int32_t ids[24];
        size_t n = rndn(24);
        for (size_t i = 0; i < n; i++)
            ids[i] = rndn(16) ? (int32_t)rndn((size_t)vs + 1) : (int32_t)(rnd() & 0xFFFFFFFF);
        char *out = NULL;
        size_t on = 0;
        int skip = (int)rndn(2);
        int rc = tok_decode(t, ids, n, skip, &out, &on, &e);
        if (rc == 0) {
            assert_true(valid_utf8(out, on));
        } else {
            assert_true(strlen(e.msg) > 0);
        }
        tok_stream *st = tok_stream_new(t, skip);
        assert_non_null(st);
        strbuf acc = {0};
        int srm = 0;
        for (size_t i = 0; i < n && !srm; i++) {
            size_t before = acc.n;
            srm = tok_stream_push(st, ids[i], &acc, &e);
            if (!srm)
                assert_int_equal(utf8_complete_prefix(acc.p ? acc.p + before : "", acc.n - before),
                                 acc.n - before);
        }
        if (!srm)
            srm = tok_stream_flush(st, &acc, &e);
        /* the stream fails exactly when decode does, else matches it */
        assert_int_equal(srm != 0, rc != 0);
        if (!rc && !srm)
            assert_true(acc.n == on && (!on || !memcmp(acc.p, out, on)));
        sb_free(&acc);
        tok_stream_free(st);
        free(out);
    }
}

/* Loads tmpdir: success (then exercised) or a clear failure. */
static int try_load(void)
{
    tok_tokenizer *t = NULL;
    inferd_error e = {{0}};
    int rc = tok_load(tmpdir, &t, &e);
    if (rc) {
        assert_null(t);
        assert_true(strlen(e.msg) > 0);
        return 0;
    }
    assert_non_null(t);
    exercise(t);
    tok_free(t);
    return 1;
}

/* All nodes of a JSON tree with their parent, for picking one at random. */
typedef struct { json_t *parent, *node; const char *key; size_t index; int depth; } slot;
typedef struct { slot *v; size_t n, cap; } slots;

static void collect(json_t *parent, const char *key, size_t index, json_t *node, int depth, slots *out)
{
    if (out->n == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 1024;
        out->v = realloc(out->v, out->cap * sizeof *out->v);
        assert_non_null(out->v);
    }
    out->v[out->n++] = (slot){parent, node, key, index, depth};
    if (json_is_object(node)) {
        const char *k;
        json_t *v;
        json_object_foreach(node, k, v)
            collect(node, k, 0, v, depth + 1, out);
    } else if (json_is_array(node)) {
        size_t i;
        json_t *v;
        json_array_foreach(node, i, v)
            collect(node, NULL, i, v, depth + 1, out);
    }
}

static json_t *junk_value(void)
{
    switch (rndn(12)) {
    case 0: return json_null();
    case 1: return json_true();
    case 2: return json_integer(0);
    case 3: return json_integer(-1);
    case 4: return json_integer((json_int_t)1 << 40);
    case 5: return json_integer(16777215);
    case 6: return json_real(-1e300);
    case 7: return json_string("");
    case 8: return json_string("\xE2\x96\x81 a b");
    case 9: return json_array();
    case 10: return json_object();
    default: {
        char s[64];
        size_t n = rand_text(s, sizeof s, 0);
        return json_stringn(s, n);
    }
    }
}

/* One random change somewhere in the tree; shallow nodes (the structure
 * rather than vocab entries) are picked half the time. */
static void mutate(json_t *root)
{
    slots all = {0};
    collect(NULL, NULL, 0, root, 0, &all);
    slot *s = NULL;
    if (rndn(2)) {
        size_t shallow = 0;
        for (size_t i = 0; i < all.n; i++)
            shallow += all.v[i].depth >= 1 && all.v[i].depth <= 3;
        size_t pick = rndn(shallow);
        for (size_t i = 0; i < all.n && !s; i++)
            if (all.v[i].depth >= 1 && all.v[i].depth <= 3 && pick-- == 0)
                s = &all.v[i];
    }
    if (!s)
        s = &all.v[1 + rndn(all.n - 1)];
    int op = (int)rndn(4);
    if (json_is_array(s->node) && json_array_size(s->node) > 1 && op == 0) {
        /* duplicate or swap elements (merges, vocab entries, added tokens) */
        size_t a = rndn(json_array_size(s->node)), b = rndn(json_array_size(s->node));
        json_t *x = json_incref(json_array_get(s->node, a));
        if (rndn(2))
            json_array_insert_new(s->node, b, x);
        else {
            json_t *y = json_incref(json_array_get(s->node, b));
            json_array_set_new(s->node, a, y);
            json_array_set_new(s->node, b, x);
        }
    } else if (op == 1 && s->parent) {
        /* delete */
        if (s->key)
            json_object_del(s->parent, s->key);
        else
            json_array_remove(s->parent, s->index);
    } else if (s->parent) {
        /* replace with a value of another type, or a huge / negative number */
        if (s->key)
            json_object_set_new(s->parent, s->key, junk_value());
        else
            json_array_set_new(s->parent, s->index, junk_value());
    }
    free(all.v);
}

static json_t *load_json(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    assert_non_null(j);
    return j;
}

static void test_mutated_files(void **st)
{
    (void)st;
    size_t loaded = 0, refused = 0;
    for (size_t m = 0; m < NMODELS; m++) {
        char p[512];
        snprintf(p, sizeof p, FIX "%s/tokenizer.json", MODELS[m]);
        json_t *orig = load_json(p);
        remove_file("tokenizer_config.json");
        for (int it = 0; it < iters; it++) {
            json_t *j = json_deep_copy(orig);
            int k = 1 + (int)rndn(3);
            for (int i = 0; i < k; i++)
                mutate(j);
            char *s = json_dumps(j, JSON_COMPACT);
            json_decref(j);
            if (!s) /* a mutation can leave nothing to dump */
                continue;
            write_file("tokenizer.json", s, strlen(s));
            free(s);
            if (try_load())
                loaded++;
            else
                refused++;
        }
        json_decref(orig);
    }
    fprintf(stderr, "mutated tokenizer.json: %zu loaded and exercised, %zu refused\n", loaded, refused);
    assert_true(loaded > 0 && refused > 0);
}

static void test_truncated_files(void **st)
{
    (void)st;
    remove_file("tokenizer_config.json");
    for (size_t m = 0; m < NMODELS; m++) {
        char p[512], *data = NULL;
        size_t n = 0;
        inferd_error e = {{0}};
        snprintf(p, sizeof p, FIX "%s/tokenizer.json", MODELS[m]);
        assert_int_equal(file_read_all(p, 1 << 24, &data, &n, &e), 0);
        for (int it = 0; it < iters / 4 + 1; it++) {
            size_t cut = rndn(n);
            while (cut > 0 && (data[cut - 1] == ' ' || data[cut - 1] == '\n'))
                cut--;
            write_file("tokenizer.json", data, cut);
            assert_int_equal(try_load(), 0); /* a cut JSON document is never valid */
        }
        free(data);
    }
}

static void test_mutated_config(void **st)
{
    (void)st;
    static const char *keys[] = {"add_bos_token", "add_eos_token", "bos_token", "eos_token",
                                 "do_lower_case", "model_max_length", "added_tokens_decoder"};
    for (size_t m = 0; m < NMODELS; m++) {
        char p[512], *data = NULL;
        size_t n = 0;
        inferd_error e = {{0}};
        snprintf(p, sizeof p, FIX "%s/tokenizer.json", MODELS[m]);
        assert_int_equal(file_read_all(p, 1 << 24, &data, &n, &e), 0);
        write_file("tokenizer.json", data, n);
        free(data);
        for (int it = 0; it < iters / 4 + 1; it++) {
            json_t *c = json_object();
            for (int i = 0; i < 3; i++) {
                const char *k = keys[rndn(sizeof keys / sizeof keys[0])];
                json_t *v = rndn(3) ? junk_value() : json_pack("{s:o,s:b}", "content", junk_value(), "special", 1);
                json_object_set_new(c, k, v);
            }
            char *s = rndn(8) ? json_dumps(c, 0) : strdup("{\"add_bos_token\": tru");
            json_decref(c);
            write_file("tokenizer_config.json", s, strlen(s));
            free(s);
            try_load();
        }
    }
    remove_file("tokenizer_config.json");
}

/* Random bytes and random text through the unmutated tokenizers. */
static void test_random_input(void **st)
{
    (void)st;
    remove_file("tokenizer_config.json");
    for (size_t m = 0; m < NMODELS; m++) {
        char p[256];
        snprintf(p, sizeof p, FIX "%s", MODELS[m]);
        tok_tokenizer *t = NULL;
        inferd_error e = {{0}};
        assert_int_equal(tok_load(p, &t, &e), 0);
        for (int it = 0; it < iters; it++)
            exercise(t);
        /* raw random bytes */
        for (int it = 0; it < iters; it++) {
            char b[64];
            size_t n = rndn(sizeof b);
            for (size_t i = 0; i < n; i++)
                b[i] = (char)rnd();
            int32_t *ids = NULL;
            size_t nids = 0;
            int rc = tok_encode(t, b, n, 1, &ids, &nids, &e);
            assert_int_equal(rc != 0, !valid_utf8(b, n));
            free(ids);
        }
        tok_free(t);
    }
}

static int setup(void **s)
{
    (void)s;
    const char *it = getenv("INFERD_FUZZ_ITERS"), *seed = getenv("INFERD_FUZZ_SEED");
    iters = it ? atoi(it) : 40;
    rng_state = 0x9E3779B97F4A7C15ull ^ (seed ? strtoull(seed, NULL, 0) : 20261125);
    if (!rng_state)
        rng_state = 1;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/inferd-tokfuzz-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **s)
{
    (void)s;
    remove_file("tokenizer.json");
    remove_file("tokenizer_config.json");
    rmdir(tmpdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_input),
        cmocka_unit_test(test_truncated_files),
        cmocka_unit_test(test_mutated_config),
        cmocka_unit_test(test_mutated_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
