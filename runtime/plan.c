// plan.c: see plan.h.
#include "runtime/plan.h"

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

void plan_kv_capacity(int *cap, const ModelConfig *c, int n_prompt, int n_regs, int n_gen) {
    for (int l = 0; l < c->n_layers; l++) {
        int earn_upper = c->method == METHOD_EARN && l >= c->layer_split_k;
        cap[l] = (earn_upper ? 0 : n_prompt) + n_regs + n_gen;
    }
}
