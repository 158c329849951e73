// pack.h: packed multi-target training sequences.
//
// A train sample is (history = the last max_history items before train
// position i, target = item i), for every i >= 1 of a user's train sequence
// (0-based; samples.h). Fed alone, each sample is its own prompt
// (prompter_build). Targets of one user whose histories all start at the
// user's first item (i <= max_history) have prompts that agree up to the end
// of the shorter history, so one packed sequence holds them all:
//
//   shared part   <bos> [P prefix regs] [words before] item_0 , item_1 , ... , item_{m-1}
//   group of i    [words after] [S suffix regs] code_0 .. code_{L-2} of item i   (one per target)
//
// m = the largest history in the pack. Each group is made to see exactly what
// its own prompt sees:
//   positions  the group of target i continues right after the last code token
//              of item i-1 (where its own prompt puts the words after the
//              history); shared tokens keep their index as position;
//   mask       a group token sees the shared tokens up to and including the
//              last code token of item i-1 (not the "," after it) and the
//              earlier tokens of its own group; shared tokens are causal;
//   depth      from the kinds (plan_depth_for), as in the prompt.
// The last code token of a target is left out: it predicts nothing.
// AnLLM's prompts (PROMPT_FORM_ANCHORS) put an anchor after each item's code:
// there "the last code token of item i-1" reads "the anchor of item i-1".
//
// Targets whose history window slides (i > max_history) start at different
// items, so no two share a prefix exactly: each gets a sequence of its own
// (which is its prompt without the last code token). A pack is also capped at
// max_tokens (a user's early targets are split into several packs, each with
// its own copy of the shared part), so batches stay balanced.
//
// Labels: labels[t] is the token that token t must predict (-1: no loss).
// The decision token of target i (the last token before its code: the last
// suffix register, else the last word after the history, else the last code
// token of item i-1) predicts code_0; code_j predicts code_{j+1}.
#ifndef EARNEST_PACK_H
#define EARNEST_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "datasets/dataset.h"
#include "datasets/prompt.h"
#include "runtime/util.h"

typedef struct {
    int user;     // 1-based
    int window;   // train position (0-based) of the first history item
    int first;    // targets: train positions first..last (0-based, inclusive);
    int last;     //   target i's history is items window..i-1
    int n_tokens; // length of the packed sequence
} Pack;

typedef struct {
    int max_history;        // <= 0: whole histories
    int max_tokens;         // cap per pack (<= 0: none; a pack with one target may exceed it)
    size_t n_packs;
    Pack *packs;            // [n_packs] by user, then target
    size_t n_targets;       // train samples covered (one per target)
    size_t tokens_packed;   // sum of n_tokens: what one epoch feeds
    size_t tokens_unpacked; // sum of the samples' full prompt lengths (target included)
} PackPlan;

// Plans the packs of every user's train split.
void pack_plan_build(PackPlan *pp, const Dataset *d, const Prompter *p, int max_history, int max_tokens);
void pack_plan_free(PackPlan *pp);
// Tokens of the pack (user, window, first..last) without building it.
int pack_length(const Prompter *p, int window, int first, int last);

// One packed sequence, materialised. Buffers grow as needed and are reused.
typedef struct {
    int n;              // tokens
    int n_targets;
    int *tokens;        // [n]
    uint8_t *kinds;     // [n] TokenKind
    int *positions;     // [n] RoPE positions
    int *labels;        // [n] token to predict, or -1
    uint8_t *mask;      // [n * n] mask[i*n+j]: token i may see token j (j <= i); NULL when plainly causal
    int *targets;       // [n_targets] target item ids
    int *label_at;      // [n_targets * L]: index of the token predicting code j of target t
    size_t cap_tokens, cap_mask, cap_targets;
    uint8_t *mask_buf;  // storage behind mask
} PackedSeq;

// Builds pack pk of dataset d's train split. Returns the token count.
int pack_build(PackedSeq *s, const Pack *pk, const Dataset *d, const Prompter *p);
void packed_seq_free(PackedSeq *s);
// Makes s->mask explicit: a plainly causal sequence (mask NULL) gets its
// lower-triangular mask in mask_buf, so that a method can narrow it further.
void pack_mask_materialise(PackedSeq *s);

// Seeded shuffle of the pack order (Fisher-Yates): order [n] receives a
// permutation of 0..n-1 that depends only on (n, seed).
void pack_shuffle(size_t *order, size_t n, uint64_t seed);
// Splits order[0..n) into batches of consecutive packs holding at most
// batch_tokens tokens (a pack larger than that is a batch of its own).
// starts [n + 1] receives the first index of each batch and a final n;
// returns the number of batches.
size_t pack_batches(size_t *starts, const size_t *order, size_t n, const PackPlan *pp, size_t batch_tokens);

#endif
