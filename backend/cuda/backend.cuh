/* backend/cuda/backend.cuh: what backend.cu (the backend's glue: creation,
 * memory, weight upload, the vtable and the environment switches) offers
 * the other files. */
#ifndef INFERD_CUDA_BACKEND_CUH
#define INFERD_CUDA_BACKEND_CUH

#include "backend/cuda/common.cuh"

/* A device buffer that kernels see, reallocated to `alloc` bytes (zeroed
 * when asked) if it holds fewer than `need`: once the queued work is done
 * with the old one, and with gen bumped so that no recorded step keeps the
 * old address. NULL on failure (kept). */
void *cu_grow(cu_backend *b, void **buf, size_t *cap, size_t need, size_t alloc, int zero);
/* The scratch buffer (bf16/f16 GEMM inputs), at least `bytes`. */
void *cu_scratch(cu_backend *b, size_t bytes);
/* Frees the pinned staging of weight uploads once their copies are done
 * (the first step: the model is loaded). */
void cu_upload_done(cu_backend *b);

#endif
