/* model/bert: BERT-family encoders — BertModel, XLMRobertaModel / RobertaModel
 * and their *ForSequenceClassification heads — as one forward pass over
 * backend ops, checked against transformers' modeling_bert /
 * modeling_xlm_roberta: embeddings (word + absolute position + token type)
 * and LayerNorm, then per layer bidirectional self-attention and a GELU MLP,
 * each followed by residual add and LayerNorm (post-LN). Sequences are packed
 * without padding; attention stays inside each sequence. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/internal.h"
#include "model/model.h"

typedef struct enc_layer {
    be_weight wq, wk, wv, bq, bk, bv; /* (hidden, hidden), (hidden) */
    be_weight wo, bo;                 /* attention.output.dense */
    be_weight ln1_w, ln1_b;           /* attention.output.LayerNorm (hidden) */
    be_weight wi, bi;                 /* intermediate.dense (inter, hidden) */
    be_weight wo2, bo2;               /* output.dense (hidden, inter) */
    be_weight ln2_w, ln2_b;           /* output.LayerNorm (hidden) */
} enc_layer;

struct mdl_encoder {
    ld_encoder_config cfg;
    ld_weights *files;
    be_backend *be;
    char prefix[16];                  /* "", "bert." or "roberta." */
    be_weight word, pos, type;        /* (vocab|max_pos|type_vocab, hidden) */
    be_weight emb_ln_w, emb_ln_b;     /* (hidden) */
    enc_layer *layers;                /* (n_layers) */
    be_weight pool_w, pool_b;         /* BertPooler (hidden, hidden); data NULL if absent */
    /* classifier: BERT: pooler then classifier (labels, hidden);
     * RoBERTa: classifier.dense (hidden, hidden), tanh, classifier.out_proj */
    be_weight head_dense_w, head_dense_b;
    be_weight head_out_w, head_out_b;
};

/* ---- weights ---- */

/* prefix + name, with the old TF-converted LayerNorm names (gamma, beta)
 * tried when the current ones are absent. */
static const ld_tensor *find(const mdl_encoder *m, const char *prefix, const char *name)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    const ld_tensor *t = ld_weights_find(m->files, full);
    size_t n = strlen(full);
    if (!t && n > 7 && strstr(full, "LayerNorm.")) {
        if (!strcmp(full + n - 7, ".weight"))
            snprintf(full + n - 7, sizeof full - (n - 7), ".gamma");
        else if (!strcmp(full + n - 5, ".bias"))
            snprintf(full + n - 5, sizeof full - (n - 5), ".beta");
        t = ld_weights_find(m->files, full);
    }
    return t;
}

/* Looks up prefix+name and checks its shape; vectors are (1, n). */
static int get(mdl_encoder *m, const char *prefix, const char *name, int64_t rows,
               int64_t cols, int optional, be_weight *out, inferd_error *e)
{
    return mdl_weight_from_tensor(m->be, find(m, prefix, name), prefix, name, rows, cols,
                                  optional, out, e);
}

static int load_layer(mdl_encoder *m, int i, inferd_error *e)
{
    const ld_encoder_config *c = &m->cfg;
    enc_layer *L = &m->layers[i];
    const int64_t hid = c->hidden_size, inter = c->intermediate_size;
    char n[160];
#define W(field, suffix, r, cl)                                                   \
    do {                                                                          \
        snprintf(n, sizeof n, "encoder.layer.%d.%s", i, suffix);                  \
        if (get(m, m->prefix, n, r, cl, 0, &L->field, e))                         \
            return -1;                                                            \
    } while (0)
    W(wq, "attention.self.query.weight", hid, hid);
    W(bq, "attention.self.query.bias", 1, hid);
    W(wk, "attention.self.key.weight", hid, hid);
    W(bk, "attention.self.key.bias", 1, hid);
    W(wv, "attention.self.value.weight", hid, hid);
    W(bv, "attention.self.value.bias", 1, hid);
    W(wo, "attention.output.dense.weight", hid, hid);
    W(bo, "attention.output.dense.bias", 1, hid);
    W(ln1_w, "attention.output.LayerNorm.weight", 1, hid);
    W(ln1_b, "attention.output.LayerNorm.bias", 1, hid);
    W(wi, "intermediate.dense.weight", inter, hid);
    W(bi, "intermediate.dense.bias", 1, inter);
    W(wo2, "output.dense.weight", hid, inter);
    W(bo2, "output.dense.bias", 1, hid);
    W(ln2_w, "output.LayerNorm.weight", 1, hid);
    W(ln2_b, "output.LayerNorm.bias", 1, hid);
#undef W
    return 0;
}

/* A head the loader guessed from the ModelScope task (head_by_task) that
 * the weights do not hold: the folder is the bare encoder after all, served
 * for embeddings as before, named as transformers names the bare model. */
static void drop_guessed_head(mdl_encoder *m)
{
    ld_encoder_config *c = &m->cfg;
    const char *head = c->roberta ? "classifier.out_proj.weight" : "classifier.weight";
    if (!c->head_by_task || find(m, "", head))
        return;
    c->num_labels = 0;
    c->head_by_task = 0;
    char *f = strstr(c->architecture, "For");
    if (f)
        snprintf(f, sizeof c->architecture - (size_t)(f - c->architecture), "Model");
}

static int load_head(mdl_encoder *m, inferd_error *e)
{
    drop_guessed_head(m);
    const ld_encoder_config *c = &m->cfg;
    const int64_t hid = c->hidden_size, nl = c->num_labels;
    if (get(m, m->prefix, "pooler.dense.weight", hid, hid, 1, &m->pool_w, e) ||
        get(m, m->prefix, "pooler.dense.bias", 1, hid, 1, &m->pool_b, e))
        return -1;
    if (!nl)
        return 0;
    if (c->roberta)
        return get(m, "", "classifier.dense.weight", hid, hid, 0, &m->head_dense_w, e) ||
               get(m, "", "classifier.dense.bias", 1, hid, 0, &m->head_dense_b, e) ||
               get(m, "", "classifier.out_proj.weight", nl, hid, 0, &m->head_out_w, e) ||
               get(m, "", "classifier.out_proj.bias", 1, nl, 0, &m->head_out_b, e)
                   ? -1 : 0;
    if (!m->pool_w.data) {
        err_set(e, "a BertForSequenceClassification checkpoint needs the pooler "
                   "('%spooler.dense.weight')", m->prefix);
        return -1;
    }
    return get(m, "", "classifier.weight", nl, hid, 0, &m->head_out_w, e) ||
           get(m, "", "classifier.bias", 1, nl, 0, &m->head_out_b, e) ? -1 : 0;
}

int mdl_encoder_load(const char *dir, const mdl_options *opt, mdl_encoder **out,
                     inferd_error *e)
{
    mdl_encoder *m = calloc(1, sizeof *m);
    if (!m) {
        err_set(e, "out of memory");
        return -1;
    }
    const char *device = opt && opt->device ? opt->device : "cpu";
    if (ld_encoder_config_load(dir, &m->cfg, e))
        goto err;
    const ld_encoder_config *c = &m->cfg;
    if (mdl_resolve_device(device, &device, NULL, 0, e))
        goto err;
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
    /* The bare model saves "embeddings...", the task models "bert.embeddings..." */
    static const char *prefixes[] = {"", "bert.", "roberta.", "model."};
    size_t k;
    for (k = 0; k < sizeof prefixes / sizeof prefixes[0]; k++)
        if (find(m, prefixes[k], "embeddings.word_embeddings.weight"))
            break;
    if (k == sizeof prefixes / sizeof prefixes[0]) {
        err_set(e, "no 'embeddings.word_embeddings.weight' (nor with a bert., roberta. or "
                   "model. prefix) in the checkpoint");
        goto err_named;
    }
    snprintf(m->prefix, sizeof m->prefix, "%s", prefixes[k]);
    const int64_t hid = c->hidden_size;
    if (get(m, m->prefix, "embeddings.word_embeddings.weight", c->vocab_size, hid, 0, &m->word,
            e) ||
        get(m, m->prefix, "embeddings.position_embeddings.weight", c->max_position_embeddings,
            hid, 0, &m->pos, e) ||
        get(m, m->prefix, "embeddings.token_type_embeddings.weight", c->type_vocab_size, hid, 1,
            &m->type, e) ||
        get(m, m->prefix, "embeddings.LayerNorm.weight", 1, hid, 0, &m->emb_ln_w, e) ||
        get(m, m->prefix, "embeddings.LayerNorm.bias", 1, hid, 0, &m->emb_ln_b, e))
        goto err_named;
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    if (!m->layers) {
        err_set(e, "out of memory");
        goto err;
    }
    for (int i = 0; i < c->num_hidden_layers; i++)
        if (load_layer(m, i, e))
            goto err_named;
    if (load_head(m, e))
        goto err_named;
    *out = m;
    return 0;
err_named:
    err_prefix(e, "%s", dir);
err:
    mdl_encoder_free(m);
    return -1;
}

void mdl_encoder_free(mdl_encoder *m)
{
    if (!m)
        return;
    free(m->layers);
    ld_weights_close(m->files);
    be_free(m->be);
    free(m);
}

const ld_encoder_config *mdl_encoder_config(const mdl_encoder *m) { return &m->cfg; }

int mdl_encoder_has_pooler(const mdl_encoder *m) { return m->pool_w.data != NULL; }

int mdl_encoder_set_pooling(mdl_encoder *m, int pooling, int normalize, inferd_error *e)
{
    if (pooling == LD_POOL_POOLER && !m->pool_w.data) {
        err_set(e, "this checkpoint has no pooler weights; use cls, mean or last pooling");
        return -1;
    }
    if (pooling >= 0)
        m->cfg.pooling = (ld_pooling)pooling;
    if (normalize >= 0)
        m->cfg.normalize = normalize;
    return 0;
}

/* ---- forward ---- */

/* Absolute positions: 0.. for BERT; for RoBERTa, transformers numbers the
 * non-padding tokens from pad_token_id + 1 and gives padding pad_token_id. */
static int positions(const mdl_encoder *m, const mdl_enc_batch *b, int32_t *pos,
                     inferd_error *e)
{
    const ld_encoder_config *c = &m->cfg;
    for (int s = 0; s < b->n_seqs; s++) {
        int32_t k = 0;
        for (int t = b->q_start[s]; t < b->q_start[s + 1]; t++) {
            if (!c->roberta)
                pos[t] = k++;
            else
                pos[t] = b->tokens[t] == c->pad_token_id ? c->pad_token_id
                                                         : c->pad_token_id + 1 + k++;
            if (pos[t] >= c->max_position_embeddings) {
                err_set(e, "sequence %d has %d tokens; this model takes at most %d", s,
                        b->q_start[s + 1] - b->q_start[s],
                        c->max_position_embeddings - (c->roberta ? c->pad_token_id + 1 : 0));
                return -1;
            }
        }
    }
    return 0;
}

static int check_batch(const mdl_encoder *m, const mdl_enc_batch *b, inferd_error *e)
{
    const ld_encoder_config *c = &m->cfg;
    if (b->n_seqs < 1 || b->q_start[0] != 0) {
        err_set(e, "empty batch");
        return -1;
    }
    for (int s = 0; s < b->n_seqs; s++)
        if (b->q_start[s + 1] <= b->q_start[s]) {
            err_set(e, "sequence %d is empty", s);
            return -1;
        }
    for (int t = 0; t < b->q_start[b->n_seqs]; t++) {
        if (b->tokens[t] < 0 || b->tokens[t] >= c->vocab_size) {
            err_set(e, "token id %d is outside the vocabulary (0..%d)", b->tokens[t],
                    c->vocab_size - 1);
            return -1;
        }
        int tt = b->token_types ? b->token_types[t] : 0;
        if (tt < 0 || tt >= (m->type.data ? c->type_vocab_size : 1)) {
            err_set(e, "token type %d is outside 0..%d", tt,
                    (m->type.data ? c->type_vocab_size : 1) - 1);
            return -1;
        }
    }
    return 0;
}

static void pool_rows(const mdl_encoder *m, const mdl_enc_batch *b, const float *x,
                      ld_pooling how, float *out)
{
    const int hid = m->cfg.hidden_size;
    for (int s = 0; s < b->n_seqs; s++) {
        int t0 = b->q_start[s], t1 = b->q_start[s + 1];
        float *o = out + (int64_t)s * hid;
        if (how == LD_POOL_MEAN) {
            memset(o, 0, (size_t)hid * sizeof(float));
            for (int t = t0; t < t1; t++)
                for (int i = 0; i < hid; i++)
                    o[i] += x[(int64_t)t * hid + i];
            for (int i = 0; i < hid; i++)
                o[i] /= (float)(t1 - t0);
        } else {
            int t = how == LD_POOL_LAST ? t1 - 1 : t0;
            memcpy(o, x + (int64_t)t * hid, (size_t)hid * sizeof(float));
        }
    }
}

int mdl_encoder_forward(mdl_encoder *m, const mdl_enc_batch *b, ld_pooling pooling,
                        int normalize, float *pooled, float *logits, inferd_error *e)
{
    const ld_encoder_config *c = &m->cfg;
    be_backend *be = m->be;
    if (check_batch(m, b, e))
        return -1;
    if (logits && !c->num_labels) {
        err_set(e, "this model has no classification head (%s)", c->architecture);
        return -1;
    }
    if (pooled && pooling == LD_POOL_POOLER && !m->pool_w.data) {
        err_set(e, "this checkpoint has no pooler weights; use cls, mean or last pooling");
        return -1;
    }
    /* Activations live in backend memory: index arrays go up through
     * be_begin_step, results come down by be_to_host (on the CPU a memcpy,
     * or nothing where the host buffer is the backend's). */
    const int n = b->q_start[b->n_seqs], ns = b->n_seqs, hid = c->hidden_size;
    const int heads = c->num_attention_heads, hd = hid / heads, inter = c->intermediate_size;
    const size_t nh = (size_t)n * hid;
    const int pool_host = pooled && pooling != LD_POOL_POOLER; /* pool_rows on a host copy */
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    int32_t *types = calloc((size_t)n, sizeof *types);
    float *x = be_alloc(be, nh * sizeof(float));       /* (n, hidden) residual stream */
    float *tmp = be_alloc(be, nh * sizeof(float));     /* (n, hidden) */
    float *q = be_alloc(be, nh * sizeof(float));       /* (n, heads, hd) */
    float *k = be_alloc(be, nh * sizeof(float));
    float *v = be_alloc(be, nh * sizeof(float));
    float *att = be_alloc(be, nh * sizeof(float));
    float *mid = be_alloc(be, (size_t)n * inter * sizeof(float)); /* (n, inter) */
    float *cls = be_alloc(be, (size_t)ns * hid * sizeof(float));  /* (n_seqs, hidden) */
    float *cls2 = be_alloc(be, (size_t)ns * hid * sizeof(float));
    int32_t *first = malloc((size_t)ns * sizeof *first); /* each sequence's first row */
    float *lg = logits ? be_alloc(be, (size_t)ns * c->num_labels * sizeof(float)) : NULL;
    /* (n, hidden) host copy of the last hidden states; a host backend's x is one */
    float *xh = !pool_host ? NULL : be_is_host(be) ? x : malloc(nh * sizeof(float));
    int rc = -1;
    if (!pos || !types || !x || !tmp || !q || !k || !v || !att || !mid || !cls || !cls2 ||
        !first || (logits && !lg) || (pool_host && !xh)) {
        err_set(e, "out of memory for a batch of %d tokens", n);
        goto out;
    }
    /* the backend's scratch for a batch of n rows: an error now, not in an op */
    if (be_reserve(be, n, e) || positions(m, b, pos, e))
        goto out;
    if (b->token_types)
        memcpy(types, b->token_types, (size_t)n * sizeof *types);
    for (int s = 0; s < ns; s++)
        first[s] = b->q_start[s];
    /* begin_step uploads the arrays the ops index with: token ids,
     * positions, token types (in the slot field, which encoders do not use)
     * and the first rows (as logit rows). Its layout is one sequence of at
     * least 2 rows, so a device backend takes the step for a prompt step
     * without a KV cache and never records it. */
    int32_t one_seq[2] = {0, n < 2 ? 2 : n};
    be_attn_layout lay = {.n_seqs = 1, .q_start = one_seq, .pos = pos, .slot = types,
                          .n_tokens = n};
    be_step st = {.layout = &lay, .tokens = b->tokens, .n_logits = ns, .logit_rows = first};
    if (be_begin_step(be, &st, e))
        goto out;

    /* embeddings */
    be_embed(be, &m->word, b->tokens, n, x);
    be_embed(be, &m->pos, pos, n, tmp);
    be_add(be, x, tmp, nh);
    if (m->type.data) {
        be_embed(be, &m->type, types, n, tmp);
        be_add(be, x, tmp, nh);
    }
    be_layernorm(be, x, &m->emb_ln_w, &m->emb_ln_b, (float)c->layer_norm_eps, n, hid, x);

    /* layers: post-LN, x = LN(x + attn(x)); x = LN(x + mlp(x)) */
    const float scale = 1.0f / sqrtf((float)hd);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const enc_layer *L = &m->layers[l];
        be_matmul(be, x, &L->wq, &L->bq, n, q);
        be_matmul(be, x, &L->wk, &L->bk, n, k);
        be_matmul(be, x, &L->wv, &L->bv, n, v);
        be_attention_full(be, q, k, v, heads, hd, scale, ns, b->q_start, att);
        be_matmul(be, att, &L->wo, &L->bo, n, tmp);
        be_add(be, tmp, x, nh);
        be_layernorm(be, tmp, &L->ln1_w, &L->ln1_b, (float)c->layer_norm_eps, n, hid, x);
        be_matmul(be, x, &L->wi, &L->bi, n, mid);
        be_gelu(be, mid, (size_t)n * inter, c->gelu_tanh, mid);
        be_matmul(be, mid, &L->wo2, &L->bo2, n, tmp);
        be_add(be, tmp, x, nh);
        be_layernorm(be, tmp, &L->ln2_w, &L->ln2_b, (float)c->layer_norm_eps, n, hid, x);
    }

    /* pooling and heads act on one row per sequence */
    if (pooled) {
        if (pooling == LD_POOL_POOLER) {
            be_gather_rows(be, x, hid, first, ns, cls);
            be_matmul(be, cls, &m->pool_w, &m->pool_b, ns, cls2);
            be_tanh(be, cls2, (size_t)ns * hid, cls2);
            if (be_to_host(be, pooled, cls2, (size_t)ns * hid * sizeof(float), e))
                goto out;
        } else {
            if (be_to_host(be, xh, x, nh * sizeof(float), e))
                goto out;
            pool_rows(m, b, xh, pooling, pooled);
        }
        for (int s = 0; normalize && s < ns; s++) {
            float *o = pooled + (size_t)s * hid, ss = 0.0f;
            for (int i = 0; i < hid; i++)
                ss += o[i] * o[i];
            float norm = sqrtf(ss);
            norm = norm > 1e-12f ? norm : 1e-12f; /* torch.nn.functional.normalize */
            for (int i = 0; i < hid; i++)
                o[i] /= norm;
        }
    }
    if (logits) {
        be_gather_rows(be, x, hid, first, ns, cls);
        const be_weight *dw = c->roberta ? &m->head_dense_w : &m->pool_w;
        const be_weight *db = c->roberta ? &m->head_dense_b : &m->pool_b;
        be_matmul(be, cls, dw, db, ns, cls2);
        be_tanh(be, cls2, (size_t)ns * hid, cls2);
        be_matmul(be, cls2, &m->head_out_w, &m->head_out_b, ns, lg);
        if (be_to_host(be, logits, lg, (size_t)ns * c->num_labels * sizeof(float), e))
            goto out;
    }
    if (!pooled && !logits && be_to_host(be, NULL, NULL, 0, e))
        goto out; /* nothing wanted: still report a failed op */
    rc = 0;
out:
    free(pos);
    free(types);
    free(first);
    if (xh != x)
        free(xh);
    float *bufs[] = {x, tmp, q, k, v, att, mid, cls, cls2, lg};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        be_dealloc(be, bufs[i]);
    return rc;
}
