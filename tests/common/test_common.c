/* Unit tests of common/: the growable string's hand-over (sb_steal) and
 * whole-file reads, whose results callers use as C strings. */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/common.h"

/* Nothing written: a string of its own, "" and not the first bytes of a
 * fresh allocation (which once held whatever the heap had there). */
static void test_steal_empty(void **s)
{
    (void)s;
    strbuf b = {0};
    char *p = sb_steal(&b);
    assert_non_null(p);
    assert_int_equal(p[0], 0);
    assert_null(b.p);
    assert_int_equal(b.n, 0);
    free(p);
    /* an empty append allocates without writing a byte */
    sb_append(&b, "", 0);
    p = sb_steal(&b);
    assert_string_equal(p, "");
    free(p);
}

/* A buffer cut back by setting n ends where n says. */
static void test_steal_after_cut(void **s)
{
    (void)s;
    strbuf b = {0};
    sb_puts(&b, "hello");
    sb_printf(&b, " %d", 42);
    b.n = 5;
    char *p = sb_steal(&b);
    assert_string_equal(p, "hello");
    free(p);
    sb_puts(&b, "abc");
    b.n = 0;
    p = sb_steal(&b);
    assert_string_equal(p, "");
    free(p);
}

static void test_read_empty_file(void **s)
{
    (void)s;
    char path[] = "/tmp/inferd-common-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char *data = NULL;
    size_t len = 1;
    inferd_error e = {{0}};
    assert_int_equal(file_read_all(path, 1 << 20, &data, &len, &e), 0);
    assert_int_equal(len, 0);
    assert_non_null(data);
    assert_string_equal(data, "");
    free(data);
    unlink(path);
}

int main(void)
{
    /* fresh allocations full of non-zero bytes (glibc; ASan fills them
     * itself), so an unterminated buffer shows instead of passing by luck */
    mallopt(M_PERTURB, 0x5a);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steal_empty),
        cmocka_unit_test(test_steal_after_cut),
        cmocka_unit_test(test_read_empty_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
