/* Private to loader/: the pieces of the weight table that the safetensors and
 * PyTorch readers share. Not a public header; no other module includes it. */
#ifndef INFERD_LOADER_IMPL_H
#define INFERD_LOADER_IMPL_H

#include "loader/loader.h"

/* Maps path read-only and keeps the mapping for the lifetime of w. */
int ldi_map(ld_weights *w, const char *path, const uint8_t **base, size_t *size,
            inferd_error *e);
/* Appends t; t->name must be malloc'd and becomes owned by w (also on error). */
int ldi_push_tensor(ld_weights *w, const ld_tensor *t, inferd_error *e);
/* A zeroed 64-byte aligned buffer of n bytes owned by w (NULL on failure). */
void *ldi_own(ld_weights *w, size_t n, inferd_error *e);
/* p itself if aligned to align, else an aligned copy owned by w. */
const void *ldi_aligned_data(ld_weights *w, const uint8_t *p, size_t n, size_t align,
                             inferd_error *e);
/* Sorts the table and refuses duplicate names. */
int ldi_finish(ld_weights *w, inferd_error *e);
/* Reads one pytorch_model.bin (zip or legacy format) into w (pytorch.c). */
int ldi_add_pytorch(ld_weights *w, const char *path, inferd_error *e);

#endif
