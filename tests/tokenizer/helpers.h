/* Helpers shared by the tokenizer's test binaries (each includes this once):
 * a scratch folder for tokenizer files the tests write. */
#ifndef TESTS_TOKENIZER_HELPERS_H
#define TESTS_TOKENIZER_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

static char tmpdir[256];

static inline void write_file(const char *name, const char *data, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static inline void put(const char *name, const char *s)
{
    write_file(name, s, strlen(s));
}

static inline void remove_file(const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    unlink(p);
}

#endif
