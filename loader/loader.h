/* loader: reads a model folder as Hugging Face and ModelScope publish it —
 * safetensors weights (memory-mapped, single file or sharded), or
 * pytorch_model.bin without executing its pickle, config.json (transformers
 * 4.x and 5.x keys; decoders and encoders) and generation_config.json. Used
 * by model/ (weights, architecture), api/ (default sampling) and cli/. Every
 * file is untrusted input: a bad one is refused with the file name, the
 * tensor or key, and what is wrong. It only reads: it never computes with
 * the weights, touches a device, fetches a file (hub/ does) or serves. */
#ifndef INFERD_LOADER_H
#define INFERD_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* ---- safetensors ---- */

#define LD_MAX_DIMS 8
typedef struct ld_tensor {
    const char *name;
    inferd_dtype dtype;               /* F32, F16 or BF16 */
    int n_dims;
    int64_t shape[LD_MAX_DIMS];       /* row-major, shape[n_dims-1] contiguous */
    const void *data;                 /* inside the file's mapping */
    size_t nbytes;
} ld_tensor;

/* All tensors of a model folder: model.safetensors, or the shards listed in
 * model.safetensors.index.json. Tensor data stays valid until ld_close. */
typedef struct ld_weights ld_weights;

int ld_weights_open_dir(const char *dir, ld_weights **out, inferd_error *e);
/* One .safetensors file alone (tests and tools). */
int ld_weights_open_file(const char *path, ld_weights **out, inferd_error *e);
/* One PyTorch checkpoint (torch.save of a state dict: the zip format, or the
 * legacy pickle-stream format). ld_weights_open_dir falls back to
 * pytorch_model.bin / pytorch_model.bin.index.json when a folder has no
 * safetensors. The pickle inside is never executed: only the opcodes and
 * globals a state dict needs are understood (OrderedDict, torch._utils.
 * _rebuild_tensor_v2 / _rebuild_parameter, torch.{Float,Half,BFloat16,Long,
 * Int}Storage); anything else is refused by name. Non-contiguous views get a
 * contiguous copy; tensors of dtype I64/I32 are kept as such. */
int ld_weights_open_pytorch(const char *path, ld_weights **out, inferd_error *e);
size_t ld_weights_count(const ld_weights *w);
const ld_tensor *ld_weights_at(const ld_weights *w, size_t i);
const ld_tensor *ld_weights_find(const ld_weights *w, const char *name);
void ld_weights_close(ld_weights *w);

/* ---- config.json ---- */

typedef enum ld_rope_type {
    LD_ROPE_DEFAULT = 0,
    LD_ROPE_LINEAR,
    LD_ROPE_LLAMA3,
    LD_ROPE_YARN,
} ld_rope_type;

typedef struct ld_rope {
    ld_rope_type type;
    double theta;                      /* rope_theta (default 10000) */
    double factor;                     /* linear, llama3, yarn */
    double low_freq_factor;            /* llama3 */
    double high_freq_factor;           /* llama3 */
    int original_max_position_embeddings; /* llama3, yarn (0 = absent) */
    double beta_fast, beta_slow;       /* yarn (defaults 32, 1) */
    double attention_factor;           /* yarn; 0 = absent (derive from factor) */
    double mscale, mscale_all_dim;     /* yarn (deepseek style), 0 = absent */
    double partial_rotary_factor;      /* 1.0 unless given */
} ld_rope;

typedef enum ld_arch {
    LD_ARCH_LLAMA = 0,   /* LlamaForCausalLM */
    LD_ARCH_MISTRAL,     /* MistralForCausalLM */
    LD_ARCH_QWEN2,       /* Qwen2ForCausalLM: q/k/v bias */
    LD_ARCH_QWEN3,       /* Qwen3ForCausalLM: q/k RMSNorm */
} ld_arch;

typedef struct ld_config {
    ld_arch arch;
    char architecture[64];     /* as written, e.g. "Qwen3ForCausalLM" */
    char model_type[32];
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;   /* defaults to num_attention_heads */
    int head_dim;              /* explicit, or hidden_size / num_attention_heads */
    int max_position_embeddings;
    double rms_norm_eps;
    int tie_word_embeddings;   /* default false (true for some Qwen sizes) */
    int attention_bias;        /* q/k/v (and o for llama's attention_bias) */
    int o_bias;                /* o_proj has a bias (llama attention_bias) */
    int mlp_bias;
    int sliding_window;        /* 0 = none or disabled */
    char hidden_act[16];       /* "silu" */
    inferd_dtype dtype;        /* torch_dtype / dtype; F32 if absent */
    ld_rope rope;
    int bos_token_id;          /* -1 if absent */
    int n_eos;                 /* eos_token_id, int or list */
    int eos_token_ids[16];
} ld_config;

/* Reads DIR/config.json. Unknown architectures and rope types are refused by
 * name ("unsupported architecture 'GPT2LMHeadModel' (supported: ...)"). */
int ld_config_load(const char *dir, ld_config *c, inferd_error *e);
/* Same, from a JSON text (tests). `what` names it in messages. */
int ld_config_parse(const char *json, size_t len, const char *what,
                    ld_config *c, inferd_error *e);

/* ---- encoder models (BERT family): config.json + the files beside it ---- */

typedef enum ld_pooling {
    LD_POOL_CLS = 0,    /* hidden state of the first token */
    LD_POOL_MEAN,       /* mean over the sequence's tokens */
    LD_POOL_LAST,       /* hidden state of the last token */
    LD_POOL_POOLER,     /* BertPooler: tanh(dense(CLS)) */
} ld_pooling;

#define LD_MAX_LABELS 64
typedef struct ld_encoder_config {
    char architecture[64];     /* e.g. "BertModel", "XLMRobertaForSequenceClassification" */
    char model_type[32];       /* "bert", "xlm-roberta", "roberta" */
    int roberta;               /* positions count from pad_token_id + 1 */
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int max_position_embeddings;
    int type_vocab_size;       /* default 2 */
    int pad_token_id;          /* default 0 (1 for RoBERTa family) */
    double layer_norm_eps;     /* default 1e-12 */
    int gelu_tanh;             /* hidden_act gelu_new / gelu_pytorch_tanh */
    inferd_dtype dtype;
    /* *ForSequenceClassification: the head and its labels (id2label, else
     * "LABEL_i"). num_labels 0 = an embedding model. */
    int num_labels;
    char labels[LD_MAX_LABELS][64];
    /* sentence-transformers (modules.json, 1_Pooling/config.json), else CLS */
    ld_pooling pooling;
    int normalize;             /* a Normalize module follows pooling */
    int has_st_config;         /* the pooling above came from sentence-transformers */
    /* ModelScope configuration.json "task", e.g. "sentence-similarity" */
    char task[64];
    /* No architectures in config.json, but a classification task and
     * id2label: the labels and *ForSequenceClassification above are a guess
     * that mdl_encoder_load keeps only when the weights hold the head. */
    int head_by_task;
} ld_encoder_config;

/* Reads DIR/config.json for BertModel / BertFor* / XLMRobertaModel /
 * XLMRobertaForSequenceClassification / RobertaModel checkpoints, plus
 * modules.json + 1_Pooling/config.json (sentence-transformers) and
 * configuration.json (ModelScope) when present. */
int ld_encoder_config_load(const char *dir, ld_encoder_config *c, inferd_error *e);
/* A pooling name as `--pooling` takes it: cls, mean, last or pooler, in any
 * case (vLLM's pooler config writes CLS, MEAN, LAST); -1 with the choices. */
int ld_pooling_parse(const char *s, ld_pooling *out, inferd_error *e);
/* vLLM's --pooler-config JSON, e.g. {"pooling_type": "MEAN", "normalize":
 * true}: *pooling (an ld_pooling) and *normalize (0/1) get what it sets and
 * -1 for what it leaves out; -1 with a message on other keys or values. */
int ld_pooler_config_parse(const char *json, int *pooling, int *normalize, inferd_error *e);
/* 1 if DIR/config.json names an encoder architecture ld_encoder_config_load
 * reads (how `inferd embed` and serve tell encoders from causal LMs). */
int ld_is_encoder_dir(const char *dir);

/* ---- generation_config.json ---- */

typedef struct ld_generation_config {
    int n_eos;
    int eos_token_ids[16];
    int bos_token_id;          /* -1 if absent */
    int has_temperature; double temperature;
    int has_top_p;       double top_p;
    int has_top_k;       int top_k;
    int has_min_p;       double min_p;
    int has_repetition_penalty; double repetition_penalty;
    int do_sample;             /* -1 absent, else 0/1 */
    int max_new_tokens;        /* 0 if absent */
} ld_generation_config;

/* Reads DIR/generation_config.json; a missing file is not an error (all
 * fields absent). */
int ld_generation_config_load(const char *dir, ld_generation_config *g,
                              inferd_error *e);

#endif
