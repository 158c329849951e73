// cmd_prepare.c: `earnest prepare SOURCE ...`, which writes prepared dataset
// directories (datasets/prepare.h) from the AtSpeed release, raw logs or the
// synthetic generator, rebuilds semantic IDs, and checks them.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/prepare.h"
#include "experiments/cli.h"
#include "experiments/commands.h"

static const char *PREPARE_ABOUT =
    "  earnest prepare atspeed --src SRC_DIR --name NAME --out DIR\n"
    "      SRC_DIR holds sequential_{train,valid,test}.txt and NAME.LCRec-1e-3lr.json\n"
    "      (the AtSpeed release); validated and copied with its codes as they are.\n"
    "  earnest prepare raw --format amazon|movielens --input FILE --name NAME --out DIR [codes options]\n"
    "      amazon: 5-core JSON lines (reviewerID, asin, overall, unixReviewTime), plain or .gz;\n"
    "      movielens: ratings.dat lines user::item::rating::timestamp.\n"
    "      Keeps rating >= 4, sorts by timestamp (ties: file order), splits the global\n"
    "      timeline 8:1:1, drops users with < 2 train items, then builds semantic IDs.\n"
    "  earnest prepare synthetic --out DIR [--name synthetic --users 2000 --items 500 --clusters 20\n"
    "      --min-len 5 --max-len 30 --p-follow 0.6 --p-stay 0.3] [codes options]\n"
    "      generated data with planted next-item structure; same split as raw;\n"
    "      codes use --window 1 unless given (the clusters show in adjacent items).\n"
    "  earnest prepare codes --data DIR [codes options]\n"
    "      rebuilds DIR's codes from its own train split (in place, atomically).\n"
    "  earnest prepare codes-check --data DIR [--window 3]\n"
    "      P(same first-level code | pair co-occurs within the window) over\n"
    "      P(same first-level code | random pair of items), for pairs inside train\n"
    "      sequences and for held-out pairs (the later item in valid or test).\n"
    "  Codes options (--seed --levels --codes --dim --window --iters --power-iters): k-means levels,\n"
    "  clusters per level at most, embedding size, co-occurrence window, Lloyd iterations, subspace\n"
    "  iterations; a collision level is added on top.\n";

typedef struct {
    const char *src, *name, *out, *format, *input, *data;
    SemIdConfig semid;
    SynthConfig synth;
    int window_given, threads;
} PrepareArgs;

static int need(const char *value, const char *flag, const char *what) {
    if (value) return 0;
    fprintf(stderr, "earnest prepare %s: %s is required (earnest prepare --help)\n", what, flag);
    return 2;
}

// A dataset name becomes part of file names: letters, digits, '_', '-', '.'.
static int check_name(const char *name) {
    size_t n = strlen(name);
    int ok = n > 0 && n < 100 && name[0] != '.';
    for (size_t i = 0; ok && i < n; i++) {
        char c = name[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
             c == '-' || c == '.';
    }
    if (!ok) fprintf(stderr, "earnest prepare: --name '%s' must be 1-99 characters of [A-Za-z0-9_.-]\n", name);
    return ok ? 0 : 2;
}

static void report(const char *dir, const Dataset *d, double secs) {
    printf("prepared %s: %d users, %d items, %zu/%zu/%zu train/valid/test interactions, %d code levels [",
           dir, d->n_users, d->n_items, dataset_interactions(d, SPLIT_TRAIN), dataset_interactions(d, SPLIT_VALID),
           dataset_interactions(d, SPLIT_TEST), d->code_levels);
    for (int l = 0; l < d->code_levels; l++) printf("%s%d", l ? "," : "", d->codes_per_level[l]);
    printf("], %.2f s\n", secs);
}

static int run_atspeed(PrepareArgs *a) {
    int rc = need(a->src, "--src", "atspeed") | need(a->name, "--name", "atspeed") | need(a->out, "--out", "atspeed");
    if (rc || check_name(a->name)) return 2;
    double t0 = time_now_s();
    Error e;
    Dataset d;
    if (prep_read_atspeed(&d, a->src, a->name, &e) != 0) {
        fprintf(stderr, "earnest prepare atspeed: %s\n", e.msg);
        return 1;
    }
    char source[1024];
    snprintf(source, sizeof source, "atspeed:%s", a->src);
    prep_set_meta(&d, a->name, source);
    rc = prep_write_dir(a->out, &d, &e);
    if (rc != 0) fprintf(stderr, "earnest prepare atspeed: %s\n", e.msg);
    else report(a->out, &d, time_now_s() - t0);
    dataset_free(&d);
    return rc ? 1 : 0;
}

// The shared tail of raw and synthetic: split, codes, write.
static int split_and_write(const RawLog *log, PrepareArgs *a, const char *name, const char *source,
                           double t0, const char *verb) {
    Error e;
    Dataset d;
    if (prep_split(&d, NULL, log, &e) != 0) {
        fprintf(stderr, "earnest prepare %s: %s\n", verb, e.msg);
        return 1;
    }
    prep_build_codes(&d, &a->semid); // also records codes_method, seed and the settings
    prep_set_meta(&d, name, source);
    int rc = prep_write_dir(a->out, &d, &e);
    if (rc != 0) fprintf(stderr, "earnest prepare %s: %s\n", verb, e.msg);
    else report(a->out, &d, time_now_s() - t0);
    dataset_free(&d);
    return rc ? 1 : 0;
}

static int run_raw(PrepareArgs *a) {
    int rc = need(a->format, "--format", "raw") | need(a->input, "--input", "raw") |
             need(a->name, "--name", "raw") | need(a->out, "--out", "raw");
    if (rc || check_name(a->name)) return 2;
    RawFormat fmt;
    if (raw_format_parse(a->format, &fmt) != 0) {
        fprintf(stderr, "earnest prepare raw: --format must be amazon or movielens (got '%s')\n", a->format);
        return 2;
    }
    double t0 = time_now_s();
    Error e;
    RawLog log;
    raw_log_init(&log);
    if (raw_read_file(&log, fmt, a->input, &e) != 0) {
        fprintf(stderr, "earnest prepare raw: %s\n", e.msg);
        raw_log_free(&log);
        return 1;
    }
    fprintf(stderr, "earnest prepare raw: %zu lines, %zu with rating < 4 dropped\n", log.n_lines, log.n_low_rating);
    char source[1024];
    snprintf(source, sizeof source, "%s:%s", a->format, a->input);
    rc = split_and_write(&log, a, a->name, source, t0, "raw");
    raw_log_free(&log);
    return rc;
}

static int run_synthetic(PrepareArgs *a) {
    if (need(a->out, "--out", "synthetic")) return 2;
    const char *name = a->name ? a->name : "synthetic";
    if (check_name(name)) return 2;
    Error e;
    if (synth_check(&a->synth, &e) != 0) {
        fprintf(stderr, "earnest prepare synthetic: %s\n", e.msg);
        return 2;
    }
    // The planted clusters show in adjacent items (a user dwells in a cluster,
    // then jumps to the next one), so by default the codes look at neighbours only.
    if (!a->window_given) a->semid.window = 1;
    double t0 = time_now_s();
    RawLog log;
    raw_log_init(&log);
    synth_generate(&log, NULL, &a->synth);
    char source[512];
    snprintf(source, sizeof source,
             "synthetic:users=%d,items=%d,clusters=%d,len=%d..%d,p_follow=%.3g,p_stay=%.3g,seed=%llu",
             a->synth.n_users, a->synth.n_items, a->synth.n_clusters, a->synth.min_len, a->synth.max_len,
             a->synth.p_follow, a->synth.p_stay, (unsigned long long)a->synth.seed);
    int rc = split_and_write(&log, a, name, source, t0, "synthetic");
    raw_log_free(&log);
    return rc;
}

static int run_codes(PrepareArgs *a) {
    if (need(a->data, "--data", "codes")) return 2;
    double t0 = time_now_s();
    Error e;
    Dataset d;
    if (dataset_load(&d, a->data, &e) != 0) {
        fprintf(stderr, "earnest prepare codes: %s\n", e.msg);
        return 1;
    }
    prep_build_codes(&d, &a->semid); // replaces the codes; records codes_method, seed and the settings
    int rc = prep_write_dir(a->data, &d, &e);
    if (rc != 0) fprintf(stderr, "earnest prepare codes: %s\n", e.msg);
    else report(a->data, &d, time_now_s() - t0);
    dataset_free(&d);
    return rc ? 1 : 0;
}

static int run_codes_check(PrepareArgs *a) {
    if (need(a->data, "--data", "codes-check")) return 2;
    Error e;
    Dataset d;
    if (dataset_load(&d, a->data, &e) != 0) {
        fprintf(stderr, "earnest prepare codes-check: %s\n", e.msg);
        return 1;
    }
    // train: pairs inside the train sequences (what codes built here learned from);
    // heldout: pairs in train + valid + test whose later item is in valid or test.
    int U = d.n_users;
    size_t *off = xmalloc(((size_t)U + 1) * sizeof *off), *from = xmalloc(((size_t)U + 1) * sizeof *from);
    size_t total = 0;
    for (int k = 0; k < SPLIT_COUNT; k++) total += dataset_interactions(&d, (Split)k);
    int *all = xmalloc((total ? total : 1) * sizeof *all);
    off[0] = 0;
    for (int u = 1; u <= U; u++) {
        size_t w = off[u - 1];
        for (int k = 0; k < SPLIT_COUNT; k++) {
            if (k == SPLIT_VALID) from[u - 1] = w - off[u - 1];
            int n;
            const int *items = dataset_user_items(&d, (Split)k, u, &n);
            for (int t = 0; t < n; t++) all[w++] = items[t];
        }
        off[u] = w;
    }
    SemIdCheck r[2];
    const DatasetSplit *train = &d.splits[SPLIT_TRAIN];
    semid_check(&r[0], d.codes, d.code_levels, train->offsets, train->items, NULL, U, d.n_items, a->semid.window);
    semid_check(&r[1], d.codes, d.code_levels, off, all, from, U, d.n_items, a->semid.window);
    const char *pairs[2] = {"train", "heldout"};
    for (int k = 0; k < 2; k++)
        printf("data=%s codes=%s pairs=%s window=%d n_pairs=%zu p_same_a_cooc=%.4f p_same_a_random=%.4f "
               "ratio=%.2f\n", a->data, d.codes_method, pairs[k], a->semid.window, r[k].n_pairs, r[k].p_cooc,
               r[k].p_random, r[k].ratio);
    free(off);
    free(from);
    free(all);
    dataset_free(&d);
    return 0;
}

int cmd_prepare(int argc, char **argv) {
    PrepareArgs a;
    memset(&a, 0, sizeof a);
    semid_config_default(&a.semid);
    synth_config_default(&a.synth);
    int seed = (int)a.semid.seed, n_src = 0;
    const char *src = NULL;
    CliFlag flags[] = {
        {"--src", CLI_STRING, &a.src, .meta = "SRC_DIR", .help = "atspeed: the release files"},
        {"--name", CLI_STRING, &a.name, .meta = "NAME", .help = "dataset name ([A-Za-z0-9_.-], 1-99 characters)"},
        {"--out", CLI_STRING, &a.out, .meta = "DIR", .help = "the prepared dataset directory to write"},
        {"--format", CLI_STRING, &a.format, .choices = "amazon|movielens", .help = "raw: the input's format"},
        {"--input", CLI_STRING, &a.input, .meta = "FILE", .help = "raw: the ratings file"},
        {"--data", CLI_STRING, &a.data, .meta = "DIR", .help = "codes, codes-check: a prepared dataset"},
        {"--seed", CLI_INT, &seed, .lo = 0, .hi = 2147483647, .help = "seed of generated data and codes"},
        {"--levels", CLI_INT, &a.semid.levels, .lo = 1, .hi = 7, .help = "k-means code levels"},
        {"--codes", CLI_INT, &a.semid.codes, .lo = 1, .hi = 100000, .help = "clusters per level at most"},
        {"--dim", CLI_INT, &a.semid.dim, .lo = 1, .hi = 1024, .help = "item embedding size"},
        {"--window", CLI_INT, &a.semid.window, .lo = 1, .hi = 1000, .help = "co-occurrence window"},
        {"--iters", CLI_INT, &a.semid.iters, .lo = 0, .hi = 10000, .help = "Lloyd iterations"},
        {"--power-iters", CLI_INT, &a.semid.power_iters, .lo = 0, .hi = 1000, .help = "subspace iterations"},
        {"--threads", CLI_INT, &a.threads, .lo = 1, .hi = 4096, .help = "threads (default: EARNEST_THREADS or all cores)"},
        {"--users", CLI_INT, &a.synth.n_users, .lo = 1, .hi = 10000000, .help = "synthetic: users"},
        {"--items", CLI_INT, &a.synth.n_items, .lo = 2, .hi = 10000000, .help = "synthetic: items"},
        {"--clusters", CLI_INT, &a.synth.n_clusters, .lo = 1, .hi = 10000000, .help = "synthetic: item clusters"},
        {"--min-len", CLI_INT, &a.synth.min_len, .lo = 1, .hi = 100000, .help = "synthetic: shortest sequence"},
        {"--max-len", CLI_INT, &a.synth.max_len, .lo = 1, .hi = 100000, .help = "synthetic: longest sequence"},
        {"--p-follow", CLI_FLOAT, &a.synth.p_follow, .lo = 0, .hi = 1, .help = "synthetic: P(the planted successor)"},
        {"--p-stay", CLI_FLOAT, &a.synth.p_stay, .lo = 0, .hi = 1, .help = "synthetic: P(an item of the same cluster)"},
    };
    CliSpec cli = {.verb = "prepare", .synopsis = "atspeed|raw|synthetic|codes|codes-check [options]",
                   .about = PREPARE_ABOUT, .flags = flags, .n_flags = CLI_COUNT(flags),
                   .args = &src, .min_args = 1, .max_args = 1, .n_args = &n_src, .args_meta = "the SOURCE"};
    int rc = cli_parse(&cli, argc, argv);
    if (rc >= 0) return rc;
    {
        Error le;
        if ((a.out || a.data) && output_lock_hold(a.out ? a.out : a.data, &le)) return cli_fail("prepare", &le); // one writer per output
    }
    a.semid.seed = a.synth.seed = (uint64_t)seed;
    a.window_given = cli_given(&cli, "--window");
    threads_init(a.threads);
    if (!strcmp(src, "atspeed")) return run_atspeed(&a);
    if (!strcmp(src, "raw")) return run_raw(&a);
    if (!strcmp(src, "synthetic")) return run_synthetic(&a);
    if (!strcmp(src, "codes")) return run_codes(&a);
    if (!strcmp(src, "codes-check")) return run_codes_check(&a);
    fprintf(stderr, "earnest prepare: unknown source '%s' (known: atspeed, raw, synthetic, codes, codes-check)\n", src);
    return 2;
}
