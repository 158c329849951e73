// test_promptpolicy.c: prompt compression before the prefill (experiments/promptpolicy.c).
//
//  - specs: defaults, every parameter, the formatted spec, and each kind of bad
//    input (unknown policy, malformed key=value, empty field, unknown key,
//    items < 1 or not an integer, ratio outside [0, 1) or not a number);
//  - how many items each policy removes (floor(ratio * n); truncate's n - items);
//  - hand-built selections written out from the rule (truncate: the last N;
//    selective: the lowest self-information removed, ties: the older first),
//    and both selections against their plain twins on random inputs;
//  - self-information against a slow reference: the double-precision reference
//    model's logits (tests/helpers/ref_model.c), log-softmax in double, per
//    item token (relative tolerance 1e-4 on each item's sum);
//  - the whole step on a hand-built dataset, for both templates: the kept
//    items are those the reference scores select (item spans located here by
//    the template's layout, not by the code under test), and the prompt the
//    dataset's template builds from them is the prompt of that shorter history;
//    truncate keeps the last N; an EARN LM is refused.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "datasets/prompt.h"
#include "datasets/vocab.h"
#include "experiments/promptpolicy.h"
#include "helpers/ref_model.h"

#define TOL_INFO 1e-4 // relative, float forward vs double reference

static void expect_parse_error(const char *spec, const char *needle) {
    PromptPolicy p;
    Error e = {{0}};
    int rc = promptpolicy_parse(&p, spec, &e);
    if (rc == 0 || !strstr(e.msg, needle)) print_message("    '%s' -> rc %d '%s' (want '%s')\n", spec, rc, e.msg, needle);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, needle));
}

static void test_parse(void **st) {
    (void)st;
    PromptPolicy p;
    Error e;
    char buf[2048];
    assert_int_equal(promptpolicy_parse(&p, "truncate", &e), 0);
    assert_true(p.kind == PP_TRUNCATE && p.items == 10);
    assert_int_equal(promptpolicy_parse(&p, "truncate:items=5", &e), 0);
    promptpolicy_format(buf, sizeof buf, &p);
    assert_string_equal(buf, "truncate:items=5");
    assert_int_equal(promptpolicy_parse(&p, "selective", &e), 0);
    assert_true(p.kind == PP_SELECTIVE && p.ratio == 0.35 && p.lm[0] == 0);
    promptpolicy_format(buf, sizeof buf, &p);
    assert_string_equal(buf, "selective:ratio=0.35");
    assert_int_equal(promptpolicy_parse(&p, "selective:lm=models/lm,ratio=0.5", &e), 0);
    assert_true(p.ratio == 0.5);
    assert_string_equal(p.lm, "models/lm");
    promptpolicy_format(buf, sizeof buf, &p);
    assert_string_equal(buf, "selective:ratio=0.5,lm=models/lm");
    assert_int_equal(promptpolicy_parse(&p, "none", &e), 0);
    assert_int_equal(p.kind, PP_NONE);

    expect_parse_error("trunc", "unknown prompt policy 'trunc'");
    expect_parse_error("", "unknown prompt policy ''");
    expect_parse_error("truncate:items", "'items' is not key=value");
    expect_parse_error("truncate:=3", "is not key=value");
    expect_parse_error("truncate:", "nothing after ':'");
    expect_parse_error("truncate:items=3,", "empty field");
    expect_parse_error("truncate:ratio=0.3", "unknown key 'ratio' (keys: items)");
    expect_parse_error("selective:items=3", "unknown key 'items' (keys: ratio, lm)");
    expect_parse_error("none:items=3", "unknown key 'items'");
    expect_parse_error("truncate:items=0", "items '0' is not an integer >= 1");
    expect_parse_error("truncate:items=-2", "items '-2'");
    expect_parse_error("truncate:items=2.5", "items '2.5'");
    expect_parse_error("truncate:items=many", "items 'many'");
    expect_parse_error("selective:ratio=1", "ratio '1' is not a number in [0, 1)");
    expect_parse_error("selective:ratio=-0.1", "ratio '-0.1'");
    expect_parse_error("selective:ratio=lots", "ratio 'lots'");
    expect_parse_error("selective:ratio=nan", "ratio 'nan'");
}

static void test_n_drop_and_hand(void **st) {
    (void)st;
    PromptPolicy p;
    promptpolicy_default(&p, PP_SELECTIVE);
    assert_int_equal(promptpolicy_n_drop(&p, 20), 7); // 0.35 * 20 = 7
    assert_int_equal(promptpolicy_n_drop(&p, 3), 1);  // 1.05
    assert_int_equal(promptpolicy_n_drop(&p, 2), 0);  // 0.7
    assert_int_equal(promptpolicy_n_drop(&p, 0), 0);
    p.ratio = 0.5;
    assert_int_equal(promptpolicy_n_drop(&p, 10), 5);
    promptpolicy_default(&p, PP_TRUNCATE);
    p.items = 4;
    assert_int_equal(promptpolicy_n_drop(&p, 10), 6);
    assert_int_equal(promptpolicy_n_drop(&p, 3), 0);
    promptpolicy_default(&p, PP_NONE);
    assert_int_equal(promptpolicy_n_drop(&p, 10), 0);

    uint8_t keep[8];
    const uint8_t t3[5] = {0, 0, 1, 1, 1}, all[5] = {1, 1, 1, 1, 1};
    ppsel_truncate(keep, 5, 3);
    assert_memory_equal(keep, t3, 5);
    ppsel_truncate(keep, 5, 9); // more items asked than the history has: all kept
    assert_memory_equal(keep, all, 5);
    const double info[6] = {3.0, 1.0, 2.0, 1.0, 5.0, 0.5};
    const uint8_t s1[6] = {1, 1, 1, 1, 1, 0}, s2[6] = {1, 0, 1, 1, 1, 0}, s3[6] = {1, 0, 1, 0, 1, 0};
    ppsel_selective(keep, info, 6, 1);
    assert_memory_equal(keep, s1, 6);
    ppsel_selective(keep, info, 6, 2); // items 1 and 3 tie at 1.0: the older (1) goes first
    assert_memory_equal(keep, s2, 6);
    ppsel_selective(keep, info, 6, 3);
    assert_memory_equal(keep, s3, 6);
    ppsel_selective(keep, info, 6, 0);
    assert_memory_equal(keep, all, 5);

    Rng r;
    rng_seed(&r, 5);
    uint8_t a[64], b[64];
    double x[64];
    for (int trial = 0; trial < 300; trial++) {
        int n = 1 + (int)(rng_u64(&r) % 40);
        for (int j = 0; j < n; j++) x[j] = (double)(rng_u64(&r) % 6); // many ties
        int d = (int)(rng_u64(&r) % (uint64_t)(n + 1)), items = 1 + (int)(rng_u64(&r) % 45);
        ppsel_selective(a, x, n, d);
        ppsel_selective_ref(b, x, n, d);
        assert_memory_equal(a, b, (size_t)n);
        ppsel_truncate(a, n, items);
        ppsel_truncate_ref(b, n, items);
        assert_memory_equal(a, b, (size_t)n);
    }
}

// Self-information of the items of `tok` [T] at `at` [n_items] (item_len tokens
// each) from the double-precision reference model.
static void ref_info(double *info, const Model *m, const int *tok, int T, const int *at, int n_items, int item_len) {
    const int V = m->config.vocab_size;
    double *lg = malloc(sizeof(double) * (size_t)T * V);
    ref_forward(lg, NULL, m, tok, NULL, NULL, NULL, T);
    for (int j = 0; j < n_items; j++) {
        info[j] = 0.0;
        for (int t = at[j]; t < at[j] + item_len; t++) {
            if (t == 0) continue;
            const double *row = lg + (size_t)(t - 1) * V;
            double mx = row[0], z = 0.0;
            for (int v = 1; v < V; v++) mx = fmax(mx, row[v]);
            for (int v = 0; v < V; v++) z += exp(row[v] - mx);
            info[j] += -(row[tok[t]] - mx - log(z));
        }
    }
    free(lg);
}

static void test_info_vs_reference(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 48, 3, 4, 2, 50, 1);
    Model m;
    model_init_random(&m, &c, 11, 0.3f);
    enum { B = 3, G = 3 };
    int len[B] = {7, 16, 25}, n_items[B], *tok[B], *at[B];
    double *info[B];
    Rng r;
    rng_seed(&r, 2);
    for (int b = 0; b < B; b++) {
        tok[b] = malloc(sizeof(int) * (size_t)len[b]);
        for (int t = 0; t < len[b]; t++) tok[b][t] = (int)(rng_u64(&r) % 50);
        n_items[b] = len[b] / G; // items from the end; sequence 0's 2 items start at 1, 4
        at[b] = malloc(sizeof(int) * (size_t)n_items[b]);
        for (int j = 0; j < n_items[b]; j++) at[b][j] = len[b] - (n_items[b] - j) * G;
        info[b] = malloc(sizeof(double) * (size_t)n_items[b]);
    }
    at[1][0] = 0; // sequence 1: an item at token 0 (its first token has nothing before it)
    ForwardScratch sc = {0};
    Error e;
    assert_int_equal(pp_item_info(info, &m, &sc, B, (const int *const *)tok, len, (const int *const *)at, n_items, G, &e), 0);
    double worst = 0.0;
    for (int b = 0; b < B; b++) {
        double want[16];
        ref_info(want, &m, tok[b], len[b], at[b], n_items[b], G);
        for (int j = 0; j < n_items[b]; j++) {
            double rel = fabs(info[b][j] - want[j]) / fabs(want[j]);
            worst = fmax(worst, rel);
            assert_true(rel < TOL_INFO);
        }
        free(tok[b]);
        free(at[b]);
        free(info[b]);
    }
    print_message("  self-information vs the double reference: max rel err %.2e\n", worst);
    Model me = m;
    me.config.method = METHOD_EARN;
    int one = 0, l0 = 4, t0[4] = {1, 2, 3, 4}, *tp = t0, *ap = &one, ni = 1;
    double x, *xp = &x;
    assert_int_equal(pp_item_info(&xp, &me, &sc, 1, (const int *const *)&tp, &l0, (const int *const *)&ap, &ni, 2, &e), -1);
    assert_non_null(strstr(e.msg, "full (finetune) model"));
    forward_scratch_free(&sc);
    model_free(&m);
}

static const int CODES[9][3] = {{-1, -1, -1}, {0, 1, 2}, {0, 1, 3}, {1, 0, 0}, {0, 1, 2},
                                {2, 3, 4}, {1, 2, 0}, {2, 0, 1}, {1, 3, 3}};

static void tiny_dataset(Dataset *d) {
    memset(d, 0, sizeof *d);
    d->n_users = 1;
    d->n_items = 8;
    d->code_levels = 3;
    d->codes_per_level[0] = 3;
    d->codes_per_level[1] = 4;
    d->codes_per_level[2] = 5;
    d->codes = (int *)&CODES[0][0];
}

// The whole step, for one template: the kept items equal the reference's choice
// on spans located from the template's layout, and the rebuilt prompt equals
// the template's prompt of the kept history.
static void check_template(PromptTemplate tmpl, int P) {
    Dataset d;
    tiny_dataset(&d);
    Vocab v;
    Error e = {{0}};
    assert_int_equal(prompt_vocab_build(&v, &d, 2, 2, &e), 0);
    Prompter pr;
    assert_int_equal(prompter_init(&pr, &v, &d, tmpl, P, 0, &e), 0);
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 48, 2, 4, 2, v.size, 1);
    Model m;
    model_init_random(&m, &c, 21, 0.5f);
    enum { U = 3 };
    int h0[7] = {1, 2, 3, 4, 5, 6, 7}, h1[3] = {8, 1, 5}, h2[1] = {2};
    const int *hist[U] = {h0, h1, h2}, n_hist[U] = {7, 3, 1};
    int k0[7], k1[3], k2[1], *kept[U] = {k0, k1, k2}, n_kept[U];
    PromptScorer s = {&m, &pr, {0}};
    PromptPolicy p;
    promptpolicy_default(&p, PP_SELECTIVE);
    p.ratio = 0.5;
    assert_int_equal(promptpolicy_apply(kept, n_kept, &p, &s, U, hist, n_hist, &e), 0);
    // The layout: <bos> [P regs] [words before] item (, item)* ...; an item is 3 code tokens.
    const int step = tmpl == PROMPT_TEMPLATE_LCREC ? 4 : 3, first = 1 + P + pr.n_before;
    for (int u = 0; u < U; u++) {
        int tok[256], at[8], ref_kept[8], n_ref = 0;
        uint8_t kinds[256], keep[8];
        double info[8];
        int T = prompter_build(tok, kinds, &pr, hist[u], n_hist[u], 0);
        for (int j = 0; j < n_hist[u]; j++) at[j] = first + j * step;
        for (int j = 0; j < n_hist[u]; j++) assert_int_equal(tok[at[j]], pr.item_tokens[hist[u][j] * 3]);
        ref_info(info, &m, tok, T, at, n_hist[u], 3);
        ppsel_selective_ref(keep, info, n_hist[u], n_hist[u] / 2);
        for (int j = 0; j < n_hist[u]; j++)
            if (keep[j]) ref_kept[n_ref++] = hist[u][j];
        assert_int_equal(n_kept[u], n_ref);
        assert_memory_equal(kept[u], ref_kept, sizeof(int) * (size_t)n_ref);
        // The prompt rebuilt from the kept items is the template's prompt of that history.
        int tok2[256];
        uint8_t kinds2[256];
        int T2 = prompter_build(tok2, kinds2, &pr, kept[u], n_kept[u], 0);
        assert_int_equal(T2, prompter_length(&pr, n_ref, 0));
        assert_int_equal(T - T2, (n_hist[u] - n_ref) * step);
    }
    promptpolicy_default(&p, PP_TRUNCATE);
    p.items = 2;
    assert_int_equal(promptpolicy_apply(kept, n_kept, &p, NULL, U, hist, n_hist, &e), 0);
    assert_int_equal(n_kept[0], 2);
    assert_true(k0[0] == 6 && k0[1] == 7);
    assert_true(n_kept[1] == 2 && k1[0] == 1 && k1[1] == 5);
    assert_true(n_kept[2] == 1 && k2[0] == 2);
    forward_scratch_free(&s.scratch);
    model_free(&m);
    prompter_free(&pr);
    vocab_free(&v);
}

static void test_apply_templates(void **st) {
    (void)st;
    check_template(PROMPT_TEMPLATE_TIGER, 0);
    check_template(PROMPT_TEMPLATE_TIGER, 2);
    check_template(PROMPT_TEMPLATE_LCREC, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_n_drop_and_hand),
        cmocka_unit_test(test_info_vs_reference),
        cmocka_unit_test(test_apply_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
