// test_mostpop.c: which interactions MostPop counts (DESIGN.md "Metrics": every
// split before the evaluated one: train when scoring valid, train + valid when
// scoring test; the test split itself never), on a dataset built so that each
// rule gives a different ranking.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "datasets/dataset.h"
#include "datasets/mostpop.h"
#include "helpers/st_fixture.h"

// 3 users, 3 items with distinct codes. Counts by hand:
//   train: item 1 x3, item 2 x2, item 3 x1
//   valid: item 3 x3
//   test:  item 2 x5
// Scoring valid (train):          1 (3), 2 (2), 3 (1)
// Scoring test  (train + valid):  3 (4), 1 (3), 2 (2)
// Counting test too would put item 2 (7) first; counting train only for test
// would rank 1 first.
static const char *META =
    "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"pop\", \"source\": \"test\",\n"
    " \"n_users\": 3, \"n_items\": 3, \"code_levels\": 2, \"codes_per_level\": [3, 1],\n"
    " \"interactions\": {\"train\": 6, \"valid\": 3, \"test\": 5}}\n";
static const char *TRAIN = "1 1 1 2\n2 1 2\n3 3\n";
static const char *VALID = "1 3\n2 3\n3 3\n";
static const char *TEST = "1 2 2\n2 2 2\n3 2\n";
static const char *CODES = "1\t<a_0><b_0>\n2\t<a_1><b_0>\n3\t<a_2><b_0>\n";

static void write_dataset(const char *dir) {
    const char *names[5] = {"meta.json", "train.txt", "valid.txt", "test.txt", "codes.tsv"};
    const char *texts[5] = {META, TRAIN, VALID, TEST, CODES};
    for (int i = 0; i < 5; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        st_fixture_write_text(path, texts[i]);
    }
}

static void expect_ranking(const Dataset *d, Split evaluated, const int want_items[3], const int want_counts[3]) {
    MostPop m;
    mostpop_build(&m, d, evaluated);
    assert_int_equal(m.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(m.items[i], want_items[i]);
        assert_int_equal(m.counts[i], want_counts[i]);
    }
    mostpop_free(&m);
}

static void test_split_rule(void **state) {
    (void)state;
    char *dir = st_fixture_tmpdir();
    write_dataset(dir);
    Dataset d;
    Error e = {{0}};
    if (dataset_load(&d, dir, &e)) fail_msg("%s", e.msg);
    expect_ranking(&d, SPLIT_VALID, (const int[]){1, 2, 3}, (const int[]){3, 2, 1});
    expect_ranking(&d, SPLIT_TEST, (const int[]){3, 1, 2}, (const int[]){4, 3, 2});
    dataset_free(&d);
    remove_tree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
