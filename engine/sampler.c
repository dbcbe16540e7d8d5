/* engine/sampler.c: logits -> token for one request, following vLLM v1's
 * order: logit_bias and min_tokens, penalties, then greedy argmax or
 * temperature -> min_p -> top_k -> top_p -> draw. Every walk over the
 * vocabulary runs in a fixed order, so a request's token depends only on
 * its logits and its own generator, never on the rest of the batch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

int smp_scratch_init(smp_scratch *w, int vocab, inferd_error *e)
{
    memset(w, 0, sizeof *w);
    w->p = malloc((size_t)vocab * sizeof *w->p);
    w->idx = malloc((size_t)vocab * sizeof *w->idx);
    w->cnt = calloc((size_t)vocab, sizeof *w->cnt);
    w->seen = calloc((size_t)vocab, 1);
    if (!w->p || !w->idx || !w->cnt || !w->seen) {
        smp_scratch_free(w);
        err_set(e, "out of memory for the sampler (vocabulary %d)", vocab);
        return -1;
    }
    w->vocab = vocab;
    return 0;
}

void smp_scratch_free(smp_scratch *w)
{
    free(w->p);
    free(w->idx);
    free(w->cnt);
    free(w->seen);
    memset(w, 0, sizeof *w);
}

/* ---- generator ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void smp_rng_seed(uint64_t st[4], uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        st[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

double smp_rng_uniform(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return (double)(r >> 11) * 0x1.0p-53;
}

/* ---- logits processing ---- */

void smp_process(const smp_seq *q, float *logits, int vocab, smp_scratch *w)
{
    const eng_sampling *s = q->s;
    for (int i = 0; i < s->n_logit_bias; i++)
        logits[s->logit_bias_ids[i]] += s->logit_bias_vals[i];
    if (q->n_output < s->min_tokens) {
        for (int i = 0; i < q->n_eos; i++)
            logits[q->eos[i]] = -INFINITY;
        for (int i = 0; i < s->n_stop_ids; i++)
            logits[s->stop_ids[i]] = -INFINITY;
    }
    const int32_t *out = q->tokens + q->n_prompt;
    int n_all = q->n_prompt + q->n_output;
    if (s->repetition_penalty != 1.0f && s->repetition_penalty > 0) {
        /* Each distinct token of prompt and output once; seen[] is cleared
         * by walking the same list so the scratch stays zero. */
        float rp = s->repetition_penalty;
        for (int i = 0; i < n_all; i++) {
            int32_t t = q->tokens[i];
            if (w->seen[t])
                continue;
            w->seen[t] = 1;
            logits[t] = logits[t] > 0 ? logits[t] / rp : logits[t] * rp;
        }
        for (int i = 0; i < n_all; i++)
            w->seen[q->tokens[i]] = 0;
    }
    if (s->frequency_penalty != 0 || s->presence_penalty != 0) {
        for (int i = 0; i < q->n_output; i++)
            w->cnt[out[i]]++;
        for (int i = 0; i < q->n_output; i++) {
            int32_t t = out[i];
            if (!w->cnt[t])
                continue;
            logits[t] -= s->frequency_penalty * (float)w->cnt[t] + s->presence_penalty;
            w->cnt[t] = 0;
        }
    }
    (void)vocab;
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Sort order for candidates: higher weight first, lower id on ties.
 * qsort has no context argument in C11; thread-local keeps two engines
 * (two threads) apart. */
static _Thread_local const float *cmp_w;
static int cmp_desc(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (cmp_w[i] != cmp_w[j])
        return cmp_w[i] > cmp_w[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

/* Collects into idx, sorted, every token of weight >= t for the largest t
 * (max weight 1, divided by 8 at a time) whose set already holds what top_k
 * and top_p can keep: at least k tokens, and a mass of at least top_p of
 * the total. Everything below t would be cut anyway, so sorting only this
 * set gives the same result as sorting the vocabulary (a few thousand
 * tokens instead of 150k for a real model). */
static int candidates(const float *w, int vocab, int k, double need_mass, int32_t *idx)
{
    float t = 1;
    for (;;) {
        int n = 0;
        double mass = 0;
        for (int i = 0; i < vocab; i++)
            if (w[i] >= t && w[i] > 0) {
                idx[n++] = i;
                mass += w[i];
            }
        if ((n >= k && mass >= need_mass) || t == 0) {
            cmp_w = w;
            qsort(idx, (size_t)n, sizeof *idx, cmp_desc);
            return n;
        }
        t = t > 1e-30f ? t / 8 : 0;
    }
}

void smp_probs(const eng_sampling *s, const float *logits, int vocab, float *probs,
               smp_scratch *w)
{
    float t = s->temperature, mx = -INFINITY;
    for (int i = 0; i < vocab; i++)
        if (logits[i] > mx)
            mx = logits[i];
    /* Unnormalised softmax weights at temperature t; the max has weight 1,
     * so min_p compares each weight against min_p directly. */
    double total = 0;
    for (int i = 0; i < vocab; i++) {
        probs[i] = expf((logits[i] - mx) / t);
        if (probs[i] < s->min_p)
            probs[i] = 0;
        total += probs[i];
    }
    int k = s->top_k > 0 && s->top_k < vocab ? s->top_k : 0;
    int use_p = s->top_p > 0 && s->top_p < 1;
    if (k || use_p) {
        /* With top_k the top_p mass is taken over the k kept; the set must
         * hold those k (and their ties) whole, whatever their mass. */
        int n = candidates(probs, vocab, k, k ? 0 : s->top_p * total, w->idx);
        int keep = n;
        if (k && k < n) {
            /* as vLLM: everything at least as likely as the k-th stays */
            float kth = probs[w->idx[k - 1]];
            keep = k;
            while (keep < n && probs[w->idx[keep]] >= kth)
                keep++;
        }
        if (use_p) {
            /* the nucleus of what top_k left, or of the whole distribution */
            double sum = 0, before = 0;
            for (int i = 0; k && i < keep; i++)
                sum += probs[w->idx[i]];
            if (!k)
                sum = total;
            int kp = 0;
            while (kp < keep && (kp == 0 || before < s->top_p * sum)) {
                before += probs[w->idx[kp]];
                kp++;
            }
            keep = kp;
        }
        /* zero all but the kept (marked in seen, which is left clean) */
        total = 0;
        for (int i = 0; i < keep; i++) {
            w->seen[w->idx[i]] = 1;
            total += probs[w->idx[i]];
        }
        for (int i = 0; i < vocab; i++)
            if (!w->seen[i])
                probs[i] = 0;
        for (int i = 0; i < keep; i++)
            w->seen[w->idx[i]] = 0;
    }
    for (int i = 0; i < vocab; i++)
        probs[i] = (float)(probs[i] / total);
}

int32_t smp_sample(const smp_seq *q, float *logits, int vocab, double u, smp_scratch *w)
{
    smp_process(q, logits, vocab, w);
    /* vLLM treats a temperature this small as greedy */
    if (q->s->temperature < 1e-5f)
        return argmax(logits, vocab);
    float *p = w->p;
    smp_probs(q->s, logits, vocab, p, w);
    double acc = 0, target = u;
    int last = -1;
    for (int i = 0; i < vocab; i++) {
        if (p[i] <= 0)
            continue;
        acc += p[i];
        last = i;
        if (acc > target)
            return i;
    }
    return last >= 0 ? last : argmax(logits, vocab); /* rounding left u past the end */
}

void smp_logprobs(const float *logits, int vocab, int32_t token, int k, float *lp,
                  int32_t *top_ids, float *top_lp, smp_scratch *w)
{
    float mx = -INFINITY;
    for (int i = 0; i < vocab; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double z = 0;
    for (int i = 0; i < vocab; i++)
        z += exp((double)logits[i] - mx);
    double lz = mx + log(z);
    *lp = (float)((double)logits[token] - lz);
    if (k <= 0)
        return;
    if (k > vocab)
        k = vocab;
    /* Partial selection: keep the k best in idx[0..k) by insertion. */
    int n = 0;
    for (int i = 0; i < vocab; i++) {
        if (n == k && !(logits[i] > logits[w->idx[k - 1]]))
            continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && logits[i] > logits[w->idx[j - 1]]) {
            w->idx[j] = w->idx[j - 1];
            j--;
        }
        w->idx[j] = i;
    }
    for (int i = 0; i < k; i++) {
        top_ids[i] = w->idx[i];
        top_lp[i] = (float)((double)logits[w->idx[i]] - lz);
    }
}

/* ---- sampling from the device's candidates ---- */

int smp_needs_full_row(const smp_seq *q, int top_logprobs)
{
    const eng_sampling *s = q->s;
    if (s->n_logit_bias > 0)
        return 1;
    if (q->n_output < s->min_tokens && (q->n_eos > 0 || s->n_stop_ids > 0))
        return 1;
    if (s->repetition_penalty != 1.0f && s->repetition_penalty > 0)
        return 1;
    if ((s->frequency_penalty != 0 || s->presence_penalty != 0) && q->n_output > 0)
        return 1;
    return top_logprobs > BE_TOPK;
}

be_sample_row smp_device_row(const eng_sampling *s, double u)
{
    /* the list serves top_k / top_p draws and top_logprobs; greedy rows
     * without them need only the argmax (and lse for a logprob) */
    int top = s->top_logprobs > 0 ||
              (s->temperature >= 1e-5f && (s->top_k > 0 || (s->top_p > 0 && s->top_p < 1)));
    be_sample_row r = {.temperature = s->temperature, .min_p = s->min_p, .u = u, .top = top};
    return r;
}

/* One candidate: its weight as smp_probs computes it, and its id. */
typedef struct cand {
    float w;
    int32_t id;
} cand;

int smp_pick_from_candidates(const eng_sampling *s, const be_sample_out *o, int vocab,
                             double u, int32_t *tok)
{
    int k = s->top_k > 0 && s->top_k < vocab ? s->top_k : 0;
    int use_p = s->top_p > 0 && s->top_p < 1;
    if (s->temperature < 1e-5f || (!k && !use_p)) {
        *tok = o->token;
        return 0;
    }
    int n = o->n_top;
    if (n < 1 || n > BE_TOPK)
        return -1;
    /* Weights of the list, in smp_probs' sort order: weight descending,
     * lower id first. The list is already by logit descending, so only
     * runs of equal weight need their ids put in order. */
    cand c[BE_TOPK];
    float mx = o->top_vals[0], t = s->temperature;
    for (int i = 0; i < n; i++) {
        float w = expf((o->top_vals[i] - mx) / t);
        c[i] = (cand){w < s->min_p ? 0 : w, o->top_ids[i]};
        for (int j = i; j > 0 && c[j].w == c[j - 1].w && c[j].id < c[j - 1].id; j--) {
            cand x = c[j];
            c[j] = c[j - 1];
            c[j - 1] = x;
        }
    }
    /* Every token outside the list weighs at most the list's last weight;
     * so tokens above it are all here, and when it is 0 the list holds the
     * whole support (a token of equal weight outside could sort before
     * one inside only at that last weight). */
    float w_end = c[n - 1].w;
    int whole = n == vocab || w_end == 0;
    int nz = 0;
    while (nz < n && c[nz].w > 0)
        nz++;
    int keep = nz;
    if (k) {
        if (k >= nz) {
            if (!whole)
                return -1;
        } else {
            /* as smp_probs (vLLM): everything as likely as the k-th stays */
            float kth = c[k - 1].w;
            if (!whole && kth <= w_end)
                return -1;
            keep = k;
            while (keep < nz && c[keep].w >= kth)
                keep++;
        }
    }
    if (use_p) {
        double sum = 0, before = 0;
        if (k)
            for (int i = 0; i < keep; i++)
                sum += c[i].w;
        else
            sum = o->total;
        int kp = 0;
        while (kp == 0 || before < s->top_p * sum) {
            if (kp == keep) {
                if (k || whole)
                    break;
                return -1;
            }
            if (!k && !whole && c[kp].w <= w_end)
                return -1;
            before += c[kp].w;
            kp++;
        }
        keep = kp;
    }
    if (keep == 0) /* nothing kept: cannot happen with the max weighing 1 */
        return -1;
    double total = 0;
    for (int i = 0; i < keep; i++)
        total += c[i].w;
    /* the inverse CDF walks token ids in order */
    for (int i = 1; i < keep; i++)
        for (int j = i; j > 0 && c[j].id < c[j - 1].id; j--) {
            cand x = c[j];
            c[j] = c[j - 1];
            c[j - 1] = x;
        }
    double acc = 0;
    int last = -1;
    for (int i = 0; i < keep; i++) {
        float p = (float)(c[i].w / total);
        if (p <= 0)
            continue;
        acc += p;
        last = i;
        if (acc > u)
            break;
    }
    if (last < 0)
        return -1;
    *tok = c[last].id;
    return 0;
}

int smp_logprobs_from_candidates(const be_sample_out *o, int vocab, int32_t tok, int k,
                                 float *lp, int32_t *top_ids, float *top_lp)
{
    /* the list first: token_logit is only needed for a draw outside it */
    float l = 0;
    int found = 0;
    for (int i = 0; !found && i < o->n_top; i++)
        if (o->top_ids[i] == tok) {
            l = o->top_vals[i];
            found = 1;
        }
    if (!found && tok == o->token) {
        l = o->token_logit;
        found = 1;
    }
    if (!found)
        return -1;
    if (k > vocab)
        k = vocab;
    if (k > o->n_top)
        return -1;
    *lp = (float)((double)l - o->lse);
    for (int i = 0; i < k; i++) {
        top_ids[i] = o->top_ids[i];
        top_lp[i] = (float)((double)o->top_vals[i] - o->lse);
    }
    return 0;
}
