/* backend/cuda/attn_decode.cuh: decode attention over the paged KV cache
 * (attn_decode.cu). */
#ifndef INFERD_CUDA_ATTN_DECODE_CUH
#define INFERD_CUDA_ATTN_DECODE_CUH

#include "backend/cuda/common.cuh"

/* run_rope_attn (INFERD_CUDA_ATT_ROPE=0 off): this step's rope of q and k and
 * its KV-cache store, done by the decode kernel as rope_store_kernel would. */
typedef struct dec_rope {
    const float *k, *v;     /* this step's k rows (not rotated) and v rows */
    const float *inv_freq;
    const int32_t *slot;
    __nv_bfloat16 *kc, *vc; /* the cache the kernel reads, written */
    float mscale;
    int half;
} dec_rope;

/* Whether attn_decode_tile_kernel serves this shape (and cache). */
int cu_decode_tile_ok(const cu_backend *b, int heads, int kv_heads, int hd);
/* attn_decode_tile_kernel for n_rows rows (rows: their indices, NULL for
 * rows 0..n_rows-1), with split-KV and the merge where it pays; rope
 * non-NULL: the kernel also applies this step's rope and KV store. */
void cu_decode_tile(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                    int kv_heads, int hd, float scale, const be_attn_layout *l,
                    const int32_t *rows, int n_rows, float *out, const dec_rope *rope);
/* The one-key-at-a-time split-KV kernels for a step of decode rows only;
 * qs, btab, pos: the layout's device copies. */
void cu_attn_split(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                   int kv_heads, int hd, float scale, const be_attn_layout *l, const int32_t *qs,
                   const int32_t *btab, const int32_t *pos, float *out);

#endif
