#include <string.h>

#include "model/internal.h"

int mdl_weight_from_tensor(be_backend *be, const ld_tensor *t, const char *prefix,
                           const char *name, int64_t rows, int64_t cols, int optional,
                           be_weight *out, inferd_error *e)
{
    memset(out, 0, sizeof *out);
    if (!t) {
        if (optional)
            return 0;
        err_set(e, "tensor '%s%s' is missing from the checkpoint", prefix, name);
        return -1;
    }
    int64_t tr = t->n_dims == 1 ? 1 : t->shape[0];
    int64_t tc = t->n_dims == 1 ? t->shape[0] : t->shape[1];
    if (t->n_dims < 1 || t->n_dims > 2 || tr != rows || tc != cols) {
        err_set(e, "tensor '%s%s' has shape [%lld, %lld], expected [%lld, %lld] from "
                   "config.json",
                prefix, name, (long long)tr, (long long)tc, (long long)rows, (long long)cols);
        return -1;
    }
    return be_weight_init(be, t->data, t->dtype, rows, cols, out, e);
}

int mdl_parse_matmul_precision(const char *s, int *bf16, inferd_error *e)
{
    if (!s || strcmp(s, "float32") == 0 || strcmp(s, "highest") == 0) {
        *bf16 = 0;
        return 0;
    }
    if (strcmp(s, "bfloat16") == 0 || strcmp(s, "bf16") == 0) {
        *bf16 = 1;
        return 0;
    }
    err_set(e, "unknown matmul precision '%s' (use float32 or bfloat16)", s);
    return -1;
}
