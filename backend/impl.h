/* backend/impl.h: what a backend implements — the table of ops behind the
 * opaque be_backend (ggml-backend-impl.h is the model). Only backend.c,
 * backend/cpu and backend/cuda include it; model code sees backend.h alone.
 *
 * A backend embeds struct be_backend first in its own record, fills one
 * static const be_vtable and sets vt. Every op means what its be_* wrapper
 * in backend.h says; an op left NULL gets backend.c's default (said there
 * and in backend.h), so a new op is a slot here, a wrapper and a default,
 * and no backend has to change. Slots keep their order: C++ designated
 * initializers (backend/cuda) must follow it, and g++ -Wextra wants every
 * slot named unless the table sits between #pragma GCC diagnostic push /
 * ignored "-Wmissing-field-initializers" / pop, as cu_vtable does. */
#ifndef INFERD_BACKEND_IMPL_H
#define INFERD_BACKEND_IMPL_H

#include <stdarg.h>

#include "backend/backend.h"

typedef struct be_vtable {
    const char *name;
    void (*free)(be_backend *b);
    void *(*alloc)(be_backend *b, size_t bytes);       /* zeroed; NULL on failure */
    void (*dealloc)(be_backend *b, void *p);           /* p not NULL */
    int (*weight)(be_backend *b, const void *host, inferd_dtype dt, int64_t rows,
                  int64_t cols, be_weight *out, inferd_error *e);
    void (*embed)(be_backend *b, const be_weight *table, const int32_t *ids, int n,
                  float *out);
    void (*rmsnorm)(be_backend *b, const float *x, const be_weight *w, float eps,
                    int rows, int cols, float *out);
    /* plain weights only: quantized ones go to matmul_quant */
    void (*matmul)(be_backend *b, const float *x, const be_weight *w,
                   const be_weight *bias, int n, float *y);
    void (*rope)(be_backend *b, float *x, int n, int heads, int head_dim, const be_rope *r,
                 const int32_t *pos);
    void (*kv_store)(be_backend *b, const float *k, const float *v, int n, int kv_dim,
                     const int32_t *slot, float *k_cache, float *v_cache);
    void (*attention)(be_backend *b, const float *q, const float *k_cache,
                      const float *v_cache, int heads, int kv_heads, int head_dim,
                      float scale, const be_attn_layout *l, float *out);
    void (*silu_mul)(be_backend *b, const float *gate, const float *up, size_t n,
                     float *out);
    void (*add)(be_backend *b, float *x, const float *y, size_t n);
    void (*gather_rows)(be_backend *b, const float *x, int cols, const int32_t *rows,
                        int n, float *out);
    /* ---- optional from here on (NULL: backend.c's default) ---- */
    int (*begin_step)(be_backend *b, const be_step *s, inferd_error *e);
    int (*to_host)(be_backend *b, void *dst, const void *src, size_t bytes,
                   inferd_error *e);
    int (*mem_info)(be_backend *b, size_t *free_bytes, size_t *total_bytes, inferd_error *e);
    void (*layernorm)(be_backend *b, const float *x, const be_weight *w,
                      const be_weight *bias, float eps, int rows, int cols, float *out);
    void (*gelu)(be_backend *b, const float *x, size_t n, int tanh_approx, float *out);
    void (*tanh)(be_backend *b, const float *x, size_t n, float *out);
    void (*attention_full)(be_backend *b, const float *q, const float *k, const float *v,
                           int heads, int head_dim, float scale, int n_seqs,
                           const int32_t *q_start, float *out);
    int (*sample_rows)(be_backend *b, const float *logits, int n, int vocab,
                       const be_sample_row *in, be_sample_out *out, inferd_error *e);
    /* ---- room for wave 2 ---- */
    int (*from_host)(be_backend *b, void *dst, const void *src, size_t bytes,
                     inferd_error *e);
    int (*reserve)(be_backend *b, int max_rows, inferd_error *e);
    int (*weight_quant)(be_backend *b, const be_qweight *q, int64_t rows, int64_t cols,
                        be_weight *out, inferd_error *e);
    void (*matmul_quant)(be_backend *b, const float *x, const be_weight *w,
                         const be_weight *bias, int n, float *y);
    void (*matmul_grouped)(be_backend *b, const float *x, const be_weight *w,
                           const be_weight *bias, int n_groups, const int32_t *group_start,
                           float *y);
    void (*mask_logits)(be_backend *b, float *logits, int n, int vocab, const uint32_t *mask);
    /* 1: backend memory is host memory (be_is_host) */
    int host;
} be_vtable;

struct be_backend {
    const be_vtable *vt;
    inferd_dtype kv_dtype;   /* be_kv_dtype; DT_F32 is the zero value */
    int matmul_bf16;         /* be_set_matmul_bf16 */
    /* ---- backend.c's; a backend leaves them zero ---- */
    /* The first failure kept by an op (be_impl_fail), until a report:
     * every backend keeps its op failures here. */
    int kept;
    char kept_msg[INFERD_ERR_MAX];
    /* Host copies of logits for the defaults of sample_rows and mask_logits. */
    float *host_tmp;
    size_t host_tmp_cap;     /* floats */
    /* Dequantized weights the default weight_quant made on a host backend,
     * whose weights point into them: freed with the backend. */
    void **owned;
    size_t n_owned;
};

/* Keeps the first failure of an op for the next report (later ones are
 * dropped: the first is the cause). */
void be_impl_fail(be_backend *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void be_impl_vfail(be_backend *b, const char *fmt, va_list ap);
/* The kept failure into e (-1) and the slot cleared; 0 when none. */
int be_impl_report(be_backend *b, inferd_error *e);

#endif
