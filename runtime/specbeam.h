// specbeam.h: speculative constrained beam search (AtSpeed / BeamSD): a small
// draft model proposes several code levels, the target verifies them all in
// one forward pass. Same inputs, outputs and selection semantics as
// runtime/beam.h (score = sum of log_softmax over the FULL vocabulary,
// trie-constrained, top-B over (beam, token) pairs, ties: earlier beam, then
// smaller token); CPU runtime only.
//
// A call, per user (users of one call move in lockstep rounds):
//   - both models prefill the prompt (the target with its layer plan: an EARN
//     target keeps prompt KV in its first k layers only; the draft must be a
//     full model and runs every prompt token through every layer); the target's
//     prompt row gives level 1 (top-B, as beam.c's step 1);
//   - a round starts from B target beams at level g (their last token not yet
//     fed). The draft feeds what it has not seen of each beam and runs
//     d = min(gamma, L - g - 1) levels of constrained beam search with N draft
//     beams (scores: the target's score of the beam + the draft's log-probs);
//   - the target feeds, in ONE model_forward, every beam's last token and all
//     drafted nodes below it as a tree: one sequence per target beam, over the
//     beam's cache (whose parent is the shared prompt KV), with a mask (a node
//     sees its ancestors and itself) and positions by depth;
//   - verification walks the drafted levels with the target's logits:
//       strict : level g+j is accepted when every one of the target's top-B
//                (beam, token) pairs there is a drafted node; so the result is
//                exactly the target's ordinary beam search;
//       relaxed: each drafted child x of the current beams is accepted with
//                probability min(1, p(x)/q(x)) (sequence probabilities: p the
//                target's, q the draft's over the drafted levels, both from the
//                target's score of the round's beam); at least B accepted: a
//                random B of them go on; otherwise the accepted ones plus
//                samples from the residual max(p - q, 0) (without replacement)
//                form the level and the round stops (spec_relaxed_select);
//     the first level not accepted (or the level after the last drafted one)
//     is chosen from the target's logits of the level above, which the tree
//     fed: every round gains accepted + 1 levels for one target call;
//   - KV: the target's tree goes into a scratch cache per beam; the new beams'
//     caches are gathered from it (kvcache_gather): their tokens from earlier
//     rounds + the accepted path; rejected nodes' entries are dropped with the
//     scratch. The draft's cache of a new beam is the longest fed prefix of its
//     path that some draft cache holds (the beam's own, or a draft beam's after
//     the last draft step), truncated to it; the next round feeds the rest.
#ifndef EARNEST_SPECBEAM_H
#define EARNEST_SPECBEAM_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/beam.h"
#include "runtime/model.h"
#include "runtime/trie.h"
#include "runtime/util.h"

#define SPEC_DEFAULT_GAMMA 3
#define SPEC_DEFAULT_DRAFT_BEAMS 40
#define SPEC_MAX_LEVELS 16 // code levels the search supports

typedef enum { SPEC_VERIFY_STRICT = 0, SPEC_VERIFY_RELAXED = 1 } SpecVerify;

// "strict" / "relaxed"; -1 for another name.
int spec_verify_parse(SpecVerify *v, const char *name);
const char *spec_verify_name(SpecVerify v);

// What drafting and verification did (one call's, or summed over calls).
typedef struct {
    double draft_s;         // draft forwards (prefill included) and the draft's selection and cache copies
    double verify_s;        // the target's tree forwards, the verification and the KV gathers
    size_t target_calls;    // target model_forward calls (prefill included)
    size_t draft_calls;     // draft model_forward calls (prefill included)
    size_t user_target_calls; // sum over users of the target calls each took part in
    size_t users;           // users searched
    size_t user_rounds;     // sum over users of verification rounds
    size_t accepted_levels; // sum over user-rounds of drafted levels accepted
    size_t tree_nodes;      // drafted nodes the target fed (roots not counted)
    size_t level_tried[SPEC_MAX_LEVELS + 1];    // by code level (1-based): drafted levels verified
    size_t level_accepted[SPEC_MAX_LEVELS + 1]; //                        and accepted
} SpecFigures;
void spec_figures_add(SpecFigures *acc, const SpecFigures *f);

typedef struct {
    Model *target, *draft;
    const Trie *trie;
    int width;        // beams kept per level and returned per user (B)
    int steps;        // code levels (L)
    int n_leaves;
    int gamma;        // levels drafted per round at most
    int draft_beams;  // N
    SpecVerify verify;
    Rng rng;          // relaxed verification's draws (seeded at init; runs continue the stream)
    ForwardScratch tscratch, dscratch;
    // figures of the last specbeam_run call
    double prefill_s;       // both prefills
    double decode_s;        // everything after them
    double prefill_flops;   // the target prefill's FLOPs
    size_t kv_bytes;        // target KV after the last generated token: prompt caches + beam caches
    size_t kv_scratch_bytes; // target tree caches + all draft caches (allocated for the call)
    size_t prompt_tokens, gen_tokens;
    SpecFigures fig;        // drafting and verification
} SpecBeam;

// Bad input (-1, e names it): the draft's vocabulary size differs from the
// target's, the draft is not a full (finetune) model, width < 1, gamma < 1,
// draft_beams < width, more than SPEC_MAX_LEVELS code levels, a trie token
// outside the vocabulary.
int specbeam_init(SpecBeam *sb, Model *target, Model *draft, const Trie *trie, int width, int gamma, int draft_beams,
                  SpecVerify verify, uint64_t seed, Error *e);
void specbeam_free(SpecBeam *sb);

// As beam_search_run (beam.h): out [n_users], kinds may be NULL for a full
// target. Accumulates nothing: the figures describe this call.
int specbeam_run(BeamHyps *out, SpecBeam *sb, int n_users, const int *const *prompts, const uint8_t *const *kinds,
                 const int *prompt_len, Error *e);

// Relaxed verification of one level of one user. Candidates i < n are the
// children of the current beams in (beam, token) order; logp [n] their target
// sequence log-probabilities, logq [n] the draft's (-INFINITY: not drafted).
// Draws, in this order: one uniform u per drafted candidate in index order
// (accepted when u < min(1, exp(logp - logq))); then, with at least
// need = min(W, n) accepted, a partial Fisher-Yates over the accepted list
// (draw i picks position i + rng_u64 % (count - i)) keeping need of them,
// *accepted = 1; else, *accepted = 0 and while fewer than need are chosen, one
// uniform picks among the candidates not chosen by their residual
// max(exp(logp) - exp(logq), 0) (all residuals 0: by exp(logp)), scanning in
// index order. sel [need] gets the chosen indices sorted by logp, best first
// (ties: smaller index). Returns need.
int spec_relaxed_select(int *sel, int *accepted, const double *logp, const double *logq, int n, int W, Rng *rng);

#endif
