/* backend: dispatch shared by all backends (see backend.h). */
#include "backend/backend.h"

void be_free(be_backend *b)
{
    if (b)
        b->vt->free(b);
}
