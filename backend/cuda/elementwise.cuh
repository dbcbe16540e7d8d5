/* backend/cuda/elementwise.cuh: the row-wise and element-wise decoder ops
 * (be_vtable's, see backend.h: each records itself while a step is being
 * recorded, otherwise it runs) and the fused launches the tape runs. */
#ifndef INFERD_CUDA_ELEMENTWISE_CUH
#define INFERD_CUDA_ELEMENTWISE_CUH

#include "backend/cuda/common.cuh"

void cu_embed(be_backend *bk, const be_weight *table, const int32_t *ids, int n, float *out);
void cu_rmsnorm(be_backend *bk, const float *x, const be_weight *w, float eps, int rows, int cols,
                float *out);
void cu_rope(be_backend *bk, float *x, int n, int heads, int head_dim, const be_rope *r,
             const int32_t *pos);
void cu_kv_store(be_backend *bk, const float *k, const float *v, int n, int kv_dim,
                 const int32_t *slot, float *k_cache, float *v_cache);
void cu_silu_mul(be_backend *bk, const float *gate, const float *up, size_t n, float *out);
void cu_add(be_backend *bk, float *x, const float *y, size_t n);
void cu_gather_rows(be_backend *bk, const float *x, int cols, const int32_t *rows, int n,
                    float *out);

/* x += y, then the RMSNorm of those rows into out of type out_dt (DT_F32,
 * or DT_BF16 / DT_F16: a GEMM's input, the bits to_half_kernel would give). */
void cu_add_rmsnorm(cu_backend *b, float *x, const float *y, const be_weight *w, float eps,
                    int rows, int cols, void *out, int out_dt);
/* Rope of q ([n][heads]) and k ([n][kv_heads]) with the frequencies cu_rope
 * copied, then k and v stored at slot: one launch. */
void cu_rope_store(cu_backend *b, float *q, float *k, const float *v, int n, int heads,
                   int kv_heads, int head_dim, int half, float mscale, const int32_t *pos,
                   const int32_t *slot, void *k_cache, void *v_cache);
/* silu(gate) * up rounded to dt (DT_BF16 or DT_F16) into out; 0 when launched. */
int cu_silu_mul_half(cu_backend *b, const float *gate, const float *up, size_t n, int dt,
                     void *out);

#endif
