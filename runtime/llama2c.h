// llama2c.h: reading a llama2.c legacy `.bin` model into our Model.
//
// File layout (little-endian):
//   int32 header[7]: dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//                    vocab_size (negative: an unshared classifier follows), seq_len
//   float32 weights, in this order (L layers, D dim, F hidden, V vocab,
//   E = D / n_heads head size, G kv heads; every matrix [out, in] row-major):
//     token_embedding [V, D], rms_att [L, D], wq [L, D, D], wk [L, G*E, D],
//     wv [L, G*E, D], wo [L, D, D], rms_ffn [L, D], w1 [L, F, D], w2 [L, D, F],
//     w3 [L, F, D], rms_final [D], freq_cis_real [seq_len, E/2],
//     freq_cis_imag [seq_len, E/2] (unused), wcls [V, D] (only if unshared)
//
// llama2.c rotates interleaved pairs (2i, 2i+1) of each head with RoPE, while
// the Hugging Face layout (our runtime) rotates halves (i, i + E/2); the rows
// of wq and wk are permuted per head on the way in, as HF's own Llama
// conversion does, so the converted model computes the same function.
#ifndef EARNEST_LLAMA2C_H
#define EARNEST_LLAMA2C_H

#include "runtime/model.h"
#include "runtime/util.h"

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads;
    int vocab_size;        // absolute value of the header's field
    int seq_len;
    int shared_classifier; // header vocab_size > 0: the classifier is the embedding
} Llama2cHeader;

// Reads and validates the header of `path` and checks that the file size is
// exactly what the header implies. Errors name the file and the field.
int llama2c_read_header(Llama2cHeader *h, const char *path, Error *e);
// The ModelConfig of a llama2.c model (Llama, rms_eps 1e-5, rope_theta 10000).
void llama2c_config(ModelConfig *c, const Llama2cHeader *h);
// Loads the whole model (allocating m); nothing stays allocated on failure.
int llama2c_load(Model *m, const char *path, Error *e);
// The parser behind llama2c_load, on the file's len bytes in memory (the fuzz
// harness calls it); `path` names the file in messages. The header is checked
// against len before anything is allocated.
int llama2c_parse(Model *m, const void *data, size_t len, const char *path, Error *e);
// Row permutation of one projection [n_heads * E, in]: out row h*E + j*(E/2) + i
// (halves layout) = in row h*E + 2i + j (interleaved layout), j in {0, 1}.
void llama2c_permute_rope_rows(float *out, const float *in, int n_heads, int head_dim, int in_dim);

#endif
