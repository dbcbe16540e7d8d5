/* api/response.h: the bottom layer of api/ — answers as bytes. JSON bodies
 * and SSE frames, OpenAI error bodies (api_error_body is in api.h, for
 * server/), and the two checks every POST route shares: the body is a JSON
 * object, and its "model" names the served model. Knows no endpoint and
 * calls nothing else of api/. */
#ifndef INFERD_API_RESPONSE_H
#define INFERD_API_RESPONSE_H

#include <jansson.h>

#include "api/context.h"

/* Compact JSON with 9 significant digits for reals, malloc'd; NULL when j
 * is NULL or cannot be dumped (out of memory). Frees nothing. */
char *api_dump(json_t *j);
/* r becomes a JSON answer of status, or a 500 error when j is NULL or
 * cannot be dumped; takes the reference to j. */
void api_set_json(api_response *r, int status, json_t *j);
/* r becomes an OpenAI error (503 also asks the client to retry in 1 s).
 * param may be NULL. */
void api_set_error(api_response *r, int status, const char *param, const char *msg);
/* The same with an error code of its own (NULL: the status's), e.g.
 * "context_length_exceeded", which clients test for. */
void api_set_error_code(api_response *r, int status, const char *param, const char *code,
                        const char *msg);

/* Appends one SSE event "data: DATA\n\n". */
void api_sse_data(strbuf *out, const char *data);
/* The same with j as compact JSON; takes the reference to j. */
void api_sse_json(strbuf *out, json_t *j);

/* Appends s[0..n) with every byte that is not part of a valid UTF-8
 * character replaced by U+FFFD: JSON strings must be valid UTF-8, and a
 * token alone may be part of a character. */
void api_append_valid_utf8(strbuf *b, const char *s, size_t n);

/* The request body as a JSON object, or NULL with r set to the 400. */
json_t *api_parse_body(const char *body, size_t len, api_response *r);
/* 0 when b's "model" is absent, null or the served name; otherwise -1 with
 * r set to the 400 (not a string) or 404 (another model). */
int api_check_model(const api_ctx *a, json_t *b, api_response *r);
/* The first key of b not in known (NULL-terminated), or NULL: a field a
 * client believes does something must not be ignored silently. */
const char *api_unknown_field(json_t *b, const char *const *known);
/* Its 400's message, then the field: OpenAI's words, which clients match. */
#define API_UNRECOGNIZED "Unrecognized request argument supplied: "

#endif
