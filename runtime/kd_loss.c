// kd_loss.c: see kd_loss.h. The fast versions make one pass over the row for
// the softmax and touch S (and, for the rest bucket, the row) once more; the
// references rebuild every bucket from its members and apply the chain rule
// through the softmax Jacobian entry by entry.
#include "runtime/kd_loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/util.h"

static const char *KD_NAMES[] = {"sft", "wordkd", "tvdkd", "seqkd", "atspeed-s", "atspeed-r"};

const char *kd_loss_name(KDLoss k) { return (unsigned)k < 6 ? KD_NAMES[k] : "?"; }

int kd_loss_parse(const char *name, KDLoss *k) {
    for (int i = 0; i < 6; i++)
        if (!strcmp(name, KD_NAMES[i])) { *k = (KDLoss)i; return 0; }
    return -1;
}

int kd_loss_on_beams(KDLoss k) {
    if (k == KD_SFT) return -1;
    return k == KD_SEQKD || k == KD_ATSPEED_S || k == KD_ATSPEED_R;
}

#define KD_TINY 1e-300

static double row_lse(const float *z, size_t V) {
    float mx = -INFINITY;
    for (size_t v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    double s = 0.0;
    for (size_t v = 0; v < V; v++) s += exp((double)z[v] - mx);
    return mx + log(s);
}

static double sgn(double x) { return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0; }

// ---------------------------------------------------------------------------
// WordKD and TVDKD: buckets S + rest over the full softmax.

// q_x for x in S (qs [n]) and the rest bucket; p likewise. Returns lse.
static double buckets(double *qs, double *q_rest, double *ps, double *p_rest, const float *z, const int *S,
                      const float *tlp, size_t n, size_t V) {
    double lse = row_lse(z, V), all = 0.0, in_s = 0.0, p_s = 0.0;
    for (size_t v = 0; v < V; v++) all += exp((double)z[v] - lse);
    for (size_t i = 0; i < n; i++) {
        qs[i] = exp((double)z[S[i]] - lse);
        in_s += qs[i];
        ps[i] = exp((double)tlp[i]);
        p_s += ps[i];
    }
    *q_rest = all - in_s > 0 ? all - in_s : 0.0;
    *p_rest = 1.0 - p_s > 0 ? 1.0 - p_s : 0.0;
    return lse;
}

double kd_wordkd_forward(const float *z, const int *S, const float *tlp, size_t n, size_t V) {
    double *qs = xmalloc(2 * (n ? n : 1) * sizeof(double)), *ps = qs + n, q_rest, p_rest;
    buckets(qs, &q_rest, ps, &p_rest, z, S, tlp, n, V);
    double loss = 0.0;
    for (size_t i = 0; i < n; i++)
        if (ps[i] > 0) loss += ps[i] * (log(ps[i]) - log(qs[i] > KD_TINY ? qs[i] : KD_TINY));
    if (p_rest > 0) loss += p_rest * (log(p_rest) - log(q_rest > KD_TINY ? q_rest : KD_TINY));
    free(qs);
    return loss;
}

// dL/dz_v = q_v (P - p_b(v) / q_b(v)), P = sum of p over the buckets.
void kd_wordkd_backward(float *dz, const float *z, const int *S, const float *tlp, size_t n, size_t V, float dloss) {
    double *qs = xmalloc(2 * (n ? n : 1) * sizeof(double)), *ps = qs + n, q_rest, p_rest;
    double lse = buckets(qs, &q_rest, ps, &p_rest, z, S, tlp, n, V);
    double P = p_rest;
    for (size_t i = 0; i < n; i++) P += ps[i];
    double ratio = q_rest > KD_TINY ? p_rest / q_rest : 0.0;
    for (size_t v = 0; v < V; v++) dz[v] += (float)(dloss * exp((double)z[v] - lse) * (P - ratio));
    for (size_t i = 0; i < n; i++) dz[S[i]] += (float)(dloss * (qs[i] * ratio - ps[i]));
    free(qs);
}

double kd_tvdkd_forward(const float *z, const int *S, const float *tlp, size_t n, size_t V) {
    double *qs = xmalloc(2 * (n ? n : 1) * sizeof(double)), *ps = qs + n, q_rest, p_rest;
    buckets(qs, &q_rest, ps, &p_rest, z, S, tlp, n, V);
    double loss = fabs(q_rest - p_rest);
    for (size_t i = 0; i < n; i++) loss += fabs(qs[i] - ps[i]);
    free(qs);
    return 0.5 * loss;
}

// s_b = sign(q_b - p_b) / 2; dL/dz_v = q_v (s_b(v) - sum_b s_b q_b).
void kd_tvdkd_backward(float *dz, const float *z, const int *S, const float *tlp, size_t n, size_t V, float dloss) {
    double *qs = xmalloc(2 * (n ? n : 1) * sizeof(double)), *ps = qs + n, q_rest, p_rest;
    double lse = buckets(qs, &q_rest, ps, &p_rest, z, S, tlp, n, V);
    double s_rest = 0.5 * sgn(q_rest - p_rest), sq = s_rest * q_rest;
    for (size_t i = 0; i < n; i++) sq += 0.5 * sgn(qs[i] - ps[i]) * qs[i];
    for (size_t v = 0; v < V; v++) dz[v] += (float)(dloss * exp((double)z[v] - lse) * (s_rest - sq));
    for (size_t i = 0; i < n; i++) dz[S[i]] += (float)(dloss * qs[i] * (0.5 * sgn(qs[i] - ps[i]) - s_rest));
    free(qs);
}

// ---------------------------------------------------------------------------
// AtSpeed-S: the student's top-K of S.

// top [K] receives indices into S, best first (ties: the earlier entry). Returns K.
static int topk_of(int *top, const float *z, const int *S, size_t n, int topk) {
    int K = topk < (int)n ? topk : (int)n;
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (size_t i = 0; i < n; i++) {
            int taken = 0;
            for (int j = 0; j < k && !taken; j++) taken = top[j] == (int)i;
            if (!taken && (best < 0 || z[S[i]] > z[S[best]])) best = (int)i;
        }
        top[k] = best;
    }
    return K;
}

// q and log p over the K chosen (temperature T); returns K.
static int atspeed_s_dists(double *q, double *lp, int *top, const float *z, const int *S, const float *tlp, size_t n,
                           int topk, float T) {
    int K = topk_of(top, z, S, n, topk);
    double mz = -INFINITY, mp = -INFINITY, sz = 0.0, sp = 0.0;
    for (int k = 0; k < K; k++) {
        mz = fmax(mz, (double)z[S[top[k]]] / T);
        mp = fmax(mp, (double)tlp[top[k]] / T);
    }
    for (int k = 0; k < K; k++) {
        sz += exp((double)z[S[top[k]]] / T - mz);
        sp += exp((double)tlp[top[k]] / T - mp);
    }
    for (int k = 0; k < K; k++) {
        q[k] = exp((double)z[S[top[k]]] / T - mz) / sz;
        lp[k] = (double)tlp[top[k]] / T - mp - log(sp);
    }
    return K;
}

double kd_atspeed_s_forward(const float *z, const int *S, const float *tlp, size_t n, int topk, float T) {
    size_t m = n ? n : 1;
    double *q = xmalloc(2 * m * sizeof(double)), *lp = q + m;
    int *top = xmalloc(m * sizeof(int));
    int K = atspeed_s_dists(q, lp, top, z, S, tlp, n, topk, T);
    double kl = 0.0, h = 0.0, pK = K > 0 ? exp(lp[K - 1]) : 0.0;
    for (int k = 0; k < K; k++) {
        double lq = log(q[k] > KD_TINY ? q[k] : KD_TINY);
        kl += q[k] * (lq - lp[k]);
        h -= q[k] * lq;
    }
    free(q);
    free(top);
    return kl + pK * h;
}

// g_k = (1 - p_K)(log q_k + 1) - log p_k; dz = (1/T) q_k (g_k - sum q g).
void kd_atspeed_s_backward(float *dz, const float *z, const int *S, const float *tlp, size_t n, int topk, float T,
                           float dloss) {
    size_t m = n ? n : 1;
    double *q = xmalloc(3 * m * sizeof(double)), *lp = q + m, *g = q + 2 * m;
    int *top = xmalloc(m * sizeof(int));
    int K = atspeed_s_dists(q, lp, top, z, S, tlp, n, topk, T);
    double pK = K > 0 ? exp(lp[K - 1]) : 0.0, qg = 0.0;
    for (int k = 0; k < K; k++) {
        g[k] = (1.0 - pK) * (log(q[k] > KD_TINY ? q[k] : KD_TINY) + 1.0) - lp[k];
        qg += q[k] * g[k];
    }
    for (int k = 0; k < K; k++) dz[S[top[k]]] += (float)(dloss / T * q[k] * (g[k] - qg));
    free(q);
    free(top);
}

// ---------------------------------------------------------------------------
// AtSpeed-R: total variation over S at temperature T.

static void softmax_t(double *out, const float *x, const int *idx, size_t n, float T) {
    double mx = -INFINITY, s = 0.0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, (double)x[idx ? idx[i] : (int)i] / T);
    for (size_t i = 0; i < n; i++) s += (out[i] = exp((double)x[idx ? idx[i] : (int)i] / T - mx));
    for (size_t i = 0; i < n; i++) out[i] /= s;
}

double kd_atspeed_r_forward(const float *z, const int *S, const float *tlp, size_t n, float T) {
    size_t m = n ? n : 1;
    double *q = xmalloc(2 * m * sizeof(double)), *p = q + m, loss = 0.0;
    softmax_t(q, z, S, n, T);
    softmax_t(p, tlp, NULL, n, T);
    for (size_t i = 0; i < n; i++) loss += fabs(p[i] - q[i]);
    free(q);
    return 0.5 * loss;
}

void kd_atspeed_r_backward(float *dz, const float *z, const int *S, const float *tlp, size_t n, float T, float dloss) {
    size_t m = n ? n : 1;
    double *q = xmalloc(2 * m * sizeof(double)), *p = q + m, qs = 0.0;
    softmax_t(q, z, S, n, T);
    softmax_t(p, tlp, NULL, n, T);
    for (size_t i = 0; i < n; i++) qs += q[i] * 0.5 * sgn(q[i] - p[i]);
    for (size_t i = 0; i < n; i++) dz[S[i]] += (float)(dloss / T * q[i] * (0.5 * sgn(q[i] - p[i]) - qs));
    free(q);
}

// ---------------------------------------------------------------------------
// References: buckets rebuilt from their members, gradients through the
// softmax Jacobian dq_u/dz_v = q_u (delta_uv - q_v) entry by entry.

// Full softmax of z (double) into q [V]; bucket of each token into b [V]
// (i for S[i], n for the rest).
static void ref_setup(double *q, int *b, const float *z, const int *S, size_t n, size_t V) {
    double mx = -INFINITY, s = 0.0;
    for (size_t v = 0; v < V; v++) mx = fmax(mx, (double)z[v]);
    for (size_t v = 0; v < V; v++) s += exp((double)z[v] - mx);
    for (size_t v = 0; v < V; v++) {
        q[v] = exp((double)z[v] - mx) / s;
        b[v] = (int)n;
    }
    for (size_t i = 0; i < n; i++) b[S[i]] = (int)i;
}

// Bucket masses qb, pb [n + 1].
static void ref_buckets(double *qb, double *pb, const double *q, const int *b, const float *tlp, size_t n, size_t V) {
    for (size_t i = 0; i <= n; i++) qb[i] = pb[i] = 0.0;
    for (size_t v = 0; v < V; v++) qb[b[v]] += q[v];
    double in_s = 0.0;
    for (size_t i = 0; i < n; i++) in_s += (pb[i] = exp((double)tlp[i]));
    pb[n] = 1.0 - in_s > 0 ? 1.0 - in_s : 0.0;
}

// mode 0: WordKD, 1: TVDKD. dz NULL: the loss; else adds the gradient.
static double ref_bucketed(float *dz, const float *z, const int *S, const float *tlp, size_t n, size_t V, int mode,
                           float dloss) {
    double *q = xmalloc(V * sizeof(double)), *qb = xmalloc((n + 1) * 2 * sizeof(double)), *pb = qb + n + 1;
    int *b = xmalloc(V * sizeof(int));
    ref_setup(q, b, z, S, n, V);
    ref_buckets(qb, pb, q, b, tlp, n, V);
    double loss = 0.0;
    for (size_t i = 0; i <= n; i++) {
        if (mode == 0 && pb[i] > 0) loss += pb[i] * log(pb[i] / fmax(qb[i], KD_TINY));
        if (mode == 1) loss += 0.5 * fabs(pb[i] - qb[i]);
    }
    if (dz) {
        for (size_t v = 0; v < V; v++) {
            double g = 0.0;
            for (size_t i = 0; i <= n; i++) { // dL/dqb_i * dqb_i/dz_v
                double dl = mode == 0 ? (pb[i] > 0 ? -pb[i] / fmax(qb[i], KD_TINY) : 0.0) : 0.5 * sgn(qb[i] - pb[i]);
                double dq = ((size_t)b[v] == i ? q[v] : 0.0) - qb[i] * q[v];
                g += dl * dq;
            }
            dz[v] += (float)(dloss * g);
        }
    }
    free(q);
    free(qb);
    free(b);
    return loss;
}

double kd_wordkd_forward_ref(const float *z, const int *S, const float *tlp, size_t n, size_t V) {
    return ref_bucketed(NULL, z, S, tlp, n, V, 0, 0.0f);
}
void kd_wordkd_backward_ref(float *dz, const float *z, const int *S, const float *tlp, size_t n, size_t V,
                            float dloss) {
    ref_bucketed(dz, z, S, tlp, n, V, 0, dloss);
}
double kd_tvdkd_forward_ref(const float *z, const int *S, const float *tlp, size_t n, size_t V) {
    return ref_bucketed(NULL, z, S, tlp, n, V, 1, 0.0f);
}
void kd_tvdkd_backward_ref(float *dz, const float *z, const int *S, const float *tlp, size_t n, size_t V,
                           float dloss) {
    ref_bucketed(dz, z, S, tlp, n, V, 1, dloss);
}

// Order of S by the student's logit, best first, ties to the earlier entry
// (insertion sort: a different algorithm from topk_of).
static void ref_order(int *ord, const float *z, const int *S, size_t n) {
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        while (j > 0 && z[S[ord[j - 1]]] < z[S[i]]) { ord[j] = ord[j - 1]; j--; }
        ord[j] = (int)i;
    }
}

// AtSpeed-S / R in one reference: mode 0 S (over the top K), 1 R (over all of S).
static double ref_atspeed(float *dz, const float *z, const int *S, const float *tlp, size_t n, int topk, float T,
                          int mode, float dloss) {
    int *ord = xmalloc((n ? n : 1) * sizeof(int));
    ref_order(ord, z, S, n);
    int K = mode == 0 ? (topk < (int)n ? topk : (int)n) : (int)n;
    if (mode == 1)
        for (size_t i = 0; i < n; i++) ord[i] = (int)i;
    double *q = xmalloc(2 * (size_t)(K ? K : 1) * sizeof(double)), *p = q + K, sq = 0.0, sp = 0.0;
    for (int k = 0; k < K; k++) sq += exp((double)z[S[ord[k]]] / T);
    for (int k = 0; k < K; k++) sp += exp((double)tlp[ord[k]] / T);
    for (int k = 0; k < K; k++) {
        q[k] = exp((double)z[S[ord[k]]] / T) / sq;
        p[k] = exp((double)tlp[ord[k]] / T) / sp;
    }
    double pK = K ? p[K - 1] : 0.0, loss = 0.0;
    for (int k = 0; k < K; k++)
        loss += mode == 0 ? q[k] * log(q[k] / p[k]) - pK * q[k] * log(q[k]) : 0.5 * fabs(p[k] - q[k]);
    if (dz) {
        for (int j = 0; j < K; j++) { // d loss / d z_j = sum_k dL/dq_k * q_k (delta_kj - q_j) / T
            double g = 0.0;
            for (int k = 0; k < K; k++) {
                double dl = mode == 0 ? log(q[k] / p[k]) + 1.0 - pK * (log(q[k]) + 1.0) : 0.5 * sgn(q[k] - p[k]);
                g += dl * q[k] * ((k == j ? 1.0 : 0.0) - q[j]) / T;
            }
            dz[S[ord[j]]] += (float)(dloss * g);
        }
    }
    free(ord);
    free(q);
    return loss;
}

double kd_atspeed_s_forward_ref(const float *z, const int *S, const float *tlp, size_t n, int topk, float T) {
    return ref_atspeed(NULL, z, S, tlp, n, topk, T, 0, 0.0f);
}
void kd_atspeed_s_backward_ref(float *dz, const float *z, const int *S, const float *tlp, size_t n, int topk,
                               float T, float dloss) {
    ref_atspeed(dz, z, S, tlp, n, topk, T, 0, dloss);
}
double kd_atspeed_r_forward_ref(const float *z, const int *S, const float *tlp, size_t n, float T) {
    return ref_atspeed(NULL, z, S, tlp, n, 0, T, 1, 0.0f);
}
void kd_atspeed_r_backward_ref(float *dz, const float *z, const int *S, const float *tlp, size_t n, float T,
                               float dloss) {
    ref_atspeed(dz, z, S, tlp, n, 0, T, 1, dloss);
}
