// beam.h: constrained beam search over item codes (AtSpeed semantics),
// batched over users, with the prompt's KV computed once and shared.
//
// Semantics (DESIGN.md, "KV cache and decoding"):
//   - a beam's score is the sum of its tokens' log_softmax over the FULL
//     vocabulary; tokens the trie does not allow after the beam's prefix are
//     at -inf and are simply never candidates (no renormalisation over the
//     allowed ones);
//   - step 1 expands the one row of the prompt's last token; every later step
//     takes the top `width` (beam, token) pairs over all beams of a user;
//   - `steps` = the trie's code length (4), strict trie: every returned beam
//     is a complete item code;
//   - results are sorted by score, best first; ties keep the earlier beam, then
//     the smaller token id (deterministic).
//
// Runtime layout: users of one call are prefilled in one model_forward (the
// model's layer plan applies: an EARN model runs prompt tokens through the
// first k layers only). Each user's prompt KV lives in one cache; its beams are
// child caches (parent = that prompt cache) holding only their generated
// tokens, steps - 1 of them (the last token is chosen, never fed). Each decode
// step is one model_forward over all beams of all users. Reordering beams after
// a step moves cache pointers (a beam that survives keeps its cache) and copies
// only the small child caches of beams chosen more than once.
#ifndef EARNEST_BEAM_H
#define EARNEST_BEAM_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/kvpolicy.h"
#include "runtime/trie.h"
#include "runtime/model.h"
#include "runtime/util.h"

#define BEAM_DEFAULT_WIDTH 20

// One user's result.
typedef struct {
    int n;           // beams returned: min(width, item codes in the trie)
    int *tokens;     // [width * steps] beam j's code tokens at j * steps
    double *scores;  // [width] cumulative log-probabilities, descending
} BeamHyps;

// Called after every model_forward with the logits the search is about to use:
// step 0 is the prefill (one row per user), step s >= 1 feeds each beam its
// s-th token. Row i belongs to user row_user[i] (index within the call) and has
// been fed the generated tokens row_tokens[i * n_tokens .. + n_tokens) (n_tokens = s).
typedef void (*BeamStepHook)(void *ctx, int step, int n_rows, const int *row_user, const int *row_tokens,
                             int n_tokens, const float *logits);

typedef struct {
    Model *model;
    const Trie *trie;
    int width;        // beams kept per step and returned per user
    int steps;        // tokens per code (trie->levels)
    int n_leaves;     // distinct item codes in the trie
    ForwardScratch scratch;
    // figures of the last beam_search_run call
    double prefill_s;      // the prefill forward
    double decode_s;       // everything after it: selections and decode forwards
    double prefill_flops;  // FLOPs of the prefill forward (ForwardScratch.last_flops)
    size_t kv_bytes;       // KV allocated after the last generated token (prompt caches + beam caches);
                           // with a KV policy the prompt caches hold (and allocate) only the kept entries
    size_t prompt_tokens;  // tokens prefilled (registers included)
    size_t gen_tokens;     // generated tokens: sum over users of beams x steps
    BeamStepHook hook;     // optional, for tests
    void *hook_ctx;
    const KVPolicy *kv_policy; // optional (full models only): compresses each prompt's KV after the
                               // prefill (runtime/kvpolicy.h); the compression counts as prefill time
} BeamSearch;

// Fails if a trie token is outside the model's vocabulary or width < 1.
int beam_search_check(const Trie *trie, int vocab_size, int width, Error *e);
// The checks of a run (users, beams W, an EARN model's token kinds, empty
// prompts); *T = the prompt tokens of all users. Shared by the GPU search.
int beam_run_check(size_t *T, const ModelConfig *c, int W, int n_users, const uint8_t *const *kinds,
                   const int *prompt_len, Error *e);
int beam_search_init(BeamSearch *bs, Model *model, const Trie *trie, int width, Error *e);
void beam_search_free(BeamSearch *bs);

// out [n_users]: filled by the call (free each with beam_hyps_free).
// prompts[u] [prompt_len[u]] token ids; kinds[u] [prompt_len[u]] TokenKind of
// each (runtime/plan.h), which decide the layer plan; kinds may be NULL for a
// full (finetune) model, meaning every token goes through every layer.
int beam_search_run(BeamHyps *out, BeamSearch *bs, int n_users, const int *const *prompts,
                    const uint8_t *const *kinds, const int *prompt_len, Error *e);
void beam_hyps_free(BeamHyps *h);

// The selection both searches share (runtime/specbeam.c uses it too): a
// (beam, token) candidate of one user's step, ordered best first; ties: the
// earlier beam, then the earlier trie edge (edges are sorted by token).
typedef struct {
    double score;
    int beam;   // the beam it extends (index within the user's beams)
    int edge;   // trie edge: token edge_token[edge], leads to node edge + 1
} BeamCand;
int beam_cand_cmp(const void *a, const void *b);
// log of the softmax denominator of one logits row x [V] (double: V terms).
double beam_row_logz(const float *x, size_t V);

// One prefill call over n_users prompts (T tokens in all): tokens and depths
// packed by the layer plan, prompt caches prompt[u] sized by it (layer l holds
// the tokens whose depth exceeds l: exactly what is stored), and the LOGITS_LAST
// batch over them. Shared by beam.c and specbeam.c; free releases the packing,
// not the caches.
typedef struct {
    int *tokens, *depth;
    KVCache **caches;
    ForwardBatch fb;
} BeamPromptBatch;
void beam_prompt_batch_init(BeamPromptBatch *b, KVCache *prompt, const ModelConfig *c, int n_users,
                            const int *const *prompts, const uint8_t *const *kinds, const int *prompt_len, size_t T);
void beam_prompt_batch_free(BeamPromptBatch *b);

// The closed-form KV bytes of one user's search (DESIGN.md accounting): prompt
// once, shared; `beams` beams of `gen` stored tokens each; bytes per token and
// layer = 2 (k, v) * n_kv_heads * head_dim * sizeof(float).
//   full: bptl * N * (L + beams * gen)        (registers, if any, counted in L)
//   EARN: bptl * (k * L + N * (r + beams * gen))
//   Gist: bptl * N * (r + beams * gen)          (the prompt's own KV is dropped)
//   compress500x: as Gist (r = its compression tokens, KV computed with LoRA)
//   POD:  full's, L the prompt without its instruction words, r = P soft-prompt registers
//   AnLLM: full's with L = kept instruction-segment tokens (<bos>, instruction
//          words), r = anchors (one per history item): what the cache keeps
// L = prompt tokens that are not registers, r = registers (Gist: gist tokens).
size_t beam_kv_bytes_closed_form(const ModelConfig *c, int L, int r, int beams, int gen);

#endif
