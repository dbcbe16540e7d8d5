/* backend/cuda/attention.cu: the attention op — which kernel serves a step's
 * rows. Decode rows (one query row of a sequence) go to the decode kernels
 * (attn_decode.cu), prompt rows to the prefill kernels (attn_prefill.cu); a
 * step that carries both sends each kind of row to its own kernel. Every
 * kernel reads the paged KV cache through the block tables. No kernels
 * live here. */
#include "backend/cuda/attention.cuh"
#include "backend/cuda/attn_decode.cuh"
#include "backend/cuda/attn_prefill.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/tape.cuh"

#define MAX_HEAD_DIM 256

void cu_attention(be_backend *bk, const float *q, const float *k_cache, const float *v_cache,
                  int heads, int kv_heads, int head_dim, float scale, const be_attn_layout *l,
                  float *out)
{
    cu_backend *b = cu_of(bk);
    if (b->recording) {
        tape_op *o = cu_record(b, OP_ATT);
        if (o) {
            o->att.q = q;
            o->att.k_cache = k_cache;
            o->att.v_cache = v_cache;
            o->att.out = out;
            o->att.q_start = cu_dev_idx(b, l->q_start);
            o->att.block_table = cu_dev_idx(b, l->block_table);
            o->att.pos = cu_dev_idx(b, l->pos);
            o->att.heads = heads;
            o->att.kv_heads = kv_heads;
            o->att.head_dim = head_dim;
            o->att.n_tokens = l->n_tokens;
            o->att.n_seqs = l->n_seqs;
            o->att.max_blocks = l->max_blocks;
            o->att.block_size = l->block_size;
            o->att.scale = scale;
        }
        return;
    }
    if (b->base.kept || l->n_tokens <= 0)
        return;
    if (head_dim > MAX_HEAD_DIM || kv_heads <= 0 || heads % kv_heads) {
        fail_msg(b, "cuda backend: attention with head_dim %d, %d heads and %d KV heads is "
                    "not supported (head_dim <= %d, heads a multiple of KV heads)",
                 head_dim, heads, kv_heads, MAX_HEAD_DIM);
        return;
    }
    const int hd = head_dim;
    const void *kc = k_cache, *vc = v_cache;
    const int32_t *qs = cu_dev_idx(b, l->q_start), *btab = cu_dev_idx(b, l->block_table),
                  *pos = cu_dev_idx(b, l->pos);
    if (b->base.kept)
        return;
    const int tile_ok = cu_decode_tile_ok(b, heads, kv_heads, hd);
    if (b->n_tiles == 0 && tile_ok) {
        cu_decode_tile(b, q, kc, vc, heads, kv_heads, hd, scale, l, NULL, l->n_tokens, out, NULL);
        return;
    }
    if (b->n_tiles > 0 && tile_ok && cu_prefill_mma_ok(b, hd)) {
        /* a mixed step: prompt rows by tiles, decode rows by the decode kernel
         * (a one-row tile would read the whole context once per query head) */
        cu_prefill_mma(b, q, kc, vc, heads, kv_heads, hd, scale, l, b->d_ptiles64, b->n_ptiles64,
                       out);
        if (b->n_drows > 0)
            cu_decode_tile(b, q, kc, vc, heads, kv_heads, hd, scale, l, b->d_drows, b->n_drows,
                           out, NULL);
        return;
    }
    if (b->n_tiles == 0) {
        cu_attn_split(b, q, kc, vc, heads, kv_heads, hd, scale, l, qs, btab, pos, out);
        return;
    }
    if (cu_prefill_mma(b, q, kc, vc, heads, kv_heads, hd, scale, l, b->d_tiles64, b->n_tiles64,
                       out))
        return;
    cu_attn_prefill(b, q, kc, vc, heads, kv_heads, hd, scale, l, qs, btab, pos, out);
}
