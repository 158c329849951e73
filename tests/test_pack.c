// test_pack.c: packed multi-target training sequences (datasets/pack.h).
//
// The reference for a packed sequence is the obvious one: every train sample
// fed alone as its own prompt (prompter_build, the inference path). Checks:
//  - the plan covers every train sample exactly once, with samples_build's
//    history, and respects the token cap;
//  - the logits at every label position of a packed sequence equal the logits
//    of the same position in the sample's own prompt (rel err < 1e-5), for
//    finetune and EARN plans (several k and register counts), both templates,
//    users longer than max_history + 1 (sliding windows); AnLLM's prompts
//    (an anchor after each item, its mask narrowing the pack's) and POD's
//    (no instruction words, prefix registers in their place);
//  - shuffling and batching are deterministic permutations / partitions.
// The loss/gradient equivalence lives in test_train_loop.c (it needs the
// backward pass).
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers/fixture_dataset.h"

#include "datasets/dataset.h"
#include "datasets/pack.h"
#include "datasets/prompt.h"
#include "datasets/samples.h"
#include "datasets/vocab.h"
#include "helpers/ref_model.h"
#include "runtime/kvcache.h"
#include "runtime/model.h"
#include "runtime/plan.h"

// ---------------------------------------------------------------------------
// An in-memory dataset: 9 users with train lengths covering no target (1),
// short users, exactly max_history + 1 (21) and longer ones (sliding windows).

enum { N_ITEMS = 40, LEVELS = 4 };
static const int TRAIN_LENS[] = {2, 3, 7, 1, 21, 22, 26, 12, 5};
#define N_USERS ((int)(sizeof TRAIN_LENS / sizeof TRAIN_LENS[0]))

static const int CODES_PER_LEVEL[LEVELS] = {5, 6, 7, 8};

static void make_dataset(Dataset *d, uint64_t seed) {
    fixture_dataset_make(d, "pack-fixture", TRAIN_LENS, N_USERS, N_ITEMS, CODES_PER_LEVEL, LEVELS, seed);
}

static void free_dataset(Dataset *d) { fixture_dataset_free(d); }

static void make_prompter_form(Prompter *p, Vocab *v, const Dataset *d, PromptTemplate t, int P, int S,
                               PromptForm f) {
    Error e = {{0}};
    assert_int_equal(prompt_vocab_build(v, d, 4, 4, &e), 0);
    int rc = prompter_init_form(p, v, d, t, P, S, f, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
}

static void make_prompter(Prompter *p, Vocab *v, const Dataset *d, PromptTemplate t, int P, int S) {
    Error e = {{0}};
    assert_int_equal(prompt_vocab_build(v, d, 4, 4, &e), 0);
    int rc = prompter_init(p, v, d, t, P, S, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
}

// ---------------------------------------------------------------------------
// The plan covers each sample once, with the sample's own history.

static void check_plan(const Dataset *d, const Prompter *p, int max_history, int max_tokens) {
    PackPlan pp;
    pack_plan_build(&pp, d, p, max_history, max_tokens);
    SampleSet ss;
    samples_build(&ss, d, SPLIT_TRAIN, max_history);
    assert_int_equal(pp.n_targets, ss.n);
    size_t k = 0, packed = 0, unpacked = 0;
    PackedSeq seq = {0};
    for (size_t i = 0; i < pp.n_packs; i++) {
        const Pack *pk = &pp.packs[i];
        int len;
        const int *items = dataset_user_items(d, SPLIT_TRAIN, pk->user, &len);
        int n = pack_build(&seq, pk, d, p);
        assert_int_equal(n, pk->n_tokens);
        assert_int_equal(n, pack_length(p, pk->window, pk->first, pk->last));
        if (pk->last > pk->first && max_tokens > 0) assert_true(n <= max_tokens);
        packed += (size_t)n;
        int n_labels = 0;
        for (int t = 0; t < n; t++) n_labels += seq.labels[t] >= 0;
        assert_int_equal(n_labels, seq.n_targets * LEVELS);
        for (int t = pk->first; t <= pk->last; t++, k++) {
            const Sample *s = &ss.samples[k];
            assert_int_equal(s->user, pk->user);
            assert_int_equal(s->targets[0], items[t]);
            assert_int_equal(seq.targets[t - pk->first], items[t]);
            // The sample's history is items window..t-1.
            assert_int_equal(s->n_history, t - pk->window);
            assert_ptr_equal(s->history, items + pk->window);
            unpacked += (size_t)prompter_length(p, s->n_history, 1);
        }
    }
    assert_int_equal(k, ss.n);
    assert_int_equal(packed, pp.tokens_packed);
    assert_int_equal(unpacked, pp.tokens_unpacked);
    assert_true(pp.tokens_packed < pp.tokens_unpacked);
    packed_seq_free(&seq);
    samples_free(&ss);
    pack_plan_free(&pp);
}

static void test_plan_covers_samples(void **state) {
    (void)state;
    Dataset d;
    make_dataset(&d, 7);
    Vocab v;
    Prompter p;
    make_prompter(&p, &v, &d, PROMPT_TEMPLATE_LCREC, 1, 2);
    check_plan(&d, &p, 20, 0);     // no cap
    check_plan(&d, &p, 20, 300);   // users split into several packs
    check_plan(&d, &p, 5, 0);      // many sliding windows
    check_plan(&d, &p, 0, 400);    // whole histories
    prompter_free(&p);
    vocab_free(&v);
    Prompter pt;
    make_prompter(&pt, &v, &d, PROMPT_TEMPLATE_TIGER, 0, 0);
    check_plan(&d, &pt, 20, 60);
    prompter_free(&pt);
    vocab_free(&v);
    Prompter pa; // AnLLM's anchors and POD's missing words change every length
    make_prompter_form(&pa, &v, &d, PROMPT_TEMPLATE_LCREC, 0, 0, PROMPT_FORM_ANCHORS);
    check_plan(&d, &pa, 20, 300);
    prompter_free(&pa);
    vocab_free(&v);
    make_prompter_form(&pa, &v, &d, PROMPT_TEMPLATE_LCREC, 2, 0, PROMPT_FORM_NO_WORDS);
    check_plan(&d, &pa, 5, 0);
    prompter_free(&pa);
    vocab_free(&v);
    free_dataset(&d);
}

// The packed sequence, token by token, against the sample prompts: shared
// tokens are the prompt's head; each group's tokens are the prompt's tail (at
// the same positions); labels are the next prompt token.
static void test_pack_matches_prompts(void **state) {
    (void)state;
    Dataset d;
    make_dataset(&d, 11);
    Vocab v;
    Prompter p;
    make_prompter(&p, &v, &d, PROMPT_TEMPLATE_LCREC, 2, 3);
    PackPlan pp;
    pack_plan_build(&pp, &d, &p, 20, 0);
    PackedSeq seq = {0};
    int *tok = xmalloc(4096 * sizeof(int));
    uint8_t *kind = xmalloc(4096), *hit = xmalloc(4096);
    for (size_t i = 0; i < pp.n_packs; i++) {
        const Pack *pk = &pp.packs[i];
        int len;
        const int *items = dataset_user_items(&d, SPLIT_TRAIN, pk->user, &len);
        pack_build(&seq, pk, &d, &p);
        for (int t = pk->first; t <= pk->last; t++) {
            int n = prompter_build(tok, kind, &p, items + pk->window, t - pk->window, items[t]);
            int k = t - pk->first;
            // The prompt's token at position q is in the packed sequence at
            // the index that holds position q and is visible to the group.
            for (int j = 0; j < LEVELS; j++) {
                int at = seq.label_at[k * LEVELS + j];
                int q = n - LEVELS - 1 + j; // prompt index predicting code j
                assert_int_equal(seq.positions[at], q);
                assert_int_equal(seq.tokens[at], tok[q]);
                assert_int_equal(seq.kinds[at], kind[q]);
                assert_int_equal(seq.labels[at], tok[q + 1]);
                // Every prompt token before q appears, at its position, among the tokens `at` sees.
                // (Visible positions are exactly 0..q, each once.)
                int seen = 0;
                memset(hit, 0, 4096);
                for (int c = 0; c <= at; c++) {
                    int vis = seq.mask ? seq.mask[(size_t)at * (size_t)seq.n + (size_t)c] : 1;
                    if (!vis) continue;
                    int pos = seq.positions[c];
                    assert_true(pos >= 0 && pos <= q && !hit[pos]);
                    hit[pos] = 1;
                    assert_int_equal(seq.tokens[c], tok[pos]);
                    assert_int_equal(seq.kinds[c], kind[pos]);
                    seen++;
                }
                assert_int_equal(seen, q + 1);
            }
        }
    }
    free(tok);
    free(kind);
    free(hit);
    packed_seq_free(&seq);
    pack_plan_free(&pp);
    prompter_free(&p);
    vocab_free(&v);
    free_dataset(&d);
}

// ---------------------------------------------------------------------------
// Logits: packed vs alone, through model_forward.

// Forward of one sequence with explicit positions, depth from kinds and mask; logits [n, V].
static void forward_one(float *logits, Model *m, const int *tokens, const uint8_t *kinds, const int *positions,
                        const uint8_t *mask, int n) {
    int *depth = xmalloc((size_t)n * sizeof(int));
    plan_depth_for(depth, kinds, n, &m->config);
    int *cap = xmalloc((size_t)m->config.n_layers * sizeof(int));
    for (int l = 0; l < m->config.n_layers; l++) cap[l] = n;
    KVCache kv;
    kvcache_init(&kv, m->config.n_layers, m->config.n_kv_heads, m->config.head_dim, cap);
    KVCache *caches[1] = {&kv};
    const uint8_t *masks[1] = {mask};
    ForwardBatch fb = {.n_seqs = 1, .n_new = &n, .tokens = tokens, .positions = positions, .depth = depth,
                       .mask = mask ? masks : NULL, .caches = caches, .logits_mode = LOGITS_ALL};
    ForwardScratch s = {0};
    Error e = {{0}};
    int rc = model_forward(logits, m, &fb, &s, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    forward_scratch_free(&s);
    kvcache_free(&kv);
    free(cap);
    free(depth);
}

static double row_rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        double dd = fabs((double)a[i] - (double)b[i]);
        num = dd > num ? dd : num;
        den = fabs((double)b[i]) > den ? fabs((double)b[i]) : den;
    }
    return den > 0 ? num / den : num;
}

// AnLLM's mask over a plainly causal prompt of n tokens (allocated).
static uint8_t *causal_anllm_mask(const uint8_t *kinds, int n) {
    uint8_t *mask = xmalloc((size_t)n * (size_t)n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) mask[(size_t)i * n + j] = j <= i;
    plan_mask_anllm(mask, kinds, n);
    return mask;
}

typedef struct {
    ModelMethod method;
    int k, P, S;
    PromptTemplate tmpl;
    int max_history, max_tokens;
} PackCase;

static void check_logits(const PackCase *pc) {
    Dataset d;
    make_dataset(&d, 3);
    Vocab v;
    Prompter p;
    make_prompter_form(&p, &v, &d, pc->tmpl, pc->P, pc->S, prompt_form_for_method(pc->method));
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 48, 4, 4, 2, v.size, 1);
    c.method = pc->method;
    c.layer_split_k = pc->k;
    c.n_prefix_regs = pc->P;
    c.n_suffix_regs = pc->S;
    Error e = {{0}};
    assert_int_equal(config_validate(&c, "test", &e), 0);
    Model m;
    model_init_random(&m, &c, 42, 0.1f);
    const size_t V = (size_t)c.vocab_size;
    PackPlan pp;
    pack_plan_build(&pp, &d, &p, pc->max_history, pc->max_tokens);
    PackedSeq seq = {0};
    int *tok = xmalloc(4096 * sizeof(int));
    uint8_t *kind = xmalloc(4096);
    double worst = 0;
    int checked = 0, multi = 0, sliding = 0;
    for (size_t i = 0; i < pp.n_packs; i++) {
        const Pack *pk = &pp.packs[i];
        int len;
        const int *items = dataset_user_items(&d, SPLIT_TRAIN, pk->user, &len);
        int n = pack_build(&seq, pk, &d, &p);
        multi += seq.n_targets > 1;
        sliding += pk->window > 0;
        float *lp = xmalloc((size_t)n * V * sizeof(float));
        if (pc->method == METHOD_ANLLM) { // as train_run narrows it
            pack_mask_materialise(&seq);
            plan_mask_anllm(seq.mask_buf, seq.kinds, n);
        }
        forward_one(lp, &m, seq.tokens, seq.kinds, seq.positions, seq.mask, n);
        for (int t = pk->first; t <= pk->last; t++) {
            int na = prompter_build(tok, kind, &p, items + pk->window, t - pk->window, items[t]);
            float *la = xmalloc((size_t)na * V * sizeof(float));
            uint8_t *ma = pc->method == METHOD_ANLLM ? causal_anllm_mask(kind, na) : NULL;
            forward_one(la, &m, tok, kind, NULL, ma, na);
            free(ma);
            for (int j = 0; j < LEVELS; j++) {
                int at = seq.label_at[(t - pk->first) * LEVELS + j];
                int q = na - LEVELS - 1 + j;
                double r = row_rel_err(lp + (size_t)at * V, la + (size_t)q * V, V);
                worst = r > worst ? r : worst;
                checked++;
            }
            free(la);
        }
        free(lp);
    }
    printf("  method %s k=%d P=%d S=%d %s max_history %d: %d packs (%d multi-target, %d sliding), "
           "%d label rows, worst rel err %.2e\n",
           config_method_name(pc->method), pc->k, pc->P, pc->S, prompt_template_name(pc->tmpl), pc->max_history,
           (int)pp.n_packs, multi, sliding, checked, worst);
    assert_true(multi > 0);
    assert_true(checked == (int)pp.n_targets * LEVELS);
    assert_true(worst < 1e-5);
    free(tok);
    free(kind);
    packed_seq_free(&seq);
    pack_plan_free(&pp);
    model_free(&m);
    prompter_free(&p);
    vocab_free(&v);
    free_dataset(&d);
}

static void test_logits_finetune(void **state) {
    (void)state;
    PackCase cases[] = {
        {METHOD_FINETUNE, 0, 0, 0, PROMPT_TEMPLATE_LCREC, 20, 0},
        {METHOD_FINETUNE, 0, 1, 1, PROMPT_TEMPLATE_LCREC, 20, 250},
        {METHOD_FINETUNE, 0, 0, 0, PROMPT_TEMPLATE_TIGER, 20, 0},   // decision token in the shared part
        {METHOD_FINETUNE, 0, 2, 0, PROMPT_TEMPLATE_TIGER, 6, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_logits(&cases[i]);
}

static void test_logits_earn(void **state) {
    (void)state;
    PackCase cases[] = {
        {METHOD_EARN, 1, 1, 1, PROMPT_TEMPLATE_LCREC, 20, 0},
        {METHOD_EARN, 2, 0, 2, PROMPT_TEMPLATE_LCREC, 20, 300},
        {METHOD_EARN, 3, 3, 2, PROMPT_TEMPLATE_LCREC, 8, 0},
        {METHOD_EARN, 2, 2, 1, PROMPT_TEMPLATE_TIGER, 20, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_logits(&cases[i]);
}

// AnLLM (anchors after every history item, the AnLLM mask over the pack mask)
// and POD (no instruction words, prefix registers in their place).
static void test_logits_anllm_pod(void **state) {
    (void)state;
    PackCase cases[] = {
        {METHOD_ANLLM, 0, 0, 0, PROMPT_TEMPLATE_LCREC, 20, 0},
        {METHOD_ANLLM, 0, 0, 0, PROMPT_TEMPLATE_LCREC, 6, 250},
        {METHOD_ANLLM, 0, 0, 0, PROMPT_TEMPLATE_TIGER, 20, 0}, // the decision token is an anchor in the shared part
        {METHOD_POD, 0, 2, 0, PROMPT_TEMPLATE_LCREC, 20, 0},
        {METHOD_POD, 0, 1, 0, PROMPT_TEMPLATE_LCREC, 6, 200},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_logits(&cases[i]);
}

// ---------------------------------------------------------------------------
// Shuffle and batches.

static void test_shuffle_batches(void **state) {
    (void)state;
    Dataset d;
    make_dataset(&d, 5);
    Vocab v;
    Prompter p;
    make_prompter(&p, &v, &d, PROMPT_TEMPLATE_LCREC, 1, 1);
    PackPlan pp;
    pack_plan_build(&pp, &d, &p, 20, 200);
    size_t n = pp.n_packs;
    size_t *o1 = xmalloc(n * sizeof(size_t)), *o2 = xmalloc(n * sizeof(size_t)), *o3 = xmalloc(n * sizeof(size_t));
    pack_shuffle(o1, n, 99);
    pack_shuffle(o2, n, 99);
    pack_shuffle(o3, n, 100);
    assert_memory_equal(o1, o2, n * sizeof(size_t));
    assert_true(memcmp(o1, o3, n * sizeof(size_t)) != 0);
    int *seen = xcalloc(n, sizeof(int));
    for (size_t i = 0; i < n; i++) seen[o1[i]]++;
    for (size_t i = 0; i < n; i++) assert_int_equal(seen[i], 1);
    size_t *starts = xmalloc((n + 1) * sizeof(size_t));
    size_t budget = 500;
    size_t nb = pack_batches(starts, o1, n, &pp, budget);
    assert_true(nb >= 1);
    assert_int_equal(starts[0], 0);
    assert_int_equal(starts[nb], n);
    for (size_t b = 0; b < nb; b++) {
        assert_true(starts[b + 1] > starts[b]);
        size_t tok = 0;
        for (size_t i = starts[b]; i < starts[b + 1]; i++) tok += (size_t)pp.packs[o1[i]].n_tokens;
        if (starts[b + 1] - starts[b] > 1) assert_true(tok <= budget);
        // Greedy: the next pack would not have fit.
        if (b + 1 < nb) assert_true(tok + (size_t)pp.packs[o1[starts[b + 1]]].n_tokens > budget);
    }
    free(seen);
    free(starts);
    free(o1);
    free(o2);
    free(o3);
    pack_plan_free(&pp);
    prompter_free(&p);
    vocab_free(&v);
    free_dataset(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_covers_samples),
        cmocka_unit_test(test_pack_matches_prompts),
        cmocka_unit_test(test_logits_finetune),
        cmocka_unit_test(test_logits_earn),
        cmocka_unit_test(test_logits_anllm_pod),
        cmocka_unit_test(test_shuffle_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
