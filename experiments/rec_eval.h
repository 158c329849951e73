// rec_eval.h: the one evaluation path of earnest. A split's samples become
// prompts (datasets/prompt.h), the model ranks item codes for each by
// constrained beam search (runtime/beam.h), the codes become strings
// (vocab_code_string) and Recall/NDCG accumulate (analysis/recmetrics.h),
// with MostPop scored beside the model on the same users. `earnest eval` and
// the validation inside `earnest train` both call rec_eval_run.
//
// Efficiency (EARN's names, DESIGN.md "Metrics"), summed over the call:
//   prefill_s / decode_s   wall time of the prefill forwards (with a prompt
//                          policy, its selection too: compress_s) / of everything
//                          after them (beam selection and decode forwards)
//   gen_tokens             beams x code tokens, all users (tau = gen / time)
//   sigma_sum              KV bytes after each user's last generated token:
//                          prompt KV once (with a KV policy: the entries it
//                          kept) + each beam's own generated tokens
//   sigma_full_sum         the same in closed form for a full model of the same
//                          shape on the same prompts without registers (whole
//                          histories: before any prompt policy)
#ifndef EARNEST_REC_EVAL_H
#define EARNEST_REC_EVAL_H

#include <stddef.h>
#include <stdio.h>

#include "analysis/recmetrics.h"
#include "datasets/dataset.h"
#include "datasets/mostpop.h"
#include "datasets/prompt.h"
#include "datasets/samples.h"
#include "datasets/vocab.h"
#include "experiments/device.h"
#include "experiments/promptpolicy.h"
#include "runtime/kvpolicy.h"
#include "runtime/model.h"

// The cutoffs every evaluation reports (DESIGN.md: K in {1, 5, 10, 20}).
extern const int REC_EVAL_KS[4];
#define REC_EVAL_N_KS 4

// What is evaluated. model == NULL scores MostPop alone.
typedef struct {
    Model *model;
    DeviceModel *runtime;       // the runtime that ranks (--device); NULL: the CPU runtime on `model`
    const Vocab *vocab;         // the model's vocabulary (with a model)
    const Prompter *prompter;   // the model's prompts (with a model)
    const MostPop *mostpop;     // NULL: no MostPop beside the model
    const Dataset *data;
    const SampleSet *samples;   // the evaluated split's samples
} RecEvalInputs;

typedef struct {
    int beam;            // beams returned per user (20)
    int batch;           // users per beam-search call (16)
    const int *pick;     // NULL: samples 0 .. n_users-1; else these sample indices, in this order
    size_t n_users;      // users to score (0: all samples)
    FILE *rankings;      // NULL, or a stream for "user<TAB>rank<TAB>code<TAB>score" lines
    int progress;        // 1: progress display on stderr
    const KVPolicy *kv_policy; // NULL: the prompt KV is kept whole (runtime/kvpolicy.h)
    const SpecOptions *spec;   // NULL or spec->draft NULL: ordinary beam search; else speculative (CPU)
    const PromptPolicy *prompt_policy; // NULL: whole histories; else each history is compressed before
                                       // its prompt is built (experiments/promptpolicy.h)
    PromptScorer *scorer;      // selective's LM and its prompts
} RecEvalOptions;

typedef struct {
    RecMetrics model;    // at REC_EVAL_KS (empty without a model)
    RecMetrics mostpop;  // at REC_EVAL_KS (empty without inputs.mostpop)
    size_t n_users;      // samples scored
    double prefill_s, decode_s;
    size_t prompt_tokens, gen_tokens;
    double sigma_sum, sigma_full_sum;
    size_t kv_peak;      // KV bytes of the largest beam-search call
    SpecFigures spec;    // with a draft: drafting and verification, summed over the calls
    double compress_s;   // prompt policy: selecting the kept items (scoring included); part of prefill_s
    size_t hist_items, hist_kept; // history items before and after the prompt policy, all users
} RecEvalResult;

void rec_eval_options_default(RecEvalOptions *o);

// Fails only when the model cannot rank (a trie token outside its vocabulary,
// a forward error); r is complete on success.
int rec_eval_run(RecEvalResult *r, const RecEvalInputs *in, const RecEvalOptions *o, Error *e);

#endif
