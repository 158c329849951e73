// cmd_eval.c: `earnest eval` ranks item codes for every test (or valid) user
// with constrained beam search (runtime/beam.h) or MostPop, and writes Recall@K
// and NDCG@K (analysis/recmetrics.h), MostPop beside the model, the efficiency
// figures, and optionally the rankings TSV.
//
// Efficiency (EARN's names, DESIGN.md "Metrics"):
//   prefill_ms / decode_ms  wall time of the prefill forwards / of everything after
//                           them (beam selection and decode forwards), summed over batches
//   tau                     generated tokens (beams x code tokens, all users) per second
//                           of prefill + decode time
//   sigma                   KV bytes after the last generated token, per user (mean):
//                           prompt KV once + each beam's own generated tokens
//   gamma                   KV reduction %, 100 * (1 - sigma / sigma_full), sigma_full the
//                           closed form for a full model of the same shape on the same
//                           prompts without registers
//   omega                   (prefill + decode time of the baseline) / (ours), only with
//                           --baseline E_full.json from the same split and users
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis/recmetrics.h"
#include "datasets/dataset.h"
#include "datasets/mostpop.h"
#include "datasets/model_vocab.h"
#include "datasets/prompt.h"
#include "datasets/samples.h"
#include "datasets/trie.h"
#include "datasets/vocab.h"
#include "experiments/cli.h"
#include "experiments/commands.h"
#include "runtime/beam.h"
#include "runtime/checkpoint.h"
#include "runtime/progress.h"

static const char *EVAL_USAGE =
    "usage: earnest eval (--model DIR | --method mostpop) --data DIR [--split test|valid] [--beam 20]\n"
    "                    [--batch 16] [--limit-users N] [--template lcrec|tiger] [--max-history 20]\n"
    "                    [--threads N] [--baseline E_full.json] --out E.json [--rankings R.tsv]\n"
    "  Ranks item codes for each user with targets in the split: constrained beam search over the\n"
    "  dataset's code trie (--model), or the MostPop ranking (--method mostpop). Writes Recall@K and\n"
    "  NDCG@K for K in 1,5,10,20 (MostPop's beside the model's), the efficiency figures (prefill_ms,\n"
    "  decode_ms, tau tokens/s, sigma KV bytes per user, gamma KV reduction %% vs a full model of the\n"
    "  same shape, omega speedup over --baseline), and the rankings TSV user<TAB>rank<TAB>code<TAB>score.\n"
    "  The model's vocabulary is MODEL_DIR/vocab.txt, or else built from the dataset (it must then\n"
    "  have the model's vocab_size).\n";

static const int EVAL_KS[4] = {1, 5, 10, 20};

// Distinct target items of a sample as code strings: out [n_targets][DATASET_CODE_STR_MAX].
static int target_codes(char (*out)[DATASET_CODE_STR_MAX], const char **ptr, const Dataset *d, const Sample *s) {
    int n = 0;
    for (int i = 0; i < s->n_targets; i++) {
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= s->targets[j] == s->targets[i];
        if (dup) continue;
        dataset_code_string(out[n], d, s->targets[i]);
        ptr[n] = out[n];
        n++;
    }
    return n;
}

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

// The model's vocabulary: MODEL_DIR/vocab.txt, or built from the dataset.
int cmd_eval(int argc, char **argv) {
    const char *model_dir = NULL, *method = NULL, *data = NULL, *split_s = "test", *out = NULL, *rank_path = NULL;
    const char *tmpl_s = NULL, *baseline = NULL; // template: the model's own unless --template

    int W = BEAM_DEFAULT_WIDTH, batch = 16, limit = 0, max_hist = SAMPLES_MAX_HISTORY, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(EVAL_USAGE, stdout); return 0; }
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 2; } while (0)
#define INT(flag, lo, hi, dst) else if (!strcmp(a, flag)) { VAL(); if (cli_int("eval", flag, v, lo, hi, &dst)) return 2; }
        else if (!strcmp(a, "--model")) { VAL(); model_dir = v; }
        else if (!strcmp(a, "--method")) { VAL(); method = v; }
        else if (!strcmp(a, "--data")) { VAL(); data = v; }
        else if (!strcmp(a, "--split")) { VAL(); split_s = v; }
        else if (!strcmp(a, "--out")) { VAL(); out = v; }
        else if (!strcmp(a, "--rankings")) { VAL(); rank_path = v; }
        else if (!strcmp(a, "--template")) { VAL(); tmpl_s = v; }
        else if (!strcmp(a, "--baseline")) { VAL(); baseline = v; }
        INT("--beam", 1, 1024, W)
        INT("--batch", 1, 4096, batch)
        INT("--limit-users", 1, 1 << 30, limit)
        INT("--max-history", 1, 1 << 20, max_hist)
        INT("--threads", 1, 1024, threads)
        else {
            fprintf(stderr, "earnest eval: unknown option '%s'\n%s", a, EVAL_USAGE);
            return 2;
        }
#undef INT
#undef VAL
    }
    if (!!model_dir == !!method) {
        fprintf(stderr, "earnest eval: give exactly one of --model DIR and --method mostpop\n%s", EVAL_USAGE);
        return 2;
    }
    if (method && strcmp(method, "mostpop")) {
        fprintf(stderr, "earnest eval: --method: unknown method '%s' (known: mostpop; models go with --model)\n", method);
        return 2;
    }
    if (!data || !out) {
        fprintf(stderr, "earnest eval: --data and --out are required\n%s", EVAL_USAGE);
        return 2;
    }
    Split split;
    if (split_parse(split_s, &split) || split == SPLIT_TRAIN) {
        fprintf(stderr, "earnest eval: --split: '%s' is not test or valid\n", split_s);
        return 2;
    }
    PromptTemplate tmpl = PROMPT_TEMPLATE_LCREC;
    if (tmpl_s && prompt_template_parse(tmpl_s, &tmpl)) {
        fprintf(stderr, "earnest eval: --template: unknown template '%s' (known: lcrec, tiger)\n", tmpl_s);
        return 2;
    }
    if (baseline && !model_dir) {
        fprintf(stderr, "earnest eval: --baseline needs --model (MostPop has no timing)\n");
        return 2;
    }
    threads_init(threads);

    Error e;
    Dataset d;
    if (dataset_load(&d, data, &e)) return cli_fail("eval", &e);
    SampleSet ss;
    samples_build(&ss, &d, split, max_hist);
    size_t n_users = ss.n;
    if (limit && (size_t)limit < n_users) n_users = (size_t)limit;
    MostPop mp;
    mostpop_build(&mp, &d);

    int rc = 0, have_model = model_dir != NULL;
    Model m;
    Vocab voc;
    Prompter pr;
    Trie trie;
    BeamSearch bs;
    int *item_tokens = NULL;
    memset(&m, 0, sizeof m);
    if (have_model) {
        if (model_load(&m, model_dir, &e)) { rc = cli_fail("eval", &e); goto done_data; }
        if (prompt_template_for_model(&tmpl, tmpl_s, m.config.prompt_template, model_dir, &e)) {
            model_free(&m);
            rc = cli_fail("eval", &e);
            goto done_data;
        }
        if (model_vocab_load(&voc, model_dir, &d, &m.config, &e)) { rc = cli_fail("eval", &e); model_free(&m); goto done_data; }
        if (prompter_init(&pr, &voc, &d, tmpl, m.config.n_prefix_regs, m.config.n_suffix_regs, &e)) {
            err_prefix(&e, "%s with dataset %s: ", model_dir, data);
            rc = cli_fail("eval", &e);
            vocab_free(&voc); model_free(&m);
            goto done_data;
        }
        trie_build(&trie, pr.item_tokens, d.n_items, d.code_levels);
        if (beam_search_init(&bs, &m, &trie, W, &e)) {
            rc = cli_fail("eval", &e);
            trie_free(&trie); prompter_free(&pr); vocab_free(&voc); model_free(&m);
            goto done_data;
        }
    }

    {
        AtomicFile rf;
        int rank_open = 0;
        if (rank_path) {
            if (atomic_open(&rf, rank_path, &e)) { rc = cli_fail("eval", &e); goto done_model; }
            rank_open = 1;
        }
        RecMetrics mm, mpm;
        recmetrics_init(&mm, EVAL_KS, 4);
        recmetrics_init(&mpm, EVAL_KS, 4);
        // MostPop's ranking is the same for every user: its top W codes.
        int n_mp = mp.n < W ? mp.n : W;
        char (*mp_codes)[DATASET_CODE_STR_MAX] = xmalloc((size_t)(n_mp ? n_mp : 1) * DATASET_CODE_STR_MAX);
        const char **mp_ptr = xmalloc((size_t)(n_mp ? n_mp : 1) * sizeof(char *));
        for (int i = 0; i < n_mp; i++) { dataset_code_string(mp_codes[i], &d, mp.items[i]); mp_ptr[i] = mp_codes[i]; }
        int max_t = 1;
        for (size_t u = 0; u < n_users; u++) max_t = ss.samples[u].n_targets > max_t ? ss.samples[u].n_targets : max_t;
        char (*tc)[DATASET_CODE_STR_MAX] = xmalloc((size_t)max_t * DATASET_CODE_STR_MAX);
        const char **tp = xmalloc((size_t)max_t * sizeof(char *));
        char (*bc)[DATASET_CODE_STR_MAX] = xmalloc((size_t)W * DATASET_CODE_STR_MAX);
        const char **bp = xmalloc((size_t)W * sizeof(char *));

        double prefill_s = 0, decode_s = 0;
        size_t gen = 0, prompt_toks = 0;
        double sigma_sum = 0, sigma_full_sum = 0;
        size_t kv_peak = 0;
        Progress prog;
        progress_init(&prog, 1);
        int B = batch;
        int **prompts = xmalloc((size_t)B * sizeof(int *)), *lens = xmalloc((size_t)B * sizeof(int));
        uint8_t **kinds = xmalloc((size_t)B * sizeof(uint8_t *));
        BeamHyps *hyps = xcalloc((size_t)B, sizeof(BeamHyps));
        for (int i = 0; i < B; i++) { prompts[i] = NULL; kinds[i] = NULL; }

        for (size_t u0 = 0; u0 < n_users && !rc; u0 += (size_t)B) {
            int nb = (int)(n_users - u0 < (size_t)B ? n_users - u0 : (size_t)B);
            if (have_model) {
                for (int i = 0; i < nb; i++) {
                    const Sample *s = &ss.samples[u0 + (size_t)i];
                    int n = prompter_length(&pr, s->n_history, 0);
                    prompts[i] = xrealloc(prompts[i], (size_t)n * sizeof(int));
                    kinds[i] = xrealloc(kinds[i], (size_t)n);
                    lens[i] = prompter_build(prompts[i], kinds[i], &pr, s->history, s->n_history, 0);
                }
                if (beam_search_run(hyps, &bs, nb, (const int *const *)prompts, (const uint8_t *const *)kinds, lens,
                                    &e)) {
                    rc = cli_fail("eval", &e);
                    break;
                }
                prefill_s += bs.prefill_s;
                decode_s += bs.decode_s;
                gen += bs.gen_tokens;
                prompt_toks += bs.prompt_tokens;
                sigma_sum += (double)bs.kv_bytes;
                kv_peak = bs.kv_bytes > kv_peak ? bs.kv_bytes : kv_peak;
                ModelConfig full = m.config;
                full.method = METHOD_FINETUNE;
                int regs = m.config.n_prefix_regs + m.config.n_suffix_regs;
                for (int i = 0; i < nb; i++)
                    sigma_full_sum += (double)beam_kv_bytes_closed_form(&full, lens[i] - regs, 0, hyps[i].n,
                                                                        d.code_levels - 1);
            }
            for (int i = 0; i < nb; i++) {
                const Sample *s = &ss.samples[u0 + (size_t)i];
                int nt = target_codes(tc, tp, &d, s);
                recmetrics_add(&mpm, mp_ptr, n_mp, tp, nt);
                if (have_model) {
                    BeamHyps *h = &hyps[i];
                    for (int j = 0; j < h->n; j++) {
                        size_t at = 0;
                        bc[j][0] = 0;
                        for (int k = 0; k < d.code_levels; k++) {
                            const char *tok = vocab_token(&voc, h->tokens[(size_t)j * d.code_levels + k]);
                            size_t n = strlen(tok);
                            if (at + n + 1 > DATASET_CODE_STR_MAX) break;
                            memcpy(bc[j] + at, tok, n + 1);
                            at += n;
                        }
                        bp[j] = bc[j];
                        if (rank_open) fprintf(rf.f, "%d\t%d\t%s\t%.6f\n", s->user, j + 1, bc[j], h->scores[j]);
                    }
                    recmetrics_add(&mm, bp, h->n, tp, nt);
                    beam_hyps_free(h);
                } else if (rank_open) {
                    for (int j = 0; j < n_mp; j++)
                        fprintf(rf.f, "%d\t%d\t%s\t%d\n", s->user, j + 1, mp_codes[j], mp.counts[j]);
                }
            }
            size_t done = u0 + (size_t)nb;
            char text[96];
            snprintf(text, sizeof text, "%zu/%zu users, %.1f users/s", done, n_users,
                     (double)done / (progress_elapsed(&prog) + 1e-9));
            progress_show(&prog, "eval", n_users ? (double)done / (double)n_users : 1.0, text, done == n_users);
        }
        for (int i = 0; i < B; i++) { free(prompts[i]); free(kinds[i]); }
        free(prompts); free(kinds); free(lens); free(hyps);

        if (!rc && rank_open) {
            rank_open = 0;
            if (atomic_commit(&rf, &e)) rc = cli_fail("eval", &e);
        }
        if (rank_open) atomic_abort(&rf);

        double omega = 0;
        int have_omega = 0;
        double total_ms = 1e3 * (prefill_s + decode_s);
        if (!rc && baseline) {
            double base_ms = 0;
            if (baseline_total_ms(&base_ms, baseline, split_name(split), mm.n_users, &e)) rc = cli_fail("eval", &e);
            else { omega = total_ms > 0 ? base_ms / total_ms : 0; have_omega = 1; }
        }
        if (!rc) {
            json_t *root = json_object();
            json_object_set_new(root, "method", json_string(have_model ? config_method_name(m.config.method) : "mostpop"));
            if (have_model) json_object_set_new(root, "model", json_string(model_dir));
            json_object_set_new(root, "data", json_string(data));
            json_object_set_new(root, "dataset", json_string(d.name));
            json_object_set_new(root, "split", json_string(split_name(split)));
            json_object_set_new(root, "n_users", json_integer(have_model ? mm.n_users : mpm.n_users));
            json_object_set_new(root, "beam", json_integer(W));
            if (have_model) {
                json_object_set_new(root, "template", json_string(prompt_template_name(tmpl)));
                json_object_set_new(root, "k", json_integer(m.config.layer_split_k));
                json_object_set_new(root, "prefix_regs", json_integer(m.config.n_prefix_regs));
                json_object_set_new(root, "suffix_regs", json_integer(m.config.n_suffix_regs));
                json_object_set_new(root, "n_layers", json_integer(m.config.n_layers));
            }
            metrics_json(root, have_model ? &mm : &mpm);
            json_t *mpo = json_object();
            metrics_json(mpo, &mpm);
            json_object_set_new(root, "mostpop", mpo);
            if (have_model) {
                double nu = mm.n_users > 0 ? (double)n_users : 1.0;
                json_t *eff = json_object();
                json_object_set_new(eff, "prefill_ms", json_real(1e3 * prefill_s));
                json_object_set_new(eff, "decode_ms", json_real(1e3 * decode_s));
                json_object_set_new(eff, "total_ms", json_real(total_ms));
                json_object_set_new(eff, "prompt_tokens", json_integer((json_int_t)prompt_toks));
                json_object_set_new(eff, "generated_tokens", json_integer((json_int_t)gen));
                json_object_set_new(eff, "tau", json_real(total_ms > 0 ? (double)gen / (total_ms * 1e-3) : 0.0));
                json_object_set_new(eff, "sigma", json_real(sigma_sum / nu));
                json_object_set_new(eff, "sigma_full", json_real(sigma_full_sum / nu));
                json_object_set_new(eff, "gamma", json_real(sigma_full_sum > 0 ? 100.0 * (1.0 - sigma_sum / sigma_full_sum) : 0.0));
                json_object_set_new(eff, "kv_bytes_batch_peak", json_integer((json_int_t)kv_peak));
                json_object_set_new(eff, "batch", json_integer(batch));
                if (have_omega) json_object_set_new(eff, "omega", json_real(omega));
                json_object_set_new(eff, "device", json_string("cpu"));
                json_object_set_new(root, "efficiency", eff);
            }
            AtomicFile af;
            if (atomic_open(&af, out, &e)) rc = cli_fail("eval", &e);
            else if (json_dumpf(root, af.f, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) || fputc('\n', af.f) == EOF) {
                atomic_abort(&af);
                err_set(&e, "%s: write failed", out);
                rc = cli_fail("eval", &e);
            } else if (atomic_commit(&af, &e)) rc = cli_fail("eval", &e);
            json_decref(root);
            if (!rc) {
                const RecMetrics *r = have_model ? &mm : &mpm;
                printf("%s %s: %ld users  recall@10 %.4f  ndcg@10 %.4f  (mostpop %.4f / %.4f)", have_model ? model_dir : "mostpop",
                       split_name(split), r->n_users, recmetrics_recall(r, 2), recmetrics_ndcg(r, 2),
                       recmetrics_recall(&mpm, 2), recmetrics_ndcg(&mpm, 2));
                if (have_model) printf("  prefill %.1f ms  decode %.1f ms", 1e3 * prefill_s, 1e3 * decode_s);
                printf("\n");
            }
        }
        free(mp_codes); free(mp_ptr); free(tc); free(tp); free(bc); free(bp);
    }

done_model:
    if (have_model) {
        beam_search_free(&bs);
        trie_free(&trie);
        prompter_free(&pr);
        vocab_free(&voc);
        model_free(&m);
    }
done_data:
    free(item_tokens);
    mostpop_free(&mp);
    samples_free(&ss);
    dataset_free(&d);
    return rc ? 1 : 0;
}
