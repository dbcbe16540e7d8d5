/* backend: the one interface between model code and the hardware, so that a
 * model is written once and runs on the CPU or a GPU. A backend is an opaque
 * handle behind a table of function pointers (ggml's design, in
 * backend/impl.h, which only backends include): backend/cpu fills one,
 * backend/cuda another. Model code calls the be_* functions below and never
 * learns which backend runs, nor which ops it lacks: an op a backend leaves
 * out gets a default in backend.c, built from the ops it has, or an error
 * that names the backend.
 *
 * Memory: every buffer an op reads or writes is backend memory (be_alloc);
 * on a host backend (be_is_host: the CPU) that is host memory, so callers
 * may hand host buffers straight to the ops. All float activations are
 * float32 [rows][cols], row-major; weights keep their file dtype.
 *
 * Errors: ops return nothing. A backend keeps the first failure of any op
 * (a kernel that failed, scratch that could not be allocated) and reports
 * it from the next be_begin_step, be_to_host or be_sample_rows, which every
 * forward step calls; until then later ops may do nothing.
 *
 * Threads: one thread at a time uses a backend (the engine's loop, the
 * encoder's pass): its scratch and its kept error are the handle's. */
#ifndef INFERD_BACKEND_H
#define INFERD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

typedef struct be_backend be_backend;

/* ---- types ---- */

/* Quantized weights (room for wave 2). A row's values are codes times one
 * float scale per group of `group` consecutive columns:
 *     w[r][c] = (code[r][c] - zero) * scales[r][c / group]
 * with zero 0 for BE_Q8 and 8 for BE_Q4. */
typedef enum be_qtype {
    BE_Q_NONE = 0, /* not quantized: be_weight.dtype says what the values are */
    BE_Q8,         /* int8 codes, one a byte */
    BE_Q4,         /* 4-bit codes, two a byte: column 2k in the low nibble */
} be_qtype;

typedef struct be_qweight {
    be_qtype type;
    const void *codes;    /* [rows][cols] codes as above, host memory */
    const float *scales;  /* [rows][cols / group], host memory */
    int group;            /* columns sharing a scale; divides cols (and is even for BE_Q4) */
} be_qweight;

/* A weight matrix on the device: [rows][cols], rows = output features. Made
 * by be_weight_init or be_weight_init_quant and kept until the backend is
 * freed (a zeroed be_weight is "absent": data NULL). */
typedef struct be_weight {
    const void *data;
    inferd_dtype dtype;   /* F32, F16 or BF16 */
    int64_t rows, cols;
    be_qtype qtype;       /* BE_Q_NONE unless a backend keeps it quantized */
    const void *priv;     /* the backend's own layout record; NULL: row-major data */
} be_weight;

/* Per-step attention layout, shared by every layer of one forward pass.
 * Tokens of a step are grouped by sequence; sequence s owns rows
 * [q_start[s], q_start[s+1]) and after this step holds ctx_len[s] tokens of
 * KV (cached prefix + new rows), stored in the blocks of its block table. */
typedef struct be_attn_layout {
    int n_seqs;
    const int32_t *q_start;       /* [n_seqs + 1] */
    const int32_t *ctx_len;       /* [n_seqs] */
    const int32_t *block_table;   /* [n_seqs][max_blocks] */
    int max_blocks;
    int block_size;
    const int32_t *slot;          /* [n_tokens] KV slot = block * block_size + offset */
    const int32_t *pos;           /* [n_tokens] absolute positions */
    int n_tokens;
} be_attn_layout;

/* Rotary embedding for one model: neox style (rotate_half), applied to the
 * first rot_dim dims of each head. inv_freq[rot_dim / 2] already carries the
 * scaling (linear, llama3, yarn); mscale multiplies cos and sin (yarn). */
typedef struct be_rope {
    const float *inv_freq;
    int rot_dim;
    float mscale;
} be_rope;

/* The host-side index arrays of one forward step. A device backend copies
 * them to the device once per step (be_begin_step); the ops of that step
 * are then called with these same host pointers and use the copies. */
typedef struct be_step {
    const be_attn_layout *layout;
    const int32_t *tokens;      /* [layout->n_tokens] ids given to embed */
    int n_logits;
    const int32_t *logit_rows;  /* [n_logits] rows given to gather_rows */
} be_step;

/* Sampling on the device (be_sample_rows): what one logits row needs so
 * that only ids and a few numbers come back, not the whole vocabulary. */
#define BE_TOPK 64
typedef struct be_sample_row {
    float temperature; /* < 1e-5: greedy (token = the argmax) */
    float min_p;       /* weights below min_p (the max has weight 1) are cut; 0: off */
    double u;          /* the request's uniform draw in [0, 1) for this token */
    int top;           /* 0: a device backend may skip the top list (n_top 0) */
} be_sample_row;

typedef struct be_sample_out {
    /* Greedy: the argmax (lowest id on ties). Otherwise the draw of
     * engine/sampler.c's smp_sample with neither top_k nor top_p: weights
     * w_i = expf((l_i - max) / temperature), those below min_p cut, and the
     * first id, in id order, where the running sum of w_i / total passes u
     * (the last kept id if rounding leaves u past the end). */
    int32_t token;
    /* The raw logit of token, so that its logprob (token_logit - lse) is
     * known when a draw picks a token outside the top list. */
    float token_logit;
    float lse;          /* log-sum-exp of the raw row: logprob(i) = l_i - lse */
    double total;       /* sum of the kept weights (0 when greedy) */
    int n_top;          /* min(BE_TOPK, vocab) */
    int32_t top_ids[BE_TOPK]; /* the largest raw logits, descending, lower id first on ties */
    float top_vals[BE_TOPK];
} be_sample_out;

/* ---- backends ---- */

/* be_cpu_new: n_threads 0 = all cores. be_cuda_new: CUDA device number
 * `device`; in a build without CUDA (no nvcc, or make CUDA=0) it fails with
 * an error that says so. Its KV cache is bf16 unless the environment sets
 * INFERD_CUDA_KV=f32. */
be_backend *be_cpu_new(int n_threads, inferd_error *e);
be_backend *be_cuda_new(int device, inferd_error *e);
/* 1 when this build has the CUDA backend. */
int be_cuda_available(void);
void be_free(be_backend *b);

const char *be_name(const be_backend *b); /* "cpu", "cuda" */
/* 1 when backend memory is host memory (the CPU): then be_to_host is a
 * memcpy and the ops may write into the caller's buffers. */
int be_is_host(const be_backend *b);
/* Element type of the KV cache buffers given to be_kv_store and
 * be_attention: DT_F32 (the CPU's) or DT_BF16; size the buffers with it. */
inferd_dtype be_kv_dtype(const be_backend *b);
/* on 1: matmul rounds the float32 activations to bf16 and multiplies once
 * (vLLM's and llama.cpp's precision, --matmul-precision bfloat16); 0
 * (default): products as exact as float32 activations allow. Set it before
 * the weights are made: a backend may lay them out for it. */
void be_set_matmul_bf16(be_backend *b, int on);
/* Device memory now free and in total (for sizing the KV pool). Default: an
 * error that says the backend has no device memory (the CPU's is the OS's). */
int be_mem_info(be_backend *b, size_t *free_bytes, size_t *total_bytes, inferd_error *e);
/* Sizes the backend's scratch for steps of up to max_rows rows (tokens), so
 * that the ops of those steps allocate nothing; a larger step later grows
 * it again. Called by the model when it grows its activations. Default:
 * nothing to do. */
int be_reserve(be_backend *b, int max_rows, inferd_error *e);

/* ---- memory ---- */

void *be_alloc(be_backend *b, size_t bytes); /* zeroed; NULL on failure */
void be_dealloc(be_backend *b, void *p);     /* p may be NULL */
/* Copies bytes of backend memory to host memory once the queued work is
 * done, and returns the first error of any op since the last report. bytes
 * 0 (dst, src NULL) only waits and reports. Default (host backends): memcpy,
 * none when dst == src. */
int be_to_host(be_backend *b, void *dst, const void *src, size_t bytes, inferd_error *e);
/* Copies host memory into a backend buffer. Default: memcpy on a host
 * backend, an error that names the backend on a device one. */
int be_from_host(be_backend *b, void *dst, const void *src, size_t bytes, inferd_error *e);

/* ---- weights ---- */

/* Makes a file-resident tensor (host memory that outlives the backend, such
 * as a mapped safetensors file) usable as a weight. CPU: zero copy, or a
 * packed copy the backend keeps. */
int be_weight_init(be_backend *b, const void *host, inferd_dtype dt, int64_t rows,
                   int64_t cols, be_weight *out, inferd_error *e);
/* The same for a quantized tensor. A backend with its own layout keeps it
 * quantized (out->qtype set, matmul through its quantized kernel). Default:
 * BE_Q8 and BE_Q4 are expanded on the host to float32 — (code - zero) *
 * scale, one float rounding — and made an F32 weight (qtype BE_Q_NONE), so
 * be_matmul gives what a float32 matmul of the dequantized matrix gives;
 * any other type is refused with an error that names it and the backend. */
int be_weight_init_quant(be_backend *b, const be_qweight *q, int64_t rows, int64_t cols,
                         be_weight *out, inferd_error *e);

/* ---- ops (backend memory; shapes as noted) ---- */

void be_embed(be_backend *b, const be_weight *table, const int32_t *ids, int n,
              float *out /* [n][table.cols] */);
/* HF RMSNorm: x * rsqrt(mean(x^2) + eps) * w. x, out: [rows][cols]; out may be x. */
void be_rmsnorm(be_backend *b, const float *x, const be_weight *w, float eps, int rows,
                int cols, float *out);
/* y = x . w^T (+ bias). A quantized w (qtype set) goes to the backend's
 * quantized matmul; without one the op keeps an error naming the type. */
void be_matmul(be_backend *b, const float *x /* [n][w.cols] */, const be_weight *w,
               const be_weight *bias /* NULL or [1][w.rows] */, int n,
               float *y /* [n][w.rows] */);
/* Grouped (mixture-of-experts) matmul: x's rows are grouped by expert,
 * group g is rows [group_start[g], group_start[g+1]) (host memory, [n_groups
 * + 1], group_start[0] = 0), and each group is multiplied by its expert's
 * weight: y[i] = x[i] . w[g]^T (+ bias[g]). All w[g] have one shape; bias
 * NULL or [n_groups] (an entry with data NULL: none). Default: be_matmul
 * over the groups, so each row gets what be_matmul gives it. */
void be_matmul_grouped(be_backend *b, const float *x /* [n][w.cols] */, const be_weight *w,
                       const be_weight *bias, int n_groups, const int32_t *group_start,
                       float *y /* [n][w.rows] */);
/* Rotary embedding in place, positions pos[n]. (Named _apply: be_rope is
 * the parameters' type.) */
void be_rope_apply(be_backend *b, float *x /* [n][heads][head_dim] */, int n, int heads,
                   int head_dim, const be_rope *r, const int32_t *pos);
/* k, v: [n][kv_dim] into the caches' rows slot[t] (be_kv_dtype elements). */
void be_kv_store(be_backend *b, const float *k, const float *v, int n, int kv_dim,
                 const int32_t *slot, float *k_cache, float *v_cache);
/* Causal attention over the paged cache, as the layout says. */
void be_attention(be_backend *b, const float *q /* [n][heads][hd] */, const float *k_cache,
                  const float *v_cache, int heads, int kv_heads, int head_dim, float scale,
                  const be_attn_layout *l, float *out /* [n][heads][hd] */);
/* out = silu(gate) * up, n elements; out may be gate. */
void be_silu_mul(be_backend *b, const float *gate, const float *up, size_t n, float *out);
void be_add(be_backend *b, float *x, const float *y, size_t n); /* x += y */
/* out[i] = x[rows[i]], rows of cols floats; rows: host memory (a device
 * backend maps it through be_begin_step). */
void be_gather_rows(be_backend *b, const float *x, int cols, const int32_t *rows, int n,
                    float *out);

/* Encoder (BERT family) ops. Default: an error that names the backend. */
/* LayerNorm over each row: (x - mean) / sqrt(var + eps) * w + bias, with
 * the biased variance, as torch computes it. w, bias: [1][cols]. */
void be_layernorm(be_backend *b, const float *x, const be_weight *w, const be_weight *bias,
                  float eps, int rows, int cols, float *out);
/* GELU: exact (erf) as transformers' "gelu", or the tanh approximation
 * ("gelu_new", "gelu_pytorch_tanh"). out may equal x. */
void be_gelu(be_backend *b, const float *x, size_t n, int tanh_approx, float *out);
void be_tanh(be_backend *b, const float *x, size_t n, float *out);
/* Bidirectional attention without a cache: the rows of sequence s,
 * [q_start[s], q_start[s+1]), attend to each other and to nothing else —
 * packing sequences this way is what a padding mask does. q, k, v, out:
 * [n][heads][head_dim]. */
void be_attention_full(be_backend *b, const float *q, const float *k, const float *v,
                       int heads, int head_dim, float scale, int n_seqs,
                       const int32_t *q_start, float *out);

/* ---- steps and sampling ---- */

/* Starts a forward step: a device backend uploads the step's index arrays.
 * Returns the first error kept since the last report. Default: only that. */
int be_begin_step(be_backend *b, const be_step *s, inferd_error *e);
/* Logits masking (constrained decoding): for each of n rows of logits
 * (backend memory, [n][vocab]), the ids whose bit is clear in that row of
 * mask (host memory, [n][(vocab + 31) / 32] words, id i is bit i % 32 of
 * word i / 32; set = allowed) get -INFINITY. Default: in place on a host
 * backend; on a device one through a copy to host memory and back
 * (be_from_host), whose errors are kept like an op's. */
void be_mask_logits(be_backend *b, float *logits, int n, int vocab, const uint32_t *mask);
/* For each of n rows of logits (backend memory, [n][vocab]): the
 * be_sample_out above, written to host memory once the queued work is
 * done. Reports the first error of any op since the last report, like
 * be_to_host. Results agree with a float64 host computation up to float
 * rounding (a draw may differ only where u falls within rounding of a
 * boundary). Default: the rows copied to host memory and sampled there by
 * be_sample_rows_host. */
int be_sample_rows(be_backend *b, const float *logits, int n, int vocab,
                   const be_sample_row *in, be_sample_out *out, inferd_error *e);
/* The float64 host computation of be_sample_rows, row after row: the CPU
 * backend's op, the reference a device backend is tested against, and the
 * default for a backend without the op. The draw normalises each kept
 * weight to float (w_i / total rounded to float) and sums those in
 * float64, as smp_probs and smp_sample do, so on the CPU a seeded request
 * draws the same token as the full-row sampler. */
void be_sample_rows_host(const float *logits, int n, int vocab, const be_sample_row *in,
                         be_sample_out *out);

#endif
