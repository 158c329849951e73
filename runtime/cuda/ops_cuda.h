// ops_cuda.h: the layer operations on the GPU, one function per op, named
// after their CPU twins in runtime/ops.h with a `_cuda` suffix and the same
// argument order (outputs first, then inputs, then sizes), plus the dtype and
// the context (or stream) they run on. Every pointer is device memory; every
// call is asynchronous on cx->stream. The CPU ops are the references: the GPU
// tests (tests/test_cuda_*.c) check each op and the whole forward against
// them.
//
// `dt` pointers (void *) hold CudaDtype elements (f32 or bf16); float * is
// always f32. Which ops add into their output is said at each (matmul with
// beta = 1 only).
#ifndef EARNEST_OPS_CUDA_H
#define EARNEST_OPS_CUDA_H

#include "runtime/cuda/cuda_util.h"

#ifdef __cplusplus
extern "C" {
#endif

// out [N, OC] f32 = inp [N, C] dt @ weight [OC, C]^T dt + bias [OC] f32 (bias may
// be NULL). beta = 0 overwrites out, beta = 1 ADDS into it (the residual add).
// cuBLAS, f32 accumulation (bf16: tensor cores; f32: plain f32, no TF32).
void matmul_forward_cuda(float *out, const void *inp, const void *weight, const float *bias, size_t N, size_t C,
                         size_t OC, float beta, CudaDtype dt, const CudaContext *cx);

// out [N, C] dt = inp [N, C] / rms(inp) * weight [C]; eps inside the root.
void rmsnorm_forward_cuda(void *out, const float *inp, const float *weight, size_t N, size_t C, float eps,
                          CudaDtype dt, cudaStream_t st);

// Rotary embedding in place on x [N, H, E] (row stride `stride` floats; HF
// rotate_half pairs (i, i + E/2)), angle positions[n] * inv_freq[i].
void rope_forward_cuda(float *x, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                       size_t stride, cudaStream_t st);

// out [N, F] dt = silu(gate) * up; gate and up are [N, F] f32 with row stride
// `stride` (the fused gate|up rows of the MLP: stride 2F, up = gate + F).
void swiglu_forward_cuda(void *out, const float *gate, const float *up, size_t N, size_t F, size_t stride,
                         CudaDtype dt, cudaStream_t st);

// out [N, C] f32 = table[tokens[n]], table [V, C] dt.
void embedding_forward_cuda(float *out, const int *tokens, const void *table, size_t N, size_t C, CudaDtype dt,
                            cudaStream_t st);

// out [N, C] = inp[src[n]] (row gather; out must not alias inp).
void rows_gather_cuda(float *out, const float *inp, const int *src, size_t N, size_t C, cudaStream_t st);
// out [T, C]: row dst[n] = inp[n] for n < N, every other row NaN.
void rows_scatter_nan_cuda(float *out, const float *inp, const int *dst, size_t N, size_t T, size_t C,
                           cudaStream_t st);

// ---------------------------------------------------------------------------
// Inference attention against the device KV cache (see model_cuda.h).
//
// A layer's active rows are packed; q [rows, H*E] f32 has row stride sq (the
// fused q|k|v rows). A row's keys are its sequence's parent entries (all
// visible) then its own entries, of which it sees the first n_old + i + 1
// (i = its index among its sequence's rows of this call). Scores scale by
// 1/sqrt(E). Two kernels, like the CPU's two paths:
//   - attention_shared_forward_cuda: the parent part. The rows of a run of
//     sequences with one parent (the beams of one prompt) and the heads of one
//     KV head are stacked into one query tile, so each parent key is read once
//     per tile, not once per beam; the keys are split into chunks of `chunk`
//     keys for parallelism (flash-decoding; attention_chunk_len picks it so
//     the grid fills the GPU), and each (chunk, row, head) leaves a partial
//     softmax state (max, sum, unnormalised output);
//   - attention_cached_forward_cuda: the own part, flash-style tiles of up to
//     ATTN_CUDA_BQ rows of one sequence against its own keys (causal), which
//     then merges the row's parent partials and writes out [rows, H*E] dt.
#define ATTN_CUDA_BQ 32
#define ATTN_CUDA_BK 32
#define ATTN_CUDA_CHUNK 256 // the longest chunk of parent keys one block takes

// Keys per parent chunk: a multiple of ATTN_CUDA_BK, at most ATTN_CUDA_CHUNK,
// short enough that n_tiles parent tiles over max_parent keys make at least
// two blocks per multiprocessor (a 150-token prompt's 32 tiles would
// otherwise run as 32 blocks on a 132-multiprocessor GPU).
int attention_chunk_len(int max_parent, int n_tiles, int n_sms);

typedef struct {
    const void *k, *v;   // own cache of this layer, kv head 0 (kv head g at + g * cap * E)
    int row0, n_rows;    // active rows [row0, row0 + n_rows), all of one sequence, n_rows <= ATTN_CUDA_BQ
    int i0;              // index of row0 among its sequence's rows of this call
    int n_old;           // own entries from earlier calls
    int cap;             // own entries per kv head
    int n_chunks;        // parent partials to merge (0: no parent)
} AttnTileCuda;

typedef struct {
    const void *k, *v;   // parent cache of this layer, kv head 0
    int row0, n_rows;    // rows of the shared-parent group
    int g;               // kv head
    int v0;              // first (row, head) pair of the tile: pair p = (row0 + p / hpg, head g*hpg + p % hpg)
    int P;               // parent entries
    int cap;             // parent entries per kv head (stride between heads)
} AttnParentTileCuda;

// part_m, part_l [max_chunks, rows, H], part_acc [max_chunks, rows, H, E];
// chunk keys per chunk (a multiple of ATTN_CUDA_BK).
void attention_shared_forward_cuda(float *part_m, float *part_l, float *part_acc, const float *q,
                                   const AttnParentTileCuda *tiles, int n_tiles, int max_chunks, int chunk, size_t rows,
                                   size_t H, size_t G, size_t E, size_t sq, CudaDtype dt, cudaStream_t st);
void attention_cached_forward_cuda(void *out, const float *q, const AttnTileCuda *tiles, int n_tiles,
                                   const float *part_m, const float *part_l, const float *part_acc, size_t rows,
                                   size_t H, size_t G, size_t E, size_t sq, CudaDtype dt, cudaStream_t st);
// Prefill on the tensor cores (bf16 only): tiles of up to ATTN_CUDA_BQ_TC rows
// of one sequence without a parent (n_chunks = 0) against its own keys,
// causal, FlashAttention-2 style (mma.sync bf16 products in registers, f32
// softmax and accumulation; attn_prefill_cuda.cu);
// out [rows, H*E] bf16. The forward sends a sequence's rows here when it has
// at least ATTN_CUDA_BQ_TC of them, the rest to attention_cached_forward_cuda.
#define ATTN_CUDA_BQ_TC 64
void attention_prefill_forward_cuda(void *out, const float *q, const AttnTileCuda *tiles, int n_tiles, size_t H,
                                    size_t G, size_t E, size_t sq, cudaStream_t st);
// Whether the attention kernels support head size E (16, 32, 64, 128).
int attention_cuda_head_dim_ok(int E);

// The KV append of one layer: row r's key and value (k, v [rows, G*E] f32, row
// stride sk) go to entry slot[r] of its cache: kdst[r] + (g * cap[r] + slot[r]) * E.
typedef struct {
    void *k, *v;         // own cache of this layer, kv head 0
    int cap, slot;
} KvAppendCuda;
void kv_append_cuda(const KvAppendCuda *dst, const float *k, const float *v, size_t rows, size_t G, size_t E,
                    size_t sk, CudaDtype dt, cudaStream_t st);

// ---------------------------------------------------------------------------
// Beam search selection (beam_cuda.c)

// lse [N] = log(sum exp(x[n, :])) over V, summed in double (as runtime/beam.c).
void logsumexp_rows_cuda(double *lse, const float *x, size_t N, size_t V, cudaStream_t st);

// One beam-search selection per user, on the device (runtime/beam.h semantics):
// user u's beams are logits rows row0[u] .. + n_beams[u], beam j at trie node
// node[u*W + j] with score score[u*W + j]; the candidates are (beam, allowed
// edge) with score + logit[token] - lse[row]; the best W by (score desc, beam
// asc, edge asc) go to out_beam, out_edge, out_score [U, W], their count to
// out_n[U]. first_edge / edge_token are the trie's (device copies).
void beam_select_cuda(int *out_n, int *out_beam, int *out_edge, double *out_score, const float *logits,
                      const double *lse, const int *row0, const int *n_beams, const int *node, const double *score,
                      const int *first_edge, const int *edge_token, size_t U, size_t W, size_t V, cudaStream_t st);

// Copies each beam's block: dst[i] = src[from[i]] (blocks of `elems` dt elements).
void beams_reorder_cuda(void *dst, const void *src, const int *from, size_t n, size_t elems, CudaDtype dt,
                        cudaStream_t st);

// ---------------------------------------------------------------------------
// Weights

// out [n] dt = N(0, std) from a counter-based generator (seed, index): the same
// numbers for any launch shape. std = 0 with `value`: a constant.
void fill_normal_cuda(void *out, size_t n, uint64_t seed, float std, CudaDtype dt, cudaStream_t st);
void fill_const_cuda(void *out, size_t n, float value, CudaDtype dt, cudaStream_t st);
// out [n] dt = in [n] f32 (conversion; round to nearest even for bf16).
void convert_f32_cuda(void *out, const float *in, size_t n, CudaDtype dt, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
