/* TEMPORARY stand-in for tokenizer/ while its real implementation is not
 * merged: the Makefile builds this file only when tokenizer/ has no .c file,
 * so it drops out by itself when the tokenizer lands. It reads a byte-level
 * BPE tokenizer.json (vocab, merges, added tokens) and encodes WITHOUT the
 * pre-tokenizer regex, so its ids differ from Hugging Face's on most text;
 * it is only good enough to exercise the server end to end. Do not use it
 * for anything else. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "tokenizer/tokenizer.h"

struct tok_tokenizer {
    int n; char **tok; /* id -> token string */
    int *special;
    int n_merge; char **ml, **mr;
    int n_added; int *added_ids;
    int b2u[256]; int u2b[512];
};

static int find(const tok_tokenizer *t, const char *s) {
    for (int i = 0; i < t->n; i++) if (t->tok[i] && !strcmp(t->tok[i], s)) return i;
    return -1;
}

int tok_load(const char *dir, tok_tokenizer **out, inferd_error *e) {
    char p[1024]; snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    json_error_t je; json_t *j = json_load_file(p, 0, &je);
    if (!j) { err_set(e, "%s: %s", p, je.text); return -1; }
    tok_tokenizer *t = calloc(1, sizeof *t);
    json_t *vocab = json_object_get(json_object_get(j, "model"), "vocab");
    const char *k; json_t *v; int maxid = 0;
    json_object_foreach(vocab, k, v) if (json_integer_value(v) > maxid) maxid = json_integer_value(v);
    json_t *added = json_object_get(j, "added_tokens"); size_t i; json_t *a;
    json_array_foreach(added, i, a) if (json_integer_value(json_object_get(a, "id")) > maxid) maxid = json_integer_value(json_object_get(a, "id"));
    t->n = maxid + 1; t->tok = calloc(t->n, sizeof *t->tok); t->special = calloc(t->n, sizeof(int));
    json_object_foreach(vocab, k, v) t->tok[json_integer_value(v)] = strdup(k);
    t->added_ids = calloc(json_array_size(added) + 1, sizeof(int));
    json_array_foreach(added, i, a) { int id = json_integer_value(json_object_get(a, "id")); free(t->tok[id]); t->tok[id] = strdup(json_string_value(json_object_get(a, "content"))); t->special[id] = json_is_true(json_object_get(a, "special")); t->added_ids[t->n_added++] = id; }
    json_t *merges = json_object_get(json_object_get(j, "model"), "merges");
    t->n_merge = json_array_size(merges); t->ml = calloc(t->n_merge, sizeof(char*)); t->mr = calloc(t->n_merge, sizeof(char*));
    json_array_foreach(merges, i, a) {
        if (json_is_array(a)) { t->ml[i] = strdup(json_string_value(json_array_get(a, 0))); t->mr[i] = strdup(json_string_value(json_array_get(a, 1))); }
        else { const char *s = json_string_value(a); const char *sp = strchr(s, ' '); t->ml[i] = strndup(s, sp - s); t->mr[i] = strdup(sp + 1); }
    }
    int n = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) t->b2u[b] = b;
        else t->b2u[b] = 256 + n++;
        t->u2b[t->b2u[b]] = b;
    }
    json_decref(j);
    *out = t; return 0;
}
void tok_free(tok_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) free(t->tok[i]);
    for (int i = 0; i < t->n_merge; i++) { free(t->ml[i]); free(t->mr[i]); }
    free(t->tok); free(t->special); free(t->ml); free(t->mr); free(t->added_ids); free(t);
}
static void bpe(const tok_tokenizer *t, const char *s, size_t len, int32_t **ids, size_t *n, size_t *cap) {
    int m = len; char **p = calloc(m + 1, sizeof(char*));
    for (int i = 0; i < m; i++) { char u[5]; int k = utf8_encode(t->b2u[(unsigned char)s[i]], u); p[i] = strndup(u, k); }
    for (;;) {
        int best = -1, at = -1;
        for (int i = 0; i + 1 < m; i++)
            for (int r = 0; r < t->n_merge && (best < 0 || r < best); r++)
                if (!strcmp(p[i], t->ml[r]) && !strcmp(p[i+1], t->mr[r])) { best = r; at = i; break; }
        if (best < 0) break;
        char *c = malloc(strlen(p[at]) + strlen(p[at+1]) + 1); strcpy(c, p[at]); strcat(c, p[at+1]);
        free(p[at]); free(p[at+1]); p[at] = c; memmove(p + at + 1, p + at + 2, (m - at - 2) * sizeof(char*)); m--;
    }
    for (int i = 0; i < m; i++) {
        if (*n == *cap) { *cap = *cap * 2 + 16; *ids = realloc(*ids, *cap * sizeof(int32_t)); }
        int id = find(t, p[i]); (*ids)[(*n)++] = id < 0 ? 0 : id; free(p[i]);
    }
    free(p);
}
int tok_encode(const tok_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids, size_t *n_ids, inferd_error *e) {
    size_t n = 0, cap = 16; int32_t *v = malloc(cap * sizeof *v); size_t start = 0, i = 0;
    while (i < len) {
        int hit = -1; size_t hl = 0;
        for (int a = 0; a < t->n_added; a++) { const char *c = t->tok[t->added_ids[a]]; size_t cl = strlen(c); if (cl <= len - i && !memcmp(text + i, c, cl)) { hit = t->added_ids[a]; hl = cl; break; } }
        if (hit >= 0) {
            if (i > start) bpe(t, text + start, i - start, &v, &n, &cap);
            if (n == cap) { cap *= 2; v = realloc(v, cap * sizeof *v); }
            v[n++] = hit; i += hl; start = i;
        } else i++;
    }
    if (len > start) bpe(t, text + start, len - start, &v, &n, &cap);
    *ids = v; *n_ids = n; return 0;
}
static void piece(const tok_tokenizer *t, int32_t id, int skip, strbuf *b) {
    if (skip && t->special[id]) return;
    const char *s = t->tok[id]; if (!s) return;
    for (int a = 0; a < t->n_added; a++) if (t->added_ids[a] == id) { sb_puts(b, s); return; }
    size_t L = strlen(s);
    for (size_t i = 0; i < L;) { uint32_t cp; int k = utf8_decode(s + i, L - i, &cp); if (k < 0) break; sb_putc(b, (char)t->u2b[cp < 512 ? cp : 0]); i += k; }
}
int tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n_ids, int skip_special, char **text, size_t *len, inferd_error *e) {
    strbuf b = {0};
    for (size_t i = 0; i < n_ids; i++) { if (ids[i] < 0 || ids[i] >= t->n) { sb_free(&b); err_set(e, "unknown id %d", ids[i]); return -1; } piece(t, ids[i], skip_special, &b); }
    *len = b.n; *text = sb_steal(&b); return 0;
}
int tok_vocab_size(const tok_tokenizer *t) { return t->n; }
int32_t tok_token_to_id(const tok_tokenizer *t, const char *token) { return find(t, token); }
const char *tok_id_to_token(const tok_tokenizer *t, int32_t id) { return id >= 0 && id < t->n ? t->tok[id] : NULL; }
int tok_is_special(const tok_tokenizer *t, int32_t id) { return id >= 0 && id < t->n && t->special[id]; }
struct tok_stream { const tok_tokenizer *t; int skip; strbuf pend; };
tok_stream *tok_stream_new(const tok_tokenizer *t, int skip_special) { tok_stream *s = calloc(1, sizeof *s); s->t = t; s->skip = skip_special; return s; }
int tok_stream_push(tok_stream *s, int32_t id, strbuf *out, inferd_error *e) {
    piece(s->t, id, s->skip, &s->pend);
    size_t k = utf8_complete_prefix(s->pend.p ? s->pend.p : "", s->pend.n);
    if (k) { sb_append(out, s->pend.p, k); memmove(s->pend.p, s->pend.p + k, s->pend.n - k); s->pend.n -= k; s->pend.p[s->pend.n] = 0; }
    return 0;
}
int tok_stream_flush(tok_stream *s, strbuf *out, inferd_error *e) {
    for (size_t i = 0; i < s->pend.n; i++) sb_puts(out, "\xEF\xBF\xBD");
    s->pend.n = 0; return 0;
}
void tok_stream_free(tok_stream *s) { if (!s) return; sb_free(&s->pend); free(s); }
