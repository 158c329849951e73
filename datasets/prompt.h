// prompt.h: turns a user's history into the token ids a model reads.
//
// LC-Rec template (the instruction text of LC-Rec / AtSpeed, word-level):
//   <bos> [P prefix regs] Below is an instruction that describes a task . Write
//   a response that appropriately completes the request . ### Instruction : The
//   user has interacted with items <a_58> <b_241> <c_151> <d_175> , <a_..> ...
//   in chronological order . Can you predict the next possible item that the
//   user may expect ? ### Response : [S suffix regs] [target code tokens]
// TIGER template (history codes only):
//   <bos> [P prefix regs] <a_..> <b_..> ... (every history item's code) [S suffix regs] [target]
//
// Word splitting (how the template text becomes vocabulary words): split on
// whitespace (newlines included, so they vanish), then each of . , : ; ? ! is a
// token of its own; other characters stay in their word ("###" is one token).
// Words are case-sensitive. History items are separated by a "," token, as
// LC-Rec joins them with ", ".
#ifndef EARNEST_PROMPT_H
#define EARNEST_PROMPT_H

#include <stdint.h>

#include "datasets/dataset.h"
#include "runtime/plan.h"
#include "datasets/vocab.h"

// Every prompt token has a kind: TokenKind of runtime/plan.h (the `kinds` array of
// attention dumps, DESIGN.md); the layer plan decides depths from it. History
// kinds cover the history codes and the "," between items; <bos> is special.

typedef enum { PROMPT_TEMPLATE_LCREC = 0, PROMPT_TEMPLATE_TIGER = 1 } PromptTemplate;

const char *prompt_template_name(PromptTemplate t);          // "lcrec", "tiger"
int prompt_template_parse(const char *name, PromptTemplate *t);  // 0 ok, -1 unknown
// The template to build a model's prompts with: `flag` (a --template value, or
// NULL) must agree with the template recorded in the model's config when it
// has one; with neither, lcrec.
int prompt_template_for_model(PromptTemplate *t, const char *flag, const char *model_template, const char *model_dir,
                              Error *e);

// The vocabulary for models trained on dataset d: specials, max_prefix_regs +
// max_suffix_regs registers, the template words of every template, and d's code tokens.
int prompt_vocab_build(Vocab *v, const Dataset *d, int max_prefix_regs, int max_suffix_regs, Error *e);

// Tokens in a prompt, without building it (target: add code_levels tokens).
int prompt_length(PromptTemplate t, int n_prefix_regs, int n_suffix_regs, int code_levels, int n_history,
                  int with_target);

// A template resolved against one vocabulary and dataset, ready to build
// prompts quickly (no string lookups per prompt). Keeps pointers to neither.
typedef struct {
    PromptTemplate tmpl;
    int n_prefix_regs, n_suffix_regs;
    int code_levels;
    int n_items;
    int bos, comma;
    int *reg_pre, *reg_suf;   // [n_prefix_regs], [n_suffix_regs]
    int *before, n_before;    // template words before the history
    int *after, n_after;      // template words after the history
    int *item_tokens;         // [(n_items + 1) * code_levels] each item's code token ids
    int anchor;               // PROMPT_FORM_ANCHORS: the anchor token id after each history item, else -1
    int n_words_plain;        // instruction words of the plain form (before + after)
} Prompter;

// How a method's model reads the template:
//   PLAIN    the template as written above;
//   ANCHORS  AnLLM: an anchor right after each history item's code (before the
//            "," that follows it): ... <a_58> <b_241> <c_151> <d_175> <anc> , <a_..> ... <anc> in ...
//            The anchor is the vocabulary's <reg_suf_0> (kind 4, suffix register:
//            the vocabulary format stays as it is); no other suffix registers.
//   NO_WORDS POD: no instruction words (kind 2) at all; the P prefix registers
//            right after <bos> stand in their place: <bos> [P regs] history [S regs].
typedef enum { PROMPT_FORM_PLAIN = 0, PROMPT_FORM_ANCHORS = 1, PROMPT_FORM_NO_WORDS = 2 } PromptForm;
// anllm: ANCHORS, pod: NO_WORDS, every other method: PLAIN.
PromptForm prompt_form_for_method(ModelMethod m);

// Fails when the vocabulary lacks a template word, a code token of d, or has
// fewer registers than asked.
int prompter_init(Prompter *p, const Vocab *v, const Dataset *d, PromptTemplate t, int n_prefix_regs,
                  int n_suffix_regs, Error *e);
// prompter_init, then the form f (ANCHORS needs a suffix register in v and
// n_suffix_regs = 0).
int prompter_init_form(Prompter *p, const Vocab *v, const Dataset *d, PromptTemplate t, int n_prefix_regs,
                       int n_suffix_regs, PromptForm f, Error *e);
void prompter_free(Prompter *p);
// Tokens of the plain prompt a full model reads for n_history items: no
// registers, no anchors, every instruction word (the reference of KV reduction).
int prompter_length_plain(const Prompter *p, int n_history);
int prompter_length(const Prompter *p, int n_history, int with_target);
// Writes prompter_length(p, n_history, target > 0) tokens and kinds and returns
// that count. history: 1-based item ids, oldest first; target: an item id, or
// 0 for an inference prompt.
int prompter_build(int *tokens, uint8_t *kinds, const Prompter *p, const int *history, int n_history, int target);

#endif
