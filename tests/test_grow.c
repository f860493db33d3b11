/* Unit tests of mae__grow, the one growth rule of the library's arrays:
 * doubling from a first capacity, and a clean refusal, with the array left
 * as it was, when the size in bytes would overflow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/text.h"

static void grows_from_first_then_doubles(void **state)
{
    (void)state;
    int *a = NULL;
    size_t cap = 0;
    for (size_t n = 0; n < 100; n++) {
        int *g = mae__grow(a, &cap, n, sizeof *a, 8);
        assert_non_null(g);
        a = g;
        assert_true(cap > n);
        a[n] = (int)n;
    }
    assert_int_equal(cap, 128); /* 8, 16, 32, 64, 128 */
    for (size_t n = 0; n < 100; n++)
        assert_int_equal(a[n], (int)n);
    /* Room left: the same array, no reallocation. */
    assert_ptr_equal(mae__grow(a, &cap, 100, sizeof *a, 8), a);
    assert_int_equal(cap, 128);
    free(a);
}

static void refuses_sizes_that_overflow(void **state)
{
    (void)state;
    char *a = malloc(4);
    assert_non_null(a);
    memcpy(a, "abc", 4);
    size_t cap = 4;
    /* 8 elements of SIZE_MAX / 4 bytes: the byte count overflows size_t. */
    assert_null(mae__grow(a, &cap, 4, SIZE_MAX / 4, 8));
    assert_int_equal(cap, 4);
    assert_string_equal(a, "abc"); /* still the caller's, unchanged */
    /* The element count itself would overflow when doubled. */
    cap = SIZE_MAX / 2 + 1;
    assert_null(mae__grow(a, &cap, SIZE_MAX / 2 + 1, 1, 8));
    assert_true(cap == SIZE_MAX / 2 + 1);
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grows_from_first_then_doubles),
        cmocka_unit_test(refuses_sizes_that_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
