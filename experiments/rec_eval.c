// rec_eval.c: see rec_eval.h.
#include "experiments/rec_eval.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/beam.h"
#include "runtime/progress.h"
#include "runtime/trie.h"

const int REC_EVAL_KS[4] = {1, 5, 10, 20};

void rec_eval_options_default(RecEvalOptions *o) {
    memset(o, 0, sizeof *o);
    o->beam = BEAM_DEFAULT_WIDTH;
    o->batch = 16;
}

typedef char CodeStr[DATASET_CODE_STR_MAX];

// Buffers of one evaluation: the prompts of a batch, its results, code strings.
typedef struct {
    int batch, beam;
    int **prompts, *lens;
    int **kept;          // [batch] a prompt policy's kept history items
    uint8_t **kinds;
    BeamHyps *hyps;
    CodeStr *targets, *ranked, *mostpop;
    const char **target_p, **ranked_p, **mostpop_p;
    int n_mostpop;
} EvalBufs;

static void bufs_init(EvalBufs *b, const RecEvalInputs *in, const RecEvalOptions *o, int max_targets) {
    memset(b, 0, sizeof *b);
    b->batch = o->batch;
    b->beam = o->beam;
    b->prompts = xcalloc((size_t)o->batch, sizeof(int *));
    b->kept = xcalloc((size_t)o->batch, sizeof(int *));
    b->kinds = xcalloc((size_t)o->batch, sizeof(uint8_t *));
    b->lens = xcalloc((size_t)o->batch, sizeof(int));
    b->hyps = xcalloc((size_t)o->batch, sizeof(BeamHyps));
    b->targets = xmalloc((size_t)max_targets * sizeof(CodeStr));
    b->target_p = xmalloc((size_t)max_targets * sizeof(char *));
    b->ranked = xmalloc((size_t)o->beam * sizeof(CodeStr));
    b->ranked_p = xmalloc((size_t)o->beam * sizeof(char *));
    // MostPop's ranking is the same for every user: its top `beam` codes.
    b->n_mostpop = in->mostpop ? (in->mostpop->n < o->beam ? in->mostpop->n : o->beam) : 0;
    b->mostpop = xmalloc((size_t)(b->n_mostpop ? b->n_mostpop : 1) * sizeof(CodeStr));
    b->mostpop_p = xmalloc((size_t)(b->n_mostpop ? b->n_mostpop : 1) * sizeof(char *));
    for (int i = 0; i < b->n_mostpop; i++) {
        dataset_code_string(b->mostpop[i], in->data, in->mostpop->items[i]);
        b->mostpop_p[i] = b->mostpop[i];
    }
}

static void bufs_free(EvalBufs *b) {
    for (int i = 0; i < b->batch; i++) {
        free(b->prompts[i]);
        free(b->kept[i]);
        free(b->kinds[i]);
        beam_hyps_free(&b->hyps[i]);
    }
    free(b->prompts);
    free(b->kept);
    free(b->kinds);
    free(b->lens);
    free(b->hyps);
    free(b->targets);
    free(b->target_p);
    free(b->ranked);
    free(b->ranked_p);
    free(b->mostpop);
    free(b->mostpop_p);
}

// Distinct target items of a sample as code strings; returns their count.
static int target_codes(EvalBufs *b, const Dataset *d, const Sample *s) {
    int n = 0;
    for (int i = 0; i < s->n_targets; i++) {
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= s->targets[j] == s->targets[i];
        if (dup) continue;
        dataset_code_string(b->targets[n], d, s->targets[i]);
        b->target_p[n] = b->targets[n];
        n++;
    }
    return n;
}

static const Sample *pick_sample(const RecEvalInputs *in, const RecEvalOptions *o, size_t u) {
    return &in->samples->samples[o->pick ? (size_t)o->pick[u] : u];
}

// One beam-search call over users u0 .. u0+nb-1, with its efficiency figures.
static int rank_batch(RecEvalResult *r, EvalBufs *b, DeviceSearch *bs, const RecEvalInputs *in,
                      const RecEvalOptions *o, size_t u0, int nb, Error *e) {
    const Prompter *p = in->prompter;
    const int *hist[nb];
    int n_hist[nb];
    for (int i = 0; i < nb; i++) {
        const Sample *s = pick_sample(in, o, u0 + (size_t)i);
        hist[i] = s->history;
        n_hist[i] = s->n_history;
        r->hist_items += (size_t)s->n_history;
    }
    // With a prompt policy, its selection and the prompts' rebuild count as prefill time.
    const int compress = o->prompt_policy && o->prompt_policy->kind != PP_NONE;
    double t0 = time_now_s();
    if (compress) {
        for (int i = 0; i < nb; i++) b->kept[i] = xrealloc(b->kept[i], (size_t)(n_hist[i] + 1) * sizeof(int));
        int n_kept[nb];
        if (promptpolicy_apply(b->kept, n_kept, o->prompt_policy, o->scorer, nb, hist, n_hist, e))
            return err_prefix(e, "--prompt-policy %s: ", promptpolicy_name(o->prompt_policy->kind));
        for (int i = 0; i < nb; i++) {
            hist[i] = b->kept[i];
            n_hist[i] = n_kept[i];
        }
    }
    for (int i = 0; i < nb; i++) {
        int n = prompter_length(p, n_hist[i], 0);
        b->prompts[i] = xrealloc(b->prompts[i], (size_t)n * sizeof(int));
        b->kinds[i] = xrealloc(b->kinds[i], (size_t)n);
        b->lens[i] = prompter_build(b->prompts[i], b->kinds[i], p, hist[i], n_hist[i], 0);
        r->hist_kept += (size_t)n_hist[i];
    }
    double compress_s = compress ? time_now_s() - t0 : 0.0;
    r->compress_s += compress_s;
    r->prefill_s += compress_s;
    if (device_search_run(bs, b->hyps, nb, (const int *const *)b->prompts, (const uint8_t *const *)b->kinds, b->lens,
                          e))
        return -1;
    r->prefill_s += bs->prefill_s;
    r->decode_s += bs->decode_s;
    r->gen_tokens += bs->gen_tokens;
    r->prompt_tokens += bs->prompt_tokens;
    r->sigma_sum += (double)bs->kv_bytes;
    r->kv_peak = bs->kv_bytes > r->kv_peak ? bs->kv_bytes : r->kv_peak;
    if (bs->spec) spec_figures_add(&r->spec, &bs->spec->fig);
    ModelConfig full = in->model->config;
    full.method = METHOD_FINETUNE;
    for (int i = 0; i < nb; i++) { // the whole history's plain prompt (no registers, anchors or dropped words),
                                   // as if no prompt policy cut it
        int whole = prompter_length_plain(p, pick_sample(in, o, u0 + (size_t)i)->n_history);
        r->sigma_full_sum += (double)beam_kv_bytes_closed_form(&full, whole, 0, b->hyps[i].n,
                                                               in->data->code_levels - 1);
    }
    return 0;
}

// Scores user u of the batch (its beams in b->hyps[i]) and MostPop on it.
static void score_user(RecEvalResult *r, EvalBufs *b, const RecEvalInputs *in, const RecEvalOptions *o,
                       const Sample *s, int i) {
    int nt = target_codes(b, in->data, s);
    if (in->mostpop) recmetrics_add(&r->mostpop, b->mostpop_p, b->n_mostpop, b->target_p, nt);
    if (!in->model) {
        for (int j = 0; o->rankings && j < b->n_mostpop; j++)
            fprintf(o->rankings, "%d\t%d\t%s\t%d\n", s->user, j + 1, b->mostpop[j], in->mostpop->counts[j]);
        return;
    }
    BeamHyps *h = &b->hyps[i];
    int L = in->data->code_levels;
    for (int j = 0; j < h->n; j++) {
        vocab_code_string(b->ranked[j], in->vocab, h->tokens + (size_t)j * (size_t)L, L);
        b->ranked_p[j] = b->ranked[j];
        if (o->rankings) fprintf(o->rankings, "%d\t%d\t%s\t%.6f\n", s->user, j + 1, b->ranked[j], h->scores[j]);
    }
    recmetrics_add(&r->model, b->ranked_p, h->n, b->target_p, nt);
    beam_hyps_free(h);
}

static void show_progress(Progress *prog, size_t done, size_t n) {
    char text[96];
    snprintf(text, sizeof text, "%zu/%zu users, %.1f users/s", done, n, (double)done / (progress_elapsed(prog) + 1e-9));
    progress_show(prog, "eval", n ? (double)done / (double)n : 1.0, text, done == n);
}

int rec_eval_run(RecEvalResult *r, const RecEvalInputs *in, const RecEvalOptions *o, Error *e) {
    CHECK(o->beam >= 1 && o->batch >= 1, "rec_eval_run: beam %d, batch %d", o->beam, o->batch);
    CHECK(in->model || in->mostpop, "rec_eval_run: nothing to evaluate");
    memset(r, 0, sizeof *r);
    recmetrics_init(&r->model, REC_EVAL_KS, REC_EVAL_N_KS);
    recmetrics_init(&r->mostpop, REC_EVAL_KS, REC_EVAL_N_KS);
    size_t n = o->n_users && (o->pick || o->n_users < in->samples->n) ? o->n_users : in->samples->n;
    int max_t = 1;
    for (size_t u = 0; u < n; u++) {
        int t = pick_sample(in, o, u)->n_targets;
        max_t = t > max_t ? t : max_t;
    }
    Trie trie = {0};
    DeviceSearch bs;
    DeviceModel cpu, *rt = in->runtime;
    if (in->model) {
        if (!rt && device_model_open(&cpu, DEVICE_CPU, "f32", in->model, e)) return -1;
        trie_build(&trie, in->prompter->item_tokens, in->data->n_items, in->prompter->code_levels);
        if (device_search_init(&bs, rt ? rt : &cpu, &trie, o->beam, e)) {
            trie_free(&trie);
            return -1;
        }
        if (o->kv_policy && o->kv_policy->kind != KVP_NONE && bs.device != DEVICE_CPU) {
            device_search_free(&bs);
            trie_free(&trie);
            return err_set(e, "KV policies run on the CPU runtime only (the GPU cache keeps whole layers)");
        }
        bs.cpu.kv_policy = o->kv_policy;
        int with_draft = o->spec && o->spec->draft;
        if (with_draft && o->kv_policy && o->kv_policy->kind != KVP_NONE) {
            device_search_free(&bs);
            trie_free(&trie);
            return err_set(e, "--draft with --kv-policy: speculative beam search keeps the prompt KV whole");
        }
        if (with_draft && device_search_set_draft(&bs, rt ? rt : &cpu, &trie, o->beam, o->spec, e)) {
            device_search_free(&bs);
            trie_free(&trie);
            return -1;
        }
    }
    EvalBufs b;
    bufs_init(&b, in, o, max_t);
    Progress prog;
    progress_init(&prog, o->progress);
    int rc = 0;
    for (size_t u0 = 0; u0 < n && rc == 0; u0 += (size_t)o->batch) {
        int nb = (int)(n - u0 < (size_t)o->batch ? n - u0 : (size_t)o->batch);
        if (in->model && rank_batch(r, &b, &bs, in, o, u0, nb, e)) rc = -1;
        for (int i = 0; i < nb && rc == 0; i++) score_user(r, &b, in, o, pick_sample(in, o, u0 + (size_t)i), i);
        if (rc == 0) show_progress(&prog, u0 + (size_t)nb, n);
    }
    r->n_users = n;
    bufs_free(&b);
    if (in->model) {
        device_search_free(&bs);
        trie_free(&trie);
    }
    return rc;
}
