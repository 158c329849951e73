// plan.h: layer plans, i.e. how deep each token goes (see model.h, depth[]).
//
// The kind of every prompt token decides its depth. Kinds are the attention
// dump's (DESIGN.md): 0 special, 1 prefix register, 2 instruction, 3 history,
// 4 suffix register, 5 target/generated.
#ifndef EARNEST_PLAN_H
#define EARNEST_PLAN_H

#include <stdint.h>

#include "runtime/config.h"

typedef enum {
    TOKEN_KIND_SPECIAL = 0,
    TOKEN_KIND_PREFIX_REG = 1,
    TOKEN_KIND_INSTRUCTION = 2,
    TOKEN_KIND_HISTORY = 3,
    TOKEN_KIND_SUFFIX_REG = 4,
    TOKEN_KIND_TARGET = 5,
    TOKEN_KIND_COUNT = 6,
} TokenKind;

// depth [T]: every token through every layer.
void plan_depth_full(int *depth, int T, int n_layers);
// depth [T] for the model's method: EARN = registers and targets through all
// N layers, every other token (the prompt) through the first k; every other
// method (finetune, skiplayers, gist, anllm, pod) = full.
void plan_depth_for(int *depth, const uint8_t *kinds, int T, const ModelConfig *c);
// Gist's training mask: mask [T, T] (mask[i*T+j] = 1: token i may see token j <= i)
// is narrowed so that a target token sees only suffix registers (the gist
// tokens) and target tokens, in every layer; other rows are left as they are.
// At inference the same rule is a cache that keeps only the gist tokens after
// the prefill (beam.c).
void plan_mask_gist(uint8_t *mask, const uint8_t *kinds, int T);
// AnLLM's mask, in every layer, for a prompt with an anchor (kind 4, the
// vocabulary's <reg_suf_0>) right after each history item's code:
//   <bos> [words before] item_0 <anc> , item_1 <anc> ... [words after] [targets]
// Segments: history tokens and anchors belong to history segment s = the number
// of anchors before them (segment s = the "," in front of item s, its code, and
// its anchor, which closes it); every other token (special, prefix register,
// instruction word, target/generated) belongs to the one instruction segment.
// Rule: token i sees token j <= i iff j is an anchor, j is in the instruction
// segment, or i and j are in the same segment. So a history token sees <bos>,
// the instruction words before it, the earlier anchors and its own item; the
// instruction words after the history and the targets see the instruction
// segment, every anchor and each other, never a history item's own tokens. mask [T, T] (mask[i*T+j] = 1: i may see j) is only
// narrowed (a pack mask underneath stays in force).
void plan_mask_anllm(uint8_t *mask, const uint8_t *kinds, int T);
// AnLLM at inference: after the prefill under plan_mask_anllm, the prompt cache
// keeps exactly what later tokens may see: every token that is not a history
// token (the instruction segment and the anchors). 1: kept.
int plan_anllm_keeps(uint8_t kind);
// A batch of prompts packed for one forward: tokens [T] and depth [T], prompt u
// at the sum of the earlier lengths; kinds NULL: every token through every layer.
void plan_pack_prompts(int *tokens, int *depth, const ModelConfig *c, int n_users, const int *const *prompts,
                       const uint8_t *const *kinds, const int *len);
// KV capacity per layer [N] of a sequence whose n tokens have depths depth [n]:
// layer l holds the tokens whose depth exceeds l (exactly what the plan stores).
void plan_kv_capacity_of(int *cap, const int *depth, int n, int n_layers);
// KV capacity per layer [N] for a sequence with `n_prompt` prompt tokens
// (registers not counted), `n_regs` registers and `n_gen` generated tokens.
void plan_kv_capacity(int *cap, const ModelConfig *c, int n_prompt, int n_regs, int n_gen);

#endif
