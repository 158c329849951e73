// prompt.c: see prompt.h.
#include "datasets/prompt.h"

#include <stdlib.h>
#include <string.h>

// LC-Rec's sequential-recommendation prompt (as used by AtSpeed): the Alpaca
// frame around the instruction, with the history in the middle.
static const char *LCREC_BEFORE =
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\nThe user has interacted with items";
static const char *LCREC_AFTER =
    "in chronological order. Can you predict the next possible item that the user may expect?\n\n### Response:";
static const char *HISTORY_SEP = ",";

#define MAX_WORDS 128
#define MAX_WORD_LEN 32

static int is_punct(char c) { return c && strchr(".,:;?!", c) != NULL; }
static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Splits text into words by the rule in prompt.h; returns the count.
static int split_words(char words[][MAX_WORD_LEN], int max, const char *text) {
    int n = 0;
    const char *p = text;
    while (*p) {
        if (is_space(*p)) { p++; continue; }
        size_t len = is_punct(*p) ? 1 : 0;
        if (!len)
            while (p[len] && !is_space(p[len]) && !is_punct(p[len])) len++;
        CHECK(n < max && len < MAX_WORD_LEN, "template too long");
        memcpy(words[n], p, len);
        words[n][len] = 0;
        n++;
        p += len;
    }
    return n;
}

static int count_words(const char *text) {
    char words[MAX_WORDS][MAX_WORD_LEN];
    return split_words(words, MAX_WORDS, text);
}

const char *prompt_template_name(PromptTemplate t) { return t == PROMPT_TEMPLATE_TIGER ? "tiger" : "lcrec"; }

int prompt_template_parse(const char *name, PromptTemplate *t) {
    if (!strcmp(name, "lcrec")) { *t = PROMPT_TEMPLATE_LCREC; return 0; }
    if (!strcmp(name, "tiger")) { *t = PROMPT_TEMPLATE_TIGER; return 0; }
    return -1;
}

int prompt_vocab_build(Vocab *v, const Dataset *d, int max_prefix_regs, int max_suffix_regs, Error *e) {
    char words[2 * MAX_WORDS + 1][MAX_WORD_LEN];
    int n = split_words(words, MAX_WORDS, LCREC_BEFORE);
    n += split_words(words + n, MAX_WORDS, LCREC_AFTER);
    snprintf(words[n++], MAX_WORD_LEN, "%s", HISTORY_SEP);
    const char *ptrs[2 * MAX_WORDS + 1];
    for (int i = 0; i < n; i++) ptrs[i] = words[i];
    VocabSpec spec = {.code_levels = d->code_levels, .codes_per_level = d->codes_per_level,
                      .n_reg_pre = max_prefix_regs, .n_reg_suf = max_suffix_regs, .words = ptrs, .n_words = n};
    return vocab_build(v, &spec, e);
}

static int history_tokens(PromptTemplate t, int code_levels, int n_history) {
    if (n_history <= 0) return 0;
    int seps = t == PROMPT_TEMPLATE_LCREC ? n_history - 1 : 0;
    return n_history * code_levels + seps;
}

int prompt_length(PromptTemplate t, int n_prefix_regs, int n_suffix_regs, int code_levels, int n_history,
                  int with_target) {
    int words = t == PROMPT_TEMPLATE_LCREC ? count_words(LCREC_BEFORE) + count_words(LCREC_AFTER) : 0;
    return 1 + n_prefix_regs + words + history_tokens(t, code_levels, n_history) + n_suffix_regs +
           (with_target ? code_levels : 0);
}

// Resolves the words of `text` to ids: *ids [*n] (allocated).
static int resolve_words(int **ids, int *n, const Vocab *v, const char *text, Error *e) {
    char words[MAX_WORDS][MAX_WORD_LEN];
    *n = split_words(words, MAX_WORDS, text);
    *ids = xmalloc((size_t)(*n + 1) * sizeof(int));
    for (int i = 0; i < *n; i++)
        if (((*ids)[i] = vocab_id(v, words[i])) < 0)
            return err_set(e, "vocabulary has no template word '%s'", words[i]);
    return 0;
}

int prompter_init(Prompter *p, const Vocab *v, const Dataset *d, PromptTemplate t, int n_prefix_regs,
                  int n_suffix_regs, Error *e) {
    memset(p, 0, sizeof *p);
    p->tmpl = t;
    p->n_prefix_regs = n_prefix_regs;
    p->n_suffix_regs = n_suffix_regs;
    p->code_levels = d->code_levels;
    p->n_items = d->n_items;
    p->bos = v->bos;
    p->anchor = -1;
    if (n_prefix_regs < 0 || n_prefix_regs > v->n_reg_pre || n_suffix_regs < 0 || n_suffix_regs > v->n_reg_suf)
        return err_set(e, "prompt: %d prefix / %d suffix registers asked, the vocabulary has %d / %d",
                       n_prefix_regs, n_suffix_regs, v->n_reg_pre, v->n_reg_suf);
    p->reg_pre = xmalloc((size_t)(n_prefix_regs + 1) * sizeof(int));
    p->reg_suf = xmalloc((size_t)(n_suffix_regs + 1) * sizeof(int));
    memcpy(p->reg_pre, v->reg_pre, (size_t)n_prefix_regs * sizeof(int));
    memcpy(p->reg_suf, v->reg_suf, (size_t)n_suffix_regs * sizeof(int));
    p->item_tokens = xmalloc(((size_t)d->n_items + 1) * (size_t)d->code_levels * sizeof(int));
    if (vocab_item_tokens(p->item_tokens, v, d, e) != 0) goto fail;
    if (t == PROMPT_TEMPLATE_LCREC) {
        if (resolve_words(&p->before, &p->n_before, v, LCREC_BEFORE, e) != 0) goto fail;
        if (resolve_words(&p->after, &p->n_after, v, LCREC_AFTER, e) != 0) goto fail;
        if ((p->comma = vocab_id(v, HISTORY_SEP)) < 0) {
            err_set(e, "vocabulary has no template word '%s'", HISTORY_SEP);
            goto fail;
        }
    } else {
        p->comma = -1;
    }
    p->n_words_plain = p->n_before + p->n_after;
    return 0;
fail:
    prompter_free(p);
    return -1;
}

PromptForm prompt_form_for_method(ModelMethod m) {
    return m == METHOD_ANLLM ? PROMPT_FORM_ANCHORS : m == METHOD_POD ? PROMPT_FORM_NO_WORDS : PROMPT_FORM_PLAIN;
}

int prompter_init_form(Prompter *p, const Vocab *v, const Dataset *d, PromptTemplate t, int n_prefix_regs,
                       int n_suffix_regs, PromptForm f, Error *e) {
    if (prompter_init(p, v, d, t, n_prefix_regs, n_suffix_regs, e)) return -1;
    if (f == PROMPT_FORM_ANCHORS) {
        if (v->n_reg_suf < 1 || n_suffix_regs != 0) {
            prompter_free(p);
            return err_set(e, "prompt: anchors are the vocabulary's <reg_suf_0> and take no other suffix register "
                           "(%d asked, the vocabulary has %d)", n_suffix_regs, v->n_reg_suf);
        }
        p->anchor = v->reg_suf[0];
    } else if (f == PROMPT_FORM_NO_WORDS) {
        p->n_before = p->n_after = 0;
    }
    return 0;
}

int prompter_length_plain(const Prompter *p, int n_history) {
    return 1 + p->n_words_plain + history_tokens(p->tmpl, p->code_levels, n_history);
}

void prompter_free(Prompter *p) {
    free(p->reg_pre);
    free(p->reg_suf);
    free(p->before);
    free(p->after);
    free(p->item_tokens);
    memset(p, 0, sizeof *p);
}

int prompter_length(const Prompter *p, int n_history, int with_target) {
    int anchors = p->anchor >= 0 && n_history > 0 ? n_history : 0;
    return 1 + p->n_prefix_regs + p->n_before + history_tokens(p->tmpl, p->code_levels, n_history) + anchors +
           p->n_after + p->n_suffix_regs + (with_target ? p->code_levels : 0);
}

int prompter_build(int *tokens, uint8_t *kinds, const Prompter *p, const int *history, int n_history, int target) {
    int n = 0;
    size_t L = (size_t)p->code_levels;
#define EMIT(tok, kind) do { tokens[n] = (tok); kinds[n] = (uint8_t)(kind); n++; } while (0)
    EMIT(p->bos, TOKEN_KIND_SPECIAL);
    for (int i = 0; i < p->n_prefix_regs; i++) EMIT(p->reg_pre[i], TOKEN_KIND_PREFIX_REG);
    for (int i = 0; i < p->n_before; i++) EMIT(p->before[i], TOKEN_KIND_INSTRUCTION);
    for (int h = 0; h < n_history; h++) {
        CHECK(history[h] >= 1 && history[h] <= p->n_items, "history item %d out of range", history[h]);
        if (h > 0 && p->comma >= 0) EMIT(p->comma, TOKEN_KIND_HISTORY);
        const int *code = p->item_tokens + (size_t)history[h] * L;
        for (size_t j = 0; j < L; j++) EMIT(code[j], TOKEN_KIND_HISTORY);
        if (p->anchor >= 0) EMIT(p->anchor, TOKEN_KIND_SUFFIX_REG);
    }
    for (int i = 0; i < p->n_after; i++) EMIT(p->after[i], TOKEN_KIND_INSTRUCTION);
    for (int i = 0; i < p->n_suffix_regs; i++) EMIT(p->reg_suf[i], TOKEN_KIND_SUFFIX_REG);
    if (target > 0) {
        CHECK(target <= p->n_items, "target item %d out of range", target);
        const int *code = p->item_tokens + (size_t)target * L;
        for (size_t j = 0; j < L; j++) EMIT(code[j], TOKEN_KIND_TARGET);
    }
#undef EMIT
    return n;
}

int prompt_template_for_model(PromptTemplate *t, const char *flag, const char *model_template, const char *model_dir,
                              Error *e) {
    PromptTemplate mt;
    int has_mt = model_template && model_template[0];
    if (has_mt && prompt_template_parse(model_template, &mt))
        return err_set(e, "%s: config.json names an unknown prompt template \"%s\" (known: lcrec, tiger)", model_dir,
                       model_template);
    if (flag) {
        if (prompt_template_parse(flag, t))
            return err_set(e, "--template: unknown template '%s' (known: lcrec, tiger)", flag);
        if (has_mt && *t != mt)
            return err_set(e, "--template %s: %s was trained with the %s template", flag, model_dir, model_template);
        return 0;
    }
    *t = has_mt ? mt : PROMPT_TEMPLATE_LCREC;
    return 0;
}
