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

// out [N, C] = inp / rms(inp) * weight; rms over C with eps inside the root.
void rmsnorm_forward(float *out, const float *inp, const float *weight, size_t N, size_t C, float eps);
void rmsnorm_forward_ref(float *out, const float *inp, const float *weight, size_t N, size_t C, float eps);

// Rotary embedding in place on x [N, H, E] (HF "rotate_half" layout: pairs
// (i, i + E/2)), angle positions[n] * inv_freq[i], inv_freq [E/2].
// x has row stride `stride` floats (>= H*E) so q/k may live inside wider rows.
void rope_forward(float *x, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                  size_t stride);
void rope_forward_ref(float *x, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                      size_t stride);

// out [N, F] = silu(gate) * up, gate/up [N, F].
void swiglu_forward(float *out, const float *gate, const float *up, size_t N, size_t F);
void swiglu_forward_ref(float *out, const float *gate, const float *up, size_t N, size_t F);

// Softmax of one row in place over its first n entries; entries equal to
// -INFINITY get probability exactly 0.
void softmax_row(float *x, size_t n);
void softmax_row_ref(float *x, size_t n);

#endif
