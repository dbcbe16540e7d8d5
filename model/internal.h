/* model: what llama.c and bert.c share; not part of the public header. */
#ifndef INFERD_MODEL_INTERNAL_H
#define INFERD_MODEL_INTERNAL_H

#include "backend/backend.h"
#include "loader/loader.h"

/* Checks tensor t (NULL: absent) against the [rows][cols] config.json
 * implies — a vector is [1][n] — and makes it a backend weight. An absent
 * optional tensor leaves out zeroed and succeeds. prefix + name name the
 * tensor in messages. */
int mdl_weight_from_tensor(be_backend *be, const ld_tensor *t, const char *prefix,
                           const char *name, int64_t rows, int64_t cols, int optional,
                           be_weight *out, inferd_error *e);

#endif
