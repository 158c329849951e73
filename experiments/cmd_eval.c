// cmd_eval.c: `earnest eval`: flags, loading, and the JSON; the evaluation
// itself is rec_eval_run (experiments/rec_eval.h), the same path the
// validation inside `earnest train` takes.
//
// JSON: method, model, data, dataset, split, n_users, beam, (template, k,
// registers, n_layers), recall@K / ndcg@K for K in 1,5,10,20, "mostpop" with
// the same keys, and "efficiency" (a model only): prefill_ms, decode_ms,
// total_ms, prompt_tokens, generated_tokens, tau (generated tokens/s), sigma
// (KV bytes per user), sigma_full, gamma (KV reduction %), kv_bytes_batch_peak,
// batch, omega (speedup over --baseline, from the same split and users), device;
// "kv_policy" (a model only): name, spec and every parameter of --kv-policy
// ({"name": "none"} without one); "prompt_policy" (a model only): name, spec,
// items / ratio and lm, history_items and history_items_kept (means per user);
// efficiency.omega is null without --baseline; run_id, and with --rankings {path, sha256} of the rankings file it wrote
// (`sha256sum R.tsv` tells whether a rankings file belongs to this JSON).
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "datasets/model_vocab.h"
#include "experiments/cli.h"
#include "experiments/commands.h"
#include "experiments/device.h"
#include "experiments/promptpolicy.h"
#include "experiments/rec_eval.h"
#include "runtime/checkpoint.h"
#include "runtime/kvpolicy.h"
#include "runtime/sha256.h"

typedef struct {
    const char *model_dir, *method, *data, *split, *out, *rankings, *tmpl, *baseline, *device_s, *dtype, *kv_policy_s;
    int beam, batch, limit, max_history, threads, allow_nonfinite, allow_long;
    const char *draft_dir, *verify_s;   // --draft, --verify
    int gamma, draft_beams, draft_seed; // 0: not given (defaults 3, 40)
    SpecOptions spec;                   // spec.draft set once the draft is loaded
    Device device;
    KVPolicy kv_policy;  // --kv-policy (kind KVP_NONE without it)
    const char *prompt_policy_s;
    PromptPolicy prompt_policy; // --prompt-policy (kind PP_NONE without it)
} EvalArgs;

// Everything the run holds, released in one place.
typedef struct {
    Dataset d;
    SampleSet ss;
    MostPop mp;
    Model m;
    Model draft;     // --draft
    DeviceModel dm;  // m on the --device runtime
    Vocab v;
    Prompter p;
    Model lm;          // selective's lm=DIR
    Vocab lm_v;
    Prompter lm_p;
    PromptScorer scorer;
    int have_lm, have_lm_vocab, have_lm_prompter;
    int have_data, have_samples, have_mostpop, have_model, have_dm, have_vocab, have_prompter, have_draft;
    AtomicFile out_f, rank_f;
    int out_open, rank_open;
    OutputLock out_lock, rank_lock; // one writer per output
    double baseline_ms;             // --baseline's prefill + decode time
    char run_id[96];                // this run, in the JSON
    char rankings_sha256[65];       // the rankings file this JSON describes
} EvalRun;

static const char *EVAL_ABOUT =
    "  Ranks item codes for each user with targets in the split: constrained beam search over the\n"
    "  dataset's code trie (--model), or the MostPop ranking (--method mostpop; popularity over every\n"
    "  split before the evaluated one). Writes Recall@K and NDCG@K for K in 1,5,10,20 (MostPop's beside\n"
    "  the model's), the efficiency figures (prefill_ms, decode_ms, tau tokens/s, sigma KV bytes per\n"
    "  user, gamma KV reduction % vs a full model of the same shape, omega speedup over --baseline), and\n"
    "  the rankings TSV user<TAB>rank<TAB>code<TAB>score. The model's vocabulary is MODEL_DIR/vocab.txt,\n"
    "  or else built from the dataset (it must then have the model's vocab_size).\n"
    "  --kv-policy NAME[:key=value,...] compresses each prompt's KV after the prefill (a full model only):\n"
    "  streaming (sink=4, rerotate=0|1: kept keys moved to positions 0..C-1, decoding from C), h2o\n"
    "  (recent=half the budget), snapkv (window=32,kernel=5,pool=avg|max), pyramidkv (snapkv's keys +\n"
    "  beta=20), tova, knorm, random (seed=0), none; each takes budget=R (fraction of the prompt kept per\n"
    "  layer and KV head, (0, 1], default 0.5), ratio=R (kvpress's compression ratio: budget=1-R) or tokens=N.\n"
    "  --prompt-policy NAME[:key=value,...] compresses each history before its prompt is built (a model only):\n"
    "  truncate (items=10: the last N items), selective (ratio=0.35: the history items of lowest\n"
    "  self-information removed, whole items; lm=DIR the scoring LM, default the evaluated model; train one\n"
    "  with `earnest train --preset tiny --method finetune --template tiger`), none. Its time counts as\n"
    "  prefill time (efficiency.prompt_policy_ms apart); gamma and sigma_full compare with whole histories.\n"
    "  --draft DRAFT_DIR ranks with speculative beam search (AtSpeed; CPU only): the draft (a full model with\n"
    "  the target's vocabulary, e.g. `earnest train --preset draft`) drafts --gamma levels with --draft-beams\n"
    "  beams, the target verifies them in one forward; --verify strict returns exactly the ordinary beam\n"
    "  search's rankings, relaxed accepts by min(1, p/q) sampling (seeded by --draft-seed). The JSON's\n"
    "  \"draft\" object records target calls per user, accepted levels per round, per-level acceptance and\n"
    "  the draft's share of the time.\n";

static void metrics_json(json_t *o, const RecMetrics *m) {
    for (int i = 0; i < m->n_k; i++) {
        char key[32];
        snprintf(key, sizeof key, "recall@%d", m->ks[i]);
        json_object_set_new(o, key, json_real(recmetrics_recall(m, i)));
        snprintf(key, sizeof key, "ndcg@%d", m->ks[i]);
        json_object_set_new(o, key, json_real(recmetrics_ndcg(m, i)));
    }
}

// Reads the baseline's total time, checking it ran on the same split and users.
static int baseline_total_ms(double *ms, const char *path, const char *split, long n_users, Error *e) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return err_set(e, "%s:%d: %s", path, je.line, je.text);
    json_t *eff = json_object_get(root, "efficiency");
    json_t *pf = eff ? json_object_get(eff, "prefill_ms") : NULL, *dc = eff ? json_object_get(eff, "decode_ms") : NULL;
    json_t *sp = json_object_get(root, "split"), *nu = json_object_get(root, "n_users");
    int rc = 0;
    if (!json_is_number(pf) || !json_is_number(dc))
        rc = err_set(e, "%s: no numeric efficiency.prefill_ms / efficiency.decode_ms (not a model's eval?)", path);
    else if (!json_is_string(sp) || strcmp(json_string_value(sp), split))
        rc = err_set(e, "%s: field 'split' is not '%s': not the same work", path, split);
    else if (!json_is_integer(nu) || json_integer_value(nu) != n_users)
        rc = err_set(e, "%s: field 'n_users' is not %ld: not the same work", path, n_users);
    else
        *ms = json_number_value(pf) + json_number_value(dc);
    json_decref(root);
    return rc;
}

static json_t *efficiency_json(const RecEvalResult *r, const EvalArgs *a, double omega, int have_omega) {
    double total_ms = 1e3 * (r->prefill_s + r->decode_s);
    double nu = r->model.n_users > 0 ? (double)r->n_users : 1.0;
    json_t *eff = json_object();
    json_object_set_new(eff, "prefill_ms", json_real(1e3 * r->prefill_s));
    json_object_set_new(eff, "decode_ms", json_real(1e3 * r->decode_s));
    json_object_set_new(eff, "total_ms", json_real(total_ms));
    json_object_set_new(eff, "prompt_tokens", json_integer((json_int_t)r->prompt_tokens));
    json_object_set_new(eff, "generated_tokens", json_integer((json_int_t)r->gen_tokens));
    json_object_set_new(eff, "tau", json_real(total_ms > 0 ? (double)r->gen_tokens / (total_ms * 1e-3) : 0.0));
    json_object_set_new(eff, "sigma", json_real(r->sigma_sum / nu));
    json_object_set_new(eff, "sigma_full", json_real(r->sigma_full_sum / nu));
    json_object_set_new(eff, "gamma",
                        json_real(r->sigma_full_sum > 0 ? 100.0 * (1.0 - r->sigma_sum / r->sigma_full_sum) : 0.0));
    json_object_set_new(eff, "kv_bytes_batch_peak", json_integer((json_int_t)r->kv_peak));
    json_object_set_new(eff, "batch", json_integer(a->batch));
    json_object_set_new(eff, "omega", have_omega ? json_real(omega) : json_null()); // null without --baseline
    json_object_set_new(eff, "prompt_policy_ms", json_real(1e3 * r->compress_s));
    json_object_set_new(eff, "device", json_string(device_name(a->device)));
    json_object_set_new(eff, "dtype", json_string(a->dtype));
    return eff;
}

static json_t *kv_policy_json(const KVPolicy *p) {
    json_t *o = json_object();
    char spec[256];
    kvpolicy_format(spec, sizeof spec, p);
    json_object_set_new(o, "name", json_string(kvpolicy_name(p->kind)));
    json_object_set_new(o, "spec", json_string(spec));
    KVPolicyParam prm[KVPOLICY_MAX_PARAMS];
    int n = kvpolicy_params(prm, p);
    for (int i = 0; i < n; i++)
        json_object_set_new(o, prm[i].key, prm[i].str ? json_string(prm[i].str)
                                           : strcmp(prm[i].key, "budget") && strcmp(prm[i].key, "beta")
                                                 ? json_integer((json_int_t)prm[i].num) : json_real(prm[i].num));
    return o;
}

static json_t *prompt_policy_json(const PromptPolicy *p, const RecEvalResult *r) {
    json_t *o = json_object();
    char spec[2048];
    promptpolicy_format(spec, sizeof spec, p);
    json_object_set_new(o, "name", json_string(promptpolicy_name(p->kind)));
    json_object_set_new(o, "spec", json_string(spec));
    if (p->kind == PP_TRUNCATE) json_object_set_new(o, "items", json_integer(p->items));
    if (p->kind == PP_SELECTIVE) {
        json_object_set_new(o, "ratio", json_real(p->ratio));
        json_object_set_new(o, "lm", *p->lm ? json_string(p->lm) : json_null()); // null: the evaluated model
    }
    double nu = r->n_users ? (double)r->n_users : 1.0;
    json_object_set_new(o, "history_items", json_real((double)r->hist_items / nu));   // per user, before
    json_object_set_new(o, "history_items_kept", json_real((double)r->hist_kept / nu)); // per user, after
    return o;
}

static json_t *draft_json(const EvalArgs *a, const RecEvalResult *r) {
    const SpecFigures *f = &r->spec;
    json_t *o = json_object();
    double users = f->users ? (double)f->users : 1.0, rounds = f->user_rounds ? (double)f->user_rounds : 1.0;
    double total = r->prefill_s + r->decode_s;
    json_object_set_new(o, "model", json_string(a->draft_dir));
    json_object_set_new(o, "verify", json_string(spec_verify_name(a->spec.verify)));
    json_object_set_new(o, "gamma", json_integer(a->spec.gamma));
    json_object_set_new(o, "draft_beams", json_integer(a->spec.draft_beams));
    json_object_set_new(o, "seed", json_integer((json_int_t)a->spec.seed));
    json_object_set_new(o, "target_calls_per_user", json_real((double)f->user_target_calls / users));
    json_object_set_new(o, "rounds_per_user", json_real((double)f->user_rounds / users));
    json_object_set_new(o, "accepted_levels_per_round", json_real((double)f->accepted_levels / rounds));
    json_object_set_new(o, "tree_nodes_per_round", json_real((double)f->tree_nodes / rounds));
    json_object_set_new(o, "target_calls", json_integer((json_int_t)f->target_calls));
    json_object_set_new(o, "draft_calls", json_integer((json_int_t)f->draft_calls));
    json_object_set_new(o, "draft_ms", json_real(1e3 * f->draft_s));
    json_object_set_new(o, "verify_ms", json_real(1e3 * f->verify_s));
    json_object_set_new(o, "draft_share", json_real(total > 0 ? f->draft_s / total : 0.0));
    json_t *lv = json_object();
    for (int l = 0; l <= SPEC_MAX_LEVELS; l++) {
        if (!f->level_tried[l]) continue;
        char key[16];
        snprintf(key, sizeof key, "%d", l);
        json_object_set_new(lv, key, json_real((double)f->level_accepted[l] / (double)f->level_tried[l]));
    }
    json_object_set_new(o, "level_acceptance", lv);
    return o;
}

static json_t *result_json(const EvalRun *run, const EvalArgs *a, const RecEvalResult *r, PromptTemplate tmpl,
                           double omega, int have_omega) {
    const ModelConfig *c = &run->m.config;
    json_t *root = json_object();
    json_object_set_new(root, "method", json_string(a->model_dir ? config_method_name(c->method) : "mostpop"));
    if (a->model_dir) json_object_set_new(root, "model", json_string(a->model_dir));
    json_object_set_new(root, "data", json_string(a->data));
    json_object_set_new(root, "dataset", json_string(run->d.name));
    json_object_set_new(root, "split", json_string(a->split));
    json_object_set_new(root, "n_users", json_integer(a->model_dir ? r->model.n_users : r->mostpop.n_users));
    json_object_set_new(root, "beam", json_integer(a->beam));
    json_object_set_new(root, "run_id", json_string(run->run_id));
    if (a->rankings) {
        json_t *rk = json_object();
        json_object_set_new(rk, "path", json_string(a->rankings));
        json_object_set_new(rk, "sha256", json_string(run->rankings_sha256));
        json_object_set_new(root, "rankings", rk);
    }
    if (a->model_dir) {
        json_object_set_new(root, "template", json_string(prompt_template_name(tmpl)));
        json_object_set_new(root, "k", json_integer(c->layer_split_k));
        json_object_set_new(root, "prefix_regs", json_integer(c->n_prefix_regs));
        json_object_set_new(root, "suffix_regs", json_integer(c->n_suffix_regs));
        json_object_set_new(root, "n_layers", json_integer(c->n_layers));
        json_object_set_new(root, "kv_policy", kv_policy_json(&a->kv_policy));
        json_object_set_new(root, "prompt_policy", prompt_policy_json(&a->prompt_policy, r));
    }
    metrics_json(root, a->model_dir ? &r->model : &r->mostpop);
    json_t *mpo = json_object();
    metrics_json(mpo, &r->mostpop);
    json_object_set_new(root, "mostpop", mpo);
    if (a->model_dir) json_object_set_new(root, "efficiency", efficiency_json(r, a, omega, have_omega));
    if (a->draft_dir) json_object_set_new(root, "draft", draft_json(a, r));
    return root;
}

// Selective's scoring LM: lm=DIR with its own vocabulary and template, or the evaluated model.
static int load_scorer(EvalRun *run, const EvalArgs *a, Error *e) {
    const PromptPolicy *pp = &a->prompt_policy;
    run->scorer = (PromptScorer){&run->m, &run->p, {0}};
    if (pp->kind != PP_SELECTIVE || !*pp->lm) return 0;
    if (model_load_flags(&run->lm, pp->lm, a->allow_nonfinite ? MODEL_LOAD_ALLOW_NONFINITE : 0, e))
        return err_prefix(e, "--prompt-policy lm: ");
    run->have_lm = 1;
    model_allow_long(&run->lm, a->allow_long, "eval");
    PromptTemplate t;
    if (prompt_template_for_model(&t, NULL, run->lm.config.prompt_template, pp->lm, e) ||
        model_vocab_load(&run->lm_v, pp->lm, &run->d, &run->lm.config, e))
        return err_prefix(e, "--prompt-policy lm: ");
    run->have_lm_vocab = 1;
    if (prompter_init(&run->lm_p, &run->lm_v, &run->d, t, run->lm.config.n_prefix_regs, run->lm.config.n_suffix_regs, e))
        return err_prefix(e, "--prompt-policy lm: %s with dataset %s: ", pp->lm, a->data);
    run->have_lm_prompter = 1;
    run->scorer = (PromptScorer){&run->lm, &run->lm_p, {0}};
    return 0;
}

// The model, its vocabulary and its prompts.
static int load_model(EvalRun *run, const EvalArgs *a, PromptTemplate *tmpl, Error *e) {
    if (model_load_flags(&run->m, a->model_dir, a->allow_nonfinite ? MODEL_LOAD_ALLOW_NONFINITE : 0, e)) return -1;
    run->have_model = 1;
    model_allow_long(&run->m, a->allow_long, "eval");
    if (device_model_open(&run->dm, a->device, a->dtype, &run->m, e)) return -1;
    run->have_dm = 1;
    if (a->draft_dir) {
        if (model_load_flags(&run->draft, a->draft_dir, a->allow_nonfinite ? MODEL_LOAD_ALLOW_NONFINITE : 0, e))
            return err_prefix(e, "--draft: ");
        run->have_draft = 1;
        model_allow_long(&run->draft, a->allow_long, "eval");
    }
    if (prompt_template_for_model(tmpl, a->tmpl, run->m.config.prompt_template, a->model_dir, e)) return -1;
    if (model_vocab_load(&run->v, a->model_dir, &run->d, &run->m.config, e)) return -1;
    run->have_vocab = 1;
    if (prompter_init_form(&run->p, &run->v, &run->d, *tmpl, run->m.config.n_prefix_regs,
                           run->m.config.n_suffix_regs, prompt_form_for_method(run->m.config.method), e))
        return err_prefix(e, "%s with dataset %s: ", a->model_dir, a->data);
    run->have_prompter = 1;
    return load_scorer(run, a, e);
}

// Loads everything and opens the outputs (so that a bad path fails before the work).
static int eval_setup(EvalRun *run, const EvalArgs *a, Split split, PromptTemplate *tmpl, Error *e) {
    if (a->rankings && !strcmp(a->rankings, a->out))
        return err_set(e, "--out and --rankings name the same file '%s'", a->out);
    if (output_lock(&run->out_lock, a->out, e) || (a->rankings && output_lock(&run->rank_lock, a->rankings, e)))
        return -1;
    if (dataset_load(&run->d, a->data, e)) return -1;
    run->have_data = 1;
    samples_build(&run->ss, &run->d, split, a->max_history);
    run->have_samples = 1;
    if (run->ss.n == 0)
        return err_set(e, "%s: no user has %s targets: nothing to evaluate", a->data, a->split);
    long n_users = a->limit && (size_t)a->limit < run->ss.n ? a->limit : (long)run->ss.n;
    if (a->baseline && baseline_total_ms(&run->baseline_ms, a->baseline, a->split, n_users, e)) return -1;
    mostpop_build(&run->mp, &run->d, split);
    run->have_mostpop = 1;
    if (a->model_dir && load_model(run, a, tmpl, e)) return -1;
    if (atomic_open(&run->out_f, a->out, e)) return -1;
    run->out_open = 1;
    if (a->rankings) {
        if (atomic_open(&run->rank_f, a->rankings, e)) return -1;
        run->rank_open = 1;
    }
    return 0;
}

static void eval_free(EvalRun *run) {
    if (run->rank_open) atomic_abort(&run->rank_f);
    if (run->out_open) atomic_abort(&run->out_f);
    if (run->have_prompter) prompter_free(&run->p);
    forward_scratch_free(&run->scorer.scratch);
    if (run->have_lm_prompter) prompter_free(&run->lm_p);
    if (run->have_lm_vocab) vocab_free(&run->lm_v);
    if (run->have_lm) model_free(&run->lm);
    if (run->have_vocab) vocab_free(&run->v);
    if (run->have_dm) device_model_close(&run->dm);
    if (run->have_model) model_free(&run->m);
    if (run->have_draft) model_free(&run->draft);
    if (run->have_mostpop) mostpop_free(&run->mp);
    if (run->have_samples) samples_free(&run->ss);
    if (run->have_data) dataset_free(&run->d);
    output_unlock(&run->rank_lock); // last: the outputs are settled
    output_unlock(&run->out_lock);
}

static int write_json(EvalRun *run, json_t *root, const char *path, Error *e) {
    run->out_open = 0;
    if (json_dumpf(root, run->out_f.f, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) || fputc('\n', run->out_f.f) == EOF) {
        atomic_abort(&run->out_f);
        return err_set(e, "%s: write failed", path);
    }
    return atomic_commit(&run->out_f, e);
}

// Scores, then commits the rankings and the JSON.
static int eval_run(EvalRun *run, const EvalArgs *a, PromptTemplate tmpl, Error *e) {
    RecEvalInputs in = {a->model_dir ? &run->m : NULL, a->model_dir ? &run->dm : NULL, &run->v, &run->p, &run->mp,
                        &run->d, &run->ss};
    RecEvalOptions o;
    rec_eval_options_default(&o);
    o.beam = a->beam;
    o.batch = a->batch;
    o.n_users = (size_t)a->limit;
    o.rankings = run->rank_open ? run->rank_f.f : NULL;
    o.progress = 1;
    o.kv_policy = &a->kv_policy;
    o.prompt_policy = &a->prompt_policy;
    o.scorer = &run->scorer;
    SpecOptions spec = a->spec;
    spec.draft = run->have_draft ? &run->draft : NULL;
    o.spec = &spec;
    RecEvalResult r;
    if (rec_eval_run(&r, &in, &o, e)) return -1;
    double total_ms = 1e3 * (r.prefill_s + r.decode_s);
    double omega = a->baseline && total_ms > 0 ? run->baseline_ms / total_ms : 0;
    if (run->rank_open) { // its digest goes in the JSON, so a reader can tell the two belong together
        if (fflush(run->rank_f.f) != 0) return err_set(e, "%s: write failed: %s", a->rankings, strerror(errno));
        if (sha256_file_hex(run->rankings_sha256, run->rank_f.tmp, e)) return -1;
        run->rank_open = 0;
        if (atomic_commit(&run->rank_f, e)) return -1;
    }
    json_t *root = result_json(run, a, &r, tmpl, omega, a->baseline != NULL);
    int rc = write_json(run, root, a->out, e);
    json_decref(root);
    if (rc) return -1;
    const RecMetrics *m = a->model_dir ? &r.model : &r.mostpop;
    printf("%s %s: %ld users  recall@10 %.4f  ndcg@10 %.4f  (mostpop %.4f / %.4f)", a->model_dir ? a->model_dir : "mostpop",
           a->split, m->n_users, recmetrics_recall_at(m, 10), recmetrics_ndcg_at(m, 10),
           recmetrics_recall_at(&r.mostpop, 10), recmetrics_ndcg_at(&r.mostpop, 10));
    if (a->model_dir) printf("  prefill %.1f ms  decode %.1f ms", 1e3 * r.prefill_s, 1e3 * r.decode_s);
    if (a->draft_dir)
        printf("  draft %s: %.2f target calls/user, %.2f accepted levels/round, draft %.0f%% of the time",
               spec_verify_name(a->spec.verify), (double)r.spec.user_target_calls / (double)(r.spec.users ? r.spec.users : 1),
               (double)r.spec.accepted_levels / (double)(r.spec.user_rounds ? r.spec.user_rounds : 1),
               100.0 * r.spec.draft_s / (r.prefill_s + r.decode_s > 0 ? r.prefill_s + r.decode_s : 1.0));
    printf("\n");
    return 0;
}

// --kv-policy: parses it and refuses it where it makes no sense (MostPop, a
// model that is not a full one), before any lock or output. Returns 0 or -1
// after the message (exit status 2, like the other flag errors).
static int kv_policy_check(EvalArgs *a) {
    Error e;
    kvpolicy_default(&a->kv_policy, KVP_NONE);
    if (!a->kv_policy_s) return 0;
    if (kvpolicy_parse(&a->kv_policy, a->kv_policy_s, &e)) {
        fprintf(stderr, "earnest eval: --kv-policy: %s\n", e.msg);
        return -1;
    }
    if (a->kv_policy.kind == KVP_NONE) return 0;
    if (!a->model_dir) {
        fprintf(stderr, "earnest eval: --kv-policy needs --model (MostPop has no KV cache)\n");
        return -1;
    }
    char path[4096];
    ModelConfig c;
    // An unreadable config is left to the model loading, which names the problem.
    if (path_join(path, sizeof path, a->model_dir, "config.json") == 0 && config_load(&c, path, &e) == 0 &&
        c.method != METHOD_FINETUNE) {
        fprintf(stderr, "earnest eval: --kv-policy: %s applies to a full (finetune) model; the method of %s is %s "
                "(its layers above k hold no prompt KV to compress)\n", kvpolicy_name(a->kv_policy.kind),
                a->model_dir, config_method_name(c.method));
        return -1;
    }
    return 0;
}

// The method recorded in DIR/config.json; -1 when it cannot be read (left to the loading, which names the problem).
static int method_of(const char *dir) {
    char path[4096];
    ModelConfig c;
    Error e;
    if (path_join(path, sizeof path, dir, "config.json") || config_load(&c, path, &e)) return -1;
    return (int)c.method;
}

// --prompt-policy: parsed and refused where it makes no sense, before any lock
// or output. Returns 0 or -1 after the message (exit status 2).
static int prompt_policy_check(EvalArgs *a) {
    Error e;
    PromptPolicy *p = &a->prompt_policy;
    promptpolicy_default(p, PP_NONE);
    if (!a->prompt_policy_s) return 0;
    if (promptpolicy_parse(p, a->prompt_policy_s, &e)) {
        fprintf(stderr, "earnest eval: --prompt-policy: %s\n", e.msg);
        return -1;
    }
    if (p->kind == PP_NONE) return 0;
    if (!a->model_dir) {
        fprintf(stderr, "earnest eval: --prompt-policy needs --model (MostPop reads no prompt)\n");
        return -1;
    }
    if (p->kind != PP_SELECTIVE) return 0;
    const char *lm = *p->lm ? p->lm : a->model_dir;
    int method = method_of(lm);
    if (*p->lm && method < 0) {
        fprintf(stderr, "earnest eval: --prompt-policy: selective: lm '%s' has no readable config.json\n", p->lm);
        return -1;
    }
    if (method >= 0 && method != METHOD_FINETUNE) {
        fprintf(stderr, "earnest eval: --prompt-policy: selective scores with %s%s, whose method is %s: the scoring "
                "LM must be a full (finetune) model%s\n", *p->lm ? "lm " : "the evaluated model ", lm,
                config_method_name((ModelMethod)method), *p->lm ? "" : " (give lm=DIR)");
        return -1;
    }
    return 0;
}

// --draft and its flags, before any lock or output (exit status 2 after the message).
static int draft_check(EvalArgs *a) {
    int any = a->verify_s || a->gamma || a->draft_beams || a->draft_seed;
    a->spec = (SpecOptions){NULL, SPEC_VERIFY_STRICT, a->gamma ? a->gamma : SPEC_DEFAULT_GAMMA,
                            a->draft_beams ? a->draft_beams : SPEC_DEFAULT_DRAFT_BEAMS, (uint64_t)a->draft_seed};
    if (!a->draft_dir) {
        if (any) fprintf(stderr, "earnest eval: --verify, --gamma, --draft-beams and --draft-seed need --draft DRAFT_DIR\n");
        return any ? -1 : 0;
    }
    if (!a->model_dir) {
        fprintf(stderr, "earnest eval: --draft needs --model (the target it drafts for)\n");
        return -1;
    }
    if (a->verify_s) CHECK(spec_verify_parse(&a->spec.verify, a->verify_s) == 0, "--verify passed the choices");
    if (a->kv_policy.kind != KVP_NONE) {
        fprintf(stderr, "earnest eval: --draft with --kv-policy: speculative beam search keeps the prompt KV whole\n");
        return -1;
    }
    Error e;
    char path[4096];
    ModelConfig c;
    if (path_join(path, sizeof path, a->model_dir, "config.json")) {
        fprintf(stderr, "earnest eval: --model: path too long\n");
        return -1;
    }
    if (config_load(&c, path, &e)) {
        fprintf(stderr, "earnest eval: --model: %s\n", e.msg);
        return -1;
    }
    if (spec_flags_check(a->draft_dir, a->model_dir, c.vocab_size, a->spec.gamma, a->spec.draft_beams, a->beam,
                         a->device, &e)) {
        fprintf(stderr, "earnest eval: %s\n", e.msg);
        return -1;
    }
    return 0;
}

int cmd_eval(int argc, char **argv) {
    EvalArgs a = {.device_s = "cpu", .dtype = "f32", .split = "test", .beam = 20, .batch = 16, .max_history = SAMPLES_MAX_HISTORY};
    CliFlag flags[] = {
        {"--model", CLI_STRING, &a.model_dir, .meta = "DIR", .help = "the model to evaluate"},
        {"--method", CLI_STRING, &a.method, .choices = "mostpop", .help = "a baseline instead of --model"},
        {"--data", CLI_STRING, &a.data, .meta = "DIR", .required = 1, .help = "prepared dataset directory"},
        {"--split", CLI_STRING, &a.split, .choices = "test|valid", .help = "the split scored"},
        {"--out", CLI_STRING, &a.out, .meta = "E.json", .required = 1, .help = "metrics JSON (atomic)"},
        {"--rankings", CLI_STRING, &a.rankings, .meta = "R.tsv", .help = "rankings TSV, one line per returned beam"},
        {"--beam", CLI_INT, &a.beam, .lo = 1, .hi = 1024, .help = "beam width = codes ranked per user"},
        {"--batch", CLI_INT, &a.batch, .lo = 1, .hi = 4096, .help = "users per beam-search call"},
        {"--limit-users", CLI_INT, &a.limit, .lo = 1, .hi = 1 << 30, .help = "score the first N users only"},
        {"--template", CLI_STRING, &a.tmpl, .choices = "lcrec|tiger", .help = "prompt template (default: the model's)"},
        {"--max-history", CLI_INT, &a.max_history, .lo = 1, .hi = 1 << 20, .help = "history items kept per prompt"},
        {"--threads", CLI_INT, &a.threads, .lo = 1, .hi = 1024, .help = "threads (default: EARNEST_THREADS or all cores)"},
        {"--allow-nonfinite", CLI_FLAG, &a.allow_nonfinite, .help = "load a model whose weights are not all finite"},
        {"--allow-long", CLI_FLAG, &a.allow_long, .help = "run past the model's max_position_embeddings (with a warning)"},
        {"--baseline", CLI_STRING, &a.baseline, .meta = "E_full.json", .help = "the full model's eval: gives omega"},
        {"--device", CLI_STRING, &a.device_s, .choices = DEVICE_CHOICES, .help = "runtime that runs the model"},
        {"--dtype", CLI_STRING, &a.dtype, .choices = DTYPE_CHOICES, .help = "compute dtype (bf16: --device cuda only)"},
        {"--kv-policy", CLI_STRING, &a.kv_policy_s, .meta = "NAME[:k=v,...]",
         .help = "KV-cache policy applied after the prefill (full models; see above)"},
        {"--prompt-policy", CLI_STRING, &a.prompt_policy_s, .meta = "NAME[:k=v,...]",
         .help = "prompt compression before the prefill (truncate, selective; see above)"},
        {"--draft", CLI_STRING, &a.draft_dir, .meta = "DRAFT_DIR", .help = "speculative beam search with this draft"},
        {"--verify", CLI_STRING, &a.verify_s, .choices = "strict|relaxed", .help = "verification (with --draft; default strict)"},
        {"--gamma", CLI_INT, &a.gamma, .lo = 1, .hi = SPEC_MAX_LEVELS, .help = "levels drafted per round (with --draft; default 3)"},
        {"--draft-beams", CLI_INT, &a.draft_beams, .lo = 1, .hi = 4096, .help = "draft beams (with --draft; default 40)"},
        {"--draft-seed", CLI_INT, &a.draft_seed, .lo = 0, .hi = 1 << 30, .help = "seed of relaxed verification's draws"},
    };
    CliSpec cli = {.verb = "eval", .synopsis = "(--model DIR | --method mostpop) --data DIR --out E.json [options]",
                   .about = EVAL_ABOUT, .flags = flags, .n_flags = CLI_COUNT(flags)};
    int st = cli_parse(&cli, argc, argv);
    if (st >= 0) return st;
    if (!!a.model_dir == !!a.method) {
        fprintf(stderr, "earnest eval: give exactly one of --model DIR and --method mostpop (earnest eval --help)\n");
        return 2;
    }
    {
        Error de;
        if (device_select(&a.device, a.device_s, &de) || device_dtype_check(a.device, a.dtype, &de)) { // before any work
            cli_fail("eval", &de);
            return 2;
        }
    }
    if (kv_policy_check(&a) || prompt_policy_check(&a)) return 2;
    if (a.kv_policy.kind != KVP_NONE && a.device == DEVICE_CUDA) {
        fprintf(stderr, "earnest eval: --kv-policy runs on the CPU runtime only (the GPU KV cache keeps whole layers); "
                        "use --device cpu\n");
        return 2;
    }
    if (draft_check(&a)) return 2;
    if (a.baseline && !a.model_dir) {
        fprintf(stderr, "earnest eval: --baseline needs --model (MostPop has no timing)\n");
        return 2;
    }
    Split split;
    CHECK(split_parse(a.split, &split) == 0, "eval: split '%s' passed the choices", a.split);
    threads_init(a.threads);
    PromptTemplate tmpl = PROMPT_TEMPLATE_LCREC;
    EvalRun run;
    memset(&run, 0, sizeof run);
    run.out_lock.fd = run.rank_lock.fd = -1;
    struct timespec now;
    CHECK(clock_gettime(CLOCK_REALTIME, &now) == 0, "clock_gettime: %s", strerror(errno));
    snprintf(run.run_id, sizeof run.run_id, "%ld-%lld.%09ld", (long)getpid(), (long long)now.tv_sec, now.tv_nsec);
    Error e;
    int rc = eval_setup(&run, &a, split, &tmpl, &e) || eval_run(&run, &a, tmpl, &e) ? cli_fail("eval", &e) : 0;
    eval_free(&run);
    return rc;
}
