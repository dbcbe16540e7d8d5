/* backend/cuda/sample.cuh: sampling on the device (sample.cu). */
#ifndef INFERD_CUDA_SAMPLE_CUH
#define INFERD_CUDA_SAMPLE_CUH

#include "backend/cuda/common.cuh"

/* be_vtable's sample_rows: runs the recorded step first, if any. */
int cu_sample_rows(be_backend *bk, const float *logits, int n, int vocab,
                   const be_sample_row *in, be_sample_out *out, inferd_error *e);

#endif
