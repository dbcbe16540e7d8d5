/* The pytorch_model.bin reader against files torch.save really wrote
 * (tests/fixtures/encoder/torch: views, shared storages, f16/bf16/int64, 0-d
 * and empty tensors, zip and legacy formats; the classifier checkpoint) and
 * against hand-made ones (tests/fixtures/encoder/pytorch, written by
 * tests/encoder/make_pytorch_files.py): valid variations must load with the
 * right values, hostile and broken ones must be refused with the expected
 * message. Then every truncation and many byte flips of a real file must
 * either load or fail cleanly (ASan watches). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "loader/loader.h"

#define FIX "tests/fixtures/encoder/"

static json_t *load_json(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        fail_msg("%s: %s", path, je.text);
    return j;
}

static double elem(const ld_tensor *t, size_t i)
{
    switch (t->dtype) {
    case DT_F32: return ((const float *)t->data)[i];
    case DT_F16: return f16_to_f32(((const uint16_t *)t->data)[i]);
    case DT_BF16: return bf16_to_f32(((const uint16_t *)t->data)[i]);
    case DT_I64: return (double)((const int64_t *)t->data)[i];
    case DT_I32: return ((const int32_t *)t->data)[i];
    }
    return 0;
}

/* Every tensor of ref ({name: {dtype, shape, values}}) must be in w, equal. */
static void check_views(const char *path, json_t *ref)
{
    ld_weights *w = NULL;
    inferd_error e = {{0}};
    if (ld_weights_open_pytorch(path, &w, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(ld_weights_count(w), json_object_size(ref));
    const char *name;
    json_t *v;
    json_object_foreach(ref, name, v) {
        const ld_tensor *t = ld_weights_find(w, name);
        if (!t)
            fail_msg("%s: tensor %s missing", path, name);
        assert_string_equal(dtype_name(t->dtype), json_string_value(json_object_get(v, "dtype")));
        json_t *shape = json_object_get(v, "shape"), *vals = json_object_get(v, "values");
        assert_int_equal(t->n_dims, json_array_size(shape));
        for (int d = 0; d < t->n_dims; d++)
            assert_int_equal(t->shape[d], json_integer_value(json_array_get(shape, (size_t)d)));
        assert_int_equal(t->nbytes, json_array_size(vals) * dtype_size(t->dtype));
        for (size_t i = 0; i < json_array_size(vals); i++)
            if (elem(t, i) != json_number_value(json_array_get(vals, i)))
                fail_msg("%s: %s[%zu] = %g, torch says %g", path, name, i, elem(t, i),
                         json_number_value(json_array_get(vals, i)));
    }
    ld_weights_close(w);
}

static void test_torch_views_zip(void **state)
{
    json_t *ref = load_json(FIX "golden/views.json");
    check_views(FIX "torch/views.bin", ref);
    json_decref(ref);
}

static void test_torch_views_legacy(void **state)
{
    json_t *ref = load_json(FIX "golden/views.json");
    check_views(FIX "torch/views_legacy.bin", ref);
    json_decref(ref);
}

/* A folder with only pytorch_model.bin opens through ld_weights_open_dir, with
 * the int64 position_ids buffer old checkpoints carry. */
static void test_classifier_dir(void **state)
{
    ld_weights *w = NULL;
    inferd_error e = {{0}};
    if (ld_weights_open_dir(FIX "models/bert_cls_bin", &w, &e))
        fail_msg("%s", e.msg);
    const ld_tensor *pos = ld_weights_find(w, "bert.embeddings.position_ids");
    assert_non_null(pos);
    assert_int_equal(pos->dtype, DT_I64);
    assert_int_equal(pos->shape[1], 128);
    for (int i = 0; i < 128; i++)
        assert_int_equal(((const int64_t *)pos->data)[i], i);
    const ld_tensor *cls = ld_weights_find(w, "classifier.weight");
    assert_non_null(cls);
    assert_int_equal(cls->shape[0], 2);
    assert_int_equal(cls->shape[1], 32);
    ld_weights_close(w);
}

static void test_no_weights_message(void **state)
{
    ld_weights *w = NULL;
    inferd_error e = {{0}};
    assert_int_equal(ld_weights_open_dir(FIX "golden", &w, &e), -1);
    assert_non_null(strstr(e.msg, "no model.safetensors"));
    assert_non_null(strstr(e.msg, "pytorch_model.bin"));
}

static void test_handmade(void **state)
{
    json_t *expect = load_json(FIX "pytorch/expect.json");
    const char *name;
    json_t *x;
    int n = 0;
    json_object_foreach(expect, name, x) {
        char path[512];
        snprintf(path, sizeof path, FIX "pytorch/%s", name);
        ld_weights *w = NULL;
        inferd_error e = {{0}};
        json_t *ok = json_object_get(x, "ok");
        int rc = ld_weights_open_pytorch(path, &w, &e);
        if (ok) {
            if (rc)
                fail_msg("%s should load: %s", name, e.msg);
            assert_int_equal(ld_weights_count(w), json_object_size(ok));
            const char *tn;
            json_t *vals;
            json_object_foreach(ok, tn, vals) {
                const ld_tensor *t = ld_weights_find(w, tn);
                if (!t)
                    fail_msg("%s: tensor %s missing", name, tn);
                assert_int_equal(t->nbytes, json_array_size(vals) * 4);
                for (size_t i = 0; i < json_array_size(vals); i++)
                    if (elem(t, i) != json_number_value(json_array_get(vals, i)))
                        fail_msg("%s: %s[%zu] = %g, want %g", name, tn, i, elem(t, i),
                                 json_number_value(json_array_get(vals, i)));
            }
            ld_weights_close(w);
        } else {
            const char *want = json_string_value(json_object_get(x, "error"));
            if (rc == 0)
                fail_msg("%s was accepted; want an error containing '%s'", name, want);
            if (!strstr(e.msg, want))
                fail_msg("%s: error '%s' does not contain '%s'", name, e.msg, want);
            if (!strstr(e.msg, name))
                fail_msg("%s: error '%s' does not name the file", name, e.msg);
        }
        n++;
    }
    assert_true(n >= 30);
    assert_int_equal(access("/tmp/inferd_pwned", F_OK), -1);
    json_decref(expect);
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* Damaged copies of a real checkpoint: each truncation and each single-byte
 * change must give a clean load or a clean error, never a crash or a read
 * outside the file. */
static void mutate(const char *src)
{
    char *data;
    size_t n;
    inferd_error e = {{0}};
    if (file_read_all(src, 1 << 20, &data, &n, &e))
        fail_msg("%s", e.msg);
    /* thousands of rewrites: memory-backed /dev/shm when there is one */
    char path[64];
    snprintf(path, sizeof path, "%s/inferd-test-pt-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    int refused = 0, loaded = 0;
    for (size_t cut = 0; cut < n; cut += 7) {
        write_file(path, data, cut);
        ld_weights *w = NULL;
        if (ld_weights_open_pytorch(path, &w, &e) == 0) {
            ld_weights_close(w);
            loaded++;
        } else
            refused++;
    }
    assert_int_equal(loaded, 0);
    unsigned rng = 12345;
    for (int k = 0; k < 1500; k++) {
        rng = rng * 1103515245u + 12345u;
        size_t at = (rng >> 8) % n;
        char saved = data[at];
        data[at] = (char)(rng >> 3);
        write_file(path, data, n);
        ld_weights *w = NULL;
        if (ld_weights_open_pytorch(path, &w, &e) == 0) {
            ld_weights_close(w);
            loaded++;
        } else
            refused++;
        data[at] = saved;
    }
    assert_true(refused > 100);
    unlink(path);
    free(data);
}

static void test_mutations(void **state)
{
    mutate(FIX "torch/views.bin");
    mutate(FIX "torch/views_legacy.bin");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torch_views_zip),   cmocka_unit_test(test_torch_views_legacy),
        cmocka_unit_test(test_classifier_dir),    cmocka_unit_test(test_no_weights_message),
        cmocka_unit_test(test_handmade),          cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
