// bench_policy.h: the entries of `earnest bench --method`: the model methods
// (full, earn, and the learned baselines skiplayers[:keep=M],
// gist[:tokens=G], anllm[:items=N], pod[:regs=P,words=X] and
// compress500x[:tokens=C,rank=R], on the same random
// weights: skiplayers runs their first M layers, default N/2; gist puts G gist
// tokens, default 1, after the prompt and keeps only their KV; anllm reads the
// last N items of --gen tokens of the L-token prompt (default: as many as fit
// after one leading token) with an anchor after each (L + N tokens) under the
// AnLLM mask and keeps the anchors and the L - N*gen tokens in front; pod drops
// the prompt's X instruction words (default: the LC-Rec template's, 47) and puts
// P soft-prompt registers (default 1) in front: L - X + P tokens;
// compress500x[:tokens=C,rank=R] puts C compression tokens (default 1) after the
// prompt, prefills prompt and compression tokens with rank-R LoRA adapters
// (default 8; B = 0, so the cost is LoRA's and the outputs the base's; a
// benched compress500x model keeps its own adapters) and keeps only the
// compression tokens' KV, as gist) and every KV policy (runtime/kvpolicy.h) and prompt
// policy (experiments/promptpolicy.h), each applied to the full model.
//
//   --method full,earn,snapkv:budget=0.3,window=16,streaming:tokens=64,rerotate=1,truncate:items=5
//
// The list is split at commas; a field that holds '=' but no ':' continues the
// previous policy's key=value list (so a policy keeps its usual spec). Each
// policy row is the full model's beam search with that policy: KV policies
// compress the prompt KV after the prefill (CPU runtime); prompt policies
// shorten the prompt before it. Bench prompts are random token ids, so a
// prompt policy sees them as items of --gen tokens counted from the end (the
// L mod G tokens in front, like a template's words, are always kept):
// truncate keeps the last `items`; selective scores every item with its LM
// (lm=DIR, or the benched model itself; an LM with a smaller vocabulary reads
// the ids modulo its size: on random ids only its cost is meaningful) and
// drops floor(ratio * items). The selection, timed over --reps runs (median),
// is added to the row's prefill_ms, as eval counts it.
#ifndef EARNEST_BENCH_POLICY_H
#define EARNEST_BENCH_POLICY_H

#include "experiments/promptpolicy.h"
#include "runtime/kvpolicy.h"
#include "runtime/model.h"

#define BENCH_MAX_METHODS 32

typedef struct {
    ModelMethod method;  // METHOD_EARN or the learned baseline's method for those entries, else METHOD_FINETUNE
    int keep_layers;     // skiplayers: layers run (0: half the model's)
    int gist_tokens;     // gist: gist tokens (1)
    int anllm_items;     // anllm: history items with an anchor (0: (L - 1) / gen)
    int pod_regs;        // pod: soft-prompt registers (1)
    int pod_words;       // pod: instruction words the soft prompt replaces (-1: the LC-Rec template's)
    int c500x_tokens;    // compress500x: compression tokens (1)
    int lora_rank;       // compress500x: LoRA rank of the adapters added to weights without them (8)
    char name[32];       // the CSV's method column: full, earn, or the policy's name
    char spec[2048];     // the CSV's policy column: the policy's full spec ("" for full and earn)
    int has_kv, has_prompt;
    KVPolicy kv;
    PromptPolicy pp;
    Model lm;            // selective's lm=DIR, loaded by bench_methods_load
    int have_lm;
} BenchMethod;

// Parses the list into out [BENCH_MAX_METHODS]; returns the count, or -1 with e
// set (unknown method or policy, a policy's bad key or value, an empty list).
int bench_methods_parse(BenchMethod *out, const char *list, Error *e);
// Loads the lm=DIR of selective entries (a full model).
int bench_methods_load(BenchMethod *m, int n, Error *e);
void bench_methods_free(BenchMethod *m, int n);

// A prompt policy on B random prompts of `len` tokens each (items of G tokens
// counted from the end): rewrites prompts[b] in place and sets lens[b]; the
// selection runs reps + 1 times (the first untimed), *ms the median.
int bench_prompt_policy(int **prompts, int *lens, int B, int len, int G, const BenchMethod *m, Model *target,
                        int reps, double *ms, Error *e);

#endif
