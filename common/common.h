/* common: the few helpers every module shares — error messages, growable
 * strings, whole-file reads, UTF-8 and clocks. Used by every module, so it
 * includes nothing but libc and never knows about models, HTTP or devices:
 * a helper that needs one of those belongs to that module. */
#ifndef INFERD_COMMON_H
#define INFERD_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Every fallible library call takes an inferd_error * (may be NULL) and fills
 * it with a message a person can act on; the call returns -1 (or NULL). */
#define INFERD_ERR_MAX 512
typedef struct inferd_error {
    char msg[INFERD_ERR_MAX];
} inferd_error;

void err_set(inferd_error *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefix an existing message: "ctx: old message". */
void err_prefix(inferd_error *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Element types of weights and buffers, shared by loader and backends. */
typedef enum inferd_dtype {
    DT_F32 = 0,
    DT_F16,
    DT_BF16,
    DT_I32,
    DT_I64,
} inferd_dtype;
size_t dtype_size(inferd_dtype t);
const char *dtype_name(inferd_dtype t);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f); /* round to nearest even, as torch does */
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

/* Growable NUL-terminated byte string. A zeroed struct is an empty string. */
typedef struct strbuf {
    char *p;
    size_t n, cap;
} strbuf;
void sb_append(strbuf *b, const char *s, size_t n);
void sb_puts(strbuf *b, const char *s);
void sb_putc(strbuf *b, char c);
void sb_printf(strbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Hands the string over and leaves b empty: always NUL-terminated at b->n
 * ("" when nothing was written), NULL only when memory runs out (callers
 * check). The caller frees it. */
char *sb_steal(strbuf *b);
void sb_free(strbuf *b);

/* Read a whole file; refuses files larger than max bytes. *data is
 * NUL-terminated and must be freed by the caller. */
int file_read_all(const char *path, size_t max, char **data, size_t *len,
                  inferd_error *e);
int file_exists(const char *path);
/* path_join(buf, n, dir, name): "dir/name". Returns -1 if it does not fit. */
int path_join(char *buf, size_t n, const char *dir, const char *name);

/* UTF-8: utf8_decode returns the byte length of the valid sequence at s
 * (1..4) and stores the code point, or -1 for an invalid or truncated one.
 * utf8_encode writes 1..4 bytes and returns the count. */
int utf8_decode(const char *s, size_t n, uint32_t *cp);
int utf8_encode(uint32_t cp, char out[4]);
/* Length of the longest prefix of s that ends on a complete UTF-8 sequence
 * boundary (an incomplete trailing sequence is left out). */
size_t utf8_complete_prefix(const char *s, size_t n);

double now_seconds(void); /* monotonic clock */
/* Bytes of memory this process can still take without swapping or the OOM
 * killer: /proc/meminfo's MemAvailable, or less where its cgroup's limit
 * (v2, or v1) leaves less; 0 when unknown. */
size_t host_memory_available(void);

#endif
