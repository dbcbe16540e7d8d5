/* safetensors files written byte by byte: a good one, and each way a hostile
 * or damaged one can be wrong. Every bad file must be refused with a message
 * naming the file, the tensor and the fault; ASan checks no byte outside the
 * file is read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "loader/loader.h"

static char tmpdir[256];

static void write_bytes(const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* header JSON + data → a safetensors file; hlen_override != 0 lies about
 * the header length. */
static void write_st(const char *name, const char *header, const void *data, size_t n,
                     uint64_t hlen_override)
{
    size_t hl = strlen(header);
    size_t total = 8 + hl + n;
    unsigned char *buf = malloc(total);
    uint64_t len = hlen_override ? hlen_override : hl;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(len >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (n)
        memcpy(buf + 8 + hl, data, n);
    write_bytes(name, buf, total);
    free(buf);
}

static const char *path_of(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

static int setup(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/inferd-test-st-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const float good_data[6] = {1, 2, 3, 4, 5, 6};
/* a: [2,2] F32 at 0..16, b: [2] BF16 at 16..20, padded header */
static const char good_header[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
    "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[16,20]}}   ";

static void test_good_file(void **state)
{
    unsigned char data[20];
    memcpy(data, good_data, 16);
    uint16_t b16[2] = {0x3f80, 0x4000}; /* 1.0, 2.0 */
    memcpy(data + 16, b16, 4);
    write_st("good.safetensors", good_header, data, sizeof data, 0);
    ld_weights *w = NULL;
    inferd_error e = {0};
    assert_int_equal(ld_weights_open_file(path_of("good.safetensors"), &w, &e), 0);
    assert_int_equal(ld_weights_count(w), 2);
    const ld_tensor *a = ld_weights_find(w, "a");
    assert_non_null(a);
    assert_int_equal(a->dtype, DT_F32);
    assert_int_equal(a->n_dims, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->nbytes, 16);
    assert_memory_equal(a->data, good_data, 16);
    const ld_tensor *b = ld_weights_find(w, "b");
    assert_non_null(b);
    assert_int_equal(b->dtype, DT_BF16);
    assert_true(bf16_to_f32(((const uint16_t *)b->data)[1]) == 2.0f);
    assert_null(ld_weights_find(w, "__metadata__"));
    assert_null(ld_weights_find(w, "c"));
    ld_weights_close(w);
}

/* Writes a one-tensor file and expects refusal with every needle in the message. */
static void expect_refused(const char *name, const char *header, const void *data, size_t n,
                           uint64_t hlen, const char *needle1, const char *needle2)
{
    write_st(name, header, data, n, hlen);
    ld_weights *w = NULL;
    inferd_error e = {0};
    assert_int_equal(ld_weights_open_file(path_of(name), &w, &e), -1);
    assert_null(w);
    if (!strstr(e.msg, name) || !strstr(e.msg, needle1) || (needle2 && !strstr(e.msg, needle2)))
        fail_msg("message for %s lacks '%s'/'%s': %s", name, needle1, needle2 ? needle2 : "",
                 e.msg);
}

static void test_truncated(void **state)
{
    unsigned char data[20] = {0};
    /* data section cut to 12 bytes: tensor a's [0,16] is outside it */
    expect_refused("trunc.safetensors", good_header, data, 12, 0, "'a'", "outside");
    /* header length claims more than the file holds */
    expect_refused("hdr.safetensors", good_header, data, 4, 100000, "runs past the end",
                   NULL);
    write_bytes("tiny.safetensors", "abc", 3);
    ld_weights *w = NULL;
    inferd_error e = {0};
    assert_int_equal(ld_weights_open_file(path_of("tiny.safetensors"), &w, &e), -1);
    assert_non_null(strstr(e.msg, "too small"));
}

static void test_huge_header(void **state)
{
    unsigned char data[20] = {0};
    expect_refused("huge.safetensors", good_header, data, sizeof data, 1ull << 40,
                   "100 MB limit", NULL);
    expect_refused("neg.safetensors", good_header, data, sizeof data, UINT64_MAX,
                   "100 MB limit", NULL);
}

static void test_overlap(void **state)
{
    unsigned char data[32] = {0};
    expect_refused("overlap.safetensors",
                   "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                   "\"y\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                   data, sizeof data, 0, "overlap", "'x'");
}

static void test_wrong_sizes(void **state)
{
    unsigned char data[64] = {0};
    expect_refused("size.safetensors",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", data,
                   sizeof data, 0, "'w'", "shape holds 6 elements");
    expect_refused("size2.safetensors",
                   "{\"w\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,16]}}", data,
                   sizeof data, 0, "'w'", "span 16 bytes");
    /* 2^62 * 2^62 elements must not wrap around to a small product */
    expect_refused("ovf.safetensors",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,"
                   "4611686018427387904,16],\"data_offsets\":[0,16]}}",
                   data, sizeof data, 0, "'w'", "overflows");
    expect_refused("ovf2.safetensors",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
                   "\"data_offsets\":[0,16]}}",
                   data, sizeof data, 0, "'w'", NULL);
    expect_refused("rev.safetensors",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,8]}}", data,
                   sizeof data, 0, "'w'", "outside");
}

static void test_bad_fields(void **state)
{
    unsigned char data[16] = {0};
    expect_refused("dtype.safetensors",
                   "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[16],\"data_offsets\":[0,16]}}",
                   data, sizeof data, 0, "F8_E4M3", "not supported");
    expect_refused("json.safetensors", "{\"w\":{\"dtype\":", data, sizeof data, 0,
                   "not valid JSON", NULL);
    expect_refused("array.safetensors", "[1,2,3]", data, sizeof data, 0, "JSON object", NULL);
    expect_refused("shape.safetensors",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", data,
                   sizeof data, 0, "'w'", "non-negative");
    expect_refused("dims.safetensors",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,4],"
                   "\"data_offsets\":[0,16]}}",
                   data, sizeof data, 0, "'w'", "at most 8");
    expect_refused("offs.safetensors",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}}", data,
                   sizeof data, 0, "'w'", "data_offsets");
    expect_refused("dup.safetensors",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                   "\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                   data, sizeof data, 0, "duplicate", NULL);
}

/* An F32 tensor at an odd offset is served from an aligned copy. */
static void test_misaligned(void **state)
{
    unsigned char data[17] = {0};
    memcpy(data + 1, good_data, 16);
    write_st("odd.safetensors",
             "{\"p\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[0,0]},"
             "\"q\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[1,17]}}",
             data, sizeof data, 0);
    ld_weights *w = NULL;
    inferd_error e = {0};
    assert_int_equal(ld_weights_open_file(path_of("odd.safetensors"), &w, &e), 0);
    const ld_tensor *q = ld_weights_find(w, "q");
    assert_non_null(q);
    assert_int_equal((uintptr_t)q->data % 4, 0);
    assert_memory_equal(q->data, good_data, 16);
    ld_weights_close(w);
}

/* Random corruption of a good file: any outcome but a crash or an
 * out-of-bounds read (ASan) is acceptable. */
static void test_mutations(void **state)
{
    unsigned char data[20];
    memcpy(data, good_data, 16);
    memset(data + 16, 0x3f, 4);
    size_t hl = strlen(good_header), total = 8 + hl + sizeof data;
    unsigned char *orig = malloc(total), *buf = malloc(total);
    for (int i = 0; i < 8; i++)
        orig[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(orig + 8, good_header, hl);
    memcpy(orig + 8 + hl, data, sizeof data);
    srand(1234);
    int refused = 0;
    for (int it = 0; it < 400; it++) {
        memcpy(buf, orig, total);
        size_t n = total;
        int k = 1 + rand() % 4;
        for (int j = 0; j < k; j++)
            buf[rand() % total] = (unsigned char)(rand() % 3 ? "0123456789,[]{}\":"[rand() % 17]
                                                           : rand());
        if (rand() % 5 == 0)
            n = (size_t)rand() % total;
        write_bytes("mut.safetensors", buf, n);
        ld_weights *w = NULL;
        inferd_error e = {0};
        if (ld_weights_open_file(path_of("mut.safetensors"), &w, &e) == 0) {
            for (size_t t = 0; t < ld_weights_count(w); t++) {
                const ld_tensor *x = ld_weights_at(w, t);
                volatile unsigned char sum = 0;
                for (size_t b = 0; b < x->nbytes; b++)
                    sum ^= ((const unsigned char *)x->data)[b];
            }
            ld_weights_close(w);
        } else {
            assert_true(strlen(e.msg) > 0);
            refused++;
        }
    }
    assert_true(refused > 100);
    free(orig);
    free(buf);
}

static void test_sharded(void **state)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    mkdir(dir, 0755);
    write_st("sharded/one.safetensors",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", good_data, 8,
             0);
    write_st("sharded/two.safetensors",
             "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", good_data + 2,
             8, 0);
    const char *idx = "{\"metadata\":{},\"weight_map\":{\"a\":\"one.safetensors\","
                      "\"b\":\"two.safetensors\"}}";
    write_bytes("sharded/model.safetensors.index.json", idx, strlen(idx));
    ld_weights *w = NULL;
    inferd_error e = {0};
    assert_int_equal(ld_weights_open_dir(dir, &w, &e), 0);
    assert_int_equal(ld_weights_count(w), 2);
    assert_true(((const float *)ld_weights_find(w, "b")->data)[1] == 4.0f);
    ld_weights_close(w);

    const char *bad[][2] = {
        {"{\"weight_map\":{\"a\":\"../one.safetensors\"}}", "must be a file name"},
        {"{\"weight_map\":{\"a\":\"three.safetensors\"}}", "three.safetensors"},
        {"{\"weight_map\":{\"a\":\"one.safetensors\",\"c\":\"two.safetensors\"}}",
         "tensor 'c' is listed"},
        {"{\"weight_map\":[]}", "weight_map"},
        {"{\"weight_map\":{\"a\":\"one.safetensors\",\"b\":\"one.safetensors\","
         "\"x\":\"dupe.safetensors\"}}",
         "more than one file"},
    };
    write_st("sharded/dupe.safetensors",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"x\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}",
             good_data, 8, 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_bytes("sharded/model.safetensors.index.json", bad[i][0], strlen(bad[i][0]));
        w = NULL;
        memset(&e, 0, sizeof e);
        assert_int_equal(ld_weights_open_dir(dir, &w, &e), -1);
        if (!strstr(e.msg, bad[i][1]))
            fail_msg("index %zu: expected '%s' in: %s", i, bad[i][1], e.msg);
    }
    char empty[512];
    snprintf(empty, sizeof empty, "%s/empty", tmpdir);
    mkdir(empty, 0755);
    assert_int_equal(ld_weights_open_dir(empty, &w, &e), -1);
    assert_non_null(strstr(e.msg, "no model.safetensors"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file),   cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_huge_header), cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_wrong_sizes), cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_misaligned),  cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_sharded),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
