// cmd_dump_attn.c: `earnest dump-attn` runs a model over prompts and writes
// their post-softmax attention to an HDF5 dump (analysis/attn_dump.h).
//
// Prompts come from one of:
//   --data DIR --split S --samples N   recommendation prompts (the model's template and
//                                      registers), N samples spread evenly over the split;
//   --text "..." (repeatable)          text, encoded with the model's tokenizer.bin (NLP side);
//   --text-file FILE                   the same, one text per non-empty line;
//   --tokens "ids" [--kinds "k ..."]   one raw token sequence.
// Each prompt is one prefill; an EARN model runs its layer plan, so rows of
// queries a layer does not compute and keys it does not keep are 0 and
// flagged in the per-layer row_mask / key_mask.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "analysis/attn_dump.h"
#include "datasets/model_vocab.h"
#include "datasets/prompt.h"
#include "datasets/samples.h"
#include "experiments/cli.h"
#include "experiments/commands.h"
#include "runtime/checkpoint.h"
#include "runtime/plan.h"
#include "runtime/progress.h"
#include "runtime/tokenizer.h"

static const char *DUMP_USAGE =
    "usage: earnest dump-attn --model DIR --out A.h5\n"
    "         (--data DATA_DIR [--split test] [--samples 64] [--template lcrec|tiger] [--with-target]\n"
    "          | --text \"...\" [--text \"...\" ...] | --text-file FILE\n"
    "          | --tokens \"ID ...\" [--kinds \"K ...\"])  [--threads N]\n"
    "  Writes /samples/NNNNNN {tokens, positions, kinds, attn [L,H,T,T], row_mask, key_mask} with\n"
    "  root attributes describing the model (format earnest-attn, version 1). --with-target\n"
    "  appends the first target's code tokens (kind 5) to each recommendation prompt.\n";

enum { DUMP_MAX_TEXTS = 256 };

typedef struct {
    int T;
    int *tokens;
    uint8_t *kinds;
} Prompt;

// Runs one prompt through the model with the dump writer as the attention hook.
static int dump_one(AttnDumpWriter *w, Model *m, const Prompt *p, Error *e) {
    const ModelConfig *c = &m->config;
    int T = p->T;
    int *depth = xmalloc((size_t)T * sizeof(int)), *cap = xmalloc((size_t)c->n_layers * sizeof(int));
    int32_t *tok32 = xmalloc((size_t)T * sizeof(int32_t));
    for (int i = 0; i < T; i++) tok32[i] = p->tokens[i];
    plan_depth_for(depth, p->kinds, T, c);
    for (int l = 0; l < c->n_layers; l++) cap[l] = T;
    KVCache kv;
    kvcache_init(&kv, c->n_layers, c->n_kv_heads, c->head_dim, cap);
    KVCache *kvs[1] = {&kv};
    ForwardBatch fb = {.n_seqs = 1, .n_new = &T, .tokens = p->tokens, .depth = depth, .caches = kvs,
                       .logits_mode = LOGITS_NONE, .attn_hook = attn_dump_hook, .attn_hook_ctx = w};
    ForwardScratch s = {0};
    int rc = attn_dump_sample_begin(w, T, tok32, NULL, p->kinds, e) || model_forward(NULL, m, &fb, &s, e) ||
             attn_dump_sample_end(w, e);
    forward_scratch_free(&s);
    kvcache_free(&kv);
    free(depth); free(cap); free(tok32);
    return rc ? -1 : 0;
}

int cmd_dump_attn(int argc, char **argv) {
    const char *model_dir = NULL, *out = NULL, *data_dir = NULL, *split_s = "test", *template_s = NULL;
    const char *tokens_s = NULL, *kinds_s = NULL, *texts[DUMP_MAX_TEXTS];
    const char *text_file = NULL;
    char *text_buf = NULL;
    int n_texts = 0, n_samples = 64, with_target = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(DUMP_USAGE, stdout); return 0; }
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 2; } while (0)
        else if (!strcmp(a, "--model")) { VAL(); model_dir = v; }
        else if (!strcmp(a, "--out")) { VAL(); out = v; }
        else if (!strcmp(a, "--data")) { VAL(); data_dir = v; }
        else if (!strcmp(a, "--split")) { VAL(); split_s = v; }
        else if (!strcmp(a, "--template")) { VAL(); template_s = v; }
        else if (!strcmp(a, "--tokens")) { VAL(); tokens_s = v; }
        else if (!strcmp(a, "--kinds")) { VAL(); kinds_s = v; }
        else if (!strcmp(a, "--with-target")) with_target = 1;
        else if (!strcmp(a, "--samples")) { VAL(); if (cli_int("dump-attn", a, v, 1, ATTN_DUMP_MAX_SAMPLES, &n_samples)) return 2; }
        else if (!strcmp(a, "--threads")) { VAL(); if (cli_int("dump-attn", a, v, 1, 1024, &threads)) return 2; }
        else if (!strcmp(a, "--text-file")) { VAL(); text_file = v; }
        else if (!strcmp(a, "--text")) {
            VAL();
            if (n_texts == DUMP_MAX_TEXTS) { fprintf(stderr, "earnest dump-attn: at most %d --text\n", DUMP_MAX_TEXTS); return 2; }
            texts[n_texts++] = v;
        } else {
            fprintf(stderr, "earnest dump-attn: unknown option '%s'\n%s", a, DUMP_USAGE);
            return 2;
        }
#undef VAL
    }
    if (text_file) {
        // One text per non-empty line, appended to the --text ones.
        Error fe;
        if (file_read_all(text_file, &text_buf, NULL, &fe)) return cli_fail("dump-attn", &fe);
        for (char *line = strtok(text_buf, "\n"); line; line = strtok(NULL, "\n")) {
            if (!*line) continue;
            if (n_texts == DUMP_MAX_TEXTS) {
                fprintf(stderr, "earnest dump-attn: %s: more than %d texts\n", text_file, DUMP_MAX_TEXTS);
                free(text_buf);
                return 2;
            }
            texts[n_texts++] = line;
        }
        if (!n_texts) {
            fprintf(stderr, "earnest dump-attn: %s: no text in the file\n", text_file);
            free(text_buf);
            return 2;
        }
    }
    int sources = !!data_dir + !!n_texts + !!tokens_s;
    if (!model_dir || !out || sources != 1) {
        fprintf(stderr, "earnest dump-attn: need --model, --out and exactly one of --data, --text, --tokens\n%s", DUMP_USAGE);
        free(text_buf);
        return 2;
    }
    Split split;
    PromptTemplate tmpl;
    if (split_parse(split_s, &split)) {
        fprintf(stderr, "earnest dump-attn: --split: unknown split '%s'\n", split_s);
        free(text_buf);
        return 2;
    }
    if (template_s && prompt_template_parse(template_s, &tmpl)) {
        fprintf(stderr, "earnest dump-attn: --template: unknown template '%s' (lcrec, tiger)\n", template_s);
        free(text_buf);
        return 2;
    }
    threads_init(threads);

    Error e = {{0}};
    Model m;
    if (model_load(&m, model_dir, &e)) {
        free(text_buf);
        return cli_fail("dump-attn", &e);
    }
    const ModelConfig *c = &m.config;

    // Build the prompts.
    Prompt *prompts = NULL;
    int n_prompts = 0, rc = 0;
    Dataset d = {0};
    Vocab v = {0};
    Prompter pr = {0};
    SampleSet ss = {0};
    int have_d = 0, have_v = 0, have_pr = 0, have_ss = 0;
    if (data_dir) {
        rc = prompt_template_for_model(&tmpl, template_s, c->prompt_template, model_dir, &e) ||
             dataset_load(&d, data_dir, &e);
        have_d = !rc;
        rc = rc || model_vocab_load(&v, model_dir, &d, c, &e);
        have_v = have_d && !rc;
        rc = rc || prompter_init(&pr, &v, &d, tmpl, c->n_prefix_regs, c->n_suffix_regs, &e);
        have_pr = have_v && !rc;
        if (!rc) {
            samples_build(&ss, &d, split, SAMPLES_MAX_HISTORY);
            have_ss = 1;
            if (ss.n == 0) rc = err_set(&e, "%s: the %s split has no samples", data_dir, split_s);
        }
        if (!rc) {
            n_prompts = (size_t)n_samples < ss.n ? n_samples : (int)ss.n;
            prompts = xcalloc((size_t)n_prompts, sizeof(Prompt));
            for (int i = 0; i < n_prompts; i++) {
                const Sample *smp = &ss.samples[(size_t)i * ss.n / (size_t)n_prompts]; // spread evenly
                int target = with_target && smp->n_targets > 0 ? smp->targets[0] : 0;
                Prompt *p = &prompts[i];
                p->T = prompter_length(&pr, smp->n_history, target > 0);
                p->tokens = xmalloc((size_t)p->T * sizeof(int));
                p->kinds = xmalloc((size_t)p->T);
                prompter_build(p->tokens, p->kinds, &pr, smp->history, smp->n_history, target);
            }
        }
    } else if (n_texts) {
        char path[4096];
        Tokenizer tk;
        if (path_join(path, sizeof path, model_dir, "tokenizer.bin") || tokenizer_load(&tk, path, c->vocab_size, &e)) {
            rc = -1;
            if (!e.msg[0]) err_set(&e, "%s: path too long", model_dir);
        } else {
            prompts = xcalloc((size_t)n_texts, sizeof(Prompt));
            for (int i = 0; i < n_texts && !rc; i++, n_prompts++) {
                Prompt *p = &prompts[i];
                p->tokens = xmalloc((strlen(texts[i]) + 3) * sizeof(int));
                rc = tokenizer_encode(&tk, texts[i], 1, 0, p->tokens, &p->T, &e);
                p->kinds = xmalloc((size_t)p->T + 1);
                for (int j = 0; j < p->T; j++) p->kinds[j] = j == 0 ? TOKEN_KIND_SPECIAL : TOKEN_KIND_INSTRUCTION;
            }
            tokenizer_free(&tk);
        }
    } else {
        int *kinds_i = NULL;
        prompts = xcalloc(1, sizeof(Prompt));
        n_prompts = 1;
        prompts[0].T = cli_int_list("dump-attn", "--tokens", tokens_s, 0, c->vocab_size - 1, &prompts[0].tokens, 1);
        if (prompts[0].T < 0) rc = 2;
        else {
            prompts[0].kinds = xcalloc((size_t)prompts[0].T, 1);
            if (kinds_s) {
                int nk = cli_int_list("dump-attn", "--kinds", kinds_s, 0, TOKEN_KIND_TARGET, &kinds_i, 1);
                if (nk != prompts[0].T) {
                    if (nk >= 0) fprintf(stderr, "earnest dump-attn: --kinds has %d entries, --tokens %d\n", nk, prompts[0].T);
                    rc = 2;
                } else {
                    for (int j = 0; j < nk; j++) prompts[0].kinds[j] = (uint8_t)kinds_i[j];
                }
                free(kinds_i);
            } else if (c->method == METHOD_EARN) {
                fprintf(stderr, "earnest dump-attn: %s is an EARN model: give --kinds with --tokens\n", model_dir);
                rc = 2;
            } else {
                for (int j = 0; j < prompts[0].T; j++) prompts[0].kinds[j] = TOKEN_KIND_INSTRUCTION;
            }
        }
    }

    // Run and write.
    if (!rc) {
        AttnDumpWriter w;
        AttnDumpInfo info = {.n_layers = c->n_layers, .n_heads = c->n_heads, .n_kv_heads = c->n_kv_heads,
                             .dim = c->dim, .vocab_size = c->vocab_size, .layer_split_k = c->layer_split_k,
                             .n_prefix_regs = c->n_prefix_regs, .n_suffix_regs = c->n_suffix_regs};
        snprintf(info.method, sizeof info.method, "%s", config_method_name(c->method));
        rc = attn_dump_create(&w, out, &info, &e) || attn_dump_set_attr(&w, "model", model_dir, &e) ||
             (data_dir && (attn_dump_set_attr(&w, "dataset", data_dir, &e) ||
                           attn_dump_set_attr(&w, "split", split_s, &e) ||
                           attn_dump_set_attr(&w, "template", prompt_template_name(tmpl), &e))) ||
             (n_texts && attn_dump_set_attr(&w, "source", "text", &e));
        Progress prog;
        progress_init(&prog, 1);
        for (int i = 0; i < n_prompts && !rc; i++) {
            rc = dump_one(&w, &m, &prompts[i], &e);
            char text[64];
            snprintf(text, sizeof text, "%d/%d samples", i + 1, n_prompts);
            progress_show(&prog, "dump-attn", (double)(i + 1) / n_prompts, text, i + 1 == n_prompts);
        }
        if (rc) attn_dump_abort(&w);
        else rc = attn_dump_close(&w, &e);
        if (!rc) {
            struct stat st;
            long long bytes = stat(out, &st) == 0 ? (long long)st.st_size : -1;
            printf("wrote %s: %d samples, %.1f MB, %.2f s\n", out, n_prompts, bytes / 1e6, progress_elapsed(&prog));
        }
    }
    if (rc == -1 || (rc && e.msg[0])) cli_fail("dump-attn", &e);
    for (int i = 0; i < n_prompts; i++) { free(prompts[i].tokens); free(prompts[i].kinds); }
    free(prompts);
    if (have_ss) samples_free(&ss);
    if (have_pr) prompter_free(&pr);
    if (have_v) vocab_free(&v);
    if (have_d) dataset_free(&d);
    model_free(&m);
    free(text_buf);
    return rc == 2 ? 2 : rc ? 1 : 0;
}
