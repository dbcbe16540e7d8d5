/* model: decoder architectures (Llama, Mistral, Qwen2, Qwen3) written as a
 * sequence of backend ops over a paged KV cache, and BERT-family encoders.
 * The model executes the batch it is given; it never decides who runs (that
 * is the engine's job). */
#ifndef INFERD_MODEL_H
#define INFERD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "common/common.h"
#include "loader/loader.h"

typedef struct mdl_model mdl_model;

typedef struct mdl_options {
    const char *device;   /* "cpu" (default), "cuda" or "auto" (mdl_resolve_device) */
    int n_threads;        /* CPU threads, 0 = all cores */
    /* "float32" (NULL, default) or "bfloat16": activations rounded to bf16
     * for the weight matrix products (faster, as vLLM and llama.cpp do). */
    const char *matmul_precision;
} mdl_options;

/* Resolves a --device value into *out: "cpu" and "cuda" as given (NULL:
 * "cpu"); "auto" to "cuda" when this build has CUDA and device 0 opens, else
 * "cpu", with a line for the user saying why in note (may be NULL). -1 with a
 * message listing the choices for any other value. */
int mdl_resolve_device(const char *device, const char **out, char *note, size_t n_note,
                       inferd_error *e);

/* 0 and the bf16 flag for a --matmul-precision value, -1 with a message. */
int mdl_parse_matmul_precision(const char *s, int *bf16, inferd_error *e);

/* Loads config.json and the safetensors weights of DIR. */
int mdl_load(const char *dir, const mdl_options *opt, mdl_model **out,
             inferd_error *e);
void mdl_free(mdl_model *m);
const ld_config *mdl_config(const mdl_model *m);

/* Memory of the model's device (after its weights are loaded): what is free
 * and the total. -1 with a message on the CPU, whose memory the OS manages. */
int mdl_device_memory(const mdl_model *m, size_t *free_bytes, size_t *total_bytes,
                      inferd_error *e);

/* Bytes of KV cache one block of block_size tokens takes (all layers). */
size_t mdl_kv_block_bytes(const mdl_model *m, int block_size);
/* Allocates the paged KV pool: n_blocks blocks of block_size tokens. */
int mdl_kv_init(mdl_model *m, int n_blocks, int block_size, inferd_error *e);

/* One forward step over a batch of sequences. Rows of sequence s are
 * [q_start[s], q_start[s+1]); their KV goes to the given slots, attention
 * covers ctx_len[s] tokens through the block table. Logits are produced for
 * the rows listed in logit_rows, in that order. */
typedef struct mdl_batch {
    int n_tokens;
    const int32_t *tokens;      /* [n_tokens] */
    const int32_t *pos;         /* [n_tokens] */
    const int32_t *slot;        /* [n_tokens] */
    int n_seqs;
    const int32_t *q_start;     /* [n_seqs + 1] */
    const int32_t *ctx_len;     /* [n_seqs] */
    const int32_t *block_table; /* [n_seqs][max_blocks] */
    int max_blocks;
    int n_logits;
    const int32_t *logit_rows;  /* [n_logits] */
} mdl_batch;

/* logits: [n_logits][vocab_size] float32, host memory. */
int mdl_forward(mdl_model *m, const mdl_batch *b, float *logits, inferd_error *e);

/* One forward step whose logits stay on the model's device: logits row i
 * (of b->logit_rows) is sampled as in[i] says, and out[i] (host memory)
 * receives the token, the log-sum-exp and the top BE_TOPK candidates
 * (backend.h's be_sample_out). Only those come back, not the vocabulary.
 * in and out: [b->n_logits]. */
int mdl_forward_sample(mdl_model *m, const mdl_batch *b, const be_sample_row *in,
                       be_sample_out *out, inferd_error *e);
/* Copies logits rows [first, first + count) of the last mdl_forward_sample
 * to host memory ([count][vocab_size]), for the rows whose sampling needs
 * the whole distribution. Any other forward step (or a failed one) drops
 * the rows; asking for rows it did not keep is an error. */
int mdl_logits_rows(mdl_model *m, int first, int count, float *host, inferd_error *e);

/* ---- encoders: BertModel / XLMRobertaModel and their classifiers ---- */

typedef struct mdl_encoder mdl_encoder;

/* Loads an encoder folder: config.json (ld_encoder_config_load) and its
 * weights (safetensors, else pytorch_model.bin), whether saved from the bare
 * model or with the "bert." / "roberta." prefix of *ForMaskedLM /
 * *ForSequenceClassification; old "gamma"/"beta" LayerNorm names too. */
int mdl_encoder_load(const char *dir, const mdl_options *opt, mdl_encoder **out,
                     inferd_error *e);
void mdl_encoder_free(mdl_encoder *m);
const ld_encoder_config *mdl_encoder_config(const mdl_encoder *m);
/* Overrides the folder's pooling (pooling >= 0, an ld_pooling) and its
 * Normalize (normalize >= 0), as serve's --pooling does; -1 keeps each. -1
 * with a message for pooler pooling on a checkpoint without its weights. */
int mdl_encoder_set_pooling(mdl_encoder *m, int pooling, int normalize, inferd_error *e);
/* 1 if the checkpoint has BertPooler weights (LD_POOL_POOLER usable). */
int mdl_encoder_has_pooler(const mdl_encoder *m);

/* Sequences packed back to back, no padding: sequence s is rows
 * [q_start[s], q_start[s+1]) and attends only to itself. Each sequence holds
 * its special tokens already ([CLS] ... [SEP], <s> ... </s>). */
typedef struct mdl_enc_batch {
    int n_seqs;
    const int32_t *q_start;      /* [n_seqs + 1], q_start[0] = 0 */
    const int32_t *tokens;       /* [q_start[n_seqs]] */
    const int32_t *token_types;  /* [q_start[n_seqs]], or NULL for all 0 */
} mdl_enc_batch;

/* One forward pass. pooled (may be NULL): [n_seqs][hidden_size], pooled as
 * `pooling` says and L2-normalized when normalize. logits (may be NULL; only
 * for models with num_labels > 0): [n_seqs][num_labels], the classifier head
 * as transformers applies it. Bad ids, types or lengths are refused. */
int mdl_encoder_forward(mdl_encoder *m, const mdl_enc_batch *b, ld_pooling pooling,
                        int normalize, float *pooled, float *logits, inferd_error *e);

#endif
