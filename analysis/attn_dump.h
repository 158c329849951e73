// attn_dump.h: the attention dump (HDF5), writer and reader.
//
// File layout (DESIGN.md "Files the tools write"; readable by h5py):
//   /                      attributes: format = "earnest-attn", version = 1,
//                          n_layers, n_heads, n_kv_heads, dim, vocab_size,
//                          method, layer_split_k, n_prefix_regs, n_suffix_regs,
//                          n_samples, plus any extra string attributes
//                          (model, dataset, split, ...)
//   /samples/NNNNNN        one group per sample, NNNNNN = 000000, 000001, ...
//     tokens     int32   [T]        token ids
//     positions  int32   [T]        RoPE positions
//     kinds      uint8   [T]        TokenKind of each token
//     attn       float32 [L,H,T,T]  post-softmax; attn[l,h,q,k] = 0 where query q
//                                   cannot see key k or was not computed in layer l;
//                                   chunked [1,1,T,T] (one chunk per layer and head),
//                                   shuffle + gzip
//     row_mask   uint8   [L,T]      1 where layer l computed query t (an EARN layer
//                                   >= k computes no prompt row)
//     key_mask   uint8   [L,T]      1 where token t's key was kept in layer l
//
// The minimal schema: what the reader requires, so that a dump written by
// another tool (h5py from a PyTorch model) analyses. Only
//   /  format = "earnest-attn" (string, fixed or variable length),
//      version = 1, n_layers, n_heads, layer_split_k (0: no split),
//      n_prefix_regs, n_suffix_regs (integers)
//   /samples/NNNNNN/{tokens, positions, kinds, attn} as above
// Everything else is optional, with these defaults:
//   n_kv_heads = n_heads; dim, vocab_size = 0 (not stated); method = "unknown";
//   n_samples = the number of /samples groups (checked when present);
//   row_mask, key_mask = all 1: every row is computed and every key kept, so a
//   row q sees keys 0..q (the causal rule alone). The analysis then reads every
//   row: a model whose later layers skip rows (EARN) should write row_mask, or
//   those all-zero rows count in the means.
// Integer attributes and datasets may have any integer type, attn any float type
// (HDF5 converts); shapes must agree with n_layers, n_heads and T = len(tokens).
//
// Writing follows the runtime's AttnHook (runtime/model.h): begin a sample,
// feed the hook's (layer, head, queries, keys, probs) blocks, end the sample.
// The file is written under a temporary name and renamed on close, so an
// interrupted run never leaves a half-written dump at the final path.
#ifndef EARNEST_ATTN_DUMP_H
#define EARNEST_ATTN_DUMP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include "runtime/plan.h"
#include "runtime/util.h"

#define ATTN_DUMP_FORMAT "earnest-attn"
#define ATTN_DUMP_VERSION 1
#define ATTN_DUMP_MAX_SAMPLES 1000000 // six-digit sample names
#define ATTN_DUMP_MAX_T 32767         // one [T,T] float chunk must stay under HDF5's 4 GiB
// Bounds on the model shape a dump may state, so that a corrupt attribute
// cannot size the reader's buffers (the largest Llama: 126 layers x 128 heads).
#define ATTN_DUMP_MAX_LAYERS 1024
#define ATTN_DUMP_MAX_HEADS 1024
#define ATTN_DUMP_MAX_LAYER_HEADS 65536 // n_layers x n_heads

// What a token is in the prompt: TokenKind (runtime/plan.h), stored as uint8 in
// /samples/N/kinds.

const char *attn_kind_name(int kind); // "special", "prefix_reg", ...; "?" when out of range

// The root attributes (model shape and plan). The writer needs them all; the
// reader fills the optional ones with the defaults above.
typedef struct {
    int n_layers;
    int n_heads;
    int n_kv_heads;    // read: n_heads when absent
    int dim;           // read: 0 when absent
    int vocab_size;    // read: 0 when absent
    char method[64];   // "finetune", "earn", ...; read: "unknown" when absent
    int layer_split_k; // EARN split (0 when the model has none)
    int n_prefix_regs;
    int n_suffix_regs;
} AttnDumpInfo;

// ---------------------------------------------------------------------------
// Writer

typedef struct {
    hid_t file;
    hid_t samples;        // the /samples group
    char path[4096];      // final path
    char tmp[4200];       // written here, renamed to path on close
    AttnDumpInfo info;
    int n_samples;        // samples ended so far
    // the sample being filled (between sample_begin and sample_end)
    int in_sample;
    int T;
    int32_t *tokens;      // [T]
    int32_t *positions;   // [T]
    uint8_t *kinds;       // [T]
    float *attn;          // [L,H,T,T]
    uint8_t *row_seen;    // [L,H,T] query rows put per (layer, head); OR-ed into row_mask
    uint8_t *key_seen;    // [L,H,T] keys put per (layer, head); OR-ed into key_mask
    atomic_int bad_put;   // first bad sample_put call (0 = none), reported by sample_end
    char bad_msg[256];
} AttnDumpWriter;

// Creates the dump (under a temporary name) and writes the root attributes.
int attn_dump_create(AttnDumpWriter *w, const char *path, const AttnDumpInfo *info, Error *e);
// Adds an extra string attribute at the root (model path, dataset, split, ...).
int attn_dump_set_attr(AttnDumpWriter *w, const char *name, const char *value, Error *e);
// Starts a sample of T tokens; positions NULL means 0..T-1.
int attn_dump_sample_begin(AttnDumpWriter *w, int T, const int32_t *tokens,
                           const int32_t *positions, const uint8_t *kinds, Error *e);
// Scatters one block of attention into the sample: probs [n_q, n_k] row-major,
// q_tok[i] and k_tok[j] the sample indices (0..T-1) of query i and key j.
// Same arguments as AttnHook, so it can be called from the hook; calls for
// different (layer, head) pairs touch disjoint memory and may come from
// different threads. A bad call (index out of range) is remembered and makes
// sample_end fail.
void attn_dump_sample_put(AttnDumpWriter *w, int layer, int head, int n_q, const int32_t *q_tok,
                          int n_k, const int32_t *k_tok, const float *probs);
// An AttnHook (runtime/model.h) with ctx = the AttnDumpWriter, for a forward
// call over one sequence (seq 0); other sequences are reported as bad calls.
void attn_dump_hook(void *ctx, int layer, int seq, int head, int n_q, const int32_t *q_tok,
                    int n_k, const int32_t *k_tok, const float *probs);
// Writes the sample as /samples/NNNNNN.
int attn_dump_sample_end(AttnDumpWriter *w, Error *e);
// Writes n_samples, closes and renames the file into place. On failure the
// temporary file is removed.
int attn_dump_close(AttnDumpWriter *w, Error *e);
// Closes and removes the temporary file (after an error).
void attn_dump_abort(AttnDumpWriter *w);

// ---------------------------------------------------------------------------
// Reader

typedef struct {
    hid_t file;
    char path[4096];
    AttnDumpInfo info;
    int n_samples;
    char (*names)[16];    // [n_samples] sample group names, sorted
} AttnDumpReader;

typedef struct {
    int index;            // in the reader's order
    int T;
    int32_t *tokens;      // [T]
    int32_t *positions;   // [T]
    uint8_t *kinds;       // [T]
    uint8_t *row_mask;    // [L,T] (all 1 when the dump has none)
    uint8_t *key_mask;    // [L,T] (all 1 when the dump has none)
} AttnSample;

// Opens and validates a dump: HDF5, format and version attributes, model
// shape attributes (the minimal schema's required, the rest defaulted), the
// /samples group and its member names. Errors name the file and the object.
int attn_dump_open(AttnDumpReader *r, const char *path, Error *e);
// The same on an HDF5 file image in memory (HDF5's core driver; the fuzz
// harness calls it); `name` names the file in messages.
int attn_dump_open_image(AttnDumpReader *r, const void *image, size_t len, const char *name, Error *e);
void attn_dump_reader_close(AttnDumpReader *r);
// Reads sample i's token arrays and masks (defaulted when absent), checking
// every dataset's type and shape against the root attributes and T.
int attn_dump_read_sample(AttnSample *out, AttnDumpReader *r, int i, Error *e);
void attn_sample_free(AttnSample *s);
// Reads attn[layer, head, :, :] of sample i into out [T,T].
int attn_dump_read_head(float *out, AttnDumpReader *r, const AttnSample *s, int layer, int head,
                        Error *e);

#endif
