/* backend/cuda/gemv.cuh: matrix products of up to GEMV_MAX_N rows (gemv.cu). */
#ifndef INFERD_CUDA_GEMV_CUH
#define INFERD_CUDA_GEMV_CUH

#include "backend/cuda/common.cuh"

#define GEMV_SET 3 /* matrices one launch can take: q, k, v (or gate, up) share x */

/* What gemv1_kernel folds in (tape.cu; INFERD_CUDA_GEMV_NORM=0: nothing): the
 * RMSNorm of its input (norm_w non-NULL; norm_out gets the normalised row
 * when not NULL), the residual add of its output (res += the product; y is
 * not written). */
typedef struct gemv_fold {
    const be_weight *norm_w;
    float norm_eps;
    float *norm_out, *res;
} gemv_fold;

/* One launch for n_mat matrices of the same dtype and width sharing x
 * ([n][cols]); with glu, n_mat is 2 (gate, up of the same shape) and y[0]
 * gets silu(gate) * up. With fold, only through gemv1_kernel: returns 0,
 * having launched nothing, where that does not apply (1 otherwise). */
int cu_gemv_multi(cu_backend *b, const float *x, const be_weight *const *w,
                  const be_weight *const *bias, float *const *y, int n_mat, int n, bool glu,
                  const gemv_fold *fold);
/* The attributes of the kernel that programmatic dependent launch starts
 * early (be_cuda_new checks the PTX it was built from). */
cudaError_t cu_gemv_attributes(cudaFuncAttributes *fa);

#endif
