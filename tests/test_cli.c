// test_cli.c: the one flag parser of the verbs (experiments/cli.h): values,
// defaults, ranges, non-finite numbers, choices, required flags, lists,
// repeatable flags, positional arguments, --help, and which lists it frees.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "experiments/cli.h"

typedef struct {
    const char *out, *method;
    int beam, quiet;
    float lr;
    double eps;
    CliIntList lens;
    CliStrings texts;
    const char *args[2];
    int n_args;
} Opts;

static int default_lens[2] = {512, 4096};

// Parses argv (NULL-terminated, argv[0] = the verb) into a fresh Opts.
static int parse(Opts *o, CliSpec *cli, CliFlag *flags, const char **argv) {
    memset(o, 0, sizeof *o);
    o->beam = 20;
    o->lr = 1e-3f;
    o->eps = 0.05;
    o->method = "finetune";
    o->lens = (CliIntList){default_lens, 2};
    CliFlag f[] = {
        {"--out", CLI_STRING, &o->out, .required = 1, .help = "output"},
        {"--method", CLI_STRING, &o->method, .choices = "finetune|earn", .help = "method"},
        {"--beam", CLI_INT, &o->beam, .lo = 1, .hi = 1024, .help = "beam"},
        {"--quiet", CLI_FLAG, &o->quiet, .help = "quiet"},
        {"--lr", CLI_FLOAT, &o->lr, .help = "any finite number"},
        {"--eps", CLI_DOUBLE, &o->eps, .lo = 0, .hi = 1, .help = "in [0, 1]"},
        {"--prompt-len", CLI_INT_LIST, &o->lens, .lo = 1, .hi = 1 << 20, .help = "lengths"},
        {"--text", CLI_STRINGS, &o->texts, .hi = 3, .help = "repeatable"},
    };
    memcpy(flags, f, sizeof f);
    *cli = (CliSpec){.verb = "test", .flags = flags, .n_flags = CLI_COUNT(f), .args = o->args, .min_args = 0,
                     .max_args = 2, .n_args = &o->n_args};
    int argc = 0;
    while (argv[argc]) argc++;
    return cli_parse(cli, argc, (char **)argv);
}

static void test_values_and_defaults(void **state) {
    (void)state;
    Opts o;
    CliSpec cli;
    CliFlag flags[8];
    const char *argv[] = {"test", "--out", "x.json", "--beam", "5", "--quiet", "pos1", "--lr", "-2.5e-3", NULL};
    assert_int_equal(parse(&o, &cli, flags, argv), -1);
    assert_string_equal(o.out, "x.json");
    assert_int_equal(o.beam, 5);
    assert_int_equal(o.quiet, 1);
    assert_true(o.lr == -2.5e-3f);
    assert_true(o.eps == 0.05);                 // default kept
    assert_string_equal(o.method, "finetune");   // default kept
    assert_ptr_equal(o.lens.v, default_lens);    // default list untouched...
    assert_int_equal(o.n_args, 1);
    assert_string_equal(o.args[0], "pos1");
    assert_true(cli_given(&cli, "--beam"));
    assert_false(cli_given(&cli, "--eps"));
    cli_free(&cli);                              // ...and not freed (ASan would see it)
    assert_ptr_equal(o.lens.v, default_lens);
}

static void test_bad_values(void **state) {
    (void)state;
    Opts o;
    CliSpec cli;
    CliFlag flags[8];
    const char *cases[][6] = {
        {"test", "--out", "x", "--beam", "0", NULL},       // below the range
        {"test", "--out", "x", "--beam", "5x", NULL},      // not an integer
        {"test", "--out", "x", "--beam", "1e3", NULL},     // not an integer
        {"test", "--out", "x", "--lr", "inf", NULL},       // not finite
        {"test", "--out", "x", "--lr", "nan", NULL},       // not finite
        {"test", "--out", "x", "--eps", "1.5", NULL},      // above the range
        {"test", "--out", "x", "--method", "lora", NULL},  // not a choice
        {"test", "--out", "x", "--frob", "1", NULL},       // unknown flag
        {"test", "--out", "x", "--beam", NULL, NULL},      // missing value
        {"test", "--beam", "3", NULL, NULL, NULL},         // --out is required
        {"test", "--out", "x", "a", "b", "c"},             // three positionals, at most two
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[7] = {0};
        memcpy(argv, cases[i], sizeof cases[i]);
        assert_int_equal(parse(&o, &cli, flags, argv), 2);
        cli_free(&cli);
    }
}

static void test_lists_and_repeats(void **state) {
    (void)state;
    Opts o;
    CliSpec cli;
    CliFlag flags[8];
    const char *argv[] = {"test", "--out", "a", "--prompt-len", "1,2,3", "--text", "one", "--text", "two",
                          "--out", "b", "--prompt-len", "7,8", NULL};
    assert_int_equal(parse(&o, &cli, flags, argv), -1);
    assert_string_equal(o.out, "b");                  // a flag given again replaces its value
    assert_int_equal(o.lens.n, 2);                    // the list too (the first one is freed)
    assert_int_equal(o.lens.v[0], 7);
    assert_int_equal(o.lens.v[1], 8);
    assert_int_equal(o.texts.n, 2);                   // a repeatable flag collects
    assert_string_equal(o.texts.v[0], "one");
    assert_string_equal(o.texts.v[1], "two");
    cli_free(&cli);
    assert_null(o.lens.v);
    assert_null(o.texts.v);

    const char *bad_list[] = {"test", "--out", "a", "--prompt-len", "1,,2", NULL};
    assert_int_equal(parse(&o, &cli, flags, bad_list), 2);
    cli_free(&cli);
    const char *too_many[] = {"test", "--out", "a", "--text", "1", "--text", "2", "--text", "3", "--text", "4", NULL};
    assert_int_equal(parse(&o, &cli, flags, too_many), 2);
    cli_free(&cli);
}

static void test_help(void **state) {
    (void)state;
    Opts o;
    CliSpec cli;
    CliFlag flags[8];
    // --help wins over everything else, even a missing required flag or a bad value.
    const char *argv[] = {"test", "--beam", "0", "--help", NULL};
    assert_int_equal(parse(&o, &cli, flags, argv), 0);
    // The usage comes from the table: every flag, its help, its default.
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    cli_usage(f, &cli);
    fclose(f);
    assert_non_null(strstr(buf, "usage: earnest test"));
    assert_non_null(strstr(buf, "--prompt-len"));
    assert_non_null(strstr(buf, "(default 512,4096)"));
    assert_non_null(strstr(buf, "--out VALUE"));
    assert_non_null(strstr(buf, "(required)"));
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_and_defaults),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_lists_and_repeats),
        cmocka_unit_test(test_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
