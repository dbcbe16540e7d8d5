/* backend/cuda/tape.cu: a step's recording, its fusions and CUDA graphs,
 * and the step's start (begin_step: the index arrays' upload) and end
 * (to_host).
 *
 * Between begin_step and to_host of a step over the KV cache the ops only
 * append their arguments to a tape (a tape_op each, common.cuh); to_host
 * runs it. Running it fuses ops: matmuls that share their input (q/k/v,
 * gate/up: one launch, or one input conversion for GEMMs), silu into the
 * GEMV before it, the RMSNorm and the residual add into the one-row GEMV,
 * add + rmsnorm, rope + KV store, rope + KV store into the decode attention.
 * Each fusion first asks can_fuse() whether the ops from i on are the kinds
 * it joins, then checks on their fields which buffer feeds which. A decode
 * step (every row a decode row, at most GEMV_MAX_N of them) whose tape
 * equals the previous step's is captured into a CUDA graph; later steps with
 * the same tape replay it: one launch for the whole step. The tape holds
 * every argument a kernel sees (buffers, shapes, the step's upload layout,
 * the split-KV count and a generation number of the backend's own
 * buffers), so equal tapes launch identical kernels; what changes from step
 * to step (tokens, positions, slots, block tables) is read from the device
 * copies begin_step uploads. A tape is captured only after it ran once
 * uncaptured, so every buffer it needs has been allocated and nothing
 * synchronises during capture. */
#include <initializer_list>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/attn_decode.cuh"
#include "backend/cuda/attn_prefill.cuh"
#include "backend/cuda/backend.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/elementwise.cuh"
#include "backend/cuda/gemm.cuh"
#include "backend/cuda/gemv.cuh"
#include "backend/cuda/tape.cuh"

/* ---- the tape ---- */

tape_op *cu_record(cu_backend *b, enum op_kind kind)
{
    tape *t = &b->cur;
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 1024;
        tape_op *ops = (tape_op *)realloc(t->ops, (size_t)cap * sizeof *ops);
        if (!ops) {
            fail_msg(b, "cuda backend: out of memory for the step's op list");
            return NULL;
        }
        t->ops = ops;
        t->cap = cap;
    }
    tape_op *o = &t->ops[t->n++];
    memset(o, 0, sizeof *o);
    o->kind = kind;
    return o;
}

static int tape_eq(const tape *a, const tape *c)
{
    return a->n == c->n && a->n > 0 && memcmp(a->ops, c->ops, (size_t)a->n * sizeof *a->ops) == 0;
}

static int tape_copy(cu_backend *b, tape *dst, const tape *src)
{
    if (dst->cap < src->n) {
        tape_op *ops = (tape_op *)realloc(dst->ops, (size_t)src->n * sizeof *ops);
        if (!ops) {
            fail_msg(b, "cuda backend: out of memory for the step's op list");
            return -1;
        }
        dst->ops = ops;
        dst->cap = src->n;
    }
    memcpy(dst->ops, src->ops, (size_t)src->n * sizeof *src->ops);
    dst->n = src->n;
    return 0;
}

void cu_tape_free(cu_backend *b)
{
    if (b->gexec)
        cudaGraphExecDestroy(b->gexec);
    free(b->cur.ops);
    free(b->last.ops);
    free(b->gtape.ops);
}

/* ---- which ops fuse ---- */

/* Whether the ops of t from i on are of these kinds, in this order: the
 * first question of every fusion (llama.cpp's ggml_cuda_can_fuse asks it of
 * a graph). The data checks that follow are each fusion's own. */
static bool can_fuse(const tape *t, int i, std::initializer_list<enum op_kind> kinds)
{
    if (i < 0 || i + (int)kinds.size() > t->n)
        return false;
    for (enum op_kind k : kinds)
        if (t->ops[i++].kind != k)
            return false;
    return true;
}

/* The buffers op o holds: every pointer it reads (in[], returns how many)
 * and the one it overwrites whole (*out, NULL where it writes in place or
 * into the KV cache, which count as reads). */
static int op_buffers(const tape_op *o, const void **in, const void **out)
{
    int n = 0;
    *out = NULL;
    switch (o->kind) {
    case OP_KEY:
        for (int j = 0; j < MAX_MAPS; j++)
            in[n++] = o->key.dev[j];
        break;
    case OP_EMBED:
        in[n++] = o->embed.table;
        in[n++] = o->embed.ids;
        *out = o->embed.out;
        break;
    case OP_RMSNORM:
        in[n++] = o->rmsnorm.x;
        in[n++] = o->rmsnorm.w;
        *out = o->rmsnorm.out;
        break;
    case OP_MATMUL:
        in[n++] = o->matmul.x;
        in[n++] = o->matmul.w;
        in[n++] = o->matmul.bias;
        *out = o->matmul.y;
        break;
    case OP_ROPE:
        in[n++] = o->rope.x;
        in[n++] = o->rope.r;
        in[n++] = o->rope.pos;
        in[n++] = o->rope.inv_freq;
        break;
    case OP_KV:
        in[n++] = o->kv.k;
        in[n++] = o->kv.v;
        in[n++] = o->kv.slot;
        in[n++] = o->kv.k_cache;
        in[n++] = o->kv.v_cache;
        break;
    case OP_ATT:
        in[n++] = o->att.q;
        in[n++] = o->att.k_cache;
        in[n++] = o->att.v_cache;
        in[n++] = o->att.q_start;
        in[n++] = o->att.block_table;
        in[n++] = o->att.pos;
        *out = o->att.out;
        break;
    case OP_SILU:
        in[n++] = o->silu.gate;
        in[n++] = o->silu.up;
        *out = o->silu.out;
        break;
    case OP_ADD:
        in[n++] = o->add.x;
        in[n++] = o->add.y;
        break;
    case OP_GATHER:
        in[n++] = o->gather.x;
        in[n++] = o->gather.rows;
        *out = o->gather.out;
        break;
    }
    return n;
}

/* Whether an op from index `from` on reads buffer p before one overwrites it
 * (the step's end counts as a read: the caller may want the buffer). */
static int read_later(const tape *t, int from, const void *p)
{
    for (int j = from; j < t->n; j++) {
        const void *in[MAX_MAPS], *out;
        const int n = op_buffers(&t->ops[j], in, &out);
        for (int k = 0; k < n; k++)
            if (in[k] == p)
                return 1;
        if (out && out == p)
            return 0;
    }
    return 1;
}

/* The matmuls from op i on that share x and n and have the same dtype and
 * width (at most GEMV_SET): their weights, biases and outputs, and whether
 * the OP_SILU after them makes gate and up a GLU pair (silu(gate) * up into
 * gate's buffer, one launch). Returns how many matmuls (0: op i is none). */
static int matmul_set(const tape *t, int i, const be_weight **w, const be_weight **bias,
                      float **y, bool *glu)
{
    const tape_op *o = &t->ops[i];
    int k = 0;
    for (; k < GEMV_SET && can_fuse(t, i + k, {OP_MATMUL}); k++) {
        const tape_op *c = &t->ops[i + k];
        if (c->matmul.x != o->matmul.x || c->matmul.n != o->matmul.n)
            break;
        const be_weight *cw = c->matmul.w;
        if (k > 0 && (cw->dtype != w[0]->dtype || cw->cols != w[0]->cols))
            break;
        w[k] = cw;
        bias[k] = c->matmul.bias;
        y[k] = c->matmul.y;
    }
    const tape_op *sl = &t->ops[i + k];
    *glu = k == 2 && can_fuse(t, i + k, {OP_SILU}) && sl->silu.gate == y[0] &&
           sl->silu.up == y[1] && sl->silu.out == y[0] && w[1]->rows == w[0]->rows &&
           (int64_t)sl->silu.n == (int64_t)o->matmul.n * w[0]->rows;
    return k;
}

/* Matmuls from op i on that share x and n, as one launch (with the OP_SILU
 * after gate and up); returns how many ops that ran. */
static int run_fused(cu_backend *b, const tape *t, int i)
{
    const tape_op *o = &t->ops[i];
    const be_weight *w[GEMV_SET], *bias[GEMV_SET];
    float *y[GEMV_SET];
    bool glu;
    const int k = matmul_set(t, i, w, bias, y, &glu);
    if (k < 2)
        return 0;
    const float *x = o->matmul.x;
    const int n = o->matmul.n;
    if (n > GEMV_MAX_N && !b->force_gemv)
        return cu_gemm_multi(b, x, w, bias, y, k, n);
    cu_gemv_multi(b, x, w, bias, y, k, n, glu, NULL);
    return glu ? k + 1 : k;
}

/* One input row (unless INFERD_CUDA_GEMV_NORM=0): the OP_RMSNORM at i and the
 * matmuls that take its output (run_fused's set) as one gemv1_kernel launch
 * that normalises its input first, with the same bits. Returns how many ops
 * that ran (0: none, gemv1_kernel does not apply). */
static int run_norm_gemv(cu_backend *b, const tape *t, int i)
{
    if (!can_fuse(t, i, {OP_RMSNORM, OP_MATMUL}))
        return 0;
    const tape_op *r = &t->ops[i], *m = &t->ops[i + 1];
    if (r->rmsnorm.rows != 1 || r->rmsnorm.out == r->rmsnorm.x ||
        m->matmul.x != r->rmsnorm.out || m->matmul.n != 1)
        return 0;
    const be_weight *w[GEMV_SET], *bias[GEMV_SET];
    float *y[GEMV_SET];
    bool glu;
    const int k = matmul_set(t, i + 1, w, bias, y, &glu);
    if (w[0]->cols != r->rmsnorm.cols)
        return 0;
    for (int j = 0; j < k; j++) /* other blocks may still read x while one writes y */
        if (y[j] == r->rmsnorm.x || y[j] == r->rmsnorm.out)
            return 0;
    const int after = i + 1 + k + (glu ? 1 : 0);
    gemv_fold f = {r->rmsnorm.w, r->rmsnorm.eps,
                   read_later(t, after, r->rmsnorm.out) ? r->rmsnorm.out : NULL, NULL};
    prof_begin(b);
    const int ran = cu_gemv_multi(b, r->rmsnorm.x, w, bias, y, k, 1, glu, &f);
    prof_end(b, P_GEMV);
    b->gemv_folds += ran;
    return ran ? after - i : 0;
}

/* One input row (unless INFERD_CUDA_GEMV_NORM=0): the OP_MATMUL at i and the OP_ADD
 * of its output into the residual as one gemv1_kernel launch that adds into
 * the residual instead of writing its output, when nothing reads that output
 * later. Returns how many ops that ran (0 or 2). */
static int run_gemv_add(cu_backend *b, const tape *t, int i)
{
    if (!can_fuse(t, i, {OP_MATMUL, OP_ADD}))
        return 0;
    const tape_op *o = &t->ops[i], *a = &t->ops[i + 1];
    const be_weight *w = o->matmul.w, *bias = o->matmul.bias;
    float *y = o->matmul.y;
    if (o->matmul.n != 1 || a->add.y != y || (int64_t)a->add.n != w->rows ||
        a->add.x == o->matmul.x || a->add.x == y || read_later(t, i + 2, y))
        return 0;
    gemv_fold f = {NULL, 0.0f, NULL, a->add.x};
    prof_begin(b);
    const int ran = cu_gemv_multi(b, o->matmul.x, &w, &bias, &y, 1, 1, false, &f);
    prof_end(b, P_GEMV);
    b->gemv_folds += ran;
    return ran ? 2 : 0;
}

/* OP_ADD at i followed by the OP_RMSNORM of the same rows: one launch. With
 * INFERD_CUDA_FUSE=half (the default), when the matmuls after them take the
 * normalised rows as GEMM input in half precision (more than GEMV_MAX_N
 * rows, one-pass bf16/f16) and nothing reads the float32 rows later, the
 * kernel writes them in half precision straight into the GEMMs' input (the
 * bits to_half_kernel would give) and those matmuls run here too. Returns
 * how many ops after i it ran. */
static int run_add_rmsnorm(cu_backend *b, const tape *t, int i)
{
    if (!can_fuse(t, i, {OP_ADD, OP_RMSNORM}))
        return 0;
    const tape_op *a = &t->ops[i], *r = &t->ops[i + 1];
    if (r->rmsnorm.x != a->add.x ||
        (int64_t)r->rmsnorm.rows * r->rmsnorm.cols != (int64_t)a->add.n || r->rmsnorm.rows <= 0)
        return 0;
    const int rows = r->rmsnorm.rows, cols = r->rmsnorm.cols;
    const be_weight *mw[GEMV_SET], *mb[GEMV_SET];
    float *my[GEMV_SET];
    int k = 0;
    if (b->fuse_half && rows > GEMV_MAX_N && !b->force_gemv) {
        for (; k < GEMV_SET && can_fuse(t, i + 2 + k, {OP_MATMUL}); k++) {
            const tape_op *m = &t->ops[i + 2 + k];
            const be_weight *wk = m->matmul.w;
            if (m->matmul.x != r->rmsnorm.out || m->matmul.n != rows ||
                !cu_half_pass(b, wk->dtype) || wk->cols != cols ||
                (k > 0 && wk->dtype != mw[0]->dtype))
                break;
            mw[k] = wk;
            mb[k] = m->matmul.bias;
            my[k] = m->matmul.y;
        }
        if (k > 0 && read_later(t, i + 2 + k, r->rmsnorm.out))
            k = 0;
    }
    void *xb = k > 0 ? cu_scratch(b, (size_t)rows * (size_t)cols * 2) : NULL;
    if (k > 0 && !xb)
        return 1 + k; /* the failure is kept */
    cu_add_rmsnorm(b, a->add.x, a->add.y, r->rmsnorm.w, r->rmsnorm.eps, rows, cols,
                   k > 0 ? xb : (void *)r->rmsnorm.out, k > 0 ? (int)mw[0]->dtype : (int)DT_F32);
    if (k > 0 && !b->base.kept) {
        prof_begin(b);
        cu_gemm_half(b, xb, mw[0]->dtype, mw, mb, my, k, rows);
        prof_end(b, P_GEMM);
    }
    return 1 + k;
}

/* Whether ops i, i + 1, i + 2 are the OP_ROPE of q, the OP_ROPE of k and
 * the OP_KV of that k, with the rope frequencies the device copy cu_rope
 * keeps (made by the first uncaptured run of the op, so not before it). */
static bool rope_store_ops(const cu_backend *b, const tape *t, int i)
{
    if (!can_fuse(t, i, {OP_ROPE, OP_ROPE, OP_KV}))
        return false;
    const tape_op *q = &t->ops[i], *k = &t->ops[i + 1], *kv = &t->ops[i + 2];
    return k->rope.r == q->rope.r && k->rope.pos == q->rope.pos && k->rope.n == q->rope.n &&
           k->rope.head_dim == q->rope.head_dim && kv->kv.k == k->rope.x &&
           kv->kv.n == q->rope.n &&
           (int64_t)kv->kv.kv_dim == (int64_t)k->rope.heads * k->rope.head_dim &&
           b->d_inv_freq && q->rope.r->inv_freq == b->rope_host &&
           q->rope.rot_dim / 2 == b->rope_half && q->rope.n > 0;
}

/* The layout an OP_ATT recorded (cu_attention's arguments). */
static be_attn_layout att_layout(const tape_op *o)
{
    be_attn_layout l;
    memset(&l, 0, sizeof l);
    l.q_start = o->att.q_start;
    l.block_table = o->att.block_table;
    l.pos = o->att.pos;
    l.n_tokens = o->att.n_tokens;
    l.n_seqs = o->att.n_seqs;
    l.max_blocks = o->att.max_blocks;
    l.block_size = o->att.block_size;
    return l;
}

/* OP_ROPE of q, OP_ROPE of k, then OP_KV of that k (rope_store_ops): one
 * launch. */
static int run_rope_store(cu_backend *b, const tape *t, int i)
{
    if (!rope_store_ops(b, t, i))
        return 0;
    const tape_op *q = &t->ops[i], *k = &t->ops[i + 1], *kv = &t->ops[i + 2];
    cu_rope_store(b, q->rope.x, k->rope.x, kv->kv.v, q->rope.n, q->rope.heads, k->rope.heads,
                  q->rope.head_dim, q->rope.rot_dim / 2, q->rope.mscale, q->rope.pos,
                  kv->kv.slot, kv->kv.k_cache, kv->kv.v_cache);
    return 1;
}

/* A step of decode rows only (unless INFERD_CUDA_ATT_ROPE=0): run_rope_store's three
 * ops and the OP_ATT after them as one attn_decode_tile_kernel launch that
 * rotates q and k and stores k and v itself, with the same bits, when
 * nothing reads the q and k buffers later (they stay unrotated). Returns
 * how many ops that ran (0 or 4). */
static int run_rope_attn(cu_backend *b, const tape *t, int i)
{
    if (!can_fuse(t, i, {OP_ROPE, OP_ROPE, OP_KV, OP_ATT}) || b->n_tiles != 0 ||
        !cu_kv_bf16(b) || !rope_store_ops(b, t, i))
        return 0;
    const tape_op *q = &t->ops[i], *k = &t->ops[i + 1], *kv = &t->ops[i + 2],
                  *a = &t->ops[i + 3];
    const int half = q->rope.rot_dim / 2;
    if (half < 1)
        return 0;
    const int heads = a->att.heads, kvh = a->att.kv_heads, hd = a->att.head_dim;
    /* every split reads k and v first: out must not be either */
    if (kvh <= 0 || heads % kvh || a->att.out == k->rope.x || a->att.out == kv->kv.v ||
        a->att.q != q->rope.x || a->att.k_cache != kv->kv.k_cache ||
        a->att.v_cache != kv->kv.v_cache || a->att.pos != q->rope.pos ||
        a->att.n_tokens != q->rope.n || q->rope.heads != heads || k->rope.heads != kvh ||
        q->rope.head_dim != hd || !cu_decode_tile_ok(b, heads, kvh, hd) ||
        read_later(t, i + 4, q->rope.x) || read_later(t, i + 4, k->rope.x))
        return 0;
    const be_attn_layout l = att_layout(a);
    dec_rope R = {k->rope.x, kv->kv.v, b->d_inv_freq, kv->kv.slot,
                  (__nv_bfloat16 *)kv->kv.k_cache, (__nv_bfloat16 *)kv->kv.v_cache,
                  q->rope.mscale, half};
    cu_decode_tile(b, q->rope.x, a->att.k_cache, a->att.v_cache, heads, kvh, hd, a->att.scale,
                   &l, NULL, l.n_tokens, a->att.out, &R);
    b->att_folds += !b->base.kept;
    return 4;
}

/* OP_SILU at i and the GEMM that takes its product (more than GEMV_MAX_N
 * rows, activations rounded to bf16/f16 in one pass): the product goes
 * straight to the GEMM's half-precision input (silu_mul_kernel<bf16>) instead of
 * float32 memory and a conversion, when nothing reads the float32 product
 * later. Same GEMM inputs bit for bit. Returns 1 when it ran both ops. */
static int run_silu_gemm(cu_backend *b, const tape *t, int i)
{
    if (!can_fuse(t, i, {OP_SILU, OP_MATMUL}))
        return 0;
    const tape_op *sl = &t->ops[i], *m = &t->ops[i + 1];
    if (m->matmul.x != sl->silu.out)
        return 0;
    const be_weight *w = m->matmul.w, *bias = m->matmul.bias;
    const int n = m->matmul.n;
    const size_t nx = sl->silu.n;
    if (n <= GEMV_MAX_N || b->force_gemv || !cu_half_pass(b, w->dtype) ||
        nx != (size_t)n * (size_t)w->cols || read_later(t, i + 2, sl->silu.out))
        return 0;
    void *xb = cu_scratch(b, nx * 2);
    if (!xb)
        return 1; /* the failure is kept */
    float *y = m->matmul.y;
    prof_begin(b);
    if (!cu_silu_mul_half(b, sl->silu.gate, sl->silu.up, nx, w->dtype, xb))
        cu_gemm_half(b, xb, w->dtype, &w, &bias, &y, 1, n);
    prof_end(b, P_GEMM);
    return 1;
}

/* ---- running a step ---- */

static void run_tape(cu_backend *b, const tape *t)
{
    be_backend *bk = &b->base;
    for (int i = 0; i < t->n && !b->base.kept; i++) {
        const tape_op *o = &t->ops[i];
        switch (o->kind) {
        case OP_KEY:
            break;
        case OP_EMBED:
            cu_embed(bk, o->embed.table, o->embed.ids, o->embed.n, o->embed.out);
            break;
        case OP_RMSNORM: {
            const int k = b->gemv_norm ? run_norm_gemv(b, t, i) : 0;
            if (k > 0) {
                i += k - 1;
                break;
            }
            cu_rmsnorm(bk, o->rmsnorm.x, o->rmsnorm.w, o->rmsnorm.eps, o->rmsnorm.rows,
                       o->rmsnorm.cols, o->rmsnorm.out);
            break;
        }
        case OP_MATMUL: {
            int k = b->use_fuse ? run_fused(b, t, i) : 0;
            if (k <= 1 && b->gemv_norm)
                k = run_gemv_add(b, t, i);
            if (k > 1) {
                i += k - 1;
                break;
            }
            cu_matmul(bk, o->matmul.x, o->matmul.w, o->matmul.bias, o->matmul.n, o->matmul.y);
            break;
        }
        case OP_ROPE:
            if (b->att_rope && run_rope_attn(b, t, i)) {
                i += 3;
                break;
            }
            if (b->use_fuse && run_rope_store(b, t, i)) {
                i += 2;
                break;
            }
            cu_rope(bk, o->rope.x, o->rope.n, o->rope.heads, o->rope.head_dim, o->rope.r,
                    o->rope.pos);
            break;
        case OP_KV:
            cu_kv_store(bk, o->kv.k, o->kv.v, o->kv.n, o->kv.kv_dim, o->kv.slot, o->kv.k_cache,
                        o->kv.v_cache);
            break;
        case OP_ATT: {
            const be_attn_layout l = att_layout(o);
            cu_attention(bk, o->att.q, o->att.k_cache, o->att.v_cache, o->att.heads,
                         o->att.kv_heads, o->att.head_dim, o->att.scale, &l, o->att.out);
            break;
        }
        case OP_SILU:
            if (b->use_fuse && b->fuse_half && run_silu_gemm(b, t, i)) {
                i += 1;
                break;
            }
            cu_silu_mul(bk, o->silu.gate, o->silu.up, o->silu.n, o->silu.out);
            break;
        case OP_ADD:
            if (b->use_fuse) {
                const int k = run_add_rmsnorm(b, t, i);
                if (k > 0) {
                    i += k;
                    break;
                }
            }
            cu_add(bk, o->add.x, o->add.y, o->add.n);
            break;
        case OP_GATHER:
            cu_gather_rows(bk, o->gather.x, o->gather.cols, o->gather.rows, o->gather.n,
                           o->gather.out);
            break;
        }
    }
}

void cu_flush(cu_backend *b)
{
    b->recording = 0;
    tape *t = &b->cur;
    if (b->base.kept)
        goto done;
    if (b->step_rows > GEMV_MAX_N || !b->step_decode || !b->use_graph) {
        run_tape(b, t); /* cuBLAS GEMMs, prompt rows: not captured */
    } else if (b->gexec && tape_eq(t, &b->gtape)) {
        if (!CK(b, cudaGraphLaunch(b->gexec, b->stream)))
            b->graph_launches++;
    } else if (tape_eq(t, &b->last)) {
        cudaGraph_t g = NULL;
        if (CK(b, cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeRelaxed)))
            goto done;
        run_tape(b, t);
        cudaError_t rc = cudaStreamEndCapture(b->stream, &g);
        if (cuda_fail(b, "cudaStreamEndCapture", rc) || b->base.kept) {
            if (g)
                cudaGraphDestroy(g);
            goto done;
        }
        if (b->gexec)
            CK(b, cudaGraphExecDestroy(b->gexec));
        b->gexec = NULL;
        b->gtape.n = 0;
        rc = cudaGraphInstantiate(&b->gexec, g, 0);
        cudaGraphDestroy(g);
        if (cuda_fail(b, "cudaGraphInstantiate", rc)) {
            b->gexec = NULL;
            goto done;
        }
        if (tape_copy(b, &b->gtape, t))
            goto done;
        if (!CK(b, cudaGraphLaunch(b->gexec, b->stream))) {
            b->graph_captures++;
            b->graph_launches++;
        }
    } else {
        run_tape(b, t);
    }
done:;
    tape tmp = b->last; /* this step becomes the one before */
    b->last = b->cur;
    b->cur = tmp;
    b->cur.n = 0;
}

/* ---- a step's start and end ---- */

const int32_t *cu_dev_idx(cu_backend *b, const int32_t *host)
{
    for (int i = 0; i < b->n_map; i++)
        if (b->map[i].host == host)
            return b->map[i].dev;
    /* a recorded op (see cu_flush) holds the device copy itself */
    uintptr_t h = (uintptr_t)host, d = (uintptr_t)b->d_stage;
    if (b->d_stage && h >= d && h < d + b->stage_cap * sizeof(int32_t))
        return host;
    fail_msg(b, "cuda backend: an index array was used that begin_step did not upload");
    return NULL;
}

/* The least lo * 2^k that is >= v: a size that stays the same while v grows. */
static int pow2_bucket(int lo, int v)
{
    while (lo < v)
        lo *= 2;
    return lo;
}

/* Packs the step's index arrays (and the prefill tile lists derived from
 * q_start) into pinned memory and sends them in one copy. */
int cu_begin_step(be_backend *bk, const be_step *st, inferd_error *e)
{
    cu_backend *b = cu_of(bk);
    const be_attn_layout *l = st->layout;
    b->recording = 0; /* a step that ended before to_host leaves its tape */
    b->cur.n = 0;
    if (report(b, e))
        return -1;
    /* The current device is per host thread, and the engine steps from its own. */
    if (CK(b, cudaSetDevice(b->device)))
        return report(b, e);
    if (b->up_buf[0])
        cu_upload_done(b); /* the model is loaded */
    int n_tiles = 0, n_tiles64 = 0, n_ptiles64 = 0, n_drows = 0, decode_only = 1;
    for (int s = 0; s < l->n_seqs; s++) {
        int rows = l->q_start[s + 1] - l->q_start[s];
        n_tiles += (rows + ATT_BQ - 1) / ATT_BQ;
        n_tiles64 += (rows + FA_BQ - 1) / FA_BQ;
        n_ptiles64 += rows > 1 ? (rows + FA_BQ - 1) / FA_BQ : 0;
        n_drows += rows == 1;
        decode_only &= rows <= 1;
    }
    struct {
        const int32_t *host;
        size_t n;
    } arr[] = {
        {st->tokens, (size_t)l->n_tokens},
        {l->pos, (size_t)l->n_tokens},
        {l->slot, (size_t)l->n_tokens},
        {l->q_start, (size_t)l->n_seqs + 1},
        {l->ctx_len, (size_t)l->n_seqs},
        {l->block_table, (size_t)l->n_seqs * (size_t)l->max_blocks},
        {st->logit_rows, (size_t)st->n_logits},
    };
    const int n_arr = (int)(sizeof arr / sizeof arr[0]);
    size_t total = 2 * (size_t)n_tiles + 2 * (size_t)n_tiles64 + 2 * (size_t)n_ptiles64 +
                   (size_t)n_drows;
    for (int i = 0; i < n_arr; i++)
        total += arr[i].host ? arr[i].n : 0;
    if (total > b->stage_cap) {
        size_t cap = total * 2 > 4096 ? total * 2 : 4096;
        if (CK(b, cudaStreamSynchronize(b->stream)))
            return report(b, e);
        if (CK(b, cudaFreeHost(b->h_stage)) || CK(b, cudaFree(b->d_stage)))
            return report(b, e);
        b->h_stage = b->d_stage = NULL;
        b->stage_cap = 0;
        b->gen++;
        if (CK(b, cudaHostAlloc((void **)&b->h_stage, cap * sizeof(int32_t),
                                cudaHostAllocDefault)) ||
            CK(b, cudaMalloc((void **)&b->d_stage, cap * sizeof(int32_t))))
            return report(b, e);
        b->stage_cap = cap;
    } else if (CK(b, cudaEventSynchronize(b->stage_done))) { /* last copy has read it */
        return report(b, e);
    }
    size_t off = 0;
    b->n_map = 0;
    for (int i = 0; i < n_arr; i++) {
        if (!arr[i].host)
            continue;
        memcpy(b->h_stage + off, arr[i].host, arr[i].n * sizeof(int32_t));
        b->map[b->n_map].host = arr[i].host;
        b->map[b->n_map].dev = b->d_stage + off;
        b->n_map++;
        off += arr[i].n;
    }
    b->n_tiles = decode_only ? 0 : n_tiles;
    int max_keys = 1;
    for (int t = 0; t < l->n_tokens; t++)
        max_keys = l->pos[t] + 1 > max_keys ? l->pos[t] + 1 : max_keys;
    /* Rounded up to a power of two: the split-KV count follows it and is part
     * of a recorded step, so decode steps keep one CUDA graph while their
     * contexts grow (each split finds its keys from the row's own length). */
    b->max_keys = pow2_bucket(64, max_keys);
    b->d_tiles = b->d_stage + off;
    for (int s = 0; s < l->n_seqs && !decode_only; s++)
        for (int r = l->q_start[s]; r < l->q_start[s + 1]; r += ATT_BQ) {
            b->h_stage[off++] = s;
            b->h_stage[off++] = r;
        }
    b->n_tiles64 = decode_only ? 0 : n_tiles64;
    b->d_tiles64 = b->d_stage + off;
    for (int s = 0; s < l->n_seqs && !decode_only; s++)
        for (int r = l->q_start[s]; r < l->q_start[s + 1]; r += FA_BQ) {
            b->h_stage[off++] = s;
            b->h_stage[off++] = r;
        }
    b->n_ptiles64 = decode_only ? 0 : n_ptiles64;
    b->d_ptiles64 = b->d_stage + off;
    for (int s = 0; s < l->n_seqs && !decode_only; s++)
        for (int r = l->q_start[s]; l->q_start[s + 1] - l->q_start[s] > 1 && r < l->q_start[s + 1];
             r += FA_BQ) {
            b->h_stage[off++] = s;
            b->h_stage[off++] = r;
        }
    b->n_drows = decode_only ? 0 : n_drows;
    b->d_drows = b->d_stage + off;
    for (int s = 0; s < l->n_seqs && !decode_only; s++)
        if (l->q_start[s + 1] - l->q_start[s] == 1)
            b->h_stage[off++] = l->q_start[s];
    prof_begin(b);
    if (CK(b, cudaMemcpyAsync(b->d_stage, b->h_stage, off * sizeof(int32_t),
                              cudaMemcpyHostToDevice, b->stream)) ||
        CK(b, cudaEventRecord(b->stage_done, b->stream)))
        return report(b, e);
    prof_end(b, P_UPLOAD);
    b->step_rows = l->n_tokens;
    b->step_decode = decode_only;
    /* Steps over a KV cache are recorded (an encoder's are not: its own ops
     * in encoder.cu run as they are called) */
    if ((b->use_graph || b->use_fuse) && !b->profile && l->block_table) {
        b->recording = 1;
        for (int i = 0; i < b->n_map; i += MAX_MAPS) {
            tape_op *o = cu_record(b, OP_KEY);
            if (!o)
                return report(b, e);
            for (int j = 0; j < MAX_MAPS && i + j < b->n_map; j++)
                o->key.dev[j] = b->map[i + j].dev; /* host arrays may move; their copies may not */
            o->key.gen = b->gen;
            o->key.max_keys = b->max_keys;
            o->key.n_map = b->n_map;
            o->key.first = i;
        }
    }
    return 0;
}

int cu_to_host(be_backend *bk, void *dst, const void *src, size_t bytes, inferd_error *e)
{
    cu_backend *b = cu_of(bk);
    if (b->recording)
        cu_flush(b);
    if (!b->base.kept && bytes)
        CK(b, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, b->stream));
    if (!b->base.kept)
        CK(b, cudaStreamSynchronize(b->stream));
    return report(b, e);
}
