/* engine/scheduler.c: who runs this step, as vLLM v1's scheduler decides
 * it. Running requests come first (decodes, then the rest of chunked
 * prefills), each taking its rows out of the step's token budget; when the
 * pool has no block left for one of them, the newest running request not
 * yet in this step's batch is preempted: its blocks go back to the pool
 * (their prefixes stay cached) and it returns to the front of the queue to
 * be recomputed. Only when the pool did not run short do waiting requests
 * get admitted, prefix-cache hits first, their prompts cut into chunks
 * that fit the budget.
 *
 * The scheduler owns the queues and each request's progress (n_computed);
 * blocks are the KV manager's. It never sees a tensor or a token's
 * meaning: what it decides is a sched_output, which the runner executes. */
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

int sched_init(sched_scheduler *s, const eng_config *c, kv_manager *kv, eng_stats *st,
               inferd_error *e)
{
    memset(s, 0, sizeof *s);
    s->max_num_seqs = c->max_num_seqs;
    s->max_num_batched_tokens = c->max_num_batched_tokens;
    s->block_size = c->block_size;
    s->enable_prefix_caching = c->enable_prefix_caching;
    s->kv = kv;
    s->st = st;
    size_t ns = (size_t)c->max_num_seqs;
    s->running = malloc(ns * sizeof *s->running);
    s->cand = malloc(ns * sizeof *s->cand);
    s->out.items = malloc(ns * sizeof *s->out.items);
    s->out.preempted = malloc(ns * sizeof *s->out.preempted);
    if (!s->running || !s->cand || !s->out.items || !s->out.preempted) {
        err_set(e, "out of memory for the scheduler of %d sequences", c->max_num_seqs);
        sched_free(s);
        return -1;
    }
    return 0;
}

void sched_free(sched_scheduler *s)
{
    free(s->waiting);
    free(s->running);
    free(s->cand);
    free(s->out.items);
    free(s->out.preempted);
    free(s->out.finished);
    memset(s, 0, sizeof *s);
}

/* waiting holds every live request at most (preemption moves running ones
 * there), and finished every one that a step can drop, so once both have
 * room for all, nothing in a step allocates. */
int sched_reserve(sched_scheduler *s, int n)
{
    int live = s->n_waiting + s->n_running + n;
    if (live <= s->cap_waiting)
        return 0;
    int cap = live * 2;
    eng_request **w = realloc(s->waiting, (size_t)cap * sizeof *w);
    if (!w)
        return -1;
    s->waiting = w;
    eng_request **f = realloc(s->out.finished, (size_t)cap * sizeof *f);
    if (!f)
        return -1;
    s->out.finished = f;
    s->cap_waiting = cap;
    return 0;
}

void sched_add(sched_scheduler *s, eng_request *r)
{
    s->waiting[s->n_waiting++] = r;
}

static void remove_running(sched_scheduler *s, eng_request *r)
{
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i] == r) {
            memmove(s->running + i, s->running + i + 1,
                    (size_t)(s->n_running - i - 1) * sizeof *s->running);
            s->n_running--;
            return;
        }
}

static void waiting_pop_front(sched_scheduler *s)
{
    memmove(s->waiting, s->waiting + 1, (size_t)(s->n_waiting - 1) * sizeof *s->waiting);
    s->n_waiting--;
}

static void waiting_push_front(sched_scheduler *s, eng_request *r)
{
    memmove(s->waiting + 1, s->waiting, (size_t)s->n_waiting * sizeof *s->waiting);
    s->waiting[0] = r;
    s->n_waiting++;
}

/* r's blocks back to the pool and its progress forgotten: it will be
 * recomputed (from its cached prefix, if any is still there). */
static void free_blocks(sched_scheduler *s, eng_request *r)
{
    kvm_release(s->kv, &r->kv);
    r->n_computed = 0;
}

void sched_finish(sched_scheduler *s, eng_request *r)
{
    remove_running(s, r);
    free_blocks(s, r);
}

static void preempt(sched_scheduler *s, eng_request *r)
{
    remove_running(s, r);
    free_blocks(s, r);
    waiting_push_front(s, r);
    r->mark = s->step_no;
    s->out.preempted[s->out.n_preempted++] = r;
    s->st->preemptions++;
}

/* Moves the cancelled requests of list (every one when `all`) into
 * finished, blocks freed, keeping the others in order; returns how many
 * stay. */
static int drop_from(sched_scheduler *s, eng_request **list, int n, int all)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        eng_request *r = list[i];
        if (all || atomic_load(&r->cancel)) {
            free_blocks(s, r);
            s->out.finished[s->out.n_finished++] = r;
        } else
            list[k++] = r;
    }
    return k;
}

static void drop_requests(sched_scheduler *s, int all)
{
    s->out.n_items = s->out.n_tokens = s->out.n_preempted = s->out.n_finished = 0;
    s->n_running = drop_from(s, s->running, s->n_running, all);
    s->n_waiting = drop_from(s, s->waiting, s->n_waiting, all);
}

const sched_output *sched_abort_all(sched_scheduler *s)
{
    drop_requests(s, 1);
    return &s->out;
}

static int wants_all_rows(const eng_request *r) { return r->plp && !r->plp_done; }

/* Rows r runs this step within budget. Prompt-logprob requests go in
 * smaller chunks: each of their rows needs a row of logits. */
static int new_rows(const eng_request *r, int budget)
{
    int n = r->n_tokens - r->n_computed;
    if (wants_all_rows(r) && n > ENG_PLP_CHUNK)
        n = ENG_PLP_CHUNK;
    return n < budget ? n : budget;
}

static void add_item(sched_scheduler *s, eng_request *r, int n)
{
    r->mark = s->step_no;
    s->out.items[s->out.n_items++] = (sched_item){
        .r = r, .start = r->n_computed, .n_new = n, .all_rows = wants_all_rows(r),
        .samples = r->n_computed + n == r->n_tokens};
    s->out.n_tokens += n;
}

/* The newest running request not yet scheduled in this step (r itself when
 * every newer one already has its rows in the batch). */
static eng_request *pick_victim(sched_scheduler *s)
{
    for (int i = s->n_running - 1; i >= 0; i--)
        if (s->running[i]->mark != s->step_no)
            return s->running[i];
    return NULL;
}

/* Schedules the running requests, decodes first, so that a long prompt
 * never delays the others' next token; returns 1 when the pool ran short. */
static int schedule_running(sched_scheduler *s, int *budget)
{
    int nc = 0, full = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < s->n_running; i++) {
            eng_request *r = s->running[i];
            int decode = r->n_tokens - r->n_computed == 1;
            if (decode == (pass == 0))
                s->cand[nc++] = r;
        }
    for (int c = 0; c < nc && *budget > 0; c++) {
        eng_request *r = s->cand[c];
        if (r->mark == s->step_no) /* preempted earlier in this step */
            continue;
        int n = new_rows(r, *budget), scheduled = 1;
        while (kvm_allocate_slots(s->kv, &r->kv, r->n_computed + n)) {
            eng_request *victim = pick_victim(s);
            full = 1;
            if (victim == r && r->n_tokens - r->n_computed > 1 && s->out.n_items > 0) {
                /* A prefill whose only newer peers are decodes already in
                 * the batch waits a step with its blocks rather than
                 * throwing its progress away. */
                scheduled = 0;
                break;
            }
            preempt(s, victim);
            if (victim == r) {
                scheduled = 0;
                break;
            }
        }
        if (!scheduled)
            continue;
        add_item(s, r, n);
        *budget -= n;
    }
    return full;
}

/* Admits waiting requests in order while seats, budget and blocks last. */
static void schedule_waiting(sched_scheduler *s, int budget)
{
    while (s->n_waiting > 0 && s->n_running < s->max_num_seqs && budget > 0) {
        eng_request *r = s->waiting[0];
        int caching = s->enable_prefix_caching && !r->plp; /* plp: every row's logits */
        if (caching)
            r->n_computed = kvm_get_computed_blocks(s->kv, &r->kv, r->tokens, r->n_tokens);
        int n = new_rows(r, budget);
        if (kvm_allocate_slots(s->kv, &r->kv, r->n_computed + n)) {
            free_blocks(s, r);
            break;
        }
        if (!r->admitted) {
            r->admitted = 1;
            r->num_cached = r->n_computed < r->n_prompt ? r->n_computed : r->n_prompt;
            s->st->prompt_tokens += (uint64_t)r->n_prompt;
            if (caching) {
                s->st->prefix_queries += (uint64_t)r->n_prompt;
                s->st->prefix_hits += (uint64_t)r->num_cached;
            }
        }
        waiting_pop_front(s);
        s->running[s->n_running++] = r;
        add_item(s, r, n);
        budget -= n;
    }
}

const sched_output *sched_schedule(sched_scheduler *s)
{
    drop_requests(s, 0);
    s->step_no++;
    int budget = s->max_num_batched_tokens;
    /* When the pool ran short, nobody new comes in this step. */
    if (!schedule_running(s, &budget))
        schedule_waiting(s, budget);
    return &s->out;
}

void sched_update_from_output(sched_scheduler *s, const sched_output *o)
{
    for (int i = 0; i < o->n_items; i++) {
        eng_request *r = o->items[i].r;
        r->n_computed += o->items[i].n_new;
        kvm_cache_blocks(s->kv, &r->kv, r->tokens, r->n_computed);
    }
}
