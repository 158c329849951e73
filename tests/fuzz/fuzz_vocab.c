// fuzz_vocab.c: libFuzzer harness for vocab.txt (vocab_parse, the parser
// behind vocab_load). Input: the file's text (not NUL-terminated). On success
// every token must look itself up, and the special, register and code tables
// must point at tokens of the right kind and number.
// Build and run: tests/run_fuzz.sh.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/vocab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const Vocab *v) {
    if (v->size < 4 || v->pad < 0 || v->bos < 0 || v->eos < 0 || v->unk < 0) abort();
    for (int id = 0; id < v->size; id++) {
        if (vocab_id(v, v->tokens[id]) != id || strcmp(vocab_token(v, id), v->tokens[id])) abort();
        if (v->kind[id] == VOCAB_CODE && vocab_code_id(v, v->level[id], v->index[id]) != id) abort();
    }
    for (int i = 0; i < v->n_reg_pre; i++)
        if (v->kind[v->reg_pre[i]] != VOCAB_REG_PRE || v->index[v->reg_pre[i]] != i) abort();
    for (int i = 0; i < v->n_reg_suf; i++)
        if (v->kind[v->reg_suf[i]] != VOCAB_REG_SUF || v->index[v->reg_suf[i]] != i) abort();
    for (int j = 0; j < v->code_levels; j++)
        for (int i = 0; i < v->codes_per_level[j]; i++) {
            int id = vocab_code_id(v, j, i);
            if (id >= 0 && (v->kind[id] != VOCAB_CODE || v->level[id] != j || v->index[id] != i)) abort();
        }
    int ids[4] = {0, v->size - 1, v->size / 2, v->size};
    char out[DATASET_CODE_STR_MAX], text[512];
    vocab_code_string(out, v, ids, 4);
    vocab_decode(text, sizeof text, v, ids, 4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    memcpy(text, data, size);
    Vocab v;
    Error e;
    if (vocab_parse(&v, text, size, "fuzz/vocab.txt", &e) == 0) {
        check(&v);
        vocab_free(&v);
    }
    free(text);
    return 0;
}
