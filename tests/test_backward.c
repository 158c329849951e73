// test_backward.c: the backward pass.
//
// 1. Every op: the fast backward (float) against central finite differences
//    of a double-precision version of the op's forward written here, for the
//    objective sum(dout * op(inputs)) with a random dout; and the fast
//    backward against its *_ref twin. Step h = 1e-5 on double inputs;
//    tolerance: rel err (max |a - b| / max |b| over the whole gradient)
//    < 1e-4 against finite differences (float rounding of the fast op is
//    ~1e-6), < 1e-5 between fast and _ref (float vs double accumulation).
// 2. The whole model: train_backward's gradient of the summed loss w.r.t. a
//    sample of entries of EVERY parameter tensor (embed, norms, q/k/v/o,
//    Qwen2 biases, gate/up/down, final norm, lm_head untied and tied) against
//    central differences of the loss computed in double precision by the
//    independent reference (tests/helpers/ref_model.c, which applies the
//    layer plan as a mask), under the full plan, EARN plans (k = 1, 2, 3 with
//    different register layouts), masks and custom positions, several
//    sequences. Step: 1e-3 on the float parameter (the actual float step is
//    used). Tolerance: rel err < 1e-3 per tensor sample (max |g - fd| / max |fd|);
//    seen: ~1e-5..1e-4 (finite-difference truncation plus float rounding).
// 3. The training forward's logits equal model_forward's for the same batch
//    (rel err < 1e-5; compress500x's LoRA rows included), and its loss equals
//    the double reference's (< 1e-5).
// 4. compress500x: LoRA's low-rank op (lora_forward/backward) against its _ref
//    twin and finite differences as in 1 (some rows not flagged: those keep
//    their base output bit for bit and get no input gradient); the whole model
//    with LoRA on the prompt and compression rows under Gist's mask as in 2,
//    every tensor including the eight LoRA ones (reference: merged weights
//    W + (alpha/r) B A in double); and the frozen base: after
//    grads_keep_lora_and_rows and adamw_train_lora_only, two AdamW steps leave
//    every base tensor bit for bit as it was except the compression tokens'
//    embedding rows, which move, as do the adapters.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "helpers/ref_model.h"
#include "runtime/adamw.h"
#include "runtime/kvcache.h"
#include "runtime/model.h"
#include "runtime/ops.h"
#include "runtime/plan.h"
#include "runtime/train.h"

#define OP_FD_TOL 1e-4
#define OP_REF_TOL 1e-5
#define MODEL_FD_TOL 1e-3
#define LOGITS_TOL 1e-5

static void fill_normal(float *x, size_t n, Rng *r, float std) {
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(r);
}
static double *to_double(const float *x, size_t n) {
    double *d = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}
static double rel_err_ff(const float *a, const float *b, size_t n) {
    double *bd = to_double(b, n);
    double r = rel_err(a, bd, n);
    free(bd);
    return r;
}

// Central differences of f over the n entries of in[which] (double inputs).
typedef double (*ObjFn)(double **in, const void *ctx);
static void fd_grad(double *grad, ObjFn f, double **in, int which, size_t n, const void *ctx) {
    const double h = 1e-5;
    double *x = in[which];
    for (size_t i = 0; i < n; i++) {
        double save = x[i];
        x[i] = save + h;
        double fp = f(in, ctx);
        x[i] = save - h;
        double fm = f(in, ctx);
        x[i] = save;
        grad[i] = (fp - fm) / (2.0 * h);
    }
}
// Checks a float gradient against finite differences of in[which].
static void check_fd(const char *what, const float *grad, ObjFn f, double **in, int which, size_t n,
                     const void *ctx) {
    double *fd = malloc(n * sizeof(double));
    fd_grad(fd, f, in, which, n, ctx);
    double err = rel_err(grad, fd, n);
    print_message("  %-28s vs finite differences: rel err %.2e\n", what, err);
    assert_true(err < OP_FD_TOL);
    free(fd);
}
static void check_ref(const char *what, const float *fast, const float *ref, size_t n) {
    double err = rel_err_ff(fast, ref, n);
    print_message("  %-28s fast vs _ref: rel err %.2e\n", what, err);
    assert_true(err < OP_REF_TOL);
}

// ---------------------------------------------------------------------------
// Ops

typedef struct { size_t N, C, OC; const double *dout; } MatmulCtx;
// in: inp [N, C], weight [OC, C], bias [OC]
static double matmul_obj(double **in, const void *cv) {
    const MatmulCtx *c = cv;
    double s = 0.0;
    for (size_t n = 0; n < c->N; n++)
        for (size_t o = 0; o < c->OC; o++) {
            double y = in[2][o];
            for (size_t k = 0; k < c->C; k++) y += in[0][n * c->C + k] * in[1][o * c->C + k];
            s += c->dout[n * c->OC + o] * y;
        }
    return s;
}
static void test_matmul_backward(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 1);
    size_t N = 13, C = 11, OC = 7;
    float *x = malloc(N * C * 4), *w = malloc(OC * C * 4), *b = malloc(OC * 4), *dy = malloc(N * OC * 4);
    fill_normal(x, N * C, &r, 1); fill_normal(w, OC * C, &r, 1); fill_normal(b, OC, &r, 1); fill_normal(dy, N * OC, &r, 1);
    float *dx = calloc(N * C, 4), *dw = calloc(OC * C, 4), *db = calloc(OC, 4);
    float *dx2 = calloc(N * C, 4), *dw2 = calloc(OC * C, 4), *db2 = calloc(OC, 4);
    matmul_backward(dx, dw, db, dy, x, w, N, C, OC);
    matmul_backward_ref(dx2, dw2, db2, dy, x, w, N, C, OC);
    double *dyd = to_double(dy, N * OC);
    double *in[3] = {to_double(x, N * C), to_double(w, OC * C), to_double(b, OC)};
    MatmulCtx ctx = {N, C, OC, dyd};
    check_fd("matmul dinp", dx, matmul_obj, in, 0, N * C, &ctx);
    check_fd("matmul dweight", dw, matmul_obj, in, 1, OC * C, &ctx);
    check_fd("matmul dbias", db, matmul_obj, in, 2, OC, &ctx);
    check_ref("matmul dinp", dx, dx2, N * C);
    check_ref("matmul dweight", dw, dw2, OC * C);
    check_ref("matmul dbias", db, db2, OC);
    // Gradients add up: a second call doubles them.
    matmul_backward(dx, dw, db, dy, x, w, N, C, OC);
    for (size_t i = 0; i < OC; i++) assert_true(fabsf(db[i] - 2 * db2[i]) <= 1e-5f * (1 + fabsf(db[i])));
    // Large enough to take the parallel dbias path (N * OC > 65536), against the reference.
    size_t N2 = 700, C2 = 33, OC2 = 130;
    float *X = malloc(N2 * C2 * 4), *W = malloc(OC2 * C2 * 4), *DY = malloc(N2 * OC2 * 4);
    fill_normal(X, N2 * C2, &r, 1); fill_normal(W, OC2 * C2, &r, 1); fill_normal(DY, N2 * OC2, &r, 1);
    float *a1 = calloc(N2 * C2, 4), *a2 = calloc(OC2 * C2, 4), *a3 = calloc(OC2, 4);
    float *b1 = calloc(N2 * C2, 4), *b2 = calloc(OC2 * C2, 4), *b3 = calloc(OC2, 4);
    matmul_backward(a1, a2, a3, DY, X, W, N2, C2, OC2);
    matmul_backward_ref(b1, b2, b3, DY, X, W, N2, C2, OC2);
    check_ref("matmul (large) dinp", a1, b1, N2 * C2);
    check_ref("matmul (large) dweight", a2, b2, OC2 * C2);
    check_ref("matmul (large) dbias", a3, b3, OC2);
    free(X); free(W); free(DY); free(a1); free(a2); free(a3); free(b1); free(b2); free(b3);
    free(x); free(w); free(b); free(dy); free(dx); free(dw); free(db); free(dx2); free(dw2); free(db2);
    free(dyd); free(in[0]); free(in[1]); free(in[2]);
}

typedef struct { size_t N, C, R, OC; double s; const uint8_t *on; const double *dout; } LoraCtx;
// in: inp [N, C], A [R, C], B [OC, R]; the objective sum(dout * s * (inp A^T) B^T) over flagged rows
static double lora_obj(double **in, const void *cv) {
    const LoraCtx *c = cv;
    double s = 0.0;
    for (size_t n = 0; n < c->N; n++) {
        if (!c->on[n]) continue;
        for (size_t o = 0; o < c->OC; o++) {
            double y = 0.0;
            for (size_t r = 0; r < c->R; r++) {
                double u = 0.0;
                for (size_t k = 0; k < c->C; k++) u += in[0][n * c->C + k] * in[1][r * c->C + k];
                y += u * in[2][o * c->R + r];
            }
            s += c->dout[n * c->OC + o] * c->s * y;
        }
    }
    return s;
}
static void test_lora_backward(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 9);
    size_t N = 7, C = 10, R = 3, OC = 6;
    const float s = 1.5f;
    const uint8_t on[7] = {1, 0, 1, 1, 0, 0, 1};
    float *x = malloc(N * C * 4), *A = malloc(R * C * 4), *B = malloc(OC * R * 4), *dy = malloc(N * OC * 4);
    fill_normal(x, N * C, &r, 1); fill_normal(A, R * C, &r, 1); fill_normal(B, OC * R, &r, 1);
    fill_normal(dy, N * OC, &r, 1);
    // Forward: onto a random base output; unflagged rows stay bit for bit.
    float *y0 = malloc(N * OC * 4), *y1 = malloc(N * OC * 4), *y2 = malloc(N * OC * 4);
    float *u1 = malloc(N * R * 4), *u2 = malloc(N * R * 4);
    fill_normal(y0, N * OC, &r, 1);
    memcpy(y1, y0, N * OC * 4);
    memcpy(y2, y0, N * OC * 4);
    lora_forward(y1, u1, x, A, B, on, s, N, C, R, OC);
    lora_forward_ref(y2, u2, x, A, B, on, s, N, C, R, OC);
    check_ref("lora out", y1, y2, N * OC);
    check_ref("lora u", u1, u2, N * R);
    for (size_t n = 0; n < N; n++)
        if (!on[n]) assert_memory_equal(y1 + n * OC, y0 + n * OC, OC * 4);
    // Backward.
    float *dx = calloc(N * C, 4), *dA = calloc(R * C, 4), *dB = calloc(OC * R, 4), *du = malloc(N * R * 4);
    float *dx2 = calloc(N * C, 4), *dA2 = calloc(R * C, 4), *dB2 = calloc(OC * R, 4), *du2 = malloc(N * R * 4);
    lora_backward(dx, dA, dB, du, dy, x, u1, A, B, on, s, N, C, R, OC);
    lora_backward_ref(dx2, dA2, dB2, du2, dy, x, u2, A, B, on, s, N, C, R, OC);
    double *dyd = to_double(dy, N * OC);
    double *in[3] = {to_double(x, N * C), to_double(A, R * C), to_double(B, OC * R)};
    LoraCtx ctx = {N, C, R, OC, s, on, dyd};
    check_fd("lora dinp", dx, lora_obj, in, 0, N * C, &ctx);
    check_fd("lora dA", dA, lora_obj, in, 1, R * C, &ctx);
    check_fd("lora dB", dB, lora_obj, in, 2, OC * R, &ctx);
    check_ref("lora dinp", dx, dx2, N * C);
    check_ref("lora dA", dA, dA2, R * C);
    check_ref("lora dB", dB, dB2, OC * R);
    for (size_t n = 0; n < N; n++)
        for (size_t k = 0; !on[n] && k < C; k++) assert_true(dx[n * C + k] == 0.0f);
    free(x); free(A); free(B); free(dy); free(y0); free(y1); free(y2); free(u1); free(u2);
    free(dx); free(dA); free(dB); free(du); free(dx2); free(dA2); free(dB2); free(du2);
    free(dyd); free(in[0]); free(in[1]); free(in[2]);
}

typedef struct { size_t N, C; double eps; const double *dout; } NormCtx;
static double rmsnorm_obj(double **in, const void *cv) {
    const NormCtx *c = cv;
    double s = 0.0;
    for (size_t n = 0; n < c->N; n++) {
        const double *x = in[0] + n * c->C;
        double ss = 0.0;
        for (size_t k = 0; k < c->C; k++) ss += x[k] * x[k];
        double rs = 1.0 / sqrt(ss / (double)c->C + c->eps);
        for (size_t k = 0; k < c->C; k++) s += c->dout[n * c->C + k] * x[k] * rs * in[1][k];
    }
    return s;
}
static void test_rmsnorm_backward(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 2);
    size_t N = 9, C = 24;
    float eps = 1e-5f;
    float *x = malloc(N * C * 4), *w = malloc(C * 4), *dy = malloc(N * C * 4);
    fill_normal(x, N * C, &r, 1); fill_normal(w, C, &r, 1); fill_normal(dy, N * C, &r, 1);
    float *dx = calloc(N * C, 4), *dw = calloc(C, 4), *dx2 = calloc(N * C, 4), *dw2 = calloc(C, 4);
    rmsnorm_backward(dx, dw, dy, x, w, N, C, eps);
    rmsnorm_backward_ref(dx2, dw2, dy, x, w, N, C, eps);
    double *dyd = to_double(dy, N * C);
    double *in[2] = {to_double(x, N * C), to_double(w, C)};
    NormCtx ctx = {N, C, eps, dyd};
    check_fd("rmsnorm dinp", dx, rmsnorm_obj, in, 0, N * C, &ctx);
    check_fd("rmsnorm dweight", dw, rmsnorm_obj, in, 1, C, &ctx);
    check_ref("rmsnorm dinp", dx, dx2, N * C);
    check_ref("rmsnorm dweight", dw, dw2, C);
    // Parallel path (N * C > 32768).
    size_t N2 = 300, C2 = 130;
    float *X = malloc(N2 * C2 * 4), *W = malloc(C2 * 4), *DY = malloc(N2 * C2 * 4);
    fill_normal(X, N2 * C2, &r, 1); fill_normal(W, C2, &r, 1); fill_normal(DY, N2 * C2, &r, 1);
    float *a1 = calloc(N2 * C2, 4), *a2 = calloc(C2, 4), *b1 = calloc(N2 * C2, 4), *b2 = calloc(C2, 4);
    rmsnorm_backward(a1, a2, DY, X, W, N2, C2, eps);
    rmsnorm_backward_ref(b1, b2, DY, X, W, N2, C2, eps);
    check_ref("rmsnorm (large) dinp", a1, b1, N2 * C2);
    check_ref("rmsnorm (large) dweight", a2, b2, C2);
    free(X); free(W); free(DY); free(a1); free(a2); free(b1); free(b2);
    free(x); free(w); free(dy); free(dx); free(dw); free(dx2); free(dw2); free(dyd); free(in[0]); free(in[1]);
}

typedef struct { size_t N, H, E, stride; const int *pos; const float *inv; const double *dout; } RopeCtx;
static double rope_obj(double **in, const void *cv) {
    const RopeCtx *c = cv;
    size_t half = c->E / 2;
    double s = 0.0;
    for (size_t n = 0; n < c->N; n++)
        for (size_t h = 0; h < c->H; h++) {
            const double *v = in[0] + n * c->stride + h * c->E;
            const double *d = c->dout + n * c->stride + h * c->E;
            for (size_t i = 0; i < half; i++) {
                double ang = (double)c->pos[n] * (double)c->inv[i];
                s += d[i] * (v[i] * cos(ang) - v[i + half] * sin(ang));
                s += d[i + half] * (v[i + half] * cos(ang) + v[i] * sin(ang));
            }
        }
    return s;
}
static void test_rope_backward(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 3);
    size_t N = 5, H = 3, E = 8, stride = 28; // rows wider than H*E: q/k inside wider rows
    int pos[5] = {0, 1, 7, 33, 90};
    float inv[4];
    for (int i = 0; i < 4; i++) inv[i] = powf(10000.0f, -2.0f * i / 8.0f);
    float *x = malloc(N * stride * 4), *dy = malloc(N * stride * 4), *g1 = malloc(N * stride * 4),
          *g2 = malloc(N * stride * 4);
    fill_normal(x, N * stride, &r, 1); fill_normal(dy, N * stride, &r, 1);
    for (size_t n = 0; n < N; n++) // the gaps outside the heads carry no gradient
        for (size_t i = H * E; i < stride; i++) dy[n * stride + i] = 0.0f;
    memcpy(g1, dy, N * stride * 4);
    memcpy(g2, dy, N * stride * 4);
    rope_backward(g1, pos, inv, N, H, E, stride);
    rope_backward_ref(g2, pos, inv, N, H, E, stride);
    double *dyd = to_double(dy, N * stride);
    double *in[1] = {to_double(x, N * stride)};
    RopeCtx ctx = {N, H, E, stride, pos, inv, dyd};
    check_fd("rope dx", g1, rope_obj, in, 0, N * stride, &ctx);
    check_ref("rope dx", g1, g2, N * stride);
    // Orthogonal: backward undoes forward.
    memcpy(g1, x, N * stride * 4);
    rope_forward(g1, pos, inv, N, H, E, stride);
    rope_backward(g1, pos, inv, N, H, E, stride);
    check_ref("rope backward(forward(x))", g1, x, N * stride);
    free(x); free(dy); free(g1); free(g2); free(dyd); free(in[0]);
}

typedef struct { size_t n; const double *dout; } SwigluCtx;
static double swiglu_obj(double **in, const void *cv) {
    const SwigluCtx *c = cv;
    double s = 0.0;
    for (size_t i = 0; i < c->n; i++) s += c->dout[i] * in[0][i] / (1.0 + exp(-in[0][i])) * in[1][i];
    return s;
}
static void test_swiglu_backward(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 4);
    size_t N = 6, F = 17, n = N * F;
    float *g = malloc(n * 4), *u = malloc(n * 4), *dy = malloc(n * 4);
    fill_normal(g, n, &r, 2); fill_normal(u, n, &r, 1); fill_normal(dy, n, &r, 1);
    float *dg = calloc(n, 4), *du = calloc(n, 4), *dg2 = calloc(n, 4), *du2 = calloc(n, 4);
    swiglu_backward(dg, du, dy, g, u, N, F);
    swiglu_backward_ref(dg2, du2, dy, g, u, N, F);
    double *dyd = to_double(dy, n);
    double *in[2] = {to_double(g, n), to_double(u, n)};
    SwigluCtx ctx = {n, dyd};
    check_fd("swiglu dgate", dg, swiglu_obj, in, 0, n, &ctx);
    check_fd("swiglu dup", du, swiglu_obj, in, 1, n, &ctx);
    check_ref("swiglu dgate", dg, dg2, n);
    check_ref("swiglu dup", du, du2, n);
    free(g); free(u); free(dy); free(dg); free(du); free(dg2); free(du2); free(dyd); free(in[0]); free(in[1]);
}

typedef struct { size_t N, C; const int *tok; const double *dout; } EmbCtx;
static double embedding_obj(double **in, const void *cv) {
    const EmbCtx *c = cv;
    double s = 0.0;
    for (size_t n = 0; n < c->N; n++)
        for (size_t k = 0; k < c->C; k++) s += c->dout[n * c->C + k] * in[0][(size_t)c->tok[n] * c->C + k];
    return s;
}
static void test_embedding_backward(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 5);
    size_t V = 11, C = 70, N = 40; // repeated tokens; C spans several column slices
    int tok[40];
    for (size_t n = 0; n < N; n++) tok[n] = (int)(rng_u64(&r) % V);
    float *tab = malloc(V * C * 4), *dy = malloc(N * C * 4), *o1 = malloc(N * C * 4), *o2 = malloc(N * C * 4);
    fill_normal(tab, V * C, &r, 1); fill_normal(dy, N * C, &r, 1);
    embedding_forward(o1, tok, tab, N, C);
    embedding_forward_ref(o2, tok, tab, N, C);
    assert_memory_equal(o1, o2, N * C * 4);
    float *d1 = calloc(V * C, 4), *d2 = calloc(V * C, 4);
    embedding_backward(d1, dy, tok, N, C);
    embedding_backward_ref(d2, dy, tok, N, C);
    double *dyd = to_double(dy, N * C);
    double *in[1] = {to_double(tab, V * C)};
    EmbCtx ctx = {N, C, tok, dyd};
    check_fd("embedding dtable", d1, embedding_obj, in, 0, V * C, &ctx);
    check_ref("embedding dtable", d1, d2, V * C);
    // Large (parallel path).
    size_t N2 = 2000, C2 = 64;
    int *tk = malloc(N2 * sizeof(int));
    for (size_t n = 0; n < N2; n++) tk[n] = (int)(rng_u64(&r) % V);
    float *DY = malloc(N2 * C2 * 4), *e1 = calloc(V * C2, 4), *e2 = calloc(V * C2, 4);
    fill_normal(DY, N2 * C2, &r, 1);
    embedding_backward(e1, DY, tk, N2, C2);
    embedding_backward_ref(e2, DY, tk, N2, C2);
    check_ref("embedding (large) dtable", e1, e2, V * C2);
    free(tk); free(DY); free(e1); free(e2);
    free(tab); free(dy); free(o1); free(o2); free(d1); free(d2); free(dyd); free(in[0]);
}

// One head over one sequence, the definition in double: in = q, k, v.
typedef struct {
    size_t N, E, sq, sk, mask_n;
    const uint8_t *mask;
    const int *idx;
    const double *dout;
} AttnCtx;
static double attention_obj(double **in, const void *cv) {
    const AttnCtx *c = cv;
    double *p = malloc(c->N * sizeof(double)), s = 0.0;
    for (size_t i = 0; i < c->N; i++) {
        double mx = -INFINITY, sum = 0.0;
        for (size_t j = 0; j <= i; j++) {
            int vis = j == i || !c->mask || c->mask[(size_t)c->idx[i] * c->mask_n + (size_t)c->idx[j]];
            if (!vis) { p[j] = -INFINITY; continue; }
            double d = 0.0;
            for (size_t e = 0; e < c->E; e++) d += in[0][i * c->sq + e] * in[1][j * c->sk + e];
            p[j] = d / sqrt((double)c->E);
            mx = p[j] > mx ? p[j] : mx;
        }
        for (size_t j = 0; j <= i; j++) { p[j] = p[j] == -INFINITY ? 0.0 : exp(p[j] - mx); sum += p[j]; }
        for (size_t e = 0; e < c->E; e++) {
            double o = 0.0;
            for (size_t j = 0; j <= i; j++) o += p[j] / sum * in[2][j * c->sk + e];
            s += c->dout[i * c->sq + e] * o;
        }
    }
    free(p);
    return s;
}
static void check_attention(size_t N, size_t E, int with_mask, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    // One head inside wider rows: q/out stride 3E (head 1 of 3), k/v stride 2E (kv head 0 of 2).
    size_t sq = 3 * E, sk = 2 * E, mask_n = N + 9;
    int *idx = malloc(N * sizeof(int));
    uint8_t *mask = malloc(mask_n * mask_n);
    for (size_t i = 0, t = 0; i < N; i++, t++) { // rows are an increasing subset of the sequence's tokens
        if (t < mask_n - (N - i) && rng_uniform(&r) < 0.2f) t++;
        idx[i] = (int)t;
    }
    for (size_t i = 0; i < mask_n * mask_n; i++) mask[i] = rng_uniform(&r) < 0.7f;
    float *q = malloc(N * sq * 4), *k = malloc(N * sk * 4), *v = malloc(N * sk * 4), *dy = malloc(N * sq * 4);
    fill_normal(q, N * sq, &r, 1); fill_normal(k, N * sk, &r, 1); fill_normal(v, N * sk, &r, 1);
    fill_normal(dy, N * sq, &r, 1);
    for (size_t i = 0; i < N; i++) // only head 1's columns carry a gradient
        for (size_t e = 0; e < sq; e++)
            if (e < E || e >= 2 * E) dy[i * sq + e] = 0.0f;
    const uint8_t *mk = with_mask ? mask : NULL;
    float *out1 = calloc(N * sq, 4), *out2 = calloc(N * sq, 4), *p1 = malloc(N * N * 4), *p2 = malloc(N * N * 4);
    attention_forward(out1 + E, p1, q + E, k, v, mk, idx, mask_n, N, E, sq, sk);
    attention_forward_ref(out2 + E, p2, q + E, k, v, mk, idx, mask_n, N, E, sq, sk);
    check_ref("attention forward out", out1, out2, N * sq);
    check_ref("attention forward probs", p1, p2, N * N);
    float *dq = calloc(N * sq, 4), *dk = calloc(N * sk, 4), *dv = calloc(N * sk, 4);
    float *dq2 = calloc(N * sq, 4), *dk2 = calloc(N * sk, 4), *dv2 = calloc(N * sk, 4);
    float *scratch = malloc(ATTN_BLOCK * N * 4);
    attention_backward(dq + E, dk, dv, scratch, dy + E, p1, q + E, k, v, N, E, sq, sk);
    attention_backward_ref(dq2 + E, dk2, dv2, NULL, dy + E, p1, q + E, k, v, N, E, sq, sk);
    double *dyd = to_double(dy + E, N * sq - E);
    double *in[3] = {to_double(q + E, N * sq - E), to_double(k, N * sk), to_double(v, N * sk)};
    AttnCtx ctx = {N, E, sq, sk, mask_n, mk, idx, dyd};
    print_message(" attention N=%zu E=%zu mask=%d\n", N, E, with_mask);
    check_fd("attention dq", dq + E, attention_obj, in, 0, N * sq - E, &ctx);
    check_fd("attention dk", dk, attention_obj, in, 1, N * sk, &ctx);
    check_fd("attention dv", dv, attention_obj, in, 2, N * sk, &ctx);
    check_ref("attention dq", dq, dq2, N * sq);
    check_ref("attention dk", dk, dk2, N * sk);
    check_ref("attention dv", dv, dv2, N * sk);
    free(idx); free(mask); free(q); free(k); free(v); free(dy); free(out1); free(out2); free(p1); free(p2);
    free(dq); free(dk); free(dv); free(dq2); free(dk2); free(dv2); free(scratch); free(dyd);
    free(in[0]); free(in[1]); free(in[2]);
}
static void test_attention_backward(void **st) {
    (void)st;
    check_attention(9, 4, 0, 6);
    check_attention(70, 6, 1, 7);  // more than one query block of ATTN_BLOCK = 64
    check_attention(130, 4, 0, 8); // three blocks
}

typedef struct { size_t N, V; const int *labels; double dloss; } CeCtx;
static double crossentropy_obj(double **in, const void *cv) {
    const CeCtx *c = cv;
    double s = 0.0;
    for (size_t n = 0; n < c->N; n++) {
        if (c->labels[n] < 0) continue;
        const double *x = in[0] + n * c->V;
        double mx = -INFINITY, sum = 0.0;
        for (size_t i = 0; i < c->V; i++) mx = x[i] > mx ? x[i] : mx;
        for (size_t i = 0; i < c->V; i++) sum += exp(x[i] - mx);
        s += log(sum) + mx - x[c->labels[n]];
    }
    return c->dloss * s;
}
static void test_crossentropy_backward(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 9);
    size_t N = 7, V = 23;
    int labels[7] = {3, -1, 0, 22, 5, -1, 5};
    float *x = malloc(N * V * 4), *d1 = malloc(N * V * 4), *d2 = malloc(N * V * 4), *l1 = malloc(N * 4),
          *l2 = malloc(N * 4);
    fill_normal(x, N * V, &r, 3);
    crossentropy_forward(l1, x, labels, N, V);
    crossentropy_forward_ref(l2, x, labels, N, V);
    check_ref("crossentropy forward", l1, l2, N);
    double *in[1] = {to_double(x, N * V)};
    CeCtx one = {1, V, labels, 1.0}; // loss of row 0 alone
    assert_true(fabs(l1[0] - crossentropy_obj(in, &one)) < 1e-5);
    assert_true(l1[1] == 0.0f && l1[5] == 0.0f);
    float dloss = 0.25f;
    crossentropy_backward(d1, x, labels, dloss, N, V);
    crossentropy_backward_ref(d2, x, labels, dloss, N, V);
    CeCtx ctx = {N, V, labels, dloss};
    check_fd("crossentropy dlogits", d1, crossentropy_obj, in, 0, N * V, &ctx);
    check_ref("crossentropy dlogits", d1, d2, N * V);
    memcpy(d2, x, N * V * 4); // in place gives the same
    crossentropy_backward(d2, d2, labels, dloss, N, V);
    assert_memory_equal(d1, d2, N * V * 4);
    free(x); free(d1); free(d2); free(l1); free(l2); free(in[0]);
}

// ---------------------------------------------------------------------------
// The whole model

// A batch of several sequences with everything the reference needs per sequence.
typedef struct {
    int S;
    int n[4];
    int *tokens, *positions, *depth, *labels; // packed [T]
    uint8_t *mask[4];                         // per sequence [n, n] or NULL
    uint8_t *lora;                            // [T] compress500x's LoRA rows, or NULL
    int T;
} Batch;

static void batch_free(Batch *b) {
    free(b->tokens); free(b->positions); free(b->depth); free(b->labels); free(b->lora);
    for (int s = 0; s < b->S; s++) free(b->mask[s]);
}

static TrainBatch batch_view(const Batch *b, int with_positions) {
    TrainBatch tb = {.n_seqs = b->S, .n_tok = b->n, .tokens = b->tokens,
                     .positions = with_positions ? b->positions : NULL, .depth = b->depth,
                     .mask = (const uint8_t *const *)b->mask, .labels = b->labels, .lora = b->lora};
    return tb;
}

typedef struct {
    int S;
    int n[4];
    int k;           // EARN split (0: full plan)
    int n_pre, n_suf; // registers at the start and before the targets (EARN)
    int n_tgt;       // target tokens at the end (depth N; registers + targets carry the labels)
    int with_mask;   // a random mask among the prompt (every token still sees itself and registers)
    int with_positions; // custom RoPE positions (gaps and repeats, as packed multi-target)
    int gist;        // Gist's mask (plan_mask_gist): the suffix registers are the gist tokens
    int c500x;       // compress500x: Gist's mask, LoRA on every token but the targets, and the
                     // suffix registers are tokens V-1, V-2, ... (the compression tokens)
    int anllm;       // AnLLM's mask (plan_mask_anllm): <bos>, a word, items of 3 history tokens + anchor,
                     // 2 words, then the targets
} BatchSpec;

// Builds a batch: per sequence [prefix regs][prompt][suffix regs][targets].
// EARN: prompt tokens get depth k, the rest N. Labels: next token on the
// suffix registers and the targets (all depth N), plus random prompt
// positions under the full plan.
static void batch_make(Batch *b, const BatchSpec *sp, const ModelConfig *c, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    memset(b, 0, sizeof *b);
    b->S = sp->S;
    for (int s = 0; s < sp->S; s++) b->T += sp->n[s];
    b->tokens = malloc(sizeof(int) * b->T);
    b->positions = malloc(sizeof(int) * b->T);
    b->depth = malloc(sizeof(int) * b->T);
    b->labels = malloc(sizeof(int) * b->T);
    int L = c->n_layers, at = 0;
    for (int s = 0; s < sp->S; s++) {
        int n = sp->n[s];
        b->n[s] = n;
        int prompt_end = n - sp->n_tgt - sp->n_suf;
        int pos = (int)(rng_u64(&r) % 3);
        for (int i = 0; i < n; i++) {
            int t = at + i;
            b->tokens[t] = (int)(rng_u64(&r) % (uint64_t)c->vocab_size);
            b->positions[t] = pos;
            pos += 1 + (int)(rng_u64(&r) % 3 == 0); // gaps
            if (i % 7 == 6) pos -= 2;               // and repeats (two targets at one position)
            int is_prompt = i >= sp->n_pre && i < prompt_end;
            b->depth[t] = (sp->k > 0 && is_prompt) ? sp->k : L;
        }
        for (int i = 0; i < n; i++) {
            int t = at + i;
            int labelled = i + 1 < n && b->depth[t] == L &&
                           (i >= prompt_end || (sp->k == 0 && rng_uniform(&r) < 0.5f));
            b->labels[t] = labelled ? b->tokens[t + 1] : -1;
        }
        if (sp->c500x) {
            if (!b->lora) b->lora = calloc((size_t)b->T, 1);
            for (int i = 0; i < n; i++) {
                b->lora[at + i] = i < n - sp->n_tgt;
                if (i >= prompt_end && i < n - sp->n_tgt) b->tokens[at + i] = c->vocab_size - 1 - (i - prompt_end);
            }
            for (int i = 0; i + 1 < n; i++) // the labels follow the compression tokens' ids
                if (b->labels[at + i] >= 0) b->labels[at + i] = b->tokens[at + i + 1];
        }
        if (sp->with_mask || sp->gist || sp->anllm || sp->c500x) {
            b->mask[s] = malloc((size_t)n * n);
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) b->mask[s][i * n + j] = !sp->with_mask || rng_uniform(&r) < 0.75f;
        }
        if (sp->gist || sp->c500x) {
            uint8_t kinds[64];
            assert_true(n <= 64);
            for (int i = 0; i < n; i++)
                kinds[i] = i >= n - sp->n_tgt ? TOKEN_KIND_TARGET : i >= prompt_end ? TOKEN_KIND_SUFFIX_REG
                                                                                   : TOKEN_KIND_HISTORY;
            plan_mask_gist(b->mask[s], kinds, n);
        }
        if (sp->anllm) {
            uint8_t kinds[64];
            assert_true(n <= 64);
            for (int i = 0; i < n; i++)
                kinds[i] = i >= n - sp->n_tgt  ? TOKEN_KIND_TARGET
                           : i == 0            ? TOKEN_KIND_SPECIAL
                           : i == 1 || i >= prompt_end - 2 ? TOKEN_KIND_INSTRUCTION
                           : i % 4 == 1        ? TOKEN_KIND_SUFFIX_REG // items at 2..4, anchor at 5, ...
                                               : TOKEN_KIND_HISTORY;
            plan_mask_anllm(b->mask[s], kinds, n);
        }
        at += n;
    }
}

// Summed loss of the batch in double through the reference forward.
static double ref_loss(const Model *m, const Batch *b, int with_positions) {
    const int V = m->config.vocab_size;
    double loss = 0.0;
    int at = 0;
    for (int s = 0; s < b->S; s++) {
        int n = b->n[s];
        double *lg = malloc(sizeof(double) * (size_t)n * V);
        ref_forward_lora(lg, NULL, m, b->tokens + at, with_positions ? b->positions + at : NULL, b->depth + at,
                         b->mask[s], b->lora ? b->lora + at : NULL, n);
        for (int i = 0; i < n; i++) {
            int y = b->labels[at + i];
            if (y < 0) continue;
            const double *x = lg + (size_t)i * V;
            double mx = -INFINITY, sum = 0.0;
            for (int j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
            for (int j = 0; j < V; j++) sum += exp(x[j] - mx);
            loss += log(sum) + mx - x[y];
        }
        free(lg);
        at += n;
    }
    return loss;
}

// Gradient of the summed loss at a sample of entries of every tensor.
static void check_model_grads(const char *name, const ModelConfig *c, const BatchSpec *sp, uint64_t seed) {
    Model m;
    model_init_random(&m, c, seed, 0.3f);
    Batch b;
    batch_make(&b, sp, c, seed + 1);
    TrainBatch tb = batch_view(&b, sp->with_positions);
    TrainActs acts = {0};
    Error e;
    assert_int_equal(train_forward(&acts, &m, &tb, &e), 0);
    double want = ref_loss(&m, &b, sp->with_positions);
    double lerr = fabs(acts.loss_sum - want) / fabs(want);
    print_message(" %s: T=%d labels=%d loss %.6f (ref %.6f, rel err %.1e)\n", name, b.T, acts.n_labels,
                  acts.loss_sum, want, lerr);
    assert_true(acts.n_labels > 0);
    assert_true(lerr < LOGITS_TOL);
    ModelGrads g;
    grads_alloc(&g, c);
    grads_zero(&g);
    train_backward(&g, &acts, &m, 1.0f); // gradient of the sum
    Rng r;
    rng_seed(&r, seed + 2);
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        if (info.numel == 0) continue; // absent (no bias) or tied (lm_head's gradient is in embed's)
        float *p = *model_param_slot(&m.params, t), *gp = *model_param_slot(&g.g, t);
        enum { NS = 12 };
        float ana[NS];
        double fd[NS];
        for (int k = 0; k < NS; k++) {
            size_t i;
            if (t == 0 && k % 2 == 0) // embed: half the samples on rows of tokens in the batch
                i = (size_t)b.tokens[rng_u64(&r) % (uint64_t)b.T] * info.shape[1] + rng_u64(&r) % info.shape[1];
            else if (info.per_layer) // spread over the layers, so the top layers (EARN) are covered
                i = (size_t)(k % c->n_layers) * (info.numel / (size_t)c->n_layers) +
                    rng_u64(&r) % (info.numel / (size_t)c->n_layers);
            else
                i = rng_u64(&r) % info.numel;
            float save = p[i];
            p[i] = save + 1e-3f;
            double up = (double)p[i] - save;
            double lp = ref_loss(&m, &b, sp->with_positions);
            p[i] = save - 1e-3f;
            double dn = (double)save - p[i];
            double lm = ref_loss(&m, &b, sp->with_positions);
            p[i] = save;
            fd[k] = (lp - lm) / (up + dn);
            ana[k] = gp[i];
        }
        double err = rel_err(ana, fd, NS);
        double mx = 0.0;
        for (int k = 0; k < NS; k++) mx = fabs(fd[k]) > mx ? fabs(fd[k]) : mx;
        char tname[96]; // the HF name with "*" for the layer index
        const char *pct = strstr(info.hf_name, "%d");
        if (pct)
            snprintf(tname, sizeof tname, "%.*s*%s", (int)(pct - info.hf_name), info.hf_name, pct + 2);
        else
            snprintf(tname, sizeof tname, "%s", info.hf_name);
        print_message("   %-44s max|g| %.2e rel err %.2e\n", tname, mx, err);
        assert_true(mx > 0.0); // the sample must see some gradient
        assert_true(err < MODEL_FD_TOL);
    }
    grads_free(&g);
    train_acts_free(&acts);
    batch_free(&b);
    model_free(&m);
}

static void test_model_grads_full(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 16, 24, 2, 4, 2, 19, 0);
    BatchSpec sp = {.S = 2, .n = {9, 6}};
    check_model_grads("llama untied, full plan, 2 sequences", &c, &sp, 100);
    ModelConfig ct = ref_config(MODEL_ARCH_LLAMA, 16, 24, 2, 4, 1, 19, 1);
    check_model_grads("llama tied (MQA), full plan", &ct, &sp, 110);
    ModelConfig cq = ref_config(MODEL_ARCH_QWEN2, 16, 20, 2, 2, 2, 17, 0);
    BatchSpec sm = {.S = 2, .n = {10, 7}, .with_mask = 1, .with_positions = 1};
    check_model_grads("qwen2 untied, mask + positions", &cq, &sm, 120);
}

static void test_model_grads_earn(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 16, 24, 3, 4, 2, 19, 0);
    BatchSpec k1 = {.S = 2, .n = {12, 9}, .k = 1, .n_pre = 1, .n_suf = 1, .n_tgt = 3};
    check_model_grads("EARN k=1 of 3, 1+1 registers", &c, &k1, 200);
    BatchSpec k2 = {.S = 1, .n = {13}, .k = 2, .n_pre = 2, .n_suf = 1, .n_tgt = 3, .with_positions = 1};
    ModelConfig cq = ref_config(MODEL_ARCH_QWEN2, 16, 24, 3, 4, 2, 19, 1);
    check_model_grads("EARN k=2 of 3, 2+1 registers, qwen2 tied, positions", &cq, &k2, 210);
    ModelConfig c4 = ref_config(MODEL_ARCH_LLAMA, 16, 20, 4, 2, 1, 15, 1);
    BatchSpec k3 = {.S = 2, .n = {11, 14}, .k = 3, .n_pre = 0, .n_suf = 2, .n_tgt = 4, .with_mask = 1,
                    .with_positions = 1};
    check_model_grads("EARN k=3 of 4, 0+2 registers, mask + positions", &c4, &k3, 220);
    BatchSpec k1b = {.S = 1, .n = {10}, .k = 1, .n_pre = 3, .n_suf = 0, .n_tgt = 3};
    check_model_grads("EARN k=1 of 4, 3+0 registers", &c4, &k1b, 230);
}

// Gist: the full plan under Gist's mask (targets see only the gist tokens and each other).
static void test_model_grads_gist(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 16, 24, 3, 4, 2, 19, 0);
    BatchSpec g2 = {.S = 2, .n = {12, 9}, .n_suf = 2, .n_tgt = 3, .gist = 1};
    check_model_grads("Gist, 2 gist tokens, 2 sequences", &c, &g2, 240);
    BatchSpec g1 = {.S = 1, .n = {13}, .n_suf = 1, .n_tgt = 3, .gist = 1, .with_mask = 1, .with_positions = 1};
    check_model_grads("Gist, 1 gist token, pack mask + positions", &c, &g1, 250);
}

// compress500x: LoRA (rank 3, alpha 6: scale 2) on the prompt and compression
// rows, the targets on the base weights, under Gist's mask; every tensor's
// gradient, the adapters' included.
static ModelConfig c500x_config(ModelArch arch, int tie) {
    ModelConfig c = ref_config(arch, 16, 24, 3, 4, 2, 19, tie);
    c.method = METHOD_COMPRESS500X;
    c.n_suffix_regs = 2;
    c.lora_rank = 3;
    c.lora_alpha = 6.0f;
    return c;
}
static void test_model_grads_c500x(void **st) {
    (void)st;
    ModelConfig c = c500x_config(MODEL_ARCH_LLAMA, 0);
    BatchSpec g2 = {.S = 2, .n = {12, 9}, .n_suf = 2, .n_tgt = 3, .c500x = 1};
    check_model_grads("compress500x, 2 tokens, r=3, 2 sequences", &c, &g2, 260);
    ModelConfig cq = c500x_config(MODEL_ARCH_QWEN2, 1);
    BatchSpec g1 = {.S = 1, .n = {13}, .n_suf = 2, .n_tgt = 3, .c500x = 1, .with_mask = 1, .with_positions = 1};
    check_model_grads("compress500x, qwen2 tied, pack mask + positions", &cq, &g1, 270);
}

// compress500x's frozen base through two AdamW steps (weight decay on).
static void test_c500x_frozen_base(void **st) {
    (void)st;
    ModelConfig c = c500x_config(MODEL_ARCH_LLAMA, 0);
    Model m;
    model_init_random(&m, &c, 280, 0.3f);
    Batch b;
    BatchSpec sp = {.S = 2, .n = {12, 9}, .n_suf = 2, .n_tgt = 3, .c500x = 1};
    batch_make(&b, &sp, &c, 281);
    TrainBatch tb = batch_view(&b, 0);
    const int rows[2] = {c.vocab_size - 1, c.vocab_size - 2}; // the compression tokens
    float *before = malloc(m.n_params * sizeof(float));
    memcpy(before, m.params_memory, m.n_params * sizeof(float));
    TrainActs acts = {0};
    ModelGrads g;
    grads_alloc(&g, &c);
    AdamWConfig oc;
    adamw_config_default(&oc);
    AdamWState opt;
    adamw_init(&opt, &c);
    adamw_train_lora_only(&opt);
    Error e;
    for (int step = 0; step < 2; step++) {
        assert_int_equal(train_forward(&acts, &m, &tb, &e), 0);
        grads_zero(&g);
        train_backward(&g, &acts, &m, 1.0f / (float)acts.n_labels);
        grads_keep_lora_and_rows(&g, &c, rows, 2);
        adamw_step(&opt, m.params_memory, g.memory, 1e-2f, &oc);
    }
    size_t base_moved = 0, lora_moved = 0, lora_n = 0, row_moved = 0;
    const size_t D = (size_t)c.dim, first_lora = (size_t)(m.params.lora_qa - m.params_memory);
    for (size_t i = 0; i < m.n_params; i++) {
        int moved = m.params_memory[i] != before[i];
        size_t row = i / D;
        int comp_row = i < (size_t)c.vocab_size * D && (row == (size_t)rows[0] || row == (size_t)rows[1]);
        if (i >= first_lora) { lora_n++; lora_moved += moved; }
        else if (comp_row) row_moved += moved;
        else base_moved += moved;
    }
    print_message("  frozen base: %zu base floats moved (want 0), compression-token rows %zu of %zu moved, "
                  "adapters %zu of %zu moved\n", base_moved, row_moved, 2 * D, lora_moved, lora_n);
    assert_int_equal(base_moved, 0);
    assert_true(row_moved == 2 * D);
    assert_true(lora_moved > lora_n / 2);
    adamw_free(&opt);
    grads_free(&g);
    train_acts_free(&acts);
    batch_free(&b);
    free(before);
    model_free(&m);
}

// AnLLM: the full plan under AnLLM's mask (history rows see their own item and
// the earlier anchors; words after the history and targets only the instruction
// segment and the anchors), labels on prompt tokens too.
static void test_model_grads_anllm(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 16, 24, 3, 4, 2, 19, 0);
    BatchSpec a2 = {.S = 2, .n = {17, 13}, .n_tgt = 3, .anllm = 1};
    check_model_grads("AnLLM, 3 and 2 items, 2 sequences", &c, &a2, 260);
    BatchSpec a1 = {.S = 1, .n = {15}, .n_tgt = 3, .anllm = 1, .with_mask = 1, .with_positions = 1};
    check_model_grads("AnLLM, pack mask + positions", &c, &a1, 270);
}

// The training forward's logits are model_forward's for the same batch.
static void check_logits(const char *name, const ModelConfig *c, const BatchSpec *sp, uint64_t seed) {
    Model m;
    model_init_random(&m, c, seed, 0.3f);
    Batch b;
    batch_make(&b, sp, c, seed + 1);
    // A label on every token that reaches the top, so every logits row is compared.
    for (int t = 0; t < b.T; t++) b.labels[t] = b.depth[t] == c->n_layers ? b.tokens[t] : -1;
    TrainBatch tb = batch_view(&b, sp->with_positions);
    TrainActs acts = {0};
    Error e;
    assert_int_equal(train_forward(&acts, &m, &tb, &e), 0);
    size_t V = (size_t)c->vocab_size;
    float *lg = malloc(sizeof(float) * (size_t)b.T * V);
    KVCache kv[4];
    KVCache *kvs[4];
    for (int s = 0; s < b.S; s++) {
        int caps[16];
        for (int l = 0; l < c->n_layers; l++) caps[l] = b.n[s];
        kvcache_init(&kv[s], c->n_layers, c->n_kv_heads, c->head_dim, caps);
        kvs[s] = &kv[s];
    }
    ForwardBatch fb = {.n_seqs = b.S, .n_new = b.n, .tokens = b.tokens,
                       .positions = sp->with_positions ? b.positions : NULL, .depth = b.depth,
                       .mask = (const uint8_t *const *)b.mask, .caches = kvs, .logits_mode = LOGITS_ALL,
                       .lora = b.lora};
    ForwardScratch fs = {0};
    assert_int_equal(model_forward(lg, &m, &fb, &fs, &e), 0);
    double num = 0.0, den = 0.0;
    for (int i = 0; i < acts.n_labels; i++) {
        const float *a = acts.logits + (size_t)i * V, *r = lg + (size_t)acts.label_tok[i] * V;
        for (size_t j = 0; j < V; j++) {
            num = fmax(num, fabs((double)a[j] - r[j]));
            den = fmax(den, fabs((double)r[j]));
        }
    }
    int n_top = 0;
    for (int t = 0; t < b.T; t++) n_top += b.depth[t] == c->n_layers;
    print_message(" %s: %d rows, train vs model_forward logits rel err %.2e\n", name, acts.n_labels, num / den);
    assert_int_equal(acts.n_labels, n_top);
    assert_true(num / den < LOGITS_TOL);
    for (int s = 0; s < b.S; s++) kvcache_free(&kv[s]);
    forward_scratch_free(&fs);
    free(lg);
    train_acts_free(&acts);
    batch_free(&b);
    model_free(&m);
}

static void test_train_logits_match_inference(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 64, 96, 3, 8, 2, 97, 0);
    BatchSpec full = {.S = 3, .n = {70, 20, 135}}; // 70, 135 > one query block
    check_logits("full plan, 3 sequences", &c, &full, 300);
    ModelConfig cq = ref_config(MODEL_ARCH_QWEN2, 48, 80, 4, 4, 4, 61, 1);
    BatchSpec earn = {.S = 2, .n = {90, 40}, .k = 1, .n_pre = 1, .n_suf = 1, .n_tgt = 8, .with_mask = 1,
                      .with_positions = 1};
    check_logits("EARN k=1, mask + positions", &cq, &earn, 310);
    BatchSpec earn3 = {.S = 2, .n = {77, 66}, .k = 3, .n_pre = 2, .n_suf = 2, .n_tgt = 5};
    check_logits("EARN k=3, 2+2 registers", &cq, &earn3, 320);
    ModelConfig c5 = cq;
    c5.method = METHOD_COMPRESS500X;
    c5.n_suffix_regs = 3;
    c5.lora_rank = 4;
    c5.lora_alpha = 8.0f;
    BatchSpec comp = {.S = 2, .n = {60, 30}, .n_suf = 3, .n_tgt = 4, .c500x = 1, .with_positions = 1};
    check_logits("compress500x, LoRA rows + Gist mask", &c5, &comp, 330);
}

// Micro-batches add up; the same batch twice gives bitwise the same gradient.
static void test_accumulation_and_determinism(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_QWEN2, 32, 48, 3, 4, 2, 41, 1);
    Model m;
    model_init_random(&m, &c, 400, 0.3f);
    BatchSpec sp = {.S = 2, .n = {30, 80}, .k = 2, .n_pre = 1, .n_suf = 1, .n_tgt = 4, .with_mask = 1,
                    .with_positions = 1};
    Batch b;
    batch_make(&b, &sp, &c, 401);
    TrainBatch tb = batch_view(&b, 1);
    TrainActs acts = {0};
    ModelGrads g1, g2, gs;
    grads_alloc(&g1, &c); grads_alloc(&g2, &c); grads_alloc(&gs, &c);
    Error e;
    grads_zero(&g1);
    assert_int_equal(train_forward(&acts, &m, &tb, &e), 0);
    train_backward(&g1, &acts, &m, 1.0f);
    grads_zero(&g2);
    assert_int_equal(train_forward(&acts, &m, &tb, &e), 0);
    train_backward(&g2, &acts, &m, 1.0f);
    assert_memory_equal(g1.memory, g2.memory, g1.n * sizeof(float));
    // Sequence by sequence into one gradient == both at once.
    grads_zero(&gs);
    int at = 0;
    for (int s = 0; s < b.S; s++) {
        TrainBatch one = {.n_seqs = 1, .n_tok = &b.n[s], .tokens = b.tokens + at, .positions = b.positions + at,
                          .depth = b.depth + at, .mask = (const uint8_t *const *)&b.mask[s], .labels = b.labels + at};
        assert_int_equal(train_forward(&acts, &m, &one, &e), 0);
        train_backward(&gs, &acts, &m, 1.0f);
        at += b.n[s];
    }
    double *ref = to_double(g1.memory, g1.n);
    double err = rel_err(gs.memory, ref, gs.n);
    print_message("  two sequences one by one vs together: rel err %.2e\n", err);
    assert_true(err < 1e-5);
    free(ref);
    grads_free(&g1); grads_free(&g2); grads_free(&gs);
    train_acts_free(&acts);
    batch_free(&b);
    model_free(&m);
}

static void test_bad_batches(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 16, 24, 2, 2, 2, 10, 1);
    Model m;
    model_init_random(&m, &c, 500, 0.3f);
    int tok[4] = {1, 2, 3, 4}, lab[4] = {2, 3, 4, -1}, dep[4] = {2, 1, 2, 2}, n = 4;
    TrainBatch b = {.n_seqs = 1, .n_tok = &n, .tokens = tok, .labels = lab};
    TrainActs acts = {0};
    Error e;
    assert_int_equal(train_forward(&acts, &m, &b, &e), 0);
    b.depth = dep; // token 1 stops at layer 1 but carries a label
    assert_int_equal(train_forward(&acts, &m, &b, &e), -1);
    assert_non_null(strstr(e.msg, "no logits"));
    b.depth = NULL;
    lab[2] = 10;
    assert_int_equal(train_forward(&acts, &m, &b, &e), -1);
    assert_non_null(strstr(e.msg, "label 10"));
    lab[2] = 4;
    tok[0] = -3;
    assert_int_equal(train_forward(&acts, &m, &b, &e), -1);
    assert_non_null(strstr(e.msg, "outside the vocabulary"));
    tok[0] = 1;
    dep[1] = 3;
    b.depth = dep;
    assert_int_equal(train_forward(&acts, &m, &b, &e), -1);
    assert_non_null(strstr(e.msg, "depth 3"));
    n = 0;
    assert_int_equal(train_forward(&acts, &m, &b, &e), -1);
    assert_non_null(strstr(e.msg, "no tokens"));
    train_acts_free(&acts);
    model_free(&m);
}

static void test_bench_runs(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 2, 4, 2, 50, 1);
    TrainBenchResult r;
    Error e;
    assert_int_equal(train_bench(&r, &c, 2, 40, 2, 2, 7, &e), 0);
    assert_true(r.tokens_per_s > 0 && r.gflops > 0 && r.flops_per_step > 0);
    assert_int_equal(train_bench(&r, &c, 0, 40, 2, 2, 7, &e), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_backward),
        cmocka_unit_test(test_rmsnorm_backward),
        cmocka_unit_test(test_rope_backward),
        cmocka_unit_test(test_swiglu_backward),
        cmocka_unit_test(test_embedding_backward),
        cmocka_unit_test(test_attention_backward),
        cmocka_unit_test(test_crossentropy_backward),
        cmocka_unit_test(test_model_grads_full),
        cmocka_unit_test(test_model_grads_earn),
        cmocka_unit_test(test_model_grads_gist),
        cmocka_unit_test(test_model_grads_anllm),
        cmocka_unit_test(test_lora_backward),
        cmocka_unit_test(test_model_grads_c500x),
        cmocka_unit_test(test_c500x_frozen_base),
        cmocka_unit_test(test_train_logits_match_inference),
        cmocka_unit_test(test_accumulation_and_determinism),
        cmocka_unit_test(test_bad_batches),
        cmocka_unit_test(test_bench_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
