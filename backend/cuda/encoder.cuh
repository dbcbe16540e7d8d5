/* backend/cuda/encoder.cuh: the encoder (BERT family) ops of be_vtable
 * (encoder.cu; see backend.h for their meanings). */
#ifndef INFERD_CUDA_ENCODER_CUH
#define INFERD_CUDA_ENCODER_CUH

#include "backend/cuda/common.cuh"

void cu_enc_layernorm(be_backend *bk, const float *x, const be_weight *w, const be_weight *bias,
                      float eps, int rows, int cols, float *out);
void cu_enc_gelu(be_backend *bk, const float *x, size_t n, int tanh_approx, float *out);
void cu_enc_tanh(be_backend *bk, const float *x, size_t n, float *out);
void cu_enc_attention_full(be_backend *bk, const float *q, const float *k, const float *v,
                           int heads, int head_dim, float scale, int n_seqs,
                           const int32_t *q_start, float *out);

#endif
