/* config.json in the dialects real checkpoints use, and the ways it can be
 * wrong; generation_config.json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "loader/loader.h"

static int parse(const char *json, ld_config *c, inferd_error *e)
{
    memset(e, 0, sizeof *e);
    return ld_config_parse(json, strlen(json), "config.json", c, e);
}

/* Qwen2.5-7B-Instruct as transformers 4.x wrote it. */
static const char qwen25_4x[] =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"bos_token_id\":151643,"
    "\"eos_token_id\":151645,\"hidden_act\":\"silu\",\"hidden_size\":3584,"
    "\"intermediate_size\":18944,\"max_position_embeddings\":32768,\"model_type\":\"qwen2\","
    "\"num_attention_heads\":28,\"num_hidden_layers\":28,\"num_key_value_heads\":4,"
    "\"rms_norm_eps\":1e-06,\"rope_scaling\":null,\"rope_theta\":1000000.0,"
    "\"sliding_window\":131072,\"tie_word_embeddings\":false,\"torch_dtype\":\"bfloat16\","
    "\"use_sliding_window\":false,\"vocab_size\":152064}";

/* Llama-3.1-8B, 4.x style with llama3 rope_scaling. */
static const char llama31[] =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"attention_bias\":false,"
    "\"eos_token_id\":[128001,128008,128009],\"hidden_size\":4096,"
    "\"intermediate_size\":14336,\"max_position_embeddings\":131072,"
    "\"num_attention_heads\":32,\"num_hidden_layers\":32,\"num_key_value_heads\":8,"
    "\"rms_norm_eps\":1e-05,\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,"
    "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192,"
    "\"rope_type\":\"llama3\"},\"rope_theta\":500000.0,\"torch_dtype\":\"bfloat16\","
    "\"vocab_size\":128256}";

/* Qwen3, transformers 5.x style. */
static const char qwen3_5x[] =
    "{\"architectures\":[\"Qwen3ForCausalLM\"],\"head_dim\":128,\"hidden_size\":1024,"
    "\"intermediate_size\":3072,\"num_attention_heads\":16,\"num_hidden_layers\":28,"
    "\"num_key_value_heads\":8,\"dtype\":\"bfloat16\",\"tie_word_embeddings\":true,"
    "\"rope_parameters\":{\"rope_type\":\"yarn\",\"rope_theta\":1000000,\"factor\":4.0,"
    "\"original_max_position_embeddings\":32768},\"vocab_size\":151936,"
    "\"max_position_embeddings\":40960}";

static void test_dialects(void **state)
{
    ld_config c;
    inferd_error e;
    assert_int_equal(parse(qwen25_4x, &c, &e), 0);
    assert_int_equal(c.arch, LD_ARCH_QWEN2);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.num_key_value_heads, 4);
    assert_int_equal(c.attention_bias, 1);
    assert_int_equal(c.o_bias, 0);
    assert_int_equal(c.dtype, DT_BF16);
    assert_int_equal(c.sliding_window, 0);
    assert_int_equal(c.rope.type, LD_ROPE_DEFAULT);
    assert_true(c.rope.theta == 1e6);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 151645);
    assert_int_equal(c.bos_token_id, 151643);

    assert_int_equal(parse(llama31, &c, &e), 0);
    assert_int_equal(c.arch, LD_ARCH_LLAMA);
    assert_int_equal(c.rope.type, LD_ROPE_LLAMA3);
    assert_true(c.rope.factor == 8.0 && c.rope.high_freq_factor == 4.0);
    assert_int_equal(c.rope.original_max_position_embeddings, 8192);
    assert_int_equal(c.n_eos, 3);
    assert_int_equal(c.eos_token_ids[2], 128009);
    assert_int_equal(c.bos_token_id, -1);
    assert_true(c.rms_norm_eps == 1e-5);

    assert_int_equal(parse(qwen3_5x, &c, &e), 0);
    assert_int_equal(c.arch, LD_ARCH_QWEN3);
    assert_int_equal(c.head_dim, 128); /* explicit, not 1024 / 16 */
    assert_int_equal(c.tie_word_embeddings, 1);
    assert_int_equal(c.rope.type, LD_ROPE_YARN);
    assert_true(c.rope.theta == 1e6 && c.rope.factor == 4.0);
    assert_true(c.rope.beta_fast == 32.0 && c.rope.beta_slow == 1.0);

    /* architectures absent: model_type decides; linear via the old "type" key */
    assert_int_equal(parse("{\"model_type\":\"mistral\",\"vocab_size\":10,\"hidden_size\":8,"
                           "\"intermediate_size\":16,\"num_hidden_layers\":1,"
                           "\"num_attention_heads\":2,\"sliding_window\":4096,"
                           "\"rope_scaling\":{\"type\":\"linear\",\"factor\":2}}",
                           &c, &e),
                     0);
    assert_int_equal(c.arch, LD_ARCH_MISTRAL);
    assert_int_equal(c.sliding_window, 4096);
    assert_int_equal(c.rope.type, LD_ROPE_LINEAR);
    assert_int_equal(c.num_key_value_heads, 2);
    assert_int_equal(c.dtype, DT_F32);
}

static void expect_error(const char *json, const char *needle)
{
    ld_config c;
    inferd_error e;
    assert_int_equal(parse(json, &c, &e), -1);
    if (!strstr(e.msg, needle))
        fail_msg("expected '%s' in: %s", needle, e.msg);
}

#define BASE "\"vocab_size\":10,\"hidden_size\":8,\"intermediate_size\":16," \
             "\"num_hidden_layers\":1,\"num_attention_heads\":2"

static void test_refusals(void **state)
{
    expect_error("{\"architectures\":[\"GPT2LMHeadModel\"]," BASE "}",
                 "unsupported architecture 'GPT2LMHeadModel' (supported: LlamaForCausalLM");
    expect_error("{\"model_type\":\"bert\"," BASE "}", "unsupported architecture 'bert'");
    expect_error("{" BASE "}", "cannot tell which model");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"rope_scaling\":{\"rope_type\":\"dynamic\","
                 "\"factor\":2}}",
                 "rope type 'dynamic' is not supported");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"rope_parameters\":{\"rope_type\":"
                 "\"longrope\"}}",
                 "'longrope'");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"rope_scaling\":{\"rope_type\":\"linear\"}}",
                 "positive \"factor\"");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"rope_scaling\":{\"rope_type\":\"llama3\","
                 "\"factor\":8}}",
                 "llama3 rope needs");
    expect_error("{\"model_type\":\"llama\",\"vocab_size\":10}", "missing \"hidden_size\"");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"num_key_value_heads\":3}", "multiple of");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"hidden_size\":\"8\"}",
                 "\"hidden_size\" must be an integer");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"num_hidden_layers\":-1}", "out of range");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"hidden_size\":99999999999}",
                 "out of range");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"torch_dtype\":\"int8\"}",
                 "dtype 'int8' is not supported");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"eos_token_id\":\"x\"}", "eos_token_id");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"mlp_bias\":true}", "mlp_bias");
    expect_error("{\"model_type\":\"llama\",", "not valid JSON");
    expect_error("[]", "JSON object");
}

static void test_files(void **state)
{
    ld_config c;
    inferd_error e = {0};
    assert_int_equal(ld_config_load("tests/fixtures/models/llama31", &c, &e), 0);
    assert_int_equal(c.rope.type, LD_ROPE_LLAMA3);
    assert_int_equal(ld_config_load("/nonexistent-dir", &c, &e), -1);
    assert_non_null(strstr(e.msg, "no config.json"));

    char dir[] = "/tmp/inferd-test-gc-XXXXXX";
    assert_non_null(mkdtemp(dir));
    ld_generation_config g;
    assert_int_equal(ld_generation_config_load(dir, &g, &e), 0); /* absent: fine */
    assert_int_equal(g.n_eos, 0);
    assert_int_equal(g.has_temperature, 0);
    char path[256];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"eos_token_id\":[151645,151643],\"temperature\":0.7,\"top_p\":0.8,\"top_k\":20,"
          "\"do_sample\":true,\"repetition_penalty\":1.05}",
          f);
    fclose(f);
    assert_int_equal(ld_generation_config_load(dir, &g, &e), 0);
    assert_int_equal(g.n_eos, 2);
    assert_int_equal(g.eos_token_ids[1], 151643);
    assert_true(g.has_temperature && g.temperature == 0.7);
    assert_true(g.has_top_p && g.top_p == 0.8);
    assert_true(g.has_top_k && g.top_k == 20);
    assert_true(g.has_repetition_penalty && !g.has_min_p);
    assert_int_equal(g.do_sample, 1);
    f = fopen(path, "w");
    fputs("{\"temperature\":\"hot\"}", f);
    fclose(f);
    assert_int_equal(ld_generation_config_load(dir, &g, &e), -1);
    assert_non_null(strstr(e.msg, "\"temperature\" must be a number"));
    assert_non_null(strstr(e.msg, "generation_config.json"));
    remove(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dialects),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
