/* engine/kv_manager.c: each request's block table and prefix hashes on top
 * of the block pool (kv_cache.c), as vLLM v1's KVCacheManager. The
 * scheduler asks it three things: which blocks of a prompt are cached at
 * admission, slots for the tokens of a step, and to take the blocks back
 * when a request finishes or is preempted; after a step it registers the
 * blocks that became full so that later prompts can share them. Nothing
 * else writes a request's block table. */
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

int kvm_init(kv_manager *m, int n_blocks, int block_size, int enable_caching,
             inferd_error *e)
{
    memset(m, 0, sizeof *m);
    if (kv_init(&m->pool, n_blocks, block_size, e))
        return -1;
    m->block_size = block_size;
    m->enable_caching = enable_caching;
    return 0;
}

void kvm_free(kv_manager *m)
{
    kv_free(&m->pool);
    memset(m, 0, sizeof *m);
}

static int blocks_for(int n_tokens, int block_size)
{
    return (n_tokens + block_size - 1) / block_size;
}

int kvm_seq_init(kvm_seq *q, int block_size, int max_tokens)
{
    memset(q, 0, sizeof *q);
    q->cap = blocks_for(max_tokens, block_size);
    q->blocks = malloc((size_t)q->cap * sizeof *q->blocks);
    q->hashes = malloc((size_t)q->cap * sizeof *q->hashes);
    if (!q->blocks || !q->hashes) {
        kvm_seq_free(q);
        return -1;
    }
    return 0;
}

void kvm_seq_free(kvm_seq *q)
{
    free(q->blocks);
    free(q->hashes);
    memset(q, 0, sizeof *q);
}

int kvm_get_computed_blocks(kv_manager *m, kvm_seq *q, const int32_t *tokens, int n_tokens)
{
    if (!m->enable_caching)
        return 0;
    int hit = kv_match(&m->pool, tokens, (n_tokens - 1) / m->block_size, q->blocks, q->hashes);
    q->n_blocks = q->n_hashed = hit;
    return hit * m->block_size;
}

int kvm_allocate_slots(kv_manager *m, kvm_seq *q, int n_tokens)
{
    int need = blocks_for(n_tokens, m->block_size) - q->n_blocks;
    if (need <= 0)
        return 0;
    if (kv_alloc(&m->pool, need, q->blocks + q->n_blocks))
        return -1;
    q->n_blocks += need;
    return 0;
}

void kvm_cache_blocks(kv_manager *m, kvm_seq *q, const int32_t *tokens, int n_computed)
{
    if (!m->enable_caching)
        return;
    int bs = m->block_size;
    while ((q->n_hashed + 1) * bs <= n_computed) {
        int i = q->n_hashed;
        uint64_t parent = i ? q->hashes[i - 1] : KV_ROOT_HASH;
        const int32_t *t = tokens + (size_t)i * bs;
        q->hashes[i] = kv_hash(parent, t, bs);
        kv_commit(&m->pool, q->blocks[i], q->hashes[i], parent, t);
        q->n_hashed++;
    }
}

void kvm_release(kv_manager *m, kvm_seq *q)
{
    kv_release(&m->pool, q->blocks, q->n_blocks);
    q->n_blocks = q->n_hashed = 0;
}
