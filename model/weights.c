#include <stdio.h>
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

int mdl_resolve_device(const char *device, const char **out, char *note, size_t n_note,
                       inferd_error *e)
{
    if (note && n_note)
        note[0] = 0;
    if (!device || !strcmp(device, "cpu") || !strcmp(device, "cuda")) {
        *out = device ? device : "cpu";
        return 0;
    }
    if (strcmp(device, "auto") != 0) {
        err_set(e, "unknown device '%s' (available: auto, cpu%s)", device,
                be_cuda_available() ? ", cuda" : "");
        return -1;
    }
    if (!be_cuda_available()) {
        *out = "cpu";
        if (note)
            snprintf(note, n_note, "this build has no CUDA (make CUDA=1 with nvcc)");
        return 0;
    }
    /* Opening device 0 is the one check that covers no GPU, no driver and a
     * GPU already taken; it costs a CUDA context, freed here. */
    inferd_error ce = {0};
    be_backend *b = be_cuda_new(0, &ce);
    if (!b) {
        *out = "cpu";
        if (note)
            snprintf(note, n_note, "no usable CUDA device: %s", ce.msg);
        return 0;
    }
    be_free(b);
    *out = "cuda";
    if (note)
        snprintf(note, n_note, "CUDA device 0");
    return 0;
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
