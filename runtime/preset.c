// preset.c: see preset.h.
#include "runtime/preset.h"

#include <string.h>

int preset_config(ModelConfig *c, const char *name, int vocab_size, Error *e) {
    memset(c, 0, sizeof *c);
    c->arch = MODEL_ARCH_LLAMA;
    c->max_seq_len = 8192 + 64;
    c->rms_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    c->tie_embeddings = 1;
    c->method = METHOD_FINETUNE;
    int vocab = 1024;
    if (!strcmp(name, "tiny")) {
        c->dim = 64; c->hidden_dim = 176; c->n_layers = 4; c->n_heads = 4; c->n_kv_heads = 2;
    } else if (!strcmp(name, "small")) {
        c->dim = 256; c->hidden_dim = 688; c->n_layers = 8; c->n_heads = 8; c->n_kv_heads = 4;
    } else if (!strcmp(name, "draft")) { // AtSpeed draft: 2 layers, half the small preset's width
        c->dim = 128; c->hidden_dim = 352; c->n_layers = 2; c->n_heads = 4; c->n_kv_heads = 2;
    } else if (!strcmp(name, "base")) {
        c->dim = 768; c->hidden_dim = 2048; c->n_layers = 12; c->n_heads = 12; c->n_kv_heads = 4;
    } else if (!strcmp(name, "llama2-7b")) {
        c->dim = 4096; c->hidden_dim = 11008; c->n_layers = 32; c->n_heads = 32; c->n_kv_heads = 32;
        c->max_seq_len = 4096; c->rms_eps = 1e-5f; c->tie_embeddings = 0; vocab = 32000;
    } else if (!strcmp(name, "qwen2.5-7b")) {
        c->arch = MODEL_ARCH_QWEN2; c->attn_bias = 1;
        c->dim = 3584; c->hidden_dim = 18944; c->n_layers = 28; c->n_heads = 28; c->n_kv_heads = 4;
        c->max_seq_len = 32768; c->rope_theta = 1000000.0f; c->tie_embeddings = 0; vocab = 152064;
    } else {
        return err_set(e, "unknown preset '%s' (known: tiny, small, draft, base, llama2-7b, qwen2.5-7b)", name);
    }
    c->vocab_size = vocab_size > 0 ? vocab_size : vocab;
    c->head_dim = c->dim / c->n_heads;
    return 0;
}
