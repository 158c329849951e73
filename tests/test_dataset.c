// test_dataset.c: the prepared-dataset loader (good and bad directories, with
// file:line in every message), samples per split, and MostPop order, on tiny
// directories the test writes itself.
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
#include "datasets/samples.h"
#include "helpers/st_fixture.h"

// ---- the fixture ------------------------------------------------------------
// 4 users, 6 items, 3 code levels of 3/4/5 codes. Item 4's code equals item 1's.
// User 4 has a 23-item train sequence (for the last-20 truncation), user 2 no
// valid items, user 3 no test items.

static const char *META =
    "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"tiny\", \"source\": \"test\",\n"
    " \"n_users\": 4, \"n_items\": 6, \"code_levels\": 3, \"codes_per_level\": [3, 4, 5], \"seed\": 7,\n"
    " \"interactions\": {\"train\": 29, \"valid\": 5, \"test\": 4}}\n";
static const char *TRAIN =
    "1 1 2 3\n"
    "2 4 5\n"
    "3 6\n"
    "4 5 5 5 5 3 3 3 1 1 2 2 6 6 6 6 6 4 5 3 1 2 6 5\n";
static const char *VALID = "1 4\n2\n3 5 1\n4 2 3\n";
static const char *TEST = "1 5 6\n2 1\n3\n4 3\n";
static const char *CODES =
    "1\t<a_0><b_1><c_2>\n"
    "2\t<a_0><b_1><c_3>\n"
    "3\t<a_1><b_0><c_0>\n"
    "4\t<a_0><b_1><c_2>\n"
    "5\t<a_2><b_3><c_4>\n"
    "6\t<a_1><b_2><c_0>\n";

static const int USER4_TRAIN[23] = {5, 5, 5, 5, 3, 3, 3, 1, 1, 2, 2, 6, 6, 6, 6, 6, 4, 5, 3, 1, 2, 6, 5};

typedef struct {
    char *dir;
} Fx;

static void write_file(const Fx *fx, const char *name, const char *text) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", fx->dir, name);
    st_fixture_write_text(path, text);
}

static void remove_file(const Fx *fx, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", fx->dir, name);
    remove(path);
}

static void write_good(const Fx *fx) {
    write_file(fx, "meta.json", META);
    write_file(fx, "train.txt", TRAIN);
    write_file(fx, "valid.txt", VALID);
    write_file(fx, "test.txt", TEST);
    write_file(fx, "codes.tsv", CODES);
}

static int fx_setup(void **state) {
    Fx *fx = xcalloc(1, sizeof *fx);
    fx->dir = st_fixture_tmpdir();
    write_good(fx);
    *state = fx;
    return 0;
}

static int fx_teardown(void **state) {
    Fx *fx = *state;
    remove_tree(fx->dir);
    free(fx->dir);
    free(fx);
    return 0;
}

static void load_ok(const Fx *fx, Dataset *d) {
    Error e = {{0}};
    int rc = dataset_load(d, fx->dir, &e);
    if (rc != 0) fprintf(stderr, "unexpected error: %s\n", e.msg);
    assert_int_equal(rc, 0);
}

static void assert_items(const Dataset *d, Split s, int user, const int *want, int n_want) {
    int n;
    const int *got = dataset_user_items(d, s, user, &n);
    assert_int_equal(n, n_want);
    for (int i = 0; i < n; i++) assert_int_equal(got[i], want[i]);
}

// ---- loading ----------------------------------------------------------------

static void test_load_good(void **state) {
    Fx *fx = *state;
    Dataset d;
    load_ok(fx, &d);
    assert_string_equal(d.name, "tiny");
    assert_string_equal(d.source, "test");
    assert_int_equal(d.n_users, 4);
    assert_int_equal(d.n_items, 6);
    assert_int_equal(d.code_levels, 3);
    assert_int_equal(d.codes_per_level[0], 3);
    assert_int_equal(d.codes_per_level[2], 5);
    assert_int_equal(dataset_interactions(&d, SPLIT_TRAIN), 3 + 2 + 1 + 23);
    assert_int_equal(dataset_interactions(&d, SPLIT_VALID), 1 + 0 + 2 + 2);
    assert_int_equal(dataset_interactions(&d, SPLIT_TEST), 2 + 1 + 0 + 1);
    assert_items(&d, SPLIT_TRAIN, 1, (int[]){1, 2, 3}, 3);
    assert_items(&d, SPLIT_TRAIN, 4, USER4_TRAIN, 23);
    assert_items(&d, SPLIT_VALID, 2, NULL, 0);
    assert_items(&d, SPLIT_VALID, 3, (int[]){5, 1}, 2);
    assert_items(&d, SPLIT_TEST, 1, (int[]){5, 6}, 2);
    assert_items(&d, SPLIT_TEST, 3, NULL, 0);
    const int *c = dataset_item_code(&d, 6);
    assert_int_equal(c[0], 1);
    assert_int_equal(c[1], 2);
    assert_int_equal(c[2], 0);
    char s[DATASET_CODE_STR_MAX];
    assert_int_equal(dataset_code_string(s, &d, 5), (int)strlen("<a_2><b_3><c_4>"));
    assert_string_equal(s, "<a_2><b_3><c_4>");
    dataset_code_string(s, &d, 4);
    assert_string_equal(s, "<a_0><b_1><c_2>");
    // The optional meta fields: seed given; no codes_method, no semantic_ids.
    assert_true(d.has_seed);
    assert_int_equal(d.seed, 7);
    assert_string_equal(d.codes_method, "unknown");
    assert_false(d.has_semid);
    dataset_free(&d);
}

// The meta fields the writer (prep_write_dir) adds for codes built here.
static void test_load_codes_meta(void **state) {
    Fx *fx = *state;
    write_file(fx, "meta.json",
               "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"tiny\", \"n_users\": 4,"
               " \"n_items\": 6, \"code_levels\": 3, \"codes_per_level\": [3, 4, 5], \"codes_method\": \"earnest-rkmeans\","
               " \"semantic_ids\": {\"levels\": 2, \"codes\": 4, \"dim\": 8, \"window\": 1, \"iters\": 5,"
               " \"power_iters\": 3, \"seed\": 11}}");
    Dataset d;
    load_ok(fx, &d);
    assert_false(d.has_seed);
    assert_string_equal(d.codes_method, "earnest-rkmeans");
    assert_true(d.has_semid);
    assert_int_equal(d.semid.levels, 2);
    assert_int_equal(d.semid.codes, 4);
    assert_int_equal(d.semid.dim, 8);
    assert_int_equal(d.semid.window, 1);
    assert_int_equal(d.semid.iters, 5);
    assert_int_equal(d.semid.power_iters, 3);
    assert_int_equal(d.semid.seed, 11);
    dataset_free(&d);
}

// Tolerated variations: CRLF line ends, no final newline, runs of blanks.
static void test_load_tolerated(void **state) {
    Fx *fx = *state;
    // "interactions" is optional in meta.json; without it the counts are not checked.
    write_file(fx, "meta.json",
               "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"tiny\", \"n_users\": 4,"
               " \"n_items\": 6, \"code_levels\": 3, \"codes_per_level\": [3, 4, 5]}");
    write_file(fx, "train.txt", "1 1 2 3\r\n2\t4  5 \r\n3 6\r\n4 5");
    write_file(fx, "codes.tsv",
               "1\t<a_0><b_1><c_2>\r\n2\t<a_0><b_1><c_3>\n3\t<a_1><b_0><c_0>\n4\t<a_0><b_1><c_2>\n"
               "5\t<a_2><b_3><c_4>\n6\t<a_1><b_2><c_0>");
    Dataset d;
    load_ok(fx, &d);
    assert_items(&d, SPLIT_TRAIN, 2, (int[]){4, 5}, 2);
    assert_items(&d, SPLIT_TRAIN, 4, (int[]){5}, 1);
    assert_int_equal(dataset_item_code(&d, 6)[1], 2);
    dataset_free(&d);
}

typedef struct {
    const char *file;     // the file to replace (NULL: remove `remove`)
    const char *text;
    const char *want1;    // substrings the message must contain
    const char *want2;
} BadCase;

static void expect_error(Fx *fx, const BadCase *bc) {
    write_good(fx);
    if (bc->text) write_file(fx, bc->file, bc->text);
    else remove_file(fx, bc->file);
    Dataset d;
    Error e = {{0}};
    int rc = dataset_load(&d, fx->dir, &e);
    if (rc == 0) fprintf(stderr, "loaded a bad directory: %s <- %s\n", bc->file, bc->text ? bc->text : "(removed)");
    assert_int_equal(rc, -1);
    assert_true(st_fixture_contains(e.msg, bc->want1));
    if (bc->want2) assert_true(st_fixture_contains(e.msg, bc->want2));
    // dataset_load leaves nothing allocated on failure (ASan checks); the struct is zeroed.
    assert_null(d.codes);
    assert_null(d.splits[0].items);
}

static void test_bad_meta(void **state) {
    Fx *fx = *state;
    static const BadCase cases[] = {
        {"meta.json", NULL, "meta.json", NULL},
        {"meta.json", "", "meta.json: empty file", NULL},
        {"meta.json", "{\"format\": \"earnest-dataset\",\n \"version\": }", "meta.json:2: invalid JSON", NULL},
        {"meta.json", "[1, 2]", "meta.json: expected a JSON object", NULL},
        {"meta.json", "{\"format\": \"other\", \"version\": 1}", "\"format\"", "earnest-dataset"},
        {"meta.json", "{\"format\": \"earnest-dataset\", \"version\": 2}", "\"version\" = 2", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_items\": 6, \"code_levels\": 3,"
         " \"codes_per_level\": [3, 4, 5]}",
         "missing field \"n_users\"", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": \"4\", \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5]}",
         "\"n_users\" must be an integer", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 0, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5]}",
         "\"n_users\" = 0 out of range", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 4, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4]}",
         "codes_per_level", "code_levels = 3"},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 4, \"n_items\": 6,"
         " \"code_levels\": 9, \"codes_per_level\": [3, 4, 5]}",
         "\"code_levels\" = 9 out of range", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 4, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 0, 5]}",
         "codes_per_level[1]", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 4, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5], \"interactions\": {\"valid\": 6}}",
         "valid.txt: 5 interactions, meta.json interactions.valid says 6", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 4, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5], \"codes_method\": 3}",
         "meta.json: field \"codes_method\" must be a string", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 4, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5], \"seed\": -1}",
         "meta.json: field \"seed\" = -1 out of range", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 4, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5], \"semantic_ids\": [1]}",
         "meta.json: field \"semantic_ids\" must be an object", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 4, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5], \"semantic_ids\": {\"levels\": 2, \"codes\": 4,"
         " \"dim\": 8, \"window\": 1, \"iters\": 5, \"seed\": 1}}",
         "meta.json: semantic_ids.power_iters must be a non-negative integer", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 4, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5], \"semantic_ids\": {\"levels\": 9, \"codes\": 4,"
         " \"dim\": 8, \"window\": 1, \"iters\": 5, \"power_iters\": 3, \"seed\": 1}}",
         "meta.json: semantic_ids: levels must be in 1..7", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_error(fx, &cases[i]);
}

// A key given twice is refused, naming the file, the line and the key (jansson
// alone would keep the last value): at the top level, inside an object, under
// another spelling of the same key, and for a key too long for jansson's message.
// meta.json sizes far beyond what the files hold are found when the files run
// out, with the usual messages; the per-user and per-item arrays grow with the
// lines read (n_users = 10^8 used to allocate 800 MB of offsets up front,
// n_items = 10^8 with 8 levels 3.2 GB of codes; fuzz_dataset and fuzz_codes
// try such sizes under libFuzzer's -malloc_limit_mb).
static void test_sizes_beyond_files(void **state) {
    Fx *fx = *state;
    static const BadCase cases[] = {
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 100000000, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5]}",
         "train.txt: 4 user lines, meta.json n_users is 100000000", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 4, \"n_items\": 100000000,"
         " \"code_levels\": 8, \"codes_per_level\": [3, 4, 5, 1, 1, 1, 1, 1]}",
         "codes.tsv:1: code has 3 tokens, expected 8", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"t\", \"n_users\": 4, \"n_items\": 100000000,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5]}",
         "codes.tsv: codes for 6 items, meta.json n_items is 100000000", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_error(fx, &cases[i]);
}

static void test_duplicate_meta_keys(void **state) {
    Fx *fx = *state;
    static const BadCase cases[] = {
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"tiny\", \"n_users\": 4, \"n_items\": 6,\n"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5], \"n_users\": 5}",
         "meta.json:2: duplicate key \"n_users\"", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"tiny\", \"n_users\": 4, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5], \"interactions\": {\"train\": 29, \"train\": 30}}",
         "meta.json:1: duplicate key \"train\"", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"tiny\", \"n_users\": 4, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5], \"n_\\u0075sers\": 4}",
         "duplicate key \"n_users\"", NULL},
        {"meta.json",
         "{\"format\": \"earnest-dataset\", \"version\": 1, \"name\": \"tiny\", \"n_users\": 4, \"n_items\": 6,"
         " \"code_levels\": 3, \"codes_per_level\": [3, 4, 5], \"an \\\"unknown\\\" and rather long key\": 1,"
         " \"an \\\"unknown\\\" and rather long key\": 2}",
         "meta.json:1: duplicate key \"an \"unknown\" and rather long key\"", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_error(fx, &cases[i]);
}

static void test_bad_splits(void **state) {
    Fx *fx = *state;
    static const BadCase cases[] = {
        {"train.txt", NULL, "train.txt", NULL},
        {"valid.txt", "", "valid.txt: empty file", NULL},
        {"train.txt", "1 1 2 3\n2 4 x\n3 6\n4 5\n", "train.txt:2:", "expected an item id, found 'x'"},
        {"train.txt", "1 1 2 3\n2 4 5\n3 6x\n4 5\n", "train.txt:3:", "expected an item id, found '6x'"},
        {"train.txt", "1 1 2 3\n2 4 -5\n3 6\n4 5\n", "train.txt:2:", "expected an item id"},
        {"train.txt", "1 1 2 3\n2 4 7\n3 6\n4 5\n", "train.txt:2:", "item id 7 out of range 1..6"},
        {"test.txt", "1 1 2 3\n2 0\n3 6\n4 5\n", "test.txt:2:", "item id 0 out of range"},
        {"train.txt", "1 1 99999999999999999999999\n2\n3\n4\n", "train.txt:1:", "out of range 1..6"},
        {"train.txt", "1 1 2 3\n3 6\n2 4 5\n4 5\n", "train.txt:2:", "user id 3 out of order (expected 2"},
        {"train.txt", "1 1 2 3\n1 4 5\n3 6\n4 5\n", "train.txt:2:", "user id 1 duplicated or out of order"},
        {"train.txt", "x 1 2 3\n2\n3\n4\n", "train.txt:1:", "expected a user id"},
        {"train.txt", " 1 1 2 3\n2\n3\n4\n", "train.txt:1:", "expected a user id"},
        {"valid.txt", "1 4\n2\n3 5 1\n", "valid.txt: 3 user lines, meta.json n_users is 4", NULL},
        {"valid.txt", "1 4\n2\n3 5 1\n4 2 3\n5 1\n", "valid.txt:5:", "more user lines than meta.json n_users = 4"},
        {"test.txt", "1 5 6\n\n2 1\n3\n4 3\n", "test.txt:2: empty line", NULL},
        {"test.txt", "1 5 6\n2 1\n3\n4 3\n\n", "test.txt:5: empty line", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_error(fx, &cases[i]);
}

static void test_bad_codes(void **state) {
    Fx *fx = *state;
    static const BadCase cases[] = {
        {"codes.tsv", NULL, "codes.tsv", NULL},
        {"codes.tsv", "", "codes.tsv: empty file", NULL},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2>\n2\t<a_0><b_1><c_3>\n3\t<a_1><b_0><c_0>\n4\t<a_0><b_1><c_2>\n5\t<a_2><b_3><c_4>\n",
         "codes.tsv: codes for 5 items, meta.json n_items is 6", "items 6..6 have no code"},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2>\n2\t<a_0><b_1><c_3>\n4\t<a_0><b_1><c_2>\n3\t<a_1><b_0><c_0>\n5\t<a_2><b_3><c_4>\n"
         "6\t<a_1><b_2><c_0>\n",
         "codes.tsv:3:", "item id 4 out of order"},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2>\n2\t<a_0><b_1><c_3>\n3\t<a_1><b_0>\n4\t<a_0><b_1><c_2>\n5\t<a_2><b_3><c_4>\n"
         "6\t<a_1><b_2><c_0>\n",
         "codes.tsv:3:", "code has 2 tokens, expected 3"},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2><d_0>\n2\t<a_0><b_1><c_3>\n3\t<a_1><b_0><c_0>\n4\t<a_0><b_1><c_2>\n"
         "5\t<a_2><b_3><c_4>\n6\t<a_1><b_2><c_0>\n",
         "codes.tsv:1:", "more than 3 tokens"},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2>\n2\t<a_0><c_1><c_3>\n3\t<a_1><b_0><c_0>\n4\t<a_0><b_1><c_2>\n5\t<a_2><b_3><c_4>\n"
         "6\t<a_1><b_2><c_0>\n",
         "codes.tsv:2:", "malformed code token for level 1"},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2>\n2\t<a_0><b_1><c_3>\n3\t<a_3><b_0><c_0>\n4\t<a_0><b_1><c_2>\n5\t<a_2><b_3><c_4>\n"
         "6\t<a_1><b_2><c_0>\n",
         "codes.tsv:3:", "code index 3 out of range 0..2 for level a"},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2>\n2\t<a_0><b_01><c_3>\n3\t<a_1><b_0><c_0>\n4\t<a_0><b_1><c_2>\n5\t<a_2><b_3><c_4>\n"
         "6\t<a_1><b_2><c_0>\n",
         "codes.tsv:2:", "leading zero"},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2>\n2\t<a_0><b_1><c_3>\n3\t<a_1><b_0><c_0>\n4\t<a_0><b_1><c_2>\n5\t<a_2><b_3><c_4\n"
         "6\t<a_1><b_2><c_0>\n",
         "codes.tsv:5:", "malformed code token for level 2"},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2>\n2\t<a_0><b_1><c_3>\n3\t<a_1><b_0><c_0>\n4\t<a_0><b_1><c_2>\n5\t<a_2><b_3x><c_4>\n"
         "6\t<a_1><b_2><c_0>\n",
         "codes.tsv:5:", "missing '>'"},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2>\n2 <a_0><b_1><c_3>\n3\t<a_1><b_0><c_0>\n4\t<a_0><b_1><c_2>\n5\t<a_2><b_3><c_4>\n"
         "6\t<a_1><b_2><c_0>\n",
         "codes.tsv:2:", "expected a TAB"},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2>\n2\t<a_0><b_1><c_3> x\n3\t<a_1><b_0><c_0>\n4\t<a_0><b_1><c_2>\n5\t<a_2><b_3><c_4>\n"
         "6\t<a_1><b_2><c_0>\n",
         "codes.tsv:2:", "unexpected text after the code"},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2>\n2\t<a_0><b_1><c_3>\n3\t<a_1><b_0><c_0>\n4\t<a_0><b_1><c_2>\n5\t<a_2><b_3><c_4>\n"
         "6\t<a_1><b_2><c_0>\n7\t<a_1><b_2><c_1>\n",
         "codes.tsv:7:", "more item lines than meta.json n_items = 6"},
        {"codes.tsv",
         "1\t<a_0><b_1><c_2>\n2\t\n3\t<a_1><b_0><c_0>\n4\t<a_0><b_1><c_2>\n5\t<a_2><b_3><c_4>\n6\t<a_1><b_2><c_0>\n",
         "codes.tsv:2:", "code has 0 tokens"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_error(fx, &cases[i]);
}

// ---- samples ----------------------------------------------------------------

static void assert_seq(const int *got, int n_got, const int *want, int n_want) {
    assert_int_equal(n_got, n_want);
    for (int i = 0; i < n_want; i++) assert_int_equal(got[i], want[i]);
}

static void test_samples_test_split(void **state) {
    Fx *fx = *state;
    Dataset d;
    load_ok(fx, &d);
    SampleSet s;
    samples_build(&s, &d, SPLIT_TEST, 20);
    assert_int_equal(s.n, 3);   // user 3 has no test items
    assert_int_equal(s.samples[0].user, 1);
    assert_seq(s.samples[0].history, s.samples[0].n_history, (int[]){1, 2, 3, 4}, 4);
    assert_seq(s.samples[0].targets, s.samples[0].n_targets, (int[]){5, 6}, 2);   // multi-target
    assert_int_equal(s.samples[1].user, 2);
    assert_seq(s.samples[1].history, s.samples[1].n_history, (int[]){4, 5}, 2);  // no valid items
    assert_seq(s.samples[1].targets, s.samples[1].n_targets, (int[]){1}, 1);
    assert_int_equal(s.samples[2].user, 4);
    // User 4: the last 20 of train (23) ++ valid (2, 3).
    int full[25];
    memcpy(full, USER4_TRAIN, sizeof USER4_TRAIN);
    full[23] = 2;
    full[24] = 3;
    assert_seq(s.samples[2].history, s.samples[2].n_history, full + 5, 20);
    assert_seq(s.samples[2].targets, s.samples[2].n_targets, (int[]){3}, 1);
    samples_free(&s);
    // A cut inside the valid items: keep 1 -> only the last valid item.
    samples_build(&s, &d, SPLIT_TEST, 1);
    assert_seq(s.samples[2].history, s.samples[2].n_history, (int[]){3}, 1);
    assert_seq(s.samples[0].history, s.samples[0].n_history, (int[]){4}, 1);
    samples_free(&s);
    // No limit.
    samples_build(&s, &d, SPLIT_TEST, 0);
    assert_seq(s.samples[2].history, s.samples[2].n_history, full, 25);
    samples_free(&s);
    dataset_free(&d);
}

static void test_samples_valid_split(void **state) {
    Fx *fx = *state;
    Dataset d;
    load_ok(fx, &d);
    SampleSet s;
    samples_build(&s, &d, SPLIT_VALID, 20);
    assert_int_equal(s.n, 3);   // user 2 has no valid items
    assert_int_equal(s.samples[0].user, 1);
    assert_seq(s.samples[0].history, s.samples[0].n_history, (int[]){1, 2, 3}, 3);
    assert_seq(s.samples[0].targets, s.samples[0].n_targets, (int[]){4}, 1);
    assert_int_equal(s.samples[1].user, 3);
    assert_seq(s.samples[1].history, s.samples[1].n_history, (int[]){6}, 1);
    assert_seq(s.samples[1].targets, s.samples[1].n_targets, (int[]){5}, 1);   // the first valid item only
    assert_int_equal(s.samples[2].user, 4);
    assert_seq(s.samples[2].history, s.samples[2].n_history, USER4_TRAIN + 3, 20);
    assert_seq(s.samples[2].targets, s.samples[2].n_targets, (int[]){2}, 1);
    samples_free(&s);
    dataset_free(&d);
}

static void test_samples_train_split(void **state) {
    Fx *fx = *state;
    Dataset d;
    load_ok(fx, &d);
    SampleSet s;
    samples_build(&s, &d, SPLIT_TRAIN, 20);
    // Positions i >= 1: user 1 -> 2, user 2 -> 1, user 3 -> 0, user 4 -> 22.
    assert_int_equal(s.n, 2 + 1 + 0 + 22);
    assert_int_equal(s.samples[0].user, 1);
    assert_seq(s.samples[0].history, s.samples[0].n_history, (int[]){1}, 1);
    assert_seq(s.samples[0].targets, s.samples[0].n_targets, (int[]){2}, 1);
    assert_seq(s.samples[1].history, s.samples[1].n_history, (int[]){1, 2}, 2);
    assert_seq(s.samples[1].targets, s.samples[1].n_targets, (int[]){3}, 1);
    assert_int_equal(s.samples[2].user, 2);
    assert_seq(s.samples[2].history, s.samples[2].n_history, (int[]){4}, 1);
    assert_seq(s.samples[2].targets, s.samples[2].n_targets, (int[]){5}, 1);
    // User 4, position i = 1..22: history = items [max(0, i-20), i), target = item i.
    for (int i = 1; i < 23; i++) {
        const Sample *x = &s.samples[3 + i - 1];
        assert_int_equal(x->user, 4);
        int from = i > 20 ? i - 20 : 0;
        assert_seq(x->history, x->n_history, USER4_TRAIN + from, i - from);
        assert_seq(x->targets, x->n_targets, USER4_TRAIN + i, 1);
    }
    samples_free(&s);
    dataset_free(&d);
}

// ---- MostPop ----------------------------------------------------------------

static void test_mostpop(void **state) {
    Fx *fx = *state;
    Dataset d;
    load_ok(fx, &d);
    // Scoring valid counts train only (tests/test_mostpop.c pins the rule). Train counts by hand: item 1: 4, 2: 4, 3: 5, 4: 2, 5: 7, 6: 7.
    // Rank: 5 (7), 6 (7, tie -> larger id after), 3 (5), 1 (4), 2 (4), 4 (2);
    // item 4 shares item 1's code, so its code is already in the ranking.
    MostPop m;
    mostpop_build(&m, &d, SPLIT_VALID); // scoring valid: train counts
    assert_int_equal(m.n, 5);
    static const int want_items[5] = {5, 6, 3, 1, 2};
    static const int want_counts[5] = {7, 7, 5, 4, 4};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(m.items[i], want_items[i]);
        assert_int_equal(m.counts[i], want_counts[i]);
    }
    mostpop_free(&m);
    dataset_free(&d);
}

// The split parser on its own, with sizes the directory loader never sees.
static void test_parse_split_direct(void **state) {
    (void)state;
    DatasetSplit sp;
    Error e = {{0}};
    const char *t = "1\n2 3 3 3\n";
    assert_int_equal(dataset_parse_split(&sp, t, strlen(t), "x.txt", 2, 3, &e), 0);
    assert_int_equal(sp.offsets[0], 0);
    assert_int_equal(sp.offsets[1], 0);
    assert_int_equal(sp.offsets[2], 3);   // repeated items are kept
    free(sp.offsets);
    free(sp.items);
    // An embedded NUL is a bad character, not an end of text.
    const char nul[] = "1 1\0 2\n2\n";
    assert_int_equal(dataset_parse_split(&sp, nul, sizeof nul - 1, "x.txt", 2, 3, &e), -1);
    assert_true(st_fixture_contains(e.msg, "x.txt:1:"));
    Split s;
    assert_int_equal(split_parse("valid", &s), 0);
    assert_int_equal(s, SPLIT_VALID);
    assert_int_equal(split_parse("dev", &s), -1);
    assert_string_equal(split_name(SPLIT_TEST), "test");
}

// The one code-token parser (codes.tsv and the LC-Rec code map both use it).
static void test_code_token(void **state) {
    (void)state;
    static const struct {
        const char *text;
        int level, n_codes;
        CodeTokenStatus want;
        int idx;        // on OK and RANGE
        size_t used;    // on OK
    } cases[] = {
        {"<a_0>", 0, 1, CODE_TOKEN_OK, 0, 5},
        {"<b_255><c_1>", 1, 256, CODE_TOKEN_OK, 255, 7},
        {"<h_999999>", 7, 1000000, CODE_TOKEN_OK, 999999, 10},
        {"<a_256>", 0, 256, CODE_TOKEN_RANGE, 256, 0},
        {"<a_99999999999>", 0, 256, CODE_TOKEN_RANGE, DATASET_MAX_CODES + 1, 0},
        {"<a_07>", 0, 256, CODE_TOKEN_LEADING_ZERO, 0, 0},
        {"<a_7", 0, 256, CODE_TOKEN_MALFORMED, 0, 0},   // shorter than any token
        {"<a_12", 0, 256, CODE_TOKEN_NO_CLOSE, 0, 0},
        {"<a_7x>", 0, 256, CODE_TOKEN_NO_CLOSE, 0, 0},
        {"<b_7>", 0, 256, CODE_TOKEN_MALFORMED, 0, 0},
        {"<a_>", 0, 256, CODE_TOKEN_MALFORMED, 0, 0},
        {"<a_-1>", 0, 256, CODE_TOKEN_MALFORMED, 0, 0},
        {"a_1>", 0, 256, CODE_TOKEN_MALFORMED, 0, 0},
        {"", 0, 256, CODE_TOKEN_MALFORMED, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *t = cases[i].text, *after = NULL;
        int idx = -1;
        CodeTokenStatus st = dataset_parse_code_token(t, t + strlen(t), cases[i].level, cases[i].n_codes, &idx, &after);
        if (st != cases[i].want) fail_msg("'%s': status %d, want %d", t, st, cases[i].want);
        if (st == CODE_TOKEN_OK || st == CODE_TOKEN_RANGE) assert_int_equal(idx, cases[i].idx);
        if (st == CODE_TOKEN_OK) assert_int_equal(after - t, cases[i].used);
    }
    // The end bound is respected: "<a_123>" cut after "<a_12" has no '>'.
    const char *t = "<a_123>", *after = NULL;
    int idx;
    assert_int_equal(dataset_parse_code_token(t, t + 5, 0, 256, &idx, &after), CODE_TOKEN_NO_CLOSE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_load_good, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_load_tolerated, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_load_codes_meta, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_bad_meta, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_meta_keys, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sizes_beyond_files, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_bad_splits, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_bad_codes, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_samples_test_split, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_samples_valid_split, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_samples_train_split, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_mostpop, fx_setup, fx_teardown),
        cmocka_unit_test(test_parse_split_direct),
        cmocka_unit_test(test_code_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
