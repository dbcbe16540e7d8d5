/* tokenizer: Hugging Face tokenizer.json (+ tokenizer_config.json, or a
 * BERT vocab.txt alone) -> token ids and back, exactly as the Rust
 * `tokenizers` library does, with an incremental detokenizer that never
 * emits half a character. Used by api/ (prompts in, tokens out while
 * streaming) and cli/ (serve and run load it; tokenize). A library that
 * knows nothing of models, chat templates or serving. */
#ifndef INFERD_TOKENIZER_H
#define INFERD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

typedef struct tok_tokenizer tok_tokenizer;

/* DIR holds tokenizer.json and optionally tokenizer_config.json. A loaded
 * tokenizer is immutable and may be used from many threads at once.
 * Without tokenizer.json, a vocab.txt (+ tokenizer_config.json,
 * special_tokens_map.json, added_tokens.json) gives transformers'
 * BertTokenizer: BertNormalizer (do_lower_case, tokenize_chinese_chars,
 * strip_accents), BertPreTokenizer, WordPiece, [CLS] ... [SEP]. */
int tok_load(const char *dir, tok_tokenizer **out, inferd_error *e);
void tok_free(tok_tokenizer *t);

/* Encodes UTF-8 text. add_special: apply the post-processor (BOS/EOS, CLS/SEP
 * ...) as `encode(text, add_special_tokens=True)` does. *ids is malloc'd. */
int tok_encode(const tok_tokenizer *t, const char *text, size_t len,
               int add_special, int32_t **ids, size_t *n_ids, inferd_error *e);
/* Decodes ids as `decode(ids, skip_special_tokens=skip)`. *text is malloc'd
 * and NUL-terminated. Unknown ids are an error. */
int tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n_ids,
               int skip_special, char **text, size_t *len, inferd_error *e);

int tok_vocab_size(const tok_tokenizer *t);    /* largest id + 1, added included */
int32_t tok_token_to_id(const tok_tokenizer *t, const char *token); /* -1 if none */
/* The token string of id, *len bytes long and NOT NUL-terminated (the
 * strings share one buffer); NULL if there is no such id. */
const char *tok_id_to_token(const tok_tokenizer *t, int32_t id, size_t *len);
int tok_is_special(const tok_tokenizer *t, int32_t id);
/* Refuses (-1, *e says why) a tokenizer that cannot decode the ids a model
 * with model_vocab embedding rows emits: one short of them by more than
 * checkpoints pad (another model's tokenizer). */
int tok_check_model_vocab(const tok_tokenizer *t, int model_vocab, inferd_error *e);

/* Incremental detokenizer for streaming: push ids one at a time; each push
 * appends exactly the new text to *out (possibly nothing), never half a UTF-8
 * character, and the concatenation of all pushes (plus tok_stream_flush)
 * equals tok_decode of all ids. */
typedef struct tok_stream tok_stream;
tok_stream *tok_stream_new(const tok_tokenizer *t, int skip_special);
int tok_stream_push(tok_stream *s, int32_t id, strbuf *out, inferd_error *e);
int tok_stream_flush(tok_stream *s, strbuf *out, inferd_error *e);
void tok_stream_free(tok_stream *s);

#endif
