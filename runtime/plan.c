// plan.c: see plan.h.
#include "runtime/plan.h"

#include <string.h>

void plan_depth_full(int *depth, int T, int n_layers) {
    for (int i = 0; i < T; i++) depth[i] = n_layers;
}

void plan_depth_for(int *depth, const uint8_t *kinds, int T, const ModelConfig *c) {
    if (c->method != METHOD_EARN) {
        plan_depth_full(depth, T, c->n_layers);
        return;
    }
    for (int i = 0; i < T; i++) {
        int reg_or_gen = kinds[i] == TOKEN_KIND_PREFIX_REG || kinds[i] == TOKEN_KIND_SUFFIX_REG ||
                         kinds[i] == TOKEN_KIND_TARGET;
        depth[i] = reg_or_gen ? c->n_layers : c->layer_split_k;
    }
}

void plan_mask_gist(uint8_t *mask, const uint8_t *kinds, int T) {
    for (int i = 0; i < T; i++) {
        if (kinds[i] != TOKEN_KIND_TARGET) continue;
        for (int j = 0; j < i; j++)
            if (kinds[j] != TOKEN_KIND_SUFFIX_REG && kinds[j] != TOKEN_KIND_TARGET) mask[(size_t)i * T + j] = 0;
    }
}

// Segment of each token (plan.h): -1 the instruction segment, else its history segment.
static int anllm_segment(uint8_t kind, int anchors_before) {
    return kind == TOKEN_KIND_HISTORY || kind == TOKEN_KIND_SUFFIX_REG ? anchors_before : -1;
}

void plan_mask_anllm(uint8_t *mask, const uint8_t *kinds, int T) {
    for (int i = 0, anchors_i = 0; i < T; anchors_i += kinds[i] == TOKEN_KIND_SUFFIX_REG, i++) {
        const int seg_i = anllm_segment(kinds[i], anchors_i);
        for (int j = 0, anchors_j = 0; j < i; anchors_j += kinds[j] == TOKEN_KIND_SUFFIX_REG, j++) {
            const int seg_j = anllm_segment(kinds[j], anchors_j);
            if (kinds[j] != TOKEN_KIND_SUFFIX_REG && seg_j != -1 && seg_j != seg_i) mask[(size_t)i * T + j] = 0;
        }
    }
}

int plan_anllm_keeps(uint8_t kind) { return kind != TOKEN_KIND_HISTORY; }

void plan_pack_prompts(int *tokens, int *depth, const ModelConfig *c, int n_users, const int *const *prompts,
                       const uint8_t *const *kinds, const int *len) {
    for (int u = 0, at = 0; u < n_users; at += len[u], u++) {
        memcpy(tokens + at, prompts[u], (size_t)len[u] * sizeof(int));
        if (kinds) plan_depth_for(depth + at, kinds[u], len[u], c);
        else plan_depth_full(depth + at, len[u], c->n_layers);
    }
}

void plan_kv_capacity_of(int *cap, const int *depth, int n, int n_layers) {
    for (int l = 0; l < n_layers; l++) {
        cap[l] = 0;
        for (int i = 0; i < n; i++) cap[l] += depth[i] > l;
    }
}

void plan_kv_capacity(int *cap, const ModelConfig *c, int n_prompt, int n_regs, int n_gen) {
    for (int l = 0; l < c->n_layers; l++) {
        int earn_upper = c->method == METHOD_EARN && l >= c->layer_split_k;
        cap[l] = (earn_upper ? 0 : n_prompt) + n_regs + n_gen;
    }
}
