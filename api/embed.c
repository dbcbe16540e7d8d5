/* api/embed.c: the encoder endpoints, in the shapes clients already send —
 * POST /v1/embeddings (OpenAI), /v1/score (vLLM), /v1/rerank (Jina, Cohere,
 * vLLM, SiliconFlow) and /classify (vLLM) — over an mdl_encoder. All inputs
 * of one request run in one packed forward pass, shared with the inputs of
 * the other requests waiting at that moment (the encoder engine,
 * engine/encoder.c, batches them).
 *
 * Text needs the model's tokenizer; token ids (a list of ints per input,
 * special tokens included) work without one. Scores: a one-logit
 * cross-encoder gives sigmoid(logit); a two-label classifier the softmax
 * probability of label 1 (ModelScope's sentence-similarity pipeline reports
 * that); an embedding model the cosine of the two pooled vectors (vLLM). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/internal.h"

#define MAX_INPUTS 2048

/* Sequences of one request, packed. */
typedef struct enc_seqs {
    int n;
    int32_t *q_start;   /* [n + 1] */
    int32_t *tok;       /* [q_start[n]] */
    int32_t *type;      /* [q_start[n]] */
} enc_seqs;

static void seqs_free(enc_seqs *s)
{
    free(s->q_start);
    free(s->tok);
    free(s->type);
    memset(s, 0, sizeof *s);
}

static int seqs_push(enc_seqs *s, const int32_t *ids, const int32_t *types, size_t n)
{
    int total = s->n ? s->q_start[s->n] : 0;
    int32_t *qs = realloc(s->q_start, (size_t)(s->n + 2) * sizeof *qs);
    if (!qs)
        return -1;
    s->q_start = qs;
    qs[0] = 0;
    int32_t *t = realloc(s->tok, (total + n) * sizeof *t);
    if (!t)
        return -1;
    s->tok = t;
    int32_t *ty = realloc(s->type, (total + n) * sizeof *ty);
    if (!ty)
        return -1;
    s->type = ty;
    memcpy(s->tok + total, ids, n * sizeof *ids);
    for (size_t i = 0; i < n; i++)
        s->type[total + i] = types ? types[i] : 0;
    s->q_start[s->n + 1] = total + (int32_t)n;
    s->n++;
    return 0;
}

/* The error of a request, kept until it is answered. */
typedef struct enc_err {
    int status;
    char param[32];
    char msg[INFERD_ERR_MAX];
} enc_err;

static int fail(enc_err *er, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(enc_err *er, int status, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(er->msg, sizeof er->msg, fmt, ap);
    va_end(ap);
    er->status = status;
    snprintf(er->param, sizeof er->param, "%s", param ? param : "");
    return -1;
}

/* One input as token ids: a string through the tokenizer (with special
 * tokens), or a list of ids as given. *ids malloc'd. */
static int input_ids(api_ctx *a, json_t *v, const char *param, int idx, int32_t **ids,
                     size_t *n, enc_err *er)
{
    *ids = NULL;
    *n = 0;
    if (json_is_string(v)) {
        if (json_string_length(v) == 0)
            return fail(er, 400, param, "%s[%d] is an empty string", param, idx);
        if (!a->tok)
            return fail(er, 400, param, "this model has no tokenizer inferd can use (it reads "
                        "tokenizer.json, or vocab.txt for BERT); send token ids (lists of "
                        "integers, special tokens included) instead of text");
        inferd_error e = {{0}};
        if (tok_encode(a->tok, json_string_value(v), json_string_length(v), 1, ids, n, &e))
            return fail(er, 400, param, "%s[%d]: %s", param, idx, e.msg);
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail(er, 400, param, "%s[%d] must be a non-empty string or a non-empty list of "
                    "token ids", param, idx);
    *n = json_array_size(v);
    *ids = malloc(*n * sizeof **ids);
    if (!*ids)
        return fail(er, 500, NULL, "out of memory");
    for (size_t i = 0; i < *n; i++) {
        json_t *x = json_array_get(v, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 ||
            json_integer_value(x) >= a->vocab) {
            free(*ids);
            *ids = NULL;
            return fail(er, 400, param, "%s[%d][%zu] is not a token id in [0, %d)", param, idx,
                        i, a->vocab);
        }
        (*ids)[i] = (int32_t)json_integer_value(x);
    }
    return 0;
}

/* Over-long inputs are refused, or cut to their last `trunc` tokens when the
 * client asked for that (vLLM's truncate_prompt_tokens). */
static int fit(api_ctx *a, int32_t **ids, size_t *n, int trunc, const char *param, int idx,
               enc_err *er)
{
    size_t max = (size_t)a->max_model_len;
    if (trunc > 0 && *n > (size_t)trunc) {
        memmove(*ids, *ids + (*n - (size_t)trunc), (size_t)trunc * sizeof **ids);
        *n = (size_t)trunc;
    }
    if (*n > max)
        return fail(er, 400, param, "%s[%d] has %zu tokens; this model takes at most %zu (set "
                    "truncate_prompt_tokens to cut inputs)", param, idx, *n, max);
    return 0;
}

/* A list of inputs from a string, a list of strings, a list of ids or a list
 * of lists of ids (OpenAI's four shapes of `input`). */
static int collect(api_ctx *a, json_t *input, const char *param, int trunc, enc_seqs *s,
                   enc_err *er)
{
    json_t *one = NULL;
    if (json_is_string(input) || (json_is_array(input) &&
                                   json_is_integer(json_array_get(input, 0))))
        one = input;
    if (!one && (!json_is_array(input) || json_array_size(input) == 0))
        return fail(er, 400, param, "'%s' must be a string, a list of strings, a list of token "
                    "ids or a list of lists of token ids", param);
    size_t count = one ? 1 : json_array_size(input);
    if (count > MAX_INPUTS)
        return fail(er, 400, param, "at most %d inputs per request", MAX_INPUTS);
    for (size_t i = 0; i < count; i++) {
        int32_t *ids;
        size_t n;
        if (input_ids(a, one ? one : json_array_get(input, i), param, (int)i, &ids, &n, er) ||
            fit(a, &ids, &n, trunc, param, (int)i, er)) {
            free(ids);
            return -1;
        }
        int rc = seqs_push(s, ids, NULL, n);
        free(ids);
        if (rc)
            return fail(er, 500, NULL, "out of memory");
    }
    return 0;
}

/* A cross-encoder's pair: A's encoding, then B's without its first token
 * (the tokenizer's [CLS] or <s>), so [CLS] a [SEP] b [SEP] for BERT with
 * token types 0 then 1, and <s> a </s></s> b </s> for RoBERTa, where B's <s>
 * becomes A's closing </s> — as transformers encodes a pair. */
static int push_pair(api_ctx *a, enc_seqs *s, const int32_t *x, size_t nx, const int32_t *y,
                     size_t ny, int idx, enc_err *er)
{
    const ld_encoder_config *c = mdl_encoder_config(a->enc);
    size_t n = nx + (ny > 1 ? ny - 1 : 0) + (c->roberta ? 1 : 0);
    int32_t *ids = malloc(n * sizeof *ids), *types = malloc(n * sizeof *types);
    if (!ids || !types) {
        free(ids);
        free(types);
        return fail(er, 500, NULL, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < nx; i++, k++) {
        ids[k] = x[i];
        types[k] = 0;
    }
    if (c->roberta) {
        ids[k] = x[nx - 1];
        types[k++] = 0;
    }
    for (size_t i = 1; i < ny; i++, k++) {
        ids[k] = y[i];
        types[k] = c->type_vocab_size > 1 ? 1 : 0;
    }
    int rc = 0;
    if (k > (size_t)a->max_model_len)
        rc = fail(er, 400, NULL, "pair %d has %zu tokens; this model takes at most %d", idx, k,
                  a->max_model_len);
    if (!rc && seqs_push(s, ids, types, k))
        rc = fail(er, 500, NULL, "out of memory");
    free(ids);
    free(types);
    return rc;
}

/* The sequences of one request through the encoder engine, which runs
 * them in a pass shared with other requests' (engine/encoder.c). */
static int run(api_ctx *a, enc_seqs *s, ld_pooling pooling, int normalize, float *pooled,
               float *logits, enc_err *er)
{
    mdl_enc_batch b = {.n_seqs = s->n, .q_start = s->q_start, .tokens = s->tok,
                       .token_types = s->type};
    inferd_error e = {{0}};
    if (eng_encode(a->encoder, &b, pooling, normalize, pooled, logits, &e))
        return fail(er, 400, NULL, "%s", e.msg);
    return 0;
}

static int get_trunc(json_t *b, int *trunc, enc_err *er)
{
    json_t *t = json_object_get(b, "truncate_prompt_tokens");
    *trunc = 0;
    if (!t || json_is_null(t))
        return 0;
    if (!json_is_integer(t) || json_integer_value(t) < 1 || json_integer_value(t) > 1 << 24)
        return fail(er, 400, "truncate_prompt_tokens", "'truncate_prompt_tokens' must be a "
                    "positive integer");
    *trunc = (int)json_integer_value(t);
    return 0;
}

/* The `input` of /v1/embeddings and /classify as sequences, and a buffer
 * of width floats per sequence for the answer (NULL on error). */
static float *inputs_and_buffer(api_ctx *a, json_t *b, enc_seqs *s, int width, enc_err *er)
{
    json_t *input = json_object_get(b, "input");
    int trunc;
    if (!input) {
        fail(er, 400, "input", "'input' is required");
        return NULL;
    }
    if (get_trunc(b, &trunc, er) || collect(a, input, "input", trunc, s, er))
        return NULL;
    float *out = malloc((size_t)s->n * width * sizeof *out);
    if (!out)
        fail(er, 500, NULL, "out of memory");
    return out;
}

static char *base64(const float *v, int n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = (size_t)n * 4;
    unsigned char *p = malloc(len + 1);
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!p || !out) {
        free(p);
        free(out);
        return NULL;
    }
    /* little-endian float32, as numpy.frombuffer(..., dtype=float32) reads it */
    for (int i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        for (int k = 0; k < 4; k++)
            p[4 * i + k] = (unsigned char)(u >> (8 * k));
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t w = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < len ? p[i + 2] : 0);
        out[o++] = tbl[w >> 18 & 63];
        out[o++] = tbl[w >> 12 & 63];
        out[o++] = i + 1 < len ? tbl[w >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? tbl[w & 63] : '=';
    }
    out[o] = 0;
    free(p);
    return out;
}

static json_t *usage(int tokens)
{
    return json_pack("{s:i, s:i}", "prompt_tokens", tokens, "total_tokens", tokens);
}

/* OpenAI's fields and vLLM's truncate_prompt_tokens: what embeddings reads
 * (user changes nothing). */
static const char *const embedding_fields[] = {
    "model", "input", "encoding_format", "dimensions", "user", "truncate_prompt_tokens", NULL,
};

static void embeddings(api_ctx *a, json_t *b, api_response *r, enc_err *er)
{
    const ld_encoder_config *c = mdl_encoder_config(a->enc);
    enc_seqs s = {0};
    float *vec = NULL;
    int b64 = 0;
    const char *unknown = api_unknown_field(b, embedding_fields);
    if (unknown) {
        fail(er, 400, unknown, API_UNRECOGNIZED "%s", unknown);
        goto out;
    }
    json_t *fmt = json_object_get(b, "encoding_format"), *dims = json_object_get(b, "dimensions");
    if (fmt && !json_is_null(fmt)) {
        const char *f = json_string_value(fmt);
        if (!f || (strcmp(f, "float") && strcmp(f, "base64"))) {
            fail(er, 400, "encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
            goto out;
        }
        b64 = !strcmp(f, "base64");
    }
    if (dims && !json_is_null(dims) &&
        (!json_is_integer(dims) || json_integer_value(dims) != c->hidden_size)) {
        fail(er, 400, "dimensions", "this model cannot shorten its embeddings: 'dimensions' "
             "must be absent or %d", c->hidden_size);
        goto out;
    }
    if (!(vec = inputs_and_buffer(a, b, &s, c->hidden_size, er)))
        goto out;
    if (run(a, &s, c->pooling, c->normalize, vec, NULL, er))
        goto out;
    json_t *data = json_array();
    for (int i = 0; i < s.n; i++) {
        const float *v = vec + (size_t)i * c->hidden_size;
        json_t *emb;
        if (b64) {
            char *t = base64(v, c->hidden_size);
            emb = json_string(t ? t : "");
            free(t);
        } else {
            emb = json_array();
            for (int k = 0; k < c->hidden_size; k++)
                json_array_append_new(emb, json_real(v[k]));
        }
        json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding",
                                              "index", i, "embedding", emb));
    }
    api_set_json(r, 200, json_pack("{s:s, s:o, s:s, s:o}", "object", "list", "data", data,
                                   "model", a->model_name, "usage", usage(s.q_start[s.n])));
    r->prompt_tokens = s.q_start[s.n];
out:
    free(vec);
    seqs_free(&s);
}

/* Scores for pairs (x[i], y[i]) — or (x[0], y[i]) when x has one entry. */
static int score_pairs(api_ctx *a, enc_seqs *x, enc_seqs *y, float **scores, int *tokens,
                       enc_err *er)
{
    const ld_encoder_config *c = mdl_encoder_config(a->enc);
    int n = y->n, rc = -1;
    enc_seqs p = {0};
    float *out = NULL, *out2 = NULL;
    *scores = malloc((size_t)n * sizeof **scores);
    if (!*scores)
        return fail(er, 500, NULL, "out of memory");
    if (c->num_labels == 0) { /* embedding model: cosine of the two vectors */
        out = malloc((size_t)x->n * c->hidden_size * sizeof *out);
        out2 = malloc((size_t)n * c->hidden_size * sizeof *out2);
        if (!out || !out2) {
            fail(er, 500, NULL, "out of memory");
            goto out;
        }
        if (run(a, x, c->pooling, 1, out, NULL, er) || run(a, y, c->pooling, 1, out2, NULL, er))
            goto out;
        for (int i = 0; i < n; i++) {
            const float *u = out + (size_t)(x->n == 1 ? 0 : i) * c->hidden_size;
            const float *v = out2 + (size_t)i * c->hidden_size;
            float d = 0;
            for (int k = 0; k < c->hidden_size; k++)
                d += u[k] * v[k];
            (*scores)[i] = d;
        }
        *tokens = x->q_start[x->n] + y->q_start[y->n];
        rc = 0;
        goto out;
    }
    if (c->num_labels > 2) {
        fail(er, 400, NULL, "scoring needs a cross-encoder with one logit or a two-label "
             "classifier; this model has %d labels (use /classify)", c->num_labels);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        int xi = x->n == 1 ? 0 : i;
        if (push_pair(a, &p, x->tok + x->q_start[xi], (size_t)(x->q_start[xi + 1] - x->q_start[xi]),
                      y->tok + y->q_start[i], (size_t)(y->q_start[i + 1] - y->q_start[i]), i,
                      er))
            goto out;
    }
    out = malloc((size_t)n * c->num_labels * sizeof *out);
    if (!out) {
        fail(er, 500, NULL, "out of memory");
        goto out;
    }
    if (run(a, &p, LD_POOL_CLS, 0, NULL, out, er))
        goto out;
    for (int i = 0; i < n; i++) {
        const float *l = out + (size_t)i * c->num_labels;
        (*scores)[i] = c->num_labels == 1 ? 1.0f / (1.0f + expf(-l[0]))
                                          : 1.0f / (1.0f + expf(l[0] - l[1]));
    }
    *tokens = p.q_start[p.n];
    rc = 0;
out:
    free(out);
    free(out2);
    seqs_free(&p);
    if (rc) {
        free(*scores);
        *scores = NULL;
    }
    return rc;
}

static void id_string(api_ctx *a, const char *kind, char *buf, size_t n)
{
    unsigned long long k = (unsigned long long)atomic_fetch_add(&a->id_counter, 1);
    snprintf(buf, n, "%s-%016llx", kind, (unsigned long long)(a->id_salt ^ (k * 0x9E3779B97F4A7C15ull)));
}

static void score(api_ctx *a, json_t *b, api_response *r, enc_err *er)
{
    enc_seqs x = {0}, y = {0};
    float *sc = NULL;
    int tokens = 0;
    json_t *t1 = json_object_get(b, "text_1"), *t2 = json_object_get(b, "text_2");
    if (!t1)
        t1 = json_object_get(b, "queries");
    if (!t2)
        t2 = json_object_get(b, "documents");
    if (!t1 || !t2) {
        fail(er, 400, t1 ? "text_2" : "text_1", "'text_1' and 'text_2' are required");
        goto out;
    }
    if (collect(a, t1, "text_1", 0, &x, er) ||
        collect(a, t2, "text_2", 0, &y, er))
        goto out;
    if (x.n != 1 && x.n != y.n) {
        fail(er, 400, "text_1", "'text_1' has %d entries and 'text_2' %d: give one text_1 or "
             "as many as text_2", x.n, y.n);
        goto out;
    }
    if (score_pairs(a, &x, &y, &sc, &tokens, er))
        goto out;
    json_t *data = json_array();
    for (int i = 0; i < y.n; i++)
        json_array_append_new(data, json_pack("{s:i, s:s, s:f}", "index", i, "object", "score",
                                              "score", (double)sc[i]));
    char id[48];
    id_string(a, "score", id, sizeof id);
    api_set_json(r, 200, json_pack("{s:s, s:s, s:I, s:s, s:o, s:o}", "id", id, "object", "list",
                                   "created", (json_int_t)time(NULL), "model", a->model_name,
                                   "data", data, "usage", usage(tokens)));
    r->prompt_tokens = tokens;
out:
    free(sc);
    seqs_free(&x);
    seqs_free(&y);
}

static int cmp_desc(const void *p, const void *q, void *ctx)
{
    const float *s = ctx;
    float a = s[*(const int *)p], b = s[*(const int *)q];
    return a < b ? 1 : a > b ? -1 : *(const int *)p - *(const int *)q;
}

static void rerank(api_ctx *a, json_t *b, api_response *r, enc_err *er)
{
    enc_seqs x = {0}, y = {0};
    float *sc = NULL;
    int *order = NULL, tokens = 0, top_n = -1, ret_docs = 1;
    json_t *q = json_object_get(b, "query"), *docs = json_object_get(b, "documents");
    json_t *texts = NULL;
    if (!q || !json_is_array(docs) || json_array_size(docs) == 0) {
        fail(er, 400, q ? "documents" : "query", "'query' and a non-empty list of 'documents' "
             "are required");
        goto out;
    }
    json_t *tn = json_object_get(b, "top_n"), *rd = json_object_get(b, "return_documents");
    if (tn && !json_is_null(tn)) {
        if (!json_is_integer(tn) || json_integer_value(tn) < 1) {
            fail(er, 400, "top_n", "'top_n' must be a positive integer");
            goto out;
        }
        top_n = (int)(json_integer_value(tn) > INT32_MAX ? INT32_MAX : json_integer_value(tn));
    }
    if (rd && !json_is_null(rd)) {
        if (!json_is_boolean(rd)) {
            fail(er, 400, "return_documents", "'return_documents' must be true or false");
            goto out;
        }
        ret_docs = json_is_true(rd);
    }
    /* documents may be strings, token-id lists, or {"text": ...} objects (Cohere) */
    texts = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(docs, i, d)
        json_array_append(texts, json_is_object(d) && json_object_get(d, "text")
                                     ? json_object_get(d, "text") : d);
    json_t *qa = json_pack("[O]", q);
    int rc = collect(a, qa, "query", 0, &x, er) || collect(a, texts, "documents", 0, &y, er);
    json_decref(qa);
    if (rc || score_pairs(a, &x, &y, &sc, &tokens, er))
        goto out;
    order = malloc((size_t)y.n * sizeof *order);
    if (!order) {
        fail(er, 500, NULL, "out of memory");
        goto out;
    }
    for (int k = 0; k < y.n; k++)
        order[k] = k;
    qsort_r(order, (size_t)y.n, sizeof *order, cmp_desc, sc);
    int keep = top_n > 0 && top_n < y.n ? top_n : y.n;
    json_t *results = json_array();
    for (int k = 0; k < keep; k++) {
        json_t *o = json_pack("{s:i, s:f}", "index", order[k], "relevance_score",
                              (double)sc[order[k]]);
        json_t *t = json_array_get(texts, (size_t)order[k]);
        if (ret_docs)
            json_object_set_new(o, "document", json_pack("{s:O}", "text", t));
        json_array_append_new(results, o);
    }
    char id[48];
    id_string(a, "rerank", id, sizeof id);
    api_set_json(r, 200, json_pack("{s:s, s:s, s:o, s:o}", "id", id, "model", a->model_name,
                                   "results", results, "usage", usage(tokens)));
    r->prompt_tokens = tokens;
out:
    json_decref(texts);
    free(order);
    free(sc);
    seqs_free(&x);
    seqs_free(&y);
}

static void classify(api_ctx *a, json_t *b, api_response *r, enc_err *er)
{
    const ld_encoder_config *c = mdl_encoder_config(a->enc);
    enc_seqs s = {0};
    float *lg = NULL;
    if (!c->num_labels) {
        fail(er, 400, NULL, "'%s' has no classification head (%s); use /v1/embeddings",
             a->model_name, c->architecture);
        goto out;
    }
    if (!(lg = inputs_and_buffer(a, b, &s, c->num_labels, er)))
        goto out;
    if (run(a, &s, LD_POOL_CLS, 0, NULL, lg, er))
        goto out;
    json_t *data = json_array();
    for (int i = 0; i < s.n; i++) {
        float *l = lg + (size_t)i * c->num_labels, mx = l[0], sum = 0;
        int best = 0;
        for (int k = 0; k < c->num_labels; k++)
            if (l[k] > mx) {
                mx = l[k];
                best = k;
            }
        for (int k = 0; k < c->num_labels; k++)
            sum += expf(l[k] - mx);
        json_t *probs = json_array();
        for (int k = 0; k < c->num_labels; k++)
            json_array_append_new(probs, json_real(c->num_labels == 1
                                                       ? 1.0 / (1.0 + exp(-(double)l[k]))
                                                       : exp((double)(l[k] - mx)) / sum));
        json_array_append_new(data, json_pack("{s:i, s:s, s:s, s:o, s:i}", "index", i,
                                              "object", "classification", "label",
                                              c->labels[best], "probs", probs, "num_classes",
                                              c->num_labels));
    }
    char id[48];
    id_string(a, "classify", id, sizeof id);
    api_set_json(r, 200, json_pack("{s:s, s:s, s:I, s:s, s:o, s:o}", "id", id, "object", "list",
                                   "created", (json_int_t)time(NULL), "model", a->model_name,
                                   "data", data, "usage", usage(s.q_start[s.n])));
    r->prompt_tokens = s.q_start[s.n];
out:
    free(lg);
    seqs_free(&s);
}

void api_encoder_route(api_ctx *a, const char *path, json_t *b, api_response *r)
{
    if (!a->enc) {
        char msg[300];
        snprintf(msg, sizeof msg, "'%.100s' is a causal language model; %s needs an encoder "
                 "model (BERT, XLM-RoBERTa, a cross-encoder)", a->model_name, path);
        api_set_error(r, 400, NULL, msg);
        return;
    }
    if (api_check_model(a, b, r))
        return;
    enc_err er = {0};
    if (!strcmp(path, "/v1/embeddings"))
        embeddings(a, b, r, &er);
    else if (!strcmp(path, "/v1/score"))
        score(a, b, r, &er);
    else if (!strcmp(path, "/v1/rerank"))
        rerank(a, b, r, &er);
    else
        classify(a, b, r, &er);
    if (er.status)
        api_set_error(r, er.status, er.param[0] ? er.param : NULL, er.msg);
}
