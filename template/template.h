/* template: a sandboxed Jinja2 interpreter for chat templates, rendering
 * byte-for-byte as transformers' apply_chat_template does: a chat request's
 * messages -> prompt text. Used by api/ (chat completions, /tokenize) and
 * cli/ (serve and run load it; chat-template). Templates are untrusted: no
 * access to anything but the values passed in, and limits on loop iterations,
 * recursion and output size. It renders text only: it never tokenizes, and
 * knows nothing of models or serving. */
#ifndef INFERD_TEMPLATE_H
#define INFERD_TEMPLATE_H

#include <jansson.h>
#include <stddef.h>

#include "common/common.h"

/* ---- the language ---- */

typedef struct tmpl_template tmpl_template;

/* Compiles Jinja source; a syntax error names line and column. */
int tmpl_compile(const char *src, size_t len, tmpl_template **out, inferd_error *e);
/* Renders with the given variables (a JSON object; may be NULL) in the environment
 * transformers uses (trim_blocks, lstrip_blocks, loop controls,
 * raise_exception, strftime_now, tojson with ensure_ascii=False).
 * On raise_exception the message is the template's and *raised is set to 1. */
int tmpl_render(const tmpl_template *t, json_t *vars, char **out, size_t *len,
                int *raised, inferd_error *e);
void tmpl_free(tmpl_template *t);

/* Limits of one rendering; each failing with an error that names it. */
typedef struct tmpl_limits {
    size_t max_output;   /* bytes of rendered text (also of any macro output) */
    size_t max_memory;   /* bytes of values the template may create */
    long max_iterations; /* for-loop iterations, all loops together */
    int max_depth;       /* nested macro calls */
} tmpl_limits;
/* 16 MiB output, 256 MiB memory, 1e6 iterations, depth 64. */
extern const tmpl_limits TMPL_DEFAULT_LIMITS;
int tmpl_render_limited(const tmpl_template *t, json_t *vars, const tmpl_limits *lim,
                        char **out, size_t *len, int *raised, inferd_error *e);

/* ---- chat templates of a model ---- */

typedef struct tmpl_chat tmpl_chat;

/* Loads the chat template(s) of a model folder: tokenizer_config.json's
 * chat_template (a string, or a list of named templates), or
 * chat_template.jinja / chat_template.json; override_path (may be NULL) is a
 * file that replaces them (--chat-template). Also keeps the special tokens
 * (bos_token, eos_token, unk_token, pad_token, ...) for rendering. */
int tmpl_chat_load(const char *model_dir, const char *override_path,
                   tmpl_chat **out, inferd_error *e);
/* Renders a request {"messages": [...], "tools"?, "documents"?,
 * "add_generation_prompt"?, "chat_template_kwargs"? {...}}: picks the "tool_use"
 * template when tools are given and one exists, else "default". Also takes
 * "continue_final_message" (cut after the last message's text, as transformers
 * does) and "chat_template_name" (pick a named template). The template sees
 * the special tokens, then chat_template_kwargs (which override them), then
 * messages, tools and documents (null when absent) and add_generation_prompt.
 * Safe to call from many threads at once on one tmpl_chat. */
int tmpl_chat_render(const tmpl_chat *c, json_t *request, char **out,
                     size_t *len, int *raised, inferd_error *e);
void tmpl_chat_free(tmpl_chat *c);

#endif
