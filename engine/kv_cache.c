/* engine/kv_cache.c: the block pool. Blocks of block_size tokens, reference
 * counted; full blocks are registered under a hash chained from their
 * parent block so that a prompt sharing a prefix with an earlier one reuses
 * its KV (automatic prefix caching, as vLLM's BlockPool). Lookups compare
 * the stored tokens and parent hash too, so a hash collision can never hand
 * out the wrong KV. */
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

int kv_init(kv_cache *c, int n_blocks, int block_size, inferd_error *e)
{
    memset(c, 0, sizeof *c);
    c->n_bucket = 64;
    while (c->n_bucket < n_blocks)
        c->n_bucket <<= 1;
    c->b = calloc((size_t)n_blocks, sizeof *c->b);
    c->tok = malloc((size_t)n_blocks * (size_t)block_size * sizeof *c->tok);
    c->bucket = malloc((size_t)c->n_bucket * sizeof *c->bucket);
    if (!c->b || !c->tok || !c->bucket) {
        err_set(e, "out of memory for a block table of %d blocks", n_blocks);
        kv_free(c);
        return -1;
    }
    c->n_blocks = n_blocks;
    c->block_size = block_size;
    for (int i = 0; i < c->n_bucket; i++)
        c->bucket[i] = -1;
    for (int i = 0; i < n_blocks; i++) {
        c->b[i].prev = i - 1;
        c->b[i].next = i + 1 < n_blocks ? i + 1 : -1;
        c->b[i].in_free = 1;
        c->b[i].hnext = -1;
    }
    c->free_head = n_blocks ? 0 : -1;
    c->free_tail = n_blocks - 1;
    c->n_free = n_blocks;
    return 0;
}

void kv_free(kv_cache *c)
{
    free(c->b);
    free(c->tok);
    free(c->bucket);
    memset(c, 0, sizeof *c);
}

/* FNV-1a over the parent hash and the token ids, then a final mix so the
 * low bits (the bucket) depend on every input byte. */
uint64_t kv_hash(uint64_t parent, const int32_t *tokens, int block_size)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 8; i++) {
        h ^= (parent >> (8 * i)) & 0xff;
        h *= 0x100000001b3ull;
    }
    for (int t = 0; t < block_size; t++) {
        uint32_t v = (uint32_t)tokens[t];
        for (int i = 0; i < 4; i++) {
            h ^= (v >> (8 * i)) & 0xff;
            h *= 0x100000001b3ull;
        }
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static void free_unlink(kv_cache *c, int id)
{
    kv_block *b = &c->b[id];
    if (b->prev >= 0)
        c->b[b->prev].next = b->next;
    else
        c->free_head = b->next;
    if (b->next >= 0)
        c->b[b->next].prev = b->prev;
    else
        c->free_tail = b->prev;
    b->prev = b->next = -1;
    b->in_free = 0;
    c->n_free--;
    if (b->hashed)
        c->n_cached--;
}

/* Cached blocks go to the tail (evicted last); blocks holding nothing
 * reusable go to the head, to be taken first. */
static void free_push(kv_cache *c, int id)
{
    kv_block *b = &c->b[id];
    b->in_free = 1;
    c->n_free++;
    if (b->hashed) {
        c->n_cached++;
        b->next = -1;
        b->prev = c->free_tail;
        if (c->free_tail >= 0)
            c->b[c->free_tail].next = id;
        else
            c->free_head = id;
        c->free_tail = id;
    } else {
        b->prev = -1;
        b->next = c->free_head;
        if (c->free_head >= 0)
            c->b[c->free_head].prev = id;
        else
            c->free_tail = id;
        c->free_head = id;
    }
}

static void table_remove(kv_cache *c, int id)
{
    kv_block *b = &c->b[id];
    int *p = &c->bucket[b->hash & (uint64_t)(c->n_bucket - 1)];
    while (*p != id)
        p = &c->b[*p].hnext;
    *p = b->hnext;
    b->hnext = -1;
    b->hashed = 0;
}

static int table_find(const kv_cache *c, uint64_t hash, uint64_t parent,
                      const int32_t *tokens)
{
    int id = c->bucket[hash & (uint64_t)(c->n_bucket - 1)];
    for (; id >= 0; id = c->b[id].hnext) {
        const kv_block *b = &c->b[id];
        if (b->hash == hash && b->parent == parent &&
            !memcmp(c->tok + (size_t)id * c->block_size, tokens,
                    (size_t)c->block_size * sizeof *tokens))
            return id;
    }
    return -1;
}

int kv_match(kv_cache *c, const int32_t *tokens, int max_blocks, int32_t *ids,
             uint64_t *hashes)
{
    uint64_t parent = KV_ROOT_HASH;
    int n = 0;
    for (; n < max_blocks; n++) {
        const int32_t *t = tokens + (size_t)n * c->block_size;
        uint64_t h = kv_hash(parent, t, c->block_size);
        int id = table_find(c, h, parent, t);
        if (id < 0)
            break;
        if (c->b[id].in_free)
            free_unlink(c, id);
        c->b[id].ref++;
        ids[n] = id;
        hashes[n] = h;
        parent = h;
    }
    return n;
}

int kv_alloc(kv_cache *c, int n, int32_t *ids)
{
    if (n > c->n_free)
        return -1;
    for (int i = 0; i < n; i++) {
        int id = c->free_head;
        free_unlink(c, id);
        if (c->b[id].hashed) /* eviction: its prefix is forgotten */
            table_remove(c, id);
        c->b[id].ref = 1;
        ids[i] = id;
    }
    return 0;
}

void kv_release(kv_cache *c, const int32_t *ids, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        kv_block *b = &c->b[ids[i]];
        if (--b->ref == 0)
            free_push(c, ids[i]);
    }
}

void kv_commit(kv_cache *c, int id, uint64_t hash, uint64_t parent, const int32_t *tokens)
{
    kv_block *b = &c->b[id];
    if (b->hashed || table_find(c, hash, parent, tokens) >= 0)
        return;
    b->hash = hash;
    b->parent = parent;
    b->hashed = 1;
    memcpy(c->tok + (size_t)id * c->block_size, tokens,
           (size_t)c->block_size * sizeof *tokens);
    int *head = &c->bucket[hash & (uint64_t)(c->n_bucket - 1)];
    b->hnext = *head;
    *head = id;
}
