/* backend: the one interface between model code and the hardware. A backend
 * is a table of function pointers over device buffers (ggml's design): the
 * CPU fills one in backend/cpu, CUDA another. Model code calls be_* and never
 * knows which backend runs. All float activations are float32 [rows][cols],
 * row-major; weights keep their file dtype. */
#ifndef INFERD_BACKEND_H
#define INFERD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* A weight matrix on the device: [rows][cols], rows = output features. */
typedef struct be_weight {
    const void *data;
    inferd_dtype dtype;       /* F32, F16 or BF16 */
    int64_t rows, cols;
    int packed8;              /* cpu: 16-bit rows interleaved in blocks of 8 */
    int packed_pairs;         /* cpu, bfloat16 precision: bf16 in 64-row panels of
                                 column pairs (backend/cpu/internal.h) */
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
 * them to the device once per step (be_vtable.begin_step); the ops of that
 * step are then called with these same host pointers and use the copies. */
typedef struct be_step {
    const be_attn_layout *layout;
    const int32_t *tokens;      /* [layout->n_tokens] ids given to embed */
    int n_logits;
    const int32_t *logit_rows;  /* [n_logits] rows given to gather_rows */
} be_step;

/* Sampling on the device (sample_rows): what one logits row needs so that
 * only ids and a few numbers come back, not the whole vocabulary. */
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

/* The float64 host computation of sample_rows, row after row: the CPU
 * backend's op, the reference a device backend is tested against, and what
 * the model runs on host copies for a backend without the op. The draw
 * normalises each kept weight to float (w_i / total rounded to float) and
 * sums those in float64, as smp_probs and smp_sample do, so on the CPU a
 * seeded request draws the same token as the full-row sampler. */
void be_sample_rows_host(const float *logits, int n, int vocab, const be_sample_row *in,
                         be_sample_out *out);

typedef struct be_backend be_backend;

typedef struct be_vtable {
    const char *name;
    void (*free)(be_backend *b);
    void *(*alloc)(be_backend *b, size_t bytes);       /* zeroed; NULL on failure */
    void (*dealloc)(be_backend *b, void *p);
    /* Makes a file-resident tensor usable as a weight (CPU: zero copy). */
    int (*weight)(be_backend *b, const void *host, inferd_dtype dt, int64_t rows,
                  int64_t cols, be_weight *out, inferd_error *e);
    void (*embed)(be_backend *b, const be_weight *table, const int32_t *ids, int n,
                  float *out /* [n][cols] */);
    void (*rmsnorm)(be_backend *b, const float *x, const be_weight *w, float eps,
                    int rows, int cols, float *out);
    void (*matmul)(be_backend *b, const float *x /* [n][w.cols] */, const be_weight *w,
                   const be_weight *bias /* NULL or [1][w.rows] */, int n,
                   float *y /* [n][w.rows] */);
    void (*rope)(be_backend *b, float *x /* [n][heads][head_dim] */, int n, int heads,
                 int head_dim, const be_rope *r, const int32_t *pos);
    void (*kv_store)(be_backend *b, const float *k, const float *v, int n, int kv_dim,
                     const int32_t *slot, float *k_cache, float *v_cache);
    void (*attention)(be_backend *b, const float *q /* [n][heads][hd] */,
                      const float *k_cache, const float *v_cache, int heads,
                      int kv_heads, int head_dim, float scale,
                      const be_attn_layout *l, float *out /* [n][heads][hd] */);
    void (*silu_mul)(be_backend *b, const float *gate, const float *up, size_t n,
                     float *out);
    void (*add)(be_backend *b, float *x, const float *y, size_t n); /* x += y */
    void (*gather_rows)(be_backend *b, const float *x, int cols, const int32_t *rows,
                        int n, float *out);
    /* Optional (NULL on the CPU, whose buffers are host memory). Ops return
     * nothing; a device backend keeps its first failure and reports it from
     * begin_step and to_host, which every forward step calls. */
    int (*begin_step)(be_backend *b, const be_step *s, inferd_error *e);
    /* Copies bytes of a device buffer to host memory once the queued work is
     * done; it returns the first error of any op since the last report. */
    int (*to_host)(be_backend *b, void *dst, const void *src, size_t bytes,
                   inferd_error *e);
    /* Device memory now free and in total (for sizing the KV pool). */
    int (*mem_info)(be_backend *b, size_t *free_bytes, size_t *total_bytes, inferd_error *e);
    /* ---- encoder (BERT family) ops ---- */
    /* LayerNorm over each row: (x - mean) / sqrt(var + eps) * w + bias, with
     * the biased variance, as torch computes it. w, bias: [1][cols]. */
    void (*layernorm)(be_backend *b, const float *x, const be_weight *w,
                      const be_weight *bias, float eps, int rows, int cols, float *out);
    /* GELU: exact (erf) as transformers' "gelu", or the tanh approximation
     * ("gelu_new", "gelu_pytorch_tanh"). out may equal x. */
    void (*gelu)(be_backend *b, const float *x, size_t n, int tanh_approx, float *out);
    void (*tanh)(be_backend *b, const float *x, size_t n, float *out);
    /* Bidirectional attention without a cache: the rows of sequence s,
     * [q_start[s], q_start[s+1]), attend to each other and to nothing else —
     * packing sequences this way is what a padding mask does. q, k, v, out:
     * [n][heads][head_dim]. */
    void (*attention_full)(be_backend *b, const float *q, const float *k, const float *v,
                           int heads, int head_dim, float scale, int n_seqs,
                           const int32_t *q_start, float *out);
    /* ---- sampling ---- */
    /* For each of n rows of logits (backend memory, [n][vocab]): the
     * be_sample_out above, written to host memory once the queued work is
     * done. Reports the first error of any op since the last report, like
     * to_host. Results agree with a float64 host computation up to float
     * rounding (a draw may differ only where u falls within rounding of a
     * boundary). */
    int (*sample_rows)(be_backend *b, const float *logits, int n, int vocab,
                       const be_sample_row *in, be_sample_out *out, inferd_error *e);
} be_vtable;

struct be_backend {
    const be_vtable *vt;
    /* Element type of the KV cache buffers given to kv_store and attention:
     * DT_F32 (the zero value, the CPU's) or DT_BF16. */
    inferd_dtype kv_dtype;
    /* 1: matmul rounds the float32 activations to bf16 and multiplies once
     * (vLLM's and llama.cpp's precision, --matmul-precision bfloat16); 0
     * (default): products as exact as float32 activations allow. */
    int matmul_bf16;
};

/* Backends. be_cpu_new: n_threads 0 = all cores. be_cuda_new: CUDA device
 * number `device`; in a build without CUDA (no nvcc, or make CUDA=0) it
 * fails with an error that says so. Its KV cache is bf16 unless the
 * environment sets INFERD_CUDA_KV=f32. */
be_backend *be_cpu_new(int n_threads, inferd_error *e);
be_backend *be_cuda_new(int device, inferd_error *e);
/* 1 when this build has the CUDA backend. */
int be_cuda_available(void);
void be_free(be_backend *b);

#endif
