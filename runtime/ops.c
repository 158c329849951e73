// ops.c: see ops.h. Fast versions use cblas_sgemm and OpenMP; the reference
// versions are plain loops with double accumulators.
#include "runtime/ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

// ---------------------------------------------------------------------------
// swiglu

void swiglu_forward(float *out, const float *gate, const float *up, size_t N, size_t F) {
    size_t n = N * F;
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void swiglu_forward_ref(float *out, const float *gate, const float *up, size_t N, size_t F) {
    for (size_t i = 0; i < N * F; i++) {
        double g = gate[i];
        out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}

// ---------------------------------------------------------------------------
// softmax

// exp(x) for x <= 0 (softmax arguments after subtracting the max) in a form the
// compiler vectorises: x = n ln2 + r with |r| <= ln2/2, e^r by its degree-7
// Taylor polynomial (relative error < 2e-7 on that interval), 2^n from the
// exponent bits. Below -87 the result flushes to 0 (e^-87 < FLT_MIN anyway).
static inline float exp_nonpos(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = __builtin_roundf(x * 1.44269504088896341f);
    float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f; // ln2 split in two for precision
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.6666667e-1f + r * (4.1666668e-2f +
              r * (8.3333338e-3f + r * (1.3888889e-3f + r * 1.9841270e-4f))))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

void softmax_row(float *x, size_t n) {
    float mx = -INFINITY;
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
