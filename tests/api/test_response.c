/* api/response.c alone: an answer that cannot be built (a json_pack that
 * failed on a string jansson refuses, or out of memory) must reach the
 * client as a 500 OpenAI error, plainly or mid-stream, never as "200 {}". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api/response.h"

static void expect_server_error(const char *body)
{
    json_error_t je;
    json_t *j = json_loads(body, 0, &je);
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "type")), "server_error");
    assert_non_null(json_string_value(json_object_get(e, "message")));
    json_decref(j);
}

static void test_unbuilt_answer_is_500(void **state)
{
    api_response r = {0};
    /* invalid UTF-8: json_pack gives NULL, as a handler's would */
    api_set_json(&r, 200, json_pack("{s:s}", "prompt", "\xff"));
    assert_int_equal(r.status, 500);
    assert_int_equal(r.len, strlen(r.body));
    expect_server_error(r.body);
    free(r.body);
}

static void test_good_answer_unchanged(void **state)
{
    api_response r = {0};
    api_set_json(&r, 201, json_pack("{s:i}", "a", 1));
    assert_int_equal(r.status, 201);
    assert_string_equal(r.body, "{\"a\":1}");
    free(r.body);
}

static void test_unbuilt_sse_chunk_is_error_event(void **state)
{
    strbuf b = {0};
    api_sse_json(&b, NULL);
    sb_putc(&b, '\0');
    assert_memory_equal(b.p, "data: ", 6);
    char *end = strstr(b.p, "\n\n");
    assert_non_null(end);
    *end = '\0';
    expect_server_error(b.p + 6);
    sb_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unbuilt_answer_is_500),
        cmocka_unit_test(test_good_answer_unchanged),
        cmocka_unit_test(test_unbuilt_sse_chunk_is_error_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
