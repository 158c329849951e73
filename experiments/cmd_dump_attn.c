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

static const char *DUMP_ABOUT =
    "  Prompts: --data (recommendation prompts of a split, spread evenly), --text / --text-file\n"
    "  (text through the model's tokenizer.bin, or --tokenizer FILE: e.g. the original tokenizer of a\n"
    "  model whose vocabulary earnest train --init grew, whose first ids keep their meaning), or\n"
    "  --tokens (one raw sequence).\n"
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

typedef struct {
    const char *model_dir, *out, *data_dir, *split, *tmpl, *text_file, *tokenizer;
    int tokenizer_vocab;
    CliStrings texts;
    CliIntList tokens, kinds;
    int n_samples, with_target, threads, allow_nonfinite, allow_long;
} DumpArgs;

typedef struct {
    Prompt *v;
    int n;
} Prompts;

static void prompts_free(Prompts *ps) {
    for (int i = 0; i < ps->n; i++) {
        free(ps->v[i].tokens);
        free(ps->v[i].kinds);
    }
    free(ps->v);
    *ps = (Prompts){0};
}

static Prompt *prompts_add(Prompts *ps, int T) {
    ps->v = xrealloc(ps->v, (size_t)(ps->n + 1) * sizeof(Prompt));
    Prompt *p = &ps->v[ps->n++];
    p->T = T;
    p->tokens = xmalloc((size_t)(T > 0 ? T : 1) * sizeof(int));
    p->kinds = xcalloc((size_t)(T > 0 ? T : 1), 1);
    return p;
}

// --data: n_samples recommendation prompts spread evenly over the split.
static int prompts_from_data(Prompts *ps, PromptTemplate *tmpl, const DumpArgs *a, const ModelConfig *c, Error *e) {
    Split split;
    CHECK(split_parse(a->split, &split) == 0, "dump-attn: --split passed its choices");
    Dataset d;
    Vocab v;
    Prompter pr;
    if (prompt_template_for_model(tmpl, a->tmpl, c->prompt_template, a->model_dir, e)) return -1;
    if (dataset_load(&d, a->data_dir, e)) return -1;
    int rc = -1;
    if (model_vocab_load(&v, a->model_dir, &d, c, e)) goto no_vocab;
    if (prompter_init_form(&pr, &v, &d, *tmpl, c->n_prefix_regs, c->n_suffix_regs, prompt_form_for_method(c->method),
                           e))
        goto no_prompter;
    SampleSet ss;
    samples_build(&ss, &d, split, SAMPLES_MAX_HISTORY);
    if (ss.n == 0) {
        err_set(e, "%s: the %s split has no samples", a->data_dir, a->split);
    } else {
        int n = (size_t)a->n_samples < ss.n ? a->n_samples : (int)ss.n;
        for (int i = 0; i < n; i++) {
            const Sample *smp = &ss.samples[(size_t)i * ss.n / (size_t)n]; // spread evenly
            int target = a->with_target && smp->n_targets > 0 ? smp->targets[0] : 0;
            Prompt *p = prompts_add(ps, prompter_length(&pr, smp->n_history, target > 0));
            prompter_build(p->tokens, p->kinds, &pr, smp->history, smp->n_history, target);
        }
        rc = 0;
    }
    samples_free(&ss);
    prompter_free(&pr);
no_prompter:
    vocab_free(&v);
no_vocab:
    dataset_free(&d);
    return rc;
}

// --text / --text-file: each text through the model's tokenizer.bin (BOS + text).
// --tokenizer FILE (with --tokenizer-vocab N, the tokens it holds) instead of MODEL_DIR/tokenizer.bin.
static int prompts_from_text(Prompts *ps, const char *const *texts, int n, const DumpArgs *a, int vocab_size,
                             Error *e) {
    char path[4096];
    Tokenizer tk;
    if (a->tokenizer) {
        snprintf(path, sizeof path, "%s", a->tokenizer);
        if (a->tokenizer_vocab > vocab_size)
            return err_set(e, "--tokenizer-vocab %d: larger than the model's vocab_size %d", a->tokenizer_vocab,
                           vocab_size);
        if (a->tokenizer_vocab > 0) vocab_size = a->tokenizer_vocab;
    } else if (path_join(path, sizeof path, a->model_dir, "tokenizer.bin")) {
        return err_set(e, "%s: path too long", a->model_dir);
    }
    if (tokenizer_load(&tk, path, vocab_size, e)) return -1;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        Prompt *p = prompts_add(ps, (int)strlen(texts[i]) + 3);
        rc = tokenizer_encode(&tk, texts[i], 1, 0, p->tokens, &p->T, e);
        for (int j = 0; j < p->T; j++) p->kinds[j] = j == 0 ? TOKEN_KIND_SPECIAL : TOKEN_KIND_INSTRUCTION;
    }
    tokenizer_free(&tk);
    return rc ? -1 : 0;
}

// --tokens [--kinds]: one raw sequence.
static int prompts_from_tokens(Prompts *ps, const DumpArgs *a, const ModelConfig *c, Error *e) {
    const CliIntList *t = &a->tokens, *k = &a->kinds;
    for (int i = 0; i < t->n; i++)
        if (t->v[i] >= c->vocab_size)
            return err_set(e, "--tokens: item %d is %d, outside the model's vocabulary [0, %d]", i + 1, t->v[i],
                           c->vocab_size - 1);
    if (k->n && k->n != t->n) return err_set(e, "--kinds has %d entries, --tokens %d", k->n, t->n);
    if (!k->n && c->method == METHOD_EARN)
        return err_set(e, "%s is an EARN model: give --kinds with --tokens", a->model_dir);
    Prompt *p = prompts_add(ps, t->n);
    memcpy(p->tokens, t->v, (size_t)t->n * sizeof(int));
    for (int j = 0; j < t->n; j++) p->kinds[j] = k->n ? (uint8_t)k->v[j] : TOKEN_KIND_INSTRUCTION;
    return 0;
}

// Every prompt through the model, with the dump writer as the attention hook.
static int dump_write(const Prompts *ps, Model *m, const DumpArgs *a, PromptTemplate tmpl, Error *e) {
    const ModelConfig *c = &m->config;
    AttnDumpWriter w;
    AttnDumpInfo info = {.n_layers = c->n_layers, .n_heads = c->n_heads, .n_kv_heads = c->n_kv_heads,
                         .dim = c->dim, .vocab_size = c->vocab_size, .layer_split_k = c->layer_split_k,
                         .n_prefix_regs = c->n_prefix_regs, .n_suffix_regs = c->n_suffix_regs};
    snprintf(info.method, sizeof info.method, "%s", config_method_name(c->method));
    if (attn_dump_create(&w, a->out, &info, e)) return -1;
    int rc = attn_dump_set_attr(&w, "model", a->model_dir, e) ||
             (a->data_dir && (attn_dump_set_attr(&w, "dataset", a->data_dir, e) ||
                              attn_dump_set_attr(&w, "split", a->split, e) ||
                              attn_dump_set_attr(&w, "template", prompt_template_name(tmpl), e))) ||
             (!a->data_dir && !a->tokens.n && attn_dump_set_attr(&w, "source", "text", e));
    Progress prog;
    progress_init(&prog, 1);
    for (int i = 0; i < ps->n && !rc; i++) {
        rc = dump_one(&w, m, &ps->v[i], e);
        char text[64];
        snprintf(text, sizeof text, "%d/%d samples", i + 1, ps->n);
        progress_show(&prog, "dump-attn", (double)(i + 1) / ps->n, text, i + 1 == ps->n);
    }
    if (rc) {
        attn_dump_abort(&w);
        return -1;
    }
    if (attn_dump_close(&w, e)) return -1;
    struct stat st;
    long long bytes = stat(a->out, &st) == 0 ? (long long)st.st_size : -1;
    printf("wrote %s: %d samples, %.1f MB, %.2f s\n", a->out, ps->n, bytes / 1e6, progress_elapsed(&prog));
    return 0;
}

// --text-file: one text per non-empty line, appended to the --text ones (pointing into *buf).
static int read_text_file(CliStrings *texts, char **buf, const char *path, Error *e) {
    if (file_read_all(path, buf, NULL, e)) return -1;
    int n0 = texts->n;
    for (char *line = strtok(*buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (!*line) continue;
        if (texts->n == DUMP_MAX_TEXTS) return err_set(e, "%s: more than %d texts", path, DUMP_MAX_TEXTS);
        texts->v = xrealloc(texts->v, (size_t)(texts->n + 1) * sizeof(char *));
        texts->v[texts->n++] = line;
    }
    if (texts->n == n0) return err_set(e, "%s: no text in the file", path);
    return 0;
}

int cmd_dump_attn(int argc, char **argv) {
    DumpArgs a = {.split = "test", .n_samples = 64};
    CliFlag flags[] = {
        {"--model", CLI_STRING, &a.model_dir, .meta = "DIR", .required = 1, .help = "model directory"},
        {"--out", CLI_STRING, &a.out, .meta = "A.h5", .required = 1, .help = "the attention dump (atomic)"},
        {"--data", CLI_STRING, &a.data_dir, .meta = "DATA_DIR", .help = "recommendation prompts of this dataset"},
        {"--split", CLI_STRING, &a.split, .choices = "train|valid|test", .help = "the split of --data"},
        {"--samples", CLI_INT, &a.n_samples, .lo = 1, .hi = ATTN_DUMP_MAX_SAMPLES, .help = "prompts taken from --data"},
        {"--template", CLI_STRING, &a.tmpl, .choices = "lcrec|tiger", .help = "prompt template (default: the model's)"},
        {"--with-target", CLI_FLAG, &a.with_target, .help = "append the first target's code tokens"},
        {"--text", CLI_STRINGS, &a.texts, .meta = "\"...\"", .hi = DUMP_MAX_TEXTS, .help = "a text prompt (repeatable)"},
        {"--text-file", CLI_STRING, &a.text_file, .meta = "FILE", .help = "text prompts, one per non-empty line"},
        {"--tokenizer", CLI_STRING, &a.tokenizer, .meta = "FILE",
         .help = "llama2.c tokenizer.bin for --text (default MODEL_DIR/tokenizer.bin)"},
        {"--tokenizer-vocab", CLI_INT, &a.tokenizer_vocab, .lo = 4, .hi = 1 << 30,
         .help = "tokens in --tokenizer (default: the model's vocab_size)"},
        {"--tokens", CLI_INT_LIST, &a.tokens, .lo = 0, .hi = 2147483647, .sep = ' ', .help = "one raw token sequence"},
        {"--kinds", CLI_INT_LIST, &a.kinds, .lo = 0, .hi = TOKEN_KIND_TARGET, .sep = ' ',
         .help = "each token's kind, with --tokens (needed by an EARN model)"},
        {"--threads", CLI_INT, &a.threads, .lo = 1, .hi = 1024, .help = "threads (default: EARNEST_THREADS or all cores)"},
        {"--allow-nonfinite", CLI_FLAG, &a.allow_nonfinite, .help = "load a model whose weights are not all finite"},
        {"--allow-long", CLI_FLAG, &a.allow_long, .help = "run past the model's max_position_embeddings (with a warning)"},
    };
    CliSpec cli = {.verb = "dump-attn", .synopsis = "--model DIR --out A.h5 (--data DATA_DIR | --text \"...\" | "
                   "--text-file FILE | --tokens \"ID ...\") [options]",
                   .about = DUMP_ABOUT, .flags = flags, .n_flags = CLI_COUNT(flags)};
    int st = cli_parse(&cli, argc, argv);
    if (st >= 0) return st;
    if (!!a.data_dir + !!(a.texts.n || a.text_file) + !!a.tokens.n != 1) {
        fprintf(stderr, "earnest dump-attn: give exactly one of --data, --text/--text-file, --tokens\n");
        cli_free(&cli);
        return 2;
    }
    {
        Error le;
        if (output_lock_hold(a.out, &le)) return cli_fail("dump-attn", &le); // one writer per output
    }
    threads_init(a.threads);
    Error e = {{0}};
    char *text_buf = NULL;
    Prompts ps = {0};
    PromptTemplate tmpl = PROMPT_TEMPLATE_LCREC;
    Model m;
    int have_model = 0, rc = (a.text_file && read_text_file(&a.texts, &text_buf, a.text_file, &e)) ||
                             model_load_flags(&m, a.model_dir, a.allow_nonfinite ? MODEL_LOAD_ALLOW_NONFINITE : 0, &e);
    if (!rc) {
        have_model = 1;
        model_allow_long(&m, a.allow_long, "dump-attn");
        if (m.config.method == METHOD_ANLLM)
            rc = err_set(&e, "%s: an anllm model reads its prompt under the AnLLM mask, which dump-attn does not "
                         "apply (dump its attention with a finetune model)", a.model_dir);
        else if (m.config.method == METHOD_COMPRESS500X)
            rc = err_set(&e, "%s: a compress500x model reads its prompt with LoRA adapters, which dump-attn does not "
                         "apply (dump its attention with a finetune model)", a.model_dir);
        else
            rc = a.data_dir  ? prompts_from_data(&ps, &tmpl, &a, &m.config, &e)
                 : a.texts.n ? prompts_from_text(&ps, a.texts.v, a.texts.n, &a, m.config.vocab_size, &e)
                             : prompts_from_tokens(&ps, &a, &m.config, &e);
    }
    rc = rc || dump_write(&ps, &m, &a, tmpl, &e);
    if (rc) cli_fail("dump-attn", &e);
    prompts_free(&ps);
    if (have_model) model_free(&m);
    free(text_buf);
    cli_free(&cli);
    return rc ? 1 : 0;
}
