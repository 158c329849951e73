// cmd_data.c: `earnest data stats DIR [--json]`: load a prepared dataset
// directory (strictly, so this doubles as its validator) and print what the
// experiments depend on: sizes, samples, code collisions, trie branching.
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/dataset.h"
#include "datasets/prompt.h"
#include "datasets/samples.h"
#include "runtime/trie.h"
#include "datasets/vocab.h"
#include "experiments/cli.h"
#include "experiments/commands.h"

static const char *DATA_ABOUT =
    "  Loads a prepared dataset directory (meta.json, train/valid/test.txt, codes.tsv), checking\n"
    "  every line, and prints its statistics: users, items, interactions per split, samples per\n"
    "  split (AtSpeed convention, histories cut to the last 20 items), code collisions and the\n"
    "  branching of the item-code trie per level.\n";

typedef struct {
    double load_s;
    size_t interactions[SPLIT_COUNT];
    size_t samples[SPLIT_COUNT];
    double mean_targets_test;      // per test sample
    double mean_history_test;      // after truncation to SAMPLES_MAX_HISTORY
    int used_codes[DATASET_MAX_LEVELS];   // distinct indices used per level
    int distinct_codes;
    int colliding_codes;           // codes shared by more than one item
    int colliding_items;           // items that share their code
    int max_items_per_code;
    double branch_mean[DATASET_MAX_LEVELS];
    int branch_max[DATASET_MAX_LEVELS];
} DataStats;

static int data_stats_compute(DataStats *st, const Dataset *d, Error *e) {
    memset(st, 0, sizeof *st);
    for (int s = 0; s < SPLIT_COUNT; s++) {
        st->interactions[s] = dataset_interactions(d, (Split)s);
        SampleSet ss;
        samples_build(&ss, d, (Split)s, SAMPLES_MAX_HISTORY);
        st->samples[s] = ss.n;
        if (s == SPLIT_TEST && ss.n > 0) {
            size_t t = 0, h = 0;
            for (size_t i = 0; i < ss.n; i++) {
                t += (size_t)ss.samples[i].n_targets;
                h += (size_t)ss.samples[i].n_history;
            }
            st->mean_targets_test = (double)t / (double)ss.n;
            st->mean_history_test = (double)h / (double)ss.n;
        }
        samples_free(&ss);
    }
    int L = d->code_levels;
    for (int j = 0; j < L; j++) {
        char *used = xcalloc((size_t)d->codes_per_level[j], 1);
        for (int i = 1; i <= d->n_items; i++) used[dataset_item_code(d, i)[j]] = 1;
        for (int c = 0; c < d->codes_per_level[j]; c++) st->used_codes[j] += used[c];
        free(used);
    }
    // The trie over the model vocabulary's token ids, as decoding uses it.
    Vocab v;
    if (prompt_vocab_build(&v, d, 0, 0, e) != 0) return -1;
    int *tokens = xmalloc(((size_t)d->n_items + 1) * (size_t)L * sizeof(int));
    int rc = vocab_item_tokens(tokens, &v, d, e);
    vocab_free(&v);
    if (rc != 0) {
        free(tokens);
        return -1;
    }
    Trie t;
    trie_build(&t, tokens, d->n_items, L);
    free(tokens);
    for (int l = 0; l < L; l++) {
        int lo = t.depth_start[l], hi = t.depth_start[l + 1];
        size_t sum = 0;
        for (int x = lo; x < hi; x++) {
            int c = t.first_edge[x + 1] - t.first_edge[x];
            sum += (size_t)c;
            if (c > st->branch_max[l]) st->branch_max[l] = c;
        }
        st->branch_mean[l] = hi > lo ? (double)sum / (double)(hi - lo) : 0.0;
    }
    int n_leaves = t.n_nodes - t.depth_start[L];
    st->distinct_codes = n_leaves;
    for (int k = 0; k < n_leaves; k++) {
        int c = t.leaf_first[k + 1] - t.leaf_first[k];
        if (c > 1) {
            st->colliding_codes++;
            st->colliding_items += c;
        }
        if (c > st->max_items_per_code) st->max_items_per_code = c;
    }
    trie_free(&t);
    return 0;
}

static json_t *json_int_array(const int *x, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(x[i]));
    return a;
}

static int data_print_json(const DataStats *st, const Dataset *d, const char *dir) {
    json_t *o = json_object();
    json_object_set_new(o, "dir", json_string(dir));
    json_object_set_new(o, "name", json_string(d->name));
    json_object_set_new(o, "n_users", json_integer(d->n_users));
    json_object_set_new(o, "n_items", json_integer(d->n_items));
    for (int s = 0; s < SPLIT_COUNT; s++) {
        char key[64];
        snprintf(key, sizeof key, "interactions_%s", split_name((Split)s));
        json_object_set_new(o, key, json_integer((json_int_t)st->interactions[s]));
        snprintf(key, sizeof key, "samples_%s", split_name((Split)s));
        json_object_set_new(o, key, json_integer((json_int_t)st->samples[s]));
    }
    json_object_set_new(o, "test_users_with_targets", json_integer((json_int_t)st->samples[SPLIT_TEST]));
    json_object_set_new(o, "mean_test_targets", json_real(st->mean_targets_test));
    json_object_set_new(o, "max_history", json_integer(SAMPLES_MAX_HISTORY));
    json_object_set_new(o, "mean_test_history", json_real(st->mean_history_test));
    json_object_set_new(o, "code_levels", json_integer(d->code_levels));
    json_object_set_new(o, "codes_per_level", json_int_array(d->codes_per_level, d->code_levels));
    json_object_set_new(o, "used_codes_per_level", json_int_array(st->used_codes, d->code_levels));
    json_object_set_new(o, "distinct_codes", json_integer(st->distinct_codes));
    json_object_set_new(o, "colliding_codes", json_integer(st->colliding_codes));
    json_object_set_new(o, "colliding_items", json_integer(st->colliding_items));
    json_object_set_new(o, "max_items_per_code", json_integer(st->max_items_per_code));
    json_t *bm = json_array();
    for (int l = 0; l < d->code_levels; l++) json_array_append_new(bm, json_real(st->branch_mean[l]));
    json_object_set_new(o, "trie_branching_mean", bm);
    json_object_set_new(o, "trie_branching_max", json_int_array(st->branch_max, d->code_levels));
    json_object_set_new(o, "load_seconds", json_real(st->load_s));
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(o);
    if (!s) {
        fprintf(stderr, "earnest data: cannot serialise JSON\n");
        return 1;
    }
    int ok = printf("%s\n", s) >= 0 && fflush(stdout) == 0;
    free(s);
    return ok ? 0 : 1;
}

static void data_print_table(const DataStats *st, const Dataset *d, const char *dir) {
    printf("dataset            %s (%s)\n", d->name, dir);
    printf("users              %d\n", d->n_users);
    printf("items              %d\n", d->n_items);
    printf("interactions       train %zu / valid %zu / test %zu\n", st->interactions[SPLIT_TRAIN],
           st->interactions[SPLIT_VALID], st->interactions[SPLIT_TEST]);
    printf("samples            train %zu / valid %zu / test %zu\n", st->samples[SPLIT_TRAIN],
           st->samples[SPLIT_VALID], st->samples[SPLIT_TEST]);
    printf("test users with targets %zu, mean targets %.4f\n", st->samples[SPLIT_TEST], st->mean_targets_test);
    printf("mean test history  %.4f items (last %d kept)\n", st->mean_history_test, SAMPLES_MAX_HISTORY);
    printf("code levels        %d\n", d->code_levels);
    for (int l = 0; l < d->code_levels; l++)
        printf("  level %c          %d codes (%d used), trie branching mean %.3f max %d\n", 'a' + l,
               d->codes_per_level[l], st->used_codes[l], st->branch_mean[l], st->branch_max[l]);
    printf("distinct codes     %d\n", st->distinct_codes);
    printf("colliding codes    %d shared by %d items (at most %d items per code)\n", st->colliding_codes,
           st->colliding_items, st->max_items_per_code);
    printf("load time          %.3f s\n", st->load_s);
}

int cmd_data(int argc, char **argv) {
    const char *args[2] = {NULL, NULL};
    int n_args = 0, as_json = 0;
    CliFlag flags[] = {{"--json", CLI_FLAG, &as_json, .help = "one JSON object on stdout instead of the table"}};
    CliSpec cli = {.verb = "data", .synopsis = "stats DATA_DIR [--json]", .about = DATA_ABOUT, .flags = flags,
                   .n_flags = CLI_COUNT(flags), .args = args, .min_args = 2, .max_args = 2, .n_args = &n_args,
                   .args_meta = "'stats DATA_DIR'"};
    int parsed = cli_parse(&cli, argc, argv);
    if (parsed >= 0) return parsed;
    if (strcmp(args[0], "stats") != 0) {
        fprintf(stderr, "earnest data: unknown subcommand '%s' (known: stats)\n", args[0]);
        return 2;
    }
    const char *dir = args[1];
    Error e;
    Dataset d;
    double t0 = time_now_s();
    if (dataset_load(&d, dir, &e) != 0) {
        fprintf(stderr, "earnest data: %s\n", e.msg);
        return 1;
    }
    double load_s = time_now_s() - t0;
    DataStats st;
    int rc = data_stats_compute(&st, &d, &e);
    if (rc != 0) {
        fprintf(stderr, "earnest data: %s\n", e.msg);
        dataset_free(&d);
        return 1;
    }
    st.load_s = load_s;
    if (as_json) rc = data_print_json(&st, &d, dir);
    else data_print_table(&st, &d, dir);
    dataset_free(&d);
    return rc;
}
