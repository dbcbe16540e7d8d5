/* Encoder folders: config.json of the BERT family, sentence-transformers
 * pooling files, ModelScope configuration.json, and sharded
 * pytorch_model.bin checkpoints — what is read, and what is refused with a
 * message naming the file and the key. */
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

#define FIX "tests/fixtures/encoder/"

static char dir[256];

static void put(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void copy(const char *src, const char *name)
{
    char *data;
    size_t n;
    inferd_error e;
    assert_int_equal(file_read_all(src, 1 << 20, &data, &n, &e), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
    free(data);
}

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/inferd-test-enc-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char sub[300];
    snprintf(sub, sizeof sub, "%s/1_Pooling", dir);
    mkdir(sub, 0755);
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#define BERT_CFG(extra)                                                                  \
    "{\"architectures\": [\"BertForSequenceClassification\"], \"model_type\": \"bert\", " \
    "\"vocab_size\": 100, \"hidden_size\": 32, \"intermediate_size\": 64, "              \
    "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, "                             \
    "\"max_position_embeddings\": 64" extra "}"

static void test_fixture_configs(void **state)
{
    ld_encoder_config c;
    inferd_error e = {{0}};
    assert_int_equal(ld_encoder_config_load(FIX "models/bert_cls_bin", &c, &e), 0);
    assert_string_equal(c.architecture, "BertForSequenceClassification");
    assert_int_equal(c.num_labels, 2);
    assert_string_equal(c.labels[1], "相似");
    assert_string_equal(c.task, "sentence-similarity");
    assert_int_equal(c.pooling, LD_POOL_CLS);
    assert_int_equal(c.roberta, 0);
    assert_true(c.layer_norm_eps == 1e-12);

    assert_int_equal(ld_encoder_config_load(FIX "models/xlmr_st", &c, &e), 0);
    assert_int_equal(c.roberta, 1);
    assert_int_equal(c.pad_token_id, 1);
    assert_int_equal(c.type_vocab_size, 1);
    assert_int_equal(c.num_labels, 0);
    assert_int_equal(c.pooling, LD_POOL_MEAN);
    assert_int_equal(c.normalize, 1);
    assert_int_equal(c.has_st_config, 1);

    assert_int_equal(ld_encoder_config_load(FIX "models/xlmr_rerank", &c, &e), 0);
    assert_int_equal(c.num_labels, 1);
    assert_string_equal(c.labels[0], "LABEL_0");

    assert_true(ld_is_encoder_dir(FIX "models/bert"));
    assert_false(ld_is_encoder_dir("tests/fixtures/models/qwen3"));
    assert_false(ld_is_encoder_dir("/nonexistent"));
}

static void expect_refused(const char *want)
{
    ld_encoder_config c;
    inferd_error e = {{0}};
    assert_int_equal(ld_encoder_config_load(dir, &c, &e), -1);
    if (!strstr(e.msg, want))
        fail_msg("error '%s' does not contain '%s'", e.msg, want);
}

static void test_refusals(void **state)
{
    put("config.json", "{\"architectures\": [\"GPT2LMHeadModel\"], \"vocab_size\": 5}");
    expect_refused("'GPT2LMHeadModel' is not an encoder");
    put("config.json", BERT_CFG(", \"hidden_act\": \"relu\""));
    expect_refused("hidden_act 'relu'");
    put("config.json", BERT_CFG(", \"position_embedding_type\": \"relative_key\""));
    expect_refused("position_embedding_type 'relative_key'");
    put("config.json", BERT_CFG(", \"num_attention_heads\": 5"));
    expect_refused("not a multiple");
    put("config.json", BERT_CFG(", \"id2label\": {\"0\": \"a\", \"5\": \"b\"}"));
    expect_refused("id2label");
    put("config.json", BERT_CFG(", \"vocab_size\": -3"));
    expect_refused("vocab_size");
    put("config.json", "[1, 2]");
    expect_refused("must be a JSON object");
    put("config.json", "{");
    expect_refused("not valid JSON");

    put("config.json", BERT_CFG(""));
    put("modules.json", "[{\"idx\": 0, \"name\": \"0\", \"path\": \"\", \"type\": "
                        "\"sentence_transformers.models.Transformer\"}, {\"idx\": 1, \"name\": "
                        "\"1\", \"path\": \"1_Pooling\", \"type\": "
                        "\"sentence_transformers.models.Pooling\"}]");
    put("1_Pooling/config.json", "{\"pooling_mode_max_tokens\": true}");
    expect_refused("pooling_mode_max_tokens is not supported");
    put("1_Pooling/config.json", "{\"pooling_mode_cls_token\": true, "
                                 "\"pooling_mode_mean_tokens\": true}");
    expect_refused("exactly one pooling mode");
    put("1_Pooling/config.json", "{\"pooling_mode_lasttoken\": true}");
    ld_encoder_config c;
    inferd_error e = {{0}};
    assert_int_equal(ld_encoder_config_load(dir, &c, &e), 0);
    assert_int_equal(c.pooling, LD_POOL_LAST);
    assert_int_equal(c.normalize, 0);
    assert_int_equal(c.num_labels, 2); /* transformers' default */
    put("modules.json", "[{\"idx\": 2, \"name\": \"2\", \"path\": \"2_Dense\", \"type\": "
                        "\"sentence_transformers.models.Dense\"}]");
    expect_refused("'sentence_transformers.models.Dense' is not supported");
    put("modules.json", "[{\"idx\": 1, \"name\": \"1\", \"path\": \"../etc\", \"type\": "
                        "\"sentence_transformers.models.Pooling\"}]");
    expect_refused("bad Pooling path");
    put("modules.json", "{}");
    expect_refused("must be a list of modules");
}

/* pytorch_model.bin.index.json names the shards like the safetensors index. */
static void test_sharded_bin(void **state)
{
    char path[512];
    snprintf(path, sizeof path, "%s/modules.json", dir);
    unlink(path);
    put("config.json", BERT_CFG(""));
    copy(FIX "pytorch/good_proto2.bin", "pytorch_model-00001-of-00002.bin");
    copy(FIX "pytorch/good_shard_b.bin", "pytorch_model-00002-of-00002.bin");
    put("pytorch_model.bin.index.json",
        "{\"metadata\": {}, \"weight_map\": {\"w\": \"pytorch_model-00001-of-00002.bin\", "
        "\"wt\": \"pytorch_model-00001-of-00002.bin\", \"row\": "
        "\"pytorch_model-00001-of-00002.bin\", \"x\": \"pytorch_model-00002-of-00002.bin\", "
        "\"y\": \"pytorch_model-00002-of-00002.bin\"}}");
    ld_weights *w = NULL;
    inferd_error e = {{0}};
    if (ld_weights_open_dir(dir, &w, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(ld_weights_count(w), 5);
    const ld_tensor *y = ld_weights_find(w, "y");
    assert_non_null(y);
    assert_true(((const float *)y->data)[1] == 1.0f);
    ld_weights_close(w);

    /* a shard that does not hold what the index says */
    put("pytorch_model.bin.index.json",
        "{\"weight_map\": {\"w\": \"pytorch_model-00001-of-00002.bin\", \"z\": "
        "\"pytorch_model-00002-of-00002.bin\"}}");
    assert_int_equal(ld_weights_open_dir(dir, &w, &e), -1);
    assert_non_null(strstr(e.msg, "'z'"));
    /* safetensors win over .bin when both exist */
    copy(FIX "models/bert/model.safetensors", "model.safetensors");
    assert_int_equal(ld_weights_open_dir(dir, &w, &e), 0);
    assert_non_null(ld_weights_find(w, "embeddings.word_embeddings.weight"));
    ld_weights_close(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_configs),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_sharded_bin),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
