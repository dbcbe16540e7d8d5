/* common/common.c: the helpers every module shares (see common.h): error
 * messages, growable strings, whole-file reads, UTF-8, clocks. libc only;
 * knows nothing of models or serving. */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

void err_set(inferd_error *e, const char *fmt, ...)
{
    if (!e)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

void err_prefix(inferd_error *e, const char *fmt, ...)
{
    if (!e)
        return;
    char old[INFERD_ERR_MAX];
    memcpy(old, e->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof e->msg - 2)
        return;
    size_t used = (size_t)n;
    memcpy(e->msg + used, ": ", 2);
    used += 2;
    size_t room = sizeof e->msg - used - 1, olen = strlen(old);
    if (olen > room)
        olen = room;
    memcpy(e->msg + used, old, olen);
    e->msg[used + olen] = 0;
}

size_t dtype_size(inferd_dtype t)
{
    switch (t) {
    case DT_F32: return 4;
    case DT_F16: return 2;
    case DT_BF16: return 2;
    case DT_I32: return 4;
    case DT_I64: return 8;
    }
    return 0;
}

const char *dtype_name(inferd_dtype t)
{
    switch (t) {
    case DT_F32: return "F32";
    case DT_F16: return "F16";
    case DT_BF16: return "BF16";
    case DT_I32: return "I32";
    case DT_I64: return "I64";
    }
    return "?";
}

float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN stays a quiet NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ff;
            u = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffff;
    if (((u >> 23) & 0xff) == 0xff)
        return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10)
            return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = 1u << (shift - 1);
        uint32_t r = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
        r++;
    return (uint16_t)(sign | r);
}

static void sb_reserve(strbuf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        fprintf(stderr, "inferd: out of memory\n");
        abort();
    }
    b->p = p;
    b->cap = cap;
}

void sb_append(strbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void sb_puts(strbuf *b, const char *s) { sb_append(b, s, strlen(s)); }

void sb_putc(strbuf *b, char c) { sb_append(b, &c, 1); }

void sb_printf(strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    sb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

char *sb_steal(strbuf *b)
{
    /* Callers cut a buffer back by setting n, so the NUL goes where n says;
     * a buffer never written to has no bytes at all yet. */
    char *p = b->p ? b->p : malloc(1);
    if (p)
        p[b->p ? b->n : 0] = 0;
    b->p = NULL;
    b->n = b->cap = 0;
    return p;
}

void sb_free(strbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

int file_read_all(const char *path, size_t max, char **data, size_t *len,
                  inferd_error *e)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set(e, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    strbuf b = {0};
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.n + got > max) {
            err_set(e, "%s is larger than the limit of %zu bytes", path, max);
            goto err;
        }
        sb_append(&b, chunk, got);
    }
    if (ferror(f)) {
        err_set(e, "cannot read %s: %s", path, strerror(errno));
        goto err;
    }
    fclose(f);
    *len = b.n;
    if (!(*data = sb_steal(&b))) {
        err_set(e, "out of memory reading %s", path);
        return -1;
    }
    return 0;
err:
    fclose(f);
    sb_free(&b);
    return -1;
}

int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int path_join(char *buf, size_t n, const char *dir, const char *name)
{
    int r = snprintf(buf, n, "%s/%s", dir, name);
    return (r < 0 || (size_t)r >= n) ? -1 : 0;
}

int utf8_decode(const char *str, size_t n, uint32_t *cp)
{
    const unsigned char *s = (const unsigned char *)str;
    if (n == 0)
        return -1;
    unsigned c = s[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2; v = c & 0x1f; min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3; v = c & 0x0f; min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4; v = c & 0x07; min = 0x10000;
    } else {
        return -1;
    }
    if (n < (size_t)len)
        return -1;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return -1;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return -1;
    *cp = v;
    return len;
}

int utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

size_t utf8_complete_prefix(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    /* Look back at most 3 bytes for the start of the last sequence. */
    size_t i = n;
    int back = 0;
    while (i > 0 && back < 4) {
        unsigned c = s[i - 1];
        back++;
        if ((c & 0xc0) != 0x80) {
            int need = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2
                     : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 1;
            return back >= need ? n : i - 1;
        }
        i--;
    }
    return n; /* only continuation bytes: invalid, let the caller see them */
}

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The number a one-line file holds, or -1 (missing, unreadable, "max"). */
static long long file_number(const char *path)
{
    FILE *f = fopen(path, "r");
    long long v = -1;
    if (f) {
        if (fscanf(f, "%lld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

/* The value of `name` in a "name value" per line file (memory.stat), or 0. */
static long long stat_field(const char *path, const char *name)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char key[64];
    long long v, found = 0;
    while (fscanf(f, "%63s %lld", key, &v) == 2)
        if (strcmp(key, name) == 0) {
            found = v;
            break;
        }
    fclose(f);
    return found;
}

size_t host_memory_available(void)
{
    size_t avail = 0, kib = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[128];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %zu kB", &kib) == 1)
                break;
        fclose(f);
        avail = kib * 1024;
    }
    /* In a container (Docker, Kubernetes) /proc/meminfo is the node's: its
     * cgroup's limit, less what the cgroup uses, counts too. Page cache the
     * kernel can drop (inactive file pages: most of a mapped checkpoint) is
     * not counted as used, as the kubelet's working set does not count it.
     * cgroup v2 where its limit file is there, else v1. */
    static const struct {
        const char *limit, *used, *stat, *inactive;
    } cgroups[] = {
        {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
         "/sys/fs/cgroup/memory.stat", "inactive_file"},
        {"/sys/fs/cgroup/memory/memory.limit_in_bytes",
         "/sys/fs/cgroup/memory/memory.usage_in_bytes", "/sys/fs/cgroup/memory/memory.stat",
         "total_inactive_file"},
    };
    for (size_t i = 0; i < sizeof cgroups / sizeof cgroups[0]; i++) {
        const long long limit = file_number(cgroups[i].limit);
        if (limit < 0)
            continue;
        const long long used = file_number(cgroups[i].used);
        if (limit > 0 && used >= 0) {
            long long working = used - stat_field(cgroups[i].stat, cgroups[i].inactive);
            if (working < 0)
                working = 0;
            size_t room = limit > working ? (size_t)(limit - working) : 1;
            if (avail == 0 || room < avail)
                avail = room;
        }
        break;
    }
    return avail;
}
