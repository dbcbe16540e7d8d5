/* hub: the parts that need no server — default file selection and globs,
 * cache paths from the environment, URL origins (what decides whether the
 * token may be sent), digests, and hub_resolve_model on local folders. The
 * HTTP side is tested end to end by test_pull.py against real servers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "hub/hub.h"
#include "hub/internal.h"

static void test_default_selection(void **state)
{
    (void)state;
    const char *yes[] = {"config.json", "model.safetensors", "model-00001-of-00002.safetensors",
                         "model.safetensors.index.json", "tokenizer.json", "tokenizer.model",
                         "tokenizer_config.json", "generation_config.json", "vocab.txt",
                         "merges.txt", "chat_template.jinja", "qwen.tiktoken",
                         "special_tokens_map.json", "1_Pooling/config.json", NULL};
    const char *no[] = {"pytorch_model.bin", "pytorch_model-00001-of-00002.bin", "model.onnx",
                        "onnx/model.onnx", "onnx/config.json", "original/consolidated.00.pth",
                        "README.md", ".gitattributes", "flax_model.msgpack", "tf_model.h5",
                        "training_args.bin", NULL};
    for (int i = 0; yes[i]; i++)
        if (!hub_default_wants(yes[i], 1)) fail_msg("default selection skips %s", yes[i]);
    for (int i = 0; no[i]; i++)
        if (hub_default_wants(no[i], 1)) fail_msg("default selection takes %s", no[i]);
    /* Without safetensors, the .bin weights are all there is. */
    assert_true(hub_default_wants("pytorch_model.bin", 0));
    assert_true(hub_default_wants("pytorch_model-00001-of-00002.bin", 0));
    assert_false(hub_default_wants("training_args.bin", 0));
    assert_false(hub_default_wants("model.onnx", 0));
}

static void test_globs(void **state)
{
    (void)state;
    hub_options o;
    hub_options_init(&o);
    const char *inc[] = {"*.json", "onnx/"};
    const char *exc[] = {"*index*"};
    o.include = inc;
    o.n_include = 2;
    o.exclude = exc;
    o.n_exclude = 1;
    assert_true(hub_selected("config.json", &o, 1));
    assert_true(hub_selected("sub/dir/x.json", &o, 1)); /* '*' crosses '/' */
    assert_true(hub_selected("onnx/model.onnx", &o, 1)); /* "dir/" means below it */
    assert_false(hub_selected("model.safetensors.index.json", &o, 1));
    assert_false(hub_selected("model.safetensors", &o, 1));
    o.n_include = 0; /* exclude alone narrows the default selection */
    assert_true(hub_selected("model.safetensors", &o, 1));
    assert_false(hub_selected("model.safetensors.index.json", &o, 1));
    assert_false(hub_selected("README.md", &o, 1));
    /* Mistral layout: shards and a consolidated copy; only the shards. */
    int flags = hub_repo_flags("model-00001-of-00003.safetensors") |
                hub_repo_flags("consolidated.safetensors") | hub_repo_flags("params.json");
    assert_int_equal(flags, HUB_HAS_SAFETENSORS | HUB_HAS_HF_SHARDS);
    assert_false(hub_selected("consolidated.safetensors", &o, flags));
    assert_true(hub_selected("model-00001-of-00003.safetensors", &o, flags));
    assert_true(hub_selected("consolidated.safetensors", &o,
                             hub_repo_flags("consolidated.safetensors")));
}

static void test_cache_dirs(void **state)
{
    (void)state;
    hub_options o;
    hub_options_init(&o);
    unsetenv("HF_HUB_CACHE");
    unsetenv("HUGGINGFACE_HUB_CACHE");
    unsetenv("XDG_CACHE_HOME");
    unsetenv("MODELSCOPE_CACHE");
    setenv("HOME", "/home/u", 1);
    unsetenv("HF_HOME");
    char *s = hub_hf_cache_dir(&o);
    assert_string_equal(s, "/home/u/.cache/huggingface/hub");
    free(s);
    s = hub_ms_cache_dir(&o);
    assert_string_equal(s, "/home/u/.cache/modelscope/hub");
    free(s);
    setenv("HF_HOME", "/data/hf", 1);
    s = hub_hf_cache_dir(&o);
    assert_string_equal(s, "/data/hf/hub");
    free(s);
    setenv("HF_HUB_CACHE", "/fast/hub", 1);
    s = hub_hf_cache_dir(&o);
    assert_string_equal(s, "/fast/hub");
    free(s);
    o.cache_dir = "/flag";
    s = hub_hf_cache_dir(&o);
    assert_string_equal(s, "/flag");
    free(s);
    s = hub_ms_model_dir("/c", "qwen/Qwen2.5-7B-Instruct");
    assert_string_equal(s, "/c/models/qwen/Qwen2___5-7B-Instruct");
    free(s);
    unsetenv("HF_HUB_CACHE");
    unsetenv("HF_HOME");
}

static void test_source_from_env(void **state)
{
    (void)state;
    hub_options o;
    hub_options_init(&o);
    unsetenv("INFERD_MODEL_SOURCE");
    unsetenv("VLLM_USE_MODELSCOPE");
    assert_int_equal(hub_source_resolve(&o), HUB_SOURCE_HF);
    setenv("VLLM_USE_MODELSCOPE", "True", 1);
    assert_int_equal(hub_source_resolve(&o), HUB_SOURCE_MODELSCOPE);
    setenv("INFERD_MODEL_SOURCE", "hf", 1);
    assert_int_equal(hub_source_resolve(&o), HUB_SOURCE_HF);
    o.source = HUB_SOURCE_MODELSCOPE; /* the flag wins */
    assert_int_equal(hub_source_resolve(&o), HUB_SOURCE_MODELSCOPE);
    unsetenv("INFERD_MODEL_SOURCE");
    unsetenv("VLLM_USE_MODELSCOPE");
}

/* The token goes only where the origin (scheme, host, port) is the same. */
static void test_url_origin(void **state)
{
    (void)state;
    char *a = hub_url_origin("https://huggingface.co/api/models/x");
    assert_string_equal(a, "https://huggingface.co:443");
    char *b = hub_url_origin("https://HuggingFace.co:443/x/resolve/main/f");
    assert_string_equal(a, b);
    char *c = hub_url_origin("https://cdn-lfs.huggingface.co/repos/ab/cd?X-Amz-Signature=1");
    assert_string_not_equal(a, c);
    char *d = hub_url_origin("http://127.0.0.1:8080/x");
    char *f = hub_url_origin("http://127.0.0.1:8081/x");
    assert_string_not_equal(d, f);
    assert_null(hub_url_origin("not a url"));
    char *j = hub_url_join("https://hub.example/org/m/resolve/main/f", "/org2/m/resolve/main/f");
    assert_string_equal(j, "https://hub.example/org2/m/resolve/main/f");
    char *k = hub_url_join("https://hub.example/a", "https://cdn.example/b?sig=1%2F2");
    assert_string_equal(k, "https://cdn.example/b?sig=1%2F2"); /* signed: kept as given */
    char *e = hub_url_escape("dir/a b+c.json", 1);
    assert_string_equal(e, "dir/a%20b%2Bc.json");
    char *g = hub_url_escape("refs/pr/1", 0);
    assert_string_equal(g, "refs%2Fpr%2F1");
    free(a); free(b); free(c); free(d); free(f); free(j); free(k); free(e); free(g);
}

static void test_digests(void **state)
{
    (void)state;
    char path[] = "/tmp/inferd-hub-digest-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello\n", 6), 6);
    close(fd);
    char out[65];
    inferd_error e;
    /* `git hash-object` of "hello\n" and `sha256sum`. */
    assert_int_equal(hub_file_digest(path, HASH_GIT_SHA1, out, &e), 0);
    assert_string_equal(out, "ce013625030ba8dba906f756967f9e9ca394464a");
    assert_int_equal(hub_file_digest(path, HASH_SHA256, out, &e), 0);
    assert_string_equal(out, "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
    unlink(path);
    assert_int_equal(hub_file_digest(path, HASH_SHA256, out, &e), -1);
}

static void test_resolve_local_and_bad_ids(void **state)
{
    (void)state;
    inferd_error e = {{0}};
    char *dir = NULL;
    assert_int_equal(hub_resolve_model("tests/fixtures/models/llama", NULL, &dir, &e), 0);
    assert_string_equal(dir, "tests/fixtures/models/llama");
    free(dir);
    assert_int_equal(hub_resolve_model("./no/such/folder", NULL, &dir, &e), -1);
    assert_null(dir);
    assert_non_null(strstr(e.msg, "does not exist"));
    const char *bad[] = {"justaname", "a/b/c", "org/../x", "org/na me", "/abs", "a--b/c", NULL};
    for (int i = 0; bad[i]; i++) {
        e.msg[0] = 0;
        assert_int_equal(hub_pull(bad[i], NULL, &dir, &e), -1);
        assert_true(e.msg[0]);
    }
    /* Offline and not cached: an error that says so, no network touched. */
    hub_options o;
    hub_options_init(&o);
    o.offline = 1;
    o.cache_dir = "/nonexistent-inferd-cache";
    assert_int_equal(hub_resolve_model("org/model", &o, &dir, &e), -1);
    assert_non_null(strstr(e.msg, "not in the cache"));
    o.source = HUB_SOURCE_MODELSCOPE;
    assert_int_equal(hub_resolve_model("org/model", &o, &dir, &e), -1);
    assert_non_null(strstr(e.msg, "not in the ModelScope cache"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_selection),
        cmocka_unit_test(test_globs),
        cmocka_unit_test(test_cache_dirs),
        cmocka_unit_test(test_source_from_env),
        cmocka_unit_test(test_url_origin),
        cmocka_unit_test(test_digests),
        cmocka_unit_test(test_resolve_local_and_bad_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
