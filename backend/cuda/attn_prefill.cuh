/* backend/cuda/attn_prefill.cuh: prompt-row attention over the paged KV
 * cache (attn_prefill.cu). */
#ifndef INFERD_CUDA_ATTN_PREFILL_CUH
#define INFERD_CUDA_ATTN_PREFILL_CUH

#include "backend/cuda/common.cuh"

/* Query rows of a tile (cu_begin_step lists the step's tiles of each size). */
#define ATT_BQ 16      /* the float32 kernel's (4 per warp) */
#define FA_BQ 64       /* the tensor-core kernel's (16 per warp) */

/* Whether the tensor-core kernel serves head_dim hd here (bf16 cache,
 * head_dim 64 or 128, sm_80+; INFERD_CUDA_PREFILL=f32 keeps the float32 kernel). */
int cu_prefill_mma_ok(const cu_backend *b, int hd);
/* The tensor-core prefill over the FA_BQ-row tiles given ([n_tiles][2]:
 * sequence, first row), where it applies; 1 when it ran (or had no tiles). */
int cu_prefill_mma(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                   int kv_heads, int hd, float scale, const be_attn_layout *l,
                   const int32_t *tiles, int n_tiles, float *out);
/* The float32 prefill kernel over the step's ATT_BQ-row tiles; qs, btab,
 * pos: the layout's device copies. */
void cu_attn_prefill(cu_backend *b, const float *q, const void *kc, const void *vc, int heads,
                     int kv_heads, int hd, float scale, const be_attn_layout *l,
                     const int32_t *qs, const int32_t *btab, const int32_t *pos, float *out);

#endif
