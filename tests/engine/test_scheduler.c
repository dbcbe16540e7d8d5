/* engine scheduler and KV manager without a model: requests are token
 * lists, the runner is faked (each sampling item "samples" a made-up
 * token) and a step costs a fixed overhead plus a price per token. Checks
 * the token budget, decodes before prefill chunks, max_num_seqs,
 * preemption of the newest request when blocks run out (and its
 * recomputation), prefix-cache hits, and cancellation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

#define BS 4
#define MAX_REQS 16

/* Fake step costs, in microseconds: what a CPU step of a tiny model
 * roughly costs, overhead and per token. */
#define STEP_US 500
#define TOKEN_US 20

/* A scheduler over a pool of n_blocks blocks, and the requests it got. */
typedef struct sim {
    kv_manager kv;
    sched_scheduler s;
    eng_stats st;
    int budget, max_seqs;
    long clock_us;                 /* fake time: the steps' costs summed */
    eng_request *req[MAX_REQS];
    long last_token_us[MAX_REQS];  /* when each request last got a token */
    long max_gap_us[MAX_REQS];     /* longest wait between two of its tokens */
    int n_req;
} sim;

static void sim_init(sim *m, int n_blocks, int budget, int max_seqs, int caching)
{
    memset(m, 0, sizeof *m);
    eng_config c;
    eng_config_defaults(&c);
    c.block_size = BS;
    c.max_num_batched_tokens = m->budget = budget;
    c.max_num_seqs = m->max_seqs = max_seqs;
    c.enable_prefix_caching = caching;
    inferd_error e = {{0}};
    assert_int_equal(kvm_init(&m->kv, n_blocks, BS, caching, &e), 0);
    assert_int_equal(sched_init(&m->s, &c, &m->kv, &m->st, &e), 0);
}

static void sim_free(sim *m)
{
    /* what is still live ends as the engine ends it at shutdown */
    const sched_output *o = sched_abort_all(&m->s);
    eng_event last = {.token = -1, .finish = ENG_FINISH_ABORT};
    for (int i = 0; i < o->n_finished; i++)
        req_finish(o->finished[i], &last);
    assert_int_equal(m->kv.pool.n_free, m->kv.pool.n_blocks);
    for (int i = 0; i < m->n_req; i++)
        eng_release(m->req[i]);
    sched_free(&m->s);
    kvm_free(&m->kv);
}

static int sim_index(const sim *m, const eng_request *r)
{
    for (int i = 0; i < m->n_req; i++)
        if (m->req[i] == r)
            return i;
    fail_msg("a request the test did not submit");
    return -1;
}

/* Submits a request of the given prompt; returns its index. */
static int sim_add(sim *m, const int32_t *prompt, int n_prompt, int max_tokens, int plp)
{
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.max_tokens = max_tokens;
    s.prompt_logprobs = plp;
    eng_request *r = req_new(prompt, n_prompt, &s, BS);
    assert_non_null(r);
    assert_int_equal(sched_reserve(&m->s, 1), 0);
    sched_add(&m->s, r);
    m->last_token_us[m->n_req] = -1;
    m->req[m->n_req] = r;
    return m->n_req++;
}

/* A prompt of n ids from seed (ids below 1000, so fake tokens differ). */
static void prompt_of(int32_t *p, int n, int seed)
{
    for (int i = 0; i < n; i++)
        p[i] = (int32_t)((seed * 131 + i * 7) % 1000);
}

/* One step: schedule, check the budget and the seats, then do what the
 * runner and output processing would: the step's tokens are computed,
 * every item that reached the end of its tokens gets token 1000 + its
 * output count, and requests at max_tokens finish. */
static const sched_output *sim_step(sim *m)
{
    const sched_output *o = sched_schedule(&m->s);
    eng_event last = {.token = -1, .finish = ENG_FINISH_ABORT};
    for (int i = 0; i < o->n_finished; i++)
        req_finish(o->finished[i], &last);
    int sum = 0;
    for (int i = 0; i < o->n_items; i++) {
        const sched_item *it = &o->items[i];
        assert_true(it->n_new > 0);
        assert_int_equal(it->start, it->r->n_computed);
        assert_true(it->start + it->n_new <= it->r->n_tokens);
        assert_int_equal(it->samples, it->start + it->n_new == it->r->n_tokens);
        /* the KV manager gave every scheduled token a slot */
        assert_true(it->r->kv.n_blocks * BS >= it->start + it->n_new);
        sum += it->n_new;
    }
    assert_int_equal(sum, o->n_tokens);
    assert_true(o->n_tokens <= m->budget);
    assert_true(m->s.n_running <= m->max_seqs);
    m->clock_us += STEP_US + (long)TOKEN_US * o->n_tokens;
    for (int i = 0; i < o->n_items; i++) { /* the runner's prompt logprobs */
        eng_request *r = o->items[i].r;
        if (o->items[i].all_rows && o->items[i].start + o->items[i].n_new >= r->n_prompt)
            r->plp_done = 1;
    }
    sched_update_from_output(&m->s, o);
    for (int i = 0; i < o->n_items; i++) {
        eng_request *r = o->items[i].r;
        if (!o->items[i].samples)
            continue;
        int k = sim_index(m, r), n_out = r->n_tokens - r->n_prompt;
        r->tokens[r->n_tokens++] = 1000 + n_out;
        if (m->last_token_us[k] >= 0 && m->clock_us - m->last_token_us[k] > m->max_gap_us[k])
            m->max_gap_us[k] = m->clock_us - m->last_token_us[k];
        m->last_token_us[k] = m->clock_us;
        if (n_out + 1 == r->s.max_tokens) {
            eng_event ev = {.token = 1000 + n_out, .finish = ENG_FINISH_LENGTH};
            sched_finish(&m->s, r);
            req_finish(r, &ev);
        }
    }
    return o;
}

static int done(const sim *m, int k) { return m->req[k]->done; }

/* Steps until every request finished; returns the number of steps. */
static int sim_run(sim *m, int max_steps)
{
    int steps = 0;
    while (m->s.n_running + m->s.n_waiting > 0) {
        assert_true(sim_step(m)->n_items > 0);
        assert_true(++steps <= max_steps);
    }
    return steps;
}

/* The token budget caps each step; a long prompt is cut into chunks and
 * the budget it leaves goes to the next request's prompt. */
static void test_token_budget(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 256, 64, 8, 0);
    int32_t p[100];
    for (int i = 0; i < 3; i++) {
        prompt_of(p, 100, i);
        sim_add(&m, p, 100, 2, 0);
    }
    const sched_output *o = sim_step(&m);
    assert_int_equal(o->n_items, 1);
    assert_ptr_equal(o->items[0].r, m.req[0]);
    assert_int_equal(o->items[0].n_new, 64);
    assert_false(o->items[0].samples);
    o = sim_step(&m); /* r0's last 36 prompt tokens, then 28 of r1's */
    assert_int_equal(o->n_items, 2);
    assert_int_equal(o->items[0].n_new, 36);
    assert_true(o->items[0].samples);
    assert_ptr_equal(o->items[1].r, m.req[1]);
    assert_int_equal(o->items[1].start, 0);
    assert_int_equal(o->items[1].n_new, 28);
    o = sim_step(&m); /* r0 decodes, r1 goes on with what is left */
    assert_int_equal(o->n_items, 2);
    assert_ptr_equal(o->items[0].r, m.req[0]);
    assert_int_equal(o->items[0].n_new, 1);
    assert_int_equal(o->items[1].start, 28);
    assert_int_equal(o->items[1].n_new, 63);
    assert_true(done(&m, 0));
    int steps = sim_run(&m, 20);
    assert_int_equal(steps, 3); /* 6 steps in all: 300 prompt tokens, 3 decodes */
    assert_int_equal(m.st.prompt_tokens, 300);
    assert_int_equal(m.st.preemptions, 0);
    sim_free(&m);
}

/* A running request that decodes goes before one in prefill, whatever
 * their admission order, so its next token never waits for a long
 * prompt: its tokens come one step apart, and a step costs no more than
 * a full budget. Prompt-logprob requests go in chunks of ENG_PLP_CHUNK. */
static void test_decodes_first(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 512, 256, 8, 0);
    int32_t p[900];
    prompt_of(p, 900, 1);
    int a = sim_add(&m, p, 900, 1, 1); /* admitted first, prefills for a while */
    prompt_of(p, 10, 2);
    int b = sim_add(&m, p, 10, 6, 0);
    const sched_output *o = sim_step(&m);
    assert_int_equal(o->n_items, 2);
    assert_ptr_equal(o->items[0].r, m.req[a]);
    assert_int_equal(o->items[0].n_new, ENG_PLP_CHUNK);
    assert_true(o->items[0].all_rows);
    assert_ptr_equal(o->items[1].r, m.req[b]);
    assert_int_equal(o->items[1].n_new, 10);
    for (int step = 0; step < 5; step++) {
        o = sim_step(&m);
        assert_int_equal(o->n_items, 2);
        assert_ptr_equal(o->items[0].r, m.req[b]);
        assert_int_equal(o->items[0].n_new, 1);
        assert_ptr_equal(o->items[1].r, m.req[a]);
        assert_int_equal(o->items[1].n_new, ENG_PLP_CHUNK);
    }
    assert_true(done(&m, b));
    assert_true(m.max_gap_us[b] <= STEP_US + TOKEN_US * m.budget);
    assert_int_equal(m.max_gap_us[b], STEP_US + TOKEN_US * (ENG_PLP_CHUNK + 1));
    sim_run(&m, 10);
    assert_true(m.req[a]->plp_done);
    sim_free(&m);
}

/* At most max_num_seqs run; the others wait their turn in order. */
static void test_max_num_seqs(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 256, 512, 2, 0);
    int32_t p[8];
    for (int i = 0; i < 4; i++) {
        prompt_of(p, 8, i);
        sim_add(&m, p, 8, 2 + i, 0);
    }
    const sched_output *o = sim_step(&m);
    assert_int_equal(o->n_items, 2);
    assert_ptr_equal(o->items[0].r, m.req[0]);
    assert_ptr_equal(o->items[1].r, m.req[1]);
    assert_int_equal(m.s.n_running, 2);
    assert_int_equal(m.s.n_waiting, 2);
    o = sim_step(&m); /* r0 finishes (max_tokens 2): its seat is free next step */
    assert_int_equal(o->n_items, 2);
    assert_true(done(&m, 0));
    o = sim_step(&m);
    assert_int_equal(o->n_items, 2);
    assert_ptr_equal(o->items[0].r, m.req[1]);
    assert_ptr_equal(o->items[1].r, m.req[2]);
    assert_int_equal(o->items[1].n_new, 8);
    assert_int_equal(m.s.n_waiting, 1);
    sim_run(&m, 20);
    sim_free(&m);
}

/* Blocks run out: the newest running request is preempted (its blocks
 * freed, back at the front of the queue, nobody admitted that step), and
 * later recomputes its prompt and the token it had generated. */
static void test_preempt_newest(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 6, 64, 8, 0); /* 6 blocks of 4 tokens */
    int32_t p[8];
    for (int i = 0; i < 4; i++) {
        prompt_of(p, 8, i);
        sim_add(&m, p, 8, 4, 0);
    }
    const sched_output *o = sim_step(&m); /* 3 prompts take the 6 blocks */
    assert_int_equal(o->n_items, 3);
    assert_int_equal(m.kv.pool.n_free, 0);
    /* r3 found no block: it took none and waits */
    assert_int_equal(m.req[3]->kv.n_blocks, 0);
    assert_int_equal(m.s.n_waiting, 1);
    o = sim_step(&m); /* r0 and r1 each need a third block */
    assert_int_equal(o->n_preempted, 1);
    assert_ptr_equal(o->preempted[0], m.req[2]);
    assert_int_equal(o->n_items, 2);
    assert_ptr_equal(o->items[0].r, m.req[0]);
    assert_ptr_equal(o->items[1].r, m.req[1]);
    assert_int_equal(m.st.preemptions, 1);
    assert_int_equal(m.req[2]->kv.n_blocks, 0);
    assert_int_equal(m.req[2]->n_computed, 0);
    assert_int_equal(m.req[2]->n_tokens, 9); /* its generated token is kept */
    assert_int_equal(m.s.n_waiting, 2);
    assert_ptr_equal(m.s.waiting[0], m.req[2]); /* front of the queue */
    assert_int_equal(m.kv.pool.n_free, 0);
    int saw_recompute = 0;
    while (m.s.n_running + m.s.n_waiting > 0) {
        o = sim_step(&m);
        for (int i = 0; i < o->n_items; i++)
            if (o->items[i].r == m.req[2] && o->items[i].start == 0) {
                assert_int_equal(o->items[i].n_new, 9);
                assert_true(o->items[i].samples);
                saw_recompute = 1;
            }
    }
    assert_true(saw_recompute);
    for (int i = 0; i < 4; i++) {
        assert_true(done(&m, i));
        assert_int_equal(m.req[i]->n_tokens, 12);
    }
    /* first admissions only: a recomputed prompt is not counted again */
    assert_int_equal(m.st.prompt_tokens, 32);
    sim_free(&m);
}

/* A prefill chunk that finds too few blocks, when only decodes already in
 * the batch are newer, waits a step with its blocks instead of preempting
 * itself; and while the pool is short nobody new is admitted, even a
 * prompt that would fit. */
static void test_prefill_waits(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 6, 12, 8, 0);
    int32_t p[20];
    prompt_of(p, 20, 4);
    int dec = sim_add(&m, p, 4, 10, 0);
    int pre = sim_add(&m, p, 20, 2, 0);
    int w = sim_add(&m, p, 3, 1, 0);
    const sched_output *o = sim_step(&m); /* dec's 4 tokens and 8 of pre's */
    assert_int_equal(o->n_items, 2);
    assert_int_equal(m.kv.pool.n_free, 3);
    o = sim_step(&m); /* pre's next 11 tokens need 3 blocks; 2 are left */
    assert_int_equal(o->n_items, 1);
    assert_ptr_equal(o->items[0].r, m.req[dec]);
    assert_int_equal(o->n_preempted, 0);
    assert_int_equal(m.req[pre]->kv.n_blocks, 2); /* kept */
    assert_int_equal(m.req[pre]->n_computed, 8);
    assert_int_equal(m.kv.pool.n_free, 2);
    assert_int_equal(m.s.n_waiting, 1); /* w would fit, but waits */
    assert_ptr_equal(m.s.waiting[0], m.req[w]);
    sim_run(&m, 30);
    assert_int_equal(m.st.preemptions, 0);
    sim_free(&m);
}

/* Full blocks of finished and running requests are found again: a prompt
 * sharing them starts past them, counted as hits; the last token is always
 * computed; a different first block matches nothing. */
static void test_prefix_hits(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 32, 64, 8, 1);
    int32_t p[12];
    prompt_of(p, 12, 5);
    sim_add(&m, p, 10, 1, 0);
    sim_run(&m, 2);
    assert_int_equal(m.kv.pool.n_cached, 2); /* tokens 0..7 in two full blocks */
    p[8] = 77;
    p[9] = 78;
    int b = sim_add(&m, p, 12, 3, 0);
    const sched_output *o = sim_step(&m);
    assert_int_equal(o->items[0].start, 8);
    assert_int_equal(o->items[0].n_new, 4);
    assert_int_equal(m.req[b]->num_cached, 8);
    /* while b runs, a prompt of exactly its first 8 tokens: one block
     * comes from the cache, the second is recomputed for its logits */
    int c = sim_add(&m, p, 8, 2, 0);
    o = sim_step(&m);
    assert_ptr_equal(o->items[1].r, m.req[c]);
    assert_int_equal(o->items[1].start, 4);
    assert_int_equal(m.kv.pool.b[m.req[c]->kv.blocks[0]].ref, 2); /* shared with b */
    p[0] = 999;
    int d = sim_add(&m, p, 8, 1, 0);
    o = sim_step(&m);
    assert_ptr_equal(o->items[o->n_items - 1].r, m.req[d]);
    assert_int_equal(o->items[o->n_items - 1].start, 0);
    sim_run(&m, 5);
    assert_int_equal(m.st.prefix_queries, 10 + 12 + 8 + 8);
    assert_int_equal(m.st.prefix_hits, 0 + 8 + 4 + 0);
    sim_free(&m);
}

/* A prompt-logprob request skips the cache (it needs every row's logits)
 * and a preempted request's blocks stay cached for its recomputation. */
static void test_prefix_skip_and_preempt(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 32, 64, 8, 1);
    int32_t p[12];
    prompt_of(p, 12, 9);
    sim_add(&m, p, 12, 1, 0);
    sim_run(&m, 2);
    int a = sim_add(&m, p, 12, 1, 1);
    const sched_output *o = sim_step(&m);
    assert_int_equal(o->items[0].start, 0);
    assert_true(o->items[0].all_rows);
    assert_int_equal(m.req[a]->num_cached, 0);
    sim_run(&m, 2);
    assert_int_equal(m.st.prefix_queries, 12); /* the plp request asked nothing */

    /* two prompts of two blocks in a pool of five: the newer one, r1,
     * finds no third block and preempts itself */
    sim m2;
    sim_init(&m2, 5, 64, 8, 1);
    for (int i = 0; i < 2; i++) {
        prompt_of(p, 8, 20 + i);
        sim_add(&m2, p, 8, 4, 0);
    }
    sim_step(&m2);
    o = sim_step(&m2);
    assert_int_equal(o->n_preempted, 1);
    assert_ptr_equal(o->preempted[0], m2.req[1]);
    assert_int_equal(m2.kv.pool.n_cached, 2); /* its prompt's blocks */
    int back = 0;
    while (m2.s.n_running + m2.s.n_waiting > 0) {
        o = sim_step(&m2);
        for (int i = 0; i < o->n_items && !back; i++)
            if (o->items[i].r == m2.req[1]) {
                /* back once r0 is done: its prompt's blocks were still
                 * cached, so only its generated token is recomputed */
                assert_true(done(&m2, 0));
                assert_int_equal(o->items[i].start, 8);
                assert_int_equal(o->items[i].n_new, 1);
                back = 1;
            }
    }
    assert_true(back);
    assert_int_equal(m2.st.prefix_hits, 0); /* first admissions only */
    sim_free(&m2);
    sim_free(&m);
}

/* Cancelled requests leave the queues at the next step, blocks freed,
 * listed in finished; the others carry on. */
static void test_cancel(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 64, 16, 1, 0);
    int32_t p[20];
    prompt_of(p, 20, 3);
    int a = sim_add(&m, p, 20, 8, 0);
    int b = sim_add(&m, p, 20, 8, 0);
    int c = sim_add(&m, p, 20, 2, 0);
    sim_step(&m);
    assert_int_equal(m.kv.pool.n_free, 60);
    eng_cancel(m.req[a]); /* running */
    eng_cancel(m.req[b]); /* waiting */
    const sched_output *o = sim_step(&m);
    assert_int_equal(o->n_finished, 2);
    assert_ptr_equal(o->finished[0], m.req[a]);
    assert_ptr_equal(o->finished[1], m.req[b]);
    assert_int_equal(o->n_items, 1);
    assert_ptr_equal(o->items[0].r, m.req[c]);
    assert_int_equal(m.kv.pool.n_free, 60); /* a's 4 back, c's 4 taken */
    sim_run(&m, 10);
    assert_true(done(&m, a) && done(&m, b) && done(&m, c));
    sim_free(&m);
}

/* The KV manager takes all of a step's blocks or none. */
static void test_allocate_slots(void **state)
{
    (void)state;
    kv_manager kv;
    inferd_error e = {{0}};
    assert_int_equal(kvm_init(&kv, 5, BS, 1, &e), 0);
    kvm_seq q, r;
    assert_int_equal(kvm_seq_init(&q, BS, 40), 0);
    assert_int_equal(kvm_seq_init(&r, BS, 40), 0);
    assert_int_equal(kvm_allocate_slots(&kv, &q, 9), 0);
    assert_int_equal(q.n_blocks, 3);
    assert_int_equal(kvm_allocate_slots(&kv, &q, 12), 0); /* still 3 */
    assert_int_equal(q.n_blocks, 3);
    assert_int_equal(kvm_allocate_slots(&kv, &r, 12), -1);
    assert_int_equal(r.n_blocks, 0);
    assert_int_equal(kv.pool.n_free, 2);
    kvm_release(&kv, &q);
    assert_int_equal(kv.pool.n_free, 5);
    assert_int_equal(q.n_blocks, 0);
    kvm_seq_free(&q);
    kvm_seq_free(&r);
    kvm_free(&kv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_budget),
        cmocka_unit_test(test_decodes_first),
        cmocka_unit_test(test_max_num_seqs),
        cmocka_unit_test(test_preempt_newest),
        cmocka_unit_test(test_prefill_waits),
        cmocka_unit_test(test_prefix_hits),
        cmocka_unit_test(test_prefix_skip_and_preempt),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_allocate_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
