/* backend/cuda/gemm.cuh: the matmul op and the cuBLAS products (gemm.cu). */
#ifndef INFERD_CUDA_GEMM_CUH
#define INFERD_CUDA_GEMM_CUH

#include "backend/cuda/common.cuh"

/* be_vtable's matmul (records itself while a step is being recorded). */
void cu_matmul(be_backend *bk, const float *x, const be_weight *w, const be_weight *bias, int n,
               float *y);
/* Whether GEMMs on weights of dtype dt take the activations rounded to it in
 * one pass (bfloat16 precision), rather than split in two or in float32. */
int cu_half_pass(const cu_backend *b, int dt);
/* Matmuls of one recorded step that share x (q/k/v, gate/up) with more
 * than GEMV_MAX_N rows, where activations go in as one bf16/f16 pass:
 * returns how many matmuls it ran; 0 leaves them to cu_matmul. */
int cu_gemm_multi(cu_backend *b, const float *x, const be_weight *const *w,
                  const be_weight *const *bias, float *const *y, int n_mat, int n);
/* The n_mat products (+ bias) of n rows of xb, already rounded to the
 * weights' half dtype dt (DT_BF16 or DT_F16) by the op before. */
void cu_gemm_half(cu_backend *b, const void *xb, int dt, const be_weight *const *w,
                  const be_weight *const *bias, float *const *y, int n_mat, int n);

#endif
