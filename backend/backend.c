/* backend: the be_* functions of backend.h. Each dispatches through the
 * backend's vtable (impl.h) and, where the backend leaves an op out, runs
 * the default built from the ops it has, so that callers never test what a
 * backend can do. Here also the kept-error slot every backend shares. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/impl.h"

/* ---- kept errors ---- */

void be_impl_vfail(be_backend *b, const char *fmt, va_list ap)
{
    if (b->kept)
        return;
    b->kept = 1;
    vsnprintf(b->kept_msg, sizeof b->kept_msg, fmt, ap);
}

void be_impl_fail(be_backend *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    be_impl_vfail(b, fmt, ap);
    va_end(ap);
}

int be_impl_report(be_backend *b, inferd_error *e)
{
    if (!b->kept)
        return 0;
    err_set(e, "%s", b->kept_msg);
    b->kept = 0;
    return -1;
}

/* What a reporting call returns: its own failure (rc -1, message in e),
 * else the kept one. Either way the slot is empty afterwards. */
static int report_after(be_backend *b, int rc, inferd_error *e)
{
    if (rc) {
        b->kept = 0;
        return rc;
    }
    return be_impl_report(b, e);
}

/* ---- backends ---- */

void be_free(be_backend *b)
{
    if (!b)
        return;
    free(b->host_tmp);
    for (size_t i = 0; i < b->n_owned; i++)
        free(b->owned[i]);
    free(b->owned);
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

const char *be_name(const be_backend *b) { return b->vt->name; }
int be_is_host(const be_backend *b) { return b->vt->host; }
inferd_dtype be_kv_dtype(const be_backend *b) { return b->kv_dtype; }
void be_set_matmul_bf16(be_backend *b, int on) { b->matmul_bf16 = on != 0; }

int be_mem_info(be_backend *b, size_t *free_bytes, size_t *total_bytes, inferd_error *e)
{
    if (b->vt->mem_info)
        return b->vt->mem_info(b, free_bytes, total_bytes, e);
    err_set(e, "the %s backend has no device memory to report", b->vt->name);
    return -1;
}

int be_reserve(be_backend *b, int max_rows, inferd_error *e)
{
    return b->vt->reserve ? b->vt->reserve(b, max_rows, e) : 0;
}

/* ---- memory ---- */

void *be_alloc(be_backend *b, size_t bytes) { return b->vt->alloc(b, bytes); }

void be_dealloc(be_backend *b, void *p)
{
    if (p)
        b->vt->dealloc(b, p);
}

int be_to_host(be_backend *b, void *dst, const void *src, size_t bytes, inferd_error *e)
{
    int rc = 0;
    if (b->vt->to_host) {
        rc = b->vt->to_host(b, dst, src, bytes, e);
    } else if (!b->vt->host) {
        err_set(e, "the %s backend cannot copy its memory to the host (no to_host op)",
                b->vt->name);
        rc = -1;
    } else if (bytes && dst != src) {
        memcpy(dst, src, bytes);
    }
    return report_after(b, rc, e);
}

int be_from_host(be_backend *b, void *dst, const void *src, size_t bytes, inferd_error *e)
{
    if (b->vt->from_host)
        return b->vt->from_host(b, dst, src, bytes, e);
    if (!b->vt->host) {
        err_set(e, "the %s backend cannot copy host memory to the device (no from_host op)",
                b->vt->name);
        return -1;
    }
    if (bytes && dst != src)
        memcpy(dst, src, bytes);
    return 0;
}

/* b->host_tmp grown to n floats; NULL (and e set) when it cannot be. */
static float *host_tmp(be_backend *b, size_t n, inferd_error *e)
{
    if (n <= b->host_tmp_cap)
        return b->host_tmp;
    free(b->host_tmp);
    b->host_tmp_cap = 0;
    b->host_tmp = n <= SIZE_MAX / sizeof(float) ? malloc(n * sizeof(float)) : NULL;
    if (!b->host_tmp) {
        err_set(e, "%s backend: out of memory for a host copy of %zu logits", b->vt->name, n);
        return NULL;
    }
    b->host_tmp_cap = n;
    return b->host_tmp;
}

/* ---- weights ---- */

int be_weight_init(be_backend *b, const void *host, inferd_dtype dt, int64_t rows,
                   int64_t cols, be_weight *out, inferd_error *e)
{
    return b->vt->weight(b, host, dt, rows, cols, out, e);
}

static const char *qtype_name(be_qtype t)
{
    switch (t) {
    case BE_Q_NONE:
        return "none";
    case BE_Q8:
        return "q8";
    case BE_Q4:
        return "q4";
    }
    return "unknown";
}

/* Code c of row-major codes as a float, zero subtracted. */
static float q_code(const be_qweight *q, size_t i)
{
    const uint8_t *c = q->codes;
    if (q->type == BE_Q8)
        return (float)(int8_t)c[i];
    return (float)((i & 1 ? c[i / 2] >> 4 : c[i / 2] & 15) - 8);
}

/* The default weight_quant: the matrix expanded to float32 on the host and
 * made a plain weight. A device backend copies it, so the expansion is
 * freed at once; a host backend's weight points into it, so it is kept. */
static int dequant_weight(be_backend *b, const be_qweight *q, int64_t rows, int64_t cols,
                          be_weight *out, inferd_error *e)
{
    float *w = NULL;
    void **list = NULL;
    if (q->type != BE_Q8 && q->type != BE_Q4) {
        err_set(e, "the %s backend cannot load weights quantized as %s", b->vt->name,
                qtype_name(q->type));
        return -1;
    }
    if (rows <= 0 || cols <= 0 || q->group <= 0 || cols % q->group ||
        (q->type == BE_Q4 && (q->group % 2 || cols % 2))) {
        err_set(e, "a %s weight of [%lld][%lld] with groups of %d columns: groups must divide "
                   "the columns (and be even for q4)",
                qtype_name(q->type), (long long)rows, (long long)cols, q->group);
        return -1;
    }
    const size_t n = (size_t)rows * (size_t)cols, per_row = (size_t)(cols / q->group);
    w = n <= SIZE_MAX / sizeof *w ? malloc(n * sizeof *w) : NULL;
    if (!w) {
        err_set(e, "out of memory expanding a %lld x %lld %s weight", (long long)rows,
                (long long)cols, qtype_name(q->type));
        goto err;
    }
    for (size_t i = 0; i < n; i++) {
        size_t r = i / (size_t)cols, c = i % (size_t)cols;
        w[i] = q_code(q, i) * q->scales[r * per_row + c / (size_t)q->group];
    }
    if (b->vt->host) {
        list = realloc(b->owned, (b->n_owned + 1) * sizeof *list);
        if (!list) {
            err_set(e, "out of memory");
            goto err;
        }
        b->owned = list;
    }
    if (b->vt->weight(b, w, DT_F32, rows, cols, out, e))
        goto err;
    if (b->vt->host)
        b->owned[b->n_owned++] = w;
    else
        free(w);
    return 0;
err:
    free(w);
    return -1;
}

int be_weight_init_quant(be_backend *b, const be_qweight *q, int64_t rows, int64_t cols,
                         be_weight *out, inferd_error *e)
{
    if (b->vt->weight_quant)
        return b->vt->weight_quant(b, q, rows, cols, out, e);
    return dequant_weight(b, q, rows, cols, out, e);
}

/* ---- ops ---- */

void be_embed(be_backend *b, const be_weight *table, const int32_t *ids, int n, float *out)
{
    b->vt->embed(b, table, ids, n, out);
}

void be_rmsnorm(be_backend *b, const float *x, const be_weight *w, float eps, int rows,
                int cols, float *out)
{
    b->vt->rmsnorm(b, x, w, eps, rows, cols, out);
}

void be_matmul(be_backend *b, const float *x, const be_weight *w, const be_weight *bias, int n,
               float *y)
{
    if (w->qtype == BE_Q_NONE)
        b->vt->matmul(b, x, w, bias, n, y);
    else if (b->vt->matmul_quant)
        b->vt->matmul_quant(b, x, w, bias, n, y);
    else
        be_impl_fail(b, "the %s backend has no matmul for %s weights", b->vt->name,
                     qtype_name(w->qtype));
}

void be_matmul_grouped(be_backend *b, const float *x, const be_weight *w,
                       const be_weight *bias, int n_groups, const int32_t *group_start,
                       float *y)
{
    if (b->vt->matmul_grouped) {
        b->vt->matmul_grouped(b, x, w, bias, n_groups, group_start, y);
        return;
    }
    for (int g = 0; g < n_groups; g++) {
        const int r0 = group_start[g], rows = group_start[g + 1] - r0;
        if (rows <= 0)
            continue;
        const be_weight *bg = bias && bias[g].data ? &bias[g] : NULL;
        be_matmul(b, x + (size_t)r0 * (size_t)w[g].cols, &w[g], bg, rows,
                  y + (size_t)r0 * (size_t)w[g].rows);
    }
}

void be_rope_apply(be_backend *b, float *x, int n, int heads, int head_dim, const be_rope *r,
                   const int32_t *pos)
{
    b->vt->rope(b, x, n, heads, head_dim, r, pos);
}

void be_kv_store(be_backend *b, const float *k, const float *v, int n, int kv_dim,
                 const int32_t *slot, float *k_cache, float *v_cache)
{
    b->vt->kv_store(b, k, v, n, kv_dim, slot, k_cache, v_cache);
}

void be_attention(be_backend *b, const float *q, const float *k_cache, const float *v_cache,
                  int heads, int kv_heads, int head_dim, float scale, const be_attn_layout *l,
                  float *out)
{
    b->vt->attention(b, q, k_cache, v_cache, heads, kv_heads, head_dim, scale, l, out);
}

void be_silu_mul(be_backend *b, const float *gate, const float *up, size_t n, float *out)
{
    b->vt->silu_mul(b, gate, up, n, out);
}

void be_add(be_backend *b, float *x, const float *y, size_t n) { b->vt->add(b, x, y, n); }

void be_gather_rows(be_backend *b, const float *x, int cols, const int32_t *rows, int n,
                    float *out)
{
    b->vt->gather_rows(b, x, cols, rows, n, out);
}

/* The default of the encoder ops: encoders cannot run on this backend. */
static void no_encoder_op(be_backend *b, const char *op)
{
    be_impl_fail(b, "the %s backend has no encoder ops (%s): encoder models cannot run on it",
                 b->vt->name, op);
}

void be_layernorm(be_backend *b, const float *x, const be_weight *w, const be_weight *bias,
                  float eps, int rows, int cols, float *out)
{
    if (b->vt->layernorm)
        b->vt->layernorm(b, x, w, bias, eps, rows, cols, out);
    else
        no_encoder_op(b, "layernorm");
}

void be_gelu(be_backend *b, const float *x, size_t n, int tanh_approx, float *out)
{
    if (b->vt->gelu)
        b->vt->gelu(b, x, n, tanh_approx, out);
    else
        no_encoder_op(b, "gelu");
}

void be_tanh(be_backend *b, const float *x, size_t n, float *out)
{
    if (b->vt->tanh)
        b->vt->tanh(b, x, n, out);
    else
        no_encoder_op(b, "tanh");
}

void be_attention_full(be_backend *b, const float *q, const float *k, const float *v,
                       int heads, int head_dim, float scale, int n_seqs,
                       const int32_t *q_start, float *out)
{
    if (b->vt->attention_full)
        b->vt->attention_full(b, q, k, v, heads, head_dim, scale, n_seqs, q_start, out);
    else
        no_encoder_op(b, "attention_full");
}

/* ---- steps and sampling ---- */

int be_begin_step(be_backend *b, const be_step *s, inferd_error *e)
{
    return report_after(b, b->vt->begin_step ? b->vt->begin_step(b, s, e) : 0, e);
}

/* -INFINITY for the ids of each row whose bit is clear. */
static void mask_host(float *logits, int n, int vocab, const uint32_t *mask)
{
    const size_t words = ((size_t)vocab + 31) / 32;
    for (int r = 0; r < n; r++) {
        float *l = logits + (size_t)r * (size_t)vocab;
        const uint32_t *m = mask + (size_t)r * words;
        for (int i = 0; i < vocab; i++)
            if (!(m[i / 32] >> (i % 32) & 1))
                l[i] = -INFINITY;
    }
}

void be_mask_logits(be_backend *b, float *logits, int n, int vocab, const uint32_t *mask)
{
    if (b->vt->mask_logits) {
        b->vt->mask_logits(b, logits, n, vocab, mask);
        return;
    }
    if (n <= 0 || vocab <= 0)
        return;
    if (b->vt->host) {
        mask_host(logits, n, vocab, mask);
        return;
    }
    /* device memory: round trip through b->host_tmp */
    inferd_error e = {{0}};
    const size_t count = (size_t)n * (size_t)vocab, bytes = count * sizeof(float);
    float *h = host_tmp(b, count, &e);
    if (!h || b->vt->to_host(b, h, logits, bytes, &e)) {
        be_impl_fail(b, "%s", e.msg);
        return;
    }
    mask_host(h, n, vocab, mask);
    if (be_from_host(b, logits, h, bytes, &e))
        be_impl_fail(b, "%s", e.msg);
}

int be_sample_rows(be_backend *b, const float *logits, int n, int vocab,
                   const be_sample_row *in, be_sample_out *out, inferd_error *e)
{
    /* a kept error: the logits are not what the step should have made */
    if (be_impl_report(b, e))
        return -1;
    if (b->vt->sample_rows)
        return report_after(b, b->vt->sample_rows(b, logits, n, vocab, in, out, e), e);
    const float *rows = logits;
    if (!b->vt->host) { /* the whole rows come to the host: what the op saves */
        const size_t count = (size_t)n * (size_t)vocab;
        float *h = host_tmp(b, count, e);
        if (!h || be_to_host(b, h, logits, count * sizeof(float), e))
            return -1;
        rows = h;
    }
    be_sample_rows_host(rows, n, vocab, in, out);
    return 0;
}
