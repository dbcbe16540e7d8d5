/* backend/cuda internals shared by its .cu files (cuda.cu: the backend and
 * the decoder ops; encoder.cu: the BERT-family ops). Nothing outside
 * backend/cuda includes this file. */
#ifndef INFERD_CUDA_INTERNAL_H
#define INFERD_CUDA_INTERNAL_H

#include <cuda_runtime.h>

extern "C" {
#include "backend/impl.h"
}

/* cuda.cu: the backend's one stream (every op goes to it, in order); the
 * error slot: cu_note_error keeps the first failing call (by name) for the
 * next begin_step / to_host to report and returns -1 on failure;
 * cu_has_failed: a failure is pending, so further work is skipped. */
cudaStream_t cu_stream_of(be_backend *b);
int cu_note_error(be_backend *b, const char *call, cudaError_t rc);
int cu_has_failed(be_backend *b);

/* encoder.cu: the encoder ops of be_vtable (see backend.h for meanings). */
void cu_enc_layernorm(be_backend *b, const float *x, const be_weight *w, const be_weight *bias,
                      float eps, int rows, int cols, float *out);
void cu_enc_gelu(be_backend *b, const float *x, size_t n, int tanh_approx, float *out);
void cu_enc_tanh(be_backend *b, const float *x, size_t n, float *out);
void cu_enc_attention_full(be_backend *b, const float *q, const float *k, const float *v,
                           int heads, int head_dim, float scale, int n_seqs,
                           const int32_t *q_start, float *out);

#endif
