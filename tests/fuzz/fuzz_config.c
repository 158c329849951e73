// fuzz_config.c: libFuzzer harness for config.json (config_load, runtime/config.h).
// config_load reads only from a path, so each input is written to one
// temporary file (in /dev/shm when there is one) and loaded from there.
// Input: the file's text. On success the configuration must validate, and
// config_save followed by config_load must give it back unchanged.
// Build and run: tests/run_fuzz.sh.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char in_path[64], out_path[64];

static void make_paths(void) {
    if (in_path[0]) return;
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(in_path, sizeof in_path, "%s/fuzz_config_%d.json", dir, (int)getpid());
    snprintf(out_path, sizeof out_path, "%s/fuzz_config_%d_out.json", dir, (int)getpid());
}

static int same(const ModelConfig *a, const ModelConfig *b) {
    return a->arch == b->arch && a->dim == b->dim && a->hidden_dim == b->hidden_dim &&
           a->n_layers == b->n_layers && a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
           a->head_dim == b->head_dim && a->vocab_size == b->vocab_size && a->max_seq_len == b->max_seq_len &&
           a->rms_eps == b->rms_eps && a->rope_theta == b->rope_theta && a->tie_embeddings == b->tie_embeddings &&
           a->attn_bias == b->attn_bias && a->method == b->method && a->layer_split_k == b->layer_split_k &&
           a->n_prefix_regs == b->n_prefix_regs && a->n_suffix_regs == b->n_suffix_regs &&
           !strcmp(a->prompt_template, b->prompt_template);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    make_paths();
    FILE *f = fopen(in_path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f) != 0) abort();
    ModelConfig c, back;
    Error e;
    if (config_load(&c, in_path, &e) == 0) {
        if (config_validate(&c, "fuzz", &e) != 0) abort();
        if (config_save(&c, out_path, &e) != 0) abort();
        if (config_load(&back, out_path, &e) != 0 || !same(&c, &back)) abort();
        unlink(out_path);
    }
    unlink(in_path);
    return 0;
}
