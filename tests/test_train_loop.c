// test_train_loop.c: packed multi-target training against one prompt per
// sample, through the training forward/backward (runtime/train.h):
//  - the packed loss (summed over labels) equals the sum of the per-sample
//    losses, each sample fed alone as its prompt (prompter_build), rel err < 1e-5;
//  - the packed gradients equal the per-sample gradients summed, rel err < 1e-4
//    per parameter tensor (max |diff| / max |ref|), for finetune and EARN plans
//    (several k and register counts, both templates, sliding windows), with
//    all packs of the dataset in one batch (several sequences, each its mask);
//  - a short training loop over shuffled packed batches lowers the loss and is
//    bitwise reproducible.
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
#include "datasets/vocab.h"
#include "helpers/ref_model.h"
#include "runtime/adamw.h"
#include "runtime/model.h"
#include "runtime/plan.h"
#include "runtime/train.h"

// An in-memory dataset: users with no target, short ones and ones longer
// than max_history + 1.
enum { N_ITEMS = 30, LEVELS = 4 };
static const int TRAIN_LENS[] = {3, 7, 1, 22, 2, 12, 24};
#define N_USERS ((int)(sizeof TRAIN_LENS / sizeof TRAIN_LENS[0]))

static const int CODES_PER_LEVEL[LEVELS] = {4, 5, 6, 3};

static void make_dataset(Dataset *d, uint64_t seed) {
    fixture_dataset_make(d, "", TRAIN_LENS, N_USERS, N_ITEMS, CODES_PER_LEVEL, LEVELS, seed);
}

static void free_dataset(Dataset *d) { fixture_dataset_free(d); }

typedef struct {
    ModelMethod method;
    int k, P, S;
    PromptTemplate tmpl;
    int max_history, pack_tokens;
} Case;

typedef struct {
    Dataset d;
    Vocab v;
    Prompter p;
    Model m;
    PackPlan plan;
} Fixture;

static void fixture_init(Fixture *f, const Case *c, uint64_t seed) {
    make_dataset(&f->d, seed);
    Error e = {{0}};
    assert_int_equal(prompt_vocab_build(&f->v, &f->d, 4, 4, &e), 0);
    int rc = prompter_init(&f->p, &f->v, &f->d, c->tmpl, c->P, c->S, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    ModelConfig mc = ref_config(MODEL_ARCH_LLAMA, 32, 48, 4, 4, 2, f->v.size, 1);
    mc.method = c->method;
    mc.layer_split_k = c->k;
    mc.n_prefix_regs = c->P;
    mc.n_suffix_regs = c->S;
    assert_int_equal(config_validate(&mc, "test", &e), 0);
    model_init_random(&f->m, &mc, seed + 17, 0.1f);
    pack_plan_build(&f->plan, &f->d, &f->p, c->max_history, c->pack_tokens);
}

static void fixture_free(Fixture *f) {
    pack_plan_free(&f->plan);
    model_free(&f->m);
    prompter_free(&f->p);
    vocab_free(&f->v);
    free_dataset(&f->d);
}

// A batch of packs, concatenated (what the trainer does).
typedef struct {
    PackedSeq *seqs;
    int n_seqs;
    int *tokens, *pos, *depth, *labels, *n_tok;
    const uint8_t **masks;
    TrainBatch b;
} Batch;

static void batch_make(Batch *bt, const Fixture *f, const size_t *which, int n) {
    memset(bt, 0, sizeof *bt);
    bt->seqs = xcalloc((size_t)n, sizeof(PackedSeq));
    bt->n_tok = xmalloc((size_t)n * sizeof(int));
    bt->masks = xmalloc((size_t)n * sizeof(uint8_t *));
    size_t T = 0;
    for (int j = 0; j < n; j++) T += (size_t)f->plan.packs[which[j]].n_tokens;
    bt->tokens = xmalloc(T * sizeof(int));
    bt->pos = xmalloc(T * sizeof(int));
    bt->depth = xmalloc(T * sizeof(int));
    bt->labels = xmalloc(T * sizeof(int));
    size_t at = 0;
    for (int j = 0; j < n; j++) {
        PackedSeq *s = &bt->seqs[j];
        int len = pack_build(s, &f->plan.packs[which[j]], &f->d, &f->p);
        memcpy(bt->tokens + at, s->tokens, (size_t)len * sizeof(int));
        memcpy(bt->pos + at, s->positions, (size_t)len * sizeof(int));
        memcpy(bt->labels + at, s->labels, (size_t)len * sizeof(int));
        plan_depth_for(bt->depth + at, s->kinds, len, &f->m.config);
        bt->n_tok[j] = len;
        bt->masks[j] = s->mask;
        at += (size_t)len;
    }
    bt->n_seqs = n;
    bt->b = (TrainBatch){.n_seqs = n, .n_tok = bt->n_tok, .tokens = bt->tokens, .positions = bt->pos,
                         .depth = bt->depth, .mask = bt->masks, .labels = bt->labels};
}

static void batch_free(Batch *bt) {
    for (int j = 0; j < bt->n_seqs; j++) packed_seq_free(&bt->seqs[j]);
    free(bt->seqs);
    free(bt->n_tok);
    free(bt->masks);
    free(bt->tokens);
    free(bt->pos);
    free(bt->depth);
    free(bt->labels);
}

// Summed loss and gradients of every train sample, each fed alone as its
// prompt: labels on the L positions that predict the target's code tokens.
static double per_sample_reference(ModelGrads *g, const Fixture *f, int max_history) {
    Error e = {{0}};
    TrainActs acts = {0};
    double loss = 0;
    int *tok = xmalloc(4096 * sizeof(int)), *depth = xmalloc(4096 * sizeof(int)), *labels = xmalloc(4096 * sizeof(int));
    uint8_t *kind = xmalloc(4096);
    const int L = f->p.code_levels;
    for (int u = 1; u <= f->d.n_users; u++) {
        int len;
        const int *items = dataset_user_items(&f->d, SPLIT_TRAIN, u, &len);
        for (int i = 1; i < len; i++) {
            int h = (max_history > 0 && i > max_history) ? max_history : i;
            int n = prompter_build(tok, kind, &f->p, items + i - h, h, items[i]);
            for (int t = 0; t < n; t++) labels[t] = -1;
            for (int j = 0; j < L; j++) labels[n - L - 1 + j] = tok[n - L + j];
            plan_depth_for(depth, kind, n, &f->m.config);
            TrainBatch b = {.n_seqs = 1, .n_tok = &n, .tokens = tok, .depth = depth, .labels = labels};
            int rc = train_forward(&acts, &f->m, &b, &e);
            if (rc) fprintf(stderr, "%s\n", e.msg);
            assert_int_equal(rc, 0);
            assert_int_equal(acts.n_labels, L);
            loss += acts.loss_sum;
            train_backward(g, &acts, &f->m, 1.0f);
        }
    }
    train_acts_free(&acts);
    free(tok);
    free(depth);
    free(labels);
    free(kind);
    return loss;
}

static void check_equivalence(const Case *c) {
    Fixture f;
    fixture_init(&f, c, 5);
    ModelGrads gref, gpack;
    grads_alloc(&gref, &f.m.config);
    grads_alloc(&gpack, &f.m.config);
    grads_zero(&gref);
    grads_zero(&gpack);
    double loss_ref = per_sample_reference(&gref, &f, c->max_history);

    // All packs in one batch (every sequence with its own mask).
    size_t n = f.plan.n_packs;
    size_t *all = xmalloc(n * sizeof(size_t));
    for (size_t i = 0; i < n; i++) all[i] = i;
    Batch bt;
    batch_make(&bt, &f, all, (int)n);
    TrainActs acts = {0};
    Error e = {{0}};
    int rc = train_forward(&acts, &f.m, &bt.b, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(acts.n_labels, (int)f.plan.n_targets * LEVELS);
    double loss_pack = acts.loss_sum;
    train_backward(&gpack, &acts, &f.m, 1.0f);

    double loss_err = fabs(loss_pack - loss_ref) / fabs(loss_ref);
    double worst = 0;
    const char *worst_name = "";
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(&f.m.config, t, &info);
        if (!info.numel) continue;
        const float *a = *model_param_slot(&gpack.g, t), *b = *model_param_slot(&gref.g, t);
        double num = 0, den = 0;
        for (size_t i = 0; i < info.numel; i++) {
            double dd = fabs((double)a[i] - (double)b[i]);
            num = dd > num ? dd : num;
            den = fabs((double)b[i]) > den ? fabs((double)b[i]) : den;
        }
        assert_true(den > 0); // every tensor gets a gradient
        double r = num / den;
        if (r > worst || isnan(r)) { worst = r; worst_name = info.hf_name; }
    }
    printf("  %s k=%d P=%d S=%d %s max_history %d: %zu targets in %zu packs (%zu tokens vs %zu unpacked); "
           "loss %.6f vs %.6f (rel %.1e), worst grad rel err %.1e (%s)\n",
           config_method_name(c->method), c->k, c->P, c->S, prompt_template_name(c->tmpl), c->max_history,
           f.plan.n_targets, n, f.plan.tokens_packed, f.plan.tokens_unpacked, loss_pack, loss_ref, loss_err, worst,
           worst_name);
    assert_true(loss_err < 1e-5);
    assert_true(worst < 1e-4);
    train_acts_free(&acts);
    batch_free(&bt);
    free(all);
    grads_free(&gref);
    grads_free(&gpack);
    fixture_free(&f);
}

static void test_packed_equals_per_sample_finetune(void **state) {
    (void)state;
    Case cases[] = {
        {METHOD_FINETUNE, 0, 0, 0, PROMPT_TEMPLATE_LCREC, 20, 0},
        {METHOD_FINETUNE, 0, 1, 2, PROMPT_TEMPLATE_LCREC, 20, 260},
        {METHOD_FINETUNE, 0, 0, 0, PROMPT_TEMPLATE_TIGER, 6, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_equivalence(&cases[i]);
}

static void test_packed_equals_per_sample_earn(void **state) {
    (void)state;
    Case cases[] = {
        {METHOD_EARN, 1, 1, 1, PROMPT_TEMPLATE_LCREC, 20, 0},
        {METHOD_EARN, 2, 0, 2, PROMPT_TEMPLATE_LCREC, 8, 300},
        {METHOD_EARN, 3, 2, 1, PROMPT_TEMPLATE_TIGER, 20, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_equivalence(&cases[i]);
}

// ---------------------------------------------------------------------------
// A short loop: shuffled packed batches, AdamW. Returns the mean loss of the
// last epoch and leaves the trained parameters in f->m.

static double short_training(Fixture *f, int epochs, uint64_t seed, double *first_loss) {
    AdamWConfig oc;
    adamw_config_default(&oc);
    oc.lr = 3e-3f;
    AdamWState opt;
    adamw_init(&opt, &f->m.config);
    ModelGrads g;
    grads_alloc(&g, &f->m.config);
    TrainActs acts = {0};
    size_t n = f->plan.n_packs;
    size_t *order = xmalloc(n * sizeof(size_t)), *starts = xmalloc((n + 1) * sizeof(size_t));
    int64_t total = 0;
    for (int ep = 0; ep < epochs; ep++) {
        pack_shuffle(order, n, seed + (uint64_t)ep);
        total += (int64_t)pack_batches(starts, order, n, &f->plan, 400);
    }
    double last = 0;
    int64_t step = 0;
    for (int ep = 0; ep < epochs; ep++) {
        pack_shuffle(order, n, seed + (uint64_t)ep);
        size_t nb = pack_batches(starts, order, n, &f->plan, 400);
        double sum = 0;
        long labels = 0;
        for (size_t b = 0; b < nb; b++) {
            Batch bt;
            batch_make(&bt, f, order + starts[b], (int)(starts[b + 1] - starts[b]));
            Error e = {{0}};
            assert_int_equal(train_forward(&acts, &f->m, &bt.b, &e), 0);
            grads_zero(&g);
            train_backward(&g, &acts, &f->m, 1.0f / (float)acts.n_labels);
            adamw_step(&opt, f->m.params_memory, g.memory, adamw_lr(&oc, step++, total), &oc);
            sum += acts.loss_sum;
            labels += acts.n_labels;
            batch_free(&bt);
        }
        last = sum / (double)labels;
        if (ep == 0 && first_loss) *first_loss = last;
    }
    free(order);
    free(starts);
    train_acts_free(&acts);
    grads_free(&g);
    adamw_free(&opt);
    return last;
}

static void test_short_training(void **state) {
    (void)state;
    Case c = {METHOD_EARN, 1, 1, 1, PROMPT_TEMPLATE_TIGER, 20, 200};
    Fixture a, b;
    fixture_init(&a, &c, 9);
    fixture_init(&b, &c, 9);
    double first = 0;
    double last = short_training(&a, 12, 77, &first);
    double last_b = short_training(&b, 12, 77, NULL);
    printf("  mean loss: epoch 1 %.4f -> epoch 12 %.4f (uniform would be %.4f)\n", first, last,
           log((double)a.m.config.vocab_size));
    assert_true(last < 0.6 * first);
    assert_true(last == last_b);
    assert_memory_equal(a.m.params_memory, b.m.params_memory, a.m.n_params * sizeof(float));
    fixture_free(&a);
    fixture_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packed_equals_per_sample_finetune),
        cmocka_unit_test(test_packed_equals_per_sample_earn),
        cmocka_unit_test(test_short_training),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
