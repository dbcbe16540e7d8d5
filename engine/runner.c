/* engine/runner.c: executes the step the scheduler decided, as vLLM v1's
 * model runner: lays the scheduled tokens out as the model's batch (token
 * ids, positions, KV slots, block tables, which rows give logits), runs the
 * forward pass with sampling on the model's device, and settles each
 * sampling row's token and logprobs, fetching a row to the host only when
 * the device's candidates cannot decide it. It also computes the prompt
 * logprobs of the requests that want them. It decides nothing about who
 * runs and emits nothing: the results go to output processing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

int run_init(run_runner *x, mdl_model *m, const eng_config *c, const int32_t *eos, int n_eos,
             eng_stats *st, inferd_error *e)
{
    memset(x, 0, sizeof *x);
    x->m = m;
    x->vocab = mdl_config(m)->vocab_size;
    x->block_size = c->block_size;
    x->max_blocks_seq = (c->max_model_len + c->block_size - 1) / c->block_size;
    x->eos = eos;
    x->n_eos = n_eos;
    x->st = st;
    if (smp_scratch_init(&x->w, x->vocab, e))
        return -1;
    size_t ns = (size_t)c->max_num_seqs, nt = (size_t)c->max_num_batched_tokens;
    x->b_tok = malloc(nt * sizeof *x->b_tok);
    x->b_pos = malloc(nt * sizeof *x->b_pos);
    x->b_slot = malloc(nt * sizeof *x->b_slot);
    x->b_qs = malloc((ns + 1) * sizeof *x->b_qs);
    x->b_ctx = malloc(ns * sizeof *x->b_ctx);
    x->b_table = malloc(ns * (size_t)x->max_blocks_seq * sizeof *x->b_table);
    x->row_of = malloc(ns * sizeof *x->row_of);
    x->raw = malloc((size_t)x->vocab * sizeof *x->raw);
    x->res = malloc(ns * sizeof *x->res);
    if (!x->b_tok || !x->b_pos || !x->b_slot || !x->b_qs || !x->b_ctx || !x->b_table ||
        !x->row_of || !x->raw || !x->res) {
        err_set(e, "out of memory for the engine's batch buffers");
        run_free(x);
        return -1;
    }
    return 0;
}

void run_free(run_runner *x)
{
    smp_scratch_free(&x->w);
    free(x->b_tok);
    free(x->b_pos);
    free(x->b_slot);
    free(x->b_qs);
    free(x->b_ctx);
    free(x->b_table);
    free(x->b_rows);
    free(x->row_of);
    free(x->logits);
    free(x->s_in);
    free(x->s_out);
    free(x->raw);
    free(x->res);
    memset(x, 0, sizeof *x);
}

/* Room for nrows logit rows; -1 when a buffer cannot grow (those that grew
 * stay). Rows are few per step, so the buffers only ever grow. */
static int reserve_rows(run_runner *x, int nrows)
{
    if (nrows <= x->cap_rows)
        return 0;
    float *l = realloc(x->logits, (size_t)nrows * x->vocab * sizeof *l);
    int32_t *rw = realloc(x->b_rows, (size_t)nrows * sizeof *rw);
    be_sample_row *si = realloc(x->s_in, (size_t)nrows * sizeof *si);
    be_sample_out *so = realloc(x->s_out, (size_t)nrows * sizeof *so);
    if (l)
        x->logits = l;
    if (rw)
        x->b_rows = rw;
    if (si)
        x->s_in = si;
    if (so)
        x->s_out = so;
    if (!l || !rw || !si || !so)
        return -1;
    x->cap_rows = nrows;
    return 0;
}

/* The block table's width for a step whose longest table is maxb. It is
 * part of what a recorded GPU step launches: a power of two keeps it the
 * same for many steps (one CUDA graph) instead of changing with every
 * block a sequence grows by. */
static int table_width(const run_runner *x, int maxb)
{
    int width = 16;
    while (width < maxb)
        width *= 2;
    return width < x->max_blocks_seq ? width : x->max_blocks_seq;
}

/* Gives the step's rows their logits rows and what the device samples at
 * each: prompt rows the cheapest (greedy); the row that samples r's next
 * token gets r's draw now, before the forward pass, one draw per sampled
 * token as smp_sample takes it. */
static void lay_out_rows(run_runner *x, const sched_output *o)
{
    for (int i = 0; i < o->n_items; i++) {
        const sched_item *it = &o->items[i];
        eng_request *r = it->r;
        int first = x->b_qs[i], end = x->b_qs[i + 1], k = x->row_of[i];
        if (it->all_rows)
            for (int q = first; q < end; q++) {
                x->s_in[k] = (be_sample_row){0};
                x->b_rows[k++] = q;
            }
        else if (it->samples) {
            x->s_in[k] = (be_sample_row){0};
            x->b_rows[k++] = end - 1;
        }
        if (it->samples && r->s.max_tokens > 0) {
            double u = r->s.temperature >= 1e-5f ? smp_rng_uniform(r->rng) : 0;
            x->s_in[k - 1] = smp_device_row(&r->s, u);
        }
    }
}

int run_prepare(run_runner *x, const sched_output *o)
{
    int bs = x->block_size, nt = 0, nrows = 0, maxb = 1;
    x->prepared = 0;
    for (int i = 0; i < o->n_items; i++)
        if (o->items[i].r->kv.n_blocks > maxb)
            maxb = o->items[i].r->kv.n_blocks;
    maxb = table_width(x, maxb);
    for (int i = 0; i < o->n_items; i++) {
        const sched_item *it = &o->items[i];
        const eng_request *r = it->r;
        const kvm_seq *kv = &r->kv;
        int to = it->start + it->n_new;
        x->b_qs[i] = nt;
        for (int p = it->start; p < to; p++, nt++) {
            x->b_tok[nt] = r->tokens[p];
            x->b_pos[nt] = p;
            x->b_slot[nt] = kv->blocks[p / bs] * bs + p % bs;
        }
        x->b_ctx[i] = to;
        int32_t *row = x->b_table + (size_t)i * maxb;
        memcpy(row, kv->blocks, (size_t)kv->n_blocks * sizeof *row);
        memset(row + kv->n_blocks, 0, (size_t)(maxb - kv->n_blocks) * sizeof *row);
        x->row_of[i] = nrows;
        nrows += it->all_rows ? it->n_new : it->samples;
    }
    x->b_qs[o->n_items] = nt;
    if (reserve_rows(x, nrows))
        return -1;
    lay_out_rows(x, o);
    x->b = (mdl_batch){
        .n_tokens = nt, .tokens = x->b_tok, .pos = x->b_pos, .slot = x->b_slot,
        .n_seqs = o->n_items, .q_start = x->b_qs, .ctx_len = x->b_ctx,
        .block_table = x->b_table, .max_blocks = maxb, .n_logits = nrows,
        .logit_rows = x->b_rows,
    };
    x->prepared = 1;
    return 0;
}

/* Logprobs of prompt tokens (from, to] from the rows of tokens [from, to),
 * whose logits are at `logits`; entry 0 once the prompt is complete. */
static void record_prompt_logprobs(run_runner *x, eng_request *r, int from, int to,
                                   const float *logits)
{
    for (int p = from; p < to && p + 1 < r->n_prompt; p++) {
        eng_event *ev = &r->plp[p + 1];
        memset(ev, 0, sizeof *ev);
        ev->token = r->tokens[p + 1];
        ev->n_top = r->s.prompt_top_logprobs;
        smp_logprobs(logits + (size_t)(p - from) * x->vocab, x->vocab, ev->token, ev->n_top,
                     &ev->logprob, ev->top_ids, ev->top_logprobs, &x->w);
    }
    if (to >= r->n_prompt) {
        memset(&r->plp[0], 0, sizeof r->plp[0]);
        r->plp[0].token = r->tokens[0];
        r->plp[0].logprob = NAN;
        r->plp_done = 1;
    }
}

/* Samples r's next token from logits row `row` of the step into ev (token,
 * logprob, top alternatives); -1 when its row could not be fetched. The
 * device's candidates settle the token when they can; otherwise the row
 * comes to the host (unless `fetched` says it is already in x->logits) and
 * smp_sample decides, at the draw the device was given. */
static int sample(run_runner *x, eng_request *r, int row, int fetched, eng_event *ev)
{
    ev->n_top = 0;
    ev->logprob = 0;
    const be_sample_out *o = &x->s_out[row];
    double u = x->s_in[row].u;
    int want_lp = r->s.logprobs || r->s.top_logprobs > 0;
    smp_seq q = {.s = &r->s, .tokens = r->tokens, .n_prompt = r->n_prompt,
                 .n_output = r->n_tokens - r->n_prompt, .eos = x->eos, .n_eos = x->n_eos};
    int32_t tok = -1;
    int full = smp_needs_full_row(&q, want_lp ? r->s.top_logprobs : 0) ||
               smp_pick_from_candidates(&r->s, o, x->vocab, u, &tok);
    if (!full && want_lp) {
        ev->n_top = r->s.top_logprobs;
        full = smp_logprobs_from_candidates(o, x->vocab, tok, ev->n_top, &ev->logprob,
                                            ev->top_ids, ev->top_logprobs) != 0;
    }
    if (full) {
        float *logits = x->logits + (size_t)row * x->vocab;
        inferd_error e = {{0}};
        if (!fetched && mdl_logits_rows(x->m, row, 1, logits, &e))
            return -1;
        x->st->sampler_full_row_fallbacks++;
        if (want_lp)
            memcpy(x->raw, logits, (size_t)x->vocab * sizeof *x->raw);
        tok = smp_sample(&q, logits, x->vocab, u, &x->w);
        ev->n_top = 0;
        if (want_lp) {
            ev->n_top = r->s.top_logprobs;
            smp_logprobs(x->raw, x->vocab, tok, ev->n_top, &ev->logprob, ev->top_ids,
                         ev->top_logprobs, &x->w);
        }
    }
    ev->token = tok;
    return 0;
}

/* One item's results after the forward pass: its prompt logprobs (every
 * row fetched), then its next token when it samples one. -1 when a fetch
 * failed. */
static int settle_item(run_runner *x, const sched_item *it, int row, eng_event *ev)
{
    eng_request *r = it->r;
    if (it->all_rows) {
        float *lg = x->logits + (size_t)row * x->vocab;
        inferd_error e = {{0}};
        if (mdl_logits_rows(x->m, row, it->n_new, lg, &e))
            return -1;
        record_prompt_logprobs(x, r, it->start, it->start + it->n_new, lg);
    }
    if (!it->samples || r->s.max_tokens == 0) /* echo only: the prompt is the answer */
        return 0;
    return sample(x, r, it->all_rows ? row + it->n_new - 1 : row, it->all_rows, ev);
}

int run_execute(run_runner *x, const sched_output *o)
{
    inferd_error e = {{0}};
    /* The logits stay on the model's device; only the sampled results come
     * back, and the rows that need more are fetched one by one. */
    int rc = x->prepared ? mdl_forward_sample(x->m, &x->b, x->s_in, x->s_out, &e) : -1;
    for (int i = 0; i < o->n_items; i++) {
        run_result *res = &x->res[i];
        res->ev.token = -1;
        res->failed = rc != 0 || settle_item(x, &o->items[i], x->row_of[i], &res->ev) != 0;
    }
    return rc ? -1 : 0;
}
