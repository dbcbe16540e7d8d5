/* engine/scheduler.c: one engine step, as vLLM v1's scheduler does it.
 * Running requests come first (decodes, then the rest of chunked prefills),
 * each taking its rows out of the step's token budget; when the pool has no
 * block left for one of them, the newest running request not yet in this
 * step's batch is preempted: its blocks go back to the pool (their
 * prefixes stay cached) and it returns to the front of the queue to be
 * recomputed. Only when the pool did not run short do
 * waiting requests get admitted, prefix-cache hits first, their prompts cut
 * into chunks that fit the budget. Then one forward pass, one sample per
 * request that reached the end of its tokens, and the events go out. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

static int blocks_for(const eng_engine *g, int n_tokens)
{
    return (n_tokens + g->c.block_size - 1) / g->c.block_size;
}

/* Gives r blocks for its first n_tokens tokens; -1 when the pool is short. */
static int ensure_blocks(eng_engine *g, eng_request *r, int n_tokens)
{
    int need = blocks_for(g, n_tokens) - r->n_blocks;
    if (need <= 0)
        return 0;
    if (kv_alloc(&g->kv, need, r->blocks + r->n_blocks))
        return -1;
    r->n_blocks += need;
    return 0;
}

static void free_blocks(eng_engine *g, eng_request *r)
{
    kv_release(&g->kv, r->blocks, r->n_blocks);
    r->n_blocks = r->n_hashed = r->n_computed = 0;
}

static void remove_running(eng_engine *g, eng_request *r)
{
    for (int i = 0; i < g->n_running; i++)
        if (g->running[i] == r) {
            memmove(g->running + i, g->running + i + 1,
                    (size_t)(g->n_running - i - 1) * sizeof *g->running);
            g->n_running--;
            return;
        }
}

static void waiting_pop_front(eng_engine *g)
{
    memmove(g->waiting, g->waiting + 1, (size_t)(g->n_waiting - 1) * sizeof *g->waiting);
    g->n_waiting--;
}

/* The waiting queue never needs to grow here: a preempted request came out
 * of running, and waiting has room for every live request (see submit). */
static void waiting_push_front(eng_engine *g, eng_request *r)
{
    memmove(g->waiting + 1, g->waiting, (size_t)g->n_waiting * sizeof *g->waiting);
    g->waiting[0] = r;
    g->n_waiting++;
}

static void preempt(eng_engine *g, eng_request *r)
{
    free_blocks(g, r);
    waiting_push_front(g, r);
    g->local.preemptions++;
}

/* Frees r's blocks, queues its last event and drops the engine's hold;
 * r must already be out of the running and waiting lists. */
static void end_request(eng_engine *g, eng_request *r, const eng_event *last)
{
    free_blocks(g, r);
    eng_push_event(r, last, 1);
    g->local.requests_finished++;
    eng_request_unref(r);
}

void eng_finish_request(eng_engine *g, eng_request *r, eng_finish fin)
{
    eng_event ev;
    memset(&ev, 0, sizeof ev);
    ev.token = -1;
    ev.finish = fin;
    ev.num_cached_tokens = r->num_cached;
    ev.n_prompt = r->n_prompt;
    ev.n_generated = r->n_tokens - r->n_prompt;
    end_request(g, r, &ev);
}

void sched_cancel_pending(eng_engine *g)
{
    int k = 0;
    for (int i = 0; i < g->n_running; i++) {
        eng_request *r = g->running[i];
        if (atomic_load(&r->cancel))
            eng_finish_request(g, r, ENG_FINISH_ABORT);
        else
            g->running[k++] = r;
    }
    g->n_running = k;
    k = 0;
    for (int i = 0; i < g->n_waiting; i++) {
        eng_request *r = g->waiting[i];
        if (atomic_load(&r->cancel))
            eng_finish_request(g, r, ENG_FINISH_ABORT);
        else
            g->waiting[k++] = r;
    }
    g->n_waiting = k;
}

/* Rows r runs this step within budget. Prompt-logprob requests go in
 * smaller chunks: each of their rows needs a row of logits. */
static int new_rows(const eng_request *r, int budget)
{
    int n = r->n_tokens - r->n_computed;
    if (r->plp && !r->plp_done && n > ENG_PLP_CHUNK)
        n = ENG_PLP_CHUNK;
    return n < budget ? n : budget;
}

static int wants_all_rows(const eng_request *r) { return r->plp && !r->plp_done; }

/* The newest running request not yet scheduled in this step (r itself when
 * every newer one already has its rows in the batch). */
static eng_request *pick_victim(eng_engine *g)
{
    for (int i = g->n_running - 1; i >= 0; i--)
        if (g->running[i]->mark != g->step_no)
            return g->running[i];
    return NULL;
}

/* Decides this step's batch into g->sched. Running requests that decode
 * go first, then the running ones still in (chunked) prefill, each in
 * admission order, so a long prompt never delays the others' next token. */
static void schedule(eng_engine *g)
{
    int budget = g->c.max_num_batched_tokens, bs = g->c.block_size, full = 0;
    g->n_sched = 0;
    g->step_no++;
    int nc = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < g->n_running; i++) {
            eng_request *r = g->running[i];
            int decode = r->n_tokens - r->n_computed == 1;
            if (decode == (pass == 0))
                g->cand[nc++] = r;
        }
    for (int c = 0; c < nc && budget > 0; c++) {
        eng_request *r = g->cand[c];
        if (r->mark == g->step_no) /* preempted earlier in this step */
            continue;
        int n = new_rows(r, budget), scheduled = 1;
        while (ensure_blocks(g, r, r->n_computed + n)) {
            eng_request *victim = pick_victim(g);
            full = 1;
            if (victim == r && r->n_tokens - r->n_computed > 1 && g->n_sched > 0) {
                /* A prefill whose only newer peers are decodes already in
                 * the batch waits a step with its blocks rather than
                 * throwing its progress away. */
                scheduled = 0;
                break;
            }
            remove_running(g, victim);
            preempt(g, victim);
            victim->mark = g->step_no;
            if (victim == r) {
                scheduled = 0;
                break;
            }
        }
        if (!scheduled)
            continue;
        r->mark = g->step_no;
        g->sched[g->n_sched++] = (eng_sched){r, n};
        budget -= n;
    }
    /* When the pool ran short, nobody new comes in this step. */
    while (!full && g->n_waiting > 0 && g->n_running < g->c.max_num_seqs && budget > 0) {
        eng_request *r = g->waiting[0];
        int hit = 0;
        if (g->c.enable_prefix_caching && !r->plp) {
            /* The last token is always recomputed: its logits are needed. */
            hit = kv_match(&g->kv, r->tokens, (r->n_tokens - 1) / bs, r->blocks, r->hashes);
            r->n_blocks = r->n_hashed = hit;
            r->n_computed = hit * bs;
        }
        int n = new_rows(r, budget);
        if (ensure_blocks(g, r, r->n_computed + n)) {
            free_blocks(g, r);
            break;
        }
        if (!r->admitted) {
            r->admitted = 1;
            r->num_cached = hit * bs < r->n_prompt ? hit * bs : r->n_prompt;
            g->local.prompt_tokens += (uint64_t)r->n_prompt;
            if (g->c.enable_prefix_caching && !r->plp) {
                g->local.prefix_queries += (uint64_t)r->n_prompt;
                g->local.prefix_hits += (uint64_t)r->num_cached;
            }
        }
        waiting_pop_front(g);
        g->running[g->n_running++] = r;
        g->sched[g->n_sched++] = (eng_sched){r, n};
        budget -= n;
    }
}

/* Lays the scheduled rows out as the model's batch; returns the number of
 * logit rows, or -1 when the logits buffer cannot grow. */
static int build_batch(eng_engine *g, mdl_batch *b)
{
    int bs = g->c.block_size, nt = 0, nrows = 0, maxb = 1;
    for (int i = 0; i < g->n_sched; i++)
        if (g->sched[i].r->n_blocks > maxb)
            maxb = g->sched[i].r->n_blocks;
    /* The table's width is part of what a recorded GPU step launches: a
     * power of two keeps it the same for many steps (one CUDA graph) instead
     * of changing with every block a sequence grows by. */
    int width = 16;
    while (width < maxb)
        width *= 2;
    maxb = width < g->max_blocks_seq ? width : g->max_blocks_seq;
    for (int i = 0; i < g->n_sched; i++) {
        eng_request *r = g->sched[i].r;
        int from = r->n_computed, to = from + g->sched[i].n_new;
        g->b_qs[i] = nt;
        for (int p = from; p < to; p++, nt++) {
            g->b_tok[nt] = r->tokens[p];
            g->b_pos[nt] = p;
            g->b_slot[nt] = r->blocks[p / bs] * bs + p % bs;
        }
        g->b_ctx[i] = to;
        int32_t *row = g->b_table + (size_t)i * maxb;
        memcpy(row, r->blocks, (size_t)r->n_blocks * sizeof *row);
        memset(row + r->n_blocks, 0, (size_t)(maxb - r->n_blocks) * sizeof *row);
        g->row_of[i] = nrows;
        if (wants_all_rows(r))
            nrows += to - from;
        else if (to == r->n_tokens)
            nrows++;
    }
    g->b_qs[g->n_sched] = nt;
    if (nrows > g->cap_rows) {
        float *l = realloc(g->logits, (size_t)nrows * g->vocab * sizeof *l);
        int32_t *rw = realloc(g->b_rows, (size_t)nrows * sizeof *rw);
        be_sample_row *si = realloc(g->s_in, (size_t)nrows * sizeof *si);
        be_sample_out *so = realloc(g->s_out, (size_t)nrows * sizeof *so);
        if (l)
            g->logits = l;
        if (rw)
            g->b_rows = rw;
        if (si)
            g->s_in = si;
        if (so)
            g->s_out = so;
        if (!l || !rw || !si || !so)
            return -1;
        g->cap_rows = nrows;
    }
    for (int i = 0; i < g->n_sched; i++) {
        eng_request *r = g->sched[i].r;
        int to = r->n_computed + g->sched[i].n_new, first = g->b_qs[i + 1] - g->sched[i].n_new;
        int k = g->row_of[i];
        if (wants_all_rows(r))
            for (int q = first; q < g->b_qs[i + 1]; q++) {
                g->s_in[k] = (be_sample_row){0}; /* prompt rows: the cheapest (greedy) */
                g->b_rows[k++] = q;
            }
        else if (to == r->n_tokens) {
            g->s_in[k] = (be_sample_row){0};
            g->b_rows[k++] = g->b_qs[i + 1] - 1;
        }
        /* The row that samples r's next token gets r's draw now, before the
         * forward pass: one draw per sampled token, as smp_sample takes it. */
        if (to == r->n_tokens && r->s.max_tokens > 0) {
            double u = r->s.temperature >= 1e-5f ? smp_rng_uniform(r->rng) : 0;
            g->s_in[k - 1] = smp_device_row(&r->s, u);
        }
    }
    *b = (mdl_batch){
        .n_tokens = nt, .tokens = g->b_tok, .pos = g->b_pos, .slot = g->b_slot,
        .n_seqs = g->n_sched, .q_start = g->b_qs, .ctx_len = g->b_ctx,
        .block_table = g->b_table, .max_blocks = maxb, .n_logits = nrows,
        .logit_rows = g->b_rows,
    };
    return nrows;
}

/* Registers r's newly completed full blocks in the prefix table. */
static void commit_blocks(eng_engine *g, eng_request *r)
{
    int bs = g->c.block_size;
    while ((r->n_hashed + 1) * bs <= r->n_computed) {
        int i = r->n_hashed;
        uint64_t parent = i ? r->hashes[i - 1] : KV_ROOT_HASH;
        const int32_t *t = r->tokens + (size_t)i * bs;
        r->hashes[i] = kv_hash(parent, t, bs);
        kv_commit(&g->kv, r->blocks[i], r->hashes[i], parent, t);
        r->n_hashed++;
    }
}

static void record_prompt_logprobs(eng_engine *g, eng_request *r, int from, int to,
                                   const float *logits)
{
    for (int p = from; p < to && p + 1 < r->n_prompt; p++) {
        eng_event *ev = &r->plp[p + 1];
        memset(ev, 0, sizeof *ev);
        ev->token = r->tokens[p + 1];
        ev->n_top = r->s.prompt_top_logprobs;
        smp_logprobs(logits + (size_t)(p - from) * g->vocab, g->vocab, ev->token, ev->n_top,
                     &ev->logprob, ev->top_ids, ev->top_logprobs, &g->w);
    }
    if (to >= r->n_prompt) {
        memset(&r->plp[0], 0, sizeof r->plp[0]);
        r->plp[0].token = r->tokens[0];
        r->plp[0].logprob = NAN;
        r->plp_done = 1;
    }
}

static int is_stop(const eng_engine *g, const eng_request *r, int32_t t)
{
    if (!r->s.ignore_eos)
        for (int i = 0; i < g->n_eos; i++)
            if (g->eos[i] == t)
                return 1;
    for (int i = 0; i < r->s.n_stop_ids; i++)
        if (r->s.stop_ids[i] == t)
            return 1;
    return 0;
}

/* Ends r with an error (it is in the running list). */
static void fail_request(eng_engine *g, eng_request *r)
{
    remove_running(g, r);
    eng_finish_request(g, r, ENG_FINISH_ERROR);
}

/* Samples r's next token from logits row `row` of the step and emits it;
 * returns 1 when that finished the request (then r is gone). The device's
 * candidates settle the token when they can; otherwise the row comes to the
 * host (unless `fetched` says it is already in g->logits) and smp_sample
 * decides, at the draw the device was given. */
static int sample_and_emit(eng_engine *g, eng_request *r, int row, int fetched)
{
    eng_event ev;
    ev.n_top = 0;
    ev.logprob = 0;
    const be_sample_out *o = &g->s_out[row];
    double u = g->s_in[row].u;
    int want_lp = r->s.logprobs || r->s.top_logprobs > 0;
    smp_seq q = {.s = &r->s, .tokens = r->tokens, .n_prompt = r->n_prompt,
                 .n_output = r->n_tokens - r->n_prompt, .eos = g->eos, .n_eos = g->n_eos};
    int32_t tok = -1;
    int full = smp_needs_full_row(&q, want_lp ? r->s.top_logprobs : 0) ||
               smp_pick_from_candidates(&r->s, o, g->vocab, u, &tok);
    if (!full && want_lp) {
        ev.n_top = r->s.top_logprobs;
        full = smp_logprobs_from_candidates(o, g->vocab, tok, ev.n_top, &ev.logprob, ev.top_ids,
                                            ev.top_logprobs) != 0;
    }
    if (full) {
        float *logits = g->logits + (size_t)row * g->vocab;
        inferd_error e = {{0}};
        if (!fetched && mdl_logits_rows(g->m, row, 1, logits, &e)) {
            fail_request(g, r);
            return 1;
        }
        g->local.sampler_full_row_fallbacks++;
        if (want_lp)
            memcpy(g->raw, logits, (size_t)g->vocab * sizeof *g->raw);
        tok = smp_sample(&q, logits, g->vocab, u, &g->w);
        ev.n_top = 0;
        if (want_lp) {
            ev.n_top = r->s.top_logprobs;
            smp_logprobs(g->raw, g->vocab, tok, ev.n_top, &ev.logprob, ev.top_ids,
                         ev.top_logprobs, &g->w);
        }
    }
    r->tokens[r->n_tokens++] = tok;
    g->local.generation_tokens++;
    int n_out = r->n_tokens - r->n_prompt;
    ev.token = tok;
    ev.finish = ENG_RUNNING;
    if (is_stop(g, r, tok))
        ev.finish = ENG_FINISH_STOP;
    else if (n_out >= r->s.max_tokens || r->n_tokens >= g->c.max_model_len)
        ev.finish = ENG_FINISH_LENGTH;
    ev.num_cached_tokens = r->num_cached;
    ev.n_prompt = r->n_prompt;
    ev.n_generated = n_out;
    if (ev.finish == ENG_RUNNING) {
        eng_push_event(r, &ev, 0);
        return 0;
    }
    remove_running(g, r);
    end_request(g, r, &ev);
    return 1;
}

/* INFERD_STEP_LOG's line for this step: what ran and where the host time
 * went (idle: from the previous step's end to this one's start). Called
 * before the forward pass: requests may be gone after the emit. */
static void log_step_shape(eng_engine *g, const mdl_batch *b, int *shape)
{
    shape[0] = shape[1] = shape[2] = 0;
    for (int i = 0; i < g->n_sched; i++) {
        const eng_request *r = g->sched[i].r;
        /* a preempted request recomputing its generated tokens is prefill
         * work too, though its prompt is behind it */
        if (r->n_computed >= r->n_prompt && g->sched[i].n_new == 1)
            shape[1]++;
        else
            shape[0] += g->sched[i].n_new;
        if (b->ctx_len[i] > shape[2])
            shape[2] = b->ctx_len[i];
    }
}

static void log_step(eng_engine *g, const int *shape, double ts, double t1, double t2,
                     double t3)
{
    fprintf(g->step_log, "%llu %d %d %d %d %.3f %.3f %.3f %.3f\n",
            (unsigned long long)g->local.steps, g->n_sched, shape[0], shape[1], shape[2],
            g->step_end > 0 ? 1e3 * (ts - g->step_end) : 0.0, 1e3 * (t1 - ts),
            1e3 * (t2 - t1), 1e3 * (t3 - t2));
    g->step_end = t3;
}

int sched_step(eng_engine *g)
{
    double ts = now_seconds();
    schedule(g);
    if (g->n_sched == 0)
        return 0;
    mdl_batch b;
    inferd_error e = {{0}};
    double t0 = now_seconds();
    int rows = build_batch(g, &b);
    double t1 = now_seconds();
    int shape[3] = {0, 0, 0};
    if (g->step_log && rows >= 0)
        log_step_shape(g, &b, shape);
    /* The logits stay on the model's device; only the sampled results come
     * back, and the rows that need more are fetched one by one below. */
    int rc = rows < 0 ? -1 : mdl_forward_sample(g->m, &b, g->s_in, g->s_out, &e);
    double t2 = now_seconds();
    g->local.steps++;
    g->local.step_seconds += t2 - t0;
    g->local.schedule_seconds += t1 - ts;
    g->local.forward_seconds += t2 - t1;
    if (rc) {
        for (int i = 0; i < g->n_sched; i++)
            fail_request(g, g->sched[i].r);
        return g->n_sched;
    }
    for (int i = 0; i < g->n_sched; i++) {
        eng_request *r = g->sched[i].r;
        int from = r->n_computed, n = g->sched[i].n_new, row = g->row_of[i];
        int all_rows = wants_all_rows(r);
        r->n_computed += n;
        if (g->c.enable_prefix_caching)
            commit_blocks(g, r);
        if (all_rows) {
            float *lg = g->logits + (size_t)row * g->vocab;
            if (mdl_logits_rows(g->m, row, n, lg, &e)) {
                fail_request(g, r);
                continue;
            }
            record_prompt_logprobs(g, r, from, r->n_computed, lg);
        }
        if (r->n_computed < r->n_tokens)
            continue;
        if (r->s.max_tokens == 0) { /* echo only: the prompt is the answer */
            remove_running(g, r);
            eng_finish_request(g, r, ENG_FINISH_LENGTH);
            continue;
        }
        sample_and_emit(g, r, all_rows ? row + n - 1 : row, all_rows);
    }
    double t3 = now_seconds();
    g->local.emit_seconds += t3 - t2;
    if (g->step_log)
        log_step(g, shape, ts, t1, t2, t3);
    return g->n_sched;
}
