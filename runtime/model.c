// model.c: parameters of the Llama-family decoder and the forward pass.
#include "runtime/model.h"

#include <math.h>
#include <string.h>

// ---------------------------------------------------------------------------
// Parameters

void model_param_info(const ModelConfig *c, int t, ParamTensorInfo *info) {
    size_t L = (size_t)c->n_layers, D = (size_t)c->dim, F = (size_t)c->hidden_dim;
    size_t V = (size_t)c->vocab_size, QD = (size_t)c->n_heads * (size_t)c->head_dim;
    size_t KD = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    memset(info, 0, sizeof *info);
#define T2(name, pl, a, b) do { info->hf_name = name; info->per_layer = pl; info->ndim = 2; \
        info->shape[0] = a; info->shape[1] = b; info->numel = (pl ? L : 1) * (a) * (b); } while (0)
#define T1(name, pl, a) do { info->hf_name = name; info->per_layer = pl; info->ndim = 1; \
        info->shape[0] = a; info->shape[1] = 1; info->numel = (pl ? L : 1) * (a); } while (0)
    switch (t) {
    case 0: T2("model.embed_tokens.weight", 0, V, D); break;
    case 1: T1("model.layers.%d.input_layernorm.weight", 1, D); break;
    case 2: T2("model.layers.%d.self_attn.q_proj.weight", 1, QD, D); break;
    case 3: T2("model.layers.%d.self_attn.k_proj.weight", 1, KD, D); break;
    case 4: T2("model.layers.%d.self_attn.v_proj.weight", 1, KD, D); break;
    case 5: T1("model.layers.%d.self_attn.q_proj.bias", 1, QD); break;
    case 6: T1("model.layers.%d.self_attn.k_proj.bias", 1, KD); break;
    case 7: T1("model.layers.%d.self_attn.v_proj.bias", 1, KD); break;
    case 8: T2("model.layers.%d.self_attn.o_proj.weight", 1, D, QD); break;
    case 9: T1("model.layers.%d.post_attention_layernorm.weight", 1, D); break;
    case 10: T2("model.layers.%d.mlp.gate_proj.weight", 1, F, D); break;
    case 11: T2("model.layers.%d.mlp.up_proj.weight", 1, F, D); break;
    case 12: T2("model.layers.%d.mlp.down_proj.weight", 1, D, F); break;
    case 13: T1("model.norm.weight", 0, D); break;
    case 14: T2("lm_head.weight", 0, V, D); break;
    default: DIE("model_param_info: no tensor %d", t);
    }
#undef T1
#undef T2
    if ((t >= 5 && t <= 7) && !c->attn_bias) info->numel = 0;
    if (t == 14 && c->tie_embeddings) info->numel = 0; // shares embed
}

float **model_param_slot(ModelParams *p, int t) {
    float **slots[MODEL_N_PARAM_TENSORS] = {
        &p->embed, &p->attn_norm, &p->wq, &p->wk, &p->wv, &p->bq, &p->bk, &p->bv,
        &p->wo, &p->mlp_norm, &p->w_gate, &p->w_up, &p->w_down, &p->final_norm, &p->lm_head};
    CHECK(t >= 0 && t < MODEL_N_PARAM_TENSORS, "model_param_slot: no tensor %d", t);
    return slots[t];
}

size_t model_param_count(const ModelConfig *c) {
    size_t n = 0;
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        n += info.numel;
    }
    return n;
}

void model_alloc(Model *m, const ModelConfig *c) {
    memset(m, 0, sizeof *m);
    m->config = *c;
    m->n_params = model_param_count(c);
    m->params_memory = xcalloc(m->n_params, sizeof(float));
    float *at = m->params_memory;
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        *model_param_slot(&m->params, t) = info.numel ? at : NULL;
        at += info.numel;
    }
    if (c->tie_embeddings) m->params.lm_head = m->params.embed;
    int half = c->head_dim / 2;
    m->rope_inv_freq = xmalloc((size_t)half * sizeof(float));
    for (int i = 0; i < half; i++)
        m->rope_inv_freq[i] = (float)pow((double)c->rope_theta, -2.0 * i / (double)c->head_dim);
}

void model_init_random(Model *m, const ModelConfig *c, uint64_t seed, float std) {
    model_alloc(m, c);
    Rng rng;
    rng_seed(&rng, seed);
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        float *p = *model_param_slot(&m->params, t);
        int is_norm = (t == 1 || t == 9 || t == 13);
        for (size_t i = 0; i < info.numel; i++)
            p[i] = is_norm ? 1.0f + 0.1f * rng_normal(&rng) : std * rng_normal(&rng);
    }
}

void model_free(Model *m) {
    free(m->params_memory);
    free(m->rope_inv_freq);
    memset(m, 0, sizeof *m);
}
