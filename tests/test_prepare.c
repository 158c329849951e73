// test_prepare.c: producing prepared dataset directories (datasets/prepare.h).
//
// Raw fixtures are written here (Amazon JSON lines, MovieLens '::' lines) with
// splits worked out by hand below; bad inputs must fail with the file and line
// named, a nonzero status and no directory left behind.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "datasets/prepare.h"

// ---- helpers -------------------------------------------------------------------

static char g_tmp[4096]; // a fresh scratch directory per test

static int setup_tmp(void **state) {
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/test_prepare.XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(g_tmp));
    return 0;
}

static int teardown_tmp(void **state) {
    (void)state;
    remove_tree(g_tmp);
    return 0;
}

static void tmp_path(char *out, size_t n, const char *name) { assert_int_equal(path_join(out, n, g_tmp, name), 0); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static char *read_text(const char *path) {
    char *data = NULL;
    Error e;
    if (file_read_all(path, &data, NULL, &e) != 0) fail_msg("%s", e.msg);
    return data;
}

static void expect_file(const char *dir, const char *name, const char *want) {
    char path[4200];
    assert_int_equal(path_join(path, sizeof path, dir, name), 0);
    char *got = read_text(path);
    if (strcmp(got, want) != 0) fail_msg("%s:\n--- got\n%s--- want\n%s", path, got, want);
    free(got);
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// Nothing named "<prefix>.tmp.*" or "<prefix>.old.*" is left in g_tmp.
static void expect_no_temp_left(void) {
    DIR *d = opendir(g_tmp);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".tmp.") || strstr(de->d_name, ".old.")) fail_msg("left behind: %s", de->d_name);
    closedir(d);
}

static void expect_msg(const Error *e, const char *needle) {
    if (!strstr(e->msg, needle)) fail_msg("error message \"%s\" lacks \"%s\"", e->msg, needle);
}

// ---- the raw fixture -----------------------------------------------------------
//
// Kept interactions (rating >= 4) in global time order; users A..G, items i1..i12.
//   #  user item ts    note
//   1  A  i1  100
//   -  G  i11 105  rating 3: dropped (G has nothing else)
//   2  B  i2  110
//   -  A  i12 115  rating 2: dropped
//   3  A  i2  120
//   4  C  i3  130  C's only train item: C is dropped from every split
//   5  B  i3  140
//   6  D  i4  150  tie with 7: D's line comes first in the file
//   7  E  i5  150
//   8  D  i1  160
//   9  E  i1  170  tie with 10: E i1's line comes first in the file
//  10  E  i6  170
//  11  A  i4  180
//  12  F  i7  190  F: two train items, nothing later (bare valid/test lines)
//  13  F  i1  200
//  14  B  i5  210
//  15  D  i2  220
//  16  A  i3  245  tie with 17 across the train/valid boundary: A's line first
//  ---- n = 20 kept: train = first 16, valid = 17..18, test = 19..20
//  17  C  i8  245  (C dropped, so i8 never gets an id)
//  18  B  i9  260  i9 appears only in valid
//  19  D  i5  270  tie with 20
//  20  A  i10 270  i10 appears only in test
// Dense users by first train interaction: A=1 B=2 D=3 E=4 F=5.
// Dense items by first appearance among kept users: i1=1 i2=2 i3=3 i4=4 i5=5
// i6=6 i7=7 i9=8 i10=9.
typedef struct {
    char user;
    int item;
    long ts;
    double rating;
} FixtureRow;

// File order (not time order): ties keep this order, the rest is shuffled.
static const FixtureRow FIXTURE[] = {
    {'E', 1, 170, 5}, {'A', 3, 245, 4}, {'B', 2, 110, 5}, {'G', 11, 105, 3}, {'D', 4, 150, 4},
    {'C', 8, 245, 5}, {'E', 6, 170, 4}, {'A', 1, 100, 5}, {'D', 1, 160, 4.5}, {'E', 5, 150, 5},
    {'A', 12, 115, 2}, {'A', 2, 120, 4}, {'C', 3, 130, 4}, {'B', 3, 140, 5}, {'A', 4, 180, 4},
    {'F', 7, 190, 5}, {'F', 1, 200, 4}, {'B', 5, 210, 4}, {'D', 2, 220, 5}, {'B', 9, 260, 5},
    {'D', 5, 270, 4}, {'A', 10, 270, 5},
};
static const int N_FIXTURE = (int)(sizeof FIXTURE / sizeof FIXTURE[0]);

static const char *WANT_TRAIN = "1 1 2 4 3\n2 2 3 5\n3 4 1 2\n4 5 1 6\n5 7 1\n";
static const char *WANT_VALID = "1\n2 8\n3\n4\n5\n";
static const char *WANT_TEST = "1 9\n2\n3 5\n4\n5\n";

static void write_amazon_fixture(const char *path) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < N_FIXTURE; i++) {
        const FixtureRow *r = &FIXTURE[i];
        // Integer ratings are written as JSON integers, the rest as reals.
        if (r->rating == (int)r->rating)
            fprintf(f, "{\"reviewerID\": \"U%c\", \"asin\": \"B%04d\", \"reviewText\": \"ok\", \"overall\": %d, "
                       "\"unixReviewTime\": %ld}\n", r->user, r->item, (int)r->rating, r->ts);
        else
            fprintf(f, "{\"asin\": \"B%04d\", \"overall\": %.1f, \"reviewerID\": \"U%c\", \"unixReviewTime\": %ld}\n",
                    r->item, r->rating, r->user, r->ts);
    }
    assert_int_equal(fclose(f), 0);
}

static void write_movielens_fixture(const char *path) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < N_FIXTURE; i++) {
        const FixtureRow *r = &FIXTURE[i];
        fprintf(f, "%d::%d::%g::%ld\n", 10 + (r->user - 'A'), 100 + r->item, r->rating, r->ts);
    }
    assert_int_equal(fclose(f), 0);
}

// Reads `input`, splits, builds codes and writes `out`; checks the hand-made splits.
static void prepare_fixture(RawFormat fmt, const char *input, const char *out) {
    Error e;
    RawLog log;
    raw_log_init(&log);
    if (raw_read_file(&log, fmt, input, &e) != 0) fail_msg("%s", e.msg);
    assert_int_equal(log.n_lines, N_FIXTURE);
    assert_int_equal(log.n_low_rating, 2);
    assert_int_equal(log.n, 20);
    // The in-memory parser (the fuzz harnesses' entry) reads the same events.
    char *text = read_text(input);
    RawLog log2;
    raw_log_init(&log2);
    if (raw_parse_buf(&log2, fmt, text, strlen(text), input, &e) != 0) fail_msg("%s", e.msg);
    assert_int_equal(log2.n, log.n);
    assert_memory_equal(log2.ev, log.ev, log.n * sizeof *log.ev);
    raw_log_free(&log2);
    free(text);
    Dataset d;
    if (prep_split(&d, NULL, &log, &e) != 0) fail_msg("%s", e.msg);
    assert_int_equal(d.n_users, 5);
    assert_int_equal(d.n_items, 9);
    SemIdConfig cfg;
    semid_config_default(&cfg);
    prep_build_codes(&d, &cfg);
    prep_set_meta(&d, "fixture", input);
    if (prep_write_dir(out, &d, &e) != 0) fail_msg("%s", e.msg);
    dataset_free(&d);
    raw_log_free(&log);

    expect_file(out, "train.txt", WANT_TRAIN);
    expect_file(out, "valid.txt", WANT_VALID);
    expect_file(out, "test.txt", WANT_TEST);
    // 9 items: one cluster per k-means level (9 / 16 rounds to 1), so the
    // collision level alone tells the items apart, in item order.
    expect_file(out, "codes.tsv",
                "1\t<a_0><b_0><c_0><d_0>\n2\t<a_0><b_0><c_0><d_1>\n3\t<a_0><b_0><c_0><d_2>\n"
                "4\t<a_0><b_0><c_0><d_3>\n5\t<a_0><b_0><c_0><d_4>\n6\t<a_0><b_0><c_0><d_5>\n"
                "7\t<a_0><b_0><c_0><d_6>\n8\t<a_0><b_0><c_0><d_7>\n9\t<a_0><b_0><c_0><d_8>\n");

    // Read back (dataset_load, the one reader): meta.json agrees with the files.
    Dataset back;
    if (dataset_load(&back, out, &e) != 0) fail_msg("%s", e.msg);
    assert_int_equal(back.n_users, 5);
    assert_int_equal(back.n_items, 9);
    assert_int_equal(back.code_levels, 4);
    int want_cpl[4] = {1, 1, 1, 9};
    for (int l = 0; l < 4; l++) assert_int_equal(back.codes_per_level[l], want_cpl[l]);
    assert_string_equal(back.name, "fixture");
    assert_string_equal(back.source, input);
    assert_string_equal(back.codes_method, "earnest-rkmeans");
    assert_true(back.has_seed && back.has_semid);
    assert_memory_equal(&back.semid, &cfg, sizeof cfg);
    dataset_free(&back);
    expect_no_temp_left();
}

static void test_amazon_fixture(void **state) {
    (void)state;
    char input[4200], out[4200];
    tmp_path(input, sizeof input, "reviews.json");
    tmp_path(out, sizeof out, "amazon");
    write_amazon_fixture(input);
    prepare_fixture(RAW_AMAZON, input, out);
}

static void test_movielens_fixture(void **state) {
    (void)state;
    char input[4200], out[4200];
    tmp_path(input, sizeof input, "ratings.dat");
    tmp_path(out, sizeof out, "ml");
    write_movielens_fixture(input);
    prepare_fixture(RAW_MOVIELENS, input, out);
}

// ---- the CLI: gzip input, failures leave an existing directory untouched ---------

static int run_cli(const char *args, char *stderr_text, size_t n) {
    const char *bin = getenv("EARNEST_BIN");
    if (!bin) bin = "./earnest";
    char errpath[4200], cmd[16384];
    tmp_path(errpath, sizeof errpath, "stderr.txt");
    snprintf(cmd, sizeof cmd, "'%s' prepare %s >/dev/null 2>'%s'", bin, args, errpath);
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    char *text = read_text(errpath);
    snprintf(stderr_text, n, "%s", text);
    free(text);
    return WEXITSTATUS(st);
}

static void test_cli_gzip_and_atomic_failure(void **state) {
    (void)state;
    char input[4200], gz[4200], out[4200], marker[4400], cmd[12000], err[4096];
    tmp_path(input, sizeof input, "reviews.json");
    tmp_path(gz, sizeof gz, "reviews.json.gz");
    tmp_path(out, sizeof out, "amazon");
    write_amazon_fixture(input);
    snprintf(cmd, sizeof cmd, "gzip -c '%s' > '%s'", input, gz);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "raw --format amazon --input '%s' --name fx --out '%s' --seed 3", gz, out);
    assert_int_equal(run_cli(cmd, err, sizeof err), 0);
    expect_file(out, "train.txt", WANT_TRAIN);
    expect_file(out, "test.txt", WANT_TEST);

    // A failing run over an existing directory leaves it as it was.
    snprintf(marker, sizeof marker, "%s/marker", out);
    write_text(marker, "keep me\n");
    write_text(input, "{\"reviewerID\": \"U1\", \"asin\": \"B1\", \"overall\": 5, \"unixReviewTime\": 1}\nnot json\n");
    snprintf(cmd, sizeof cmd, "raw --format amazon --input '%s' --name fx --out '%s'", input, out);
    assert_int_equal(run_cli(cmd, err, sizeof err), 1);
    if (!strstr(err, "reviews.json:2")) fail_msg("stderr lacks file:line: %s", err);
    assert_true(exists(marker));
    expect_file(out, "train.txt", WANT_TRAIN);
    expect_no_temp_left();

    // Usage errors: exit 2.
    assert_int_equal(run_cli("raw --format csv --input x --name fx --out y", err, sizeof err), 2);
    assert_int_equal(run_cli("atspeed --src x", err, sizeof err), 2);
    assert_int_equal(run_cli("synthetic --out y --users zero", err, sizeof err), 2);
}

// ---- raw input errors --------------------------------------------------------------

static void expect_raw_error(RawFormat fmt, const char *text, const char *needle) {
    char path[4200], out[4200];
    tmp_path(path, sizeof path, fmt == RAW_AMAZON ? "bad.json" : "bad.dat");
    tmp_path(out, sizeof out, "never");
    write_text(path, text);
    Error e;
    RawLog log;
    raw_log_init(&log);
    int rc = raw_read_file(&log, fmt, path, &e);
    Dataset d;
    if (rc == 0) rc = prep_split(&d, NULL, &log, &e);
    raw_log_free(&log);
    if (rc == 0) {
        dataset_free(&d);
        fail_msg("accepted bad input for \"%s\"", needle);
    }
    expect_msg(&e, needle);
    // The same through the CLI: nonzero, and no output directory.
    char args[12000], err[4096];
    snprintf(args, sizeof args, "raw --format %s --input '%s' --name x --out '%s'",
             fmt == RAW_AMAZON ? "amazon" : "movielens", path, out);
    assert_int_equal(run_cli(args, err, sizeof err), 1);
    if (!strstr(err, needle)) fail_msg("CLI stderr \"%s\" lacks \"%s\"", err, needle);
    assert_false(exists(out));
    expect_no_temp_left();
}

static void test_raw_errors(void **state) {
    (void)state;
    const char *ok = "{\"reviewerID\": \"U1\", \"asin\": \"B1\", \"overall\": 5, \"unixReviewTime\": 1}\n";
    char buf[1024];
    snprintf(buf, sizeof buf, "%s%s{\"reviewerID\": \"U1\", \"asin\": \"B1\"\n", ok, ok);
    expect_raw_error(RAW_AMAZON, buf, "bad.json:3: invalid JSON");
    snprintf(buf, sizeof buf, "%s{\"reviewerID\": \"U1\", \"overall\": 5, \"unixReviewTime\": 1}\n", ok);
    expect_raw_error(RAW_AMAZON, buf, "bad.json:2: field \"asin\"");
    snprintf(buf, sizeof buf, "%s{\"reviewerID\": \"U1\", \"asin\": \"B2\", \"overall\": \"5\", \"unixReviewTime\": 1}\n", ok);
    expect_raw_error(RAW_AMAZON, buf, "bad.json:2: field \"overall\"");
    snprintf(buf, sizeof buf, "%s{\"reviewerID\": \"U1\", \"asin\": \"B2\", \"overall\": 5, \"unixReviewTime\": \"x\"}\n", ok);
    expect_raw_error(RAW_AMAZON, buf, "bad.json:2: field \"unixReviewTime\"");
    snprintf(buf, sizeof buf, "%s\n%s", ok, ok);
    expect_raw_error(RAW_AMAZON, buf, "bad.json:2: empty line");
    expect_raw_error(RAW_AMAZON, "", "bad.json: file is empty");
    // Two ratings >= 4 by one user: train gets 1 of 2, so the user goes: nobody left.
    snprintf(buf, sizeof buf, "%s%s", ok, ok);
    expect_raw_error(RAW_AMAZON, buf, "no user has 2 or more train interactions");

    expect_raw_error(RAW_MOVIELENS, "1::2::5::100\nx::2::5::100\n", "bad.dat:2: user id 'x'");
    expect_raw_error(RAW_MOVIELENS, "1::2::5::100\n1::-2::5::100\n", "bad.dat:2: item id '-2'");
    expect_raw_error(RAW_MOVIELENS, "1::0::5::100\n", "bad.dat:1: item id '0'");
    expect_raw_error(RAW_MOVIELENS, "1::2::5::100\n1::2::5::100\n999999999999::2::5::1\n", "bad.dat:3: user id");
    expect_raw_error(RAW_MOVIELENS, "1::2::five::100\n", "bad.dat:1: rating 'five'");
    expect_raw_error(RAW_MOVIELENS, "1::2::5\n", "bad.dat:1: expected user::item::rating::timestamp");
    expect_raw_error(RAW_MOVIELENS, "1::2::5::100::7\n", "bad.dat:1: more than 4");
    expect_raw_error(RAW_MOVIELENS, "1::2::5::1e3\n", "bad.dat:1: timestamp '1e3'");
    expect_raw_error(RAW_MOVIELENS, "1::2::3::100\n", "no interactions left");

    // A missing file.
    Error e;
    RawLog log;
    raw_log_init(&log);
    char path[4200];
    tmp_path(path, sizeof path, "absent.dat");
    assert_int_equal(raw_read_file(&log, RAW_MOVIELENS, path, &e), -1);
    expect_msg(&e, "absent.dat: cannot open");
    raw_log_free(&log);
}

// ---- the AtSpeed release: good and bad ------------------------------------------

static const char *GOOD_JSON =
    "{\"0\": [\"<a_1>\", \"<b_2>\", \"<c_3>\", \"<d_4>\"], \"1\": [\"<a_1>\", \"<b_2>\", \"<c_3>\", \"<d_4>\"],"
    " \"2\": [\"<a_255>\", \"<b_0>\", \"<c_9>\", \"<d_0>\"]}";

typedef struct {
    const char *train, *valid, *test, *json;
} AtspeedFiles;

static const AtspeedFiles GOOD = {"1 1 2\n2 2 3 1\n", "1\n2 1\n", "1 3\n2\n", NULL};

// Writes the files (NULL member = the good one; "-" = no such file) into g_tmp/src.
static void write_atspeed(const AtspeedFiles *f, char *src, size_t n) {
    tmp_path(src, n, "src");
    remove_tree(src);
    assert_int_equal(mkdir(src, 0755), 0);
    const char *names[4] = {"sequential_train.txt", "sequential_valid.txt", "sequential_test.txt", "toy.LCRec-1e-3lr.json"};
    const char *text[4] = {f->train ? f->train : GOOD.train, f->valid ? f->valid : GOOD.valid,
                           f->test ? f->test : GOOD.test, f->json ? f->json : GOOD_JSON};
    for (int k = 0; k < 4; k++) {
        if (!strcmp(text[k], "-")) continue;
        char path[4400];
        assert_int_equal(path_join(path, sizeof path, src, names[k]), 0);
        write_text(path, text[k]);
    }
}

static void test_atspeed_good(void **state) {
    (void)state;
    char src[4200], out[4200];
    write_atspeed(&GOOD, src, sizeof src);
    tmp_path(out, sizeof out, "toy");
    Error e;
    Dataset d;
    if (prep_read_atspeed(&d, src, "toy", &e) != 0) fail_msg("%s", e.msg);
    assert_int_equal(d.n_users, 2);
    assert_int_equal(d.n_items, 3);
    assert_string_equal(d.codes_method, "lcrec-rqvae");
    prep_set_meta(&d, "toy", src);
    if (prep_write_dir(out, &d, &e) != 0) fail_msg("%s", e.msg);
    expect_file(out, "train.txt", GOOD.train);
    expect_file(out, "valid.txt", GOOD.valid);
    expect_file(out, "test.txt", GOOD.test);
    // Colliding codes (items 1 and 2) are kept as they are.
    expect_file(out, "codes.tsv", "1\t<a_1><b_2><c_3><d_4>\n2\t<a_1><b_2><c_3><d_4>\n3\t<a_255><b_0><c_9><d_0>\n");
    char *meta_text = NULL;
    char path[4400];
    assert_int_equal(path_join(path, sizeof path, out, "meta.json"), 0);
    meta_text = read_text(path);
    assert_non_null(strstr(meta_text, "\"n_users\": 2"));
    assert_non_null(strstr(meta_text, "\"n_items\": 3"));
    assert_non_null(strstr(meta_text, "\"code_levels\": 4"));
    assert_non_null(strstr(meta_text, "\"format\": \"earnest-dataset\""));
    free(meta_text);
    dataset_free(&d);
    // Trailing spaces and CRLF line ends are tolerated.
    AtspeedFiles crlf = {"1 1 2 \r\n2 2 3 1\r\n", "1\r\n2 1", NULL, NULL};
    write_atspeed(&crlf, src, sizeof src);
    if (prep_read_atspeed(&d, src, "toy", &e) != 0) fail_msg("%s", e.msg);
    assert_int_equal(dataset_interactions(&d, SPLIT_TRAIN), 5);
    assert_int_equal(dataset_interactions(&d, SPLIT_VALID), 1);
    dataset_free(&d);
}

static void expect_atspeed_error(AtspeedFiles f, const char *needle) {
    char src[4200], out[4200], args[12000], err[4096];
    write_atspeed(&f, src, sizeof src);
    Error e;
    Dataset d;
    if (prep_read_atspeed(&d, src, "toy", &e) == 0) {
        dataset_free(&d);
        fail_msg("accepted bad input for \"%s\"", needle);
    }
    expect_msg(&e, needle);
    tmp_path(out, sizeof out, "toy_out");
    snprintf(args, sizeof args, "atspeed --src '%s' --name toy --out '%s'", src, out);
    assert_int_equal(run_cli(args, err, sizeof err), 1);
    if (!strstr(err, needle)) fail_msg("CLI stderr \"%s\" lacks \"%s\"", err, needle);
    assert_false(exists(out));
    expect_no_temp_left();
}

static void test_atspeed_errors(void **state) {
    (void)state;
    expect_atspeed_error((AtspeedFiles){"1 1 2\n2 x 3\n", NULL, NULL, NULL}, "sequential_train.txt:2: item id 'x' is not a positive integer");
    expect_atspeed_error((AtspeedFiles){"1 1 2\nu2 3\n", NULL, NULL, NULL}, "sequential_train.txt:2: user id 'u2'");
    expect_atspeed_error((AtspeedFiles){"1 1 2\n2 -3\n", NULL, NULL, NULL}, "sequential_train.txt:2: item id '-3'");
    expect_atspeed_error((AtspeedFiles){NULL, "1\n2 4\n", NULL, NULL}, "sequential_valid.txt:2: item 4 is not in the code map (items 1..3)");
    expect_atspeed_error((AtspeedFiles){NULL, NULL, "1 0\n2\n", NULL}, "sequential_test.txt:1: item id 0 is out of range");
    expect_atspeed_error((AtspeedFiles){NULL, NULL, "1 99999999999\n2\n", NULL}, "sequential_test.txt:1: item id 99999999999 is out of range");
    expect_atspeed_error((AtspeedFiles){"1 1\n1 2\n", NULL, NULL, NULL}, "sequential_train.txt:2: duplicate user 1");
    expect_atspeed_error((AtspeedFiles){"2 1\n1 2\n", NULL, NULL, NULL}, "sequential_train.txt:1: user 2 out of order");
    expect_atspeed_error((AtspeedFiles){"1 1\n\n2 1\n", NULL, NULL, NULL}, "sequential_train.txt:2: empty line");
    expect_atspeed_error((AtspeedFiles){NULL, "1\n", NULL, NULL}, "sequential_valid.txt: 1 users, but the train split has 2");
    expect_atspeed_error((AtspeedFiles){NULL, "", NULL, NULL}, "sequential_valid.txt: file is empty");
    expect_atspeed_error((AtspeedFiles){NULL, NULL, "-", NULL}, "sequential_test.txt: cannot open");
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL, "-"}, "toy.LCRec-1e-3lr.json: cannot open");
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL, ""}, "toy.LCRec-1e-3lr.json:");
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL, "{}"}, "the code map is empty");
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL, "[1, 2]"}, "expected a JSON object");
    // Key 2 missing (0, 1, 3): 3 entries need keys 0..2.
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL,
        "{\"0\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], \"1\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], "
        "\"3\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_5>\"]}"}, "key \"3\" is out of range");
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL,
        "{\"0\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], \"x\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], "
        "\"2\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_5>\"]}"}, "key \"x\" is not an item id");
    // A code map with fewer items than the text uses: item 3 is missing from it.
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL,
        "{\"0\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], \"1\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"]}"},
        "sequential_train.txt:2: item 3 is not in the code map (items 1..2)");
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL,
        "{\"0\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], \"1\": [\"<a_1>\",\"<b_2>\",\"<c_3>\"], "
        "\"2\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_5>\"]}"}, "key \"1\": 3 code tokens, expected 4");
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL,
        "{\"0\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], \"1\": [\"<a_1>\",\"<c_2>\",\"<c_3>\",\"<d_4>\"], "
        "\"2\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_5>\"]}"}, "key \"1\": token 1 is not <b_N>");
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL,
        "{\"0\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], \"1\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], "
        "\"2\": [\"<a_1>\",\"<b_2>\",\"<c_256>\",\"<d_5>\"]}"}, "key \"2\": token 2 is not <c_N> with N in 0..255");
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL,
        "{\"0\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], \"1\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], "
        "\"2\": [\"<a_1>\",\"<b_2>\",\"<c_x>\",\"<d_5>\"]}"}, "key \"2\": token 2");
    // A key given twice (here "1", whose second list would silently win) is refused, naming the file and the key.
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL,
        "{\"0\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], \"1\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"],\n"
        "\"2\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_5>\"],\n\"1\": [\"<a_2>\",\"<b_2>\",\"<c_3>\",\"<d_6>\"]}"},
        "toy.LCRec-1e-3lr.json:3: duplicate key \"1\"");
    // The same code-token parser as codes.tsv: a leading zero would name another code.
    expect_atspeed_error((AtspeedFiles){NULL, NULL, NULL,
        "{\"0\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], \"1\": [\"<a_01>\",\"<b_2>\",\"<c_3>\",\"<d_4>\"], "
        "\"2\": [\"<a_1>\",\"<b_2>\",\"<c_3>\",\"<d_5>\"]}"}, "key \"1\": token 0 is not <a_N>");
}

// ---- synthetic data: deterministic, learnable ---------------------------------------

static void synth_prepare(Dataset *seqs, const SynthConfig *c) {
    RawLog log;
    raw_log_init(&log);
    synth_generate(&log, NULL, c);
    Error e;
    if (prep_split(seqs, NULL, &log, &e) != 0) fail_msg("%s", e.msg);
    raw_log_free(&log);
}

// Recall@10 on test (history = train + valid; targets = the user's test items) of
// (a) the 10 most popular train items and (b) the 10 items that most often
// follow the last history item in train (ties and padding by popularity).
static void recall_at_10(const Dataset *s, double *mostpop, double *successor) {
    int I = s->n_items;
    double *pop = calloc((size_t)I + 1, sizeof *pop);
    double *trans = calloc(((size_t)I + 1) * ((size_t)I + 1), sizeof *trans);
    assert_non_null(pop);
    assert_non_null(trans);
    for (int u = 1; u <= s->n_users; u++) {
        const DatasetSplit *tr = &s->splits[SPLIT_TRAIN];
        const int *it = tr->items + tr->offsets[u - 1];
        size_t n = tr->offsets[u] - tr->offsets[u - 1];
        for (size_t t = 0; t < n; t++) {
            pop[it[t]] += 1.0;
            if (t + 1 < n) trans[(size_t)it[t] * (I + 1) + it[t + 1]] += 1.0;
        }
    }
    double sum_pop = 0.0, sum_succ = 0.0;
    int n_eval = 0;
    for (int u = 1; u <= s->n_users; u++) {
        const DatasetSplit *tr = &s->splits[SPLIT_TRAIN], *va = &s->splits[SPLIT_VALID], *te = &s->splits[SPLIT_TEST];
        size_t t0 = te->offsets[u - 1], t1 = te->offsets[u];
        if (t0 == t1) continue;
        size_t v0 = va->offsets[u - 1], v1 = va->offsets[u];
        int last = v1 > v0 ? va->items[v1 - 1] : tr->items[tr->offsets[u] - 1];
        // Top 10 by score = 1e6 * transitions + popularity (a plain selection loop).
        int top_pop[10], top_succ[10];
        for (int pass = 0; pass < 2; pass++) {
            int *top = pass ? top_succ : top_pop;
            for (int r = 0; r < 10; r++) {
                double best = -1.0;
                int arg = 1;
                for (int i = 1; i <= I; i++) {
                    int taken = 0;
                    for (int q = 0; q < r; q++) taken |= top[q] == i;
                    if (taken) continue;
                    double sc = pop[i] + (pass ? 1e6 * trans[(size_t)last * (I + 1) + i] : 0.0);
                    if (sc > best) { best = sc; arg = i; }
                }
                top[r] = arg;
            }
        }
        int hit_pop = 0, hit_succ = 0, n_t = 0;
        for (size_t t = t0; t < t1; t++) {
            int target = te->items[t], dup = 0;
            for (size_t q = t0; q < t; q++) dup |= te->items[q] == target;
            if (dup) continue; // targets are a set
            n_t++;
            for (int r = 0; r < 10; r++) {
                hit_pop += top_pop[r] == target;
                hit_succ += top_succ[r] == target;
            }
        }
        sum_pop += (double)hit_pop / n_t;
        sum_succ += (double)hit_succ / n_t;
        n_eval++;
    }
    *mostpop = sum_pop / n_eval;
    *successor = sum_succ / n_eval;
    free(pop);
    free(trans);
}

static void test_synthetic(void **state) {
    (void)state;
    SynthConfig c;
    synth_config_default(&c);
    Error e;
    assert_int_equal(synth_check(&c, &e), 0);
    Dataset a, b;
    synth_prepare(&a, &c);
    synth_prepare(&b, &c);
    // Deterministic for a seed.
    assert_int_equal(a.n_users, b.n_users);
    assert_int_equal(a.n_items, b.n_items);
    for (int k = 0; k < SPLIT_COUNT; k++) {
        assert_int_equal(dataset_interactions(&a, (Split)k), dataset_interactions(&b, (Split)k));
        assert_memory_equal(a.splits[k].items, b.splits[k].items, dataset_interactions(&a, (Split)k) * sizeof(int));
    }
    // Size: most users survive; the global split is 8:1:1 of the kept interactions
    // before dropping (so roughly, after).
    assert_true(a.n_users > c.n_users * 9 / 10);
    assert_true(a.n_items > c.n_items * 9 / 10);
    double n_all = (double)(dataset_interactions(&a, SPLIT_TRAIN) + dataset_interactions(&a, SPLIT_VALID) +
                            dataset_interactions(&a, SPLIT_TEST));
    double f_train = dataset_interactions(&a, SPLIT_TRAIN) / n_all;
    assert_true(f_train > 0.78 && f_train < 0.82);
    // Every user has >= 2 train items.
    for (int u = 1; u <= a.n_users; u++) {
        int n;
        dataset_user_items(&a, SPLIT_TRAIN, u, &n);
        assert_true(n >= 2);
    }
    // Learnable: following the train transitions beats MostPop clearly.
    double mp = 0.0, succ = 0.0;
    recall_at_10(&a, &mp, &succ);
    print_message("synthetic test recall@10: mostpop %.3f, successor %.3f\n", mp, succ);
    assert_true(succ > 0.3);
    assert_true(succ > 3.0 * mp);
    dataset_free(&b);
    // Another seed gives other data.
    c.seed = 2;
    synth_prepare(&b, &c);
    size_t n_a = dataset_interactions(&a, SPLIT_TRAIN);
    int differ = b.n_users != a.n_users || n_a != dataset_interactions(&b, SPLIT_TRAIN) ||
                 memcmp(a.splits[SPLIT_TRAIN].items, b.splits[SPLIT_TRAIN].items, n_a * sizeof(int)) != 0;
    assert_true(differ);
    dataset_free(&a);
    dataset_free(&b);
    // Bad settings are refused.
    c.p_follow = 0.8f;
    c.p_stay = 0.5f;
    assert_int_equal(synth_check(&c, &e), -1);
}

// `prepare synthetic`, then `prepare codes` in place and `prepare codes-check`.
static void test_cli_synthetic_codes(void **state) {
    (void)state;
    char out[4200], args[12000], err[4096], path[4400];
    tmp_path(out, sizeof out, "syn");
    snprintf(args, sizeof args, "synthetic --out '%s' --users 200 --items 60 --clusters 4 --seed 4", out);
    assert_int_equal(run_cli(args, err, sizeof err), 0);
    Error e;
    Dataset a, b;
    if (dataset_load(&a, out, &e) != 0) fail_msg("%s", e.msg);
    assert_true(a.has_seed);
    assert_int_equal(a.seed, 4);
    snprintf(args, sizeof args, "codes --data '%s' --codes 2 --seed 5 --levels 2", out);
    assert_int_equal(run_cli(args, err, sizeof err), 0);
    if (dataset_load(&b, out, &e) != 0) fail_msg("%s", e.msg);
    // Same splits, new codes: 2 k-means levels of min(2, n_items / 16) clusters + collisions.
    assert_int_equal(a.n_users, b.n_users);
    assert_int_equal(a.n_items, b.n_items);
    for (int k = 0; k < SPLIT_COUNT; k++) {
        assert_int_equal(dataset_interactions(&a, (Split)k), dataset_interactions(&b, (Split)k));
        assert_memory_equal(a.splits[k].items, b.splits[k].items, dataset_interactions(&a, (Split)k) * sizeof(int));
    }
    assert_int_equal(b.code_levels, 3);
    assert_int_equal(b.codes_per_level[0], 2);
    assert_int_equal(b.codes_per_level[1], 2);
    assert_true(b.codes_per_level[2] >= a.n_items / 4); // 4 k-means codes for ~60 items
    assert_int_equal(b.seed, 5);
    assert_true(b.has_semid);
    assert_int_equal(b.semid.levels, 2);
    assert_int_equal(b.semid.codes, 2);
    assert_string_equal(b.name, "synthetic");
    assert_string_equal(b.source, a.source);
    for (int i = 1; i <= b.n_items; i++)
        for (int j = i + 1; j <= b.n_items; j++)
            assert_true(memcmp(dataset_item_code(&b, i), dataset_item_code(&b, j), 3 * sizeof(int)) != 0);
    dataset_free(&a);
    dataset_free(&b);
    expect_no_temp_left();
    // codes-check prints both ratios.
    char outpath[4200];
    tmp_path(outpath, sizeof outpath, "check.txt");
    const char *bin = getenv("EARNEST_BIN");
    snprintf(args, sizeof args, "'%s' prepare codes-check --data '%s' > '%s'", bin ? bin : "./earnest", out, outpath);
    assert_int_equal(system(args), 0);
    char *text = read_text(outpath);
    assert_non_null(strstr(text, "pairs=train"));
    assert_non_null(strstr(text, "pairs=heldout"));
    assert_non_null(strstr(text, "ratio="));
    free(text);
    // A broken directory: codes fails, and leaves it as it was.
    assert_int_equal(path_join(path, sizeof path, out, "valid.txt"), 0);
    write_text(path, "1 2\n1 3\n");
    snprintf(args, sizeof args, "codes --data '%s'", out);
    assert_int_equal(run_cli(args, err, sizeof err), 1);
    if (!strstr(err, "valid.txt:2: user id 1 duplicated")) fail_msg("stderr: %s", err);
    expect_file(out, "valid.txt", "1 2\n1 3\n");
    expect_no_temp_left();
}

// ---- one type, one reader, one writer: load -> write is byte-identical ----------

static void expect_same_files(const char *a, const char *b) {
    static const char *FILES[5] = {"meta.json", "train.txt", "valid.txt", "test.txt", "codes.tsv"};
    for (int k = 0; k < 5; k++) {
        char pa[4400], pb[4400];
        assert_int_equal(path_join(pa, sizeof pa, a, FILES[k]), 0);
        assert_int_equal(path_join(pb, sizeof pb, b, FILES[k]), 0);
        char *x, *y;
        size_t nx, ny;
        Error e;
        if (file_read_all(pa, &x, &nx, &e) != 0 || file_read_all(pb, &y, &ny, &e) != 0) fail_msg("%s", e.msg);
        if (nx != ny || memcmp(x, y, nx) != 0) fail_msg("%s and %s differ", pa, pb);
        free(x);
        free(y);
    }
}

// dataset_load of a directory prep_write_dir wrote, written again elsewhere,
// gives the same bytes: the type carries every meta.json field the writer writes.
static void expect_round_trip(const char *dir, const char *copy) {
    Error e;
    Dataset d;
    if (dataset_load(&d, dir, &e) != 0) fail_msg("%s", e.msg);
    if (prep_write_dir(copy, &d, &e) != 0) fail_msg("%s", e.msg);
    dataset_free(&d);
    expect_same_files(dir, copy);
}

static void test_load_write_round_trip(void **state) {
    (void)state;
    char out[4200], copy[4200], args[12000], err[4096];
    // Generated data with codes built here: seed and semantic_ids in meta.json.
    tmp_path(out, sizeof out, "syn");
    tmp_path(copy, sizeof copy, "syn_copy");
    snprintf(args, sizeof args, "synthetic --out '%s' --users 150 --items 50 --clusters 5 --seed 9", out);
    assert_int_equal(run_cli(args, err, sizeof err), 0);
    expect_round_trip(out, copy);
    // The AtSpeed release: its own codes, no seed, no semantic_ids.
    char src[4200];
    write_atspeed(&GOOD, src, sizeof src);
    tmp_path(out, sizeof out, "toy");
    tmp_path(copy, sizeof copy, "toy_copy");
    snprintf(args, sizeof args, "atspeed --src '%s' --name toy --out '%s'", src, out);
    assert_int_equal(run_cli(args, err, sizeof err), 0);
    expect_round_trip(out, copy);
    expect_no_temp_left();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_amazon_fixture, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_movielens_fixture, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_cli_gzip_and_atomic_failure, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_raw_errors, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_atspeed_good, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_atspeed_errors, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_synthetic, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_cli_synthetic_codes, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_load_write_round_trip, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
