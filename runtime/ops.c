// ops.c: see ops.h. Fast versions use cblas_sgemm and OpenMP; the reference
// versions are plain loops with double accumulators.
#include "runtime/ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/util.h"

// ---------------------------------------------------------------------------
// exp and sigmoid in a form the compiler vectorises (libm's expf is a scalar
// call, and these run over every attention score and MLP activation).

// a * b + c, fused where the target has FMA (C11 mode contracts nothing by
// itself; without FMA, fmaf would be a scalar libm call in a vector loop).
#ifdef __FMA__
#define MADD(a, b, c) fmaf((a), (b), (c))
#else
#define MADD(a, b, c) ((a) * (b) + (c))
#endif

// exp(x) for x <= 0: x = n ln2 + r with |r| <= ln2/2, e^r by its degree-7
// Taylor polynomial (relative error < 2e-7 on that interval), 2^n from the
// exponent bits. n comes from adding 1.5 * 2^23, which rounds x log2(e) to an
// integer in the sum's low mantissa bits (round to nearest, as rintf): no
// rounding or float-to-int instruction, and the sum's bits give 2^n directly.
// Below -87 the result flushes to e^-87 (< FLT_MIN * 2^-1, so 0 in any sum
// that matters); NaN stays NaN (p is NaN; the bits of a NaN sum are not used
// as a number).
static inline float exp_nonpos(float x) {
    const float shifter = 12582912.0f; // 1.5 * 2^23
    x = x < -87.0f ? -87.0f : x;
    float t = MADD(x, 1.44269504088896341f, shifter);
    float n = t - shifter; // round(x log2 e), in [-126, 0]
    float r = MADD(-n, 1.428606765330187e-06f, MADD(-n, 0.693145751953125f, x)); // ln2 split in two for precision
    float p = MADD(r, 1.9841270e-4f, 1.3888889e-3f);
    p = MADD(r, p, 8.3333338e-3f);
    p = MADD(r, p, 4.1666668e-2f);
    p = MADD(r, p, 1.6666667e-1f);
    p = MADD(r, p, 0.5f);
    p = MADD(r, p, 1.0f);
    p = MADD(r, p, 1.0f);
    uint32_t tb;
    memcpy(&tb, &t, 4);                          // 0x4B400000 + n (two's complement in the low bits)
    uint32_t bits = (tb - 0x4B400000u + 127u) << 23; // n + 127 in [1, 127]: a normal power of two
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

// sig(g) from t = e^-|g| in (0, 1]: 1/(1+t) for g >= 0, t/(1+t) below (no overflow either way).
static inline float sigmoid_vec(float g) {
    float t = exp_nonpos(-fabsf(g));
    float s = 1.0f / (1.0f + t);
    return g >= 0.0f ? s : t * s;
}

// ---------------------------------------------------------------------------
// matmul

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    size_t N, size_t C, size_t OC, float beta) {
    if (N == 0) return;
    if (bias) {
        // Fold the bias in by preloading out with it (beta = 1 then adds the product).
        if (beta == 0.0f) {
            #pragma omp parallel for if (N * OC > 65536)
            for (size_t n = 0; n < N; n++) memcpy(out + n * OC, bias, OC * sizeof(float));
        } else {
            #pragma omp parallel for if (N * OC > 65536)
            for (size_t n = 0; n < N; n++)
                for (size_t o = 0; o < OC; o++) out[n * OC + o] += bias[o];
        }
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)OC, (int)C, 1.0f, inp, (int)C,
                weight, (int)C, beta, out, (int)OC);
}

void matmul_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                        size_t N, size_t C, size_t OC, float beta) {
    for (size_t n = 0; n < N; n++) {
        for (size_t o = 0; o < OC; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (size_t c = 0; c < C; c++) acc += (double)inp[n * C + c] * (double)weight[o * C + c];
            out[n * OC + o] = (float)(acc + (beta != 0.0f ? (double)beta * out[n * OC + o] : 0.0));
        }
    }
}


enum { MATMUL_COLS_SGEMM_ROWS = 8 };

// matmul_cols_forward: one weight row at a time against blocks of 4 input
// rows (4 dot products sharing the weight's loads). One weight row at a time
// keeps the reads one sequential stream, which the hardware prefetcher follows
// at full bandwidth (4 rows read side by side ran at a third of it here). Every
// dot product runs the same vector loop whichever block it falls in, so a row's
// result does not depend on the other rows or on the slicing.
static inline void dots_1x4(float *d, const float *x0, size_t C, const float *w0) {
    const float *x1 = x0 + C, *x2 = x1 + C, *x3 = x2 + C;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    #pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (size_t c = 0; c < C; c++) {
        float p = w0[c];
        a0 += x0[c] * p; a1 += x1[c] * p; a2 += x2[c] * p; a3 += x3[c] * p;
    }
    d[0] = a0; d[1] = a1; d[2] = a2; d[3] = a3;
}

static inline float dot_1x1(const float *x0, const float *w0, size_t C) {
    float a0 = 0.0f;
    #pragma omp simd reduction(+ : a0)
    for (size_t c = 0; c < C; c++) a0 += x0[c] * w0[c];
    return a0;
}

// out[o] = dot + bias[o] (+ out[o] when beta = 1).
static inline void col_store(float *out, float dot, const float *bias, size_t o, float beta) {
    float y = dot + (bias ? bias[o] : 0.0f);
    out[o] = beta != 0.0f ? out[o] + y : y;
}

void matmul_cols_forward(float *out, const float *inp, const float *weight, const float *bias, size_t N, size_t C,
                         size_t OC, size_t o0, size_t o1, float beta) {
    if (N >= MATMUL_COLS_SGEMM_ROWS && o1 > o0) {
        // Enough rows to pay for packing the weights: sgemm on the slice (one
        // thread inside a parallel region, the OpenMP build of OpenBLAS).
        if (bias)
            for (size_t n = 0; n < N; n++)
                for (size_t o = o0; o < o1; o++) out[n * OC + o] = bias[o] + (beta != 0.0f ? out[n * OC + o] : 0.0f);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)(o1 - o0), (int)C, 1.0f, inp, (int)C,
                    weight + o0 * C, (int)C, bias ? 1.0f : beta, out + o0, (int)OC);
        return;
    }
    float d[4];
    for (size_t o = o0; o < o1; o++) {
        const float *w = weight + o * C;
        size_t n = 0;
        for (; n + 4 <= N; n += 4) {
            dots_1x4(d, inp + n * C, C, w);
            for (size_t j = 0; j < 4; j++) col_store(out + (n + j) * OC, d[j], bias, o, beta);
        }
        for (; n < N; n++) col_store(out + n * OC, dot_1x1(inp + n * C, w, C), bias, o, beta);
    }
}

void matmul_cols_forward_ref(float *out, const float *inp, const float *weight, const float *bias, size_t N,
                             size_t C, size_t OC, size_t o0, size_t o1, float beta) {
    for (size_t n = 0; n < N; n++)
        for (size_t o = o0; o < o1; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (size_t c = 0; c < C; c++) acc += (double)inp[n * C + c] * (double)weight[o * C + c];
            out[n * OC + o] = (float)(acc + (beta != 0.0f ? (double)beta * out[n * OC + o] : 0.0));
        }
}

// Backward. dbias is a sum over rows: it runs over slices of output columns
// in parallel, each slice summing its rows in order, so no two threads write
// the same float and the result does not depend on the thread count.
enum { COL_SLICE = 32 };

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, size_t N, size_t C, size_t OC) {
    if (N == 0) return;
    // dinp [N, C] += dout [N, OC] @ weight [OC, C]
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)C, (int)OC, 1.0f, dout, (int)OC,
                    weight, (int)C, 1.0f, dinp, (int)C);
    // dweight [OC, C] += dout^T [OC, N] @ inp [N, C]
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OC, (int)C, (int)N, 1.0f, dout, (int)OC, inp,
                (int)C, 1.0f, dweight, (int)C);
    if (dbias) {
        size_t n_slices = (OC + COL_SLICE - 1) / COL_SLICE;
        #pragma omp parallel for schedule(static) if (N * OC > 65536)
        for (size_t sl = 0; sl < n_slices; sl++) {
            size_t o0 = sl * COL_SLICE, o1 = o0 + COL_SLICE < OC ? o0 + COL_SLICE : OC;
            for (size_t n = 0; n < N; n++)
                for (size_t o = o0; o < o1; o++) dbias[o] += dout[n * OC + o];
        }
    }
}

void matmul_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                         const float *weight, size_t N, size_t C, size_t OC) {
    if (dinp)
        for (size_t n = 0; n < N; n++)
            for (size_t c = 0; c < C; c++) {
                double acc = 0.0;
                for (size_t o = 0; o < OC; o++) acc += (double)dout[n * OC + o] * weight[o * C + c];
                dinp[n * C + c] += (float)acc;
            }
    for (size_t o = 0; o < OC; o++)
        for (size_t c = 0; c < C; c++) {
            double acc = 0.0;
            for (size_t n = 0; n < N; n++) acc += (double)dout[n * OC + o] * inp[n * C + c];
            dweight[o * C + c] += (float)acc;
        }
    if (dbias)
        for (size_t o = 0; o < OC; o++) {
            double acc = 0.0;
            for (size_t n = 0; n < N; n++) acc += dout[n * OC + o];
            dbias[o] += (float)acc;
        }
}

// ---------------------------------------------------------------------------
// LoRA's low-rank term

// Zeroes the rows of x [N, R] that on [N] does not flag.
static void rows_zero_unflagged(float *x, const uint8_t *on, size_t N, size_t R) {
    if (!on) return;
    for (size_t n = 0; n < N; n++)
        if (!on[n]) memset(x + n * R, 0, R * sizeof(float));
}

void lora_forward(float *out, float *u, const float *inp, const float *A, const float *B, const uint8_t *on,
                  float scale, size_t N, size_t C, size_t R, size_t OC) {
    if (N == 0 || R == 0) return;
    matmul_forward(u, inp, A, NULL, N, C, R, 0.0f);
    rows_zero_unflagged(u, on, N, R);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)OC, (int)R, scale, u, (int)R, B, (int)R,
                1.0f, out, (int)OC);
}

void lora_forward_ref(float *out, float *u, const float *inp, const float *A, const float *B, const uint8_t *on,
                      float scale, size_t N, size_t C, size_t R, size_t OC) {
    for (size_t n = 0; n < N; n++) {
        int f = !on || on[n];
        for (size_t r = 0; r < R; r++) {
            double acc = 0.0;
            for (size_t c = 0; c < C && f; c++) acc += (double)inp[n * C + c] * A[r * C + c];
            u[n * R + r] = (float)acc;
        }
        if (!f) continue;
        for (size_t o = 0; o < OC; o++) {
            double acc = 0.0;
            for (size_t r = 0; r < R; r++) acc += (double)u[n * R + r] * B[o * R + r];
            out[n * OC + o] += (float)((double)scale * acc);
        }
    }
}

void lora_backward(float *dinp, float *dA, float *dB, float *du, const float *dout, const float *inp,
                   const float *u, const float *A, const float *B, const uint8_t *on, float scale, size_t N,
                   size_t C, size_t R, size_t OC) {
    if (N == 0 || R == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)R, (int)OC, scale, dout, (int)OC, B, (int)R,
                0.0f, du, (int)R); // du [N, R] = scale * dout @ B
    rows_zero_unflagged(du, on, N, R);
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)C, (int)R, 1.0f, du, (int)R, A, (int)C,
                    1.0f, dinp, (int)C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)R, (int)C, (int)N, 1.0f, du, (int)R, inp, (int)C,
                1.0f, dA, (int)C); // dA [R, C] += du^T @ inp
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OC, (int)R, (int)N, scale, dout, (int)OC, u, (int)R,
                1.0f, dB, (int)R); // dB [OC, R] += scale * dout^T @ u (u is 0 on unflagged rows)
}

void lora_backward_ref(float *dinp, float *dA, float *dB, float *du, const float *dout, const float *inp,
                       const float *u, const float *A, const float *B, const uint8_t *on, float scale, size_t N,
                       size_t C, size_t R, size_t OC) {
    for (size_t n = 0; n < N; n++) {
        int f = !on || on[n];
        for (size_t r = 0; r < R; r++) {
            double acc = 0.0;
            for (size_t o = 0; o < OC && f; o++) acc += (double)dout[n * OC + o] * B[o * R + r];
            du[n * R + r] = (float)((double)scale * acc);
        }
        if (!f) continue;
        for (size_t c = 0; dinp && c < C; c++) {
            double acc = 0.0;
            for (size_t r = 0; r < R; r++) acc += (double)du[n * R + r] * A[r * C + c];
            dinp[n * C + c] += (float)acc;
        }
    }
    for (size_t r = 0; r < R; r++)
        for (size_t c = 0; c < C; c++) {
            double acc = 0.0;
            for (size_t n = 0; n < N; n++) acc += (double)du[n * R + r] * inp[n * C + c];
            dA[r * C + c] += (float)acc;
        }
    for (size_t o = 0; o < OC; o++)
        for (size_t r = 0; r < R; r++) {
            double acc = 0.0;
            for (size_t n = 0; n < N; n++)
                if (!on || on[n]) acc += (double)dout[n * OC + o] * u[n * R + r];
            dB[o * R + r] += (float)((double)scale * acc);
        }
}

// ---------------------------------------------------------------------------
// rmsnorm

void rmsnorm_forward(float *out, const float *inp, const float *weight, size_t N, size_t C, float eps) {
    #pragma omp parallel for if (N * C > 32768)
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float *y = out + n * C;
        float ss = 0.0f;
        for (size_t c = 0; c < C; c++) ss += x[c] * x[c];
        float s = 1.0f / sqrtf(ss / (float)C + eps);
        for (size_t c = 0; c < C; c++) y[c] = x[c] * s * weight[c];
    }
}

void rmsnorm_forward_ref(float *out, const float *inp, const float *weight, size_t N, size_t C, float eps) {
    for (size_t n = 0; n < N; n++) {
        double ss = 0.0;
        for (size_t c = 0; c < C; c++) ss += (double)inp[n * C + c] * inp[n * C + c];
        double s = 1.0 / sqrt(ss / (double)C + eps);
        for (size_t c = 0; c < C; c++) out[n * C + c] = (float)(inp[n * C + c] * s * weight[c]);
    }
}


// Backward. With s = 1/sqrt(mean(x^2) + eps) and y = x * s * w:
//   dx_j = s * w_j * dy_j - x_j * s^3 / C * sum_c dy_c * w_c * x_c
//   dw_c = sum_n dy_nc * x_nc * s_n
// Rows in parallel for dx; dw by column slices (rows summed in order).
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                      size_t N, size_t C, float eps) {
    if (N == 0) return;
    float *rstd = xmalloc(N * sizeof(float));
    #pragma omp parallel for if (N * C > 32768)
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C, *dy = dout + n * C;
        float ss = 0.0f, dot = 0.0f;
        for (size_t c = 0; c < C; c++) {
            ss += x[c] * x[c];
            dot += dy[c] * weight[c] * x[c];
        }
        float s = 1.0f / sqrtf(ss / (float)C + eps);
        rstd[n] = s;
        float k = dot * s * s * s / (float)C;
        float *dx = dinp + n * C;
        for (size_t c = 0; c < C; c++) dx[c] += s * weight[c] * dy[c] - x[c] * k;
    }
    size_t n_slices = (C + COL_SLICE - 1) / COL_SLICE;
    #pragma omp parallel for schedule(static) if (N * C > 32768)
    for (size_t sl = 0; sl < n_slices; sl++) {
        size_t c0 = sl * COL_SLICE, c1 = c0 + COL_SLICE < C ? c0 + COL_SLICE : C;
        for (size_t n = 0; n < N; n++)
            for (size_t c = c0; c < c1; c++) dweight[c] += dout[n * C + c] * inp[n * C + c] * rstd[n];
    }
    free(rstd);
}

void rmsnorm_backward_ref(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                          size_t N, size_t C, float eps) {
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C, *dy = dout + n * C;
        double ss = 0.0, dot = 0.0;
        for (size_t c = 0; c < C; c++) {
            ss += (double)x[c] * x[c];
            dot += (double)dy[c] * weight[c] * x[c];
        }
        double s = 1.0 / sqrt(ss / (double)C + eps);
        for (size_t c = 0; c < C; c++) {
            dinp[n * C + c] += (float)(s * weight[c] * dy[c] - x[c] * dot * s * s * s / (double)C);
            dweight[c] += (float)((double)dy[c] * x[c] * s);
        }
    }
}

// ---------------------------------------------------------------------------
// rope

void rope_forward(float *x, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                  size_t stride) {
    size_t half = E / 2;
    #pragma omp parallel for if (N * H * E > 32768)
    for (size_t n = 0; n < N; n++) {
        float pos = (float)positions[n];
        for (size_t i = 0; i < half; i++) {
            float c = cosf(pos * inv_freq[i]), s = sinf(pos * inv_freq[i]);
            for (size_t h = 0; h < H; h++) {
                float *v = x + n * stride + h * E;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

void rope_forward_ref(float *x, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                      size_t stride) {
    // Straight from the definition: q' = q * cos + rotate_half(q) * sin,
    // rotate_half(q) = [-q[half:], q[:half]].
    size_t half = E / 2;
    float tmp[1024];
    for (size_t n = 0; n < N; n++) {
        for (size_t h = 0; h < H; h++) {
            float *v = x + n * stride + h * E;
            for (size_t i = 0; i < E; i++) {
                double ang = (double)positions[n] * (double)inv_freq[i % half];
                double rot = i < half ? -(double)v[i + half] : (double)v[i - half];
                tmp[i] = (float)((double)v[i] * cos(ang) + rot * sin(ang));
            }
            memcpy(v, tmp, E * sizeof(float));
        }
    }
}


// Backward: the transpose of the rotation [[c, -s], [s, c]] on each pair.
void rope_backward(float *dx, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                   size_t stride) {
    size_t half = E / 2;
    #pragma omp parallel for if (N * H * E > 32768)
    for (size_t n = 0; n < N; n++) {
        float pos = (float)positions[n];
        for (size_t i = 0; i < half; i++) {
            // the same angle expression as the forward, so the rotation is its exact inverse
            float c = cosf(pos * inv_freq[i]), s = sinf(pos * inv_freq[i]);
            for (size_t h = 0; h < H; h++) {
                float *v = dx + n * stride + h * E;
                float a = v[i], b = v[i + half];
                v[i] = a * c + b * s;
                v[i + half] = b * c - a * s;
            }
        }
    }
}

void rope_backward_ref(float *dx, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                       size_t stride) {
    // Rotation by the negative angle, in the rotate_half form of the forward reference.
    size_t half = E / 2;
    float tmp[1024];
    for (size_t n = 0; n < N; n++) {
        for (size_t h = 0; h < H; h++) {
            float *v = dx + n * stride + h * E;
            for (size_t i = 0; i < E; i++) {
                double ang = -(double)positions[n] * (double)inv_freq[i % half];
                double rot = i < half ? -(double)v[i + half] : (double)v[i - half];
                tmp[i] = (float)((double)v[i] * cos(ang) + rot * sin(ang));
            }
            memcpy(v, tmp, E * sizeof(float));
        }
    }
}

// ---------------------------------------------------------------------------
// swiglu

// In place (out == gate, as the forward calls it) the combined `parallel for
// simd` fell back to its scalar version (a runtime aliasing check); a plain
// simd loop per chunk says each element is read before it is written.
enum { SWIGLU_CHUNK = 4096 };

void swiglu_forward(float *out, const float *gate, const float *up, size_t N, size_t F) {
    size_t n = N * F, n_chunks = (n + SWIGLU_CHUNK - 1) / SWIGLU_CHUNK;
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t ch = 0; ch < n_chunks; ch++) {
        size_t i1 = (ch + 1) * SWIGLU_CHUNK < n ? (ch + 1) * SWIGLU_CHUNK : n;
        #pragma omp simd
        for (size_t i = ch * SWIGLU_CHUNK; i < i1; i++) {
            float g = gate[i];
            out[i] = g * sigmoid_vec(g) * up[i];
        }
    }
}

void swiglu_forward_ref(float *out, const float *gate, const float *up, size_t N, size_t F) {
    for (size_t i = 0; i < N * F; i++) {
        double g = gate[i];
        out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}


// Backward: silu(g) = g * sig(g), silu'(g) = sig(g) * (1 + g * (1 - sig(g))).
//
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                     size_t N, size_t F) {
    size_t n = N * F;
    #pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], sig = sigmoid_vec(g);
        dgate[i] += dout[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
        dup[i] += dout[i] * g * sig;
    }
}

void swiglu_backward_ref(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                         size_t N, size_t F) {
    for (size_t i = 0; i < N * F; i++) {
        double g = gate[i], sig = 1.0 / (1.0 + exp(-g));
        dgate[i] += (float)((double)dout[i] * up[i] * sig * (1.0 + g * (1.0 - sig)));
        dup[i] += (float)((double)dout[i] * g * sig);
    }
}

// ---------------------------------------------------------------------------
// softmax

void softmax_row(float *x, size_t n) {
    // The maximum as a vector reduction (a scalar compare-and-select chain
    // costs its latency per entry); the maximum is the same float in any order.
    float mx = -INFINITY;
    #pragma omp simd reduction(max : mx)
    for (size_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    #pragma omp simd reduction(+ : sum)
    for (size_t i = 0; i < n; i++) {
        float e = x[i] == -INFINITY ? 0.0f : exp_nonpos(x[i] - mx);
        x[i] = e;
        sum += e;
    }
    float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (size_t i = 0; i < n; i++) x[i] *= inv;
}

void softmax_row_ref(float *x, size_t n) {
    double mx = -INFINITY, sum = 0.0;
    for (size_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double *e = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) { e[i] = x[i] == -INFINITY ? 0.0 : exp((double)x[i] - mx); sum += e[i]; }
    for (size_t i = 0; i < n; i++) x[i] = sum > 0.0 ? (float)(e[i] / sum) : 0.0f;
    free(e);
}

// ---------------------------------------------------------------------------
// embedding

void embedding_forward(float *out, const int *tokens, const float *table, size_t N, size_t C) {
    #pragma omp parallel for if (N * C > 65536)
    for (size_t n = 0; n < N; n++) memcpy(out + n * C, table + (size_t)tokens[n] * C, C * sizeof(float));
}

void embedding_forward_ref(float *out, const int *tokens, const float *table, size_t N, size_t C) {
    for (size_t n = 0; n < N; n++)
        for (size_t c = 0; c < C; c++) out[n * C + c] = table[(size_t)tokens[n] * C + c];
}

void embedding_backward(float *dtable, const float *dout, const int *tokens, size_t N, size_t C) {
    size_t n_slices = (C + COL_SLICE - 1) / COL_SLICE;
    #pragma omp parallel for schedule(static) if (N * C > 32768)
    for (size_t sl = 0; sl < n_slices; sl++) {
        size_t c0 = sl * COL_SLICE, c1 = c0 + COL_SLICE < C ? c0 + COL_SLICE : C;
        for (size_t n = 0; n < N; n++) {
            float *row = dtable + (size_t)tokens[n] * C;
            for (size_t c = c0; c < c1; c++) row[c] += dout[n * C + c];
        }
    }
}

void embedding_backward_ref(float *dtable, const float *dout, const int *tokens, size_t N, size_t C) {
    for (size_t n = 0; n < N; n++)
        for (size_t c = 0; c < C; c++) dtable[(size_t)tokens[n] * C + c] += dout[n * C + c];
}

// ---------------------------------------------------------------------------
// attention (one head, one sequence; see ops.h)

static int attn_visible(const uint8_t *mask, const int *idx, size_t mask_n, size_t i, size_t j) {
    if (j > i) return 0;
    if (j == i || !mask) return 1;
    size_t qi = idx ? (size_t)idx[i] : i, kj = idx ? (size_t)idx[j] : j;
    return mask[qi * mask_n + kj] != 0;
}

void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                       const uint8_t *mask, const int *idx, size_t mask_n, size_t N, size_t E, size_t sq,
                       size_t sk) {
    const float scale = 1.0f / sqrtf((float)E);
    for (size_t i0 = 0; i0 < N; i0 += ATTN_BLOCK) {
        size_t i1 = i0 + ATTN_BLOCK < N ? i0 + ATTN_BLOCK : N, bq = i1 - i0;
        float *P = probs + i0 * N; // block rows, row stride N, keys 0..i1-1
        // scores [bq, i1] = q_blk [bq, E] @ k[0:i1]^T * scale
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)i1, (int)E, scale, q + i0 * sq,
                    (int)sq, k, (int)sk, 0.0f, P, (int)N);
        for (size_t i = i0; i < i1; i++) {
            float *row = P + (i - i0) * N;
            if (mask)
                for (size_t j = 0; j < i; j++)
                    if (!attn_visible(mask, idx, mask_n, i, j)) row[j] = -INFINITY;
            softmax_row(row, i + 1);
            memset(row + i + 1, 0, (N - i - 1) * sizeof(float));
        }
        // out_blk [bq, E] = P [bq, i1] @ v[0:i1]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bq, (int)E, (int)i1, 1.0f, P, (int)N, v,
                    (int)sk, 0.0f, out + i0 * sq, (int)sq);
    }
}

void attention_forward_ref(float *out, float *probs, const float *q, const float *k, const float *v,
                           const uint8_t *mask, const int *idx, size_t mask_n, size_t N, size_t E, size_t sq,
                           size_t sk) {
    double *sc = xmalloc(N * sizeof(double));
    for (size_t i = 0; i < N; i++) {
        double mx = -INFINITY, sum = 0.0;
        for (size_t j = 0; j < N; j++) {
            if (!attn_visible(mask, idx, mask_n, i, j)) { sc[j] = -INFINITY; continue; }
            double d = 0.0;
            for (size_t e = 0; e < E; e++) d += (double)q[i * sq + e] * k[j * sk + e];
            sc[j] = d / sqrt((double)E);
            mx = sc[j] > mx ? sc[j] : mx;
        }
        for (size_t j = 0; j < N; j++) { sc[j] = sc[j] == -INFINITY ? 0.0 : exp(sc[j] - mx); sum += sc[j]; }
        for (size_t j = 0; j < N; j++) probs[i * N + j] = (float)(sc[j] / sum);
        for (size_t e = 0; e < E; e++) {
            double acc = 0.0;
            for (size_t j = 0; j < N; j++) acc += sc[j] / sum * v[j * sk + e];
            out[i * sq + e] = (float)acc;
        }
    }
    free(sc);
}

// Backward, block of queries [i0, i1) at a time against keys [0, i1):
//   dv += P^T dO,  dP = dO v^T,  dS = P * (dP - rowsum(P * dP)) / sqrt(E),
//   dq += dS k,    dk += dS^T q.
// Entries a query cannot see have P = 0, hence dS = 0: masks need no special case.
void attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *probs,
                        const float *q, const float *k, const float *v, size_t N, size_t E, size_t sq, size_t sk) {
    const float scale = 1.0f / sqrtf((float)E);
    for (size_t i0 = 0; i0 < N; i0 += ATTN_BLOCK) {
        size_t i1 = i0 + ATTN_BLOCK < N ? i0 + ATTN_BLOCK : N, bq = i1 - i0;
        const float *P = probs + i0 * N, *dO = dout + i0 * sq;
        float *dS = scratch; // [bq, i1]
        // dv[0:i1] [i1, E] += P^T [i1, bq] @ dO [bq, E]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)i1, (int)E, (int)bq, 1.0f, P, (int)N, dO,
                    (int)sq, 1.0f, dv, (int)sk);
        // dP [bq, i1] = dO [bq, E] @ v[0:i1]^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)i1, (int)E, 1.0f, dO, (int)sq, v,
                    (int)sk, 0.0f, dS, (int)i1);
        for (size_t r = 0; r < bq; r++) {
            const float *p = P + r * N;
            float *d = dS + r * i1;
            size_t n_vis = i0 + r + 1; // beyond the diagonal p = 0
            float dot = 0.0f;
            for (size_t j = 0; j < n_vis; j++) dot += p[j] * d[j];
            for (size_t j = 0; j < n_vis; j++) d[j] = p[j] * (d[j] - dot) * scale;
            for (size_t j = n_vis; j < i1; j++) d[j] = 0.0f;
        }
        // dq_blk [bq, E] += dS [bq, i1] @ k[0:i1]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bq, (int)E, (int)i1, 1.0f, dS, (int)i1, k,
                    (int)sk, 1.0f, dq + i0 * sq, (int)sq);
        // dk[0:i1] [i1, E] += dS^T [i1, bq] @ q_blk [bq, E]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)i1, (int)E, (int)bq, 1.0f, dS, (int)i1,
                    q + i0 * sq, (int)sq, 1.0f, dk, (int)sk);
    }
}

void attention_backward_ref(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                            const float *probs, const float *q, const float *k, const float *v, size_t N, size_t E,
                            size_t sq, size_t sk) {
    (void)scratch;
    double scale = 1.0 / sqrt((double)E);
    double *dp = xmalloc(N * sizeof(double));
    for (size_t i = 0; i < N; i++) {
        const float *p = probs + i * N;
        double dot = 0.0;
        for (size_t j = 0; j < N; j++) {
            double acc = 0.0;
            for (size_t e = 0; e < E; e++) acc += (double)dout[i * sq + e] * v[j * sk + e];
            dp[j] = acc;
            dot += p[j] * acc;
        }
        for (size_t j = 0; j < N; j++) {
            double ds = p[j] * (dp[j] - dot) * scale;
            for (size_t e = 0; e < E; e++) {
                dq[i * sq + e] += (float)(ds * k[j * sk + e]);
                dk[j * sk + e] += (float)(ds * q[i * sq + e]);
                dv[j * sk + e] += (float)((double)p[j] * dout[i * sq + e]);
            }
        }
    }
    free(dp);
}

// ---------------------------------------------------------------------------
// inference attention against a KV cache (see ops.h)

// The two products of a block of bq queries over [parent | own] keys (P + n_own = nk, row stride nk):
// scores = q . [K_parent; K_own]^T / sqrt(E), then out = scores . [V_parent; V_own].
static void cached_scores(float *scores, const float *q, const float *kp, const float *ko, size_t bq, size_t P,
                          size_t n_own, size_t E, size_t sq) {
    const size_t nk = P + n_own;
    const float scale = 1.0f / sqrtf((float)E);
    if (P > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)P, (int)E, scale, q, (int)sq, kp,
                    (int)E, 0.0f, scores, (int)nk);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)n_own, (int)E, scale, q, (int)sq, ko,
                (int)E, 0.0f, scores + P, (int)nk);
}

static void cached_values(float *out, const float *probs, const float *vp, const float *vo, size_t bq, size_t P,
                          size_t n_own, size_t E, size_t sq) {
    const size_t nk = P + n_own;
    if (P > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bq, (int)E, (int)P, 1.0f, probs, (int)nk, vp,
                    (int)E, 0.0f, out, (int)sq);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bq, (int)E, (int)n_own, 1.0f, probs + P, (int)nk,
                vo, (int)E, P > 0 ? 1.0f : 0.0f, out, (int)sq);
}

void attention_cached_forward(float *out, float *probs, const float *q, const float *kp, const float *vp,
                              const float *ko, const float *vo, const uint8_t *mask, const int *idx,
                              size_t mask_n, size_t P, size_t n_old, size_t i0, size_t i1, size_t E, size_t sq) {
    const size_t n_own = n_old + i1; // own keys any query of the block can see
    const size_t nk = P + n_own, bq = i1 - i0;
    cached_scores(probs, q, kp, ko, bq, P, n_own, E, sq); // probs [bq, nk]: the scaled scores

    // Hide the new keys a query may not see: later ones (not even touched: the
    // softmax runs over the row's visible prefix and the rest is zeroed), and
    // earlier ones the mask forbids.
    for (size_t i = i0; i < i1; i++) {
        float *row = probs + (i - i0) * nk;
        size_t n_vis = P + n_old + i + 1;
        if (mask) {
            const uint8_t *mrow = mask + (size_t)idx[i] * mask_n;
            for (size_t j = 0; j < i; j++)
                if (!mrow[idx[j]]) row[P + n_old + j] = -INFINITY;
        }
        softmax_row(row, n_vis);
        memset(row + n_vis, 0, (nk - n_vis) * sizeof(float));
    }
    cached_values(out, probs, vp, vo, bq, P, n_own, E, sq);
}

// Key j of [parent | own] seen by new row i (see ops.h); j indexes the joined list.
static int cached_visible(const uint8_t *mask, const int *idx, size_t mask_n, size_t P, size_t n_old, size_t i,
                          size_t j) {
    if (j < P + n_old) return 1;
    size_t t = j - P - n_old; // new row t
    if (t > i) return 0;
    if (t == i || !mask) return 1;
    return mask[(size_t)idx[i] * mask_n + (size_t)idx[t]] != 0;
}

void attention_cached_forward_ref(float *out, float *probs, const float *q, const float *kp, const float *vp,
                                  const float *ko, const float *vo, const uint8_t *mask, const int *idx,
                                  size_t mask_n, size_t P, size_t n_old, size_t i0, size_t i1, size_t E,
                                  size_t sq) {
    const size_t nk = P + n_old + i1;
    double *sc = xmalloc(nk * sizeof(double));
    for (size_t i = i0; i < i1; i++) {
        const float *qi = q + (i - i0) * sq;
        double mx = -INFINITY, sum = 0.0;
        for (size_t j = 0; j < nk; j++) {
            if (!cached_visible(mask, idx, mask_n, P, n_old, i, j)) { sc[j] = -INFINITY; continue; }
            const float *kj = j < P ? kp + j * E : ko + (j - P) * E;
            double d = 0.0;
            for (size_t e = 0; e < E; e++) d += (double)qi[e] * kj[e];
            sc[j] = d / sqrt((double)E);
            mx = sc[j] > mx ? sc[j] : mx;
        }
        for (size_t j = 0; j < nk; j++) { sc[j] = sc[j] == -INFINITY ? 0.0 : exp(sc[j] - mx); sum += sc[j]; }
        for (size_t j = 0; j < nk; j++) probs[(i - i0) * nk + j] = (float)(sc[j] / sum);
        for (size_t e = 0; e < E; e++) {
            double acc = 0.0;
            for (size_t j = 0; j < nk; j++) acc += sc[j] / sum * (j < P ? vp[j * E + e] : vo[(j - P) * E + e]);
            out[(i - i0) * sq + e] = (float)acc;
        }
    }
    free(sc);
}

size_t attention_cached_sparse_work(size_t bq, size_t nk, size_t E) {
    // scores [bq, nk] (the dense fallback's probs), gathered K and V [nk, E] each, then the
    // columns (ints) and the union flags (bytes) over the new keys (< nk each)
    return bq * nk + 2 * nk * E + nk + nk / 4 + 1;
}

// The new keys [0, i1) some row of [i0, i1) sees, ascending, into cols; their count.
static size_t visible_cols(int *cols, uint8_t *any, const uint8_t *mask, const int *idx, size_t mask_n, size_t i0,
                           size_t i1) {
    int identity = 1;
    for (size_t j = 0; j < i1 && identity; j++) identity = idx[j] == (int)j;
    memset(any, 0, i1);
    for (size_t i = i0; i < i1; i++) {
        any[i] = 1;
        if (identity) {
            const uint8_t *mrow = mask + i * mask_n;
            for (size_t j = 0; j < i; j++) any[j] |= mrow[j];
        } else {
            const uint8_t *mrow = mask + (size_t)idx[i] * mask_n;
            for (size_t j = 0; j < i; j++) any[j] |= mrow[idx[j]];
        }
    }
    size_t nc = 0;
    for (size_t j = 0; j < i1; j++)
        if (any[j]) cols[nc++] = (int)j;
    return nc;
}

void attention_cached_sparse_forward(float *out, float *work, const float *q, const float *kp, const float *vp,
                                     const float *ko, const float *vo, const uint8_t *mask, const int *idx,
                                     size_t mask_n, size_t P, size_t n_old, size_t i0, size_t i1, size_t E,
                                     size_t sq) {
    const size_t nk_dense = P + n_old + i1, bq = i1 - i0;
    float *scores = work, *kg = scores + bq * nk_dense, *vg = kg + nk_dense * E;
    int *cols = (int *)(vg + nk_dense * E);
    uint8_t *any = (uint8_t *)(cols + nk_dense);
    size_t nc = mask ? visible_cols(cols, any, mask, idx, mask_n, i0, i1) : i1;
    if (4 * nc > 3 * i1) {
        attention_cached_forward(out, scores, q, kp, vp, ko, vo, mask, idx, mask_n, P, n_old, i0, i1, E, sq);
        return;
    }
    // own keys: the earlier entries, then the gathered new ones
    const size_t n_own = n_old + nc, nk = P + n_own;
    memcpy(kg, ko, n_old * E * sizeof(float));
    memcpy(vg, vo, n_old * E * sizeof(float));
    for (size_t c = 0; c < nc; c++) {
        memcpy(kg + (n_old + c) * E, ko + (n_old + (size_t)cols[c]) * E, E * sizeof(float));
        memcpy(vg + (n_old + c) * E, vo + (n_old + (size_t)cols[c]) * E, E * sizeof(float));
    }
    cached_scores(scores, q, kp, kg, bq, P, n_own, E, sq);
    size_t c_vis = 0; // gathered columns with key <= i (cols ascend)
    for (size_t i = i0; i < i1; i++) {
        float *row = scores + (i - i0) * nk, *g = row + P + n_old;
        while (c_vis < nc && (size_t)cols[c_vis] <= i) c_vis++;
        const uint8_t *mrow = mask + (size_t)idx[i] * mask_n;
        for (size_t c = 0; c + 1 < c_vis; c++) // the last visible column is key i itself
            if (!mrow[idx[cols[c]]]) g[c] = -INFINITY;
        size_t n_vis = P + n_old + c_vis;
        softmax_row(row, n_vis);
        memset(row + n_vis, 0, (nk - n_vis) * sizeof(float));
    }
    cached_values(out, scores, vp, vg, bq, P, n_own, E, sq);
}

void attention_cached_sparse_forward_ref(float *out, float *work, const float *q, const float *kp, const float *vp,
                                         const float *ko, const float *vo, const uint8_t *mask, const int *idx,
                                         size_t mask_n, size_t P, size_t n_old, size_t i0, size_t i1, size_t E,
                                         size_t sq) {
    attention_cached_forward_ref(out, work, q, kp, vp, ko, vo, mask, idx, mask_n, P, n_old, i0, i1, E, sq);
}

void attention_shared_forward(float *out, float *scores, float *qbuf, float *obuf, const float *q, const float *kp,
                              const float *vp, const AttnOwnKV *own, size_t nr, size_t hpg, size_t P, size_t E,
                              size_t sq) {
    const size_t M = nr * hpg;
    const float scale = 1.0f / sqrtf((float)E);
    size_t max_own = 0;
    for (size_t r = 0; r < nr; r++) {
        size_t n = (size_t)own[r].n_old + (size_t)own[r].i + 1;
        max_own = n > max_own ? n : max_own;
    }
    const size_t ld = P + max_own;

    // qbuf [M, E]: row j*nr + r is query head j of row r.
    for (size_t j = 0; j < hpg; j++)
        for (size_t r = 0; r < nr; r++) memcpy(qbuf + (j * nr + r) * E, q + r * sq + j * E, E * sizeof(float));

    // scores[:, :P] = qbuf . K_parent^T, all rows at once.
    if (P > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)P, (int)E, scale, qbuf, (int)E, kp,
                    (int)E, 0.0f, scores, (int)ld);

    // Own keys row by row (causal among the sequence's new rows, the mask), then the joint softmax.
    for (size_t j = 0; j < hpg; j++) {
        for (size_t r = 0; r < nr; r++) {
            const AttnOwnKV *o = &own[r];
            const size_t n_old = (size_t)o->n_old, i = (size_t)o->i, n_vis_own = n_old + i + 1;
            const float *qr = qbuf + (j * nr + r) * E;
            float *row = scores + (j * nr + r) * ld;
            for (size_t t = 0; t < n_vis_own; t++) {
                float dot = 0.0f;
                for (size_t d = 0; d < E; d++) dot += qr[d] * o->k[t * E + d];
                row[P + t] = scale * dot;
            }
            if (o->mask_row)
                for (size_t t = 0; t < i; t++)
                    if (!o->mask_row[o->idx[t]]) row[P + n_old + t] = -INFINITY;
            softmax_row(row, P + n_vis_own);
            memset(row + P + n_vis_own, 0, (ld - (P + n_vis_own)) * sizeof(float));
        }
    }

    // obuf [M, E] = probs[:, :P] . V_parent (one sgemm), then each row's own values.
    if (P > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)E, (int)P, 1.0f, scores, (int)ld, vp,
                    (int)E, 0.0f, obuf, (int)E);
    else
        memset(obuf, 0, M * E * sizeof(float));
    for (size_t j = 0; j < hpg; j++) {
        for (size_t r = 0; r < nr; r++) {
            const AttnOwnKV *o = &own[r];
            const size_t n_vis_own = (size_t)o->n_old + (size_t)o->i + 1;
            const float *row = scores + (j * nr + r) * ld + P;
            float *orow = obuf + (j * nr + r) * E;
            for (size_t t = 0; t < n_vis_own; t++)
                for (size_t d = 0; d < E; d++) orow[d] += row[t] * o->v[t * E + d];
            memcpy(out + r * sq + j * E, orow, E * sizeof(float));
        }
    }
}

// Own entry u seen by the row o (see AttnOwnKV); u <= n_old + i.
static int own_visible(const AttnOwnKV *o, size_t u) {
    if (u < (size_t)o->n_old) return 1;
    size_t t = u - (size_t)o->n_old; // new row t
    if (t == (size_t)o->i || !o->mask_row) return 1;
    return o->mask_row[o->idx[t]] != 0;
}

void attention_shared_forward_ref(float *out, float *scores, float *qbuf, float *obuf, const float *q,
                                  const float *kp, const float *vp, const AttnOwnKV *own, size_t nr, size_t hpg,
                                  size_t P, size_t E, size_t sq) {
    (void)scores; (void)qbuf; (void)obuf;
    for (size_t r = 0; r < nr; r++) {
        const AttnOwnKV *o = &own[r];
        const size_t nk = P + (size_t)o->n_old + (size_t)o->i + 1; // [parent | own 0..n_old+i]
        double *sc = xmalloc(nk * sizeof(double));
        for (size_t j = 0; j < hpg; j++) {
            const float *qj = q + r * sq + j * E;
            double mx = -INFINITY, sum = 0.0;
            for (size_t t = 0; t < nk; t++) {
                if (t >= P && !own_visible(o, t - P)) { sc[t] = -INFINITY; continue; }
                const float *kt = t < P ? kp + t * E : o->k + (t - P) * E;
                double d = 0.0;
                for (size_t e = 0; e < E; e++) d += (double)qj[e] * kt[e];
                sc[t] = d / sqrt((double)E);
                mx = sc[t] > mx ? sc[t] : mx;
            }
            for (size_t t = 0; t < nk; t++) { sc[t] = sc[t] == -INFINITY ? 0.0 : exp(sc[t] - mx); sum += sc[t]; }
            for (size_t e = 0; e < E; e++) {
                double acc = 0.0;
                for (size_t t = 0; t < nk; t++) acc += sc[t] / sum * (t < P ? vp[t * E + e] : o->v[(t - P) * E + e]);
                out[r * sq + j * E + e] = (float)acc;
            }
        }
        free(sc);
    }
}

// ---------------------------------------------------------------------------
// cross-entropy

void crossentropy_forward(float *losses, const float *logits, const int *labels, size_t N, size_t V) {
    #pragma omp parallel for if (N * V > 65536)
    for (size_t n = 0; n < N; n++) {
        if (labels[n] < 0) { losses[n] = 0.0f; continue; }
        const float *x = logits + n * V;
        float mx = -INFINITY;
        for (size_t i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
        float sum = 0.0f;
        for (size_t i = 0; i < V; i++) sum += expf(x[i] - mx);
        losses[n] = logf(sum) + mx - x[labels[n]];
    }
}

void crossentropy_forward_ref(float *losses, const float *logits, const int *labels, size_t N, size_t V) {
    for (size_t n = 0; n < N; n++) {
        if (labels[n] < 0) { losses[n] = 0.0f; continue; }
        double mx = -INFINITY, sum = 0.0;
        for (size_t i = 0; i < V; i++) mx = logits[n * V + i] > mx ? logits[n * V + i] : mx;
        for (size_t i = 0; i < V; i++) sum += exp(logits[n * V + i] - mx);
        losses[n] = (float)(log(sum) + mx - logits[n * V + labels[n]]);
    }
}

void crossentropy_backward(float *dlogits, const float *logits, const int *labels, float dloss, size_t N,
                           size_t V) {
    #pragma omp parallel for if (N * V > 65536)
    for (size_t n = 0; n < N; n++) {
        const float *x = logits + n * V;
        float *d = dlogits + n * V;
        if (labels[n] < 0) { memset(d, 0, V * sizeof(float)); continue; }
        float mx = -INFINITY;
        for (size_t i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
        float sum = 0.0f;
        for (size_t i = 0; i < V; i++) sum += expf(x[i] - mx);
        float inv = dloss / sum;
        for (size_t i = 0; i < V; i++) d[i] = expf(x[i] - mx) * inv; // reads x[i] before writing d[i]
        d[labels[n]] -= dloss;
    }
}

void crossentropy_backward_ref(float *dlogits, const float *logits, const int *labels, float dloss, size_t N,
                               size_t V) {
    double *p = xmalloc(V * sizeof(double));
    for (size_t n = 0; n < N; n++) {
        if (labels[n] < 0) {
            for (size_t i = 0; i < V; i++) dlogits[n * V + i] = 0.0f;
            continue;
        }
        double mx = -INFINITY, sum = 0.0;
        for (size_t i = 0; i < V; i++) mx = logits[n * V + i] > mx ? logits[n * V + i] : mx;
        for (size_t i = 0; i < V; i++) { p[i] = exp(logits[n * V + i] - mx); sum += p[i]; }
        for (size_t i = 0; i < V; i++)
            dlogits[n * V + i] = (float)(dloss * (p[i] / sum - (i == (size_t)labels[n] ? 1.0 : 0.0)));
    }
    free(p);
}
