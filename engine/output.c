/* engine/output.c: output processing, after each step. A request that
 * sampled gets its token appended and an event queued with the token's
 * logprobs and counts; it ends when the token is an eos or stop id, or
 * max_tokens or max_model_len is reached. A request whose step failed
 * ends with ENG_FINISH_ERROR. Ending a request takes it out of the
 * scheduler (its blocks go back) before its last event is queued. */
#include <string.h>

#include "engine/internal.h"

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

/* The counts every event of r carries; n_generated includes a token just
 * appended. */
static void fill_counts(const eng_request *r, eng_event *ev)
{
    ev->num_cached_tokens = r->num_cached;
    ev->n_prompt = r->n_prompt;
    ev->n_generated = r->n_tokens - r->n_prompt;
}

/* Queues r's last event and counts it; r is out of the scheduler. */
static void end_request(eng_engine *g, eng_request *r, const eng_event *last)
{
    req_finish(r, last);
    g->local.requests_finished++;
}

/* Ends r, out of the scheduler, with an event that carries no token. */
static void end_without_token(eng_engine *g, eng_request *r, eng_finish fin)
{
    eng_event ev;
    memset(&ev, 0, sizeof ev);
    ev.token = -1;
    ev.finish = fin;
    fill_counts(r, &ev);
    end_request(g, r, &ev);
}

void out_abort(eng_engine *g, eng_request *r) { end_without_token(g, r, ENG_FINISH_ABORT); }

/* Appends the token the runner sampled for r and queues its event; ends r
 * when that token finishes it. */
static void emit(eng_engine *g, eng_request *r, const eng_event *sampled)
{
    eng_event ev = *sampled;
    r->tokens[r->n_tokens++] = ev.token;
    g->local.generation_tokens++;
    ev.finish = ENG_RUNNING;
    if (is_stop(g, r, ev.token))
        ev.finish = ENG_FINISH_STOP;
    else if (r->n_tokens - r->n_prompt >= r->s.max_tokens || r->n_tokens >= g->c.max_model_len)
        ev.finish = ENG_FINISH_LENGTH;
    fill_counts(r, &ev);
    if (ev.finish == ENG_RUNNING) {
        req_push_event(r, &ev);
        return;
    }
    sched_finish(&g->sched, r);
    end_request(g, r, &ev);
}

void out_process(eng_engine *g, const sched_output *o, const run_result *res)
{
    for (int i = 0; i < o->n_items; i++) {
        const sched_item *it = &o->items[i];
        eng_request *r = it->r;
        if (res[i].failed) {
            sched_finish(&g->sched, r);
            end_without_token(g, r, ENG_FINISH_ERROR);
        } else if (it->samples && r->s.max_tokens == 0) { /* echo only: nothing to sample */
            sched_finish(&g->sched, r);
            end_without_token(g, r, ENG_FINISH_LENGTH);
        } else if (it->samples) {
            emit(g, r, &res[i].ev);
        }
    }
}
