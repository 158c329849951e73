// train_run.c: see train_run.h.
#include "experiments/train_run.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "datasets/dataset.h"
#include "datasets/model_vocab.h"
#include "datasets/pack.h"
#include "datasets/samples.h"
#include "datasets/vocab.h"
#include "experiments/rec_eval.h"
#include "experiments/train_kd.h"
#include "experiments/train_state.h"
#include "runtime/beam.h"
#include "runtime/checkpoint.h"
#include "runtime/model.h"
#include "runtime/plan.h"
#include "runtime/preset.h"
#include "runtime/progress.h"
#include "runtime/train.h"

void train_options_default(TrainOptions *o) {
    memset(o, 0, sizeof *o);
    o->method = METHOD_FINETUNE;
    o->prefix_regs = o->suffix_regs = -1;
    o->lora_rank = -1;
    o->tmpl = PROMPT_TEMPLATE_LCREC;
    o->max_history = SAMPLES_MAX_HISTORY;
    o->epochs = 3;
    adamw_config_default(&o->opt);
    o->batch_tokens = 4096;
    o->pack_tokens = 512;
    o->seed = 1;
    o->patience = 2;
    o->eval_users = 1000;
    o->beam = BEAM_DEFAULT_WIDTH;
    o->save_minutes = 5.0;
    o->init_std = 0.02f;
    o->progress = 1;
    o->kd = -1;
    o->kd_alpha = 0.7f;
    o->kd_temp = 1.0f;
}

// ---------------------------------------------------------------------------
// The state of one run

typedef struct {
    TrainOptions o;
    char state_dir[4096];      // OUT/state
    Dataset d;
    Vocab v;
    Prompter p;
    PackPlan plan;
    Model m;
    AdamWState opt;
    ModelGrads g;
    TrainActs acts;
    SampleSet valid;
    int *valid_pick;           // [n_pick] indices into valid.samples
    int n_pick;
    // batch buffers
    PackedSeq *seqs;
    size_t cap_seqs, cap_T;
    int *b_tokens, *b_pos, *b_depth, *b_labels, *b_ntok;
    uint8_t *b_lora;           // [cap_T] compress500x: 1 on the prompt and compression tokens (LoRA on)
    const uint8_t **b_masks;
    TrainProgress pr;          // where the run stands (saved in the state)
    double elapsed_before;     // training seconds of earlier invocations
    // this invocation
    double t_start, t_last_save;
    Progress progress;
    int64_t tokens_run, step_run0;
    double last_eval[5];       // recall@5, @10, @20, ndcg@10, users of the last validation
    FILE *train_log, *eval_log, *kd_log;
    KDState kd;                // draft distillation (kd.active: a teacher file is in use)
    const Pack **b_packs;      // [cap_seqs] the packs of the current batch
} Trainer;

static volatile sig_atomic_t g_stop_signal = 0;
static void on_signal(int sig) { g_stop_signal = sig; }

// ---------------------------------------------------------------------------
// Small helpers

static int dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int dir_is_empty(const char *path) {
    DIR *dp = opendir(path);
    if (!dp) return 1;
    struct dirent *de;
    int empty = 1;
    while ((de = readdir(dp)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) { empty = 0; break; }
    closedir(dp);
    return empty;
}

static int join(char *out, size_t n, const char *dir, const char *name, Error *e) {
    if (path_join(out, n, dir, name)) return err_set(e, "%s/%s: path too long", dir, name);
    return 0;
}

// The seed of epoch e's shuffle: a distinct stream per (seed, epoch).
static uint64_t epoch_seed(uint64_t seed, int epoch) {
    return seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch * 0xD1B54A32D192ED03ull + 0x5EEDull;
}

// ---------------------------------------------------------------------------
// The options that decide the computation, as JSON: saved in train_args.json
// and compared on --resume (the same command line plus --resume continues).

static json_t *args_json(const TrainOptions *o, const ModelConfig *c, const Dataset *d, const KDState *kd) {
    json_t *a = json_object();
    json_object_set_new(a, "format", json_string("earnest-train-args"));
    json_object_set_new(a, "version", json_integer(1));
    json_object_set_new(a, "dataset", json_string(d->name));
    json_object_set_new(a, "dataset_users", json_integer(d->n_users));
    json_object_set_new(a, "dataset_items", json_integer(d->n_items));
    json_object_set_new(a, "dataset_train_interactions", json_integer((json_int_t)dataset_interactions(d, SPLIT_TRAIN)));
    json_object_set_new(a, "preset", o->preset ? json_string(o->preset) : json_null());
    json_object_set_new(a, "init", o->init_dir ? json_string(o->init_dir) : json_null());
    json_object_set_new(a, "method", json_string(config_method_name(c->method)));
    json_object_set_new(a, "k", json_integer(c->layer_split_k));
    if (o->method == METHOD_SKIPLAYERS) json_object_set_new(a, "keep_layers", json_integer(o->keep_layers));
    if (o->method == METHOD_COMPRESS500X) {
        json_object_set_new(a, "lora_rank", json_integer(c->lora_rank));
        json_object_set_new(a, "lora_alpha", json_real(c->lora_alpha));
    }
    json_object_set_new(a, "prefix_regs", json_integer(c->n_prefix_regs));
    json_object_set_new(a, "suffix_regs", json_integer(c->n_suffix_regs));
    json_object_set_new(a, "template", json_string(prompt_template_name(o->tmpl)));
    json_object_set_new(a, "max_history", json_integer(o->max_history));
    json_object_set_new(a, "epochs", json_integer(o->epochs));
    json_object_set_new(a, "lr", json_real(o->opt.lr));
    json_object_set_new(a, "warmup", json_real(o->opt.warmup_ratio));
    json_object_set_new(a, "weight_decay", json_real(o->opt.weight_decay));
    json_object_set_new(a, "grad_clip", json_real(o->opt.grad_clip));
    json_object_set_new(a, "min_lr_ratio", json_real(o->opt.min_lr_ratio));
    json_object_set_new(a, "beta1", json_real(o->opt.beta1));
    json_object_set_new(a, "beta2", json_real(o->opt.beta2));
    json_object_set_new(a, "batch_tokens", json_integer(o->batch_tokens));
    json_object_set_new(a, "pack_tokens", json_integer(o->pack_tokens));
    json_object_set_new(a, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(a, "init_std", json_real(o->init_std));
    json_object_set_new(a, "patience", json_integer(o->patience));
    json_object_set_new(a, "eval_users", json_integer(o->eval_users));
    json_object_set_new(a, "beam", json_integer(o->beam));
    if (o->kd >= 0) { // draft distillation (absent from other runs' arguments)
        json_object_set_new(a, "kd", json_string(kd_loss_name((KDLoss)o->kd)));
        json_object_set_new(a, "kd_alpha", json_real(o->kd_alpha));
        json_object_set_new(a, "kd_temp", json_real(o->kd_temp));
        json_object_set_new(a, "kd_topk", json_integer(kd && kd->active ? kd->topk : o->kd_topk));
        json_object_set_new(a, "teacher", o->teacher ? json_string(o->teacher) : json_null());
        json_object_set_new(a, "teacher_records_sha256",
                            kd && kd->active ? json_string(kd->t.records_sha) : json_null());
        json_object_set_new(a, "teacher_model_sha256", kd && kd->active ? json_string(kd->t.model_sha) : json_null());
    }
    return a;
}

// ---------------------------------------------------------------------------
// Model and vocabulary


static void set_norms_to_one(Model *m) {
    const ModelConfig *c = &m->config;
    size_t LD = (size_t)c->n_layers * (size_t)c->dim;
    for (size_t i = 0; i < LD; i++) m->params.attn_norm[i] = m->params.mlp_norm[i] = 1.0f;
    for (int i = 0; i < c->dim; i++) m->params.final_norm[i] = 1.0f;
}

static int shape_equal(const ModelConfig *a, const ModelConfig *b) {
    return a->dim == b->dim && a->hidden_dim == b->hidden_dim && a->n_layers == b->n_layers &&
           a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim;
}

// SkipLayers: the starting model cut to its first --keep-layers layers.
static int keep_layers(Trainer *t, Error *e) {
    const int m = t->o.keep_layers, N = t->m.config.n_layers;
    if (m < 1 || m > N)
        return err_set(e, "--keep-layers %d: the starting model has %d layers (skiplayers keeps 1..%d of them)", m, N,
                       N);
    Model kept;
    model_keep_layers(&kept, &t->m, m);
    model_free(&t->m);
    t->m = kept;
    return 0;
}

// The starting model and its vocabulary, for a fresh run. Loads nothing into OUT.
static int model_setup_init(Trainer *t, Error *e);
static int model_setup(Trainer *t, Error *e) {
    if (model_setup_init(t, e)) return -1;
    if (t->o.method == METHOD_COMPRESS500X && t->m.config.method != METHOD_FINETUNE)
        return err_set(e, "--init %s is a %s model; compress500x starts from a fine-tuned full (finetune) model",
                       t->o.init_dir, config_method_name(t->m.config.method));
    return t->o.method == METHOD_SKIPLAYERS ? keep_layers(t, e) : 0;
}

static int model_setup_init(Trainer *t, Error *e) {
    const TrainOptions *o = &t->o;
    int P = o->prefix_regs, S = o->suffix_regs;
    if (!o->init_dir) {
        if (!o->preset) return err_set(e, "--preset is required when training from scratch (no --init)");
        if (model_vocab_build(&t->v, &t->d, P, S, e)) return -1;
        ModelConfig c;
        if (preset_config(&c, o->preset, t->v.size, e)) return -1;
        model_init_random(&t->m, &c, o->seed, o->init_std);
        set_norms_to_one(&t->m);
        return 0;
    }
    Model init;
    if (model_load(&init, o->init_dir, e)) return err_prefix(e, "--init: ");
    if (o->preset) {
        ModelConfig pc;
        if (preset_config(&pc, o->preset, init.config.vocab_size, e)) { model_free(&init); return -1; }
        if (!shape_equal(&pc, &init.config)) {
            ModelConfig ic = init.config;
            const ModelConfig *c = &ic;
            model_free(&init);
            return err_set(e, "--init %s: its shape (%d layers, d=%d, %d heads / %d KV heads, SwiGLU %d) does not fit "
                           "--preset %s (%d layers, d=%d, %d / %d heads, SwiGLU %d); leave out --preset to keep the "
                           "checkpoint's shape", o->init_dir, c->n_layers, c->dim, c->n_heads, c->n_kv_heads,
                           c->hidden_dim, o->preset, pc.n_layers, pc.dim, pc.n_heads, pc.n_kv_heads, pc.hidden_dim);
        }
    }
    char path[4096];
    if (join(path, sizeof path, o->init_dir, "vocab.txt", e)) { model_free(&init); return -1; }
    Vocab dv;
    if (model_vocab_build(&dv, &t->d, P, S, e)) { model_free(&init); return -1; }
    char tok_path[4096];
    int has_tokenizer = join(tok_path, sizeof tok_path, o->init_dir, "tokenizer.bin", e) == 0 && file_exists(tok_path);
    if (file_exists(path) || (!has_tokenizer && dv.size == init.config.vocab_size)) {
        // A model made for earnest prompts: its own vocabulary (or the dataset's, rebuilt).
        vocab_free(&dv);
        if (model_vocab_load(&t->v, o->init_dir, &t->d, &init.config, e)) {
            model_free(&init);
            return err_prefix(e, "--init: ");
        }
        t->m = init;
        return 0;
    }
    // Any other checkpoint (e.g. a converted llama2.c model): grow its vocabulary.
    int V0 = init.config.vocab_size;
    if (vocab_grow(&t->v, V0, &dv, e)) {
        vocab_free(&dv);
        model_free(&init);
        return -1;
    }
    model_grow_vocab(&t->m, &init, t->v.size, o->seed);
    fprintf(stderr, "earnest train: --init %s has no earnest vocabulary: grew its vocabulary from %d to %d tokens "
            "(ids 0..%d keep the checkpoint's embeddings as <orig_i>; the %d registers, template words and codes are new)\n",
            o->init_dir, V0, t->v.size, V0 - 1, dv.size);
    vocab_free(&dv);
    model_free(&init);
    return 0;
}

// compress500x: C compression tokens (the suffix registers) and, on a fresh
// run, rank-r LoRA adapters (B = 0) added to the frozen --init model; a
// resumed run's model has them already (same rank and alpha).
static int compress500x_apply(Trainer *t, Error *e) {
    const TrainOptions *o = &t->o;
    ModelConfig *c = &t->m.config;
    if (o->k || o->prefix_regs > 0)
        return err_set(e, "--method compress500x: its compression tokens are the suffix registers (--suffix-regs C); "
                       "--k and --prefix-regs do not apply");
    c->layer_split_k = c->n_prefix_regs = 0;
    c->n_suffix_regs = o->suffix_regs >= 0 ? o->suffix_regs : 1;
    if (c->n_suffix_regs < 1)
        return err_set(e, "--method compress500x needs at least one compression token (--suffix-regs >= 1)");
    int r = o->lora_rank >= 0 ? o->lora_rank : 8;
    float alpha = o->lora_alpha > 0.0f ? o->lora_alpha : (float)r;
    if (r < 1 || r > c->dim)
        return err_set(e, "--lora-rank %d: compress500x's LoRA rank must be in 1..%d (hidden_size)", r, c->dim);
    if (c->lora_rank == 0) { // fresh: the --init model, frozen, plus adapters that start at B = 0
        Model with;
        model_add_lora(&with, &t->m, r, alpha, o->seed);
        with.config.method = METHOD_COMPRESS500X;
        model_free(&t->m);
        t->m = with;
    } else if (c->lora_rank != r || c->lora_alpha != alpha) {
        return err_set(e, "--resume: the saved model has LoRA rank %d, alpha %g; the command line asks for %d, %g",
                       c->lora_rank, (double)c->lora_alpha, r, (double)alpha);
    }
    return 0;
}

// Sets method, k and registers on the model's config from the options and
// checks them against the model and the vocabulary.
static int config_apply(Trainer *t, Error *e) {
    const TrainOptions *o = &t->o;
    ModelConfig *c = &t->m.config;
    c->method = o->method;
    int N = c->n_layers;
    if (o->method == METHOD_EARN) {
        c->layer_split_k = o->k ? o->k : (N / 4 > 0 ? N / 4 : 1);
        c->n_prefix_regs = o->prefix_regs >= 0 ? o->prefix_regs : 1;
        c->n_suffix_regs = o->suffix_regs >= 0 ? o->suffix_regs : 1;
        if (c->layer_split_k < 1 || c->layer_split_k > N - 1)
            return err_set(e, "--k %d: the EARN layer split must be in 1..%d (the model has %d layers)",
                           c->layer_split_k, N - 1, N);
        if (c->n_suffix_regs < 1)
            return err_set(e, "--suffix-regs 0: EARN needs at least one suffix register (the token that predicts the "
                           "first code token must reach the last layer)");
    } else if (o->method == METHOD_GIST) {
        if (o->k || o->prefix_regs > 0)
            return err_set(e, "--method gist: its gist tokens are the suffix registers (--suffix-regs G); --k and "
                           "--prefix-regs do not apply");
        c->layer_split_k = c->n_prefix_regs = 0;
        c->n_suffix_regs = o->suffix_regs >= 0 ? o->suffix_regs : 1;
        if (c->n_suffix_regs < 1) return err_set(e, "--method gist needs at least one gist token (--suffix-regs >= 1)");
    } else if (o->method == METHOD_COMPRESS500X) {
        if (compress500x_apply(t, e)) return -1;
    } else if (o->method == METHOD_ANLLM) {
        if (o->k || o->prefix_regs > 0 || o->suffix_regs > 0)
            return err_set(e, "--method anllm: its anchor after each history item is the vocabulary's <reg_suf_0>; "
                           "--k, --prefix-regs and --suffix-regs do not apply");
        c->layer_split_k = c->n_prefix_regs = c->n_suffix_regs = 0;
    } else if (o->method == METHOD_POD) {
        if (o->k || o->suffix_regs > 0)
            return err_set(e, "--method pod: its soft prompt is the prefix registers (--prefix-regs P); --k and "
                           "--suffix-regs do not apply");
        c->layer_split_k = c->n_suffix_regs = 0;
        c->n_prefix_regs = o->prefix_regs >= 0 ? o->prefix_regs : 1;
        if (c->n_prefix_regs < 1)
            return err_set(e, "--method pod needs at least one soft-prompt vector (--prefix-regs >= 1)");
    } else {
        if (o->k)
            return err_set(e, "--k is an EARN setting; --method %s runs every token through every layer",
                           config_method_name(o->method));
        if (o->method == METHOD_SKIPLAYERS && (o->prefix_regs > 0 || o->suffix_regs > 0))
            return err_set(e, "--method skiplayers takes no registers");
        c->layer_split_k = 0;
        c->n_prefix_regs = o->prefix_regs >= 0 ? o->prefix_regs : 0;
        c->n_suffix_regs = o->suffix_regs >= 0 ? o->suffix_regs : 0;
    }
    snprintf(c->prompt_template, sizeof c->prompt_template, "%s", prompt_template_name(o->tmpl));
    if (config_validate(c, "the training configuration", e)) return -1;
    if (c->n_prefix_regs > t->v.n_reg_pre || c->n_suffix_regs > t->v.n_reg_suf)
        return err_set(e, "--prefix-regs %d / --suffix-regs %d do not fit the vocabulary, which has %d prefix and %d "
                       "suffix registers", c->n_prefix_regs, c->n_suffix_regs, t->v.n_reg_pre, t->v.n_reg_suf);
    if (prompter_init_form(&t->p, &t->v, &t->d, o->tmpl, c->n_prefix_regs, c->n_suffix_regs,
                           prompt_form_for_method(c->method), e))
        return err_prefix(e, "the vocabulary does not fit the dataset: ");
    return 0;
}

// ---------------------------------------------------------------------------
// Batches

static void batch_reserve(Trainer *t, size_t n_seqs, size_t T) {
    if (n_seqs > t->cap_seqs) {
        t->seqs = xrealloc(t->seqs, n_seqs * sizeof(PackedSeq));
        memset(t->seqs + t->cap_seqs, 0, (n_seqs - t->cap_seqs) * sizeof(PackedSeq));
        t->b_ntok = xrealloc(t->b_ntok, n_seqs * sizeof(int));
        t->b_masks = xrealloc(t->b_masks, n_seqs * sizeof(uint8_t *));
        t->b_packs = xrealloc(t->b_packs, n_seqs * sizeof(Pack *));
        t->cap_seqs = n_seqs;
    }
    if (T > t->cap_T) {
        t->b_tokens = xrealloc(t->b_tokens, T * sizeof(int));
        t->b_pos = xrealloc(t->b_pos, T * sizeof(int));
        t->b_depth = xrealloc(t->b_depth, T * sizeof(int));
        t->b_labels = xrealloc(t->b_labels, T * sizeof(int));
        t->b_lora = xrealloc(t->b_lora, T);
        t->cap_T = T;
    }
}

// Materialises the packs order[i0..i1) as one TrainBatch.
static void batch_build(TrainBatch *b, Trainer *t, const size_t *order, size_t i0, size_t i1) {
    size_t n = i1 - i0, T = 0;
    for (size_t i = i0; i < i1; i++) T += (size_t)t->plan.packs[order[i]].n_tokens;
    batch_reserve(t, n, T);
    size_t at = 0;
    for (size_t j = 0; j < n; j++) {
        PackedSeq *s = &t->seqs[j];
        int len = pack_build(s, &t->plan.packs[order[i0 + j]], &t->d, &t->p);
        memcpy(t->b_tokens + at, s->tokens, (size_t)len * sizeof(int));
        memcpy(t->b_pos + at, s->positions, (size_t)len * sizeof(int));
        memcpy(t->b_labels + at, s->labels, (size_t)len * sizeof(int));
        plan_depth_for(t->b_depth + at, s->kinds, len, &t->m.config);
        ModelMethod mm = t->m.config.method;
        if (mm == METHOD_GIST || mm == METHOD_COMPRESS500X) { // targets see only the gist/compression tokens
            pack_mask_materialise(s);                          // and each other
            plan_mask_gist(s->mask_buf, s->kinds, len);
        }
        for (int i = 0; mm == METHOD_COMPRESS500X && i < len; i++) // the encoder (LoRA) reads the prompt
            t->b_lora[at + (size_t)i] = s->kinds[i] != TOKEN_KIND_TARGET;
        if (mm == METHOD_ANLLM) { // earlier anchors, the instruction segment, own item
            pack_mask_materialise(s);
            plan_mask_anllm(s->mask_buf, s->kinds, len);
        }
        t->b_ntok[j] = len;
        t->b_masks[j] = s->mask;
        t->b_packs[j] = &t->plan.packs[order[i0 + j]];
        at += (size_t)len;
    }
    if (t->kd.active) { // the packs again, with the teacher's beams appended (train_kd.h)
        kd_batch_build(b, &t->kd, t->seqs, t->b_packs, (int)n, &t->d, &t->m.config);
        return;
    }
    *b = (TrainBatch){.n_seqs = (int)n, .n_tok = t->b_ntok, .tokens = t->b_tokens, .positions = t->b_pos,
                      .depth = t->b_depth, .mask = t->b_masks, .labels = t->b_labels,
                      .lora = t->m.config.method == METHOD_COMPRESS500X ? t->b_lora : NULL};
}

// The batches of epoch e: order [n_packs] and starts [n_packs + 1]; returns the count.
static size_t epoch_batches(size_t *order, size_t *starts, const Trainer *t, int epoch) {
    pack_shuffle(order, t->plan.n_packs, epoch_seed(t->o.seed, epoch));
    return pack_batches(starts, order, t->plan.n_packs, &t->plan, (size_t)t->o.batch_tokens);
}

// ---------------------------------------------------------------------------
// Validation: Recall/NDCG on valid users through constrained beam search.

static int validate(Trainer *t, Error *e) {
    RecEvalInputs in = {.model = &t->m, .vocab = &t->v, .prompter = &t->p, .data = &t->d, .samples = &t->valid};
    RecEvalOptions o;
    rec_eval_options_default(&o);
    o.beam = t->o.beam;
    o.pick = t->valid_pick;
    o.n_users = (size_t)t->n_pick;
    RecEvalResult r;
    if (rec_eval_run(&r, &in, &o, e)) return -1;
    t->last_eval[0] = recmetrics_recall_at(&r.model, 5);
    t->last_eval[1] = recmetrics_recall_at(&r.model, 10);
    t->last_eval[2] = recmetrics_recall_at(&r.model, 20);
    t->last_eval[3] = recmetrics_ndcg_at(&r.model, 10);
    t->last_eval[4] = (double)r.model.n_users;
    return 0;
}

// A fixed, seeded subset of the valid users (all of them when eval_users is 0 or larger).
static void pick_valid_users(Trainer *t) {
    size_t n = t->valid.n;
    size_t *order = xmalloc((n ? n : 1) * sizeof(size_t));
    pack_shuffle(order, n, t->o.seed ^ 0x76616C6964ull);
    size_t k = (t->o.eval_users > 0 && (size_t)t->o.eval_users < n) ? (size_t)t->o.eval_users : n;
    t->valid_pick = xmalloc((k ? k : 1) * sizeof(int));
    // Keep the chosen users in dataset order (deterministic, and users of similar ids batch together).
    char *chosen = xcalloc(n ? n : 1, 1);
    for (size_t i = 0; i < k; i++) chosen[order[i]] = 1;
    t->n_pick = 0;
    for (size_t i = 0; i < n; i++)
        if (chosen[i]) t->valid_pick[t->n_pick++] = (int)i;
    free(chosen);
    free(order);
}

// ---------------------------------------------------------------------------
// State on disk

// Saves the state (weights, optimizer, progress) as the next state directory.
static int state_save(Trainer *t, Error *e) {
    t->pr.save_serial++;
    t->pr.elapsed_s = t->elapsed_before + (time_now_s() - t->t_start);
    t->pr.threads = t->o.threads;
    if (train_state_save(t->state_dir, &t->m, &t->opt, &t->pr, e)) return -1;
    t->t_last_save = time_now_s();
    return 0;
}

// ---------------------------------------------------------------------------
// Logs

static const char *TRAIN_LOG_HEADER = "step,epoch,batch,lr,loss,grad_norm,tokens,targets,elapsed_s,tokens_per_s\n";
static const char *EVAL_LOG_HEADER = "epoch,step,train_loss,recall@5,recall@10,recall@20,ndcg@10,users,eval_s,best\n";

static int logs_open(Trainer *t, int fresh, Error *e) {
    char path[4200];
    snprintf(path, sizeof path, "%s/train_log.csv", t->o.out_dir);
    if (train_log_open(&t->train_log, path, TRAIN_LOG_HEADER, fresh, 0, t->pr.step, e)) return -1;
    snprintf(path, sizeof path, "%s/eval_log.csv", t->o.out_dir);
    if (train_log_open(&t->eval_log, path, EVAL_LOG_HEADER, fresh, 1, t->pr.step, e)) return -1;
    if (!t->kd.active) return 0;
    snprintf(path, sizeof path, "%s/kd_log.csv", t->o.out_dir); // the two terms of a draft's loss, per update
    return train_log_open(&t->kd_log, path, "step,ce,kd,gt_rows,kd_rows\n", fresh, 0, t->pr.step, e);
}

// ---------------------------------------------------------------------------
// Progress display

static void trainer_show_progress(Trainer *t, size_t n_batches, int final) {
    double run = time_now_s() - t->t_start;
    double rate = run > 0 ? (double)t->tokens_run / run : 0;
    int64_t done_run = t->pr.step - t->step_run0;
    double eta = done_run > 0 ? run / (double)done_run * (double)(t->pr.total_steps - t->pr.step) : -1;
    char eta_s[32], el_s[32], label[32], text[160];
    progress_format_duration(eta_s, sizeof eta_s, eta);
    progress_format_duration(el_s, sizeof el_s, t->elapsed_before + run);
    double loss = t->pr.ep_labels ? t->pr.ep_loss_sum / (double)t->pr.ep_labels : NAN; // the epoch's mean so far
    snprintf(label, sizeof label, "epoch %d/%d", t->pr.epoch + 1, t->o.epochs);
    snprintf(text, sizeof text, "step %lld/%lld loss %.4f | %.0f tok/s | %s elapsed, ETA %s", (long long)t->pr.step,
             (long long)t->pr.total_steps, loss, rate, el_s, eta_s);
    progress_show(&t->progress, label, n_batches ? (double)t->pr.batch / (double)n_batches : 1.0, text, final);
}

// ---------------------------------------------------------------------------
// Setup and teardown

static void trainer_free(Trainer *t) {
    if (t->train_log) fclose(t->train_log);
    if (t->eval_log) fclose(t->eval_log);
    if (t->kd_log) fclose(t->kd_log);
    for (size_t i = 0; i < t->cap_seqs; i++) packed_seq_free(&t->seqs[i]);
    free(t->seqs);
    free(t->b_ntok);
    free(t->b_masks);
    free(t->b_packs);
    kd_free(&t->kd);
    free(t->b_tokens);
    free(t->b_pos);
    free(t->b_depth);
    free(t->b_labels);
    free(t->b_lora);
    free(t->valid_pick);
    samples_free(&t->valid);
    train_acts_free(&t->acts);
    if (t->g.memory) grads_free(&t->g);
    if (t->opt.memory) adamw_free(&t->opt);
    if (t->plan.packs) pack_plan_free(&t->plan);
    prompter_free(&t->p);
    if (t->m.params_memory) model_free(&t->m);
    vocab_free(&t->v);
    dataset_free(&t->d);
}

static int check_options(const TrainOptions *o, Error *e) {
    if (!o->data_dir || !o->out_dir) return err_set(e, "--data and --out are required");
    if (o->epochs < 1) return err_set(e, "--epochs must be at least 1");
    if (o->batch_tokens < 1 || o->pack_tokens < 0) return err_set(e, "--batch-tokens must be positive");
    if (!(o->opt.lr > 0) || !(o->opt.warmup_ratio >= 0 && o->opt.warmup_ratio <= 1) || !(o->opt.weight_decay >= 0))
        return err_set(e, "--lr must be > 0, --warmup in [0, 1], --weight-decay >= 0");
    if (o->beam < 1) return err_set(e, "--beam must be at least 1");
    if (o->method == METHOD_EARN && o->k < 0) return err_set(e, "--k must be positive");
    if (o->method != METHOD_COMPRESS500X && (o->lora_rank >= 0 || o->lora_alpha > 0.0f))
        return err_set(e, "--lora-rank and --lora-alpha are compress500x settings (--method compress500x)");
    if (o->method == METHOD_COMPRESS500X && !o->init_dir)
        return err_set(e, "--method compress500x needs --init DIR, a fine-tuned full (finetune) model: its weights "
                       "are the frozen base that the adapters and compression tokens are trained against (a frozen "
                       "random base would be meaningless)");
    if (o->method == METHOD_COMPRESS500X && o->lora_rank == 0)
        return err_set(e, "--lora-rank 0: compress500x needs LoRA adapters of rank >= 1");
    if ((o->method == METHOD_SKIPLAYERS) != (o->keep_layers > 0))
        return err_set(e, o->keep_layers > 0 ? "--keep-layers is a skiplayers setting (--method skiplayers)"
                                             : "--method skiplayers needs --keep-layers M (the layers it keeps)");
    return 0;
}

// --resume: the saved options must equal these; then the optimizer and the progress.
static int resume_load(Trainer *t, const char *latest, int *resume_threads, Error *e) {
    const TrainOptions *o = &t->o;
    char path[4600];
    json_t *now = args_json(o, &t->m.config, &t->d, &t->kd);
    snprintf(path, sizeof path, "%s/train_args.json", o->out_dir);
    json_error_t je;
    json_t *saved = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    int rc = saved ? train_args_compare(saved, now, path, e) : err_set(e, "%s:%d: %s", path, je.line, je.text);
    json_decref(saved);
    json_decref(now);
    if (rc) return -1;
    snprintf(path, sizeof path, "%s/optimizer.bin", latest);
    if (adamw_load(&t->opt, path, e)) return err_prefix(e, "--resume: ");
    snprintf(path, sizeof path, "%s/progress.json", latest);
    if (train_progress_load(&t->pr, path, t->pr.total_steps, e)) return err_prefix(e, "--resume: ");
    t->elapsed_before = t->pr.elapsed_s;
    *resume_threads = t->pr.threads;
    if (t->opt.step != t->pr.step)
        return err_set(e, "--resume: %s: the optimizer has done %lld updates but the progress says %lld", latest,
                       (long long)t->opt.step, (long long)t->pr.step);
    return 0;
}

// Loads (or, with --resume, reloads) everything; touches nothing in OUT.
static int trainer_setup(Trainer *t, int *resume_threads, Error *e) {
    const TrainOptions *o = &t->o;
    if (check_options(o, e)) return -1;
    if (snprintf(t->state_dir, sizeof t->state_dir, "%s/state", o->out_dir) >= (int)sizeof t->state_dir)
        return err_set(e, "%s: path too long", o->out_dir);
    if (dataset_load(&t->d, o->data_dir, e)) return err_prefix(e, "--data: ");
    if (dataset_interactions(&t->d, SPLIT_TRAIN) == 0) return err_set(e, "%s: the train split is empty", o->data_dir);
    char latest[4400] = {0};
    if (o->resume) {
        if (train_state_latest(latest, sizeof latest, t->state_dir, e)) return -1;
        char path[4200];
        snprintf(path, sizeof path, "%s/vocab.txt", o->out_dir);
        if (vocab_load(&t->v, path, e)) return err_prefix(e, "--resume: ");
        if (model_load(&t->m, latest, e)) return err_prefix(e, "--resume: ");
        if (t->m.config.vocab_size != t->v.size)
            return err_set(e, "--resume: %s has %d tokens, the model in %s %d", path, t->v.size, latest,
                           t->m.config.vocab_size);
    } else {
        if (dir_exists(o->out_dir) && !dir_is_empty(o->out_dir) && !o->force && !o->dry_run) {
            char path[4200];
            snprintf(path, sizeof path, "%s/state/LATEST", o->out_dir);
            return err_set(e, "--out %s exists and is not empty (%s); nothing was changed", o->out_dir,
                           file_exists(path) ? "it holds a training run: add --resume to continue it"
                                             : "pick another directory, or add --force to write into it");
        }
        if (model_setup(t, e)) return -1;
    }
    if (config_apply(t, e)) return -1;

    // What the epochs feed: the pack plan and its batches.
    pack_plan_build(&t->plan, &t->d, &t->p, o->max_history, o->pack_tokens);
    if (t->plan.n_packs == 0) return err_set(e, "%s: no train user has two or more train items", o->data_dir);
    if (o->teacher) { // draft distillation: the teacher file's samples only
        if (kd_setup(&t->kd, o->teacher, (KDLoss)o->kd, o->kd_alpha, o->kd_temp, o->kd_topk, &t->d, &t->v, e))
            return -1;
        size_t all = t->plan.n_targets;
        if (kd_filter_plan(&t->plan, &t->kd, &t->d, &t->p, e)) return -1;
        if (o->progress)
            fprintf(stderr, "earnest train: draft, --kd %s: the teacher file covers %zu of the %zu train targets "
                    "(%d users); training on those\n", kd_loss_name((KDLoss)o->kd), t->plan.n_targets, all,
                    t->kd.t.users);
    }
    size_t *order = xmalloc(t->plan.n_packs * sizeof(size_t)), *starts = xmalloc((t->plan.n_packs + 1) * sizeof(size_t));
    t->pr.total_steps = 0;
    for (int ep = 0; ep < o->epochs; ep++) t->pr.total_steps += (int64_t)epoch_batches(order, starts, t, ep);
    free(order);
    free(starts);

    samples_build(&t->valid, &t->d, SPLIT_VALID, o->max_history);
    pick_valid_users(t);

    adamw_init(&t->opt, &t->m.config);
    if (t->m.config.method == METHOD_COMPRESS500X) adamw_train_lora_only(&t->opt); // the base stays frozen
    grads_alloc(&t->g, &t->m.config);
    t->pr.best = -1;
    if (o->resume && resume_load(t, latest, resume_threads, e)) return -1;
    return 0;
}

// The first writes into OUT of a fresh run: vocabulary, arguments, logs.
static int out_init(Trainer *t, Error *e) {
    char path[4200];
    if (make_dirs(t->o.out_dir, e)) return -1;
    if (t->o.force) remove_tree(t->state_dir); // --force: an old run's states must not mix with this one's
    if (mkdir(t->state_dir, 0777) != 0 && errno != EEXIST)
        return err_set(e, "%s: cannot create: %s", t->state_dir, strerror(errno));
    snprintf(path, sizeof path, "%s/vocab.txt", t->o.out_dir);
    if (vocab_save(&t->v, path, e)) return -1;
    snprintf(path, sizeof path, "%s/train_args.json", t->o.out_dir);
    json_t *a = args_json(&t->o, &t->m.config, &t->d, &t->kd);
    int rc = json_write_atomic(path, a, e);
    json_decref(a);
    return rc;
}

static int summary_write(Trainer *t, const char *stopped, Error *e) {
    char path[4200];
    snprintf(path, sizeof path, "%s/summary.json", t->o.out_dir);
    const ModelConfig *c = &t->m.config;
    double elapsed = t->elapsed_before + (time_now_s() - t->t_start);
    json_t *s = json_object();
    json_object_set_new(s, "format", json_string("earnest-train-summary"));
    json_object_set_new(s, "method", json_string(config_method_name(c->method)));
    json_object_set_new(s, "k", json_integer(c->layer_split_k));
    json_object_set_new(s, "prefix_regs", json_integer(c->n_prefix_regs));
    json_object_set_new(s, "suffix_regs", json_integer(c->n_suffix_regs));
    json_object_set_new(s, "preset", t->o.preset ? json_string(t->o.preset) : json_null());
    json_object_set_new(s, "template", json_string(prompt_template_name(t->o.tmpl)));
    json_object_set_new(s, "dataset", json_string(t->d.name));
    json_object_set_new(s, "n_params", json_integer((json_int_t)t->m.n_params));
    json_object_set_new(s, "stopped", json_string(stopped));
    json_object_set_new(s, "epochs_planned", json_integer(t->o.epochs));
    json_object_set_new(s, "steps", json_integer(t->pr.step));
    json_object_set_new(s, "total_steps", json_integer(t->pr.total_steps));
    json_object_set_new(s, "best_epoch", json_integer(t->pr.best_epoch));
    json_object_set_new(s, "best_valid_recall@10", json_real(t->pr.best));
    json_object_set_new(s, "valid_users", json_integer(t->n_pick));
    json_object_set_new(s, "train_seconds", json_real(elapsed));
    double run = time_now_s() - t->t_start;
    json_object_set_new(s, "tokens_per_s_wall", json_real(run > 0 ? (double)t->tokens_run / run : 0));
    json_object_set_new(s, "train_targets_per_epoch", json_integer((json_int_t)t->plan.n_targets));
    json_object_set_new(s, "tokens_per_epoch_packed", json_integer((json_int_t)t->plan.tokens_packed));
    json_object_set_new(s, "tokens_per_epoch_unpacked", json_integer((json_int_t)t->plan.tokens_unpacked));
    json_object_set_new(s, "threads", json_integer(t->o.threads));
    if (t->o.kd >= 0) {
        json_object_set_new(s, "kd", json_string(kd_loss_name((KDLoss)t->o.kd)));
        json_object_set_new(s, "kd_alpha", json_real(t->o.kd_alpha));
        json_object_set_new(s, "kd_temp", json_real(t->o.kd_temp));
        json_object_set_new(s, "teacher", t->o.teacher ? json_string(t->o.teacher) : json_null());
    }
    int rc = json_write_atomic(path, s, e);
    json_decref(s);
    return rc;
}

// End of an epoch (or of a time-limited run): validation, best checkpoint, logs.
static int end_of_epoch(Trainer *t, int counts_for_patience, Error *e) {
    double t0 = time_now_s();
    if (validate(t, e)) return -1;
    double eval_s = time_now_s() - t0;
    double r10 = t->last_eval[1];
    int better = r10 > t->pr.best;
    if (better) {
        t->pr.best = r10;
        t->pr.best_epoch = t->pr.epoch + 1;
        t->pr.bad_epochs = 0;
        if (model_save(&t->m, t->o.out_dir, e)) return -1;
    } else if (counts_for_patience) {
        t->pr.bad_epochs++;
    }
    double loss = t->pr.ep_labels ? t->pr.ep_loss_sum / (double)t->pr.ep_labels : NAN;
    fprintf(t->eval_log, "%d,%lld,%.6f,%.6f,%.6f,%.6f,%.6f,%d,%.2f,%d\n", t->pr.epoch + 1, (long long)t->pr.step, loss,
            t->last_eval[0], t->last_eval[1], t->last_eval[2], t->last_eval[3], (int)t->last_eval[4], eval_s, better);
    fflush(t->eval_log);
    if (t->o.progress)
        fprintf(stderr, "epoch %d: train loss %.4f, valid Recall@10 %.4f NDCG@10 %.4f (%d users, %.1f s)%s\n",
                t->pr.epoch + 1, loss, r10, t->last_eval[3], (int)t->last_eval[4], eval_s,
                better ? " -> best, saved" : "");
    return 0;
}

// ---------------------------------------------------------------------------
// The loop

static void print_plan(const Trainer *t) {
    const ModelConfig *c = &t->m.config;
    printf("dataset %s: %zu train targets, %zu packs per epoch (pack cap %d tokens, max history %d)\n"
           "tokens per epoch: %zu packed, %zu unpacked (one prompt per target): %.2fx fewer\n"
           "model: %.2fM parameters, %d layers, d=%d, vocab %d, %s (k=%d, %d+%d registers), %s template\n"
           "updates: %lld over %d epochs (batches of <= %d tokens); valid users scored per epoch: %d\n",
           t->d.name, t->plan.n_targets, t->plan.n_packs, t->o.pack_tokens, t->o.max_history,
           t->plan.tokens_packed, t->plan.tokens_unpacked,
           (double)t->plan.tokens_unpacked / (double)t->plan.tokens_packed, (double)t->m.n_params / 1e6,
           c->n_layers, c->dim, c->vocab_size, config_method_name(c->method), c->layer_split_k, c->n_prefix_regs,
           c->n_suffix_regs, prompt_template_name(t->o.tmpl), (long long)t->pr.total_steps, t->o.epochs,
           t->o.batch_tokens, t->n_pick);
}

static void print_start(const Trainer *t) {
    const ModelConfig *c = &t->m.config;
    fprintf(stderr, "earnest train: %s, %s (k=%d, %d+%d registers), %s template, %.2fM parameters; %zu targets in "
            "%zu packs per epoch: %zu tokens packed vs %zu unpacked (%.2fx fewer); %lld updates over %d epochs; "
            "%d threads%s\n",
            t->d.name, config_method_name(c->method), c->layer_split_k, c->n_prefix_regs, c->n_suffix_regs,
            prompt_template_name(t->o.tmpl), (double)t->m.n_params / 1e6, t->plan.n_targets, t->plan.n_packs,
            t->plan.tokens_packed, t->plan.tokens_unpacked,
            (double)t->plan.tokens_unpacked / (double)t->plan.tokens_packed, (long long)t->pr.total_steps,
            t->o.epochs, t->o.threads, t->o.resume ? "; resumed" : "");
}

// One update on packs order[i0..i1): forward, backward, AdamW, the log row.
static int train_step(Trainer *t, const size_t *order, size_t i0, size_t i1, Error *e) {
    double ts = time_now_s();
    TrainBatch b;
    batch_build(&b, t, order, i0, i1);
    if (train_forward(&t->acts, &t->m, &b, e)) return -1;
    double loss = t->kd.active ? kd_loss_apply(&t->kd, &t->acts, &t->m) : t->acts.loss_mean;
    int n_loss = t->kd.active ? t->kd.n_gt : t->acts.n_labels; // ground-truth code rows
    if (!isfinite(loss))
        return err_set(e, "update %lld (epoch %d): the loss is %g; the run diverged (lower --lr?) and stops here: "
                       "nothing of it is saved as best, the last state is the one before", (long long)t->pr.step + 1,
                       t->pr.epoch + 1, loss);
    grads_zero(&t->g);
    if (t->kd.active) train_backward_dlogits(&t->g, &t->acts, &t->m); // kd_loss_apply left dloss/dlogits
    else train_backward(&t->g, &t->acts, &t->m, t->acts.n_labels ? 1.0f / (float)t->acts.n_labels : 0.0f);
    if (t->m.config.method == METHOD_COMPRESS500X) // frozen base: adapters and compression-token embeddings only
        grads_keep_lora_and_rows(&t->g, &t->m.config, t->v.reg_suf, t->m.config.n_suffix_regs);
    float lr = adamw_lr(&t->o.opt, t->pr.step, t->pr.total_steps);
    double gnorm = adamw_step(&t->opt, t->m.params_memory, t->g.memory, lr, &t->o.opt);
    if (!isfinite(gnorm))
        return err_set(e, "update %lld (epoch %d): the gradient norm is %g; the run diverged and stops here: nothing "
                       "of it is saved as best, the last state is the one before", (long long)t->pr.step + 1,
                       t->pr.epoch + 1, gnorm);
    size_t T = t->acts.T;
    t->pr.step++;
    t->pr.batch++;
    t->pr.ep_loss_sum += loss * n_loss;
    t->pr.ep_labels += n_loss;
    t->pr.ep_tokens += (int64_t)T;
    t->tokens_run += (int64_t)T;
    double now = time_now_s();
    fprintf(t->train_log, "%lld,%d,%zu,%.6g,%.6f,%.6f,%zu,%d,%.3f,%.1f\n", (long long)t->pr.step, t->pr.epoch + 1,
            t->pr.batch, lr, loss, gnorm, T, n_loss / t->p.code_levels,
            t->elapsed_before + (now - t->t_start), (double)T / (now - ts));
    if (t->kd_log) {
        fprintf(t->kd_log, "%lld,%.8f,%.8f,%d,%d\n", (long long)t->pr.step, t->kd.ce, t->kd.kd, t->kd.n_gt, t->kd.n_kd);
        fflush(t->kd_log);
    }
    return 0;
}

enum { RUN_ON = 0, RUN_SIGNAL = 1, RUN_TIME_LIMIT = 2, RUN_EARLY_STOP = 3 };

// The rest of the current epoch's batches; returns RUN_ON at its end, or why it stopped (-1: error).
static int run_batches(Trainer *t, const size_t *order, const size_t *starts, size_t nb, Error *e) {
    int stop = RUN_ON;
    while (t->pr.batch < nb) {
        if (train_step(t, order, starts[t->pr.batch], starts[t->pr.batch + 1], e)) return -1;
        if (t->pr.batch < nb) {
            double now = time_now_s();
            int timed = t->o.save_every > 0 ? t->pr.step % t->o.save_every == 0
                                            : now - t->t_last_save >= 60.0 * t->o.save_minutes;
            if (g_stop_signal) stop = RUN_SIGNAL;
            else if (t->o.max_minutes > 0 && now - t->t_start >= 60.0 * t->o.max_minutes) stop = RUN_TIME_LIMIT;
            if (timed || stop == RUN_SIGNAL) {
                fflush(t->train_log);
                if (state_save(t, e)) return -1;
            }
        }
        trainer_show_progress(t, nb, 0);
        if (t->o.crash_after_step > 0 && t->pr.step == t->o.crash_after_step) {
            fflush(t->train_log);
            raise(SIGKILL); // tests: an interruption at a known step, between saves
        }
        if (stop) break;
    }
    return stop;
}

// Every remaining epoch: batches, then validation, best checkpoint, state.
// Returns how the run stopped (RUN_ON: all epochs done), -1 on error.
static int run_epochs(Trainer *t, Error *e) {
    size_t *order = xmalloc(t->plan.n_packs * sizeof(size_t));
    size_t *starts = xmalloc((t->plan.n_packs + 1) * sizeof(size_t));
    int stop = RUN_ON;
    while (t->pr.epoch < t->o.epochs && !stop) {
        size_t nb = epoch_batches(order, starts, t, t->pr.epoch);
        if ((stop = run_batches(t, order, starts, nb, e)) < 0 || stop == RUN_SIGNAL) break;
        trainer_show_progress(t, nb, 1);
        // End of the epoch (or the time limit): validate, keep the best, maybe stop early.
        if (end_of_epoch(t, stop == RUN_ON, e)) { stop = -1; break; }
        if (stop == RUN_ON) {
            t->pr.epoch++;
            t->pr.batch = 0;
            t->pr.ep_loss_sum = 0;
            t->pr.ep_labels = 0;
            t->pr.ep_tokens = 0;
            if (t->o.patience > 0 && t->pr.bad_epochs >= t->o.patience && t->pr.epoch < t->o.epochs)
                stop = RUN_EARLY_STOP;
        }
        if (stop != RUN_TIME_LIMIT) t->pr.done = t->pr.epoch >= t->o.epochs || stop == RUN_EARLY_STOP;
        fflush(t->train_log);
        if (state_save(t, e)) { stop = -1; break; }
        if (stop == RUN_ON && g_stop_signal && !t->pr.done) stop = RUN_SIGNAL;
    }
    free(order);
    free(starts);
    return stop;
}

// After the epochs: the summary (or, when interrupted, where to resume). Returns the exit status.
static int run_finish(Trainer *t, int stop, Error *e) {
    if (stop == RUN_SIGNAL) {
        fprintf(stderr, "\nearnest train: interrupted at step %lld (epoch %d); state saved in %s, --resume continues\n",
                (long long)t->pr.step, t->pr.epoch + 1, t->state_dir);
        return 130;
    }
    const char *stopped = stop == RUN_TIME_LIMIT ? "time_limit" : stop == RUN_EARLY_STOP ? "early_stop" : "completed";
    if (t->pr.best_epoch == 0 && model_save(&t->m, t->o.out_dir, e)) return -1; // never validated: keep the last
    if (summary_write(t, stopped, e)) return -1;
    if (t->o.progress)
        fprintf(stderr, "earnest train: %s after %lld updates; best valid Recall@10 %.4f (epoch %d) in %s\n", stopped,
                (long long)t->pr.step, t->pr.best, t->pr.best_epoch, t->o.out_dir);
    return 0;
}

// Runs with SIGINT/SIGTERM turned into "save the state and stop".
static int run_with_signals(Trainer *t, Error *e) {
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    g_stop_signal = 0;
    CHECK(sigaction(SIGINT, &sa, &old_int) == 0 && sigaction(SIGTERM, &sa, &old_term) == 0, "sigaction failed");
    if (t->o.progress) print_start(t);
    t->t_start = t->t_last_save = time_now_s();
    progress_init(&t->progress, t->o.progress);
    t->step_run0 = t->pr.step;
    int stop = run_epochs(t, e);
    int rc = stop < 0 ? -1 : run_finish(t, stop, e);
    CHECK(sigaction(SIGINT, &old_int, NULL) == 0 && sigaction(SIGTERM, &old_term, NULL) == 0, "sigaction failed");
    return rc;
}

int train_run(const TrainOptions *opts, Error *e) {
    Trainer *t = xcalloc(1, sizeof *t);
    t->o = *opts;
    t->o.threads = threads_init(opts->threads);
    int resume_threads = 0, rc = -1;
    OutputLock lock = {.fd = -1};
    if (!t->o.dry_run && t->o.out_dir && output_lock(&lock, t->o.out_dir, e)) goto done; // one run per OUT
    if (trainer_setup(t, &resume_threads, e)) goto done;
    if (t->o.resume && t->pr.done) {
        fprintf(stderr, "earnest train: %s: the run already ended (best valid Recall@10 %.4f at epoch %d); nothing to do\n",
                t->o.out_dir, t->pr.best, t->pr.best_epoch);
        rc = 0;
        goto done;
    }
    if (t->o.resume && resume_threads != t->o.threads)
        fprintf(stderr, "earnest train: warning: the interrupted run used %d threads, this one %d: the result will "
                "not be bitwise identical to an uninterrupted run\n", resume_threads, t->o.threads);
    if (t->o.dry_run) {
        print_plan(t);
        rc = 0;
        goto done;
    }
    if (!t->o.resume && out_init(t, e)) goto done;
    if (logs_open(t, !t->o.resume, e)) goto done;
    rc = run_with_signals(t, e);
done:
    trainer_free(t);
    free(t);
    output_unlock(&lock); // last: OUT is settled
    return rc;
}
