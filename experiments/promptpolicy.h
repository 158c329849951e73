// promptpolicy.h: prompt compression before the prefill (`earnest eval
// --prompt-policy`, `earnest bench --method`): a user's history loses some of
// its items, and the prompt is rebuilt from the kept ones by the dataset's own
// template code (prompter_build), so the model reads an ordinary, shorter prompt.
//
//   truncate   the last `items` history items (default 10)
//   selective  Selective-Context (Li et al., 2023) on whole items: the
//              floor(ratio * n) history items of lowest self-information are
//              removed (`ratio` 0.35), the others kept in their order. An
//              item's self-information is the sum over its code tokens of
//              -log p(token | every token before it) under a small causal LM
//              (`lm=DIR`; default: the evaluated model itself), read from the
//              LM's own prompt of the whole history (its template: for an LM
//              trained with `earnest train --template tiger`, -log p(item j |
//              items 0..j-1), what its packed training taught it). Ties:
//              the older item goes first.
//   none       the history as it is
//
// Units: whole items, never single code tokens (a partial code is no item, and
// the template's separators go with their item), so a compressed prompt is
// always a valid prompt of fewer items.
//
// Spec: NAME[:key=value,...], e.g. "truncate:items=5", "selective:ratio=0.5,lm=models/lm"
// (an lm path cannot hold a ',').
//
// The LM for selective (train it once per dataset; seconds on the synthetic data):
//   earnest train --data DATA --preset tiny --method finetune --template tiger --out models/lm
#ifndef EARNEST_PROMPTPOLICY_H
#define EARNEST_PROMPTPOLICY_H

#include <stddef.h>
#include <stdint.h>

#include "datasets/prompt.h"
#include "runtime/model.h"
#include "runtime/util.h"

typedef enum { PP_NONE = 0, PP_TRUNCATE, PP_SELECTIVE, PP_COUNT } PromptPolicyKind;

typedef struct {
    PromptPolicyKind kind;
    int items;     // truncate: history items kept, >= 1 (10)
    double ratio;  // selective: fraction of the history items removed, [0, 1) (0.35)
    char lm[1024]; // selective: the scoring LM's directory; "": the evaluated model
} PromptPolicy;

void promptpolicy_default(PromptPolicy *p, PromptPolicyKind kind);
// Errors name the policy, key or value at fault: unknown policy, malformed
// key=value, an empty field, unknown key, a value out of range or not a number.
int promptpolicy_parse(PromptPolicy *p, const char *spec, Error *e);
const char *promptpolicy_name(PromptPolicyKind kind);
// The spec with every parameter spelled out (lm only when given).
void promptpolicy_format(char *out, size_t n, const PromptPolicy *p);
// Items removed from a history of n items: truncate max(0, n - items),
// selective floor(ratio * n) (so 0.35 of 20 removes 7), none 0.
int promptpolicy_n_drop(const PromptPolicy *p, int n);

// Selections over n items (keep [n]: 1 kept, 0 removed). Each has a plain twin.
// truncate: the last min(items, n).
void ppsel_truncate(uint8_t *keep, int n, int items);
void ppsel_truncate_ref(uint8_t *keep, int n, int items);
// selective: removes the n_drop items of lowest info (ties: the older first).
void ppsel_selective(uint8_t *keep, const double *info, int n, int n_drop);
void ppsel_selective_ref(uint8_t *keep, const double *info, int n, int n_drop);

// Self-information of items inside token sequences, one batched forward pass of
// lm (a full model) with every row's logits. Sequence b has len[b] tokens;
// its item j covers tokens at[b][j] .. at[b][j] + item_len - 1; info[b][j]
// receives -sum log_softmax(logits of the token before)[token] (nats) over
// them, in double (a token with nothing before it adds 0).
int pp_item_info(double *const *info, Model *lm, ForwardScratch *scratch, int n_seqs, const int *const *tokens,
                 const int *len, const int *const *at, const int *n_items, int item_len, Error *e);

// What scores histories: an LM and the prompts it reads (its own template and
// vocabulary, resolved against the dataset).
typedef struct {
    Model *lm;
    const Prompter *prompter;
    ForwardScratch scratch;
} PromptScorer;

// Writes the kept items of each history: kept[b] (room for n_hist[b]) gets
// them, oldest first, n_kept[b] their count. scorer: needed by selective only.
int promptpolicy_apply(int *const *kept, int *n_kept, const PromptPolicy *p, PromptScorer *scorer, int n_seqs,
                       const int *const *hist, const int *n_hist, Error *e);

#endif
