/* backend/cuda/attention.cuh: the attention op (attention.cu). */
#ifndef INFERD_CUDA_ATTENTION_CUH
#define INFERD_CUDA_ATTENTION_CUH

#include "backend/cuda/common.cuh"

/* be_vtable's attention (records itself while a step is being recorded). */
void cu_attention(be_backend *bk, const float *q, const float *k_cache, const float *v_cache,
                  int heads, int kv_heads, int head_dim, float scale, const be_attn_layout *l,
                  float *out);

#endif
