/* backend/cuda/tape.cuh: a step's recording, fusions and CUDA graphs, its
 * start and end (tape.cu). */
#ifndef INFERD_CUDA_TAPE_CUH
#define INFERD_CUDA_TAPE_CUH

#include "backend/cuda/common.cuh"

/* Appends a zeroed op of this kind to the step's tape; NULL (failure kept)
 * when out of memory. The ops call it while b->recording. */
tape_op *cu_record(cu_backend *b, enum op_kind kind);
/* Runs the recorded step: by its graph, by capturing one, or op by op. */
void cu_flush(cu_backend *b);
/* Frees the tapes and the graph. */
void cu_tape_free(cu_backend *b);
/* The device copy of a host index array registered by begin_step (a device
 * copy passes through); NULL with an error kept for any other pointer. */
const int32_t *cu_dev_idx(cu_backend *b, const int32_t *host);

/* be_vtable's begin_step and to_host. */
int cu_begin_step(be_backend *bk, const be_step *st, inferd_error *e);
int cu_to_host(be_backend *bk, void *dst, const void *src, size_t bytes, inferd_error *e);

#endif
