/* model/llama: the Llama family of decoders — LlamaForCausalLM,
 * MistralForCausalLM, Qwen2ForCausalLM (q/k/v bias) and Qwen3ForCausalLM
 * (q/k RMSNorm per head) — as one forward pass over backend ops, checked
 * against Hugging Face transformers' modeling_llama / modeling_qwen3. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/internal.h"
#include "model/model.h"

typedef struct layer_weights {
    be_weight input_norm;     /* (hidden) */
    be_weight wq, wk, wv, wo; /* (heads*hd, hidden) (kv*hd, hidden) x2 (hidden, heads*hd) */
    be_weight bq, bk, bv, bo; /* biases, data NULL when absent */
    be_weight q_norm, k_norm; /* (hd), Qwen3 only */
    be_weight post_norm;      /* (hidden) */
    be_weight w_gate, w_up;   /* (inter, hidden) */
    be_weight w_down;         /* (hidden, inter) */
} layer_weights;

/* Activations for up to `cap` tokens of one step; grown, never shrunk. */
typedef struct run_state {
    int cap;
    float *x;        /* (cap, hidden) residual stream */
    float *h;        /* (cap, hidden) normed input */
    float *q;        /* (cap, heads*hd) */
    float *k, *v;    /* (cap, kv*hd) */
    float *att;      /* (cap, heads*hd) */
    float *o;        /* (cap, hidden) */
    float *gate, *up;/* (cap, inter) */
    int logit_cap;
    float *last;     /* (logit_cap, hidden) rows that need logits */
    float *last_n;   /* (logit_cap, hidden) */
    float *logits;   /* (logit_cap, vocab) on device backends or after a
                        mdl_forward_sample, else NULL */
    int n_kept;      /* rows of logits the last forward left there for
                        mdl_logits_rows (0 after mdl_forward) */
} run_state;

struct mdl_model {
    ld_config cfg;
    ld_weights *files;
    be_backend *be;
    be_weight embed;          /* (vocab, hidden) */
    be_weight final_norm;     /* (hidden) */
    be_weight lm_head;        /* (vocab, hidden), the embedding when tied */
    layer_weights *layers;    /* (n_layers) */
    float *inv_freq;          /* (rot_dim/2) with the rope scaling applied */
    be_rope rope;
    int block_size, n_blocks;
    float **k_cache, **v_cache; /* per layer (n_blocks*block_size, kv*hd) */
    run_state rs;
};

/* ---- rotary embedding frequencies (transformers' modeling_rope_utils) ---- */

static double yarn_mscale(double scale, double m)
{
    return scale <= 1.0 ? 1.0 : 0.1 * m * log(scale) + 1.0;
}

static double yarn_correction_dim(double rotations, int dim, double base, double max_pos)
{
    return (dim * log(max_pos / (rotations * 2.0 * M_PI))) / (2.0 * log(base));
}

/* Fills m->inv_freq and m->rope for the config's rope type. Frequencies are
 * computed in float32 as torch does, so positions hit the same angles. */
static int rope_init(mdl_model *m, inferd_error *e)
{
    const ld_config *c = &m->cfg;
    const ld_rope *r = &c->rope;
    double prf = r->partial_rotary_factor > 0 ? r->partial_rotary_factor : 1.0;
    int dim = (int)(c->head_dim * prf);
    if (dim <= 0 || dim % 2 || dim > 1024) {
        err_set(e, "unsupported rotary dimension %d", dim);
        return -1;
    }
    int half = dim / 2;
    m->inv_freq = malloc((size_t)half * sizeof(float));
    if (!m->inv_freq) {
        err_set(e, "out of memory");
        return -1;
    }
    float mscale = 1.0f;
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)dim;
        float pos_freq = powf((float)r->theta, expo);
        float inv = 1.0f / pos_freq;
        switch (r->type) {
        case LD_ROPE_DEFAULT:
            break;
        case LD_ROPE_LINEAR:
            inv = inv / (float)r->factor;
            break;
        case LD_ROPE_LLAMA3: {
            double old_ctx = r->original_max_position_embeddings;
            double low_wl = old_ctx / r->low_freq_factor;
            double high_wl = old_ctx / r->high_freq_factor;
            double wl = 2.0 * M_PI / inv;
            if (wl > low_wl) {
                inv = inv / (float)r->factor;
            } else if (!(wl < high_wl)) {
                double smooth = (old_ctx / wl - r->low_freq_factor) /
                                (r->high_freq_factor - r->low_freq_factor);
                inv = (float)((1.0 - smooth) * inv / r->factor + smooth * inv);
            }
            break;
        }
        case LD_ROPE_YARN: {
            double max_pos = r->original_max_position_embeddings > 0
                                 ? r->original_max_position_embeddings
                                 : c->max_position_embeddings;
            double bf = r->beta_fast > 0 ? r->beta_fast : 32.0;
            double bs = r->beta_slow > 0 ? r->beta_slow : 1.0;
            double lo = floor(yarn_correction_dim(bf, dim, r->theta, max_pos));
            double hi = ceil(yarn_correction_dim(bs, dim, r->theta, max_pos));
            if (lo < 0)
                lo = 0;
            if (hi > dim - 1)
                hi = dim - 1;
            if (lo == hi)
                hi += 0.001;
            float ramp = ((float)i - (float)lo) / (float)(hi - lo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            float extra = 1.0f - ramp;
            float interp = 1.0f / ((float)r->factor * pos_freq);
            inv = interp * (1.0f - extra) + inv * extra;
            break;
        }
        }
        m->inv_freq[i] = inv;
    }
    if (r->type == LD_ROPE_YARN) {
        double af = r->attention_factor;
        if (af <= 0) {
            if (r->mscale > 0 && r->mscale_all_dim > 0)
                af = yarn_mscale(r->factor, r->mscale) / yarn_mscale(r->factor, r->mscale_all_dim);
            else
                af = yarn_mscale(r->factor, 1.0);
        }
        mscale = (float)af;
    }
    m->rope.inv_freq = m->inv_freq;
    m->rope.rot_dim = dim;
    m->rope.mscale = mscale;
    return 0;
}

/* ---- weights ---- */

static int get_weight(mdl_model *m, const char *name, int64_t rows, int64_t cols,
                      int optional, be_weight *out, inferd_error *e)
{
    return mdl_weight_from_tensor(m->be, ld_weights_find(m->files, name), "", name, rows, cols,
                                  optional, out, e);
}

static int load_layer(mdl_model *m, int i, inferd_error *e)
{
    const ld_config *c = &m->cfg;
    layer_weights *L = &m->layers[i];
    const int64_t hid = c->hidden_size, hd = c->head_dim;
    const int64_t qd = c->num_attention_heads * hd, kvd = c->num_key_value_heads * hd;
    const int64_t inter = c->intermediate_size;
    char n[160];
#define W(field, suffix, r, cl, opt)                                                  \
    do {                                                                              \
        snprintf(n, sizeof n, "model.layers.%d.%s", i, suffix);                       \
        if (get_weight(m, n, r, cl, opt, &L->field, e))                               \
            return -1;                                                                \
    } while (0)
    W(input_norm, "input_layernorm.weight", 1, hid, 0);
    W(wq, "self_attn.q_proj.weight", qd, hid, 0);
    W(wk, "self_attn.k_proj.weight", kvd, hid, 0);
    W(wv, "self_attn.v_proj.weight", kvd, hid, 0);
    W(wo, "self_attn.o_proj.weight", hid, qd, 0);
    W(bq, "self_attn.q_proj.bias", 1, qd, !c->attention_bias);
    W(bk, "self_attn.k_proj.bias", 1, kvd, !c->attention_bias);
    W(bv, "self_attn.v_proj.bias", 1, kvd, !c->attention_bias);
    W(bo, "self_attn.o_proj.bias", 1, hid, !c->o_bias);
    if (c->arch == LD_ARCH_QWEN3) {
        W(q_norm, "self_attn.q_norm.weight", 1, hd, 0);
        W(k_norm, "self_attn.k_norm.weight", 1, hd, 0);
    }
    W(post_norm, "post_attention_layernorm.weight", 1, hid, 0);
    W(w_gate, "mlp.gate_proj.weight", inter, hid, 0);
    W(w_up, "mlp.up_proj.weight", inter, hid, 0);
    W(w_down, "mlp.down_proj.weight", hid, inter, 0);
#undef W
    return 0;
}

int mdl_load(const char *dir, const mdl_options *opt, mdl_model **out, inferd_error *e)
{
    mdl_model *m = calloc(1, sizeof *m);
    if (!m) {
        err_set(e, "out of memory");
        return -1;
    }
    const char *device = opt && opt->device ? opt->device : "cpu";
    if (ld_config_load(dir, &m->cfg, e))
        goto err;
    const ld_config *c = &m->cfg;
    if (mdl_resolve_device(device, &device, NULL, 0, e))
        goto err;
    if (strcmp(c->hidden_act, "silu") != 0 && c->hidden_act[0]) {
        err_set(e, "%s/config.json: hidden_act '%s' is not supported (supported: silu)", dir,
                c->hidden_act);
        goto err;
    }
    int bf16 = 0;
    if (mdl_parse_matmul_precision(opt ? opt->matmul_precision : NULL, &bf16, e))
        goto err;
    m->be = strcmp(device, "cuda") == 0 ? be_cuda_new(0, e)
                                        : be_cpu_new(opt ? opt->n_threads : 0, e);
    if (!m->be)
        goto err;
    be_set_matmul_bf16(m->be, bf16);
    if (ld_weights_open_dir(dir, &m->files, e))
        goto err;
    if (get_weight(m, "model.embed_tokens.weight", c->vocab_size, c->hidden_size, 0,
                   &m->embed, e) ||
        get_weight(m, "model.norm.weight", 1, c->hidden_size, 0, &m->final_norm, e) ||
        get_weight(m, "lm_head.weight", c->vocab_size, c->hidden_size, 1, &m->lm_head, e))
        goto err_named;
    if (!m->lm_head.data) {
        if (!c->tie_word_embeddings) {
            err_set(e, "tensor 'lm_head.weight' is missing and tie_word_embeddings is false");
            goto err_named;
        }
        m->lm_head = m->embed;
    }
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    if (!m->layers) {
        err_set(e, "out of memory");
        goto err;
    }
    for (int i = 0; i < c->num_hidden_layers; i++)
        if (load_layer(m, i, e))
            goto err_named;
    if (rope_init(m, e))
        goto err;
    *out = m;
    return 0;
err_named:
    err_prefix(e, "%s", dir);
err:
    mdl_free(m);
    return -1;
}

static void run_state_free(mdl_model *m)
{
    run_state *s = &m->rs;
    float **bufs[] = {&s->x, &s->h, &s->q, &s->k, &s->v, &s->att, &s->o, &s->gate,
                      &s->up, &s->last, &s->last_n, &s->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        be_dealloc(m->be, *bufs[i]);
        *bufs[i] = NULL;
    }
    s->cap = s->logit_cap = s->n_kept = 0;
}

void mdl_free(mdl_model *m)
{
    if (!m)
        return;
    if (m->be) {
        run_state_free(m);
        for (int i = 0; m->k_cache && i < m->cfg.num_hidden_layers; i++) {
            be_dealloc(m->be, m->k_cache[i]);
            be_dealloc(m->be, m->v_cache[i]);
        }
    }
    free(m->k_cache);
    free(m->v_cache);
    free(m->layers);
    free(m->inv_freq);
    ld_weights_close(m->files);
    be_free(m->be);
    free(m);
}

const ld_config *mdl_config(const mdl_model *m) { return &m->cfg; }

int mdl_device_memory(const mdl_model *m, size_t *free_bytes, size_t *total_bytes,
                      inferd_error *e)
{
    return be_mem_info(m->be, free_bytes, total_bytes, e);
}

size_t mdl_kv_block_bytes(const mdl_model *m, int block_size)
{
    const ld_config *c = &m->cfg;
    return 2 * (size_t)c->num_hidden_layers * (size_t)block_size *
           (size_t)(c->num_key_value_heads * c->head_dim) * dtype_size(be_kv_dtype(m->be));
}

int mdl_kv_init(mdl_model *m, int n_blocks, int block_size, inferd_error *e)
{
    const ld_config *c = &m->cfg;
    if (m->k_cache) {
        err_set(e, "the KV cache is already allocated");
        return -1;
    }
    size_t per_layer = (size_t)n_blocks * (size_t)block_size *
                       (size_t)(c->num_key_value_heads * c->head_dim) *
                       dtype_size(be_kv_dtype(m->be));
    m->k_cache = calloc((size_t)c->num_hidden_layers, sizeof(float *));
    m->v_cache = calloc((size_t)c->num_hidden_layers, sizeof(float *));
    if (!m->k_cache || !m->v_cache)
        goto oom;
    for (int i = 0; i < c->num_hidden_layers; i++) {
        m->k_cache[i] = be_alloc(m->be, per_layer);
        m->v_cache[i] = be_alloc(m->be, per_layer);
        if (!m->k_cache[i] || !m->v_cache[i])
            goto oom;
    }
    m->n_blocks = n_blocks;
    m->block_size = block_size;
    return 0;
oom:
    err_set(e, "cannot allocate a KV cache of %d blocks (%.1f MiB)", n_blocks,
            (double)per_layer * 2 * c->num_hidden_layers / (1024.0 * 1024.0));
    for (int i = 0; m->k_cache && i < c->num_hidden_layers; i++) {
        be_dealloc(m->be, m->k_cache[i]);
        if (m->v_cache)
            be_dealloc(m->be, m->v_cache[i]);
    }
    free(m->k_cache);
    free(m->v_cache);
    m->k_cache = m->v_cache = NULL;
    return -1;
}

/* Grows the activation buffers to hold n tokens and nl logit rows. */
static int run_state_reserve(mdl_model *m, int n, int nl, int keep_logits, inferd_error *e)
{
    run_state *s = &m->rs;
    const ld_config *c = &m->cfg;
    be_backend *b = m->be;
    if (n > s->cap) {
        size_t hid = (size_t)c->hidden_size, qd = (size_t)c->num_attention_heads * c->head_dim;
        size_t kvd = (size_t)c->num_key_value_heads * c->head_dim;
        size_t inter = (size_t)c->intermediate_size, cap = (size_t)n;
        float **bufs[] = {&s->x, &s->h, &s->q, &s->k, &s->v, &s->att, &s->o, &s->gate, &s->up};
        size_t widths[] = {hid, hid, qd, kvd, kvd, qd, hid, inter, inter};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
            be_dealloc(b, *bufs[i]);
            *bufs[i] = be_alloc(b, cap * widths[i] * sizeof(float));
            if (!*bufs[i])
                goto oom;
        }
        s->cap = n;
        /* the backend's scratch for steps of this size, now rather than
         * in the ops (which cannot return an error) */
        if (be_reserve(b, n, e))
            goto err;
    }
    if (nl > s->logit_cap) {
        size_t bytes = (size_t)nl * (size_t)c->hidden_size * sizeof(float);
        be_dealloc(b, s->last);
        be_dealloc(b, s->last_n);
        be_dealloc(b, s->logits);
        s->logits = NULL;
        s->last = be_alloc(b, bytes);
        s->last_n = be_alloc(b, bytes);
        if (!s->last || !s->last_n)
            goto oom;
        s->logit_cap = nl;
    }
    /* A host backend writes mdl_forward's logits straight into the
     * caller's buffer; a sampled step keeps them in a buffer of its own. */
    if ((!be_is_host(b) || keep_logits) && !s->logits && s->logit_cap > 0) {
        s->logits = be_alloc(b, (size_t)s->logit_cap * (size_t)c->vocab_size * sizeof(float));
        if (!s->logits)
            goto oom;
    }
    return 0;
oom:
    err_set(e, "out of memory for activations of %d tokens", n);
err:
    run_state_free(m);
    return -1;
}

/* The forward pass of mdl_forward; the logits go to logits_host, or, when
 * keep is set, stay in m->rs.logits. */
static int forward(mdl_model *m, const mdl_batch *bt, float *logits_host, int keep,
                   inferd_error *e)
{
    const ld_config *c = &m->cfg;
    be_backend *b = m->be;
    const int n = bt->n_tokens, hid = c->hidden_size, hd = c->head_dim;
    const int heads = c->num_attention_heads, kvh = c->num_key_value_heads;
    const int kvd = kvh * hd, inter = c->intermediate_size;
    const float eps = (float)c->rms_norm_eps, scale = 1.0f / sqrtf((float)hd);
    if (!m->k_cache) {
        err_set(e, "mdl_forward: the KV cache is not allocated");
        return -1;
    }
    m->rs.n_kept = 0;
    if (n <= 0)
        return 0;
    for (int i = 0; i < n; i++)
        if (bt->tokens[i] < 0 || bt->tokens[i] >= c->vocab_size) {
            err_set(e, "token id %d is out of range for a vocabulary of %d", bt->tokens[i],
                    c->vocab_size);
            return -1;
        }
    if (bt->n_logits < 0) {
        err_set(e, "%d logit rows", bt->n_logits);
        return -1;
    }
    if (run_state_reserve(m, n, bt->n_logits, keep, e))
        return -1;
    run_state *s = &m->rs;
    be_attn_layout lay = {
        .n_seqs = bt->n_seqs, .q_start = bt->q_start, .ctx_len = bt->ctx_len,
        .block_table = bt->block_table, .max_blocks = bt->max_blocks,
        .block_size = m->block_size, .slot = bt->slot, .pos = bt->pos, .n_tokens = n,
    };
    be_step st = {.layout = &lay, .tokens = bt->tokens, .n_logits = bt->n_logits,
                  .logit_rows = bt->logit_rows};
    if (be_begin_step(b, &st, e))
        return -1;
    /* on a host backend mdl_forward's buffer takes the logits as they are made */
    float *logits = keep || !be_is_host(b) ? s->logits : logits_host;

    be_embed(b, &m->embed, bt->tokens, n, s->x);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const layer_weights *L = &m->layers[l];
        /* attention block */
        be_rmsnorm(b, s->x, &L->input_norm, eps, n, hid, s->h);
        be_matmul(b, s->h, &L->wq, L->bq.data ? &L->bq : NULL, n, s->q);
        be_matmul(b, s->h, &L->wk, L->bk.data ? &L->bk : NULL, n, s->k);
        be_matmul(b, s->h, &L->wv, L->bv.data ? &L->bv : NULL, n, s->v);
        if (L->q_norm.data) { /* Qwen3: RMSNorm of each head before rotary */
            be_rmsnorm(b, s->q, &L->q_norm, eps, n * heads, hd, s->q);
            be_rmsnorm(b, s->k, &L->k_norm, eps, n * kvh, hd, s->k);
        }
        be_rope_apply(b, s->q, n, heads, hd, &m->rope, bt->pos);
        be_rope_apply(b, s->k, n, kvh, hd, &m->rope, bt->pos);
        be_kv_store(b, s->k, s->v, n, kvd, bt->slot, m->k_cache[l], m->v_cache[l]);
        be_attention(b, s->q, m->k_cache[l], m->v_cache[l], heads, kvh, hd, scale, &lay,
                     s->att);
        be_matmul(b, s->att, &L->wo, L->bo.data ? &L->bo : NULL, n, s->o);
        be_add(b, s->x, s->o, (size_t)n * hid);
        /* MLP block: down(silu(gate(h)) * up(h)) */
        be_rmsnorm(b, s->x, &L->post_norm, eps, n, hid, s->h);
        be_matmul(b, s->h, &L->w_gate, NULL, n, s->gate);
        be_matmul(b, s->h, &L->w_up, NULL, n, s->up);
        be_silu_mul(b, s->gate, s->up, (size_t)n * inter, s->gate);
        be_matmul(b, s->gate, &L->w_down, NULL, n, s->o);
        be_add(b, s->x, s->o, (size_t)n * hid);
    }
    if (bt->n_logits > 0) {
        be_gather_rows(b, s->x, hid, bt->logit_rows, bt->n_logits, s->last);
        be_rmsnorm(b, s->last, &m->final_norm, eps, bt->n_logits, hid, s->last_n);
        be_matmul(b, s->last_n, &m->lm_head, NULL, bt->n_logits, logits);
    }
    if (keep) {
        s->n_kept = bt->n_logits;
        return 0;
    }
    /* The copy waits for the step and reports its errors (on a host
     * backend logits is logits_host: no copy, the report alone). */
    return be_to_host(b, logits_host, logits,
                      (size_t)bt->n_logits * (size_t)c->vocab_size * sizeof(float), e);
}

int mdl_forward(mdl_model *m, const mdl_batch *bt, float *logits, inferd_error *e)
{
    return forward(m, bt, logits, 0, e);
}

int mdl_forward_sample(mdl_model *m, const mdl_batch *bt, const be_sample_row *in,
                       be_sample_out *out, inferd_error *e)
{
    be_backend *b = m->be;
    if (forward(m, bt, NULL, 1, e))
        return -1;
    int n = m->rs.n_kept;
    if (n == 0) /* nothing to sample; still wait for the step and its errors */
        return be_to_host(b, NULL, NULL, 0, e);
    int rc = be_sample_rows(b, m->rs.logits, n, m->cfg.vocab_size, in, out, e);
    if (rc)
        m->rs.n_kept = 0;
    return rc;
}

int mdl_logits_rows(mdl_model *m, int first, int count, float *host, inferd_error *e)
{
    run_state *s = &m->rs;
    size_t vocab = (size_t)m->cfg.vocab_size;
    if (first < 0 || count < 0 || first > s->n_kept - count) {
        err_set(e, "logits rows [%d, %d) asked, the last sampled step kept %d", first,
                first + count, s->n_kept);
        return -1;
    }
    if (count == 0)
        return 0;
    size_t off = (size_t)first * vocab, bytes = (size_t)count * vocab * sizeof(float);
    return be_to_host(m->be, host, s->logits + off, bytes, e);
}
