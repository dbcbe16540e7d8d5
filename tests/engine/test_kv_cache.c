/* engine block pool: reference counts, prefix matching by chained hashes,
 * LRU eviction order, and that a hash collision never shares KV. Token
 * lists only, no model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

#define BS 4

/* Fills blocks ids[0..n) as a sequence would: each full block committed
 * under the hash chained from the previous one. */
static void commit_seq(kv_cache *c, const int32_t *tok, const int32_t *ids, int n)
{
    uint64_t parent = KV_ROOT_HASH;
    for (int i = 0; i < n; i++) {
        uint64_t h = kv_hash(parent, tok + i * BS, BS);
        kv_commit(c, ids[i], h, parent, tok + i * BS);
        parent = h;
    }
}

static void test_alloc_release(void **state)
{
    (void)state;
    kv_cache c;
    inferd_error e = {{0}};
    assert_int_equal(kv_init(&c, 6, BS, &e), 0);
    int32_t a[6], b[6];
    assert_int_equal(kv_alloc(&c, 4, a), 0);
    assert_int_equal(c.n_free, 2);
    assert_int_equal(kv_alloc(&c, 3, b), -1); /* all or nothing */
    assert_int_equal(c.n_free, 2);
    assert_int_equal(kv_alloc(&c, 2, b), 0);
    assert_int_equal(c.n_free, 0);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            assert_int_not_equal(a[i], b[j]);
    kv_release(&c, a, 4);
    kv_release(&c, b, 2);
    assert_int_equal(c.n_free, 6);
    assert_int_equal(c.n_cached, 0);
    kv_free(&c);
}

static void test_prefix_match(void **state)
{
    (void)state;
    kv_cache c;
    inferd_error e = {{0}};
    assert_int_equal(kv_init(&c, 8, BS, &e), 0);
    int32_t tok[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    int32_t ids[3], got[3];
    uint64_t hs[3];
    assert_int_equal(kv_alloc(&c, 3, ids), 0);
    commit_seq(&c, tok, ids, 3);
    /* shared while the first holder still runs: references add up */
    assert_int_equal(kv_match(&c, tok, 3, got, hs), 3);
    assert_memory_equal(got, ids, sizeof ids);
    assert_int_equal(c.b[ids[0]].ref, 2);
    assert_true(hs[0] == kv_hash(KV_ROOT_HASH, tok, BS));
    assert_true(hs[1] == kv_hash(hs[0], tok + 4, BS));
    kv_release(&c, got, 3);
    /* max_blocks caps the match */
    assert_int_equal(kv_match(&c, tok, 2, got, hs), 2);
    kv_release(&c, got, 2);
    /* a different second block stops the match after the first */
    int32_t t2[12];
    memcpy(t2, tok, sizeof tok);
    t2[5] = 99;
    assert_int_equal(kv_match(&c, t2, 3, got, hs), 1);
    kv_release(&c, got, 1);
    /* same second block behind a different first block: no match at all,
     * and not even the second block alone (hashes chain the prefix) */
    int32_t t3[12];
    memcpy(t3, tok, sizeof tok);
    t3[0] = 42;
    assert_int_equal(kv_match(&c, t3, 3, got, hs), 0);
    /* freed blocks stay findable */
    kv_release(&c, ids, 3);
    assert_int_equal(c.n_free, 8);
    assert_int_equal(c.n_cached, 3);
    assert_int_equal(kv_match(&c, tok, 3, got, hs), 3);
    assert_int_equal(c.n_free, 5);
    assert_int_equal(c.n_cached, 0);
    kv_release(&c, got, 3);
    kv_free(&c);
}

/* Blocks holding nothing reusable are taken before cached ones; cached
 * ones are evicted oldest first, a sequence's tail before its head. */
static void test_eviction_order(void **state)
{
    (void)state;
    kv_cache c;
    inferd_error e = {{0}};
    assert_int_equal(kv_init(&c, 6, BS, &e), 0);
    int32_t ta[8] = {1, 1, 1, 1, 2, 2, 2, 2}, tb[8] = {3, 3, 3, 3, 4, 4, 4, 4};
    int32_t a[2], b[2], x[2], got[2];
    uint64_t hs[2];
    assert_int_equal(kv_alloc(&c, 2, a), 0);
    assert_int_equal(kv_alloc(&c, 2, b), 0);
    commit_seq(&c, ta, a, 2);
    commit_seq(&c, tb, b, 2);
    kv_release(&c, a, 2); /* a freed first: older */
    kv_release(&c, b, 2);
    /* two uncached blocks remain: they go first, nothing is evicted */
    assert_int_equal(kv_alloc(&c, 2, x), 0);
    assert_int_equal(c.n_cached, 4);
    /* the next takes a's tail, then a's head */
    int32_t y;
    assert_int_equal(kv_alloc(&c, 1, &y), 0);
    assert_int_equal(y, a[1]);
    assert_int_equal(kv_match(&c, ta, 2, got, hs), 1);
    kv_release(&c, got, 1);
    assert_int_equal(kv_match(&c, tb, 2, got, hs), 2);
    kv_release(&c, got, 2);
    /* matching b touched it: a's head is now the oldest */
    int32_t z;
    assert_int_equal(kv_alloc(&c, 1, &z), 0);
    assert_int_equal(z, a[0]);
    assert_int_equal(kv_match(&c, ta, 2, got, hs), 0);
    assert_int_equal(c.b[y].hashed, 0);
    kv_release(&c, x, 2);
    kv_release(&c, &y, 1);
    kv_release(&c, &z, 1);
    assert_int_equal(c.n_free, 6);
    kv_free(&c);
}

/* A block registered under a hash that another token list also produces
 * (a collision, forced here) is not handed out for that other list. */
static void test_collision_safe(void **state)
{
    (void)state;
    kv_cache c;
    inferd_error e = {{0}};
    assert_int_equal(kv_init(&c, 4, BS, &e), 0);
    int32_t x[BS] = {1, 2, 3, 4}, y[BS] = {5, 6, 7, 8}, id, got[1];
    uint64_t hs[1];
    assert_int_equal(kv_alloc(&c, 1, &id), 0);
    kv_commit(&c, id, kv_hash(KV_ROOT_HASH, y, BS), KV_ROOT_HASH, x);
    assert_int_equal(kv_match(&c, y, 1, got, hs), 0);
    /* registering the same content twice keeps the first block */
    int32_t id2;
    assert_int_equal(kv_alloc(&c, 1, &id2), 0);
    uint64_t hx = kv_hash(KV_ROOT_HASH, x, BS);
    kv_commit(&c, id2, hx, KV_ROOT_HASH, x);
    int32_t id3;
    assert_int_equal(kv_alloc(&c, 1, &id3), 0);
    kv_commit(&c, id3, hx, KV_ROOT_HASH, x);
    assert_int_equal(c.b[id3].hashed, 0);
    assert_int_equal(kv_match(&c, x, 1, got, hs), 1);
    assert_int_equal(got[0], id2);
    kv_release(&c, got, 1);
    kv_release(&c, &id, 1);
    kv_release(&c, &id2, 1);
    kv_release(&c, &id3, 1);
    kv_free(&c);
}

/* Random workload against a simple model of the pool: references never
 * go negative, free + held always add up, matches return the right
 * content. */
static void test_random_workload(void **state)
{
    (void)state;
    enum { NB = 32, NS = 6, MAXB = 8 };
    kv_cache c;
    inferd_error e = {{0}};
    assert_int_equal(kv_init(&c, NB, BS, &e), 0);
    int32_t held[NS][MAXB], nheld[NS] = {0}, tok[NS][MAXB * BS];
    uint32_t rnd = 1;
    for (int step = 0; step < 5000; step++) {
        rnd = rnd * 1103515245u + 12345u;
        int s = (int)((rnd >> 8) % NS);
        if (nheld[s]) {
            kv_release(&c, held[s], nheld[s]);
            nheld[s] = 0;
            continue;
        }
        int nb = 1 + (int)((rnd >> 16) % MAXB);
        /* a small token alphabet so prefixes repeat */
        for (int i = 0; i < nb * BS; i++) {
            rnd = rnd * 1103515245u + 12345u;
            tok[s][i] = (i < BS * 2) ? (int32_t)((rnd >> 20) % 2) : (int32_t)((rnd >> 12) % 5);
        }
        uint64_t hs[MAXB];
        int hit = kv_match(&c, tok[s], nb, held[s], hs);
        for (int i = 0; i < hit; i++)
            assert_memory_equal(c.tok + (size_t)held[s][i] * BS, tok[s] + i * BS,
                                BS * sizeof(int32_t));
        if (kv_alloc(&c, nb - hit, held[s] + hit)) {
            kv_release(&c, held[s], hit);
            continue;
        }
        nheld[s] = nb;
        commit_seq(&c, tok[s], held[s], nb);
        int refs = 0;
        for (int i = 0; i < NB; i++) {
            assert_true(c.b[i].ref >= 0);
            assert_true((c.b[i].ref == 0) == c.b[i].in_free);
            refs += c.b[i].ref > 0;
        }
        assert_int_equal(refs + c.n_free, NB);
    }
    for (int s = 0; s < NS; s++)
        kv_release(&c, held[s], nheld[s]);
    assert_int_equal(c.n_free, NB);
    kv_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_release),
        cmocka_unit_test(test_prefix_match),
        cmocka_unit_test(test_eviction_order),
        cmocka_unit_test(test_collision_safe),
        cmocka_unit_test(test_random_workload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
