/* backend: dispatch shared by all backends (see backend.h). */
#include "backend/backend.h"

void be_free(be_backend *b)
{
    if (b)
        b->vt->free(b);
}

#ifndef INFERD_CUDA
be_backend *be_cuda_new(int device, inferd_error *e)
{
    (void)device;
    err_set(e, "device 'cuda' is not available: this build has no CUDA backend "
               "(built without nvcc or with CUDA=0; available: cpu)");
    return NULL;
}

int be_cuda_available(void) { return 0; }
#endif
