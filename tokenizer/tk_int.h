/* Private to the tokenizer module: the hash maps, Unicode helpers and
 * pipeline stages shared by its .c files. Nothing outside tokenizer/ (and
 * its own white-box tests in tests/tokenizer/) includes this file. */
#ifndef INFERD_TK_INT_H
#define INFERD_TK_INT_H

#include <stddef.h>
#include <stdint.h>
#include <oniguruma.h>
#include <jansson.h>

#include "common/common.h"

/* ---- maps ---------------------------------------------------------- */

/* String -> int32, open addressing; keys are copied into the map's arena. */
typedef struct tk_strmap {
    struct tk_sm_ent { uint64_t h; uint32_t off, len; int32_t val; } *e;
    size_t cap, n; /* cap: power of two */
    strbuf keys;
} tk_strmap;
int tk_sm_init(tk_strmap *m, size_t expect);
void tk_sm_free(tk_strmap *m);
int tk_sm_put(tk_strmap *m, const char *k, size_t n, int32_t v); /* 1: replaced */
int32_t tk_sm_get(const tk_strmap *m, const char *k, size_t n);  /* -1: none */

/* u64 -> u64, open addressing; key UINT64_MAX is reserved. */
typedef struct tk_u64map {
    uint64_t *k, *v;
    size_t cap, n;
} tk_u64map;
int tk_um_init(tk_u64map *m, size_t expect);
void tk_um_free(tk_u64map *m);
int tk_um_put(tk_u64map *m, uint64_t k, uint64_t v);
int tk_um_get(const tk_u64map *m, uint64_t k, uint64_t *v); /* 1: found */
uint64_t tk_hash(const char *p, size_t n);

/* ---- Unicode ------------------------------------------------------- */
int tk_is_ws(uint32_t c);        /* Rust char::is_whitespace */
int tk_is_punct(uint32_t c);     /* ASCII punctuation or P* (Unicode 8.0) */
int tk_is_numeric(uint32_t c);   /* N* (Rust's Unicode) */
int tk_is_alnum(uint32_t c);     /* Rust char::is_alphanumeric (L*, N*) */
int tk_is_mark(uint32_t c);      /* M* (Unicode 9.0) */
int tk_is_mn(uint32_t c);        /* Mn (Unicode 8.0) */
int tk_is_other(uint32_t c);     /* Cc, Cf, Co (Unicode 8.0) */

/* Generated tables (tk_unitab.c, by tools/unicode/gen_tables.py) for the
 * properties where the reference uses older Unicode than utf8proc: sorted,
 * disjoint ranges; v is the value (script id, or 1 for a set). */
typedef struct tk_urange { uint32_t lo, hi; uint16_t v; } tk_urange;
extern const tk_urange tk_uni_scripts[], tk_uni_punct[], tk_uni_other[], tk_uni_mn[], tk_uni_mark[],
    tk_uni_numeric[], tk_uni_nf_frozen[];
extern const uint8_t tk_uni_script_ascii[128]; /* tk_script of ASCII */
extern const size_t tk_uni_scripts_n, tk_uni_punct_n, tk_uni_other_n, tk_uni_mn_n, tk_uni_mark_n,
    tk_uni_numeric_n, tk_uni_nf_frozen_n;
/* v of the range holding c, 0 when none. */
int tk_urange_get(const tk_urange *t, size_t n, uint32_t c);
/* The script the UnicodeScripts pre-tokenizer gives c; 0 is "Any" (space,
 * and code points unassigned in its Unicode 9.0 table), which never splits. */
static inline int tk_script(uint32_t c)
{
    return tk_urange_get(tk_uni_scripts, tk_uni_scripts_n, c);
}
/* Decodes a char of valid UTF-8 (input is validated once at the top). */
static inline int tk_u8(const char *s, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80) { *cp = u[0]; return 1; }
    if (u[0] < 0xE0) { *cp = ((u[0] & 0x1Fu) << 6) | (u[1] & 0x3Fu); return 2; }
    if (u[0] < 0xF0) { *cp = ((u[0] & 0x0Fu) << 12) | ((u[1] & 0x3Fu) << 6) | (u[2] & 0x3Fu); return 3; }
    *cp = ((u[0] & 0x07u) << 18) | ((u[1] & 0x3Fu) << 12) | ((u[2] & 0x3Fu) << 6) | (u[3] & 0x3Fu);
    return 4;
}
static inline int tk_u8len(unsigned char b)
{
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}
/* Appends bytes as Rust's String::from_utf8_lossy does (U+FFFD per maximal
 * invalid subpart). */
void tk_lossy_append(strbuf *out, const char *s, size_t n);
/* Offset of the first invalid byte, or n when s is valid UTF-8. */
size_t tk_utf8_valid_prefix(const char *s, size_t n);

/* The GPT-2 byte <-> printable char table. */
extern const uint16_t tk_byte_to_cp[256];
int tk_cp_to_byte(uint32_t cp); /* -1 when cp is not one of the 256 */

/* ---- regex --------------------------------------------------------- */
OnigRegex tk_regex_new(const char *pat, size_t n, int literal, inferd_error *e);

/* A list of (start, end, is_match) over a string, as Rust's Pattern gives. */
typedef struct tk_span { uint32_t s, e; int m; } tk_span;
typedef struct tk_spans { tk_span *v; size_t n, cap; } tk_spans;
int tk_spans_push(tk_spans *a, uint32_t s, uint32_t e, int m);
int tk_regex_find(OnigRegex re, const char *s, size_t n, tk_spans *out);

/* ---- pipeline stages ---------------------------------------------- */
typedef struct tk_norm tk_norm;
typedef struct tk_pretok tk_pretok;
typedef struct tk_dec tk_dec;

/* Words (pre-tokenizer splits) living in one buffer. at_start: the split
 * begins at offset 0 of the original input (Metaspace prepend_scheme first). */
typedef struct tk_word { uint32_t off, len; uint8_t at_start; } tk_word;
typedef struct tk_words { strbuf buf; tk_word *v; size_t n, cap; } tk_words;
int tk_words_add(tk_words *w, const char *s, size_t n, int at_start);
void tk_words_reset(tk_words *w);
void tk_words_free(tk_words *w);

tk_norm *tk_norm_parse(json_t *j, inferd_error *e);
void tk_norm_free(tk_norm *n);
/* Normalizes s[0..n) into out (replacing its content). *start_kept (may be
 * NULL) is cleared when the text's first char no longer maps to the
 * original's first char (what Metaspace's prepend_scheme "first" checks). */
int tk_norm_apply(const tk_norm *nm, const char *s, size_t n, strbuf *out, int *start_kept,
                  inferd_error *e);

tk_pretok *tk_pretok_parse(json_t *j, inferd_error *e);
void tk_pretok_free(tk_pretok *p);
/* Splits each word of in into out (in is consumed as scratch). */
int tk_pretok_apply(const tk_pretok *p, tk_words *in, tk_words *out, inferd_error *e);

/* Token strings for decoding. */
typedef tk_words tk_strs;
tk_dec *tk_dec_parse(json_t *j, inferd_error *e);
void tk_dec_free(tk_dec *d);
/* Runs the decoder chain on toks; the concatenated result goes to out. */
int tk_dec_apply(const tk_dec *d, tk_strs *toks, strbuf *out, inferd_error *e);

/* Precompiled charsmap (SentencePiece). */
typedef struct tk_precomp tk_precomp;
tk_precomp *tk_precomp_new(const char *b64, inferd_error *e);
void tk_precomp_free(tk_precomp *p);
int tk_precomp_apply(const tk_precomp *p, const char *s, size_t n, strbuf *out);

/* Growable id vector. */
typedef struct tk_ids { int32_t *v; size_t n, cap; } tk_ids;
int tk_ids_push(tk_ids *a, int32_t id);

/* Models: BPE, WordPiece, WordLevel, Unigram. */
typedef struct tk_model tk_model;
tk_model *tk_model_parse(json_t *j, inferd_error *e);
void tk_model_free(tk_model *m);
/* Appends the ids of one pre-tokenized word. Thread-safe. */
int tk_model_tokenize(const tk_model *m, const char *w, size_t n, tk_ids *out, inferd_error *e);
int32_t tk_model_token_to_id(const tk_model *m, const char *s, size_t n);
const char *tk_model_id_to_token(const tk_model *m, int32_t id, size_t *len);
int32_t tk_model_max_id(const tk_model *m); /* -1 when empty */

/* The tokenizer.json that transformers' BertTokenizer amounts to, built from
 * DIR's vocab.txt, tokenizer_config.json, special_tokens_map.json and
 * added_tokens.json. NULL with *e set on error. */
json_t *tk_bert_json(const char *dir, inferd_error *e);

/* JSON helpers with messages naming the key. */
int tk_json_str(json_t *o, const char *key, int required, const char **out, inferd_error *e);
int tk_json_bool(json_t *o, const char *key, int dflt, inferd_error *e); /* -1: error */

#endif
