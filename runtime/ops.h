// ops.h: the layer operations of the decoder, one function per op.
//
// Arguments: outputs first, then inputs, then sizes. Every fast op has a
// plain-loop reference twin `*_ref` with the same signature; the tests check
// one against the other. Shapes use N rows (tokens), C input features,
// OC output features, H heads, E head size.
#ifndef EARNEST_OPS_H
#define EARNEST_OPS_H

#include <stddef.h>
#include <stdint.h>

// out [N, OC] = inp [N, C] @ weight[OC, C]^T + bias [OC] (bias may be NULL).
// beta = 0 overwrites out, beta = 1 accumulates into it (the residual add).
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    size_t N, size_t C, size_t OC, float beta);
void matmul_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                        size_t N, size_t C, size_t OC, float beta);

// The same product on a slice of output columns only, for the few rows of a
// decode step: out[n, o] = inp[n] . weight[o] + bias[o] (+ beta * out[n, o])
// for n < N and o in [o0, o1); the rest of out is not touched. It starts no
// threads, so each thread of a parallel region can take its own slice (no
// fork/join per product). Below 8 rows it reads the weights where they are: no
// packing, one sequential pass over the slice, each weight row used by all N
// rows while in L1, each output one dot product in a fixed order (the result
// does not depend on the slicing or on the other rows). From 8 rows on,
// packing pays: one cblas_sgemm on the slice (single-threaded inside a
// parallel region). Meant for N up to ~32; beta is 0 or 1.
void matmul_cols_forward(float *out, const float *inp, const float *weight, const float *bias, size_t N, size_t C,
                         size_t OC, size_t o0, size_t o1, float beta);
void matmul_cols_forward_ref(float *out, const float *inp, const float *weight, const float *bias, size_t N,
                             size_t C, size_t OC, size_t o0, size_t o1, float beta);

// Backward of matmul_forward (also the output head): given dout [N, OC],
// dinp [N, C] += dout @ weight, dweight [OC, C] += dout^T @ inp,
// dbias [OC] += column sums of dout. Any of dinp, dbias may be NULL (not needed).
//
// Every *_backward in this file ADDS into its gradient outputs (so gradients
// of a tensor used twice, e.g. tied embeddings, simply accumulate); callers
// zero them first. Two exceptions, said at their declarations: rope_backward
// works in place, crossentropy_backward overwrites.
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, size_t N, size_t C, size_t OC);
void matmul_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                         const float *weight, size_t N, size_t C, size_t OC);

// LoRA's low-rank term on the rows flagged by on [N] (NULL: every row), added
// to a projection matmul_forward computed into out: with A [R, C], B [OC, R],
//   u [N, R]    = inp [N, C] @ A^T on flagged rows, 0 on the others (kept for the backward),
//   out [N, OC] += scale * u @ B^T.
// Rows not flagged are left exactly as they are (their u is 0).
void lora_forward(float *out, float *u, const float *inp, const float *A, const float *B, const uint8_t *on,
                  float scale, size_t N, size_t C, size_t R, size_t OC);
void lora_forward_ref(float *out, float *u, const float *inp, const float *A, const float *B, const uint8_t *on,
                      float scale, size_t N, size_t C, size_t R, size_t OC);
// Backward of lora_forward (the base product's own backward is matmul_backward):
// given dout [N, OC] and the forward's u, on flagged rows du [N, R] = scale * dout @ B
// (work space, overwritten; 0 on other rows), and ADDED: dinp [N, C] += du @ A,
// dA [R, C] += du^T @ inp, dB [OC, R] += scale * dout^T @ u. dinp may be NULL.
void lora_backward(float *dinp, float *dA, float *dB, float *du, const float *dout, const float *inp,
                   const float *u, const float *A, const float *B, const uint8_t *on, float scale, size_t N,
                   size_t C, size_t R, size_t OC);
void lora_backward_ref(float *dinp, float *dA, float *dB, float *du, const float *dout, const float *inp,
                       const float *u, const float *A, const float *B, const uint8_t *on, float scale, size_t N,
                       size_t C, size_t R, size_t OC);

// out [N, C] = inp / rms(inp) * weight; rms over C with eps inside the root.
void rmsnorm_forward(float *out, const float *inp, const float *weight, size_t N, size_t C, float eps);
void rmsnorm_forward_ref(float *out, const float *inp, const float *weight, size_t N, size_t C, float eps);

// Backward of rmsnorm_forward: dinp [N, C] += d/dinp, dweight [C] += d/dweight,
// from dout [N, C] and the forward's inp [N, C] (the rms is recomputed).
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                      size_t N, size_t C, float eps);
void rmsnorm_backward_ref(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                          size_t N, size_t C, float eps);

// Rotary embedding in place on x [N, H, E] (HF "rotate_half" layout: pairs
// (i, i + E/2)), angle positions[n] * inv_freq[i], inv_freq [E/2].
// x has row stride `stride` floats (>= H*E) so q/k may live inside wider rows.
void rope_forward(float *x, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                  size_t stride);
void rope_forward_ref(float *x, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                      size_t stride);

// Backward of rope_forward, in place on the gradient dx [N, H, E] (row stride
// `stride`): the rotation is orthogonal, so its backward is the inverse
// rotation (angle -positions[n] * inv_freq[i]). Overwrites (no accumulation).
void rope_backward(float *dx, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                   size_t stride);
void rope_backward_ref(float *dx, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                       size_t stride);

// out [N, F] = silu(gate) * up, gate/up [N, F].
void swiglu_forward(float *out, const float *gate, const float *up, size_t N, size_t F);
void swiglu_forward_ref(float *out, const float *gate, const float *up, size_t N, size_t F);

// Backward of swiglu_forward: dgate, dup [N, F] += from dout [N, F].
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                     size_t N, size_t F);
void swiglu_backward_ref(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                         size_t N, size_t F);

// Softmax of one row in place over its first n entries; entries equal to
// -INFINITY get probability exactly 0.
void softmax_row(float *x, size_t n);
void softmax_row_ref(float *x, size_t n);

// ---------------------------------------------------------------------------
// Inference attention against a KV cache (model_forward)
//
// A sequence's keys/values for one layer and KV head are the P entries of a
// read-only parent cache kp, vp [P, E] (the shared prompt of beam search; P
// may be 0), then its own entries ko, vo [n_old + nq, E] (row stride E): the
// n_old entries of earlier calls, then the nq new rows of this call in order.
// New row i is own entry n_old + i. It sees every parent entry, every earlier
// own entry, and the new rows j <= i; for j < i also mask[idx[i] * mask_n +
// idx[j]] must be 1 when mask is given (idx maps the sequence's new rows to
// its mask indices, as in attention_forward). Scores are scaled by 1/sqrt(E).

// ONE head, the block of new rows [i0, i1): q [i1-i0, E] and out [i1-i0, E]
// start at row i0 (row stride sq). probs [i1-i0, P + n_old + i1] receives the
// post-softmax probabilities over [parent | own 0..n_old+i1-1], 0 where not
// visible (the attention hook reads them). The two products are sgemms, so
// a block of queries reads the keys once.
void attention_cached_forward(float *out, float *probs, const float *q, const float *kp, const float *vp,
                              const float *ko, const float *vo, const uint8_t *mask, const int *idx,
                              size_t mask_n, size_t P, size_t n_old, size_t i0, size_t i1, size_t E, size_t sq);
void attention_cached_forward_ref(float *out, float *probs, const float *q, const float *kp, const float *vp,
                                  const float *ko, const float *vo, const uint8_t *mask, const int *idx,
                                  size_t mask_n, size_t P, size_t n_old, size_t i0, size_t i1, size_t E,
                                  size_t sq);

// The same block under a mask that hides most new keys (AnLLM's prefill, where
// a token sees the instruction, the earlier anchors and its own item): only the
// new keys some row of the block may see are read. Their columns come from the
// mask (a vector OR of the block's mask rows when idx is the identity), their
// K and V rows are gathered, and the two sgemms run over [parent | earlier own |
// gathered]; when more than 3/4 of the new keys are visible it is
// attention_cached_forward. No probabilities are written (a hook needs the
// dense op). work: attention_cached_sparse_work(i1 - i0, P + n_old + i1, E)
// floats. The _ref twin is the dense reference.
size_t attention_cached_sparse_work(size_t bq, size_t nk, size_t E);
void attention_cached_sparse_forward(float *out, float *work, const float *q, const float *kp, const float *vp,
                                     const float *ko, const float *vo, const uint8_t *mask, const int *idx,
                                     size_t mask_n, size_t P, size_t n_old, size_t i0, size_t i1, size_t E,
                                     size_t sq);
void attention_cached_sparse_forward_ref(float *out, float *work, const float *q, const float *kp, const float *vp,
                                         const float *ko, const float *vo, const uint8_t *mask, const int *idx,
                                         size_t mask_n, size_t P, size_t n_old, size_t i0, size_t i1, size_t E,
                                         size_t sq);

// What one query row of attention_shared_forward reads after the parent: its
// own sequence's entries (k, v [n_old + i + 1 or more, E]) and its visibility
// among the new rows, in the terms above. mask_row is the query's row of its
// sequence's mask (mask + idx[i] * mask_n), or NULL; idx maps new rows to mask
// columns (read for j < i only, with mask_row).
typedef struct {
    const float *k, *v;
    int n_old;            // own entries from earlier calls
    int i;                // the row is new row i of its sequence
    const uint8_t *mask_row;
    const int *idx;
} AttnOwnKV;

// Beams sharing a parent (decode): nr query rows, possibly of different
// sequences, that all read the same parent kp, vp [P, E], for ONE KV head and
// the hpg query heads that read it. Row r's heads are q + r*sq, [hpg, E]
// adjacent; out likewise. own [nr] describes each row's own entries. The
// queries of all rows and heads are stacked so the parent's keys and values
// are read by one sgemm each; own keys (a handful per beam) are dot products;
// the softmax runs jointly over [parent | own].
// Work space: scores [hpg*nr, P + max_r(own[r].n_old + own[r].i + 1)],
// qbuf and obuf [hpg*nr, E].
void attention_shared_forward(float *out, float *scores, float *qbuf, float *obuf, const float *q, const float *kp,
                              const float *vp, const AttnOwnKV *own, size_t nr, size_t hpg, size_t P, size_t E,
                              size_t sq);
void attention_shared_forward_ref(float *out, float *scores, float *qbuf, float *obuf, const float *q,
                                  const float *kp, const float *vp, const AttnOwnKV *own, size_t nr, size_t hpg,
                                  size_t P, size_t E, size_t sq);


// ---------------------------------------------------------------------------
// Training ops (forward + backward pairs)

// Embedding lookup: out [N, C] = table[tokens[n]] with table [V, C].
void embedding_forward(float *out, const int *tokens, const float *table, size_t N, size_t C);
void embedding_forward_ref(float *out, const int *tokens, const float *table, size_t N, size_t C);
// dtable [V, C] += scatter of dout [N, C] to rows tokens[n]. Parallel over
// column slices: every thread owns a slice of every row, so no two threads
// write the same float and each float sums its tokens in packed order (the
// result does not depend on the thread count).
void embedding_backward(float *dtable, const float *dout, const int *tokens, size_t N, size_t C);
void embedding_backward_ref(float *dtable, const float *dout, const int *tokens, size_t N, size_t C);

// Causal softmax attention of ONE head over ONE sequence of N tokens (the
// rows a layer computes, in order). q [N, E] and out [N, E] have row stride
// sq, k and v [N, E] row stride sk (so they can be one head's columns of the
// packed q/k/v matrices). Query i sees keys j <= i; for j < i also
// mask[idx[i] * mask_n + idx[j]] must be 1 when mask is given (idx NULL:
// identity; idx maps a layer's rows to the sequence's tokens under a layer
// plan). Scores are scaled by 1/sqrt(E).
// probs [N, N] receives the post-softmax probabilities (0 where not visible,
// including every j > i); the backward needs them.
// Queries are done in blocks of ATTN_BLOCK rows so that a block's keys stop at
// its last query (the upper triangle beyond a block is never computed).
#define ATTN_BLOCK 64
void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                       const uint8_t *mask, const int *idx, size_t mask_n, size_t N, size_t E, size_t sq,
                       size_t sk);
void attention_forward_ref(float *out, float *probs, const float *q, const float *k, const float *v,
                           const uint8_t *mask, const int *idx, size_t mask_n, size_t N, size_t E, size_t sq,
                           size_t sk);
// Backward from dout [N, E] (stride sq) and the forward's probs: dq [N, E]
// (stride sq), dk, dv [N, E] (stride sk) += their gradients. scratch holds
// ATTN_BLOCK * N floats. Heads sharing a KV head (GQA) add into the same
// dk/dv, so callers must not run two of them at once.
void attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *probs,
                        const float *q, const float *k, const float *v, size_t N, size_t E, size_t sq, size_t sk);
void attention_backward_ref(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                            const float *probs, const float *q, const float *k, const float *v, size_t N, size_t E,
                            size_t sq, size_t sk);

// Cross-entropy of rows of logits [N, V] against labels [N] (-1: no loss):
// losses[n] = -log softmax(logits[n])[labels[n]] (0 for label -1).
void crossentropy_forward(float *losses, const float *logits, const int *labels, size_t N, size_t V);
void crossentropy_forward_ref(float *losses, const float *logits, const int *labels, size_t N, size_t V);
// Fused softmax + cross-entropy backward for the objective dloss * sum_n losses[n]:
// dlogits[n] = dloss * (softmax(logits[n]) - onehot(labels[n])), rows with label -1
// get 0. Overwrites dlogits, which may be the logits buffer itself (in place).
void crossentropy_backward(float *dlogits, const float *logits, const int *labels, float dloss, size_t N,
                           size_t V);
void crossentropy_backward_ref(float *dlogits, const float *logits, const int *labels, float dloss, size_t N,
                               size_t V);

#endif
