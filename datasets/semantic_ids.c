// semantic_ids.c: see semantic_ids.h.
#include "datasets/semantic_ids.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/util.h"

// Loops smaller than this many multiply-adds run on one thread: on a busy
// machine the fork/join of a parallel region costs more than it saves.
#define PAR_MIN_WORK ((size_t)1 << 18)

void semid_config_default(SemIdConfig *c) {
    c->levels = 3;
    c->codes = 256;
    c->dim = 32;
    c->window = 3;
    c->iters = 20;
    c->power_iters = 6;
    c->seed = 1;
}

int semid_config_check(const SemIdConfig *c, char *msg, size_t n) {
    // levels + the collision level must fit the level letters a..h.
    if (c->levels < 1 || c->levels > 7) {
        snprintf(msg, n, "levels must be in 1..7 (got %d)", c->levels);
        return -1;
    }
    if (c->codes < 1 || c->codes > 100000) {
        snprintf(msg, n, "codes must be in 1..100000 (got %d)", c->codes);
        return -1;
    }
    if (c->dim < 1 || c->dim > 1024) {
        snprintf(msg, n, "dim must be in 1..1024 (got %d)", c->dim);
        return -1;
    }
    if (c->window < 1 || c->window > 1000) {
        snprintf(msg, n, "window must be in 1..1000 (got %d)", c->window);
        return -1;
    }
    if (c->iters < 0 || c->iters > 10000 || c->power_iters < 0 || c->power_iters > 1000) {
        snprintf(msg, n, "iters must be in 0..10000 and power iterations in 0..1000");
        return -1;
    }
    return 0;
}

int semid_level_clusters(const SemIdConfig *c, int n_items) {
    int k = n_items / 16;
    if (k < 1) k = 1;
    if (k > c->codes) k = c->codes;
    return k;
}

// ---- co-occurrence -> PPMI (CSR) --------------------------------------------

typedef struct {
    size_t *row; // [n + 1]
    int *col;    // [nnz]
    float *val;  // [nnz]
    int n;
} Csr;

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

// Counts ordered pairs (i, j), i != j, at distance 1..window in each sequence and
// turns the counts into positive PMI: log(C_ij * total / (C_i * C_j)), kept when > 0.
static void ppmi_build(Csr *m, const size_t *off, const int *items, int n_users, int n_items,
                       int window) {
    size_t n_keys = 0;
    for (int u = 0; u < n_users; u++) {
        size_t len = off[u + 1] - off[u];
        for (size_t p = 0; p < len; p++) {
            size_t after = len - p - 1;
            n_keys += 2 * (after < (size_t)window ? after : (size_t)window);
        }
    }
    uint64_t *keys = xmalloc((n_keys ? n_keys : 1) * sizeof *keys);
    size_t k = 0;
    for (int u = 0; u < n_users; u++) {
        const int *s = items + off[u];
        size_t len = off[u + 1] - off[u];
        for (size_t p = 0; p < len; p++)
            for (size_t q = p + 1; q < len && q <= p + (size_t)window; q++) {
                uint64_t i = (uint64_t)(s[p] - 1), j = (uint64_t)(s[q] - 1);
                if (i == j) continue;
                keys[k++] = i * (uint64_t)n_items + j;
                keys[k++] = j * (uint64_t)n_items + i;
            }
    }
    n_keys = k;
    qsort(keys, n_keys, sizeof *keys, cmp_u64);

    // Run-length encode the sorted keys into CSR counts.
    m->n = n_items;
    m->row = xcalloc((size_t)n_items + 1, sizeof *m->row);
    m->col = xmalloc((n_keys ? n_keys : 1) * sizeof *m->col);
    m->val = xmalloc((n_keys ? n_keys : 1) * sizeof *m->val);
    size_t nnz = 0;
    for (size_t a = 0; a < n_keys;) {
        size_t b = a;
        while (b < n_keys && keys[b] == keys[a]) b++;
        int i = (int)(keys[a] / (uint64_t)n_items);
        m->col[nnz] = (int)(keys[a] % (uint64_t)n_items);
        m->val[nnz] = (float)(b - a);
        m->row[i + 1]++;
        nnz++;
        a = b;
    }
    free(keys);
    for (int i = 0; i < n_items; i++) m->row[i + 1] += m->row[i];

    double *rowsum = xcalloc((size_t)n_items, sizeof *rowsum);
    double total = 0.0;
    for (int i = 0; i < n_items; i++)
        for (size_t t = m->row[i]; t < m->row[i + 1]; t++) rowsum[i] += m->val[t];
    for (int i = 0; i < n_items; i++) total += rowsum[i];

    // PPMI in place, dropping non-positive entries (rows keep their order).
    size_t w = 0, start = 0;
    for (int i = 0; i < n_items; i++) {
        size_t end = m->row[i + 1];
        for (size_t t = start; t < end; t++) {
            int j = m->col[t];
            double pmi = log((double)m->val[t] * total / (rowsum[i] * rowsum[j]));
            if (pmi > 0.0) {
                m->col[w] = j;
                m->val[w] = (float)pmi;
                w++;
            }
        }
        start = end;
        m->row[i + 1] = w;
    }
    free(rowsum);
}

static void csr_free(Csr *m) {
    free(m->row);
    free(m->col);
    free(m->val);
}

// y [n, r] = m [n, n] @ x [n, r]; rows independent, so the result does not
// depend on the thread count.
static void csr_matmul(float *y, const Csr *m, const float *x, int r) {
#pragma omp parallel for schedule(static) if ((size_t)m->n * r > PAR_MIN_WORK)
    for (int i = 0; i < m->n; i++) {
        float *yi = y + (size_t)i * r;
        for (int c = 0; c < r; c++) yi[c] = 0.0f;
        for (size_t t = m->row[i]; t < m->row[i + 1]; t++) {
            const float *xj = x + (size_t)m->col[t] * r;
            float v = m->val[t];
            for (int c = 0; c < r; c++) yi[c] += v * xj[c];
        }
    }
}

// Orthonormalises the columns of y [n, r] in place (modified Gram-Schmidt in
// double). A column that is (numerically) in the span of the earlier ones
// becomes zero: it happens when the matrix has rank < r (tiny catalogues).
static void orthonormalize(float *y, int n, int r) {
    double *col = xmalloc((size_t)n * sizeof *col);
    double *basis = xmalloc((size_t)n * r * sizeof *basis); // column-major copy
    for (int j = 0; j < r; j++) {
        for (int i = 0; i < n; i++) col[i] = y[(size_t)i * r + j];
        double norm0 = 0.0;
        for (int i = 0; i < n; i++) norm0 += col[i] * col[i];
        for (int k = 0; k < j; k++) {
            const double *b = basis + (size_t)k * n;
            double dot = 0.0;
            for (int i = 0; i < n; i++) dot += col[i] * b[i];
            for (int i = 0; i < n; i++) col[i] -= dot * b[i];
        }
        double norm = 0.0;
        for (int i = 0; i < n; i++) norm += col[i] * col[i];
        double *b = basis + (size_t)j * n;
        if (norm0 <= 0.0 || norm <= 1e-10 * norm0) {
            for (int i = 0; i < n; i++) b[i] = 0.0;
        } else {
            double inv = 1.0 / sqrt(norm);
            for (int i = 0; i < n; i++) b[i] = col[i] * inv;
        }
        for (int i = 0; i < n; i++) y[(size_t)i * r + j] = (float)b[i];
    }
    free(basis);
    free(col);
}

void semid_embed(float *emb, const size_t *off, const int *items, int n_users, int n_items,
                 const SemIdConfig *c) {
    int r = c->dim;
    Csr m;
    ppmi_build(&m, off, items, n_users, n_items, c->window);

    Rng rng;
    rng_seed(&rng, c->seed ^ 0x5eed5eedull);
    size_t nr = (size_t)n_items * r;
    float *q = xmalloc(nr * sizeof *q);
    float *y = xmalloc(nr * sizeof *y);
    for (size_t t = 0; t < nr; t++) q[t] = rng_normal(&rng);
    // Randomized subspace iteration: Q <- orth(M Q), then the embedding M Q.
    for (int it = 0; it < c->power_iters; it++) {
        csr_matmul(y, &m, q, r);
        orthonormalize(y, n_items, r);
        float *t = q; q = y; y = t;
    }
    csr_matmul(emb, &m, q, r);

    // L2-normalise; rows without positive-PMI context get a seeded random unit vector.
    for (int i = 0; i < n_items; i++) {
        float *e = emb + (size_t)i * r;
        double s = 0.0;
        for (int k = 0; k < r; k++) s += (double)e[k] * e[k];
        if (m.row[i + 1] == m.row[i] || s <= 1e-20) {
            s = 0.0;
            for (int k = 0; k < r; k++) {
                e[k] = rng_normal(&rng);
                s += (double)e[k] * e[k];
            }
        }
        float inv = (float)(1.0 / sqrt(s > 0.0 ? s : 1.0));
        for (int k = 0; k < r; k++) e[k] *= inv;
    }
    free(q);
    free(y);
    csr_free(&m);
}

// ---- k-means ---------------------------------------------------------------

static float sqdist(const float *a, const float *b, int d) {
    float s = 0.0f;
    for (int k = 0; k < d; k++) {
        float t = a[k] - b[k];
        s += t * t;
    }
    return s;
}

// assign[i] = argmin_c |x_i - c|^2 = argmin_c (|c|^2 - 2 x_i . c), via sgemm in row blocks.
static void kmeans_assign(int *assign, const float *x, const float *cent, int n, int d, int k) {
    enum { BLOCK = 1024 };
    float *cnorm = xmalloc((size_t)k * sizeof *cnorm);
    for (int c = 0; c < k; c++) {
        float s = 0.0f;
        for (int t = 0; t < d; t++) s += cent[(size_t)c * d + t] * cent[(size_t)c * d + t];
        cnorm[c] = s;
    }
    float *dots = xmalloc((size_t)BLOCK * k * sizeof *dots);
    for (int i0 = 0; i0 < n; i0 += BLOCK) {
        int b = n - i0 < BLOCK ? n - i0 : BLOCK;
        // dots [b, k] = x[i0:i0+b] [b, d] @ cent^T [d, k]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, k, d, 1.0f, x + (size_t)i0 * d, d,
                    cent, d, 0.0f, dots, k);
        for (int i = 0; i < b; i++) {
            const float *row = dots + (size_t)i * k;
            int best = 0;
            float bs = cnorm[0] - 2.0f * row[0];
            for (int c = 1; c < k; c++) {
                float s = cnorm[c] - 2.0f * row[c];
                if (s < bs) { bs = s; best = c; }
            }
            assign[i0 + i] = best;
        }
    }
    free(dots);
    free(cnorm);
}

void semid_kmeans(int *assign, float *centroids, const float *x, int n, int d, int k, int iters,
                  uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    // k-means++: each next centre drawn with probability proportional to the
    // squared distance to the nearest centre chosen so far.
    float *dmin = xmalloc((size_t)n * sizeof *dmin);
    int first = (int)(rng_u64(&rng) % (uint64_t)n);
    memcpy(centroids, x + (size_t)first * d, (size_t)d * sizeof *x);
#pragma omp parallel for schedule(static) if ((size_t)n * d > PAR_MIN_WORK)
    for (int i = 0; i < n; i++) dmin[i] = sqdist(x + (size_t)i * d, centroids, d);
    for (int c = 1; c < k; c++) {
        double total = 0.0;
        for (int i = 0; i < n; i++) total += dmin[i];
        int pick;
        if (total <= 0.0) { // fewer distinct points than clusters: any point
            pick = (int)(rng_u64(&rng) % (uint64_t)n);
        } else {
            double target = rng_uniform(&rng) * total, acc = 0.0;
            int last_positive = 0;
            for (int i = 0; i < n; i++) {
                if (dmin[i] <= 0.0f) continue;
                last_positive = i;
                acc += dmin[i];
                if (acc > target) break;
            }
            pick = last_positive; // rounding can leave target just above the sum
        }
        float *cc = centroids + (size_t)c * d;
        memcpy(cc, x + (size_t)pick * d, (size_t)d * sizeof *x);
#pragma omp parallel for schedule(static) if ((size_t)n * d > PAR_MIN_WORK)
        for (int i = 0; i < n; i++) {
            float s = sqdist(x + (size_t)i * d, cc, d);
            if (s < dmin[i]) dmin[i] = s;
        }
    }
    free(dmin);

    // Lloyd iterations; sums in double, in item order (thread-count independent).
    double *sum = xmalloc((size_t)k * d * sizeof *sum);
    int *count = xmalloc((size_t)k * sizeof *count);
    for (int it = 0; it < iters; it++) {
        kmeans_assign(assign, x, centroids, n, d, k);
        memset(sum, 0, (size_t)k * d * sizeof *sum);
        memset(count, 0, (size_t)k * sizeof *count);
        for (int i = 0; i < n; i++) {
            double *s = sum + (size_t)assign[i] * d;
            const float *xi = x + (size_t)i * d;
            for (int t = 0; t < d; t++) s[t] += xi[t];
            count[assign[i]]++;
        }
        for (int c = 0; c < k; c++) {
            if (count[c] == 0) continue; // an emptied cluster keeps its centroid
            for (int t = 0; t < d; t++)
                centroids[(size_t)c * d + t] = (float)(sum[(size_t)c * d + t] / count[c]);
        }
    }
    kmeans_assign(assign, x, centroids, n, d, k);
    free(sum);
    free(count);
}

// ---- residual quantisation + collision level --------------------------------

static int g_levels; // qsort has no context argument; set before each sort
static const int *g_codes;

static int cmp_code_rows(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    const int *ci = g_codes + (size_t)i * (g_levels + 1), *cj = g_codes + (size_t)j * (g_levels + 1);
    for (int l = 0; l < g_levels; l++)
        if (ci[l] != cj[l]) return ci[l] < cj[l] ? -1 : 1;
    return (i > j) - (i < j);
}

int semid_separate_collisions(int *codes, int n, int levels) {
    int *order = xmalloc((size_t)(n ? n : 1) * sizeof *order);
    for (int i = 0; i < n; i++) order[i] = i;
    g_levels = levels;
    g_codes = codes;
    qsort(order, (size_t)n, sizeof *order, cmp_code_rows);
    int largest = 1;
    for (int a = 0; a < n;) {
        int b = a + 1;
        while (b < n && memcmp(codes + (size_t)order[a] * (levels + 1),
                               codes + (size_t)order[b] * (levels + 1),
                               (size_t)levels * sizeof *codes) == 0)
            b++;
        for (int t = a; t < b; t++) codes[(size_t)order[t] * (levels + 1) + levels] = t - a;
        if (b - a > largest) largest = b - a;
        a = b;
    }
    free(order);
    return largest;
}

void semid_quantize(int *codes, int *codes_per_level, const float *emb, int n_items, int dim,
                    const SemIdConfig *c) {
    int L = c->levels;
    int k = semid_level_clusters(c, n_items);
    float *res = xmalloc((size_t)n_items * dim * sizeof *res);
    memcpy(res, emb, (size_t)n_items * dim * sizeof *res);
    float *cent = xmalloc((size_t)k * dim * sizeof *cent);
    int *assign = xmalloc((size_t)n_items * sizeof *assign);
    for (int l = 0; l < L; l++) {
        // Rescale each residual to unit length: a tight group of items leaves
        // tiny residuals that one global codebook would lump into the cluster
        // nearest the origin; their directions still tell them apart.
        for (int i = 0; i < n_items; i++) {
            float *r = res + (size_t)i * dim;
            double s = 0.0;
            for (int t = 0; t < dim; t++) s += (double)r[t] * r[t];
            if (s <= 1e-24) continue;
            float inv = (float)(1.0 / sqrt(s));
            for (int t = 0; t < dim; t++) r[t] *= inv;
        }
        semid_kmeans(assign, cent, res, n_items, dim, k, c->iters,
                     c->seed * 1000003ull + (uint64_t)l + 1);
        for (int i = 0; i < n_items; i++) {
            codes[(size_t)i * (L + 1) + l] = assign[i];
            float *r = res + (size_t)i * dim;
            const float *ce = cent + (size_t)assign[i] * dim;
            for (int t = 0; t < dim; t++) r[t] -= ce[t];
        }
        codes_per_level[l] = k;
    }
    codes_per_level[L] = semid_separate_collisions(codes, n_items, L);
    free(assign);
    free(cent);
    free(res);
}

void semid_check(SemIdCheck *out, const int *codes, int levels, const size_t *off, const int *items,
                 const size_t *later_from, int n_users, int n_items, int window) {
    size_t n_pairs = 0, same = 0;
    for (int u = 0; u < n_users; u++) {
        const int *s = items + off[u];
        size_t len = off[u + 1] - off[u], from = later_from ? later_from[u] : 0;
        for (size_t p = 0; p < len; p++)
            for (size_t q = p + 1; q < len && q <= p + (size_t)window; q++) {
                int i = s[p], j = s[q];
                if (i == j || q < from) continue;
                n_pairs++;
                same += codes[(size_t)i * levels] == codes[(size_t)j * levels];
            }
    }
    // Random pair of distinct items: sum over first-level codes of n_c (n_c - 1) / (n (n - 1)).
    int max_code = 0;
    for (int i = 1; i <= n_items; i++)
        if (codes[(size_t)i * levels] > max_code) max_code = codes[(size_t)i * levels];
    double *cnt = xcalloc((size_t)max_code + 1, sizeof *cnt);
    for (int i = 1; i <= n_items; i++) cnt[codes[(size_t)i * levels]] += 1.0;
    double num = 0.0;
    for (int c = 0; c <= max_code; c++) num += cnt[c] * (cnt[c] - 1.0);
    free(cnt);
    double den = (double)n_items * (n_items - 1.0);
    out->n_pairs = n_pairs;
    out->p_cooc = n_pairs ? (double)same / (double)n_pairs : 0.0;
    out->p_random = den > 0.0 ? num / den : 0.0;
    out->ratio = out->p_random > 0.0 ? out->p_cooc / out->p_random : 0.0;
}
